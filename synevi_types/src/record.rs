//! What a node keeps in its [`crate::Store`]: per-transaction protocol state, the event log
//! of executed transactions, and the node's own metadata.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Ballot, Deps, NodeId, Serial, Timestamp, TxBody, T, T0};

/// How far a transaction has progressed on one replica. The order of the variants is the
/// order of progress: a replica's status of a transaction only ever moves up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Known only through a recovery ballot the replica promised; the replica has not seen
    /// the transaction itself.
    Promised,
    /// Pre-accepted: the replica proposed a `t` and deps.
    PreAccepted,
    /// Accepted at a ballot with a `t` (slow path or recovery).
    Accepted,
    /// Accepted at a ballot as a no-op (recovery found it was never committed).
    AcceptedInvalidate,
    /// Committed with its final `t` and deps; waiting to execute.
    Committed,
    /// Executed on this replica.
    Applied,
    /// Decided as a no-op; never executes anywhere.
    Invalidated,
}

impl Status {
    /// Whether the outcome is decided (committed, applied or invalidated).
    pub fn is_decided(self) -> bool {
        self >= Status::Committed
    }

    /// Whether the replica accepted a value at some ballot (or it is decided).
    pub fn has_accepted(self) -> bool {
        self >= Status::Accepted
    }
}

/// One replica's durable state of one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The transaction's id.
    pub t0: T0,
    /// How far it has progressed here.
    pub status: Status,
    /// The replica's `t`: pre-accepted, accepted or committed, per `status`.
    pub t: T,
    /// The deps for that `t`. Empty in the form a store keeps of a [`Status::PreAccepted`]
    /// record: nothing needs a replica's pre-accepted deps after a restart, and the core
    /// computes them again when it restores the record.
    pub deps: Deps,
    /// Highest ballot promised; messages with lower ballots are refused.
    pub promised: Ballot,
    /// Ballot at which `t`/`deps` were accepted.
    pub accepted: Ballot,
    /// The transaction itself; `None` while only [`Status::Promised`] or invalidated unseen.
    pub body: Option<TxBody>,
}

/// One entry of the event log: a transaction as this node executed it. Events are numbered
/// in the node's execution order by `seq`, starting at 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in this node's execution order (1, 2, 3, ...).
    pub seq: u64,
    /// The transaction's id.
    pub t0: T0,
    /// Its execution timestamp.
    pub t: T,
    /// The client's request id.
    pub id: u128,
    /// The transaction as the application encoded it.
    pub payload: Bytes,
    /// BLAKE3 of the executor's serialised result; equal on every node.
    pub result_hash: [u8; 32],
}

/// The node's own metadata: who it is and what its clock and execution reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// The node's id.
    pub node_id: NodeId,
    /// The node's serial; a store refuses to serve another.
    pub serial: Serial,
    /// No timestamp at or below this was issued by the node's clock after it was written;
    /// a restarted clock starts above it, so no `t0` is ever issued twice.
    pub clock_floor: Timestamp,
    /// How many transactions the node has executed.
    pub applied_count: u64,
    /// Order-independent digest of everything executed: XOR of BLAKE3(t0, t, result hash).
    /// Two nodes that executed the same transactions with the same results have the same
    /// digest, whatever order non-conflicting transactions ran in.
    pub applied_digest: [u8; 32],
    /// The other members, by serial, with whether each votes. Kept so that a restarted node
    /// knows its quorums before the application adds its members again: without it, a node
    /// would briefly believe it is a cluster of one and decide alone.
    pub members: Vec<(Serial, bool)>,
    /// Every event up to this `seq` has its transaction's record written as
    /// [`Status::Applied`] (or the record forgotten). A node records an execution in its
    /// event log at once and rewrites the transaction's record as applied only later, if
    /// the record is still held then (most are forgotten first, and the record, deps and
    /// all, is not written a third time); a record of an event above this `seq` may still say
    /// [`Status::Committed`]. [`crate::Store::load_for_restart`] reads such records as
    /// applied.
    pub applied_recorded_through: u64,
}

/// Everything one store commit writes. The driver gathers many transactions' changes into
/// one batch (group commit); a store applies a batch atomically and durably, or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Records to insert or replace (keyed by `t0`).
    pub transactions: Vec<TxRecord>,
    /// Records to delete because every member applied them; their ids are remembered as
    /// forgotten so that late duplicates of old messages cannot resurrect them.
    pub forget: Vec<T0>,
    /// Raised floors: every transaction of coordinator `serial` with a lower `t0` is applied
    /// everywhere. Forgotten ids of that coordinator below its floor need not be remembered.
    pub floors: Vec<(Serial, T0)>,
    /// Events to append to the log, in ascending `seq`.
    pub events: Vec<Event>,
    /// New metadata, if it changed.
    pub meta: Option<NodeMeta>,
}

impl WriteBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
            && self.forget.is_empty()
            && self.floors.is_empty()
            && self.events.is_empty()
            && self.meta.is_none()
    }

    /// Appends `later` to `self`; applying the result equals applying both in order.
    pub fn absorb(&mut self, later: WriteBatch) {
        append(&mut self.transactions, later.transactions);
        append(&mut self.forget, later.forget);
        append(&mut self.floors, later.floors);
        append(&mut self.events, later.events);
        if later.meta.is_some() {
            self.meta = later.meta;
        }
    }
}

/// Appends `later` to `into`; into an empty list it moves the whole list instead of copying
/// it (a driver absorbs every round of a group commit into one batch, most often just one).
fn append<T>(into: &mut Vec<T>, mut later: Vec<T>) {
    if into.is_empty() {
        std::mem::swap(into, &mut later);
    } else {
        into.append(&mut later);
    }
}

/// What a store hands back when a node starts: everything it needs to resume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The node's metadata; `None` for a store that was never written.
    pub meta: Option<NodeMeta>,
    /// Every transaction record not forgotten, in `t0` order.
    pub transactions: Vec<TxRecord>,
    /// Forgotten ids still remembered (above their coordinator's floor), ascending.
    pub forgotten: Vec<T0>,
    /// Each coordinator's floor.
    pub floors: Vec<(Serial, T0)>,
    /// The `seq` of the last event in the log, 0 if the log is empty.
    pub last_event_seq: u64,
}
