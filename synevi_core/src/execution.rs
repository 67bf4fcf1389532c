//! [`ExecutionGraph`]: decides when a committed transaction may execute.
//!
//! Rule (Accord, execution phase): a committed transaction `X` executes once every
//! dependency `d` in its deps is either
//! - done (executed or invalidated), or
//! - committed with `t(d) > t(X)` (then `d` executes after `X` and waits for it instead).
//!
//! A dependency that is not yet committed blocks `X` until it commits, because only then is
//! its `t` known. Waiting on execution only ever goes from higher `t` to lower `t`, so there
//! are no cycles: ties and cycles in the deps are broken by `t`, never by arrival order.
//! Among transactions ready at the same time the lowest `t` goes first, which keeps the
//! simulator deterministic; correctness does not depend on it, because conflicting
//! transactions are never ready together out of order (the later one has the earlier in its
//! deps and waits for it).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use synevi_types::{Deps, Keys, T, T0};

/// Committed transactions that have not executed yet, and what each waits for.
#[derive(Debug, Default)]
pub struct ExecutionGraph {
    /// Committed transactions: waiting to execute, or done (executed or invalidated) while
    /// they may still appear in deps. One map, so classifying a dependency is one lookup.
    nodes: FxHashMap<T0, GraphNode>,
    /// How many of `nodes` are pending.
    pending_count: usize,
    /// `d -> [X, ...]`: transactions blocked on `d` (on its commit if `d` is not pending, on
    /// its execution if it is).
    waiters: FxHashMap<T0, Vec<T0>>,
    ready: BTreeSet<(T, T0)>,
    /// Reused by `commit`.
    scratch: Vec<(T, T0, bool)>,
    /// Reused by `commit`: the transactions a commit releases.
    released: Vec<T0>,
}

#[derive(Debug)]
enum GraphNode {
    Pending {
        t: T,
        blockers: usize,
        /// A `Keys::All` transaction: conflicts with every other.
        everything: bool,
    },
    Done,
}

impl ExecutionGraph {
    /// Adds a committed transaction touching `keys`. A dependency that the graph holds
    /// neither as pending nor as done is either forgotten (every member applied it;
    /// `is_forgotten` says so) or not committed yet.
    ///
    /// The committed, pending deps that execute first are waited for through a chain where
    /// that is enough. Accord guarantees, of two conflicting committed transactions, that the
    /// one with the lower `t` is in the other's deps, unless it was stable (applied by every
    /// member) before, and then it is pending nowhere; so a pending dep `c` that conflicts
    /// with every other dep executes only after each of them with a lower `t`, and waiting
    /// for the highest such `c` replaces waiting for everything below it. Such a `c` is any
    /// dep of a one-key transaction (each dep touches that key, or every key), and any
    /// `Keys::All` dep. With a hot key or `Keys::All`, a commit then costs one waiting edge
    /// instead of one per transaction in flight.
    pub fn commit(
        &mut self,
        t0: T0,
        t: T,
        deps: &Deps,
        keys: &Keys,
        is_forgotten: impl Fn(T0) -> bool,
    ) {
        assert!(t >= t0, "execution timestamp {t:?} below {t0:?}");
        debug_assert!(!self.nodes.contains_key(&t0), "{t0:?} committed twice");
        let one_key = matches!(keys, Keys::Set(set) if set.len() == 1);
        let mut blockers = 0;
        // Committed, pending deps that execute first: (t, t0, conflicts with every dep).
        let mut before = std::mem::take(&mut self.scratch);
        for &dep in deps.iter() {
            if dep == t0 {
                continue;
            }
            let blocks = match self.nodes.get(&dep) {
                Some(GraphNode::Done) => false,
                // Committed: wait only if it executes first.
                Some(GraphNode::Pending {
                    t: dep_t,
                    everything,
                    ..
                }) => {
                    if *dep_t < t {
                        before.push((*dep_t, dep, one_key || *everything));
                    }
                    false
                }
                None if is_forgotten(dep) => false,
                // Not committed yet: its t is unknown, wait for the commit.
                None => true,
            };
            if blocks {
                self.waiters.entry(dep).or_default().push(t0);
                blockers += 1;
            }
        }
        let chain_from = before
            .iter()
            .filter(|(_, _, covers)| *covers)
            .map(|(dep_t, _, _)| *dep_t)
            .max();
        for (dep_t, dep, _) in before.drain(..) {
            if chain_from.is_none_or(|from| dep_t >= from) {
                self.waiters.entry(dep).or_default().push(t0);
                blockers += 1;
            }
        }
        self.scratch = before;
        self.nodes.insert(
            t0,
            GraphNode::Pending {
                t,
                blockers,
                everything: keys.is_all(),
            },
        );
        self.pending_count += 1;
        if blockers == 0 {
            self.ready.insert((t, t0));
        }
        // Everything that waited for this commit learns `t` now: those that execute after it
        // keep waiting (for its execution), the others are released.
        // The list is kept in place (with a hot key it holds many), the released collected
        // in a reused list.
        if let Some(mut waiting) = self.waiters.remove(&t0) {
            let mut released = std::mem::take(&mut self.released);
            let nodes = &self.nodes;
            waiting.retain(|dependant| {
                let keeps_waiting = matches!(
                    nodes.get(dependant),
                    Some(GraphNode::Pending { t: dependant_t, .. }) if t < *dependant_t
                );
                if !keeps_waiting {
                    released.push(*dependant);
                }
                keeps_waiting
            });
            for dependant in released.drain(..) {
                self.release(dependant);
            }
            self.released = released;
            if !waiting.is_empty() {
                self.waiters.insert(t0, waiting);
            }
        }
    }

    /// Marks a transaction done (executed or invalidated); releases what waits for it.
    pub fn done(&mut self, t0: T0) {
        if let Some(GraphNode::Pending { t, .. }) = self.nodes.insert(t0, GraphNode::Done) {
            self.pending_count -= 1;
            self.ready.remove(&(t, t0));
        }
        for dependant in self.waiters.remove(&t0).unwrap_or_default() {
            self.release(dependant);
        }
    }

    fn release(&mut self, t0: T0) {
        let Some(GraphNode::Pending { t, blockers, .. }) = self.nodes.get_mut(&t0) else {
            debug_assert!(false, "released {t0:?}, which is not pending");
            return;
        };
        debug_assert!(*blockers > 0, "{t0:?} released more often than blocked");
        *blockers -= 1;
        if *blockers == 0 {
            self.ready.insert((*t, t0));
        }
    }

    /// The next transaction to execute, lowest `t` first; it counts as executed from here on.
    pub fn pop_ready(&mut self) -> Option<(T0, T)> {
        let (t, t0) = self.ready.pop_first()?;
        debug_assert!(matches!(
            self.nodes.get(&t0),
            Some(GraphNode::Pending { blockers: 0, .. })
        ));
        self.done(t0);
        Some((t0, t))
    }

    /// `t0` was forgotten: from now on `is_forgotten` answers for it.
    pub fn forget(&mut self, t0: T0) {
        if let Some(GraphNode::Pending { .. }) = self.nodes.get(&t0) {
            debug_assert!(false, "forgot {t0:?}, which is pending");
            return;
        }
        self.nodes.remove(&t0);
    }

    /// How many done transactions the graph remembers (for memory accounting).
    pub fn done_len(&self) -> usize {
        self.nodes.len() - self.pending_count
    }

    /// Whether `t0` is committed and waiting to execute.
    pub fn is_pending(&self, t0: T0) -> bool {
        matches!(self.nodes.get(&t0), Some(GraphNode::Pending { .. }))
    }

    /// Dependencies someone waits for that are not committed here: the ones to ask peers
    /// about, or to recover.
    pub fn missing(&self) -> Vec<T0> {
        let mut missing: Vec<T0> = self
            .waiters
            .keys()
            .filter(|dep| !self.nodes.contains_key(dep))
            .copied()
            .collect();
        missing.sort_unstable();
        missing
    }

    /// How many transactions are committed and not executed.
    pub fn pending_len(&self) -> usize {
        self.pending_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};
    use synevi_types::{Keys, Timestamp};

    fn ts(n: u64) -> Timestamp {
        Timestamp::new(n, 0, 1)
    }

    #[test]
    fn waits_for_uncommitted_dependencies_then_orders_by_t() {
        let mut graph = ExecutionGraph::default();
        let (a, b) = (T0(ts(1)), T0(ts(2)));
        // b depends on a, a is not committed yet.
        graph.commit(
            b,
            T(ts(5)),
            &Deps::from_unsorted(vec![a]),
            &Keys::All,
            |_| false,
        );
        assert_eq!(graph.pop_ready(), None);
        assert_eq!(graph.missing(), vec![a]);
        // a commits with a higher t: b no longer waits.
        graph.commit(a, T(ts(9)), &Deps::new(), &Keys::All, |_| false);
        assert_eq!(graph.pop_ready(), Some((b, T(ts(5)))));
        assert_eq!(graph.pop_ready(), Some((a, T(ts(9)))));
        assert_eq!(graph.pending_len(), 0);
    }

    #[test]
    fn invalidated_dependency_releases_its_waiters() {
        let mut graph = ExecutionGraph::default();
        let (a, b) = (T0(ts(1)), T0(ts(2)));
        graph.commit(
            b,
            T(ts(2)),
            &Deps::from_unsorted(vec![a]),
            &Keys::All,
            |_| false,
        );
        graph.done(a);
        assert_eq!(graph.pop_ready(), Some((b, T(ts(2)))));
    }

    #[derive(Debug, Clone)]
    struct Tx {
        t0: T0,
        t: T,
        keys: Keys,
        deps: Deps,
    }

    /// Random transactions whose deps satisfy what Accord guarantees: if two conflict, the
    /// one with the lower `t` is in the other's deps. Some deps point the other way too
    /// (cycles in the deps graph), which the execution rule must break by `t`.
    fn history() -> impl Strategy<Value = Vec<Tx>> {
        let tx = (
            proptest::sample::subsequence(vec!["a", "b", "c", "d"], 0..3),
            0u8..10,
            0u64..5,
        );
        (proptest::collection::vec(tx, 1..40), any::<u64>()).prop_map(|(raw, seed)| {
            let mut txs: Vec<Tx> = raw
                .into_iter()
                .enumerate()
                .map(|(i, (keys, all, bump))| {
                    let t0 = T0(Timestamp::new(10 * i as u64, 0, 1));
                    // t >= t0; bumps make execution order differ from t0 order.
                    let t = T(Timestamp::new(10 * i as u64 + 25 * bump, 1, (i % 7) as u16));
                    let keys = if all == 0 { Keys::All } else { Keys::set(keys) };
                    Tx {
                        t0,
                        t,
                        keys,
                        deps: Deps::new(),
                    }
                })
                .collect();
            let mut rng = seed;
            for i in 0..txs.len() {
                for j in 0..txs.len() {
                    if i == j || !txs[i].keys.conflicts_with(&txs[j].keys) {
                        continue;
                    }
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let extra = rng >> 62 == 0;
                    if txs[j].t < txs[i].t || extra {
                        let dep = txs[j].t0;
                        let mut deps: Vec<T0> = txs[i].deps.iter().copied().collect();
                        deps.push(dep);
                        txs[i].deps = Deps::from_unsorted(deps);
                    }
                }
            }
            txs
        })
    }

    /// Commits in the given order, draining ready transactions after each commit.
    fn run(txs: &[Tx], order: &[usize]) -> Vec<T0> {
        let mut graph = ExecutionGraph::default();
        let mut executed: Vec<T0> = Vec::new();
        for &i in order {
            let tx = &txs[i];
            graph.commit(tx.t0, tx.t, &tx.deps, &tx.keys, |_| false);
            while let Some((t0, _)) = graph.pop_ready() {
                executed.push(t0);
            }
        }
        executed
    }

    fn per_key(txs: &[Tx], executed: &[T0]) -> BTreeMap<&'static str, Vec<T0>> {
        let by_t0: BTreeMap<T0, &Tx> = txs.iter().map(|tx| (tx.t0, tx)).collect();
        let mut sequences: BTreeMap<&'static str, Vec<T0>> = BTreeMap::new();
        for t0 in executed {
            for key in ["a", "b", "c", "d"] {
                if by_t0[t0].keys.conflicts_with(&Keys::single(key)) {
                    sequences.entry(key).or_default().push(*t0);
                }
            }
        }
        sequences
    }

    proptest! {
        /// Whatever order commits arrive in, every transaction executes exactly once, and
        /// conflicting transactions execute in `t` order, so every key sees the same
        /// sequence.
        #[test]
        fn same_order_regardless_of_commit_arrival(
            txs in history(),
            permutation_seeds in proptest::collection::vec(any::<u64>(), 2..4),
        ) {
            let mut reference: Option<BTreeMap<&'static str, Vec<T0>>> = None;
            for seed in permutation_seeds {
                let mut order: Vec<usize> = (0..txs.len()).collect();
                let mut rng = seed;
                for i in (1..order.len()).rev() {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    order.swap(i, (rng >> 33) as usize % (i + 1));
                }
                let executed = run(&txs, &order);
                prop_assert_eq!(executed.len(), txs.len());
                prop_assert_eq!(executed.iter().collect::<HashSet<_>>().len(), txs.len());
                let sequences = per_key(&txs, &executed);
                let t_of: BTreeMap<T0, T> = txs.iter().map(|tx| (tx.t0, tx.t)).collect();
                for sequence in sequences.values() {
                    prop_assert!(sequence.windows(2).all(|w| t_of[&w[0]] < t_of[&w[1]]));
                }
                if let Some(reference) = &reference {
                    prop_assert_eq!(reference, &sequences);
                }
                reference = Some(sequences);
            }
        }
    }
}
