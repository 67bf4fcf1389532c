//! Garbage collection: releasing a transaction's protocol state once nobody needs it.
//!
//! A node forgets transaction `X` (deletes its record, drops it from the conflict index,
//! remembers only its id) when all of these hold:
//! 1. `X` is applied (or invalidated) here;
//! 2. every member applied it. The home node of `X` (its original coordinator, `t0.serial`)
//!    collects `Applied` acknowledgements, re-sends the decision to members that stay silent,
//!    and announces "applied everywhere" in its periodic [`Forget`] message;
//! 3. `t(X)` is below the cluster's decided floor `G`, the minimum over members of "every
//!    transaction I know with a lower `t0` is decided here, and my clock is past it". Below
//!    `G`, every transaction that could still be recovered is already chosen, so the
//!    evidence `X` would give a recovery (`rejects_fast_path`, DESIGN §4 step 5) is no longer
//!    needed. Forgetting `X` earlier could let a recovery propose `t0` for a transaction that
//!    `X` proves never took the fast path.
//!
//! Forgotten ids are remembered so that late duplicates of old messages cannot resurrect a
//! transaction. Each home node's floor ("everything I coordinated below this is applied
//! everywhere") lets every node drop the remembered ids below it, so memory stays flat.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};
use synevi_types::{Forget, Keys, Message, Serial, Status, Timestamp, T0};

use crate::core::Core;
use crate::quorum::Quorums;

/// Home node: the members that acknowledged one of its transactions.
#[derive(Debug, Default)]
struct HomeAcks {
    /// Members that applied it.
    applied: BTreeSet<Serial>,
    /// Members that hold its commit durably: those that said so, and those that applied it.
    holding: BTreeSet<Serial>,
}

/// What an acknowledgement told a home node ([`Gc::home_applied`], [`Gc::home_holds`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HomeAck {
    /// The member is newly known to hold the transaction's commit.
    pub new_holder: bool,
    /// Every member applied it.
    pub everywhere: bool,
}

/// What a node tracks to decide when it may forget.
#[derive(Debug, Default)]
pub(crate) struct Gc {
    /// Forgotten ids above their home's floor.
    forgotten: FxHashSet<T0>,
    /// Per home node: every transaction it coordinated below this is applied everywhere.
    floors: BTreeMap<Serial, T0>,
    /// Per member: its latest decided floor.
    decided_floors: BTreeMap<Serial, Timestamp>,
    /// Home node: what members acknowledged of each of its own decided transactions.
    home_acks: FxHashMap<T0, HomeAcks>,
    /// Held transactions known to be applied by every member.
    pub(crate) applied_everywhere: BTreeSet<T0>,
    /// Own transactions found applied everywhere since the last announcement.
    newly_applied_everywhere: Vec<T0>,
    /// Own transactions found settled since the last announcement (`pruning.rs`), and how
    /// many voters hold each commit, at least.
    newly_settled: Vec<T0>,
    newly_settled_holders: u32,
    /// When the last round of garbage collection ran (`Core::gc_tick`), if one did.
    last_gossip_ms: Option<u64>,
    /// The floors last announced (floors only rise, so repeating them is always true).
    announced_floor: T0,
    announced_decided_floor: Timestamp,
}

impl Gc {
    pub fn restore(forgotten: &[T0], floors: &[(Serial, T0)]) -> Self {
        Gc {
            forgotten: forgotten.iter().copied().collect(),
            floors: floors.iter().copied().collect(),
            ..Gc::default()
        }
    }

    /// Whether transactions found applied everywhere wait to be announced.
    pub fn announcement_pending(&self) -> bool {
        !self.newly_applied_everywhere.is_empty() || !self.newly_settled.is_empty()
    }

    /// Whether `t0` was forgotten here or lies below its home's floor: applied everywhere.
    pub fn is_forgotten(&self, t0: T0) -> bool {
        // Floors first: a map of one entry per home node, and where it answers, no set lookup.
        self.floors.get(&t0.0.serial).is_some_and(|f| t0 < *f) || self.forgotten.contains(&t0)
    }

    /// When the next round of garbage collection is due, if it runs every `interval_ms`.
    pub fn next_deadline(&self, interval_ms: u64) -> Option<u64> {
        Some(self.last_gossip_ms.map_or(0, |last| last + interval_ms))
    }

    /// Home node: starts collecting acknowledgements for its own decided transaction.
    pub fn track_home(&mut self, t0: T0) {
        if !self.applied_everywhere.contains(&t0) {
            self.home_acks.entry(t0).or_default();
        }
    }

    /// Home node: `from` applied `t0`. Whether that acknowledgement is `from`'s first for
    /// `t0`, and whether it makes every member.
    pub fn home_applied(&mut self, t0: T0, from: Serial, quorums: &Quorums) -> HomeAck {
        let Some(acks) = self.home_acks.get_mut(&t0) else {
            return HomeAck::default();
        };
        acks.applied.insert(from);
        let new_holder = acks.holding.insert(from);
        let everywhere = quorums
            .members()
            .all(|member| acks.applied.contains(&member));
        if everywhere {
            self.home_acks.remove(&t0);
            self.newly_applied_everywhere.push(t0);
        }
        HomeAck {
            new_holder,
            everywhere,
        }
    }

    /// Home node: `from` holds the commit of `t0` durably. Whether that is news.
    pub fn home_holds(&mut self, t0: T0, from: Serial) -> bool {
        self.home_acks
            .get_mut(&t0)
            .is_some_and(|acks| acks.holding.insert(from))
    }

    /// Home node: members that have not acknowledged `t0`; `None` if not tracked.
    pub fn home_missing(&self, t0: T0, quorums: &Quorums) -> Option<Vec<Serial>> {
        let acks = self.home_acks.get(&t0)?;
        Some(
            quorums
                .members()
                .filter(|m| !acks.applied.contains(m))
                .collect(),
        )
    }

    /// The cluster's decided floor `G`, once every member has reported one.
    fn cluster_decided_floor(&self, quorums: &Quorums) -> Option<Timestamp> {
        quorums
            .members()
            .map(|member| self.decided_floors.get(&member).copied())
            .try_fold(Timestamp::MAX_SENTINEL, |low, floor| {
                floor.map(|f| low.min(f))
            })
    }

    /// How many forgotten ids are remembered (for the bounded-memory checks).
    pub fn remembered(&self) -> usize {
        self.forgotten.len() + self.home_acks.len() + self.applied_everywhere.len()
    }
}

/// Extension: a timestamp above every real one, as the neutral element of `min`.
trait MaxSentinel {
    const MAX_SENTINEL: Self;
}

impl MaxSentinel for Timestamp {
    const MAX_SENTINEL: Timestamp = Timestamp {
        time: u64::MAX,
        counter: u32::MAX,
        serial: u16::MAX,
    };
}

impl Core {
    /// How often garbage collection runs: every `Config::gc_interval_ms` while this node
    /// holds transactions or has something to announce; while it holds nothing, at the
    /// slower pace of half a retransmission interval, which still tells the others that its
    /// floors moved (a lost `Forget` is made good by the next) without waking an idle node
    /// often.
    pub(crate) fn gc_interval_ms(&self) -> u64 {
        if self.txs.is_empty() && !self.gc.announcement_pending() {
            (self.config.retransmit_interval_ms / 2 + 1).max(self.config.gc_interval_ms)
        } else {
            self.config.gc_interval_ms
        }
    }

    /// Periodic: gossip what this node knows is finished, then forget what may be forgotten.
    pub(crate) fn gc_tick(&mut self) {
        let now = self.now_ms();
        if self
            .gc
            .next_deadline(self.gc_interval_ms())
            .is_some_and(|due| now < due)
        {
            return;
        }
        self.gc.last_gossip_ms = Some(now);
        // Nothing this node's clock issues from now on is below `issue_floor`. The clock
        // witnesses the wall-clock reading first: a wall clock that later steps back must not
        // make it issue a `t0` below a floor already announced (found by the simulator).
        self.clock.witness(Timestamp::new(self.now.wall_ms, 0, 0));
        let issue_floor = self.clock.high().successor(0);
        // The own floor claims every transaction this node coordinated below it is applied
        // everywhere. That relies on this node knowing every transaction it coordinated that
        // any node holds: its PreAccepts leave only after the round that recorded the
        // transaction is durable (`Ready`), so a crash never loses one that peers have. (Sending
        // them first, the simulator found a restarted node raising its floor past a lost
        // transaction that another node held only accepted.)
        let mut own_floor = T0(issue_floor);
        let mut decided_floor = issue_floor;
        for (t0, state) in &self.txs {
            if t0.0.serial == self.serial && !self.gc.applied_everywhere.contains(t0) {
                own_floor = own_floor.min(*t0);
            }
            if !state.record.status.is_decided() {
                decided_floor = decided_floor.min(t0.0);
            }
        }
        self.gc.decided_floors.insert(self.serial, decided_floor);
        self.raise_floor(self.serial, own_floor);
        self.gc.announced_floor = self.gc.announced_floor.max(own_floor);
        self.gc.announced_decided_floor = self.gc.announced_decided_floor.max(decided_floor);
        self.announce(true);
        self.forget_what_may_be_forgotten();
        self.record_applied();
        self.track_missing_dependencies();
    }

    /// Sends `Forget` to every other member: with the transactions newly applied everywhere
    /// (right away, so that peers stop carrying them as deps), and periodically with the
    /// floors alone.
    pub(crate) fn announce(&mut self, periodic: bool) {
        if !periodic && !self.gc.announcement_pending() {
            return;
        }
        let t0s = std::mem::take(&mut self.gc.newly_applied_everywhere);
        let settled = std::mem::take(&mut self.gc.newly_settled);
        let settled_holders = std::mem::take(&mut self.gc.newly_settled_holders);
        let others: Vec<Serial> = self
            .quorums
            .members()
            .filter(|member| *member != self.serial)
            .collect();
        self.send_to(
            &others,
            Message::Forget(Forget {
                floor: self.gc.announced_floor,
                t0s,
                decided_floor: self.gc.announced_decided_floor,
                settled,
                settled_holders,
            }),
        );
    }

    /// Home node: enough voters hold the commit of its `t0` for every majority to meet one
    /// (`holders`), which the other members cannot tell from the commit alone when that
    /// takes more than two: announce it with the next `Forget`.
    pub(crate) fn announce_settled(&mut self, t0: T0, holders: u32) {
        let gc = &mut self.gc;
        gc.newly_settled_holders = if gc.newly_settled.is_empty() {
            holders
        } else {
            gc.newly_settled_holders.min(holders)
        };
        gc.newly_settled.push(t0);
    }

    /// Every member applied `t0`: it stops being a dep, and becomes a candidate to forget.
    pub(crate) fn mark_applied_everywhere(&mut self, t0: T0) {
        if !self.gc.applied_everywhere.insert(t0) {
            return;
        }
        let Some(state) = self.txs.get_mut(&t0) else {
            return;
        };
        state.stable = true;
        if let Some(keys) = state.keys() {
            self.conflicts.stabilise(t0, keys, state.committed_at());
        }
    }

    pub(crate) fn on_forget(&mut self, from: Serial, message: Forget) {
        let previous = self
            .gc
            .decided_floors
            .get(&from)
            .copied()
            .unwrap_or_default();
        self.gc
            .decided_floors
            .insert(from, previous.max(message.decided_floor));
        for t0 in message.t0s {
            if t0.0.serial == from && self.txs.contains_key(&t0) {
                self.mark_applied_everywhere(t0);
            }
        }
        let holders = u8::try_from(message.settled_holders).unwrap_or(u8::MAX);
        for t0 in message.settled {
            if t0.0.serial != from {
                continue;
            }
            if let Some(state) = self.txs.get_mut(&t0) {
                state.commit_holders = state.commit_holders.max(holders);
                self.settle_if_held(t0);
            }
        }
        self.raise_floor(from, message.floor);
    }

    /// `home`'s transactions below `floor` are applied everywhere.
    fn raise_floor(&mut self, home: Serial, floor: T0) {
        let current = self.gc.floors.get(&home).copied();
        if current.is_some_and(|current| current >= floor) {
            return;
        }
        self.gc.floors.insert(home, floor);
        self.gc
            .forgotten
            .retain(|t0| t0.0.serial != home || *t0 >= floor);
        self.persist_floor(home, floor);
        let below: Vec<T0> = self
            .txs
            .keys()
            .filter(|t0| t0.0.serial == home && **t0 < floor)
            .copied()
            .collect();
        for t0 in below {
            self.mark_applied_everywhere(t0);
        }
    }

    fn forget_what_may_be_forgotten(&mut self) {
        let cluster_floor = self.gc.cluster_decided_floor(&self.quorums);
        let candidates: Vec<T0> = self.gc.applied_everywhere.iter().copied().collect();
        let mut forgetting = Vec::new();
        for t0 in candidates {
            let Some(state) = self.txs.get(&t0) else {
                self.gc.applied_everywhere.remove(&t0);
                continue;
            };
            let may_forget = match state.record.status {
                // Invalidated transactions are in nobody's evidence.
                Status::Invalidated => true,
                Status::Applied => cluster_floor.is_some_and(|g| state.record.t.0 < g),
                // Applied everywhere but not here yet: impossible unless acknowledgements
                // lie; keep it.
                _ => {
                    debug_assert!(
                        false,
                        "{t0:?} applied everywhere but {:?} here",
                        state.record.status
                    );
                    false
                }
            };
            if may_forget {
                forgetting.push(t0);
            }
        }
        // Out of the conflict index in one pass, then the rest one by one.
        let removed: Vec<(T0, &Keys)> = forgetting
            .iter()
            .filter_map(|t0| Some((*t0, self.txs.get(t0)?.keys()?)))
            .collect();
        self.conflicts.remove_all(&removed);
        for t0 in forgetting {
            self.forget(t0);
        }
    }

    /// Forgets `t0`, which the caller already removed from the conflict index.
    fn forget(&mut self, t0: T0) {
        if self.txs.remove(&t0).is_none() {
            return;
        }
        debug_assert!(
            !self.conflicts.contains(t0),
            "{t0:?} forgotten while still in the conflict index"
        );
        debug_assert!(!self.execution.is_pending(t0));
        self.execution.forget(t0);
        self.gc.applied_everywhere.remove(&t0);
        self.gc.home_acks.remove(&t0);
        let below_floor = self.gc.floors.get(&t0.0.serial).is_some_and(|f| t0 < *f);
        if !below_floor {
            self.gc.forgotten.insert(t0);
        }
        self.persist_forget(t0);
        self.stats.forgotten += 1;
    }
}

#[cfg(test)]
mod tests {
    use synevi_types::{Bytes, Envelope, Keys, TxBody};

    use super::*;
    use crate::core::{deliver, run_quiet, run_quiet_where, take_all, LATER, NOW};
    use crate::{Config, Now};

    fn three_cores() -> Vec<Core> {
        crate::core::three_cores(Config::default())
    }

    fn body(id: u128) -> TxBody {
        TxBody {
            id,
            keys: Keys::single("hot"),
            payload: Bytes::from_static(b"x"),
        }
    }

    /// Garbage collection runs every `gc_interval_ms` while a node holds transactions, and
    /// at half a retransmission interval while it holds none.
    #[test]
    fn garbage_collection_runs_often_only_while_there_is_something_to_collect() {
        let config = Config::default();
        let idle = config.retransmit_interval_ms / 2 + 1;
        assert!(idle > config.gc_interval_ms, "the test needs the two apart");
        let mut core = three_cores().remove(0);
        let at = |ms: u64| Now {
            wall_ms: 1_000 + ms,
            monotonic_ms: ms,
        };
        core.tick(at(0));
        let due = |core: &Core| core.gc.next_deadline(core.gc_interval_ms());
        assert_eq!(due(&core), Some(idle), "nothing held: the slow pace");
        core.submit(at(1), body(1));
        assert_eq!(
            due(&core),
            Some(config.gc_interval_ms),
            "a transaction held"
        );
        // A round of the core before it is due does not collect; one at it does.
        core.tick(at(config.gc_interval_ms - 1));
        assert_eq!(due(&core), Some(config.gc_interval_ms));
        core.tick(at(config.gc_interval_ms));
        assert_eq!(due(&core), Some(2 * config.gc_interval_ms));
    }

    /// A dependency the replicas reported while it was still in flight, and that every
    /// member applied before the coordinator committed, is left out of the commit.
    #[test]
    fn commits_leave_out_deps_that_stabilised_meanwhile() {
        let mut cores = three_cores();
        // X, coordinated by node 1, is committed and applied everywhere, but the `Applied`
        // acknowledgements of nodes 2 and 3 have not reached its home yet: X is active
        // everywhere.
        let x = cores[0].submit(NOW, body(1));
        run_quiet(&mut cores, NOW);
        // Nodes 2 and 3 held their acknowledgements (nothing else to send to node 1); once the
        // hold is over they send them, but they have not arrived yet.
        let mut acks = Vec::new();
        for core in &mut cores[1..] {
            core.tick(LATER);
            let messages = core.take_ready().messages;
            acks.extend(
                messages
                    .into_iter()
                    .filter(|e| matches!(e.message, Message::Applied(_))),
            );
        }
        assert_eq!(acks.len(), 2, "nodes 2 and 3 acknowledge X");
        // Y, coordinated by node 1 too: nodes 2 and 3 answer with X as a dependency.
        let y = cores[0].submit(LATER, body(2));
        let pre_accepts = take_all(&mut cores, LATER);
        deliver(&mut cores, pre_accepts, LATER);
        let answers = take_all(&mut cores, LATER);
        for answer in &answers {
            if let Message::PreAcceptOk(ok) = &answer.message {
                assert_eq!(
                    ok.deps.as_slice(),
                    &[x],
                    "X is in flight on node {}",
                    answer.from
                );
            }
        }
        // The acknowledgements arrive first: node 1 knows X applied everywhere.
        deliver(&mut cores, acks, LATER);
        deliver(&mut cores, answers, LATER);
        // Node 1's commits would wait for company (`Core::hold_commit`): let them go now.
        cores[0].release_held_commits();
        let commits: Vec<Envelope> = take_all(&mut cores, LATER)
            .into_iter()
            .filter(|e| matches!(&e.message, Message::Commit(c) if c.t0 == y))
            .collect();
        assert_eq!(commits.len(), 2, "Y takes the fast path");
        for commit in &commits {
            let Message::Commit(commit) = &commit.message else {
                unreachable!()
            };
            assert!(commit.deps.is_empty(), "X left out: {:?}", commit.deps);
        }
        deliver(&mut cores, commits, LATER);
        run_quiet(&mut cores, LATER);
        for core in &cores {
            assert_eq!(
                core.applied_digest().0,
                2,
                "both executed on node {}",
                core.serial()
            );
        }
    }

    /// `Applied` acknowledgements wait for other messages to their home node, and go on
    /// their own only once the hold is over.
    #[test]
    fn acknowledgements_wait_for_company_or_the_hold() {
        let mut cores = three_cores();
        let _x = cores[0].submit(NOW, body(1));
        // Node 1's commits are let go (they wait for company too, `Core::hold_commit`).
        run_quiet_where(&mut cores, NOW, |e| {
            assert!(
                !matches!(e.message, Message::Applied(_)),
                "nothing else goes to node 1: the acknowledgements wait"
            );
            true
        });
        // Node 2 coordinates Y: its acknowledgement of X travels with Y's PreAccept, ahead of
        // it (`release_held`).
        let _y = cores[1].submit(NOW, body(2));
        let from_two = cores[1].take_ready().messages;
        let to_one: Vec<&Message> = from_two
            .iter()
            .filter(|e| e.to == 1)
            .map(|e| &e.message)
            .collect();
        assert!(matches!(
            to_one.as_slice(),
            [Message::Applied(_), Message::PreAccept(_)]
        ));
        // Node 3 has nothing for node 1 until the hold is over.
        assert!(cores[2].take_ready().messages.is_empty());
        let over = Now {
            wall_ms: NOW.wall_ms + crate::core::HOLD_MS,
            monotonic_ms: NOW.monotonic_ms + crate::core::HOLD_MS,
        };
        cores[2].tick(over);
        assert!(cores[2]
            .take_ready()
            .messages
            .iter()
            .any(|e| e.to == 1 && matches!(e.message, Message::Applied(_))));
    }
}
