//! Which deps need not be carried: [`Core::prune_deps`].
//!
//! Deps serve two readers. Execution waits for them; recovery reads them as evidence of what
//! a transaction witnessed. A dep may be left out when neither needs it:
//!
//! - **Stable** deps (every member applied them, see `gc.rs`): nobody waits for them, and a
//!   stable transaction is never recovered from evidence, because every member holds it
//!   decided (or forgot it after every member applied it).
//! - **Covered** deps: `X` may be left out of the deps of `Y` when
//!   1. `X` is committed and its commit is durable on enough voters that every majority
//!      includes one of them (`TxState::commit_holders` against
//!      `Quorums::every_majority_meets`). A recovery of `X` hears from a majority, so it
//!      always finds the decision and finishes with it (`decide_recovery`, rule 1) before it
//!      reads any evidence. No recovery can be misled by `Y` not naming `X`.
//!   2. Another dep `Z` of `Y`, kept, is committed at `t(Z)` with `t(X) < t(Z) < t0(Y)`, and
//!      `Z` conflicts with `X` (with a one-key `Y`, every dep conflicts with every other;
//!      otherwise `Z` must be a `Keys::All` transaction). Then `t(Z) < t(Y)`, so `Y`
//!      executes after `Z`; and because `Z` conflicts with `X` and `t(X) < t(Z)`, `Z`'s
//!      own committed deps reach `X` (directly, or through a chain of such deps: the
//!      argument in docs/protocol.md, "Why the deps are sufficient", by induction on `t`),
//!      so `Z` executes after `X`. Every node therefore executes `Y` after `X` without `Y`
//!      naming it.
//!
//! With one hot key nearly every dep of a transaction is committed by the time it commits
//! (about nine in ten at 256 clients), and all but the highest of them are covered by it, so
//! deps are bounded by the transactions not yet committed instead of by those not yet
//! applied everywhere.
//!
//! What a node knows here only grows, and leaving out less is always safe: a node that does
//! not know who holds a commit (after a restart, say) keeps the dep.

use synevi_types::{Deps, Keys, Status, Timestamp, T0};

use crate::core::Core;

/// What [`Core::prune_deps`] found out about one dep.
#[derive(Clone, Copy)]
enum Verdict {
    Keep,
    Drop,
    /// Committed at this `t` with enough durable holders: dropped if a kept dep covers it.
    Coverable(Timestamp),
}

impl Core {
    /// Leaves out of `deps`, the deps of `t0` on `keys`, what nobody needs (see the module
    /// docs): stable deps, and committed ones another kept dep covers. Used wherever this
    /// node sends or stores deps it computed or gathered: a replica's PreAccept answer, a
    /// coordinator's proposal and commit.
    pub(crate) fn prune_deps(&self, deps: &mut Deps, t0: T0, keys: &Keys) {
        if deps.is_empty() {
            return;
        }
        let needed = self.quorums.every_majority_meets();
        let single_key = matches!(keys, Keys::Set(set) if set.len() == 1);
        // The highest committed dep below `t0` that conflicts with every other dep.
        let mut anchor: Option<Timestamp> = None;
        let verdicts: Vec<Verdict> = deps
            .iter()
            .map(|dep| {
                let Some(state) = self.txs.get(dep) else {
                    return if self.gc.is_forgotten(*dep) {
                        Verdict::Drop
                    } else {
                        Verdict::Keep
                    };
                };
                // `stable` is a copy of "in `gc.applied_everywhere`" kept where this lookup
                // lands; set only by `mark_applied_everywhere`, so it may lag but never
                // claims more than the set.
                debug_assert!(
                    !state.stable || self.gc.applied_everywhere.contains(dep),
                    "{dep:?} marked stable but not known applied everywhere"
                );
                if state.stable {
                    return Verdict::Drop;
                }
                if !matches!(state.record.status, Status::Committed | Status::Applied) {
                    return Verdict::Keep;
                }
                let t = state.record.t.0;
                let conflicts_with_all = single_key || state.keys().is_some_and(Keys::is_all);
                if conflicts_with_all && t < t0.0 {
                    anchor = anchor.max(Some(t));
                }
                if usize::from(state.commit_holders) >= needed {
                    Verdict::Coverable(t)
                } else {
                    Verdict::Keep
                }
            })
            .collect();
        let Some(anchor) = anchor else {
            // Nothing covers anything: only what is stable goes.
            let mut verdicts = verdicts.iter();
            deps.retain(|_| !matches!(verdicts.next(), Some(Verdict::Drop)));
            return;
        };
        let mut verdicts = verdicts.iter();
        deps.retain(|_| match verdicts.next() {
            Some(Verdict::Drop) => false,
            // The anchor itself has `t == anchor` and stays.
            Some(Verdict::Coverable(t)) => *t >= anchor,
            Some(Verdict::Keep) | None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use synevi_types::{Applied, Bytes, Envelope, Keys, Message, Status, Timestamp, TxBody, T, T0};

    use super::*;
    use crate::core::{run_quiet, three_cores, TxState, LATER, NOW};
    use crate::Config;

    fn t0(time: u64) -> T0 {
        T0(Timestamp::new(time, 0, 2))
    }

    /// Gives `core` a transaction `t0(time)` on `keys`: committed at `t` with `holders`
    /// voters known to hold the commit, or only pre-accepted without `t`.
    fn know(core: &mut Core, time: u64, keys: Keys, t: Option<u64>, holders: u8) {
        let t0 = t0(time);
        let body = TxBody {
            id: u128::from(time),
            keys,
            payload: Bytes::from_static(b"x"),
        };
        let mut record = Core::blank_record(t0, Some(body));
        record.status = Status::PreAccepted;
        if let Some(t) = t {
            record.status = Status::Committed;
            record.t = T(Timestamp::new(t, 0, 2));
        }
        core.txs.insert(
            t0,
            TxState {
                commit_holders: holders,
                ..TxState::new(record)
            },
        );
    }

    fn pruned(core: &Core, deps: &[u64], of: u64, keys: &Keys) -> Vec<u64> {
        let mut deps: Deps = deps.iter().map(|time| t0(*time)).collect();
        core.prune_deps(&mut deps, t0(of), keys);
        deps.iter().map(|dep| dep.0.time).collect()
    }

    #[test]
    fn committed_deps_below_the_highest_committed_one_leave_once_held_by_enough_voters() {
        let mut core = three_cores(Config::default()).remove(0);
        assert_eq!(core.quorums.every_majority_meets(), 2);
        let hot = Keys::single("hot");
        know(&mut core, 5, hot.clone(), Some(5), 1); // below the anchor, one holder
        know(&mut core, 10, hot.clone(), Some(10), 2); // covered
        know(&mut core, 20, hot.clone(), Some(20), 3); // covered
        know(&mut core, 30, hot.clone(), Some(30), 1); // the anchor: highest below 100
        know(&mut core, 40, hot.clone(), None, 0); // not committed
        know(&mut core, 50, hot.clone(), Some(150), 2); // executes after the transaction
        let all = [5, 10, 20, 30, 40, 50];
        assert_eq!(pruned(&core, &all, 100, &hot), [5, 30, 40, 50]);
        // Below 25, the highest committed dep is 20: only 10 is covered.
        assert_eq!(pruned(&core, &[5, 10, 20], 25, &hot), [5, 20]);
        // A dep nobody here knows stays.
        assert_eq!(pruned(&core, &[1, 10, 20], 100, &hot), [1, 20]);
    }

    #[test]
    fn with_several_keys_only_an_all_keys_dep_covers() {
        let mut core = three_cores(Config::default()).remove(0);
        let both = Keys::set(["a", "b"]);
        know(&mut core, 10, Keys::single("a"), Some(10), 2);
        know(&mut core, 20, Keys::single("b"), Some(20), 2);
        // 10 and 20 need not conflict with each other: 20 does not cover 10.
        assert_eq!(pruned(&core, &[10, 20], 100, &both), [10, 20]);
        know(&mut core, 30, Keys::All, Some(30), 1);
        assert_eq!(pruned(&core, &[10, 20, 30], 100, &both), [30]);
        assert_eq!(pruned(&core, &[10, 20, 30], 100, &Keys::All), [30]);
    }

    fn hot(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single("hot"),
            payload: Bytes::from_static(b"x"),
        }
    }

    fn ack(from: u16, t0s: Vec<T0>, committed: Vec<T0>) -> Envelope {
        Envelope {
            from,
            to: 1,
            message: Message::Applied(Applied { t0s, committed }),
        }
    }

    #[test]
    fn home_nodes_count_each_voter_holding_a_commit_once() {
        let mut cores = three_cores(Config::default());
        let x = cores[0].submit(NOW, hot(1));
        // Decided everywhere; nodes 2 and 3 hold their acknowledgements back (nothing else
        // goes to node 1 before the hold is over).
        run_quiet(&mut cores, NOW);
        let holders = |cores: &[Core], node: usize| cores[node].txs[&x].commit_holders;
        assert_eq!(holders(&cores, 0), 1, "the home alone");
        assert_eq!(holders(&cores, 1), 2, "node 2 and the sender of the Commit");
        let home = &mut cores[0];
        home.receive(LATER, ack(2, Vec::new(), vec![x]));
        assert_eq!(home.txs[&x].commit_holders, 2);
        // Again, and then applied: still node 2.
        home.receive(LATER, ack(2, Vec::new(), vec![x]));
        home.receive(LATER, ack(2, vec![x], Vec::new()));
        assert_eq!(home.txs[&x].commit_holders, 2);
        home.receive(LATER, ack(3, vec![x], Vec::new()));
        assert_eq!(home.txs[&x].commit_holders, 3);
    }

    #[test]
    fn members_acknowledge_commits_that_have_deps_to_their_home() {
        let mut cores = three_cores(Config::default());
        let x = cores[0].submit(NOW, hot(1));
        let y = cores[0].submit(NOW, hot(2));
        run_quiet(&mut cores, NOW);
        assert_eq!(cores[1].txs[&y].record.deps.as_slice(), &[x]);
        cores[1].tick(LATER);
        let acks: Vec<Applied> = cores[1]
            .take_ready()
            .messages
            .into_iter()
            .filter_map(|envelope| match envelope.message {
                Message::Applied(applied) if envelope.to == 1 => Some(applied),
                _ => None,
            })
            .collect();
        // X depended on nothing: its commit goes unacknowledged until it is applied.
        assert_eq!(
            acks,
            [Applied {
                t0s: vec![x, y],
                committed: vec![y],
            }]
        );
    }
}
