//! [`KvExecutor`]: applies committed [`KvTx`]s to an in-memory map.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use synevi::{Executor, SyneviResult};

use crate::transaction::{KvErr, KvOk, KvTx};

/// The key-value state machine: a map from keys to values, changed only by committed
/// transactions, in the order synevi agreed on.
///
/// The state lives in memory only. It survives a restart because the node keeps every
/// executed transaction in its event log and, by default
/// ([`synevi::Config::replay_events_on_start`]), executes the whole log again when it
/// starts, before it answers anything.
///
/// Deterministic, as [`Executor`] requires: the result of a transaction depends only on the
/// transactions executed before it on the same key.
#[derive(Debug, Default)]
pub struct KvExecutor {
    state: Mutex<KvState>,
}

#[derive(Debug, Default)]
struct KvState {
    entries: HashMap<String, String>,
    /// Bytes of keys and values held (for the metrics).
    data_bytes: usize,
}

impl KvExecutor {
    /// An empty store.
    pub fn new() -> Self {
        KvExecutor::default()
    }

    /// How many keys the store holds on this node.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no key on this node.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Bytes of keys and values the store holds on this node.
    pub fn data_bytes(&self) -> usize {
        self.lock().data_bytes
    }

    /// This node's current value of `key`, read locally, without consensus.
    ///
    /// Not linearizable: the node may not have executed the latest writes yet. Clients read
    /// through [`KvTx::Get`]; this is for tests and diagnostics.
    pub fn local_get(&self, key: &str) -> Option<String> {
        self.lock().entries.get(key).cloned()
    }

    /// Every operation on the state is a plain map operation that cannot panic halfway, so
    /// the state is consistent even if another thread panicked while holding the lock: a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, KvState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one transaction and returns its result (what [`Executor::execute`] does,
    /// synchronously).
    pub fn apply(&self, transaction: KvTx) -> Result<KvOk, KvErr> {
        let mut state = self.lock();
        match transaction {
            KvTx::Get { key } => Ok(KvOk::Value(state.entries.get(&key).cloned())),
            KvTx::Put { key, value } => {
                let previous = set(&mut state, key, value);
                Ok(KvOk::Put { previous })
            }
            KvTx::Cas {
                key,
                expected,
                value,
            } => {
                let current = state.entries.get(&key);
                if current != expected.as_ref() {
                    return Err(KvErr::CasMismatch {
                        current: current.cloned(),
                    });
                }
                set(&mut state, key, value);
                Ok(KvOk::Swapped)
            }
            KvTx::Delete { key } => {
                let previous = state.entries.remove(&key);
                if let Some(previous) = &previous {
                    state.data_bytes -= key.len() + previous.len();
                }
                Ok(KvOk::Deleted { previous })
            }
            KvTx::Ping => Ok(KvOk::Pong),
        }
    }
}

/// Sets `key` to `value`, keeping the byte count, and returns the previous value.
fn set(state: &mut KvState, key: String, value: String) -> Option<String> {
    let key_bytes = key.len();
    let value_bytes = value.len();
    let previous = state.entries.insert(key, value);
    match &previous {
        Some(previous) => {
            state.data_bytes = state.data_bytes - previous.len() + value_bytes;
        }
        None => state.data_bytes += key_bytes + value_bytes,
    }
    previous
}

#[synevi::async_trait]
impl Executor for KvExecutor {
    type Tx = KvTx;

    async fn execute(&self, transaction: KvTx) -> SyneviResult<Self> {
        Ok(self.apply(transaction))
    }

    /// A map in memory behind a lock held only while it changes.
    fn executes_inline(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvTx {
        KvTx::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn operations_follow_the_map_semantics() {
        let kv = KvExecutor::new();
        let get = || KvTx::Get { key: "k".into() };
        assert_eq!(kv.apply(get()), Ok(KvOk::Value(None)));
        assert_eq!(kv.apply(put("k", "a")), Ok(KvOk::Put { previous: None }));
        assert_eq!(
            kv.apply(put("k", "b")),
            Ok(KvOk::Put {
                previous: Some("a".into())
            })
        );
        assert_eq!(kv.apply(get()), Ok(KvOk::Value(Some("b".into()))));
        let cas = |expected: Option<&str>, value: &str| KvTx::Cas {
            key: "k".into(),
            expected: expected.map(Into::into),
            value: value.into(),
        };
        assert_eq!(
            kv.apply(cas(None, "c")),
            Err(KvErr::CasMismatch {
                current: Some("b".into())
            })
        );
        assert_eq!(kv.apply(cas(Some("b"), "c")), Ok(KvOk::Swapped));
        assert_eq!(kv.local_get("k").as_deref(), Some("c"));
        assert_eq!(
            kv.apply(KvTx::Delete { key: "k".into() }),
            Ok(KvOk::Deleted {
                previous: Some("c".into())
            })
        );
        assert_eq!(
            kv.apply(KvTx::Delete { key: "k".into() }),
            Ok(KvOk::Deleted { previous: None })
        );
        assert_eq!(kv.apply(cas(None, "d")), Ok(KvOk::Swapped));
        assert_eq!(kv.apply(KvTx::Ping), Ok(KvOk::Pong));
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn data_bytes_follow_inserts_replacements_and_deletes() {
        let kv = KvExecutor::new();
        assert_eq!(kv.data_bytes(), 0);
        let _ = kv.apply(put("ab", "cde"));
        assert_eq!(kv.data_bytes(), 5);
        let _ = kv.apply(put("ab", "x"));
        assert_eq!(kv.data_bytes(), 3);
        let _ = kv.apply(put("z", ""));
        assert_eq!(kv.data_bytes(), 4);
        let _ = kv.apply(KvTx::Delete { key: "ab".into() });
        assert_eq!(kv.data_bytes(), 1);
        let _ = kv.apply(KvTx::Delete { key: "z".into() });
        assert_eq!(kv.data_bytes(), 0);
        assert!(kv.is_empty());
    }
}
