//! Ballots order the coordinators of one transaction.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::Serial;

/// Orders competing coordinators of one transaction, as in Paxos.
///
/// The original coordinator works at [`Ballot::ZERO`]. A recovery coordinator picks a ballot
/// above every ballot it has seen for the transaction; a replica that promised a ballot
/// ignores messages with lower ones. Ballots of different nodes never compare equal because
/// the serial is part of them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Ballot {
    /// Recovery round; 0 for the original coordinator.
    pub round: u32,
    /// Serial of the coordinator that owns the ballot.
    pub serial: Serial,
}

impl Ballot {
    /// The original coordinator's ballot.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        serial: 0,
    };

    /// The smallest ballot owned by `serial` that is strictly above `self`.
    pub fn successor(self, serial: Serial) -> Ballot {
        let next = Ballot {
            round: self.round.saturating_add(1),
            serial,
        };
        debug_assert!(next > self || self.round == u32::MAX);
        next
    }

    /// Packs the ballot into 64 bits, preserving the order.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.round) << 16) | u64::from(self.serial)
    }

    /// Inverse of [`Ballot::to_u64`]; bits above the 48 used are rejected.
    pub fn from_u64(packed: u64) -> Option<Ballot> {
        if packed >> 48 != 0 {
            return None;
        }
        Some(Ballot {
            round: (packed >> 16) as u32,
            serial: (packed & 0xffff) as u16,
        })
    }
}

impl fmt::Debug for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}@{}", self.round, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packing_preserves_value_and_order(a in any::<(u32, u16)>(), b in any::<(u32, u16)>()) {
            let a = Ballot { round: a.0, serial: a.1 };
            let b = Ballot { round: b.0, serial: b.1 };
            prop_assert_eq!(Ballot::from_u64(a.to_u64()), Some(a));
            prop_assert_eq!(a.cmp(&b), a.to_u64().cmp(&b.to_u64()));
        }
    }
}
