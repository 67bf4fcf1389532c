//! The plug-in points: what the application implements ([`Transaction`], [`Executor`]) and
//! what the I/O edges implement ([`Store`], [`Network`]).

use serde::Serialize;
use std::fmt::Debug;
use std::sync::Arc;

use crate::{Envelope, Event, Keys, NodeId, Serial, Status, StoredState, SyneviError, WriteBatch};

/// The outcome of a transaction: the outer error is the system's, the inner `Result` is the
/// executor's verdict (identical on every node).
pub type SyneviResult<E> = Result<
    Result<<<E as Executor>::Tx as Transaction>::TxOk, <<E as Executor>::Tx as Transaction>::TxErr>,
    SyneviError,
>;

/// One of the application's transactions (events).
///
/// `as_bytes` and `from_bytes` must round-trip: every node decodes what the coordinator
/// encoded. `keys` decides what the transaction conflicts with; transactions whose key sets
/// do not intersect are ordered independently and never wait on each other.
pub trait Transaction: Debug + Clone + Send + 'static {
    /// The executor's error verdict.
    type TxErr: Send + Serialize + 'static;
    /// The executor's success value.
    type TxOk: Send + Serialize + 'static;

    /// Encodes the transaction for the wire and the event log.
    fn as_bytes(&self) -> Vec<u8>;

    /// Decodes what [`Transaction::as_bytes`] produced. Bytes come from the network and the
    /// disk: return an error on anything malformed, never panic.
    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError>
    where
        Self: Sized;

    /// The keys this transaction touches. The default, [`Keys::All`], conflicts with every
    /// other transaction: always correct, but every transaction then waits on every other.
    fn keys(&self) -> Keys {
        Keys::All
    }
}

/// Applies committed transactions to the application's state.
///
/// # To ensure correctness
/// - `execute` must be deterministic: the same transactions in the same order give the same
///   results on every node. No clocks, randomness or local state outside what the
///   transactions built.
/// - Conflicting transactions are handed over one at a time in the agreed order. The node
///   awaits each `execute` before it starts the next.
/// - Return the inner `Err` for the application's verdict ("key not found"); return the outer
///   `SyneviError` only for failures of this node (its disk failed). The node then stops
///   executing, because skipping a transaction would make it diverge.
/// - A node that crashes may execute a transaction again after it restarts: the record that
///   it executed (its event) becomes durable in a store commit after the execution, and
///   when the decision was made on other nodes the execution may even run before this
///   node's own record of the commit is durable. By default the node replays its event
///   log into a fresh executor when it starts (`Config::replay_events_on_start`), so
///   in-memory state sees each transaction once. An executor that keeps its own durable
///   state (and turns the replay off) must make re-execution harmless, for example by
///   having transactions carry an id it records with its effects.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The transaction type this executor applies.
    type Tx: Transaction + Serialize;

    /// Applies one committed transaction.
    async fn execute(&self, transaction: Self::Tx) -> SyneviResult<Self>;

    /// Whether `execute` is cheap enough to run on the node's core thread: it never waits
    /// for I/O, a lock held across I/O, or another task (an in-memory state machine). The
    /// node then runs the executions of a lightly loaded node's small rounds where they were
    /// decided, saving two thread hand-offs on the latency path; everything else still runs
    /// on the node's executor task. The default, `false`, always uses the task, which is
    /// right for an executor that writes to a disk or calls a service.
    fn executes_inline(&self) -> bool {
        false
    }
}

/// An executor shared behind an [`Arc`] (so the application keeps a handle to its state) is
/// still an executor.
#[async_trait::async_trait]
impl<E: Executor> Executor for Arc<E> {
    type Tx = E::Tx;

    async fn execute(&self, transaction: Self::Tx) -> SyneviResult<Self> {
        E::execute(self, transaction).await
    }

    fn executes_inline(&self) -> bool {
        E::executes_inline(self)
    }
}

/// Durable storage of a node's protocol state and event log.
///
/// # To ensure correctness
/// - [`Store::commit`] is atomic and durable: when it returns `Ok`, the whole batch survives
///   a crash; when it returns `Err`, none of it was applied. The node sends the messages that
///   promise what a batch contains only after `commit` returned `Ok`.
/// - [`Store::load`] returns exactly what all successful commits wrote.
/// - Methods are called from one thread at a time per store, but from a blocking thread, not
///   from an async task: they may block on I/O.
pub trait Store: Send + Sync + 'static {
    /// The serial of the node this store belongs to.
    fn serial(&self) -> Serial;

    /// Everything the store holds for a restart, as written: a record of a transaction whose
    /// execution is in the event log may still say [`Status::Committed`] (see
    /// [`crate::NodeMeta::applied_recorded_through`]). A node resumes from
    /// [`Store::load_for_restart`], which reads such records as applied.
    fn load(&self) -> Result<StoredState, SyneviError>;

    /// What a node resumes from: [`Store::load`], with every record of a transaction executed
    /// here (an event above [`crate::NodeMeta::applied_recorded_through`] names it) read as
    /// [`Status::Applied`]. Only the events after that mark are read: a node rewrites its
    /// records as applied a little after executing them, and moves the mark with them.
    /// Resuming from [`Store::load`] instead would execute those transactions again.
    fn load_for_restart(&self) -> Result<StoredState, SyneviError> {
        let mut stored = self.load()?;
        let through = stored
            .meta
            .as_ref()
            .map_or(0, |meta| meta.applied_recorded_through);
        let executed: std::collections::HashSet<crate::T0> = self
            .events_after(through, usize::MAX)?
            .into_iter()
            .map(|event| event.t0)
            .collect();
        for record in &mut stored.transactions {
            if record.status == Status::Committed && executed.contains(&record.t0) {
                record.status = Status::Applied;
            }
        }
        Ok(stored)
    }

    /// Applies a batch atomically and durably.
    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError>;

    /// Up to `limit` events with `seq > after_seq`, in execution order.
    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError>;

    /// Whether [`Store::commit`] is cheap enough to run on the core's own thread: it never
    /// waits for a disk (an in-memory store). The driver then commits the small rounds of a
    /// lightly loaded node where they were made, saving a hand-off to the persister thread on
    /// the latency path; under load, rounds still go to the persister, which coalesces them.
    /// Stores that sync (the default, `false`) always use the persister's group commit, which
    /// folds many rounds into one sync.
    fn commits_inline(&self) -> bool {
        false
    }
}

/// A member of the cluster as the network needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub node_id: NodeId,
    /// The member's serial: its address in [`Envelope::to`].
    pub serial: Serial,
    /// How to reach it (for gRPC, its URL such as `http://10.0.0.2:13001`).
    pub host: String,
}

/// Where a network hands over what arrives for its node.
pub trait Inbox: Send + Sync + 'static {
    /// Takes an arrived envelope. Must not block; the node queues it.
    fn deliver(&self, envelope: Envelope);
}

/// Moves envelopes between nodes.
///
/// # To ensure correctness
/// Networks may delay, reorder, duplicate and drop envelopes; the protocol retries and
/// recovers. A network must never alter an envelope or deliver it to the wrong node.
#[async_trait::async_trait]
pub trait Network: Send + Sync + 'static {
    /// Starts receiving: every envelope addressed to this node goes to `inbox`.
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), SyneviError>;

    /// Learns how to reach a member.
    async fn add_member(&self, member: Member) -> Result<(), SyneviError>;

    /// Queues an envelope for [`Envelope::to`]. Never blocks: a network that cannot keep up
    /// drops (and counts) envelopes, which the protocol's retries cover.
    fn send(&self, envelope: Envelope);

    /// Stops sending and receiving.
    async fn shutdown(&self);

    /// Whether the network runs tasks of its own (a server, connections) on the runtime
    /// `start` is called on. A node that starts such a network on its core's thread
    /// (`Config::network_on_core_thread`) keeps that thread from looking for input before
    /// it sleeps, which would keep those tasks from running. In-process channels run none.
    fn runs_tasks(&self) -> bool {
        false
    }
}
