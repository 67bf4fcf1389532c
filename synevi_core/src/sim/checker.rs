//! The invariants of DESIGN §6, checked on every simulated run: online as effects appear,
//! and over the final state when the run has settled.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use synevi_types::{Event, Key, Keys, Serial, Status, TxRecord, T, T0};

use crate::quorum::Quorums;

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

/// Whether a recovery can only ever decide what a coordinator decided for a transaction, from
/// what the voters' stores hold of it alone: the rule both durability checkers apply (the
/// simulator's at every crash, the crash test's after killing processes) to a transaction
/// whose client was answered while its coordinator's own record of the decision may be lost.
/// `decided` says some store holds it committed, applied, or forgotten (which a node does
/// only once every member applied it); `votes` holds, per store, its serial, the record's
/// status and whether the record's `t` is `t0`. Any one of these suffices:
/// - it is decided somewhere: recovery step 1 (`decide_recovery`) finishes with that;
/// - a majority of voters accepted it: every recovery majority holds an accept, and step 2
///   re-proposes the highest-ballot one (a slow-path decision is one of those);
/// - a fast quorum of the electorate pre-accepted it at `t0`: every recovery majority holds
///   more than half of its electorate members' answers at `t0` (`quorum.rs`), the fast-path
///   evidence of step 4;
/// - every voter holds a vote at `t0`: pre-accepted there, or accepted there by a recovery
///   that honoured the fast path (after a restart, say). A recovery majority then holds an
///   accept, and every accept is at `t0`, so step 2 re-proposes `t0`; or it holds only
///   pre-accepts at `t0`, and with every electorate member answering `t0` step 4 finds the
///   fast path possible. Found missing from the crash test's rule in a kill run
///   (seed 1796300228584865632), where a recovery had accepted at `t0` on one node of three.
///
/// Only voters' records count; learners vote in nothing.
pub fn recoverable_from_stores(
    quorums: &Quorums,
    decided: bool,
    votes: &[(Serial, Status, bool)],
) -> bool {
    let voters: Vec<&(Serial, Status, bool)> = votes
        .iter()
        .filter(|(serial, _, _)| quorums.is_voter(*serial))
        .collect();
    let accepted = voters
        .iter()
        .filter(|(_, status, _)| *status == Status::Accepted)
        .count();
    let fast_votes = voters
        .iter()
        .filter(|(serial, status, at_t0)| {
            *at_t0 && *status == Status::PreAccepted && quorums.in_electorate(*serial)
        })
        .count();
    let mut at_t0: BTreeSet<Serial> = BTreeSet::new();
    for (serial, status, on_t0) in &voters {
        if *on_t0 && matches!(status, Status::PreAccepted | Status::Accepted) {
            at_t0.insert(*serial);
        }
    }
    decided
        || accepted >= quorums.slow_quorum()
        || fast_votes >= quorums.fast_quorum()
        || quorums.voters().all(|voter| at_t0.contains(&voter))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::cluster;

    /// `(serial, status, at t0)` for serials 1, 2, ... in order.
    fn votes(of: &[(Status, bool)]) -> Vec<(Serial, Status, bool)> {
        (1..)
            .zip(of)
            .map(|(serial, (status, at_t0))| (serial, *status, *at_t0))
            .collect()
    }

    /// The rule for an undecided transaction whose stores hold `of` (see `votes`).
    fn undecided_recoverable(quorums: &Quorums, of: &[(Status, bool)]) -> bool {
        recoverable_from_stores(quorums, false, &votes(of))
    }

    const PRE: (Status, bool) = (Status::PreAccepted, true);
    const PRE_LATER: (Status, bool) = (Status::PreAccepted, false);
    const ACC: (Status, bool) = (Status::Accepted, true);
    const ACC_LATER: (Status, bool) = (Status::Accepted, false);

    #[test]
    fn a_decision_anywhere_is_recoverable() {
        assert!(recoverable_from_stores(&cluster(3), true, &[]));
        assert!(!recoverable_from_stores(&cluster(3), false, &[]));
    }

    #[test]
    fn a_majority_of_accepts_is_recoverable_and_less_is_not() {
        let five = cluster(5);
        assert!(undecided_recoverable(&five, &[ACC, ACC_LATER, ACC_LATER]));
        assert!(!undecided_recoverable(
            &five,
            &[ACC_LATER, ACC_LATER, PRE_LATER]
        ));
    }

    #[test]
    fn a_fast_quorum_at_t0_is_recoverable_and_a_majority_is_not() {
        let five = cluster(5);
        assert!(undecided_recoverable(&five, &[PRE, PRE, PRE, PRE]));
        assert!(!undecided_recoverable(&five, &[PRE, PRE, PRE, PRE_LATER]));
        assert!(!undecided_recoverable(&cluster(3), &[PRE, PRE]));
    }

    #[test]
    fn every_voter_at_t0_is_recoverable_when_some_accepted_there() {
        assert!(undecided_recoverable(&cluster(3), &[PRE, ACC, PRE]));
        assert!(undecided_recoverable(
            &cluster(5),
            &[PRE, ACC, PRE, ACC, PRE]
        ));
        // A fast quorum of five, some accepted at `t0`, without the fifth: neither a fast
        // quorum of pre-accepts nor every voter.
        assert!(!undecided_recoverable(&cluster(5), &[PRE, ACC, PRE, PRE]));
        assert!(!undecided_recoverable(&cluster(3), &[PRE, ACC, PRE_LATER]));
    }

    #[test]
    fn only_voters_and_the_electorate_count() {
        let mut quorums = cluster(3);
        quorums.add(4, false).expect("learner");
        quorums.add(5, false).expect("learner");
        // Two learners' records make no majority of accepts.
        let learners = [(4, Status::Accepted, true), (5, Status::Accepted, true)];
        let mut with_learners = votes(&[ACC]);
        with_learners.extend(learners);
        assert!(!recoverable_from_stores(&quorums, false, &with_learners));

        let mut five = cluster(5);
        five.set_electorate(Some(&[1, 2, 3]))
            .expect("n - f members");
        assert_eq!(five.fast_quorum(), 3);
        assert!(undecided_recoverable(&five, &[PRE, PRE, PRE]));
        // Pre-accepts at `t0` outside the electorate are no fast-path evidence.
        let outside = [
            (1, Status::PreAccepted, true),
            (4, Status::PreAccepted, true),
            (5, Status::PreAccepted, true),
        ];
        assert!(!recoverable_from_stores(&five, false, &outside));
    }
}
