//! Scenario tests: the simulator driven step by step, each reading like a script. Every
//! scenario ends with `settle()`, which heals everything and runs every invariant check.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use synevi_core::sim::{SimConfig, Simulation};
use synevi_persistence::MemStore;
use synevi_types::{Executor, Keys, Store, SyneviError, SyneviResult, Transaction};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Append {
    key: String,
    value: u32,
}

impl Transaction for Append {
    type TxOk = usize;
    type TxErr = ();

    fn as_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serialises")
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        postcard::from_bytes(&bytes).map_err(|e| SyneviError::Decode {
            what: "Append",
            reason: e.to_string(),
        })
    }

    fn keys(&self) -> Keys {
        Keys::single(self.key.as_str())
    }
}

/// Appends values to per-key lists; the result is the list's new length.
#[derive(Default)]
struct Lists(Mutex<std::collections::HashMap<String, Vec<u32>>>);

#[async_trait::async_trait]
impl Executor for Lists {
    type Tx = Append;

    async fn execute(&self, append: Append) -> SyneviResult<Self> {
        let mut lists = self.0.lock().map_err(|_| SyneviError::ShutDown)?;
        let list = lists.entry(append.key).or_default();
        list.push(append.value);
        Ok(Ok(list.len()))
    }
}

fn cluster(nodes: u16, seed: u64) -> Simulation<Lists> {
    let config = SimConfig {
        nodes,
        ..SimConfig::new(seed)
    };
    Simulation::new(
        config,
        |_| Lists::default(),
        |serial| -> Arc<dyn Store> { Arc::new(MemStore::new(serial).expect("memory store")) },
        |_, _| unreachable!("scenarios submit explicitly"),
    )
}

fn append(key: &str, value: u32) -> Append {
    Append {
        key: key.into(),
        value,
    }
}

/// Accord, recovery: every replica pre-accepted at t0 and the coordinator died before anyone
/// learned the outcome. The fast path may have been taken, so recovery must commit at t0.
#[test]
fn coordinator_crash_after_pre_accept_is_recovered_at_t0() {
    let mut sim = cluster(3, 1);
    sim.boot().expect("boots");
    let t0 = sim
        .submit(1, append("k", 1))
        .expect("runs")
        .expect("node 1 is up");
    let pre_accepted = sim
        .run_until(1_000, |sim| sim.delivered("PreAccept", t0) == 2)
        .expect("runs");
    assert!(pre_accepted, "both replicas received the PreAccept");
    // The replicas' answers are still on their way: the coordinator never hears them.
    sim.crash_node(1);
    let committed = sim
        .run_until(10_000, |sim| sim.committed_t(t0).is_some())
        .expect("runs");
    assert!(committed, "a replica recovered the transaction");
    assert_eq!(sim.committed_t(t0), Some(t0.as_t()), "committed at t0");
    let report = sim.settle().unwrap_or_else(|failure| panic!("{failure}"));
    assert!(report.recoveries >= 1);
    assert_eq!(report.executed, 1);
}

/// Accord, recovery: a transaction that only its (dead) coordinator and one isolated replica
/// know is someone else's dependency. The majority cannot find it, so it can never have been
/// committed: recovery invalidates it, and the dependant executes.
#[test]
fn a_dependency_only_a_minority_knows_is_invalidated() {
    let mut sim = cluster(5, 2);
    sim.boot().expect("boots");
    // X's PreAccept reaches node 4 only.
    sim.isolate_links(&[(1, 2), (1, 3), (1, 5)]);
    let x = sim
        .submit(1, append("k", 1))
        .expect("runs")
        .expect("node 1 is up");
    assert!(sim
        .run_until(1_000, |sim| sim.delivered("PreAccept", x) == 1)
        .expect("runs"));
    sim.crash_node(1);
    // Y conflicts with X; node 4 reports X as Y's dependency (answers from 3, 4 and 5: node
    // 1 is down).
    let y = sim
        .submit(2, append("k", 2))
        .expect("runs")
        .expect("node 2 is up");
    assert!(sim
        .run_until(1_000, |sim| sim.delivered("PreAcceptOk", y) == 3)
        .expect("runs"));
    sim.isolate(&[4]);
    let decided = sim
        .run_until(20_000, |sim| {
            sim.invalidated(x) && sim.committed_t(y).is_some()
        })
        .expect("runs");
    assert!(decided, "X invalidated, Y committed");
    let report = sim.settle().unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!((report.executed, report.invalidated), (1, 1));
}

/// Catch-up: a node cut off while others commit learns every commit after the partition
/// heals and executes them in the same order.
#[test]
fn a_partitioned_node_catches_up_after_healing() {
    let mut sim = cluster(3, 3);
    sim.boot().expect("boots");
    sim.isolate(&[3]);
    let mut t0s = Vec::new();
    for value in 0..20 {
        let node = 1 + (value % 2) as u16;
        let t0 = sim.submit(node, append("k", value)).expect("runs");
        t0s.push(t0.expect("node is up"));
        sim.run_for(5).expect("runs");
    }
    let all_committed = sim
        .run_until(10_000, |sim| {
            t0s.iter().all(|t0| sim.committed_t(*t0).is_some())
        })
        .expect("runs");
    assert!(all_committed, "the majority commits without node 3");
    let report = sim.settle().unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        report.executed, 20,
        "node 3 executed everything too (checked by settle)"
    );
}
