//! In-process restarts on LMDB: a node shut down cleanly and created again with `Node::new`
//! on the same store directory resumes where it was, and keeps ordering transactions with
//! the others.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use synevi::types::{Event, Serial};
use synevi::{Config, Transaction};
use synevi_tests::ledger::{LedgerState, LedgerTx, Positions};
use synevi_tests::lmdb_cluster::{LmdbCluster, SERIALS};

/// Generous: settling needs a few commit retransmissions (2 s apart by default) at most.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Short recovery timeouts, so transactions left behind by a stopped node are finished
/// quickly.
fn config() -> Config {
    Config {
        recovery_timeout_ms: 300,
        recovery_backoff_ms_max: 100,
        ..Config::default()
    }
}

/// Transaction `index` of a batch: conflicting (a shared key, sometimes two) and not.
fn transaction(batch: u64, index: u64) -> LedgerTx {
    let keys = match index % 4 {
        0 => vec!["shared".to_string()],
        1 => vec!["shared".to_string(), format!("pair-{}", index % 3)],
        2 => vec![format!("pair-{}", index % 3)],
        _ => vec![format!("own-{batch}-{index}")],
    };
    LedgerTx {
        id: batch * 1_000 + index,
        keys,
    }
}

/// Submits `count` transactions of `batch` at once, spread over `coordinators`; returns
/// their ids. Every one must be acknowledged.
async fn submit(
    cluster: &LmdbCluster,
    coordinators: &[Serial],
    batch: u64,
    count: u64,
) -> BTreeSet<u64> {
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..count {
        let node = cluster
            .node(coordinators[index as usize % coordinators.len()])
            .clone();
        let tx = transaction(batch, index);
        clients.spawn(async move {
            let id = tx.id;
            let outcome: Result<Positions, String> = node
                .transaction(u128::from(id), tx)
                .await
                .unwrap_or_else(|e| panic!("transaction {id} failed: {e}"));
            (id, outcome)
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(joined) = clients.join_next().await {
        let (id, outcome) = joined.expect("a client task");
        outcome.unwrap_or_else(|e| panic!("the ledger never rejects, got {e} for {id}"));
        ids.insert(id);
    }
    ids
}

/// The ledger an event log describes (replayed through a fresh ledger state).
fn ledger_of_log(log: &[Event]) -> LedgerState {
    let mut ledger = LedgerState::default();
    for event in log {
        let tx = LedgerTx::from_bytes(event.payload.to_vec()).expect("a ledger transaction");
        ledger.apply(&tx);
    }
    ledger
}

/// Settles the cluster, then checks that every running node applied the same transactions
/// (equal digests) and holds the same ledgers. Returns that ledger.
async fn settle_and_compare(cluster: &LmdbCluster, expected: &BTreeSet<u64>) -> LedgerState {
    let statuses = cluster
        .settle(expected, SETTLE_LIMIT)
        .await
        .unwrap_or_else(|report| panic!("{report}"));
    let first = cluster.ledger(SERIALS[0]).snapshot();
    assert_eq!(first.executions, first.executed.len() as u64, "a duplicate");
    assert_eq!(&first.executed, expected);
    for (serial, status) in SERIALS.iter().zip(&statuses) {
        assert_eq!(status.applied_digest, statuses[0].applied_digest);
        assert_eq!(status.applied_count, expected.len() as u64);
        let ledger = cluster.ledger(*serial).snapshot();
        assert_eq!(
            ledger, first,
            "node {serial}'s ledger differs from node 1's"
        );
    }
    first
}

/// Stops the cluster and checks that each node's event log, as its store holds it after a
/// clean stop, describes `ledger`: the executor and the log agree.
async fn stop_and_check_logs(mut cluster: LmdbCluster, ledger: &LedgerState) {
    for (serial, log) in cluster.stop().await.expect("the cluster stops") {
        assert_eq!(
            &ledger_of_log(&log),
            ledger,
            "node {serial}'s event log does not describe its executor's state"
        );
    }
}

async fn start(dir: &Path) -> LmdbCluster {
    LmdbCluster::start(dir, config())
        .await
        .expect("the cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_replays_its_log_and_keeps_executing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cluster = start(dir.path()).await;
    let mut expected = submit(&cluster, &SERIALS, 1, 60).await;
    let before = settle_and_compare(&cluster, &expected).await;
    let digest_before = cluster.node(3).status().applied_digest;
    let log_before = cluster.stop_node(3).await.expect("node 3 stops");
    assert_eq!(ledger_of_log(&log_before), before);

    // The others go on without node 3: a majority commits (slow path).
    expected.extend(submit(&cluster, &[1, 2], 2, 30).await);

    // Node 3 comes back cut off from the others, so that what its executor holds right
    // after `Node::new` can only come from replaying its own log.
    cluster.hub().isolate(3, &SERIALS);
    cluster.start_node(3).await.expect("node 3 restarts");
    assert_eq!(
        cluster.ledger(3).snapshot(),
        before,
        "replaying the log did not rebuild node 3's executor state"
    );
    // The status is published after the node's first round; wait for it.
    let mut status = cluster.node(3).watch_status();
    let published = status.wait_for(|status| status.applied_count > 0);
    let status = tokio::time::timeout(SETTLE_LIMIT, published)
        .await
        .expect("node 3 publishes its status")
        .expect("node 3 runs")
        .clone();
    assert_eq!(status.applied_count, log_before.len() as u64);
    assert_eq!(status.applied_digest, digest_before);

    // Back with the others: it catches up on what it missed and coordinates again.
    cluster.hub().heal();
    expected.extend(submit(&cluster, &SERIALS, 3, 60).await);
    let ledger = settle_and_compare(&cluster, &expected).await;
    stop_and_check_logs(cluster, &ledger).await;
}

/// A home node (a transaction's coordinator) that restarts while another member has not yet
/// applied one of its transactions must still get that transaction to the member: it owes
/// the member the commit until the member acknowledges it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_coordinator_still_delivers_its_commits() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cluster = start(dir.path()).await;
    // As over gRPC: an endpoint reaches only the members it was given.
    cluster.hub().require_members();
    // Node 3 hears nothing of these: nodes 1 and 2 commit and apply them (slow path).
    cluster.hub().isolate(3, &SERIALS);
    let expected = submit(&cluster, &[1], 1, 20).await;
    cluster.stop_node(1).await.expect("node 1 stops");
    // Like an application that learns its peers a moment after it starts: the node runs a
    // round with its restored state before its members are added.
    cluster
        .start_node_with_late_members(1)
        .await
        .expect("node 1 restarts");
    cluster.hub().heal();
    let ledger = settle_and_compare(&cluster, &expected).await;
    // What the restored node sent before its members were added waited for them.
    assert_eq!(
        cluster.hub().dropped_unknown(),
        0,
        "envelopes for members not yet added again were dropped"
    );
    stop_and_check_logs(cluster, &ledger).await;
}
