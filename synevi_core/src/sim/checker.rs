//! The invariants of DESIGN §6, checked on every simulated run: online as effects appear,
//! and over the final state when the run has settled.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use synevi_types::{Event, Key, Keys, Serial, Status, TxRecord, T, T0};

/// Which invariant a run violated, what exactly, and which transactions are involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (`agreement`, `order`, `strict-serializability`, ...).
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// The transactions involved (their messages are printed from the trace).
    pub t0s: Vec<T0>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Committed(T),
    Invalidated,
}

/// Per node: the highest `t` executed per key, to check that execution follows `t`.
#[derive(Default, Debug)]
struct ExecutionOrder {
    last_by_key: FxHashMap<Key, (T, T0)>,
    /// Last transaction with `Keys::All`: everything after it must have a higher `t`.
    last_all: Option<(T, T0)>,
    /// Highest `t` executed: a `Keys::All` transaction must be above it.
    max_any: Option<(T, T0)>,
}

/// Checks that need to see effects as they happen.
#[derive(Default, Debug)]
pub(crate) struct OnlineChecker {
    decided: FxHashMap<T0, Decision>,
    order: BTreeMap<Serial, ExecutionOrder>,
}

impl OnlineChecker {
    /// Agreement (DESIGN §6.1): every record that says decided says the same thing.
    pub fn observe_record(&mut self, node: Serial, record: &TxRecord) -> Result<(), Violation> {
        let decision = match record.status {
            Status::Committed | Status::Applied => Decision::Committed(record.t),
            Status::Invalidated => Decision::Invalidated,
            _ => return Ok(()),
        };
        match self.decided.get(&record.t0) {
            None => {
                self.decided.insert(record.t0, decision);
                Ok(())
            }
            Some(earlier) if *earlier == decision => Ok(()),
            Some(earlier) => Err(Violation {
                invariant: "agreement",
                detail: format!(
                    "{:?} decided as {earlier:?} elsewhere but as {decision:?} on node {node}",
                    record.t0
                ),
                t0s: vec![record.t0],
            }),
        }
    }

    /// Order (DESIGN §6.2): on every node, conflicting transactions execute in `t` order.
    pub fn observe_execution(
        &mut self,
        node: Serial,
        t0: T0,
        t: T,
        keys: &Keys,
    ) -> Result<(), Violation> {
        let order = self.order.entry(node).or_default();
        let violation = |before: (T, T0), why: &str| Violation {
            invariant: "order",
            detail: format!(
                "node {node} executed {t0:?} at {t:?} after conflicting {:?} at {:?} ({why})",
                before.1, before.0
            ),
            t0s: vec![t0, before.1],
        };
        if let Some(last_all) = order.last_all {
            if last_all.0 >= t {
                return Err(violation(
                    last_all,
                    "a Keys::All transaction with a higher t ran first",
                ));
            }
        }
        match keys {
            Keys::All => {
                if let Some(max_any) = order.max_any {
                    if max_any.0 >= t {
                        return Err(violation(
                            max_any,
                            "this Keys::All transaction must follow everything below its t",
                        ));
                    }
                }
                order.last_all = Some((t, t0));
            }
            Keys::Set(keys) => {
                for key in keys {
                    if let Some(last) = order.last_by_key.get(key) {
                        if last.0 >= t {
                            return Err(violation(*last, "same key, higher t ran first"));
                        }
                    }
                }
                for key in keys {
                    order.last_by_key.insert(key.clone(), (t, t0));
                }
            }
        }
        if order.max_any.is_none_or(|max| max.0 < t) {
            order.max_any = Some((t, t0));
        }
        Ok(())
    }

    /// A node restarted: its execution history is its event log again.
    pub fn reset_node(&mut self, node: Serial) {
        self.order.remove(&node);
    }

    /// Whether a transaction was invalidated.
    pub fn invalidated(&self, t0: T0) -> bool {
        self.decided.get(&t0) == Some(&Decision::Invalidated)
    }

    /// The decided `t` of a committed transaction.
    pub fn committed_t(&self, t0: T0) -> Option<T> {
        match self.decided.get(&t0) {
            Some(Decision::Committed(t)) => Some(*t),
            _ => None,
        }
    }
}

/// A client's view of one transaction, for the final checks.
#[derive(Clone, Debug)]
pub(crate) struct ClientRecord {
    pub t0: T0,
    pub keys: Keys,
    pub submitted_ms: u64,
    /// When a successful reply arrived, and the hash of the result it carried.
    pub acknowledged: Option<(u64, [u8; 32])>,
    /// Its coordinator's incarnation when it was submitted (bumped by every crash).
    pub incarnation: u32,
}

/// What one node executed: `t` and result hash per transaction.
type ExecutedSet = BTreeMap<T0, (T, [u8; 32])>;

/// Checks over the settled end state: integrity, equal results, durability, liveness,
/// strict serializability.
pub(crate) fn check_final(
    logs: &BTreeMap<Serial, Vec<Event>>,
    clients: &[ClientRecord],
    online: &OnlineChecker,
) -> Result<(), Violation> {
    let submitted: BTreeSet<T0> = clients.iter().map(|client| client.t0).collect();
    let mut reference: Option<(Serial, ExecutedSet)> = None;
    for (node, log) in logs {
        let mut seen: ExecutedSet = BTreeMap::new();
        for event in log {
            // Integrity (§6.4): only submitted transactions execute, each at most once.
            if !submitted.contains(&event.t0) {
                return Err(Violation {
                    invariant: "integrity",
                    detail: format!(
                        "node {node} executed {:?}, which no client submitted",
                        event.t0
                    ),
                    t0s: vec![event.t0],
                });
            }
            if seen
                .insert(event.t0, (event.t, event.result_hash))
                .is_some()
            {
                return Err(Violation {
                    invariant: "exactly-once",
                    detail: format!(
                        "node {node} executed {:?} twice (seq {})",
                        event.t0, event.seq
                    ),
                    t0s: vec![event.t0],
                });
            }
            if online.committed_t(event.t0) != Some(event.t) {
                return Err(Violation {
                    invariant: "agreement",
                    detail: format!(
                        "node {node} executed {:?} at {:?}, decided at {:?}",
                        event.t0,
                        event.t,
                        online.committed_t(event.t0)
                    ),
                    t0s: vec![event.t0],
                });
            }
        }
        match &reference {
            None => reference = Some((*node, seen)),
            Some((first, expected)) => {
                // Liveness (§6.6) and equal results (§6.4): after healing, every node
                // executed the same transactions with the same results.
                if let Some(t0) = expected.keys().find(|t0| !seen.contains_key(t0)) {
                    return Err(Violation {
                        invariant: "liveness",
                        detail: format!("node {first} executed {t0:?}, node {node} never did"),
                        t0s: vec![*t0],
                    });
                }
                if let Some(t0) = seen.keys().find(|t0| !expected.contains_key(t0)) {
                    return Err(Violation {
                        invariant: "liveness",
                        detail: format!("node {node} executed {t0:?}, node {first} never did"),
                        t0s: vec![*t0],
                    });
                }
                for (t0, (_, hash)) in &seen {
                    if expected.get(t0).map(|(_, h)| h) != Some(hash) {
                        return Err(Violation {
                            invariant: "equal-results",
                            detail: format!(
                                "{t0:?} gave different results on nodes {first} and {node}"
                            ),
                            t0s: vec![*t0],
                        });
                    }
                }
            }
        }
    }
    let executed = reference.map(|(_, seen)| seen).unwrap_or_default();
    // Durability (§6.5): what a client was told is committed is executed everywhere, with the
    // result the client got.
    for client in clients {
        if let Some((_, hash)) = client.acknowledged {
            match executed.get(&client.t0) {
                None => {
                    return Err(Violation {
                        invariant: "durability",
                        detail: format!(
                            "{:?} was acknowledged but is not in the event logs",
                            client.t0
                        ),
                        t0s: vec![client.t0],
                    })
                }
                Some((_, logged)) if *logged != hash => {
                    return Err(Violation {
                        invariant: "equal-results",
                        detail: format!(
                            "the client of {:?} got another result than the logs hold",
                            client.t0
                        ),
                        t0s: vec![client.t0],
                    })
                }
                Some(_) => {}
            }
        }
    }
    check_strict_serializability(clients, online)
}

/// Strict serializability (§6.3): if X was acknowledged before Y was submitted and they
/// conflict, then `t(X) < t(Y)`.
fn check_strict_serializability(
    clients: &[ClientRecord],
    online: &OnlineChecker,
) -> Result<(), Violation> {
    // Acknowledged transactions by reply time; for each, its t.
    let mut finished: Vec<(u64, T, &ClientRecord)> = clients
        .iter()
        .filter_map(|client| {
            let (replied_ms, _) = client.acknowledged?;
            Some((replied_ms, online.committed_t(client.t0)?, client))
        })
        .collect();
    finished.sort_by_key(|(replied_ms, t, _)| (*replied_ms, *t));
    for later in clients {
        let Some(t_later) = online.committed_t(later.t0) else {
            continue;
        };
        for (replied_ms, t_earlier, earlier) in &finished {
            if *replied_ms >= later.submitted_ms {
                break;
            }
            if earlier.keys.conflicts_with(&later.keys) && *t_earlier >= t_later {
                return Err(Violation {
                    invariant: "strict-serializability",
                    detail: format!(
                        "{:?} was acknowledged at {replied_ms} ms, before conflicting {:?} was submitted at {} ms, yet {:?} >= {:?}",
                        earlier.t0, later.t0, later.submitted_ms, t_earlier, t_later
                    ),
                    t0s: vec![earlier.t0, later.t0],
                });
            }
        }
    }
    Ok(())
}
