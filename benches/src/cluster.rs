//! [`Cluster`]: the nodes of one benchmark, all in this process, over gRPC on 127.0.0.1 (or
//! the in-process network) with in-memory or LMDB stores.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use synevi::network::{GrpcNetwork, GrpcStats, LocalHub, LocalNetwork};
use synevi::persistence::{LmdbStore, MemStore};
use synevi::types::WriteBatch;
use synevi::types::{Envelope, Event, Inbox, Member, Network, Serial, Store, StoredState};
use synevi::{Config, Node, Stats, SyneviError, Ulid};

use crate::tx::Counter;

/// Which network the nodes talk over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// `GrpcNetwork` on 127.0.0.1, one port per node: what a deployment runs.
    Grpc,
    /// `LocalNetwork` (channels): the protocol's cost without the network's, for profiling.
    Local,
}

/// Where the nodes keep their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
pub enum BenchNetwork {
    /// Over gRPC.
    Grpc(GrpcNetwork),
    /// In process.
    Local(LocalNetwork),
}

#[async_trait::async_trait]
impl Network for BenchNetwork {
    async fn start(&self, inbox: Arc<dyn Inbox>) -> Result<(), SyneviError> {
        match self {
            BenchNetwork::Grpc(network) => network.start(inbox).await,
            BenchNetwork::Local(network) => network.start(inbox).await,
        }
    }

    async fn add_member(&self, member: Member) -> Result<(), SyneviError> {
        match self {
            BenchNetwork::Grpc(network) => network.add_member(member).await,
            BenchNetwork::Local(network) => network.add_member(member).await,
        }
    }

    fn send(&self, envelope: Envelope) {
        match self {
            BenchNetwork::Grpc(network) => network.send(envelope),
            BenchNetwork::Local(network) => network.send(envelope),
        }
    }

    async fn shutdown(&self) {
        match self {
            BenchNetwork::Grpc(network) => network.shutdown().await,
            BenchNetwork::Local(network) => network.shutdown().await,
        }
    }
}

/// Either store, so that every cluster has one node type.
pub enum BenchStore {
    /// In memory.
    Mem(MemStore),
    /// On disk.
    Lmdb(LmdbStore),
}

impl BenchStore {
    /// How many transaction records the store holds (protocol state not yet forgotten).
    pub fn transaction_count(&self) -> u64 {
        match self {
            BenchStore::Mem(store) => store.transaction_count() as u64,
            BenchStore::Lmdb(store) => store.transaction_count().unwrap_or(0),
        }
    }
}

impl Store for BenchStore {
    fn serial(&self) -> Serial {
        match self {
            BenchStore::Mem(store) => store.serial(),
            BenchStore::Lmdb(store) => store.serial(),
        }
    }

    fn load(&self) -> Result<StoredState, SyneviError> {
        match self {
            BenchStore::Mem(store) => store.load(),
            BenchStore::Lmdb(store) => store.load(),
        }
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        match self {
            BenchStore::Mem(store) => store.commit(batch),
            BenchStore::Lmdb(store) => store.commit(batch),
        }
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        match self {
            BenchStore::Mem(store) => store.events_after(after_seq, limit),
            BenchStore::Lmdb(store) => store.events_after(after_seq, limit),
        }
    }
}

/// A node of a benchmark cluster.
pub type BenchNode = Node<BenchNetwork, Arc<Counter>, BenchStore>;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// How many nodes (all voters).
    pub nodes: u16,
    /// Their network.
    pub network: NetworkKind,
    /// Their stores.
    pub store: StoreKind,
    /// Where LMDB stores go (a fresh directory per cluster, removed when it shuts down).
    pub data_dir: PathBuf,
}

/// A running cluster.
pub struct Cluster {
    /// The nodes, serials 1..=n in order.
    pub nodes: Vec<BenchNode>,
    networks: Vec<BenchNetwork>,
    executors: Vec<Arc<Counter>>,
    /// Keeps the LMDB directories until the cluster is dropped.
    _data: Option<tempfile::TempDir>,
}

/// Counters summed over every node of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterCounters {
    /// Transactions coordinated to commit on the fast path.
    pub fast_path_commits: u64,
    /// Transactions coordinated to commit on the slow path.
    pub slow_path_commits: u64,
    /// Recoveries started (0 in a healthy run).
    pub recoveries_started: u64,
    /// Catch-up inquiries sent.
    pub inquiries_sent: u64,
    /// Protocol messages sent.
    pub messages_sent: u64,
    /// Transactions executed, on all nodes together.
    pub executed: u64,
    /// Envelopes dropped because a core's inbox was full.
    pub inbox_dropped: u64,
    /// Protocol state held now (transactions not yet forgotten), all nodes together.
    pub transactions_held: u64,
    /// gRPC envelopes sent.
    pub envelopes_sent: u64,
    /// gRPC frames sent (`envelopes_sent / batches_sent` is the mean batch).
    pub batches_sent: u64,
    /// gRPC bytes sent (protobuf, without HTTP/2 framing).
    pub bytes_sent: u64,
    /// gRPC envelopes dropped for any reason.
    pub envelopes_dropped: u64,
}

impl ClusterCounters {
    /// `self - earlier` for the monotonic counters; the current values for the gauges.
    pub fn since(&self, earlier: &ClusterCounters) -> ClusterCounters {
        ClusterCounters {
            fast_path_commits: self.fast_path_commits - earlier.fast_path_commits,
            slow_path_commits: self.slow_path_commits - earlier.slow_path_commits,
            recoveries_started: self.recoveries_started - earlier.recoveries_started,
            inquiries_sent: self.inquiries_sent - earlier.inquiries_sent,
            messages_sent: self.messages_sent - earlier.messages_sent,
            executed: self.executed - earlier.executed,
            inbox_dropped: self.inbox_dropped - earlier.inbox_dropped,
            transactions_held: self.transactions_held,
            envelopes_sent: self.envelopes_sent - earlier.envelopes_sent,
            batches_sent: self.batches_sent - earlier.batches_sent,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            envelopes_dropped: self.envelopes_dropped - earlier.envelopes_dropped,
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
        let ids: Vec<Ulid> = (0..spec.nodes).map(|_| Ulid::new()).collect();
        let mut nodes = Vec::new();
        let mut networks = Vec::new();
        let mut executors = Vec::new();
        for serial in 1..=spec.nodes {
            let id = ids[usize::from(serial - 1)];
            let network = match spec.network {
                // Port 0: the OS picks a free port; peers learn it once the node started.
                NetworkKind::Grpc => BenchNetwork::Grpc(GrpcNetwork::new(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    String::new(),
                    id,
                    serial,
                )),
                NetworkKind::Local => BenchNetwork::Local(hub.network(serial)),
            };
            let store = match &data {
                None => BenchStore::Mem(
                    MemStore::new(serial)
                        .with_context(|| format!("node {serial}: cannot create a MemStore"))?,
                ),
                Some(dir) => {
                    let path = dir.path().join(format!("node-{serial}"));
                    BenchStore::Lmdb(open_lmdb(&path, serial)?)
                }
            };
            let executor = Arc::new(Counter::default());
            let config = Config {
                // The executor keeps no state worth rebuilding.
                replay_events_on_start: false,
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
            .map(|network| match network {
                BenchNetwork::Grpc(grpc) => grpc
                    .local_addr()
                    .map(|addr| format!("http://{addr}"))
                    .context("a started gRPC network has no address"),
                BenchNetwork::Local(local) => Ok(format!("local:{}", local.serial())),
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
            sum.messages_sent += stats.messages_sent;
            sum.executed += stats.executed;
            sum.inbox_dropped += status.inbox_dropped;
            sum.transactions_held += stats.transactions_held;
        }
        for network in &self.networks {
            if let BenchNetwork::Grpc(grpc) = network {
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

fn open_lmdb(path: &Path, serial: Serial) -> anyhow::Result<LmdbStore> {
    LmdbStore::new(path, serial).with_context(|| {
        format!(
            "node {serial}: cannot open an LMDB store in {}",
            path.display()
        )
    })
}
