//! A recording executor and an in-process cluster, shared by the cluster tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use synevi::network::{LocalHub, LocalNetwork};
use synevi::persistence::MemStore;
use synevi::types::Store;
use synevi::{Config, Executor, Keys, Node, SyneviError, SyneviResult, Transaction, Ulid};
use tokio::runtime::RuntimeFlavor;
use tokio::sync::watch;

/// A test transaction: touches `keys`, or everything when `all`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestTx {
    pub id: u64,
    pub keys: Vec<String>,
    pub all: bool,
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

/// Records the execution order; the result of a transaction is, for each key it touches,
/// how many transactions touching that key executed before it (for `all`: how many
/// transactions executed before it at all). Conflicting transactions are ordered, so the
/// results are equal on every node exactly when the orders are.
pub struct Recorder {
    state: Mutex<RecorderState>,
    executed: watch::Sender<usize>,
    /// What `Executor::executes_inline` answers: both ways of running executions must give
    /// the same order.
    pub inline: bool,
    /// A transaction id this executor fails on, as if its disk failed.
    pub fail_on: Option<u64>,
    /// Executions that ran on the node's core thread (a current-thread runtime; the tests'
    /// own runtime, where the executor task runs, is multi-threaded).
    pub on_core_thread: AtomicUsize,
}

#[derive(Default)]
struct RecorderState {
    order: Vec<TestTx>,
    per_key: HashMap<String, u64>,
    results: BTreeMap<u64, Vec<(String, u64)>>,
}

impl Recorder {
    pub fn new() -> (Self, watch::Receiver<usize>) {
        let (executed, watch) = watch::channel(0);
        (
            Recorder {
                state: Mutex::new(RecorderState::default()),
                executed,
                inline: true,
                fail_on: None,
                on_core_thread: AtomicUsize::new(0),
            },
            watch,
        )
    }
}

#[synevi::async_trait]
impl Executor for Recorder {
    type Tx = TestTx;

    async fn execute(&self, tx: TestTx) -> SyneviResult<Self> {
        if tokio::runtime::Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
            self.on_core_thread.fetch_add(1, Ordering::Relaxed);
        }
        if self.fail_on == Some(tx.id) {
            return Err(SyneviError::Store(format!("disk failed under {}", tx.id)));
        }
        let mut state = self.state.lock().expect("recorder lock");
        let result: Vec<(String, u64)> = if tx.all {
            vec![("*".to_string(), state.order.len() as u64)]
        } else {
            tx.keys
                .iter()
                .map(|key| (key.clone(), state.per_key.get(key).copied().unwrap_or(0)))
                .collect()
        };
        if tx.all {
            for count in state.per_key.values_mut() {
                *count += 1;
            }
            state.per_key.entry("*all".into()).or_default();
        } else {
            for key in &tx.keys {
                let all_before = state.order.iter().filter(|t| t.all).count() as u64;
                let entry = state.per_key.entry(key.clone()).or_insert(all_before);
                *entry += 1;
            }
        }
        state.results.insert(tx.id, result.clone());
        state.order.push(tx);
        let executed = state.order.len();
        drop(state);
        self.executed.send_replace(executed);
        Ok(Ok(result))
    }

    fn executes_inline(&self) -> bool {
        self.inline
    }
}

impl Recorder {
    /// Per key, the ids in execution order (`all` transactions count for every key).
    pub fn sequences(&self, keys: &[String]) -> BTreeMap<String, Vec<u64>> {
        let state = self.state.lock().expect("recorder lock");
        keys.iter()
            .map(|key| {
                let ids = state
                    .order
                    .iter()
                    .filter(|tx| tx.all || tx.keys.contains(key))
                    .map(|tx| tx.id)
                    .collect();
                (key.clone(), ids)
            })
            .collect()
    }

    pub fn results(&self) -> BTreeMap<u64, Vec<(String, u64)>> {
        self.state.lock().expect("recorder lock").results.clone()
    }

    pub fn executed_ids(&self) -> Vec<u64> {
        let state = self.state.lock().expect("recorder lock");
        state.order.iter().map(|tx| tx.id).collect()
    }
}

pub type TestNode<S = MemStore> = Node<LocalNetwork, std::sync::Arc<Recorder>, S>;

/// `n` nodes on one hub, every one a member of every other.
pub struct Cluster<S: Store = MemStore> {
    pub hub: LocalHub,
    pub nodes: Vec<TestNode<S>>,
    pub recorders: Vec<std::sync::Arc<Recorder>>,
    pub executed: Vec<watch::Receiver<usize>>,
}

impl Cluster {
    /// Odd serials run executions inline, even ones on the executor task.
    pub async fn start(n: u16, config: Config) -> Cluster {
        Cluster::start_with(n, config, |serial, recorder| {
            recorder.inline = serial % 2 == 1
        })
        .await
    }

    /// `n` nodes whose recorders `adjust` sets up, by serial.
    pub async fn start_with(
        n: u16,
        config: Config,
        adjust: impl Fn(u16, &mut Recorder),
    ) -> Cluster {
        Cluster::start_on(n, config, adjust, |serial| {
            MemStore::new(serial).expect("memory store")
        })
        .await
    }
}

impl<S: Store> Cluster<S> {
    /// `n` nodes whose recorders `adjust` and whose stores `store` sets up, by serial.
    pub async fn start_on(
        n: u16,
        config: Config,
        adjust: impl Fn(u16, &mut Recorder),
        store: impl Fn(u16) -> S,
    ) -> Cluster<S> {
        let hub = LocalHub::new();
        let ids: Vec<Ulid> = (0..n).map(|_| Ulid::new()).collect();
        let mut cluster = Cluster {
            hub: hub.clone(),
            nodes: Vec::new(),
            recorders: Vec::new(),
            executed: Vec::new(),
        };
        for serial in 1..=n {
            let (mut recorder, executed) = Recorder::new();
            adjust(serial, &mut recorder);
            let recorder = std::sync::Arc::new(recorder);
            let node = Node::with_config(
                ids[usize::from(serial - 1)],
                serial,
                hub.network(serial),
                recorder.clone(),
                store(serial),
                config.clone(),
            )
            .await
            .expect("node starts");
            for peer in (1..=n).filter(|peer| *peer != serial) {
                node.add_member(
                    ids[usize::from(peer - 1)],
                    peer,
                    format!("local:{peer}"),
                    true,
                )
                .await
                .expect("member added");
            }
            cluster.nodes.push(node);
            cluster.recorders.push(recorder);
            cluster.executed.push(executed);
        }
        cluster
    }

    /// Waits until every node executed `count` transactions and recorded them as applied (or
    /// fails after `limit`).
    pub async fn await_executed(&mut self, count: usize, limit: Duration) {
        for (i, node) in self.nodes.iter().enumerate() {
            let mut status = node.watch_status();
            let applied =
                tokio::time::timeout(limit, status.wait_for(|s| s.applied_count >= count as u64))
                    .await
                    .is_ok();
            assert!(
                applied,
                "node {} applied {} of {count} within {limit:?}",
                i + 1,
                node.status().applied_count
            );
        }
        for (i, executed) in self.executed.iter_mut().enumerate() {
            let waited = tokio::time::timeout(limit, executed.wait_for(|done| *done >= count))
                .await
                .is_ok();
            assert!(
                waited,
                "node {} executed {} of {count} within {limit:?}",
                i + 1,
                *executed.borrow()
            );
        }
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}
