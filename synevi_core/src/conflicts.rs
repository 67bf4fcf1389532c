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

use rustc_hash::FxHashMap;
use synevi_types::{Deps, Key, Keys, Timestamp, T0};

/// Active and stable transactions of one index entry, each a sorted vector: transactions
/// mostly arrive in `t0` order (appended at the end), and the deps below a bound are then one
/// contiguous slice.
#[derive(Debug, Default)]
struct Entry {
    active: Vec<T0>,
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
        self.active.is_empty() && self.stable.is_empty()
    }

    fn insert(&mut self, t0: T0) -> bool {
        sorted_insert(&mut self.active, t0)
    }

    fn remove(&mut self, t0: &T0) -> bool {
        sorted_remove(&mut self.active, t0) | sorted_remove(&mut self.stable, t0)
    }

    fn contains(&self, t0: &T0) -> bool {
        self.active.binary_search(t0).is_ok() || self.stable.binary_search(t0).is_ok()
    }

    /// Removes every element of the sorted `gone`.
    fn remove_all(&mut self, gone: &[T0]) {
        remove_sorted(&mut self.active, gone);
        remove_sorted(&mut self.stable, gone);
    }

    fn stabilise(&mut self, t0: T0) {
        if sorted_remove(&mut self.active, &t0) {
            sorted_insert(&mut self.stable, t0);
        }
    }

    /// The active transactions below `bound`: the deps this entry contributes.
    fn deps_below(&self, bound: T0) -> &[T0] {
        &self.active[..self.active.partition_point(|t0| *t0 < bound)]
    }

    fn all(&self) -> impl Iterator<Item = T0> + '_ {
        self.active.iter().chain(self.stable.iter()).copied()
    }

    fn len(&self) -> usize {
        self.active.len() + self.stable.len()
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

    /// Every member applied the transaction: leave it out of deps from now on.
    pub fn stabilise(&mut self, t0: T0, keys: &Keys) {
        self.every.stabilise(t0);
        match keys {
            Keys::All => self.all_keys.stabilise(t0),
            Keys::Set(keys) => {
                for key in keys {
                    if let Some(entry) = self.by_key.get_mut(key) {
                        entry.members.stabilise(t0);
                    }
                }
            }
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

    /// The active transactions conflicting with `keys` whose `t0` is below `bound`, `except`
    /// itself: the deps.
    pub fn deps(&self, keys: &Keys, bound: Timestamp, except: T0) -> Deps {
        let bound = T0(bound);
        let mut slices: Vec<&[T0]> = Vec::new();
        match keys {
            Keys::All => slices.push(self.every.deps_below(bound)),
            Keys::Set(keys) => {
                slices.push(self.all_keys.deps_below(bound));
                for key in keys {
                    if let Some(entry) = self.by_key.get(key) {
                        slices.push(entry.members.deps_below(bound));
                    }
                }
            }
        }
        slices.retain(|slice| !slice.is_empty());
        let mut deps: Vec<T0> = match slices.as_slice() {
            [] => return Deps::new(),
            // One sorted, duplicate-free slice (one key, or everything): take it as it is.
            [only] => only.to_vec(),
            _ => {
                let mut all: Vec<T0> = slices.concat();
                all.sort_unstable();
                all.dedup();
                all
            }
        };
        if let Ok(at) = deps.binary_search(&except) {
            deps.remove(at);
        }
        Deps::from_sorted(deps)
    }

    /// Every indexed transaction conflicting with `keys`, active or stable, `except` itself,
    /// ascending: what recovery evidence is computed from.
    pub fn conflicting(&self, keys: &Keys, except: T0) -> Vec<T0> {
        let mut found: Vec<T0> = match keys {
            Keys::All => self.every.all().collect(),
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
        index.stabilise(T0(ts(1)), &Keys::single("a"));
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
        index.stabilise(T0(ts(7)), &Keys::single("a"));
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
        /// one by one does, whatever their keys, their order, and which were stable.
        #[test]
        fn remove_all_is_remove_one_by_one(
            txs in proptest::collection::vec((0u8..5, any::<bool>(), any::<bool>()), 0..40),
            unindexed in proptest::collection::vec(0usize..40, 0..4),
        ) {
            let mut batch = ConflictIndex::default();
            let mut single = ConflictIndex::default();
            let txs: Vec<(T0, Keys, bool, bool)> = txs
                .into_iter()
                .enumerate()
                .map(|(i, (keys, stable, gone))| (T0(ts(i as u64 + 1)), keys_of(keys), stable, gone))
                .collect();
            for index in [&mut batch, &mut single] {
                for (i, (t0, keys, stable, _)) in txs.iter().enumerate() {
                    // Some are only witnessed (their removal must change nothing).
                    if unindexed.contains(&i) {
                        index.witness(keys, t0.0);
                        continue;
                    }
                    index.insert(*t0, keys);
                    index.witness(keys, t0.0);
                    if *stable {
                        index.stabilise(*t0, keys);
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
