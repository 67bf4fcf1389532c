//! End to end over gRPC: clusters of 3 and 5 nodes, each with its own `GrpcNetwork` on
//! 127.0.0.1, order 1,000+ concurrent transactions from every node identically.
//!
//! The core runs on a thread of its own by default (one test runs the cores as tasks of the
//! application's runtime, where each yields after every round to the network's tasks), and
//! recovery backs off exponentially and in ring order after the home node (so an overloaded
//! cluster does not recover every slow transaction from every replica at once). Before both,
//! this test showed a recovery storm that never converged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synevi::network::GrpcNetwork;
use synevi::persistence::MemStore;
use synevi::{Executor, Keys, Node, SyneviError, SyneviResult, Transaction, Ulid};

/// The protocol's defaults, except that a client waits up to a minute: this test checks
/// ordering, not latency, and 1,200 concurrent transactions on 5 nodes in a debug build on a
/// 2-core CI machine can take longer than the default 10 s to drain.
fn config() -> synevi::Config {
    synevi::Config {
        transaction_timeout_ms: 60_000,
        ..synevi::Config::default()
    }
}

/// A test transaction: touches `keys`, or everything when `all`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct TestTx {
    id: u64,
    keys: Vec<String>,
    all: bool,
}

impl Transaction for TestTx {
    type TxOk = Vec<(String, u64)>;
    type TxErr = String;

    fn as_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("test transactions serialise")
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        postcard::from_bytes(&bytes).map_err(|e| SyneviError::Decode {
            what: "TestTx",
            reason: e.to_string(),
        })
    }

    fn keys(&self) -> Keys {
        if self.all {
            Keys::All
        } else {
            Keys::set(self.keys.iter().map(String::as_str))
        }
    }
}

/// Records the execution order. A transaction's result is, per key it touches, how many
/// transactions touching that key (or everything) executed before it: equal results on all
/// nodes mean equal per-key orders.
#[derive(Default)]
struct Recorder {
    /// Execution order, per-key counts, how many `all` transactions executed.
    state: Mutex<(Vec<TestTx>, HashMap<String, u64>, u64)>,
    results: Mutex<BTreeMap<u64, Vec<(String, u64)>>>,
}

#[synevi::async_trait]
impl Executor for Recorder {
    type Tx = TestTx;

    async fn execute(&self, tx: TestTx) -> SyneviResult<Self> {
        let mut state = self.state.lock().expect("recorder lock");
        let (order, per_key, all_count) = &mut *state;
        let result: Vec<(String, u64)> = if tx.all {
            vec![("*".to_string(), order.len() as u64)]
        } else {
            tx.keys
                .iter()
                .map(|key| {
                    let before = per_key.get(key).copied().unwrap_or(*all_count);
                    (key.clone(), before)
                })
                .collect()
        };
        if tx.all {
            *all_count += 1;
            for count in per_key.values_mut() {
                *count += 1;
            }
        } else {
            for key in &tx.keys {
                *per_key.entry(key.clone()).or_insert(*all_count) += 1;
            }
        }
        self.results
            .lock()
            .expect("results lock")
            .insert(tx.id, result.clone());
        order.push(tx);
        Ok(Ok(result))
    }
}

impl Recorder {
    /// Per key, the ids in execution order (`all` transactions count for every key).
    fn sequences(&self, keys: &[String]) -> BTreeMap<String, Vec<u64>> {
        let state = self.state.lock().expect("recorder lock");
        keys.iter()
            .map(|key| {
                let ids = state
                    .0
                    .iter()
                    .filter(|tx| tx.all || tx.keys.contains(key))
                    .map(|tx| tx.id)
                    .collect();
                (key.clone(), ids)
            })
            .collect()
    }

    fn results(&self) -> BTreeMap<u64, Vec<(String, u64)>> {
        self.results.lock().expect("results lock").clone()
    }

    fn executed_ids(&self) -> Vec<u64> {
        let state = self.state.lock().expect("recorder lock");
        state.0.iter().map(|tx| tx.id).collect()
    }
}

type GrpcNode = Node<GrpcNetwork, Arc<Recorder>, MemStore>;

/// Shared keys (contention), keys private to one submitter, and `Keys::All`.
fn workload(nodes: u16, per_node: u64) -> Vec<(usize, TestTx)> {
    let mut txs = Vec::new();
    for node in 0..usize::from(nodes) {
        for i in 0..per_node {
            let id = node as u64 * 1_000_000 + i;
            let (keys, all) = match i % 10 {
                0 => (vec![], true),
                1..=3 => (vec!["hot".to_string()], false),
                4 | 5 => (
                    vec![
                        format!("shared-{}", i % 3),
                        format!("shared-{}", (i + 1) % 3),
                    ],
                    false,
                ),
                _ => (vec![format!("own-{node}-{}", i % 4)], false),
            };
            txs.push((node, TestTx { id, keys, all }));
        }
    }
    txs
}

async fn start_cluster(
    n: u16,
    config: synevi::Config,
) -> (Vec<GrpcNode>, Vec<Arc<Recorder>>, Vec<GrpcNetwork>) {
    let ids: Vec<Ulid> = (0..n).map(|_| Ulid::new()).collect();
    let mut nodes = Vec::new();
    let mut recorders = Vec::new();
    let mut networks = Vec::new();
    for serial in 1..=n {
        // Port 0: the OS picks a free port; the URL is known once the node started.
        let network = GrpcNetwork::new(
            "127.0.0.1:0".parse().expect("an address"),
            String::new(),
            ids[usize::from(serial - 1)],
            serial,
        );
        let recorder = Arc::new(Recorder::default());
        let node = Node::with_config(
            ids[usize::from(serial - 1)],
            serial,
            network.clone(),
            recorder.clone(),
            MemStore::new(serial).expect("memory store"),
            config.clone(),
        )
        .await
        .expect("node starts");
        nodes.push(node);
        recorders.push(recorder);
        networks.push(network);
    }
    let urls: Vec<String> = networks
        .iter()
        .map(|network| format!("http://{}", network.local_addr().expect("started")))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        for peer in (1..=n).filter(|&peer| usize::from(peer - 1) != i) {
            let p = usize::from(peer - 1);
            node.add_member(ids[p], peer, urls[p].clone(), true)
                .await
                .expect("member added");
        }
    }
    (nodes, recorders, networks)
}

/// The clusters run one at a time: two of them at once on a 2-core machine starve each
/// other's timers into spurious recoveries, which is a test of the machine, not of gRPC.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run_cluster(n: u16, per_node: u64) {
    run_cluster_with(n, per_node, config()).await;
}

async fn run_cluster_with(n: u16, per_node: u64, config: synevi::Config) {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (nodes, recorders, networks) = start_cluster(n, config).await;
    let txs = workload(n, per_node);
    let total = txs.len();
    assert!(total >= 1_000);
    let mut tasks = Vec::new();
    for (node, tx) in txs.clone() {
        let handle = nodes[node].clone();
        tasks.push(tokio::spawn(async move {
            let id = tx.id;
            (id, handle.transaction(u128::from(id), tx).await)
        }));
    }
    let mut replies = BTreeMap::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (id, reply) = task.await.expect("client task");
        match reply {
            Ok(outcome) => {
                replies.insert(id, outcome.expect("the recorder never rejects"));
            }
            Err(error) => failures.push(format!("transaction {id} failed: {error}")),
        }
    }
    if !failures.is_empty() {
        for (node, network) in nodes.iter().zip(&networks) {
            eprintln!(
                "node {}: {:?}\n  {:?}",
                node.serial(),
                node.status(),
                network.stats()
            );
        }
        panic!(
            "{} transactions failed, first: {}",
            failures.len(),
            failures[0]
        );
    }
    // Every node executes everything (a node may finish after the coordinators replied).
    for (i, node) in nodes.iter().enumerate() {
        let mut status = node.watch_status();
        let done = tokio::time::timeout(
            Duration::from_secs(120),
            status.wait_for(|s| s.applied_count >= total as u64),
        )
        .await
        .is_ok();
        assert!(
            done,
            "node {} applied {} of {total}",
            i + 1,
            node.status().applied_count
        );
    }

    let mut expected: Vec<u64> = txs.iter().map(|(_, tx)| tx.id).collect();
    expected.sort_unstable();
    for (i, recorder) in recorders.iter().enumerate() {
        let mut executed = recorder.executed_ids();
        executed.sort_unstable();
        assert_eq!(
            executed,
            expected,
            "node {} executed a different set",
            i + 1
        );
    }
    let mut keys: Vec<String> = txs.iter().flat_map(|(_, tx)| tx.keys.clone()).collect();
    keys.sort();
    keys.dedup();
    let reference = recorders[0].sequences(&keys);
    for (i, recorder) in recorders.iter().enumerate().skip(1) {
        assert_eq!(
            recorder.sequences(&keys),
            reference,
            "node {} ordered differently",
            i + 1
        );
    }
    // Equal results everywhere, and the clients got exactly those.
    let results = recorders[0].results();
    for recorder in &recorders[1..] {
        assert_eq!(recorder.results(), results);
    }
    assert_eq!(replies, results);
    let digests: Vec<_> = nodes.iter().map(|n| n.status().applied_digest).collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "execution digests differ"
    );
    // It really went over gRPC.
    for network in &networks {
        let stats = network.stats();
        assert!(stats.envelopes_received > 0, "{stats:?}");
        eprintln!(
            "node {}: {} envelopes in {} frames, {} bytes, {} dropped",
            network.serial(),
            stats.envelopes_sent,
            stats.batches_sent,
            stats.bytes_sent,
            stats.dropped_queue_full + stats.dropped_disconnected
        );
    }
    // One after another, as an application stops its nodes: each ends its streams, which
    // the nodes still running see end rather than break (a broken one is a warning in their
    // logs). Node `i` heard the `i` nodes before it end theirs.
    for node in &nodes {
        node.shutdown().await;
    }
    for (i, network) in networks.iter().enumerate() {
        let stats = network.stats();
        assert_eq!(stats.failed_inbound_streams, 0, "node {}: {stats:?}", i + 1);
        assert!(
            stats.closed_inbound_streams >= i as u64,
            "node {}: {stats:?}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_grpc_order_concurrent_transactions_identically() {
    run_cluster(3, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_over_grpc_order_concurrent_transactions_identically() {
    run_cluster(5, 240).await;
}

/// The other placement of the network's tasks: on the application's runtime, beside a core
/// thread that looks for input before it sleeps (the default puts them on the core's thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_their_networks_on_the_applications_runtime_order_identically() {
    let config = synevi::Config {
        network_on_core_thread: false,
        ..config()
    };
    run_cluster_with(3, 400, config).await;
}

/// The cores as tasks on the application's runtime (`Config::core_on_own_thread` off), as
/// the benchmark harness runs them with `--core runtime`: 5 nodes' cores and networks share the test's two
/// workers, and each core yields after every round so that none keeps the others' network
/// tasks from running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_with_their_cores_on_the_applications_runtime_order_identically() {
    let config = synevi::Config {
        core_on_own_thread: false,
        ..config()
    };
    run_cluster_with(5, 240, config).await;
}
