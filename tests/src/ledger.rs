//! A deterministic executor for durability tests: an append-only ledger per key.
//!
//! A [`LedgerTx`] appends its id to the ledger of every key it touches; its result is, per
//! key, the position it got there (how many entries that key's ledger held before it). The
//! result therefore depends on the order conflicting transactions executed in: equal results
//! on every node mean equal per-key orders, and a result a client was given can be checked
//! against any node's event log by replaying that log through a fresh [`LedgerState`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use synevi::{Executor, Keys, SyneviError, SyneviResult, Transaction};
use tokio::sync::watch;

/// Per key touched, the position the transaction got in that key's ledger.
pub type Positions = Vec<(String, u64)>;

/// "Append `id` to the ledger of each of `keys`."
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerTx {
    /// Unique over the whole test, across restarts: duplicates in a log are detected by it.
    pub id: u64,
    /// Distinct keys; transactions conflict when they share one.
    pub keys: Vec<String>,
}

impl Transaction for LedgerTx {
    type TxOk = Positions;
    type TxErr = String;

    fn as_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a LedgerTx always serialises")
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<Self, SyneviError> {
        postcard::from_bytes(&bytes).map_err(|e| SyneviError::Decode {
            what: "LedgerTx",
            reason: e.to_string(),
        })
    }

    fn keys(&self) -> Keys {
        Keys::set(self.keys.iter().map(String::as_str))
    }
}

/// The ledgers themselves, without synchronisation: what the executor holds, and what a
/// checker rebuilds from an event log to recompute the results clients were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Per key, the ids appended to it, in execution order.
    pub ledgers: BTreeMap<String, Vec<u64>>,
    /// Every id executed, to tell "executed" from "not yet" without scanning the ledgers.
    pub executed: BTreeSet<u64>,
    /// How many executions this state saw, duplicates included (a duplicate makes this
    /// exceed `executed.len()`).
    pub executions: u64,
}

impl LedgerState {
    /// Executes `tx`: appends it to each key's ledger and returns its positions.
    pub fn apply(&mut self, tx: &LedgerTx) -> Positions {
        self.executions += 1;
        self.executed.insert(tx.id);
        tx.keys
            .iter()
            .map(|key| {
                let ledger = self.ledgers.entry(key.clone()).or_default();
                let position = ledger.len() as u64;
                ledger.push(tx.id);
                (key.clone(), position)
            })
            .collect()
    }
}

/// The [`Executor`]: a [`LedgerState`] behind a lock, with a watch of how many executions
/// it has seen so that tests can await progress instead of polling.
pub struct Ledger {
    state: Mutex<LedgerState>,
    executions: watch::Sender<u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            state: Mutex::new(LedgerState::default()),
            executions: watch::channel(0).0,
        }
    }
}

impl Ledger {
    /// A copy of the current state.
    pub fn snapshot(&self) -> LedgerState {
        self.state.lock().expect("ledger lock").clone()
    }

    /// How many executions the ledger has seen (replayed ones included).
    pub fn executions(&self) -> u64 {
        *self.executions.borrow()
    }

    /// Whether `id` has executed here.
    pub fn has_executed(&self, id: u64) -> bool {
        self.state
            .lock()
            .expect("ledger lock")
            .executed
            .contains(&id)
    }

    /// A receiver that changes with every execution.
    pub fn watch_executions(&self) -> watch::Receiver<u64> {
        self.executions.subscribe()
    }
}

#[synevi::async_trait]
impl Executor for Ledger {
    type Tx = LedgerTx;

    async fn execute(&self, tx: LedgerTx) -> SyneviResult<Self> {
        let (positions, executions) = {
            let mut state = self.state.lock().expect("ledger lock");
            let positions = state.apply(&tx);
            (positions, state.executions)
        };
        self.executions.send_replace(executions);
        Ok(Ok(positions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_earlier_entries_per_key() {
        let mut state = LedgerState::default();
        let a = LedgerTx {
            id: 1,
            keys: vec!["x".into()],
        };
        let b = LedgerTx {
            id: 2,
            keys: vec!["x".into(), "y".into()],
        };
        assert_eq!(state.apply(&a), vec![("x".to_string(), 0)]);
        assert_eq!(
            state.apply(&b),
            vec![("x".to_string(), 1), ("y".to_string(), 0)]
        );
        assert_eq!(state.ledgers["x"], vec![1, 2]);
        assert_eq!(state.executions, 2);
    }

    #[test]
    fn encoding_round_trips() {
        let tx = LedgerTx {
            id: 7,
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(LedgerTx::from_bytes(tx.as_bytes()).expect("decodes"), tx);
        assert!(LedgerTx::from_bytes(vec![0xff; 3]).is_err());
    }
}
