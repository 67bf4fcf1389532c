//! `Node::shutdown` promises that "writes already handed to the store finish": everything the
//! node reported as applied (its status) before the shutdown is in its event log after it.

use std::time::Duration;

use synevi::network::LocalHub;
use synevi::persistence::MemStore;
use synevi::types::{Event, Serial, Store, StoredState, WriteBatch};
use synevi::{Executor, Node, SyneviError, SyneviResult, Ulid};
use synevi_tests::ledger::{Ledger, LedgerTx};

/// How long each store commit takes: a slow disk, so that rounds queue up behind the commit
/// in progress, as they do on a loaded machine.
const COMMIT_DELAY: Duration = Duration::from_millis(5);
/// How long each execution takes: the executor is still busy when the shutdown comes.
const EXECUTION_DELAY: Duration = Duration::from_millis(1);
/// Clients submitting one transaction after another: new commits, and so new executions,
/// keep coming in every round.
const CLIENTS: u64 = 8;
const TRANSACTIONS_PER_CLIENT: u64 = 100;
/// How many must have been applied before the shutdown: the pipeline is full by then.
const APPLIED_BEFORE_SHUTDOWN: u64 = 50;
const WAIT_MAX: Duration = Duration::from_secs(30);

/// A store whose commits are slow (fault injection, not synchronisation).
struct SlowStore {
    inner: MemStore,
}

impl Store for SlowStore {
    fn serial(&self) -> Serial {
        self.inner.serial()
    }

    fn load(&self) -> Result<StoredState, SyneviError> {
        self.inner.load()
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), SyneviError> {
        std::thread::sleep(COMMIT_DELAY);
        self.inner.commit(batch)
    }

    fn events_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Event>, SyneviError> {
        self.inner.events_after(after_seq, limit)
    }
}

/// A [`Ledger`] that takes its time (fault injection, not synchronisation).
struct SlowLedger {
    ledger: Ledger,
}

#[synevi::async_trait]
impl Executor for SlowLedger {
    type Tx = LedgerTx;

    async fn execute(&self, tx: LedgerTx) -> SyneviResult<Self> {
        tokio::time::sleep(EXECUTION_DELAY).await;
        self.ledger.execute(tx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_every_write_handed_to_the_store() {
    // One node is a whole cluster: it commits alone, so its pipeline runs at full speed.
    let store = SlowStore {
        inner: MemStore::new(1).expect("a memory store"),
    };
    let hub = LocalHub::new();
    let ledger = SlowLedger {
        ledger: Ledger::default(),
    };
    let node = Node::new(Ulid::from_parts(1, 1), 1, hub.network(1), ledger, store)
        .await
        .expect("the node starts");
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let node = node.clone();
        clients.spawn(async move {
            for index in 0..TRANSACTIONS_PER_CLIENT {
                let id = client * TRANSACTIONS_PER_CLIENT + index;
                let tx = LedgerTx {
                    id,
                    keys: vec![format!("key-{}", id % 3)],
                };
                // Outcomes are not checked: the shutdown cuts the last ones off.
                if node.transaction(u128::from(id), tx).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut status = node.watch_status();
    let busy = status.wait_for(|status| status.applied_count >= APPLIED_BEFORE_SHUTDOWN);
    tokio::time::timeout(WAIT_MAX, busy)
        .await
        .expect("the node applies transactions")
        .expect("the node runs");
    // Every execution counted here had its event handed to the persister already.
    let applied = node.status().applied_count;
    node.shutdown().await;
    let logged = node
        .store()
        .events_after(0, usize::MAX)
        .expect("the log is readable")
        .len() as u64;
    assert!(
        logged >= applied,
        "the node reported {applied} transactions applied before its shutdown, but only \
         {logged} events are in its log after it: the shutdown dropped writes it had taken"
    );
    while clients.join_next().await.is_some() {}
}
