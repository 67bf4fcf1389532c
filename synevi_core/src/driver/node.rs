//! The public [`Node`] handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use bytes::Bytes;
use synevi_types::{
    Envelope, Executor, Inbox, Member, Network, NodeId, Serial, Store, SyneviError, SyneviResult,
    Transaction, TxBody,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::clock::DriverClock;
use super::outbox::Outbox;
use super::workers::{self, Command};
use crate::{Config, Core, Stats};

/// How many arrived envelopes may queue for the core before further ones are dropped (and
/// covered by the protocol's retransmissions).
const INBOX_CAPACITY: usize = 1 << 16;

/// What a node has done: its counters and what it executed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Protocol counters (fast/slow path commits, recoveries, executions, ...).
    pub stats: Stats,
    /// How many transactions this node executed since it was first created.
    pub applied_count: u64,
    /// Order-independent digest of every execution (see [`synevi_types::NodeMeta`]).
    pub applied_digest: [u8; 32],
    /// Envelopes dropped because the core's inbox was full.
    pub inbox_dropped: u64,
}

/// A synevi node: a consensus replica and coordinator embedded in the application.
///
/// Create it with [`Node::new`], add the other members with [`Node::add_member`], then
/// submit transactions with [`Node::transaction`] on any node. The handle is cheap to clone.
pub struct Node<N: Network, E: Executor, S: Store> {
    inner: Arc<Inner<N, E, S>>,
}

impl<N: Network, E: Executor, S: Store> Clone for Node<N, E, S> {
    fn clone(&self) -> Self {
        Node {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<N: Network, E: Executor, S: Store> {
    id: NodeId,
    serial: Serial,
    network: Arc<N>,
    /// The core's envelopes on their way to `network`; admits restored members once they
    /// are added again (`add_member`).
    outbox: Arc<Outbox<N>>,
    store: Arc<S>,
    commands: mpsc::UnboundedSender<Command<E>>,
    status: watch::Receiver<NodeStatus>,
    inbox: Arc<ChannelInbox>,
    payload_bytes_max: usize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Lets the core's thread end its runtime once the network stopped
    /// (`workers::Workers::release`); taken by `shutdown`.
    release_core_runtime: Mutex<Option<oneshot::Sender<()>>>,
}

/// Hands arrived envelopes to the core task without blocking the network.
pub(crate) struct ChannelInbox {
    sender: mpsc::Sender<Envelope>,
    dropped: AtomicU64,
}

impl Inbox for ChannelInbox {
    fn deliver(&self, envelope: Envelope) {
        if self.sender.try_send(envelope).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<N: Network, E: Executor, S: Store> Node<N, E, S> {
    /// Creates and starts a node with the default [`Config`]. If `store` holds the state of
    /// an earlier run, the node resumes from it.
    pub async fn new(
        id: NodeId,
        serial: Serial,
        network: N,
        executor: E,
        store: S,
    ) -> Result<Self, SyneviError> {
        Node::with_config(id, serial, network, executor, store, Config::default()).await
    }

    /// Creates and starts a node with the given [`Config`].
    pub async fn with_config(
        id: NodeId,
        serial: Serial,
        network: N,
        executor: E,
        store: S,
        config: Config,
    ) -> Result<Self, SyneviError> {
        if store.serial() != serial {
            return Err(SyneviError::WrongNode {
                expected: serial,
                found: store.serial(),
            });
        }
        let store = Arc::new(store);
        let executor = Arc::new(executor);
        let network = Arc::new(network);
        let loading = Arc::clone(&store);
        let stored = tokio::task::spawn_blocking(move || loading.load_for_restart())
            .await
            .map_err(|e| SyneviError::Store(format!("loading the store panicked: {e}")))??;
        if let Some(meta) = &stored.meta {
            if meta.node_id != id {
                return Err(SyneviError::InvalidConfig(format!(
                    "the store belongs to node {}, not {id}",
                    meta.node_id
                )));
            }
        }
        if config.replay_events_on_start {
            workers::replay_events(&*store, &*executor).await?;
        }
        let seed = u64::from(serial) ^ (id.0 as u64) ^ ((id.0 >> 64) as u64);
        let restored_members: Vec<Serial> = stored
            .meta
            .iter()
            .flat_map(|meta| meta.members.iter().map(|(member, _)| *member))
            .collect();
        let core = Core::restore(id, serial, config.clone(), seed, stored)?;
        let outbox = Arc::new(Outbox::new(Arc::clone(&network), restored_members));

        let (commands, command_receiver) = mpsc::unbounded_channel();
        let (inbound_sender, inbound) = mpsc::channel(INBOX_CAPACITY);
        let inbox = Arc::new(ChannelInbox {
            sender: inbound_sender,
            dropped: AtomicU64::new(0),
        });
        let (status_sender, status) = watch::channel(NodeStatus::default());
        let clock = DriverClock::new();
        let payload_bytes_max = config.payload_bytes_max;
        let network_on_core_thread = config.network_on_core_thread;
        let (release_core_runtime, release) = oneshot::channel();
        let (tasks, core_runtime) = workers::spawn(workers::Workers {
            core,
            clock,
            config,
            commands: command_receiver,
            command_sender: commands.clone(),
            inbound,
            outbox: Arc::clone(&outbox),
            store: Arc::clone(&store),
            executor,
            status: status_sender,
            release,
        });
        // `Config::network_on_core_thread`: the network's tasks are spawned on the runtime
        // `start` runs on. Without the core's runtime (it could not be built; the core logged
        // why), the network starts here.
        match core_runtime.await {
            Ok(runtime) if network_on_core_thread => {
                let (network, inbox) = (Arc::clone(&network), inbox.clone());
                runtime
                    .spawn(async move { network.start(inbox).await })
                    .await
                    .map_err(|error| {
                        SyneviError::Network(format!("starting the network failed: {error}"))
                    })??;
            }
            _ => network.start(inbox.clone()).await?,
        }
        Ok(Node {
            inner: Arc::new(Inner {
                id,
                serial,
                network,
                outbox,
                store,
                commands,
                status,
                inbox,
                payload_bytes_max,
                tasks: Mutex::new(tasks),
                release_core_runtime: Mutex::new(Some(release_core_runtime)),
            }),
        })
    }

    /// Adds a cluster member. `ready` members vote in quorums; members added with
    /// `ready == false` only learn decisions and execute them. Membership is static: add
    /// every member on every node before submitting transactions.
    ///
    /// A node restarted from its store knows its members' serials already and takes part
    /// in the protocol at once; what it sends to a member it restored waits until this adds
    /// the member again (with its address, which the store does not keep), or at most 5 s
    /// after the start, after which it goes to the network as it is.
    pub async fn add_member(
        &self,
        id: NodeId,
        serial: Serial,
        host: String,
        ready: bool,
    ) -> Result<(), SyneviError> {
        if serial == self.inner.serial {
            return Err(SyneviError::InvalidConfig(format!(
                "node {serial} cannot add itself as a member"
            )));
        }
        self.inner
            .network
            .add_member(Member {
                node_id: id,
                serial,
                host,
            })
            .await?;
        self.inner.outbox.admit(serial);
        let (done, wait) = oneshot::channel();
        self.inner
            .commands
            .send(Command::AddMember {
                serial,
                voter: ready,
                done,
            })
            .map_err(|_| SyneviError::ShutDown)?;
        wait.await.map_err(|_| SyneviError::ShutDown)?
    }

    /// Orders `transaction` with every other node's, executes it here once everything it
    /// depends on has executed, and returns the executor's result. `id` is the caller's
    /// request id; it is stored with the event. A result means the commit is durable on the
    /// voters that decided it: no crash of a minority undoes it, this node's included (it
    /// may answer before its own record of the commit is synced, and then learns it again
    /// from the others after a restart).
    ///
    /// Errors: [`SyneviError::QuorumUnreachable`] if no majority answered within
    /// [`Config::transaction_timeout_ms`] (the transaction may still commit later),
    /// [`SyneviError::ExecutionTimeout`] if it committed but did not execute in time,
    /// [`SyneviError::Invalidated`] if recovery turned it into a no-op,
    /// [`SyneviError::TooLarge`] for a transaction above [`Config::payload_bytes_max`],
    /// [`SyneviError::ShutDown`] after [`Node::shutdown`].
    pub async fn transaction(&self, id: u128, transaction: E::Tx) -> SyneviResult<E> {
        let payload = transaction.as_bytes();
        if payload.len() > self.inner.payload_bytes_max {
            return Err(SyneviError::TooLarge {
                what: "transaction",
                size: payload.len(),
                limit: self.inner.payload_bytes_max,
            });
        }
        let body = TxBody {
            id,
            keys: transaction.keys(),
            payload: Bytes::from(payload),
        };
        let (reply, wait) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Submit { body, reply })
            .map_err(|_| SyneviError::ShutDown)?;
        wait.await.map_err(|_| SyneviError::ShutDown)?
    }

    /// The node's counters and execution digest.
    pub fn status(&self) -> NodeStatus {
        let mut status = self.inner.status.borrow().clone();
        status.inbox_dropped = self.inner.inbox.dropped.load(Ordering::Relaxed);
        status
    }

    /// A receiver that sees every update of the node's status (once per round of the core):
    /// await progress with `watch_status().wait_for(|s| s.applied_count >= n)`.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.inner.status.clone()
    }

    /// The node's protocol counters.
    pub fn stats(&self) -> Stats {
        self.status().stats
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// How many envelopes to members restored from the store wait for those members to be
    /// added again ([`Node::add_member`]); 0 once every one was, or 5 s after the start.
    pub fn held_envelopes(&self) -> usize {
        self.inner.outbox.held()
    }

    /// This node's serial.
    pub fn serial(&self) -> Serial {
        self.inner.serial
    }

    /// The node's store (for reading the event log, for example).
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Stops the node, in order: no new transactions (they fail with
    /// [`SyneviError::ShutDown`]) and no more protocol rounds; executions already handed to
    /// the executor finish and their results are committed to the store with everything
    /// else queued for it; committed transactions not yet executed stay in the store and
    /// run after the restart. Then the network stops. An executor that never answers is
    /// waited for at most [`Config::transaction_timeout_ms`].
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { done }).is_ok() {
            let _ = wait.await;
        }
        // The network stops while the core's runtime, where its tasks may run, still does.
        self.inner.network.shutdown().await;
        if let Ok(mut release) = self.inner.release_core_runtime.lock() {
            if let Some(release) = release.take() {
                let _ = release.send(());
            }
        }
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .map(|mut tasks| std::mem::take(&mut *tasks))
            .unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Every transaction type a node runs must round-trip through its byte encoding; this is
/// the one place the driver relies on it.
pub(crate) fn decode<T: Transaction>(payload: &Bytes) -> Result<T, SyneviError> {
    T::from_bytes(payload.to_vec())
}
