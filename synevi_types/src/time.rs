//! Timestamps and the hybrid logical clock that issues them.
//!
//! Every transaction carries two timestamps: `t0`, chosen by its coordinator when the
//! transaction is submitted (it doubles as the transaction's id), and `t`, the execution
//! timestamp it commits with (`t >= t0`). Both are [`Timestamp`]s: a hybrid-logical-clock
//! reading `(time, counter)` followed by the serial of the node that produced it, which makes
//! them unique across the cluster and totally ordered.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::Serial;

/// A point in the cluster-wide total order: `(time, counter, serial)`, compared in that order.
///
/// `time` is a hybrid-logical-clock reading in milliseconds, `counter` orders readings within
/// one millisecond, `serial` is the node that produced the timestamp and breaks the remaining
/// ties, so two nodes never produce the same timestamp.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Hybrid-logical-clock milliseconds (wall clock, pushed forward by what the node saw).
    pub time: u64,
    /// Orders timestamps issued within the same `time`.
    pub counter: u32,
    /// Serial of the node that issued the timestamp.
    pub serial: Serial,
}

impl Timestamp {
    /// The smallest timestamp; below every timestamp a clock issues.
    pub const ZERO: Timestamp = Timestamp {
        time: 0,
        counter: 0,
        serial: 0,
    };

    /// Creates a timestamp from its three parts.
    pub const fn new(time: u64, counter: u32, serial: Serial) -> Self {
        Timestamp {
            time,
            counter,
            serial,
        }
    }

    /// The smallest timestamp issued by `serial` that is strictly above `self`.
    ///
    /// This is the "max witnessed + 1" of the protocol: a replica that cannot accept a
    /// transaction at its `t0` proposes `successor(max witnessed, own serial)`.
    pub fn successor(self, serial: Serial) -> Timestamp {
        let next = match self.counter.checked_add(1) {
            Some(counter) => Timestamp::new(self.time, counter, serial),
            None => Timestamp::new(self.time + 1, 0, serial),
        };
        debug_assert!(next > self, "successor must be strictly greater");
        next
    }

    /// Packs the timestamp into 128 bits; the packing preserves the order.
    pub fn to_u128(self) -> u128 {
        (u128::from(self.time) << 48) | (u128::from(self.counter) << 16) | u128::from(self.serial)
    }

    /// Inverse of [`Timestamp::to_u128`]. Bits above the 112 used are rejected.
    pub fn from_u128(packed: u128) -> Option<Timestamp> {
        if packed >> 112 != 0 {
            return None;
        }
        Some(Timestamp::new(
            (packed >> 48) as u64,
            ((packed >> 16) & 0xffff_ffff) as u32,
            (packed & 0xffff) as u16,
        ))
    }

    /// The big-endian bytes of [`Timestamp::to_u128`]: sorting the bytes sorts the timestamps,
    /// which is what ordered key-value stores need.
    pub fn to_be_bytes(self) -> [u8; 16] {
        self.to_u128().to_be_bytes()
    }

    /// Inverse of [`Timestamp::to_be_bytes`].
    pub fn from_be_bytes(bytes: [u8; 16]) -> Option<Timestamp> {
        Timestamp::from_u128(u128::from_be_bytes(bytes))
    }
}

/// One word per timestamp: nodes look timestamps up in hash maps for every dependency of
/// every transaction, so hashing three fields separately is measurable. Equal timestamps
/// hash equally; the fold keeps every field's bits in play.
impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let low = (u64::from(self.counter) << 16) | u64::from(self.serial);
        state.write_u64(self.time.rotate_left(29) ^ low);
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.time, self.counter, self.serial)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

macro_rules! timestamp_newtype {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        pub struct $name(pub Timestamp);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({:?})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<Timestamp> for $name {
            fn from(timestamp: Timestamp) -> Self {
                $name(timestamp)
            }
        }
    };
}

timestamp_newtype!(
    /// The timestamp a coordinator gives a transaction when it is submitted; unique, so it is
    /// also the transaction's id everywhere in the protocol.
    T0,
    "t0"
);

timestamp_newtype!(
    /// The execution timestamp a transaction commits with. `t >= t0`; `t == t0` on the fast
    /// path.
    T,
    "t"
);

impl T0 {
    /// The execution timestamp equal to this `t0` (the fast path's outcome).
    pub fn as_t(self) -> T {
        T(self.0)
    }
}

impl PartialEq<T0> for T {
    fn eq(&self, other: &T0) -> bool {
        self.0 == other.0
    }
}

impl PartialOrd<T0> for T {
    fn partial_cmp(&self, other: &T0) -> Option<std::cmp::Ordering> {
        Some(self.0.cmp(&other.0))
    }
}

/// A hybrid logical clock: issues timestamps that are unique for its node, strictly
/// increasing even when the wall clock steps back, and above every timestamp it has witnessed.
///
/// The clock reads no time itself: callers pass the wall clock in, which keeps the protocol
/// deterministic under simulation.
#[derive(Clone, Debug)]
pub struct Hlc {
    serial: Serial,
    /// Highest `(time, counter)` issued or witnessed; the next issue is strictly above it.
    high: (u64, u32),
}

impl Hlc {
    /// A clock for node `serial` that has seen nothing yet.
    pub fn new(serial: Serial) -> Self {
        Hlc {
            serial,
            high: (0, 0),
        }
    }

    /// A clock that will issue only timestamps strictly above `floor` (used after a restart,
    /// with the highest timestamp the node had persisted).
    pub fn with_floor(serial: Serial, floor: Timestamp) -> Self {
        let mut clock = Hlc::new(serial);
        clock.witness(floor);
        clock
    }

    /// The serial this clock stamps into its timestamps.
    pub fn serial(&self) -> Serial {
        self.serial
    }

    /// Issues a new timestamp, given the current wall clock in milliseconds.
    pub fn issue(&mut self, wall_ms: u64) -> Timestamp {
        let next = if wall_ms > self.high.0 {
            Timestamp::new(wall_ms, 0, self.serial)
        } else {
            Timestamp::new(self.high.0, self.high.1, self.serial).successor(self.serial)
        };
        debug_assert!(
            (next.time, next.counter) > self.high,
            "clock went backwards"
        );
        self.high = (next.time, next.counter);
        next
    }

    /// Records a timestamp seen from elsewhere: every later issue is above it.
    pub fn witness(&mut self, seen: Timestamp) {
        if (seen.time, seen.counter) > self.high {
            self.high = (seen.time, seen.counter);
        }
    }

    /// The highest timestamp issued or witnessed so far, stamped with this clock's serial.
    /// Everything the clock issues later is strictly above the value returned here.
    pub fn high(&self) -> Timestamp {
        Timestamp::new(self.high.0, self.high.1, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (
            any::<u64>().prop_map(|t| t >> 16),
            any::<u32>(),
            any::<u16>(),
        )
            .prop_map(|(time, counter, serial)| Timestamp::new(time, counter, serial))
    }

    #[test]
    fn successor_rolls_the_counter_over_into_time() {
        let last = Timestamp::new(7, u32::MAX, 3);
        assert_eq!(last.successor(1), Timestamp::new(8, 0, 1));
    }

    #[test]
    fn clock_issues_above_the_wall_clock_going_back() {
        let mut clock = Hlc::new(2);
        let first = clock.issue(1_000);
        let second = clock.issue(10); // the wall clock stepped back
        let third = clock.issue(1_000);
        assert!(first < second && second < third);
        assert_eq!(second.time, 1_000);
    }

    proptest! {
        #[test]
        fn packing_preserves_value_and_order(a in timestamp(), b in timestamp()) {
            prop_assert_eq!(Timestamp::from_u128(a.to_u128()), Some(a));
            prop_assert_eq!(Timestamp::from_be_bytes(a.to_be_bytes()), Some(a));
            prop_assert_eq!(a.cmp(&b), a.to_u128().cmp(&b.to_u128()));
            prop_assert_eq!(a.cmp(&b), a.to_be_bytes().cmp(&b.to_be_bytes()));
        }

        #[test]
        fn successor_is_strictly_greater(a in timestamp(), serial in any::<u16>()) {
            prop_assert!(a.successor(serial) > a);
        }

        /// Whatever the wall clock does and whatever the clock witnesses, every issued
        /// timestamp is above the previous one and above everything witnessed before it.
        #[test]
        fn clock_is_monotonic_and_above_witnessed(
            serial in any::<u16>(),
            steps in proptest::collection::vec(
                prop_oneof![
                    (0u64..5_000).prop_map(Ok),
                    timestamp().prop_map(|t| Err(Timestamp::new(t.time % 6_000, t.counter, t.serial))),
                ],
                1..200,
            ),
        ) {
            let mut clock = Hlc::new(serial);
            let mut last_issued: Option<Timestamp> = None;
            let mut witnessed_max = Timestamp::ZERO;
            for step in steps {
                match step {
                    Ok(wall_ms) => {
                        let issued = clock.issue(wall_ms);
                        prop_assert_eq!(issued.serial, serial);
                        prop_assert!(issued > witnessed_max);
                        if let Some(previous) = last_issued {
                            prop_assert!(issued > previous);
                        }
                        prop_assert!(issued.time >= wall_ms);
                        last_issued = Some(issued);
                    }
                    Err(seen) => {
                        clock.witness(seen);
                        witnessed_max = witnessed_max.max(seen);
                    }
                }
            }
        }

        /// Two clocks with different serials never issue the same timestamp.
        #[test]
        fn clocks_of_different_nodes_never_collide(
            walls in proptest::collection::vec(0u64..50, 1..100),
        ) {
            let mut a = Hlc::new(1);
            let mut b = Hlc::new(2);
            let mut seen = std::collections::BTreeSet::new();
            for (i, wall) in walls.into_iter().enumerate() {
                let issued = if i % 2 == 0 { a.issue(wall) } else { b.issue(wall) };
                prop_assert!(seen.insert(issued));
                // Cross-witnessing as replicas do keeps them apart as well.
                if i % 3 == 0 { a.witness(issued); b.witness(issued); }
            }
        }
    }
}
