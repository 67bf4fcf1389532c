//! What a transaction touches ([`Keys`]) and what it must wait for ([`Deps`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

use crate::{decode_t0s, encode_t0s, T0};

/// One key a transaction reads or writes; opaque bytes chosen by the application.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key(pub Bytes);

impl Key {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write!(
                f,
                "0x{}",
                self.0
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        }
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Key(Bytes::copy_from_slice(key.as_bytes()))
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Key(Bytes::from(key.into_bytes()))
    }
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Self {
        Key(Bytes::copy_from_slice(key))
    }
}

impl From<Vec<u8>> for Key {
    fn from(key: Vec<u8>) -> Self {
        Key(Bytes::from(key))
    }
}

impl From<Bytes> for Key {
    fn from(key: Bytes) -> Self {
        Key(key)
    }
}

/// The keys a transaction touches. Two transactions conflict exactly when their key sets
/// intersect; [`Keys::All`] intersects everything, including another `All`.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Keys {
    /// Conflicts with every transaction (the default of [`crate::Transaction::keys`]).
    #[default]
    All,
    /// Conflicts with the transactions that touch at least one of these keys. An empty set
    /// conflicts with nothing.
    Set(KeySet),
}

impl Keys {
    /// A key set of the given keys (in any order, duplicates allowed).
    pub fn set<K: Into<Key>>(keys: impl IntoIterator<Item = K>) -> Keys {
        Keys::Set(keys.into_iter().map(Into::into).collect())
    }

    /// A key set of one key.
    pub fn single(key: impl Into<Key>) -> Keys {
        Keys::Set(KeySet::from_sorted(Arc::new([key.into()])))
    }

    /// The empty key set: conflicts with nothing.
    pub fn none() -> Keys {
        Keys::Set(KeySet::default())
    }

    /// Whether a transaction touching `self` conflicts with one touching `other`.
    pub fn conflicts_with(&self, other: &Keys) -> bool {
        match (self, other) {
            (Keys::All, _) | (_, Keys::All) => true,
            (Keys::Set(a), Keys::Set(b)) => {
                let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                small.iter().any(|key| large.contains(key))
            }
        }
    }

    /// Whether this is [`Keys::All`].
    pub fn is_all(&self) -> bool {
        matches!(self, Keys::All)
    }
}

/// A set of keys: sorted, without duplicates, shared. A node clones a transaction's keys
/// into its records, its conflict index and its messages several times per transaction, so
/// a clone is a reference count, and the set is one small allocation (most transactions
/// touch a key or a few), not a tree: a tree per clone, allocated on one thread and freed on
/// another, cost a quarter of the CPU per transaction with disjoint keys.
///
/// Dereferences to the sorted slice of its keys; [`KeySet::contains`] searches it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct KeySet(Arc<[Key]>);

impl KeySet {
    /// Every set is built here, from keys already sorted and without duplicates:
    /// [`KeySet::contains`] searches by bisection and equal sets must compare equal.
    fn from_sorted(keys: Arc<[Key]>) -> KeySet {
        debug_assert!(
            keys.windows(2).all(|pair| pair[0] < pair[1]),
            "key set not sorted or with duplicates"
        );
        KeySet(keys)
    }

    /// Whether `key` is in the set (a binary search).
    pub fn contains(&self, key: &Key) -> bool {
        self.0.binary_search(key).is_ok()
    }
}

impl std::ops::Deref for KeySet {
    type Target = [Key];

    fn deref(&self) -> &[Key] {
        &self.0
    }
}

impl FromIterator<Key> for KeySet {
    fn from_iter<I: IntoIterator<Item = Key>>(keys: I) -> Self {
        let mut keys: Vec<Key> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        KeySet::from_sorted(keys.into())
    }
}

impl<'a> IntoIterator for &'a KeySet {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A sequence of keys, as a `BTreeSet<Key>` was before (stored records keep their format).
impl Serialize for KeySet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Any sequence of keys: sorted and deduplicated on the way in, as a set would be.
impl<'de> Deserialize<'de> for KeySet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Key>::deserialize(deserializer)?.into_iter().collect())
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keys::All => write!(f, "All"),
            Keys::Set(keys) => fmt::Debug::fmt(keys, f),
        }
    }
}

/// The dependencies of a transaction: the `t0`s of the conflicting transactions it may have
/// to execute after. Kept sorted and free of duplicates; decoding refuses anything else.
///
/// Immutable and shared: a transaction's deps travel in several messages and records, and
/// cloning them costs a reference count, not a copy. An `Arc<Vec>` rather than an
/// `Arc<[T0]>`: building one from a list (decoding, merging) then moves the list instead of
/// copying it into a fresh allocation, which showed in profiles with hundreds of deps.
///
/// Serialised as bytes in the compact encoding of [`encode_t0s`] (about 3 bytes per
/// dependency): records hold hundreds of them under contention.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Deps(Arc<Vec<T0>>);

impl Serialize for Deps {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        encode_t0s(&self.0, &mut bytes);
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Deps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DepsVisitor;

        fn decode<E: serde::de::Error>(bytes: &[u8]) -> Result<Deps, E> {
            decode_t0s(bytes)
                .and_then(Deps::try_from)
                .map_err(|reason| E::custom(format!("deps {reason}")))
        }

        impl<'de> serde::de::Visitor<'de> for DepsVisitor {
            type Value = Deps;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a deps list as bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Deps, E> {
                decode(bytes)
            }

            /// Formats without a byte type (JSON) carry bytes as a sequence of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Deps, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                decode(&bytes)
            }
        }

        deserializer.deserialize_bytes(DepsVisitor)
    }
}

impl TryFrom<Vec<T0>> for Deps {
    type Error = String;

    /// Accepts only strictly ascending lists: what [`Deps`] always holds.
    fn try_from(t0s: Vec<T0>) -> Result<Self, Self::Error> {
        if t0s.windows(2).all(|pair| pair[0] < pair[1]) {
            Ok(Deps(t0s.into()))
        } else {
            Err("deps must be strictly ascending".to_string())
        }
    }
}

impl From<Deps> for Vec<T0> {
    fn from(deps: Deps) -> Self {
        Arc::try_unwrap(deps.0).unwrap_or_else(|shared| shared.to_vec())
    }
}

impl Deps {
    /// No dependencies.
    pub fn new() -> Deps {
        Deps::default()
    }

    /// Dependencies from a list that is already strictly ascending (an index slice, for
    /// example): no sorting, and the order is only checked in debug builds. Anything that
    /// comes from outside the process goes through `TryFrom<Vec<T0>>` instead, which checks.
    pub fn from_sorted(t0s: Vec<T0>) -> Deps {
        debug_assert!(
            t0s.windows(2).all(|pair| pair[0] < pair[1]),
            "Deps::from_sorted needs a strictly ascending list"
        );
        Deps(t0s.into())
    }

    /// Dependencies from any list of `t0`s (sorted and deduplicated here).
    pub fn from_unsorted(mut t0s: Vec<T0>) -> Deps {
        t0s.sort_unstable();
        t0s.dedup();
        Deps(t0s.into())
    }

    /// Adds every dependency of `other` to `self`.
    pub fn union_with(&mut self, other: &Deps) {
        if other.0.is_empty() || Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0 {
            // Replicas mostly answer with the same deps: nothing to merge.
            return;
        }
        if self.0.is_empty() {
            self.0 = Arc::clone(&other.0);
            return;
        }
        let (a, b) = (&self.0, &other.0);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => {
                    merged.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(b[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    merged.push(a[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        if j == b.len() && merged.len() == i {
            // `other` added nothing: keep sharing.
            return;
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.0 = merged.into();
    }

    /// The dependencies of `self` that `other` lacks. One pass over both sorted lists:
    /// `retain` visits `self` in ascending order, so a cursor into `other` only moves
    /// forward (a binary search per entry cost 9 % of all CPU with one hot key).
    pub fn without(&self, other: &Deps) -> Deps {
        let mut rest = self.clone();
        let mut others = other.0.iter().peekable();
        rest.retain(|t0| {
            while others.next_if(|o| *o < t0).is_some() {}
            others.peek() != Some(&t0)
        });
        rest
    }

    /// Whether `t0` is a dependency.
    pub fn contains(&self, t0: &T0) -> bool {
        self.0.binary_search(t0).is_ok()
    }

    /// The dependencies in ascending order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T0> + '_ {
        self.0.iter()
    }

    /// How many dependencies there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted `t0`s.
    pub fn as_slice(&self) -> &[T0] {
        &self.0
    }

    /// Keeps only the dependencies for which `keep` returns true; `keep` sees them in
    /// ascending order, once each.
    pub fn retain(&mut self, mut keep: impl FnMut(&T0) -> bool) {
        let kept: Vec<T0> = self.0.iter().copied().filter(|t0| keep(t0)).collect();
        if kept.len() != self.0.len() {
            self.0 = kept.into();
        }
    }
}

impl fmt::Debug for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter().map(|t0| t0.0)).finish()
    }
}

impl FromIterator<T0> for Deps {
    fn from_iter<I: IntoIterator<Item = T0>>(iter: I) -> Self {
        Deps::from_unsorted(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t0(n: u64) -> T0 {
        T0(Timestamp::new(n, 0, 1))
    }

    #[test]
    fn decoding_refuses_unsorted_deps() {
        assert!(Deps::try_from(vec![t0(1), t0(2)]).is_ok());
        assert!(Deps::try_from(vec![t0(2), t0(1)]).is_err());
        assert!(Deps::try_from(vec![t0(1), t0(1)]).is_err());
    }

    #[test]
    fn key_sets_are_sorted_without_duplicates() {
        let Keys::Set(set) = Keys::set(["c", "a", "b", "a"]) else {
            panic!("a set");
        };
        let keys: Vec<&[u8]> = set.iter().map(Key::as_bytes).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);
        assert!(set.contains(&Key::from("b")));
        assert!(!set.contains(&Key::from("d")));
        assert_eq!(Keys::set(["b", "a"]), Keys::set(["a", "b", "b"]));
        assert_eq!(format!("{:?}", Keys::set(["b", "a"])), r#"{"a", "b"}"#);
    }

    #[test]
    fn all_conflicts_with_everything_and_empty_with_nothing() {
        let empty = Keys::none();
        assert!(Keys::All.conflicts_with(&Keys::All));
        assert!(Keys::All.conflicts_with(&empty));
        assert!(!empty.conflicts_with(&Keys::single("a")));
        assert!(Keys::set(["a", "b"]).conflicts_with(&Keys::set(["b", "c"])));
        assert!(!Keys::set(["a", "b"]).conflicts_with(&Keys::set(["c"])));
    }

    proptest! {
        #[test]
        fn union_is_the_sorted_set_union(a in proptest::collection::vec(0u64..50, 0..30),
                                         b in proptest::collection::vec(0u64..50, 0..30)) {
            let mut left: Deps = a.iter().map(|&n| t0(n)).collect();
            let right: Deps = b.iter().map(|&n| t0(n)).collect();
            left.union_with(&right);
            let expected: Vec<T0> = a.iter().chain(b.iter()).map(|&n| t0(n))
                .collect::<BTreeSet<T0>>().into_iter().collect();
            prop_assert_eq!(left.as_slice(), expected.as_slice());
        }

        #[test]
        fn without_is_the_sorted_set_difference(a in proptest::collection::vec(0u64..50, 0..30),
                                                b in proptest::collection::vec(0u64..50, 0..30)) {
            let left: Deps = a.iter().map(|&n| t0(n)).collect();
            let right: Deps = b.iter().map(|&n| t0(n)).collect();
            let removed: BTreeSet<u64> = b.iter().copied().collect();
            let expected: Vec<T0> = a.iter().filter(|n| !removed.contains(n)).map(|&n| t0(n))
                .collect::<BTreeSet<T0>>().into_iter().collect();
            let rest = left.without(&right);
            prop_assert_eq!(rest.as_slice(), expected.as_slice());
        }
    }
}
