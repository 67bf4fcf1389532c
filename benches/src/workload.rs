//! Cluster workloads: closed-loop clients or one burst of concurrent transactions against a
//! fresh [`Cluster`], with latency, throughput and CPU time measured around them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::cluster::{
    tally_since, Cluster, ClusterCounters, ClusterSpec, KindCount, NetworkKind, StoreKind,
};
use crate::machine;
use crate::tx::BenchTx;

/// What the transactions of a workload touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    /// Each client has a key of its own: concurrent transactions never conflict.
    Disjoint,
    /// Every transaction touches the one key `hot`: every transaction conflicts with every
    /// other.
    Hot,
    /// `Keys::All`, the trait's default, as in the seed's workload.
    All,
}

impl std::fmt::Display for KeyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMode::Disjoint => "disjoint",
            KeyMode::Hot => "hot",
            KeyMode::All => "all",
        })
    }
}

impl KeyMode {
    /// The transaction client `client` submits.
    fn transaction(self, client: usize) -> BenchTx {
        match self {
            KeyMode::Disjoint => BenchTx::on_key(Bytes::from(format!("c{client}"))),
            KeyMode::Hot => BenchTx::on_key(Bytes::from_static(b"hot")),
            KeyMode::All => BenchTx::seed(),
        }
    }
}

/// How transactions are submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// `clients` closed-loop clients: each submits its next transaction when the previous
    /// one returned, to the next node round-robin, until `txns` were submitted in all.
    Clients {
        /// Concurrent clients.
        clients: usize,
        /// Transactions in all.
        txns: u64,
    },
    /// Every transaction at once: `per_node[i]` concurrent transactions submitted to node
    /// `i + 1` (the seed's workloads).
    Burst {
        /// Transactions per node.
        per_node: Vec<u64>,
    },
}

impl Load {
    /// Transactions in all.
    pub fn total(&self) -> u64 {
        match self {
            Load::Clients { txns, .. } => *txns,
            Load::Burst { per_node } => per_node.iter().sum(),
        }
    }

    /// Transactions in flight at most.
    pub fn concurrency(&self) -> u64 {
        match self {
            Load::Clients { clients, .. } => *clients as u64,
            Load::Burst { per_node } => per_node.iter().sum(),
        }
    }
}

/// One workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Short unique name (`3n-mem-disjoint-c64`).
    pub name: String,
    /// Which part of the run it belongs to (`seed`, `matrix`).
    pub group: String,
    /// The cluster it runs on (started fresh for it).
    pub cluster: ClusterSpec,
    /// What its transactions touch.
    pub keys: KeyMode,
    /// How they are submitted.
    pub load: Load,
}

/// Latency percentiles in microseconds, from submission to the coordinator's reply.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

/// A latency histogram in microseconds, up to an hour, 3 significant digits; fixed size
/// however many values it records.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Microseconds since `since` (`u64::MAX` past what a `u64` holds).
pub fn elapsed_micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Records a latency in a [`latency_histogram`]: below its lowest bound as 1 µs, above its
/// highest as the highest.
pub fn record_micros(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// What one workload measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload's name.
    pub name: String,
    /// Its part of the run.
    pub group: String,
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Their network.
    pub network: NetworkKind,
    /// Their stores.
    pub store: StoreKind,
    /// What the transactions touch.
    pub keys: KeyMode,
    /// How they were submitted.
    pub load: Load,
    /// Transactions in flight at most (clients, or the burst's size).
    pub concurrency: u64,
    /// Transactions submitted.
    pub submitted: u64,
    /// Transactions whose coordinator replied with the executor's result.
    pub committed: u64,
    /// Transactions that returned an error (timeouts, invalidations).
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Seconds from the first submission to the last reply.
    pub wall_s: f64,
    /// Seconds from the first submission until every node executed every transaction.
    pub settle_s: f64,
    /// Whether every node executed every transaction within the harness's patience.
    pub settled: bool,
    /// `committed / wall_s`.
    pub throughput_tps: f64,
    /// Submission to reply.
    pub latency: Latency,
    /// CPU time of the whole process (every node, the clients) from the first submission
    /// until settled.
    pub cpu_s: f64,
    /// `cpu_s / committed`, in microseconds: CPU per committed transaction, all nodes.
    pub cpu_per_txn_us: f64,
    /// `cpu_s / (settle_s × cores)`: 1.0 is every core busy the whole time.
    pub cpu_utilisation: f64,
    /// Voluntary context switches per committed transaction, whole process: hand-overs
    /// between threads (and sleeps) on the transactions' way.
    pub voluntary_switches_per_txn: f64,
    /// Involuntary context switches per committed transaction (preemptions).
    pub involuntary_switches_per_txn: f64,
    /// Protocol and network counters over the workload, all nodes summed.
    pub counters: ClusterCounters,
    /// Share of coordinated commits that took the fast path.
    pub fast_path_share: f64,
    /// Protocol messages sent per committed transaction, all nodes.
    pub messages_per_txn: f64,
    /// Mean envelopes per gRPC frame.
    pub envelopes_per_batch: f64,
    /// Mean encoded bytes per envelope.
    pub bytes_per_envelope: f64,
    /// Messages sent by every node, by kind, with the timestamps (deps) they carried.
    pub messages_by_kind: BTreeMap<String, KindCount>,
    /// The machine's 1-minute load average when the workload ended: other work sharing the
    /// cores.
    pub load_average_1m: Option<f64>,
    /// Of the time the machine's CPUs had work from the first submission until settled, the
    /// share the host gave to other guests (stolen time, `/proc/stat`): a row measured while
    /// other guests took much of the host reads slow for reasons outside synevi. `None`
    /// where not readable.
    #[serde(default)]
    pub stolen_share: Option<f64>,
    /// With `--rounds`: the throughput of every round, in the order they ran; this result
    /// is the round with the median throughput. Empty for a run of one round.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds_tps: Vec<f64>,
}

/// How long the harness waits for lagging nodes to execute everything after the last reply.
const SETTLE_PATIENCE: Duration = Duration::from_secs(120);

/// Runs a workload on a fresh cluster and shuts the cluster down.
pub async fn run(spec: &WorkloadSpec, progress: &ProgressBar) -> anyhow::Result<WorkloadResult> {
    let cluster = Cluster::start(&spec.cluster).await?;
    let warm = warm_up(&cluster, spec.keys).await?;

    let counters_before = cluster.counters();
    let kinds_before = cluster.messages_by_kind();
    let usage_before = machine::usage();
    let ticks_before = machine::cpu_ticks();
    let started = Instant::now();
    let outcome = match &spec.load {
        Load::Clients { clients, txns } => {
            let limit = Limit {
                txns: *txns,
                until: None,
            };
            run_clients(&cluster, *clients, spec.keys, limit, progress).await
        }
        Load::Burst { per_node } => run_burst(&cluster, per_node, spec.keys, progress).await,
    };
    let wall = started.elapsed();
    let settled = cluster
        .wait_applied(warm + outcome.committed, SETTLE_PATIENCE)
        .await;
    let settle = started.elapsed();
    let usage = machine::usage();
    let stolen = machine::stolen_share(ticks_before, machine::cpu_ticks());
    let cpu = usage.cpu.saturating_sub(usage_before.cpu);
    let counters = cluster.counters().since(&counters_before);
    let kinds = tally_since(&cluster.messages_by_kind(), &kinds_before);
    cluster.shutdown().await;

    let mut result = summarise(spec, outcome, wall, settle, settled, cpu, counters);
    result.messages_by_kind = kinds;
    result.stolen_share = stolen;
    let per_committed = |count: u64| count as f64 / result.committed.max(1) as f64;
    result.voluntary_switches_per_txn =
        per_committed(usage.voluntary_switches - usage_before.voluntary_switches);
    result.involuntary_switches_per_txn =
        per_committed(usage.involuntary_switches - usage_before.involuntary_switches);
    Ok(result)
}

fn summarise(
    spec: &WorkloadSpec,
    outcome: Outcome,
    wall: Duration,
    settle: Duration,
    settled: bool,
    cpu: Duration,
    counters: ClusterCounters,
) -> WorkloadResult {
    let committed = outcome.committed;
    let per_committed = |value: f64| {
        if committed == 0 {
            0.0
        } else {
            value / committed as f64
        }
    };
    let coordinated = counters.fast_path_commits + counters.slow_path_commits;
    WorkloadResult {
        name: spec.name.clone(),
        group: spec.group.clone(),
        nodes: spec.cluster.nodes,
        network: spec.cluster.network,
        store: spec.cluster.store,
        keys: spec.keys,
        load: spec.load.clone(),
        concurrency: spec.load.concurrency(),
        submitted: outcome.submitted,
        committed,
        errors: outcome.errors,
        first_error: outcome.first_error,
        wall_s: wall.as_secs_f64(),
        settle_s: settle.as_secs_f64(),
        settled,
        throughput_tps: committed as f64 / wall.as_secs_f64().max(1e-9),
        latency: Latency::of(&outcome.histogram),
        cpu_s: cpu.as_secs_f64(),
        cpu_per_txn_us: per_committed(cpu.as_secs_f64() * 1e6),
        cpu_utilisation: cpu.as_secs_f64()
            / (settle.as_secs_f64().max(1e-9) * machine::cores() as f64),
        counters,
        fast_path_share: if coordinated == 0 {
            0.0
        } else {
            counters.fast_path_commits as f64 / coordinated as f64
        },
        messages_per_txn: per_committed(counters.messages_sent as f64),
        envelopes_per_batch: if counters.batches_sent == 0 {
            0.0
        } else {
            counters.envelopes_sent as f64 / counters.batches_sent as f64
        },
        bytes_per_envelope: if counters.envelopes_sent == 0 {
            0.0
        } else {
            counters.bytes_sent as f64 / counters.envelopes_sent as f64
        },
        messages_by_kind: BTreeMap::new(),
        load_average_1m: machine::load_average().map(|[one, _, _]| one),
        stolen_share: None,
        voluntary_switches_per_txn: 0.0,
        involuntary_switches_per_txn: 0.0,
        rounds_tps: Vec::new(),
    }
}

/// Where the median of `figures` is (the lower of the two middle ones for an even count),
/// as an index into `figures`; `None` if there are none.
pub fn median_position(figures: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..figures.len()).collect();
    order.sort_by(|&a, &b| figures[a].total_cmp(&figures[b]));
    order.get(figures.len().checked_sub(1)? / 2).copied()
}

/// The round with the median throughput of one workload's rounds ([`median_position`]),
/// carrying every round's throughput in the order they ran.
pub fn median_round(mut rounds: Vec<WorkloadResult>) -> Option<WorkloadResult> {
    let throughputs: Vec<f64> = rounds.iter().map(|round| round.throughput_tps).collect();
    let mut median = rounds.swap_remove(median_position(&throughputs)?);
    if throughputs.len() > 1 {
        median.rounds_tps = throughputs;
    }
    Some(median)
}

/// A few transactions through every node, one at a time, before measuring: connections are
/// established and first allocations made. Returns how many every node must execute.
async fn warm_up(cluster: &Cluster, keys: KeyMode) -> anyhow::Result<u64> {
    const ROUNDS: u64 = 2;
    let mut count = 0;
    for round in 0..ROUNDS {
        for (i, node) in cluster.nodes.iter().enumerate() {
            let tx = match keys {
                KeyMode::All => BenchTx::seed(),
                _ => BenchTx::on_key(Bytes::from(format!("warm-{i}"))),
            };
            let id = u128::from(u64::MAX) << 64 | u128::from(round) << 32 | i as u128;
            match node.transaction(id, tx).await {
                Ok(_) => count += 1,
                Err(error) => anyhow::bail!(
                    "the cluster does not work: a warm-up transaction on node {} failed: {error}",
                    node.serial()
                ),
            }
        }
    }
    if !cluster.wait_applied(count, Duration::from_secs(30)).await {
        anyhow::bail!("the cluster does not work: the warm-up transactions did not execute everywhere within 30 s");
    }
    Ok(count)
}

/// What the clients saw.
pub struct Outcome {
    /// Transactions submitted.
    pub submitted: u64,
    /// Replies with the executor's result.
    pub committed: u64,
    /// Error replies.
    pub errors: u64,
    /// The first error reply.
    pub first_error: Option<String>,
    /// Latencies of the committed transactions, in microseconds.
    pub histogram: Histogram<u64>,
}

/// When closed-loop clients stop.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// After this many transactions in all.
    pub txns: u64,
    /// Or at this instant, whichever comes first.
    pub until: Option<Instant>,
}

/// What clients share while they run.
struct Shared {
    /// Every latency, and those since the last [`ClientsHandle::take_interval`].
    histograms: Mutex<(Histogram<u64>, Histogram<u64>)>,
    issued: AtomicU64,
    committed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            histograms: Mutex::new((latency_histogram(), latency_histogram())),
            issued: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
    }

    fn record(&self, started: Instant, reply: &Result<Result<(), ()>, synevi::SyneviError>) {
        match reply {
            Ok(_) => {
                let micros = elapsed_micros(started);
                if let Ok(mut histograms) = self.histograms.lock() {
                    record_micros(&mut histograms.0, micros);
                    record_micros(&mut histograms.1, micros);
                }
                self.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }

    fn outcome(&self) -> Outcome {
        Outcome {
            submitted: self.committed.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            first_error: self.first_error.lock().ok().and_then(|first| first.clone()),
            histogram: self
                .histograms
                .lock()
                .map(|histograms| histograms.0.clone())
                .unwrap_or_else(|_| latency_histogram()),
        }
    }
}

/// Progress of running clients, readable while they run (the long run samples it).
#[derive(Clone)]
pub struct ClientsHandle {
    shared: Arc<Shared>,
}

impl ClientsHandle {
    /// Replies with the executor's result so far.
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Relaxed)
    }

    /// Error replies so far.
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// The latencies recorded since the last call (for per-interval percentiles).
    pub fn take_interval(&self) -> Histogram<u64> {
        self.shared
            .histograms
            .lock()
            .map(|mut histograms| {
                let taken = histograms.1.clone();
                histograms.1.reset();
                taken
            })
            .unwrap_or_else(|_| latency_histogram())
    }
}

/// Runs `clients` closed-loop clients until `limit`.
pub async fn run_clients(
    cluster: &Cluster,
    clients: usize,
    keys: KeyMode,
    limit: Limit,
    progress: &ProgressBar,
) -> Outcome {
    let shared = Shared::new();
    let tasks = spawn_clients(cluster, clients, keys, limit, progress, &shared);
    for task in tasks {
        // A client task only ends by returning; a panic in it is a harness bug.
        task.await.expect("a client task panicked");
    }
    shared.outcome()
}

/// Starts the clients and returns a handle to watch them and their join handles.
pub fn start_clients(
    cluster: &Cluster,
    clients: usize,
    keys: KeyMode,
    limit: Limit,
    progress: &ProgressBar,
) -> (ClientsHandle, Vec<tokio::task::JoinHandle<()>>) {
    let shared = Shared::new();
    let tasks = spawn_clients(cluster, clients, keys, limit, progress, &shared);
    (ClientsHandle { shared }, tasks)
}

impl ClientsHandle {
    /// What the clients saw, in all.
    pub fn outcome(&self) -> Outcome {
        self.shared.outcome()
    }
}

fn spawn_clients(
    cluster: &Cluster,
    clients: usize,
    keys: KeyMode,
    limit: Limit,
    progress: &ProgressBar,
    shared: &Arc<Shared>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let nodes = cluster.nodes.clone();
    (0..clients)
        .map(|client| {
            let nodes = nodes.clone();
            let shared = Arc::clone(shared);
            let progress = progress.clone();
            let tx = keys.transaction(client);
            tokio::spawn(async move {
                let mut sequence: u64 = 0;
                loop {
                    if shared.issued.fetch_add(1, Ordering::Relaxed) >= limit.txns {
                        return;
                    }
                    if limit.until.is_some_and(|until| Instant::now() >= until) {
                        return;
                    }
                    // Round-robin over the nodes, each client starting at its own.
                    let node = &nodes[(client + sequence as usize) % nodes.len()];
                    let id = (client as u128) << 64 | u128::from(sequence);
                    let started = Instant::now();
                    let reply = node.transaction(id, tx.clone()).await;
                    shared.record(started, &reply);
                    progress.inc(1);
                    sequence += 1;
                }
            })
        })
        .collect()
}

/// Submits `per_node[i]` transactions to node `i + 1`, all at once.
async fn run_burst(
    cluster: &Cluster,
    per_node: &[u64],
    keys: KeyMode,
    progress: &ProgressBar,
) -> Outcome {
    let shared = Shared::new();
    let mut tasks = Vec::new();
    for (n, count) in per_node.iter().enumerate() {
        let Some(node) = cluster.nodes.get(n) else {
            continue;
        };
        for i in 0..*count {
            let node = node.clone();
            let shared = Arc::clone(&shared);
            let progress = progress.clone();
            let tx = keys.transaction(i as usize);
            let id = (n as u128) << 64 | u128::from(i);
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let reply = node.transaction(id, tx).await;
                shared.record(started, &reply);
                progress.inc(1);
            }));
        }
    }
    for task in tasks {
        task.await.expect("a client task panicked");
    }
    shared.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSpec, NetworkKind, StoreKind};

    fn with_throughput(committed: u64) -> WorkloadResult {
        let spec = WorkloadSpec {
            name: "3n-mem-hot-c1".into(),
            group: "matrix".into(),
            cluster: ClusterSpec {
                nodes: 3,
                network: NetworkKind::Local,
                store: StoreKind::Mem,
                data_dir: "unused".into(),
                pre_accept_window_ms: 5,
                idle_spin_us: 0,
                core: crate::cluster::CoreSite::Thread,
                commit_log: true,
                checkpoint_interval_ms: 100,
            },
            keys: KeyMode::Hot,
            load: Load::Clients {
                clients: 1,
                txns: committed,
            },
        };
        let outcome = Outcome {
            submitted: committed,
            committed,
            errors: 0,
            first_error: None,
            histogram: Histogram::new(3).expect("a histogram"),
        };
        let second = Duration::from_secs(1);
        summarise(
            &spec,
            outcome,
            second,
            second,
            true,
            second,
            ClusterCounters::default(),
        )
    }

    #[test]
    fn the_median_round_is_reported_with_every_rounds_throughput_in_order() {
        let rounds = vec![
            with_throughput(500),
            with_throughput(100),
            with_throughput(300),
        ];
        let median = median_round(rounds).expect("three rounds");
        assert_eq!(median.committed, 300);
        assert_eq!(median.rounds_tps, vec![500.0, 100.0, 300.0]);
        // An even count reports the lower of the two middle rounds.
        let median = median_round(vec![with_throughput(2), with_throughput(1)]).expect("two");
        assert_eq!(median.committed, 1);
        // One round carries no list; none is nothing.
        let single = median_round(vec![with_throughput(7)]).expect("one");
        assert!(single.rounds_tps.is_empty());
        assert!(median_round(Vec::new()).is_none());
    }
}
