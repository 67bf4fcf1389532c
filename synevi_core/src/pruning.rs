//! Which deps need not be carried: [`ConflictIndex::deps`] leaves them out of the deps a
//! replica computes, [`Core::prune_deps`] out of those a coordinator gathered.
//!
//! Deps serve two readers. Execution waits for them; recovery reads them as evidence of what
//! a transaction witnessed. A dep may be left out when neither needs it:
//!
//! - **Stable** deps (every member applied them, see `gc.rs`): nobody waits for them, and a
//!   stable transaction is never recovered from evidence, because every member holds it
//!   decided (or forgot it after every member applied it).
//! - **Covered** deps: `X` may be left out of the deps of `Y` when
//!   1. `X` is *settled*: committed, and its commit is durable on enough voters that every
//!      majority includes one of them (`TxState::commit_holders` against
//!      `Quorums::every_majority_meets`). A recovery of `X` hears from a majority, so it
//!      always finds the decision and finishes with it (`decide_recovery`, rule 1) before it
//!      reads any evidence. No recovery can be misled by `Y` not naming `X`.
//!   2. Another dep `Z` of `Y`, kept, is committed at `t(Z)` with `t(X) < t(Z) < t0(Y)`, and
//!      `Z` conflicts with `X`. Then `t(Z) < t(Y)`, so `Y` executes after `Z`; and because
//!      `Z` conflicts with `X` and `t(X) < t(Z)`, `Z`'s own committed deps reach `X`
//!      (directly, or through a chain of such deps: the argument in docs/protocol.md, "Why
//!      the deps are sufficient", by induction on `t`), so `Z` executes after `X`. Every
//!      node therefore executes `Y` after `X` without `Y` naming it. If `Z` is left out in
//!      turn, the dep that covers it covers `X` too.
//!
//! Who holds a commit: a node that learns a commit from another voter's `Commit` counts
//! both (the sender made it durable before sending, this node does before anything it sends
//! next leaves); a home node counts the voters that acknowledge it (`Applied`, whose
//! `committed` list members send as soon as they commit a transaction that has deps). With
//! more than three voters, where a `Commit` shows too few, members send that list to every
//! other member, and each counts the voters it hears from once it holds the commit itself
//! (`TxState::holder_bits`, so that none counts twice); the home's announcement
//! (`Forget::settled`) still comes, for acknowledgements that came before the commit.
//!
//! The replica's rule (`ConflictIndex::deps`, no state lookups): `Z` is the settled
//! transaction with the highest `t` below `t0(Y)` in the same key's entry as `X`, or a
//! settled `Keys::All` transaction. The coordinator's rule (`prune_deps`, one lookup per
//! dep, as it must also drop what became stable): `Z` is the committed dep with the highest
//! `t` below `t0(Y)` among those that conflict with every dep (any dep of a one-key `Y`; a
//! `Keys::All` dep otherwise).
//!
//! With one hot key nearly every dep of a transaction is committed by the time it commits
//! (about nine in ten at 256 clients), and all but the highest of them are covered by it
//! once settled, so deps are bounded by the transactions not yet settled instead of by those
//! not yet applied everywhere.
//!
//! What a node knows here only grows, and leaving out less is always safe: a node that does
//! not know who holds a commit (after a restart, say) keeps the dep; when a voter joins,
//! the index forgets what was settled, as more holders may now be needed.
//!
//! [`ConflictIndex::deps`]: crate::conflicts::ConflictIndex::deps

use synevi_types::{Deps, Keys, Timestamp, T0};

use crate::core::Core;

impl Core {
    /// Marks `t0` settled in the conflict index once it is committed, not stable, and held by
    /// enough voters that every majority meets one of them.
    pub(crate) fn settle_if_held(&mut self, t0: T0) {
        let Some(state) = self.txs.get(&t0) else {
            return;
        };
        let needed = self.quorums.every_majority_meets();
        let Some(t) = state.committed_at() else {
            return;
        };
        if usize::from(state.commit_holders) < needed || state.stable {
            return;
        }
        if let Some(keys) = state.keys() {
            self.conflicts.settle(t0, keys, t);
        }
        // A home node's own transaction: with more than three voters, the others cannot tell
        // from the commit alone (it shows them two holders), so tell them, once.
        if t0.0.serial == self.serial && needed > 2 && usize::from(state.commit_holders) == needed {
            self.announce_settled(t0, needed as u32);
        }
    }

    /// Leaves out of `deps`, the deps of `t0` on `keys` gathered from several replicas (a
    /// coordinator's proposal or commit), what nobody needs (see the module docs): the stable
    /// ones, and the settled ones below the highest committed dep under `t0` that conflicts
    /// with every dep (any dep of a one-key transaction; a `Keys::All` dep). One state
    /// lookup per dep. Deps this node computes itself (`ConflictIndex::deps`) leave both out
    /// already, from the index alone.
    pub(crate) fn prune_deps(&self, deps: &mut Deps, t0: T0, keys: &Keys) {
        if deps.is_empty() {
            return;
        }
        let needed = self.quorums.every_majority_meets();
        let single_key = matches!(keys, Keys::Set(set) if set.len() == 1);
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
                let Some(t) = state.committed_at() else {
                    return Verdict::Keep;
                };
                let conflicts_with_all = single_key || state.keys().is_some_and(Keys::is_all);
                if conflicts_with_all && t < t0.0 {
                    anchor = anchor.max(Some(t));
                }
                if usize::from(state.commit_holders) >= needed {
                    Verdict::Settled(t)
                } else {
                    Verdict::Keep
                }
            })
            .collect();
        let mut verdicts = verdicts.iter();
        deps.retain(|_| match verdicts.next() {
            Some(Verdict::Drop) => false,
            // The anchor itself has `t == anchor` and stays.
            Some(Verdict::Settled(t)) => anchor.is_none_or(|anchor| *t >= anchor),
            Some(Verdict::Keep) | None => true,
        });
    }
}

/// What [`Core::prune_deps`] found out about one dep.
#[derive(Clone, Copy)]
enum Verdict {
    Keep,
    Drop,
    /// Committed at this `t`, and every majority holds the commit: dropped if covered.
    Settled(Timestamp),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use synevi_types::{Applied, Bytes, Envelope, Keys, Message, Status, Timestamp, TxBody, T, T0};

    use super::*;
    use crate::core::{run_quiet, run_quiet_where, three_cores, TxState, LATER, NOW};
    use crate::{Config, Now};

    fn t0(time: u64) -> T0 {
        T0(Timestamp::new(time, 0, 2))
    }

    /// Gives `core` a transaction `t0(time)` on `keys`, indexed: committed at `t` with
    /// `holders` voters known to hold the commit, or only pre-accepted without `t`.
    fn know(core: &mut Core, time: u64, keys: Keys, t: Option<u64>, holders: u8) {
        let t0 = t0(time);
        let body = TxBody {
            id: u128::from(time),
            keys: keys.clone(),
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
        core.conflicts.insert(t0, &keys);
        core.settle_if_held(t0);
    }

    /// What a coordinator leaves of the deps `deps` of `t0(of)` on `keys`.
    fn pruned(core: &Core, deps: &[u64], of: u64, keys: &Keys) -> Vec<u64> {
        let mut deps: Deps = deps.iter().map(|time| t0(*time)).collect();
        core.prune_deps(&mut deps, t0(of), keys);
        deps.iter().map(|dep| dep.0.time).collect()
    }

    /// The deps a replica computes for `t0(of)` on `keys` from its index.
    fn own(core: &Core, of: u64, keys: &Keys) -> Vec<u64> {
        let deps = core.conflicts.deps(keys, t0(of).0, t0(of));
        deps.iter().map(|dep| dep.0.time).collect()
    }

    #[test]
    fn settled_deps_below_a_later_committed_dep_leave() {
        let mut core = three_cores(Config::default()).remove(0);
        assert_eq!(core.quorums.every_majority_meets(), 2);
        let hot = Keys::single("hot");
        know(&mut core, 5, hot.clone(), Some(5), 1); // one holder: stays
        know(&mut core, 10, hot.clone(), Some(10), 2); // covered
        know(&mut core, 20, hot.clone(), Some(20), 3); // covered
        know(&mut core, 30, hot.clone(), Some(30), 2); // the highest settled below 100
        know(&mut core, 35, hot.clone(), Some(35), 1); // the highest committed below 100
        know(&mut core, 40, hot.clone(), None, 0); // not committed
        know(&mut core, 50, hot.clone(), Some(150), 2); // executes after the transaction
                                                        // A coordinator covers with any committed dep, the index with settled ones.
        assert_eq!(
            pruned(&core, &[5, 10, 20, 30, 35, 40, 50], 100, &hot),
            [5, 35, 40, 50]
        );
        assert_eq!(own(&core, 100, &hot), [5, 30, 35, 40, 50]);
        // Below 25, 20 is the highest either way: only 10 is covered.
        assert_eq!(pruned(&core, &[5, 10, 20], 25, &hot), [5, 20]);
        assert_eq!(own(&core, 25, &hot), [5, 20]);
        // A dep nobody here knows stays; the covering dep must be one of the deps.
        assert_eq!(pruned(&core, &[1, 10, 20], 100, &hot), [1, 20]);
    }

    #[test]
    fn with_several_keys_a_covering_dep_must_conflict_with_what_it_covers() {
        let mut core = three_cores(Config::default()).remove(0);
        let both = Keys::set(["a", "b"]);
        know(&mut core, 10, Keys::single("a"), Some(10), 2);
        know(&mut core, 20, Keys::single("b"), Some(20), 2);
        // 10 and 20 need not conflict with each other: 20 does not cover 10.
        assert_eq!(pruned(&core, &[10, 20], 100, &both), [10, 20]);
        assert_eq!(own(&core, 100, &both), [10, 20]);
        // 15 shares key a with 10: the index, which knows keys, covers 10 with it.
        know(&mut core, 15, Keys::single("a"), Some(15), 2);
        assert_eq!(pruned(&core, &[10, 15, 20], 100, &both), [10, 15, 20]);
        assert_eq!(own(&core, 100, &both), [15, 20]);
        // A `Keys::All` transaction conflicts with everything: it covers them all.
        know(&mut core, 30, Keys::All, Some(30), 2);
        assert_eq!(pruned(&core, &[10, 15, 20, 30], 100, &both), [30]);
        assert_eq!(own(&core, 100, &both), [30]);
        assert_eq!(pruned(&core, &[10, 15, 20, 30], 100, &Keys::All), [30]);
        assert_eq!(own(&core, 100, &Keys::All), [30]);
        // Without one, a `Keys::All` transaction keeps them: they need not conflict.
        assert_eq!(pruned(&core, &[10, 15, 20], 25, &Keys::All), [10, 15, 20]);
        assert_eq!(own(&core, 25, &Keys::All), [10, 15, 20]);
    }

    #[test]
    fn voters_joining_can_make_a_commit_unsettled() {
        let mut core = three_cores(Config::default()).remove(0);
        let hot = Keys::single("hot");
        know(&mut core, 10, hot.clone(), Some(10), 2);
        know(&mut core, 20, hot.clone(), Some(20), 2);
        assert_eq!(pruned(&core, &[10, 20], 100, &hot), [20]);
        assert_eq!(own(&core, 100, &hot), [20]);
        // Four voters: any two meet every majority of three, but the index starts over.
        core.add_member(4, true).expect("a new voter");
        assert_eq!(pruned(&core, &[10, 20], 100, &hot), [20]);
        assert_eq!(own(&core, 100, &hot), [10, 20]);
        // Five: two holders no longer do.
        core.add_member(5, true).expect("a new voter");
        assert_eq!(pruned(&core, &[10, 20], 100, &hot), [10, 20]);
    }

    fn hot(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single("hot"),
            payload: Bytes::from_static(b"x"),
        }
    }

    fn ack(from: u16, t0s: Vec<T0>, committed: Vec<T0>) -> Envelope {
        ack_to(from, 1, t0s, committed)
    }

    fn ack_to(from: u16, to: u16, t0s: Vec<T0>, committed: Vec<T0>) -> Envelope {
        Envelope {
            from,
            to,
            message: Message::Applied(Applied { t0s, committed }),
            clock: Timestamp::ZERO,
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

    /// The `Applied` acknowledgements `core` sends once its held ones are due at `now`, with
    /// their destinations.
    fn acks_sent(core: &mut Core, now: Now) -> Vec<(u16, Applied)> {
        core.tick(now);
        core.take_ready()
            .messages
            .into_iter()
            .filter_map(|envelope| match envelope.message {
                Message::Applied(applied) => Some((envelope.to, applied)),
                _ => None,
            })
            .collect()
    }

    /// Node 1 coordinates `X` and then `Y` on one key, and every node decides both: `Y`
    /// depends on `X` (node 2's record says so). Returns `(X, Y)`.
    fn decided_pair(cores: &mut [Core]) -> (T0, T0) {
        let x = cores[0].submit(NOW, hot(1));
        let y = cores[0].submit(NOW, hot(2));
        run_quiet(cores, NOW);
        assert_eq!(cores[1].txs[&y].record.deps.as_slice(), &[x]);
        (x, y)
    }

    #[test]
    fn members_acknowledge_commits_that_have_deps_to_their_home() {
        let mut cores = three_cores(Config::default());
        let (x, y) = decided_pair(&mut cores);
        let acks: Vec<Applied> = acks_sent(&mut cores[1], LATER)
            .into_iter()
            .filter_map(|(to, applied)| (to == 1).then_some(applied))
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

    #[test]
    fn with_five_voters_home_nodes_announce_settled_commits() {
        let mut cores = crate::core::cores(5, Config::default());
        let x = cores[0].submit(NOW, hot(1));
        run_quiet(&mut cores, NOW);
        // A Commit shows two holders; five voters need three to meet every majority.
        assert_eq!(cores[1].txs[&x].commit_holders, 2);
        cores[0].receive(NOW, ack(2, Vec::new(), vec![x]));
        cores[0].receive(NOW, ack(3, Vec::new(), vec![x]));
        assert_eq!(cores[0].txs[&x].commit_holders, 3);
        cores[0].tick(LATER);
        let forgets: Vec<Envelope> = cores[0]
            .take_ready()
            .messages
            .into_iter()
            .filter(|envelope| matches!(&envelope.message, Message::Forget(forget) if forget.settled == [x]))
            .collect();
        assert_eq!(forgets.len(), 4, "announced to every other member");
        let Message::Forget(forget) = &forgets[0].message else {
            unreachable!()
        };
        assert_eq!(forget.settled_holders, 3);
        let to = usize::from(forgets[0].to - 1);
        cores[to].receive(LATER, forgets[0].clone());
        assert_eq!(cores[to].txs[&x].commit_holders, 3);
    }

    #[test]
    fn with_five_voters_members_count_each_others_acknowledgements() {
        let mut cores = crate::core::cores(5, Config::default());
        let (_, y) = decided_pair(&mut cores);
        // Y has deps: node 3 tells every other member that it holds Y's commit, not only Y's
        // home (its acknowledgements wait for company, or for the hold to end).
        let told: BTreeSet<u16> = acks_sent(&mut cores[2], LATER)
            .into_iter()
            .filter_map(|(to, applied)| applied.committed.contains(&y).then_some(to))
            .collect();
        assert_eq!(told, BTreeSet::from([1, 2, 4, 5]));
        // Node 2 holds Y's commit from node 1: two holders, three needed.
        let node_2 = &mut cores[1];
        assert_eq!(node_2.txs[&y].commit_holders, 2);
        let from = |serial: u16| ack_to(serial, 2, Vec::new(), vec![y]);
        node_2.receive(LATER, from(3));
        assert_eq!(
            node_2.txs[&y].commit_holders, 3,
            "settled without the home's word"
        );
        // Each voter counts once, the Commit's sender included.
        node_2.receive(LATER, from(3));
        node_2.receive(LATER, from(1));
        assert_eq!(node_2.txs[&y].commit_holders, 3);
        node_2.receive(LATER, from(4));
        assert_eq!(node_2.txs[&y].commit_holders, 4);
    }

    /// Why a commit held by its coordinator alone must stay a dep. Five voters; `X` takes the
    /// fast path with four `t0` votes while node 5, which saw a conflicting transaction
    /// first, voted higher; every `Commit` of `X` is lost. Node 1 then commits `Z` and `Y`
    /// after it, and is cut off with node 4. A recovery of `X` by nodes 2, 3 and 5 must
    /// still choose `t0`: had `Y`'s commit left `X` out (`Z` covers it), `Y`, which started
    /// later, would reject `X`'s fast path, and the recovery would commit `X` at node 5's
    /// higher vote, while node 1 holds it committed at `t0`.
    #[test]
    fn a_commit_only_its_coordinator_holds_stays_a_dep() {
        let config = Config {
            pre_accept_window_ms: 0,
            ..Config::default()
        };
        let mut cores = crate::core::cores(5, config);
        let at = |ms: u64| Now {
            wall_ms: 1_000 + ms,
            monotonic_ms: ms,
        };
        // Node 5 pre-accepts W, which is ahead of X (its wall clock is); its PreAccepts are
        // lost.
        let ahead = Now {
            wall_ms: 1_050,
            monotonic_ms: 0,
        };
        let _w = cores[4].submit(ahead, hot(9));
        cores[4].take_ready();
        let x = cores[0].submit(at(0), hot(1));
        let not_a_commit = |e: &Envelope| !matches!(e.message, Message::Commit(_));
        run_quiet_where(&mut cores, at(0), not_a_commit);
        let record = &cores[0].txs[&x].record;
        assert!(
            record.status.is_decided() && record.t == x.as_t(),
            "fast path"
        );
        assert!(cores[4].txs[&x].record.t > x.as_t(), "node 5 voted higher");
        let z = cores[0].submit(at(1), hot(2));
        run_quiet_where(&mut cores, at(1), |_| true);
        let y = cores[0].submit(at(2), hot(3));
        run_quiet_where(&mut cores, at(2), |_| true);
        assert!(cores[1].txs[&z].record.status.is_decided());
        assert!(cores[1].txs[&y].record.status.is_decided());
        assert!(
            cores[1].txs[&y].record.deps.contains(&x),
            "Y names X: nobody else holds X's commit"
        );
        // Nodes 1 and 4 are cut off; nodes 2, 3 and 5 recover X.
        let among = |serial: u16| matches!(serial, 2 | 3 | 5);
        let mut ms = 10;
        while !cores[1].txs[&x].record.status.is_decided() {
            assert!(ms < 600_000, "X is never recovered");
            ms += 50;
            for node in [1, 2, 4] {
                cores[node].tick(at(ms));
            }
            run_quiet_where(&mut cores, at(ms), |e| among(e.from) && among(e.to));
        }
        assert_eq!(
            cores[1].txs[&x].record.t,
            x.as_t(),
            "recovered at t0, as committed"
        );
    }
}
