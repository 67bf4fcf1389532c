//! [`Cluster`]: the nodes of one benchmark, all in this process, over gRPC on 127.0.0.1 (or
//! the in-process network) with in-memory or LMDB stores.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use synevi::network::{GrpcNetwork, GrpcStats, LocalHub, LocalNetwork};
use synevi::persistence::{LmdbConfig, LmdbStore, MemStore};
use synevi::types::WriteBatch;
use synevi::types::{Envelope, Event, Inbox, Member, Message, Network, Serial, Store, StoredState};
use synevi::{Config, Node, Stats, SyneviError, Ulid};

use crate::tx::Counter;

/// Which network the nodes talk over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// `GrpcNetwork` on 127.0.0.1, one port per node: what a deployment runs.
    Grpc,
    /// `LocalNetwork` (channels): the protocol's cost without the network's, for profiling.
    Local,
}

/// Where the nodes keep their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `MemStore`.
    Mem,
    /// `LmdbStore` in a directory under the harness's data directory, synced on every
    /// commit.
    Lmdb,
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkKind::Grpc => "grpc",
            NetworkKind::Local => "local",
        })
    }
}

/// Where each node's core runs (`Config::core_on_own_thread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CoreSite {
    /// A thread of its own per node, with the node's network on it (the library's
    /// default): every message between the nodes wakes a thread.
    Thread,
    /// A task on the harness's runtime (two workers on two cores), beside every other
    /// node's core and network: a message between two nodes whose tasks run on a worker
    /// that is awake wakes no thread.
    Runtime,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Mem => "mem",
            StoreKind::Lmdb => "lmdb",
        })
    }
}

/// Either network, so that every cluster has one node type.
#[derive(Clone)]
pub enum Transport {
    /// Over gRPC.
    Grpc(GrpcNetwork),
    /// In process.
    Local(LocalNetwork),
}

/// A node's network, counting what the node sends by message kind.
#[derive(Clone)]
pub struct BenchNetwork {
    /// The network underneath.
    pub transport: Transport,
    tally: Arc<MessageTally>,
}

/// The message kinds, in the order [`MessageTally`] counts them.
pub const MESSAGE_KINDS: [&str; 14] = [
    "PreAccept",
    "PreAcceptOk",
    "Accept",
    "AcceptOk",
    "Commit",
    "Nack",
    "BeginRecovery",
    "RecoverOk",
    "AcceptInvalidate",
    "AcceptInvalidateOk",
    "CommitInvalidate",
    "Applied",
    "Forget",
    "Inquire",
];

/// Messages sent, by kind, and the timestamps they carry (deps, or lists of `t0`s): where
/// a cluster's messages and bytes go.
#[derive(Default)]
pub struct MessageTally {
    messages: [AtomicU64; 14],
    timestamps: [AtomicU64; 14],
}

/// One kind's messages in a [`MessageTally`] snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    /// Messages sent.
    pub messages: u64,
    /// Timestamps they carried in lists (deps entries, or `t0`s of Applied, Forget,
    /// Inquire): what makes messages large.
    pub timestamps: u64,
}

impl MessageTally {
    fn count(&self, message: &Message) {
        let (index, timestamps) = match message {
            Message::PreAccept(_) => (0, 0),
            Message::PreAcceptOk(m) => (1, m.deps.len()),
            Message::Accept(m) => (2, m.deps.len()),
            Message::AcceptOk(m) => (3, m.deps.len()),
            Message::Commit(m) => (4, m.deps.len()),
            Message::Nack(_) => (5, 0),
            Message::BeginRecovery(_) => (6, 0),
            Message::RecoverOk(m) => (
                7,
                m.deps.len() + m.earlier_committed_witness.len() + m.wait_for_commit.len(),
            ),
            Message::AcceptInvalidate(_) => (8, 0),
            Message::AcceptInvalidateOk(_) => (9, 0),
            Message::CommitInvalidate(_) => (10, 0),
            Message::Applied(m) => (11, m.t0s.len() + m.committed.len()),
            Message::Forget(m) => (12, m.t0s.len() + m.settled.len()),
            Message::Inquire(m) => (13, m.t0s.len()),
        };
        self.messages[index].fetch_add(1, Ordering::Relaxed);
        self.timestamps[index].fetch_add(timestamps as u64, Ordering::Relaxed);
    }

    /// Counts so far, by kind name (kinds never sent are left out).
    pub fn snapshot(&self) -> BTreeMap<String, KindCount> {
        MESSAGE_KINDS
            .iter()
            .enumerate()
            .map(|(i, kind)| {
                (
                    kind.to_string(),
                    KindCount {
                        messages: self.messages[i].load(Ordering::Relaxed),
                        timestamps: self.timestamps[i].load(Ordering::Relaxed),
                    },
                )
            })
            .filter(|(_, count)| count.messages > 0)
            .collect()
    }
}

/// `later - earlier`, kind by kind.
pub fn tally_since(
    later: &BTreeMap<String, KindCount>,
    earlier: &BTreeMap<String, KindCount>,
) -> BTreeMap<String, KindCount> {
    later
        .iter()
        .map(|(kind, count)| {
            let before = earlier.get(kind).copied().unwrap_or_default();
            (
                kind.clone(),
                KindCount {
                    messages: count.messages - before.messages,
                    timestamps: count.timestamps - before.timestamps,
                },
            )
        })
        .filter(|(_, count)| count.messages > 0)
        .collect()
}

#[async_trait::async_trait]
impl Network for BenchNetwork {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), SyneviError> {
        match &self.transport {
            Transport::Grpc(network) => network.start(inbox).await,
            Transport::Local(network) => network.start(inbox).await,
        }
    }

    async fn add_member(&self, member: Member) -> Result<(), SyneviError> {
        match &self.transport {
            Transport::Grpc(network) => network.add_member(member).await,
            Transport::Local(network) => network.add_member(member).await,
        }
    }

    fn send(&self, envelope: Envelope) {
        self.tally.count(&envelope.message);
        match &self.transport {
            Transport::Grpc(network) => network.send(envelope),
            Transport::Local(network) => network.send(envelope),
        }
    }

    async fn shutdown(&self) {
        match &self.transport {
            Transport::Grpc(network) => network.shutdown().await,
            Transport::Local(network) => network.shutdown().await,
        }
    }

    fn runs_tasks(&self) -> bool {
        match &self.transport {
            Transport::Grpc(network) => network.runs_tasks(),
            Transport::Local(network) => network.runs_tasks(),
        }
    }
}

/// Either store, so that every cluster has one node type.
pub enum Storage {
    /// In memory.
    Mem(MemStore),
    /// On disk.
    Lmdb(LmdbStore),
}

/// A node's store, counting its commits: how well the driver groups writes (group commit)
/// and how long the node waits for its store.
pub struct BenchStore {
    /// The store underneath.
    pub storage: Storage,
    commits: AtomicU64,
    commit_micros: AtomicU64,
    records: AtomicU64,
}

/// A store's commits, summed over a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounters {
    /// `Store::commit` calls.
    pub commits: u64,
    /// Microseconds spent in them.
    pub commit_micros: u64,
    /// Transaction records and events they wrote.
    pub records: u64,
}

impl BenchStore {
    fn new(storage: Storage) -> Self {
        BenchStore {
            storage,
            commits: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            records: AtomicU64::new(0),
        }
    }

    /// How many transaction records the store holds (protocol state not yet forgotten).
    pub fn transaction_count(&self) -> u64 {
        match &self.storage {
            Storage::Mem(store) => store.transaction_count() as u64,
            Storage::Lmdb(store) => store.transaction_count().unwrap_or(0),
        }
    }

    /// The commits so far.
    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            commits: self.commits.load(Ordering::Relaxed),
            commit_micros: self.commit_micros.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
        }
    }
}

impl Store for BenchStore {
    fn serial(&self) -> Serial {
        match &self.storage {
            Storage::Mem(store) => store.serial(),
            Storage::Lmdb(store) => store.serial(),
        }
    }

    fn load(&self) -> Result<StoredState, SyneviError> {
        match &self.storage {
            Storage::Mem(store) => store.load(),
            Storage::Lmdb(store) => store.load(),
        }
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        let started = std::time::Instant::now();
        let result = match &self.storage {
            Storage::Mem(store) => store.commit(batch),
            Storage::Lmdb(store) => store.commit(batch),
        };
        let micros = crate::workload::elapsed_micros(started);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
        self.records.fetch_add(
            (batch.transactions.len() + batch.events.len()) as u64,
            Ordering::Relaxed,
        );
        result
    }

    fn commits_inline(&self) -> bool {
        match &self.storage {
            Storage::Mem(store) => store.commits_inline(),
            Storage::Lmdb(store) => store.commits_inline(),
        }
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        match &self.storage {
            Storage::Mem(store) => store.events_after(after_seq, limit),
            Storage::Lmdb(store) => store.events_after(after_seq, limit),
        }
    }
}

/// A node of a benchmark cluster.
pub type BenchNode = Node<BenchNetwork, Arc<Counter>, BenchStore>;

/// What to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// How many nodes (all voters).
    pub nodes: u16,
    /// Their network.
    pub network: NetworkKind,
    /// Their stores.
    pub store: StoreKind,
    /// Where LMDB stores go (a fresh directory per cluster, removed when it shuts down).
    pub data_dir: PathBuf,
    /// The nodes' `Config::pre_accept_window_ms`.
    pub pre_accept_window_ms: u64,
    /// The nodes' `Config::idle_spin_us`.
    pub idle_spin_us: u64,
    /// Where the nodes' cores run.
    pub core: CoreSite,
    /// LMDB stores: `LmdbConfig::commit_log`.
    pub commit_log: bool,
    /// LMDB stores: `LmdbConfig::checkpoint_interval`, in milliseconds.
    pub checkpoint_interval_ms: u64,
}

/// A running cluster.
pub struct Cluster {
    /// The nodes, serials 1..=n in order.
    pub nodes: Vec<BenchNode>,
    networks: Vec<BenchNetwork>,
    executors: Vec<Arc<Counter>>,
    tally: Arc<MessageTally>,
    /// Keeps the LMDB directories until the cluster is dropped.
    _data: Option<tempfile::TempDir>,
}

/// Counters summed over every node of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCounters {
    /// Transactions coordinated to commit on the fast path.
    pub fast_path_commits: u64,
    /// Transactions coordinated to commit on the slow path.
    pub slow_path_commits: u64,
    /// Recoveries started (0 in a healthy run).
    pub recoveries_started: u64,
    /// Catch-up inquiries sent.
    pub inquiries_sent: u64,
    /// Messages coordinators re-sent to voters that had not answered.
    pub retransmissions: u64,
    /// Protocol messages sent.
    pub messages_sent: u64,
    /// Transactions executed, on all nodes together.
    pub executed: u64,
    /// Envelopes dropped because a core's inbox was full.
    pub inbox_dropped: u64,
    /// Protocol state held now (transactions not yet forgotten), all nodes together.
    pub transactions_held: u64,
    /// PreAccepts replicas held back on contended keys (`Config::pre_accept_window_ms`).
    #[serde(default)]
    pub pre_accepts_held: u64,
    /// Of those, the ones released before their window ran out (the horizon passed them).
    #[serde(default)]
    pub pre_accepts_released_early: u64,
    /// gRPC envelopes sent.
    pub envelopes_sent: u64,
    /// gRPC frames sent (`envelopes_sent / batches_sent` is the mean batch).
    pub batches_sent: u64,
    /// gRPC bytes sent (protobuf, without HTTP/2 framing).
    pub bytes_sent: u64,
    /// gRPC envelopes dropped for any reason.
    pub envelopes_dropped: u64,
    /// Store commits, all nodes.
    pub store_commits: u64,
    /// Microseconds the nodes spent in store commits, all nodes.
    pub store_commit_micros: u64,
    /// Records (transactions and events) the store commits wrote, all nodes.
    pub store_records: u64,
}

impl ClusterCounters {
    /// `self - earlier` for the monotonic counters; the current values for the gauges.
    pub fn since(&self, earlier: &ClusterCounters) -> ClusterCounters {
        ClusterCounters {
            fast_path_commits: self.fast_path_commits - earlier.fast_path_commits,
            slow_path_commits: self.slow_path_commits - earlier.slow_path_commits,
            recoveries_started: self.recoveries_started - earlier.recoveries_started,
            inquiries_sent: self.inquiries_sent - earlier.inquiries_sent,
            retransmissions: self.retransmissions - earlier.retransmissions,
            messages_sent: self.messages_sent - earlier.messages_sent,
            executed: self.executed - earlier.executed,
            inbox_dropped: self.inbox_dropped - earlier.inbox_dropped,
            transactions_held: self.transactions_held,
            pre_accepts_held: self.pre_accepts_held - earlier.pre_accepts_held,
            pre_accepts_released_early: self.pre_accepts_released_early
                - earlier.pre_accepts_released_early,
            envelopes_sent: self.envelopes_sent - earlier.envelopes_sent,
            batches_sent: self.batches_sent - earlier.batches_sent,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            envelopes_dropped: self.envelopes_dropped - earlier.envelopes_dropped,
            store_commits: self.store_commits - earlier.store_commits,
            store_commit_micros: self.store_commit_micros - earlier.store_commit_micros,
            store_records: self.store_records - earlier.store_records,
        }
    }
}

impl Cluster {
    /// Starts `spec.nodes` nodes and makes every node a member of every other. Fails with a
    /// message naming the node and what it could not do (a port, a store directory).
    pub async fn start(spec: &ClusterSpec) -> anyhow::Result<Cluster> {
        anyhow::ensure!(spec.nodes >= 1, "a cluster needs at least one node");
        let data = match spec.store {
            StoreKind::Mem => None,
            StoreKind::Lmdb => {
                std::fs::create_dir_all(&spec.data_dir).with_context(|| {
                    format!(
                        "cannot create the data directory {}",
                        spec.data_dir.display()
                    )
                })?;
                Some(
                    tempfile::Builder::new()
                        .prefix("cluster-")
                        .tempdir_in(&spec.data_dir)
                        .with_context(|| {
                            format!(
                                "cannot create a store directory in {}",
                                spec.data_dir.display()
                            )
                        })?,
                )
            }
        };
        let hub = LocalHub::new();
        let tally = Arc::new(MessageTally::default());
        let ids: Vec<Ulid> = (0..spec.nodes).map(|_| Ulid::new()).collect();
        let mut nodes = Vec::new();
        let mut networks = Vec::new();
        let mut executors = Vec::new();
        for serial in 1..=spec.nodes {
            let id = ids[usize::from(serial - 1)];
            let transport = match spec.network {
                // Port 0: the OS picks a free port; peers learn it once the node started.
                NetworkKind::Grpc => Transport::Grpc(GrpcNetwork::new(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    String::new(),
                    id,
                    serial,
                )),
                NetworkKind::Local => Transport::Local(hub.network(serial)),
            };
            let network = BenchNetwork {
                transport,
                tally: Arc::clone(&tally),
            };
            let store = match &data {
                None => BenchStore::new(Storage::Mem(
                    MemStore::new(serial)
                        .with_context(|| format!("node {serial}: cannot create a MemStore"))?,
                )),
                Some(dir) => {
                    let path = dir.path().join(format!("node-{serial}"));
                    let config = LmdbConfig::default()
                        .commit_log(spec.commit_log)
                        .checkpoint_interval(Duration::from_millis(spec.checkpoint_interval_ms));
                    BenchStore::new(Storage::Lmdb(open_lmdb(&path, serial, config)?))
                }
            };
            let executor = Arc::new(Counter::default());
            let config = Config {
                // The executor keeps no state worth rebuilding.
                replay_events_on_start: false,
                pre_accept_window_ms: spec.pre_accept_window_ms,
                idle_spin_us: spec.idle_spin_us,
                core_on_own_thread: spec.core == CoreSite::Thread,
                ..Config::default()
            };
            let node =
                Node::with_config(id, serial, network.clone(), executor.clone(), store, config)
                    .await
                    .with_context(|| {
                        format!(
                        "node {serial} of {} could not start ({} network on 127.0.0.1, {} store)",
                        spec.nodes, spec.network, spec.store
                    )
                    })?;
            nodes.push(node);
            networks.push(network);
            executors.push(executor);
        }
        let hosts: Vec<String> = networks
            .iter()
            .map(|network| match &network.transport {
                Transport::Grpc(grpc) => grpc
                    .local_addr()
                    .map(|addr| format!("http://{addr}"))
                    .context("a started gRPC network has no address"),
                Transport::Local(local) => Ok(format!("local:{}", local.serial())),
            })
            .collect::<anyhow::Result<_>>()?;
        for (i, node) in nodes.iter().enumerate() {
            for (p, host) in hosts.iter().enumerate().filter(|(p, _)| *p != i) {
                let peer = u16::try_from(p + 1).context("serials fit u16")?;
                node.add_member(ids[p], peer, host.clone(), true)
                    .await
                    .with_context(|| {
                        format!("node {} could not add node {peer} ({host})", i + 1)
                    })?;
            }
        }
        Ok(Cluster {
            nodes,
            networks,
            executors,
            tally,
            _data: data,
        })
    }

    /// Transactions executed so far by the node that executed the fewest.
    pub fn applied_min(&self) -> u64 {
        self.executors
            .iter()
            .map(|executor| executor.executed())
            .min()
            .unwrap_or(0)
    }

    /// Waits until every node executed at least `total` transactions, or `timeout` passed;
    /// whether they all did.
    pub async fn wait_applied(&self, total: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for node in &self.nodes {
            let mut status = node.watch_status();
            let reached = tokio::time::timeout_at(
                deadline,
                status.wait_for(|status| status.applied_count >= total),
            )
            .await;
            if !matches!(reached, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    /// The counters of every node, summed.
    pub fn counters(&self) -> ClusterCounters {
        let mut sum = ClusterCounters::default();
        for node in &self.nodes {
            let status = node.status();
            let stats: &Stats = &status.stats;
            sum.fast_path_commits += stats.fast_path_commits;
            sum.slow_path_commits += stats.slow_path_commits;
            sum.recoveries_started += stats.recoveries_started;
            sum.inquiries_sent += stats.inquiries_sent;
            sum.retransmissions += stats.retransmissions;
            sum.messages_sent += stats.messages_sent;
            sum.executed += stats.executed;
            sum.inbox_dropped += status.inbox_dropped;
            sum.transactions_held += stats.transactions_held;
            sum.pre_accepts_held += stats.pre_accepts_held;
            sum.pre_accepts_released_early += stats.pre_accepts_released_early;
            let store = node.store().counters();
            sum.store_commits += store.commits;
            sum.store_commit_micros += store.commit_micros;
            sum.store_records += store.records;
        }
        for network in &self.networks {
            if let Transport::Grpc(grpc) = &network.transport {
                let stats: GrpcStats = grpc.stats();
                sum.envelopes_sent += stats.envelopes_sent;
                sum.batches_sent += stats.batches_sent;
                sum.bytes_sent += stats.bytes_sent;
                sum.envelopes_dropped += stats.dropped_queue_full
                    + stats.dropped_too_large
                    + stats.dropped_unknown_destination
                    + stats.dropped_disconnected;
            }
        }
        sum
    }

    /// Messages sent so far by every node, by kind.
    pub fn messages_by_kind(&self) -> BTreeMap<String, KindCount> {
        self.tally.snapshot()
    }

    /// Transaction records in the nodes' stores, summed (what GC has not yet deleted).
    pub fn stored_transactions(&self) -> u64 {
        self.nodes
            .iter()
            .map(|node| node.store().transaction_count())
            .sum()
    }

    /// Stops every node (and removes LMDB directories).
    pub async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
    }
}

fn open_lmdb(path: &Path, serial: Serial, config: LmdbConfig) -> anyhow::Result<LmdbStore> {
    LmdbStore::with_config(path, serial, config).with_context(|| {
        format!(
            "node {serial}: cannot open an LMDB store in {}",
            path.display()
        )
    })
}
