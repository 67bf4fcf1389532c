//! [`ConflictIndex`]: which known transactions conflict with a key set, and the highest
//! timestamp witnessed among them.
//!
//! Replicas answer PreAccept with "the highest conflicting timestamp witnessed" (to decide
//! `t`) and "the conflicting transactions with a lower `t0`" (the deps); recovery asks for
//! every conflicting transaction (its evidence). All three are answered here.
//!
//! A transaction is *active* until it is known to be applied by every member, then *stable*
//! until it is forgotten. Stable transactions are left out of deps: every node already
//! executed them, and every replica already witnessed their `t`, so a later transaction is
//! ordered after them without waiting for them. This keeps deps small under contention.
//! They stay in the index as recovery evidence until garbage collection forgets them
//! (`gc.rs` explains when that is safe). Forgotten and invalidated transactions leave the
//! index; the highest timestamps they contributed stay, so a transaction that conflicts with
//! a forgotten one is still ordered after it.
//!
//! An active transaction is also *settled* once it is committed and enough voters hold its
//! commit that every majority meets one of them: deps leave it out where a later settled
//! transaction covers it (`pruning.rs` explains when that is safe). The index keeps settled
//! transactions with their `t`, so that deps are pruned without looking up any state.

use rustc_hash::FxHashMap;
use synevi_types::{Deps, Key, Keys, Timestamp, T0};

/// The transactions of one index entry in three disjoint lists: active ones not settled and
/// stable ones, each sorted by `t0` (transactions mostly arrive in `t0` order, appended at the
/// end, and the active ones below a bound are one contiguous slice), and settled ones with
/// their `t`, sorted by `t` (the highest below a bound is one binary search away, and the
/// ones above it, which a dep below that bound still names, are the short tail).
#[derive(Debug, Default)]
struct Entry {
    active: Vec<T0>,
    settled: Vec<(Timestamp, T0)>,
    stable: Vec<T0>,
}

fn sorted_insert(list: &mut Vec<T0>, t0: T0) -> bool {
    match list.binary_search(&t0) {
        Ok(_) => false,
        Err(at) => {
            list.insert(at, t0);
            true
        }
    }
}

fn sorted_remove(list: &mut Vec<T0>, t0: &T0) -> bool {
    match list.binary_search(t0) {
        Ok(at) => {
            list.remove(at);
            true
        }
        Err(_) => false,
    }
}

/// Removes from a sorted `list` every element of the sorted `gone`: one pass, however many go.
fn remove_sorted(list: &mut Vec<T0>, gone: &[T0]) {
    if let [only] = gone {
        sorted_remove(list, only);
        return;
    }
    let mut cursor = 0;
    list.retain(|t0| {
        while gone.get(cursor).is_some_and(|g| g < t0) {
            cursor += 1;
        }
        gone.get(cursor) != Some(t0)
    });
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.active.is_empty() && self.settled.is_empty() && self.stable.is_empty()
    }

    fn insert(&mut self, t0: T0) -> bool {
        sorted_insert(&mut self.active, t0)
    }

    fn settled_position(&self, t0: &T0) -> Option<usize> {
        self.settled.iter().position(|(_, settled)| settled == t0)
    }

    fn remove(&mut self, t0: &T0) -> bool {
        if sorted_remove(&mut self.active, t0) || sorted_remove(&mut self.stable, t0) {
            return true;
        }
        // Settled transactions are stable before they are forgotten; rarely found here.
        match self.settled_position(t0) {
            Some(at) => {
                self.settled.remove(at);
                true
            }
            None => false,
        }
    }

    fn contains(&self, t0: &T0) -> bool {
        self.active.binary_search(t0).is_ok()
            || self.stable.binary_search(t0).is_ok()
            || self.settled_position(t0).is_some()
    }

    /// Removes every element of the sorted `gone`.
    fn remove_all(&mut self, gone: &[T0]) {
        remove_sorted(&mut self.active, gone);
        remove_sorted(&mut self.stable, gone);
        if !self.settled.is_empty() {
            self.settled
                .retain(|(_, t0)| gone.binary_search(t0).is_err());
        }
    }

    /// An active member is settled, committed at `t`.
    fn settle(&mut self, t0: T0, t: Timestamp) {
        // `anchor_below` relies on it: a settled member below a `t0` is a dep of that `t0`.
        debug_assert!(t >= t0.0, "{t0:?} settled at {t:?}, below its t0");
        if sorted_remove(&mut self.active, &t0) {
            // The three lists stay disjoint: a member is active, settled or stable.
            debug_assert!(self.stable.binary_search(&t0).is_err());
            let at = self.settled.partition_point(|settled| *settled < (t, t0));
            self.settled.insert(at, (t, t0));
        }
    }

    /// Every settled member becomes merely active again.
    fn unsettle_all(&mut self) {
        if !self.settled.is_empty() {
            self.active.extend(self.settled.drain(..).map(|(_, t0)| t0));
            self.active.sort_unstable();
        }
    }

    /// A member is applied everywhere; `t` is where it was committed, if known.
    fn stabilise(&mut self, t0: T0, t: Option<Timestamp>) {
        if sorted_remove(&mut self.active, &t0) {
            sorted_insert(&mut self.stable, t0);
            return;
        }
        let settled_at = match t {
            Some(t) => self.settled.binary_search(&(t, t0)).ok(),
            None => self.settled_position(&t0),
        };
        if let Some(at) = settled_at {
            self.settled.remove(at);
            sorted_insert(&mut self.stable, t0);
        }
    }

    /// The active members below `bound` that are not settled: deps whatever else is known.
    fn unsettled_below(&self, bound: T0) -> &[T0] {
        &self.active[..self.active.partition_point(|t0| *t0 < bound)]
    }

    /// The highest `t` of a settled member below `t0`'s own: the dep of a transaction `t0`
    /// that covers the settled members committed below it which conflict with it. A member's
    /// `t` is at least its `t0`, so that member is a dep of `t0`.
    fn anchor_below(&self, t0: T0) -> Option<Timestamp> {
        let below = self.settled.partition_point(|(t, _)| *t < t0.0);
        below.checked_sub(1).map(|last| self.settled[last].0)
    }

    /// Adds to `out` the settled members with a `t0` below `bound` that `anchor` does not
    /// cover: those committed at or above it (the anchor itself among them).
    fn settled_kept(&self, anchor: Option<Timestamp>, bound: T0, out: &mut Vec<T0>) {
        let from = anchor.map_or(0, |anchor| {
            self.settled.partition_point(|(t, _)| *t < anchor)
        });
        out.extend(
            self.settled[from..]
                .iter()
                .map(|(_, t0)| *t0)
                .filter(|t0| *t0 < bound),
        );
    }

    fn all(&self) -> impl Iterator<Item = T0> + '_ {
        self.active
            .iter()
            .chain(self.stable.iter())
            .copied()
            .chain(self.settled.iter().map(|(_, t0)| *t0))
    }

    fn len(&self) -> usize {
        self.active.len() + self.settled.len() + self.stable.len()
    }
}

#[derive(Debug, Default)]
struct KeyEntry {
    members: Entry,
    max: Timestamp,
    /// When PreAccepts on this key last arrived out of `t0` order (`note_reorder`).
    reordered_ms: Option<u64>,
}

/// Per-key and all-keys indexes of the transactions a replica knows.
#[derive(Debug, Default)]
pub struct ConflictIndex {
    by_key: FxHashMap<Key, KeyEntry>,
    /// Transactions with [`Keys::All`].
    all_keys: Entry,
    /// Every indexed transaction (for [`Keys::All`] queries).
    every: Entry,
    /// Highest timestamp witnessed of a [`Keys::All`] transaction: conflicts with every key.
    all_keys_max: Timestamp,
    /// Highest timestamp witnessed of anything: what a [`Keys::All`] transaction conflicts
    /// with.
    every_max: Timestamp,
    /// Highest timestamp of a key whose entry was dropped when its last transaction left.
    /// Counting it for every key keeps the index small at the price of a few slow paths
    /// right after a key went quiet.
    pruned_max: Timestamp,
    /// When PreAccepts of [`Keys::All`] transactions last arrived out of `t0` order.
    all_keys_reordered_ms: Option<u64>,
    /// When PreAccepts of any transactions last arrived out of `t0` order.
    any_reordered_ms: Option<u64>,
}

impl ConflictIndex {
    /// An index that treats every timestamp at or below `floor` as witnessed on every key
    /// (used after a restart, where the per-key history is gone).
    pub fn with_floor(floor: Timestamp) -> Self {
        ConflictIndex {
            all_keys_max: floor,
            every_max: floor,
            pruned_max: floor,
            ..ConflictIndex::default()
        }
    }

    /// Adds an active transaction. What it witnessed is recorded separately with
    /// [`ConflictIndex::witness`], after the replica computed its own answer for it.
    pub fn insert(&mut self, t0: T0, keys: &Keys) {
        let inserted = self.every.insert(t0);
        debug_assert!(inserted, "{t0:?} indexed twice");
        match keys {
            Keys::All => {
                self.all_keys.insert(t0);
            }
            Keys::Set(keys) => {
                for key in keys {
                    let entry = self.by_key.entry(key.clone()).or_default();
                    entry.members.insert(t0);
                }
            }
        }
    }

    /// Records that a transaction on `keys` was seen at `timestamp` (a `t0` or a `t`).
    pub fn witness(&mut self, keys: &Keys, timestamp: Timestamp) {
        self.every_max = self.every_max.max(timestamp);
        match keys {
            Keys::All => self.all_keys_max = self.all_keys_max.max(timestamp),
            Keys::Set(keys) => {
                for key in keys {
                    let entry = self.by_key.entry(key.clone()).or_default();
                    entry.max = entry.max.max(timestamp);
                }
            }
        }
    }

    /// A transaction on `keys` met a conflicting timestamp above its `t0` at `now_ms`:
    /// PreAccepts on these keys arrive out of `t0` order.
    pub fn note_reorder(&mut self, keys: &Keys, now_ms: u64) {
        match keys {
            Keys::All => self.all_keys_reordered_ms = Some(now_ms),
            Keys::Set(keys) => {
                for key in keys {
                    self.by_key.entry(key.clone()).or_default().reordered_ms = Some(now_ms);
                }
            }
        }
        self.any_reordered_ms = Some(now_ms);
    }

    /// A PreAccept on `keys` was held back and its window ran out with nothing conflicting
    /// held beside it: no PreAccept it could have waited for was under way, so the
    /// reordering that made the replica hold was a one-off (with one client at a time, a
    /// lagging replica sees one now and then), not contention. Handle the next ones at once
    /// until PreAccepts arrive out of order again. Reorderings of [`Keys::All`]
    /// transactions arm every key and are forgotten only by such a transaction's lone hold.
    pub fn forget_reorder(&mut self, keys: &Keys) {
        match keys {
            Keys::All => {
                self.all_keys_reordered_ms = None;
                self.any_reordered_ms = None;
            }
            Keys::Set(keys) => {
                for key in keys {
                    if let Some(entry) = self.by_key.get_mut(key) {
                        entry.reordered_ms = None;
                    }
                }
            }
        }
    }

    /// Whether PreAccepts of transactions conflicting with `keys` arrived out of `t0` order
    /// at `since_ms` or later.
    pub fn reordered_since(&self, keys: &Keys, since_ms: u64) -> bool {
        let recent = |at: Option<u64>| at.is_some_and(|at| at >= since_ms);
        match keys {
            Keys::All => recent(self.any_reordered_ms),
            Keys::Set(keys) => {
                recent(self.all_keys_reordered_ms)
                    || keys
                        .iter()
                        .any(|key| recent(self.by_key.get(key).and_then(|e| e.reordered_ms)))
            }
        }
    }

    /// Every member applied the transaction, committed at `t` if known: leave it out of deps
    /// from now on.
    pub fn stabilise(&mut self, t0: T0, keys: &Keys, t: Option<Timestamp>) {
        self.for_each_entry(keys, |entry| entry.stabilise(t0, t));
    }

    /// The active transaction `t0` on `keys` is committed at `t`, and every majority holds
    /// its commit: deps may leave it out where a later settled one covers it.
    pub fn settle(&mut self, t0: T0, keys: &Keys, t: Timestamp) {
        self.for_each_entry(keys, |entry| entry.settle(t0, t));
    }

    /// Applies `change` to every existing entry a transaction on `keys` is in.
    fn for_each_entry(&mut self, keys: &Keys, mut change: impl FnMut(&mut Entry)) {
        change(&mut self.every);
        match keys {
            Keys::All => change(&mut self.all_keys),
            Keys::Set(keys) => {
                for key in keys {
                    if let Some(entry) = self.by_key.get_mut(key) {
                        change(&mut entry.members);
                    }
                }
            }
        }
    }

    /// Forgets which transactions are settled (a voter joined: more voters may now be needed
    /// to meet every majority).
    pub fn unsettle_all(&mut self) {
        self.every.unsettle_all();
        self.all_keys.unsettle_all();
        for entry in self.by_key.values_mut() {
            entry.members.unsettle_all();
        }
    }

    /// Removes a transaction; what it witnessed stays.
    pub fn remove(&mut self, t0: T0, keys: &Keys) {
        if !self.every.remove(&t0) {
            return;
        }
        match keys {
            Keys::All => {
                self.all_keys.remove(&t0);
            }
            Keys::Set(keys) => {
                for key in keys {
                    self.remove_from_key(key, &[t0]);
                }
            }
        }
    }

    /// Removes the sorted `gone` from `key`'s entry, and the entry once it is empty (its
    /// maximum then counts for every key, see `pruned_max`).
    fn remove_from_key(&mut self, key: &Key, gone: &[T0]) {
        let Some(entry) = self.by_key.get_mut(key) else {
            return;
        };
        entry.members.remove_all(gone);
        if entry.members.is_empty() {
            self.pruned_max = self.pruned_max.max(entry.max);
            self.by_key.remove(key);
        }
    }

    /// Removes many transactions at once, as [`ConflictIndex::remove`] does each: one pass
    /// over each list they are in. Garbage collection forgets hundreds per tick, mostly the
    /// oldest, and removing those one by one from the front of a long sorted list (every
    /// transaction's, or a hot key's) moved the rest of it each time.
    pub fn remove_all(&mut self, removed: &[(T0, &Keys)]) {
        // As `remove`, a transaction the index does not hold changes nothing.
        let removed: Vec<(T0, &Keys)> = removed
            .iter()
            .copied()
            .filter(|(t0, _)| self.every.contains(t0))
            .collect();
        let mut gone: Vec<T0> = removed.iter().map(|(t0, _)| *t0).collect();
        gone.sort_unstable();
        self.every.remove_all(&gone);
        gone.clear();
        gone.extend(
            removed
                .iter()
                .filter(|(_, keys)| keys.is_all())
                .map(|(t0, _)| *t0),
        );
        gone.sort_unstable();
        self.all_keys.remove_all(&gone);
        let mut per_key: Vec<(&Key, T0)> = Vec::new();
        for (t0, keys) in &removed {
            if let Keys::Set(keys) = keys {
                per_key.extend(keys.iter().map(|key| (key, *t0)));
            }
        }
        per_key.sort_unstable();
        for run in per_key.chunk_by(|a, b| a.0 == b.0) {
            gone.clear();
            gone.extend(run.iter().map(|(_, t0)| *t0));
            self.remove_from_key(run[0].0, &gone);
        }
    }

    /// Whether the index holds `t0` (active or stable).
    pub fn contains(&self, t0: T0) -> bool {
        self.every.contains(&t0)
    }

    /// The highest timestamp witnessed among transactions that conflict with `keys`.
    pub fn max_conflicting(&self, keys: &Keys) -> Timestamp {
        match keys {
            Keys::All => self.every_max,
            Keys::Set(keys) => keys
                .iter()
                .filter_map(|key| self.by_key.get(key).map(|entry| entry.max))
                .fold(self.all_keys_max.max(self.pruned_max), Timestamp::max),
        }
    }

    /// The deps of `t0` on `keys`: the active transactions conflicting with it whose `t0` is
    /// below `bound` (at PreAccept `t0` itself, at Accept the proposed `t`), except `t0` and
    /// the settled ones a settled dep covers (`pruning.rs`): those committed below the
    /// highest `t` below `t0` of a settled transaction that conflicts with them. Within a
    /// key's entry every member conflicts with every other; a [`Keys::All`] transaction
    /// conflicts with everything. That covering dep is itself one of the deps: its `t0` is
    /// at most its `t`, below `t0`, so below `bound`.
    pub fn deps(&self, keys: &Keys, bound: Timestamp, t0: T0) -> Deps {
        debug_assert!(bound >= t0.0, "deps of {t0:?} below {bound:?}");
        let bound = T0(bound);
        let mut slices: Vec<&[T0]> = Vec::new();
        // Settled deps no covering dep is above: few (the covering ones, and those
        // committed at a `t` above `t0`).
        let mut settled: Vec<T0> = Vec::new();
        let all_keys_anchor = self.all_keys.anchor_below(t0);
        match keys {
            Keys::All => {
                slices.push(self.every.unsettled_below(bound));
                self.every
                    .settled_kept(all_keys_anchor, bound, &mut settled);
            }
            Keys::Set(keys) => {
                slices.push(self.all_keys.unsettled_below(bound));
                let mut highest = all_keys_anchor;
                for key in keys {
                    if let Some(entry) = self.by_key.get(key) {
                        let entry = &entry.members;
                        slices.push(entry.unsettled_below(bound));
                        let anchor = entry.anchor_below(t0).max(all_keys_anchor);
                        entry.settled_kept(anchor, bound, &mut settled);
                        highest = highest.max(anchor);
                    }
                }
                self.all_keys.settled_kept(highest, bound, &mut settled);
            }
        }
        slices.retain(|slice| !slice.is_empty());
        let mut deps: Vec<T0> = match slices.as_slice() {
            [] if settled.is_empty() => return Deps::new(),
            // One sorted, duplicate-free slice (one key, or everything) and the few settled
            // deps: the slice as it is, each of those inserted where it belongs.
            [only] if settled.len() <= 8 => {
                let mut deps = Vec::with_capacity(only.len() + settled.len());
                deps.extend_from_slice(only);
                for dep in settled {
                    sorted_insert(&mut deps, dep);
                }
                deps
            }
            _ => {
                settled.extend(slices.concat());
                settled.sort_unstable();
                settled.dedup();
                settled
            }
        };
        if let Ok(at) = deps.binary_search(&t0) {
            deps.remove(at);
        }
        Deps::from_sorted(deps)
    }

    /// Every indexed transaction conflicting with `keys`, active or stable, `except` itself,
    /// ascending: what recovery evidence is computed from.
    pub fn conflicting(&self, keys: &Keys, except: T0) -> Vec<T0> {
        let mut found: Vec<T0> = match keys {
            Keys::All => {
                let mut found: Vec<T0> = self.every.all().collect();
                found.sort_unstable();
                found
            }
            Keys::Set(keys) => {
                let mut found: Vec<T0> = self.all_keys.all().collect();
                for key in keys {
                    if let Some(entry) = self.by_key.get(key) {
                        found.extend(entry.members.all());
                    }
                }
                found.sort_unstable();
                found.dedup();
                found
            }
        };
        found.retain(|t0| *t0 != except);
        found
    }

    /// How many transactions are indexed.
    pub fn len(&self) -> usize {
        self.every.len()
    }

    /// How many per-key entries exist (for memory accounting).
    pub fn key_entries(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(time: u64) -> Timestamp {
        Timestamp::new(time, 0, 1)
    }

    #[test]
    fn deps_are_conflicting_lower_and_active() {
        let mut index = ConflictIndex::default();
        index.insert(T0(ts(1)), &Keys::single("a"));
        index.insert(T0(ts(2)), &Keys::single("b"));
        index.insert(T0(ts(3)), &Keys::All);
        index.insert(T0(ts(5)), &Keys::single("a"));
        index.witness(&Keys::single("a"), ts(1));
        index.witness(&Keys::single("b"), ts(2));
        index.witness(&Keys::All, ts(3));
        index.witness(&Keys::single("a"), ts(5));
        let deps = index.deps(&Keys::single("a"), ts(4), T0(ts(4)));
        assert_eq!(deps.as_slice(), &[T0(ts(1)), T0(ts(3))]);
        let deps = index.deps(&Keys::All, ts(9), T0(ts(5)));
        assert_eq!(deps.as_slice(), &[T0(ts(1)), T0(ts(2)), T0(ts(3))]);
        assert_eq!(index.max_conflicting(&Keys::single("b")), ts(3));
        assert_eq!(index.max_conflicting(&Keys::single("a")), ts(5));
        assert_eq!(index.max_conflicting(&Keys::single("c")), ts(3));
        // Applied everywhere: no longer a dep, still evidence.
        index.stabilise(T0(ts(1)), &Keys::single("a"), None);
        let deps = index.deps(&Keys::single("a"), ts(4), T0(ts(4)));
        assert_eq!(deps.as_slice(), &[T0(ts(3))]);
        let evidence = index.conflicting(&Keys::single("a"), T0(ts(4)));
        assert_eq!(evidence, vec![T0(ts(1)), T0(ts(3)), T0(ts(5))]);
    }

    #[test]
    fn removed_transactions_leave_their_maximum_behind() {
        let mut index = ConflictIndex::default();
        index.insert(T0(ts(7)), &Keys::single("a"));
        index.witness(&Keys::single("a"), ts(9));
        index.stabilise(T0(ts(7)), &Keys::single("a"), None);
        index.remove(T0(ts(7)), &Keys::single("a"));
        assert_eq!((index.len(), index.key_entries()), (0, 0));
        assert_eq!(index.max_conflicting(&Keys::single("a")), ts(9));
        assert!(index
            .deps(&Keys::single("a"), ts(10), T0(ts(10)))
            .is_empty());
    }

    /// What a test can observe of an index: deps, evidence and maxima per key.
    fn observe(index: &ConflictIndex) -> Vec<(Vec<T0>, Vec<T0>, Timestamp)> {
        let mut queries: Vec<Keys> = ["a", "b", "c"].into_iter().map(Keys::single).collect();
        queries.push(Keys::All);
        let mut seen: Vec<_> = queries
            .iter()
            .map(|keys| {
                let deps = index.deps(keys, ts(1_000), T0(ts(1_000)));
                let evidence = index.conflicting(keys, T0(ts(1_000)));
                (
                    deps.as_slice().to_vec(),
                    evidence,
                    index.max_conflicting(keys),
                )
            })
            .collect();
        seen.push((
            Vec::new(),
            Vec::new(),
            Timestamp::new(index.len() as u64, 0, 0),
        ));
        seen.push((
            Vec::new(),
            Vec::new(),
            Timestamp::new(index.key_entries() as u64, 0, 0),
        ));
        seen
    }

    fn keys_of(choice: u8) -> Keys {
        match choice % 5 {
            0 => Keys::All,
            1 => Keys::single("a"),
            2 => Keys::single("b"),
            3 => Keys::set(["a", "c"]),
            _ => Keys::set(["b", "c"]),
        }
    }

    proptest! {
        /// Removing a set of transactions at once leaves the index exactly as removing them
        /// one by one does, whatever their keys, their order, and which were settled or
        /// stable.
        #[test]
        fn remove_all_is_remove_one_by_one(
            txs in proptest::collection::vec((0u8..5, 0u8..3, any::<bool>()), 0..40),
            unindexed in proptest::collection::vec(0usize..40, 0..4),
        ) {
            let mut batch = ConflictIndex::default();
            let mut single = ConflictIndex::default();
            let txs: Vec<(T0, Keys, u8, bool)> = txs
                .into_iter()
                .enumerate()
                .map(|(i, (keys, state, gone))| (T0(ts(i as u64 + 1)), keys_of(keys), state, gone))
                .collect();
            for index in [&mut batch, &mut single] {
                for (i, (t0, keys, state, _)) in txs.iter().enumerate() {
                    // Some are only witnessed (their removal must change nothing).
                    if unindexed.contains(&i) {
                        index.witness(keys, t0.0);
                        continue;
                    }
                    index.insert(*t0, keys);
                    index.witness(keys, t0.0);
                    // 1: settled (committed a little later, out of `t0` order); 2: stable,
                    // every other one after being settled.
                    if *state >= 1 {
                        index.settle(*t0, keys, ts(t0.0.time + 2 + t0.0.time % 3));
                    }
                    if *state == 2 {
                        index.stabilise(*t0, keys, None);
                    }
                }
            }
            // Newest first: the batch must not depend on the order it is given in.
            let removed: Vec<(T0, &Keys)> = txs
                .iter()
                .rev()
                .filter(|(_, _, _, gone)| *gone)
                .map(|(t0, keys, _, _)| (*t0, keys))
                .collect();
            batch.remove_all(&removed);
            for (t0, keys) in &removed {
                single.remove(*t0, keys);
            }
            prop_assert_eq!(observe(&batch), observe(&single));
        }
    }
}
