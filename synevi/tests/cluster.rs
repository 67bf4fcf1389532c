//! Issue 2's end-to-end checks: clusters of 3 and 5 nodes in one process order 1,000+
//! concurrent transactions identically.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Cluster, TestTx};
use synevi::{Config, SyneviError};

/// Keys shared by many transactions (contention) and keys private to one submitter.
fn workload(nodes: u16, per_node: u64) -> Vec<(usize, TestTx)> {
    let mut txs = Vec::new();
    for node in 0..usize::from(nodes) {
        for i in 0..per_node {
            let id = node as u64 * 1_000_000 + i;
            let tx = match i % 10 {
                // Everything conflicts with these.
                0 => TestTx {
                    id,
                    keys: vec![],
                    all: true,
                },
                // A hot key shared by every node.
                1..=3 => TestTx {
                    id,
                    keys: vec!["hot".into()],
                    all: false,
                },
                // Two shared keys at once.
                4 | 5 => TestTx {
                    id,
                    keys: vec![
                        format!("shared-{}", i % 3),
                        format!("shared-{}", (i + 1) % 3),
                    ],
                    all: false,
                },
                // Keys only this node's transactions touch.
                _ => TestTx {
                    id,
                    keys: vec![format!("own-{node}-{}", i % 4)],
                    all: false,
                },
            };
            txs.push((node, tx));
        }
    }
    txs
}

async fn run_cluster(nodes: u16, per_node: u64) {
    run_cluster_with(nodes, per_node, Config::default()).await;
}

async fn run_cluster_with(nodes: u16, per_node: u64, config: Config) {
    let mut cluster = Cluster::start(nodes, config).await;
    let txs = workload(nodes, per_node);
    let total = txs.len();
    let mut tasks = Vec::new();
    for (node, tx) in txs.clone() {
        let handle = cluster.nodes[node].clone();
        tasks.push(tokio::spawn(async move {
            let id = tx.id;
            (id, handle.transaction(u128::from(id), tx).await)
        }));
    }
    let mut replies = std::collections::BTreeMap::new();
    for task in tasks {
        let (id, reply) = task.await.expect("client task");
        let outcome = reply.unwrap_or_else(|e| panic!("transaction {id} failed: {e}"));
        replies.insert(id, outcome.expect("the recorder never rejects"));
    }
    cluster.await_executed(total, Duration::from_secs(60)).await;

    // Every node executed every transaction exactly once.
    let mut expected: Vec<u64> = txs.iter().map(|(_, tx)| tx.id).collect();
    expected.sort_unstable();
    for (i, recorder) in cluster.recorders.iter().enumerate() {
        let mut executed = recorder.executed_ids();
        executed.sort_unstable();
        assert_eq!(
            executed,
            expected,
            "node {} executed a different set",
            i + 1
        );
    }
    // For every key, the same sequence on every node.
    let mut keys: Vec<String> = txs.iter().flat_map(|(_, tx)| tx.keys.clone()).collect();
    keys.sort();
    keys.dedup();
    let reference = cluster.recorders[0].sequences(&keys);
    for (i, recorder) in cluster.recorders.iter().enumerate().skip(1) {
        assert_eq!(
            recorder.sequences(&keys),
            reference,
            "node {} ordered differently",
            i + 1
        );
    }
    // Equal results everywhere, and the clients got exactly those.
    let results = cluster.recorders[0].results();
    for recorder in &cluster.recorders[1..] {
        assert_eq!(recorder.results(), results);
    }
    assert_eq!(replies, results);
    let digests: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.status().applied_digest)
        .collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "execution digests differ"
    );
    let stats: Vec<_> = cluster.nodes.iter().map(|n| n.stats()).collect();
    let commits: u64 = stats
        .iter()
        .map(|s| s.fast_path_commits + s.slow_path_commits)
        .sum();
    assert_eq!(
        commits as usize, total,
        "every transaction committed once by its coordinator"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_order_concurrent_transactions_identically() {
    run_cluster(3, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_order_concurrent_transactions_identically() {
    run_cluster(5, 240).await;
}

/// The core threads sleep as soon as they find no input (the default looks for a while
/// first): the waking path alone must carry every transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_sleep_at_once_when_idle_order_identically_too() {
    let config = Config {
        idle_spin_us: 0,
        ..Config::default()
    };
    run_cluster_with(3, 200, config).await;
}

/// Every node's core a task of the application's runtime (`Config::core_on_own_thread`
/// off), and that runtime a single thread: the cores, the network and the test's clients
/// take turns on it, each core yielding after every round.
#[tokio::test(flavor = "current_thread")]
async fn nodes_whose_cores_share_a_single_threaded_runtime_order_identically() {
    let config = Config {
        core_on_own_thread: false,
        ..Config::default()
    };
    run_cluster_with(3, 200, config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_transaction_takes_the_fast_path() {
    let mut cluster = Cluster::start(3, Config::default()).await;
    let tx = TestTx {
        id: 7,
        keys: vec!["k".into()],
        all: false,
    };
    let outcome = cluster.nodes[1].transaction(7, tx).await.expect("commits");
    assert_eq!(outcome, Ok(vec![("k".to_string(), 0)]));
    cluster.await_executed(1, Duration::from_secs(10)).await;
    let stats = cluster.nodes[1].stats();
    assert_eq!((stats.fast_path_commits, stats.slow_path_commits), (1, 0));
    // The other nodes only answered, and executed it too.
    for i in [0, 2] {
        let stats = cluster.nodes[i].stats();
        assert_eq!((stats.fast_path_commits, stats.slow_path_commits), (0, 0));
        assert_eq!(cluster.recorders[i].executed_ids(), vec![7]);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_a_transaction_fails_after_the_timeout() {
    let config = Config {
        transaction_timeout_ms: 300,
        ..Config::default()
    };
    let cluster = Cluster::start(3, config).await;
    // Nodes 2 and 3 are unreachable.
    cluster.hub.isolate(1, &[1, 2, 3]);
    let started = std::time::Instant::now();
    let tx = TestTx {
        id: 1,
        keys: vec!["k".into()],
        all: false,
    };
    let outcome = cluster.nodes[0].transaction(1, tx).await;
    match outcome {
        Err(SyneviError::QuorumUnreachable {
            needed,
            reached,
            waited_ms,
        }) => {
            assert_eq!((needed, reached), (2, 1));
            assert!(waited_ms >= 300);
        }
        other => panic!("expected QuorumUnreachable, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_transaction_is_refused_at_once() {
    let config = Config {
        payload_bytes_max: 64,
        ..Config::default()
    };
    let cluster = Cluster::start(3, config).await;
    let tx = TestTx {
        id: 1,
        keys: vec!["k".repeat(100)],
        all: false,
    };
    match cluster.nodes[0].transaction(1, tx).await {
        Err(SyneviError::TooLarge { what, size, limit }) => {
            assert_eq!((what, limit), ("transaction", 64));
            assert!(size > 64);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        cluster.nodes[0].stats().submitted,
        0,
        "nothing reached the protocol"
    );
    cluster.shutdown().await;
}

/// An executor that fails (its disk, say) halts execution on its node: the transaction it
/// failed on and every later one answer `ExecutorFailed` there, with the first failure,
/// while the other nodes execute everything. Both ways of running executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_executor_halts_its_node_only() {
    for inline in [true, false] {
        let cluster = Cluster::start_with(3, Config::default(), |serial, recorder| {
            recorder.inline = inline;
            if serial == 1 {
                recorder.fail_on = Some(2);
            }
        })
        .await;
        let tx = |id: u64| TestTx {
            id,
            keys: vec!["k".into()],
            all: false,
        };
        let first = cluster.nodes[0]
            .transaction(1, tx(1))
            .await
            .expect("commits");
        assert_eq!(first, Ok(vec![("k".to_string(), 0)]), "inline: {inline}");
        for id in [2, 3] {
            match cluster.nodes[0].transaction(u128::from(id), tx(id)).await {
                Err(SyneviError::ExecutorFailed { reason, .. }) => {
                    assert!(reason.contains("disk failed under 2"), "{reason}");
                }
                other => panic!("inline {inline}, tx {id}: expected ExecutorFailed, got {other:?}"),
            }
        }
        // The other nodes executed all three, in the same order.
        for i in [1, 2] {
            let mut executed = cluster.executed[i].clone();
            let done = tokio::time::timeout(
                Duration::from_secs(10),
                executed.wait_for(|count| *count >= 3),
            )
            .await;
            assert!(done.is_ok(), "node {} executed everything", i + 1);
            assert_eq!(cluster.recorders[i].executed_ids(), vec![1, 2, 3]);
        }
        assert_eq!(cluster.recorders[0].executed_ids(), vec![1]);
        // One client at a time: rounds are small, so an inline executor runs on the core's
        // thread (the failed execution included), a task executor never does.
        let on_core_thread: usize = cluster
            .recorders
            .iter()
            .map(|recorder| recorder.on_core_thread.load(Ordering::Relaxed))
            .sum();
        if inline {
            assert!(on_core_thread > 0, "no execution ran inline");
        } else {
            assert_eq!(on_core_thread, 0);
        }
        cluster.shutdown().await;
    }
}

/// Holds back store commits until the test opens it.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    /// Commits waiting at the gate.
    waiting: std::sync::atomic::AtomicUsize,
    /// Commits that went through it.
    passed: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.opened.notify_all();
    }

    fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().expect("gate");
        // Tells `wait_for_arrival` (under the lock, so the wake-up cannot be missed).
        self.opened.notify_all();
        while !*open {
            open = self.opened.wait(open).expect("gate");
        }
        drop(open);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.passed.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until a commit waits at the gate; false if none came within `timeout`.
    fn wait_for_arrival(&self, timeout: Duration) -> bool {
        let open = self.open.lock().expect("gate");
        let (_open, result) = self
            .opened
            .wait_timeout_while(open, timeout, |_| self.waiting.load(Ordering::SeqCst) == 0)
            .expect("gate");
        !result.timed_out()
    }
}

/// A `MemStore` whose commits carrying a `Committed` record pass its gate first.
struct GatedStore {
    inner: synevi::persistence::MemStore,
    gate: std::sync::Arc<Gate>,
}

impl synevi::types::Store for GatedStore {
    fn serial(&self) -> u16 {
        self.inner.serial()
    }

    fn load(&self) -> Result<synevi::types::StoredState, SyneviError> {
        self.inner.load()
    }

    fn commit(&self, batch: &synevi::types::WriteBatch) -> Result<(), SyneviError> {
        let commits_a_decision = batch
            .transactions
            .iter()
            .any(|record| record.status == synevi::types::Status::Committed);
        if commits_a_decision {
            self.gate.pass();
        }
        self.inner.commit(batch)
    }

    fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<synevi::types::Event>, SyneviError> {
        self.inner.events_after(after_seq, limit)
    }
}

/// The coordinator answers its client before its own record of the commit is durable: the
/// decision is durable on the replicas whose votes made it (`Ready::execute_early`), and
/// waiting for the local sync would put one more store commit on the latency path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_answered_before_its_commit_is_durable_on_the_coordinator() {
    let gates: Vec<std::sync::Arc<Gate>> = (0..3).map(|_| Default::default()).collect();
    // Only the coordinator's (node 1's) commits of decisions wait.
    gates[1].open();
    gates[2].open();
    let cluster = Cluster::start_on(
        3,
        Config::default(),
        |_, _| {},
        |serial| GatedStore {
            inner: synevi::persistence::MemStore::new(serial).expect("memory store"),
            gate: gates[usize::from(serial - 1)].clone(),
        },
    )
    .await;
    let tx = TestTx {
        id: 1,
        keys: vec!["k".into()],
        all: false,
    };
    let answered =
        tokio::time::timeout(Duration::from_secs(10), cluster.nodes[0].transaction(1, tx)).await;
    // Nothing recording a decision has passed the closed gate: the answer did not wait for
    // it. (Whether the persister already reached the gate when the answer came is a race;
    // that it gets there, and waits, is checked next.)
    let passed = gates[0].passed.load(Ordering::SeqCst);
    let executed = cluster.recorders[0].executed_ids();
    let gate = gates[0].clone();
    let arrived =
        tokio::task::spawn_blocking(move || gate.wait_for_arrival(Duration::from_secs(10)))
            .await
            .expect("waits");
    let held = gates[0].waiting.load(Ordering::SeqCst);
    // Open before asserting: a held persister would keep a failing test from ending.
    gates[0].open();
    let outcome = answered
        .expect("answered while the commit is held at the gate")
        .expect("commits");
    assert_eq!(outcome, Ok(vec![("k".to_string(), 0)]));
    assert_eq!(executed, vec![1]);
    assert_eq!(passed, 0, "no commit of a decision went through the gate");
    assert!(
        arrived,
        "the commit that records the decision reaches the gate"
    );
    assert_eq!(
        held, 1,
        "the commit that records the decision was still held"
    );
    let mut status = cluster.nodes[0].watch_status();
    let applied = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.applied_count >= 1),
    );
    assert!(
        applied.await.is_ok(),
        "the execution is recorded once the gate opens"
    );
    cluster.shutdown().await;
}
