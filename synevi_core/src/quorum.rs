//! Who votes and how many votes each phase needs.
//!
//! With `n` voting members the cluster tolerates `f = (n - 1) / 2` failures.
//!
//! - Slow quorum (Accept, recovery): a majority, `n / 2 + 1`. Any two majorities intersect.
//! - Fast quorum (PreAccept answers with `t == t0`): `ceil((|E| + f + 1) / 2)` members of the
//!   fast-path electorate `E` (all voters by default), as in the Accord paper. With `E` = all:
//!   3 of 3, 4 of 5, 6 of 7.
//!
//! Why that size: a recovery coordinator hears from only `n - f` members. If the fast path
//! was taken, the members of the fast quorum it hears from must be enough to tell, and two
//! competing transactions must not both appear fast-path-committed. Both follow from
//! `|F| > (|E| + f) / 2`: any fast quorum and any recovery quorum share more than half of the
//! recovery quorum's electorate members (`|F| - f > (|E| - f) / 2`). A smaller electorate
//! (down to `n - f` members) shrinks the fast quorum to a simple majority, at the price that
//! one unavailable electorate member disables the fast path.

use std::collections::BTreeSet;

use synevi_types::{Serial, SyneviError};

/// The members of a cluster from one node's view, and the quorum sizes they imply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorums {
    voters: BTreeSet<Serial>,
    learners: BTreeSet<Serial>,
    electorate: Option<BTreeSet<Serial>>,
}

impl Quorums {
    /// A cluster of one voter, `own`.
    pub fn new(own: Serial) -> Self {
        Quorums {
            voters: BTreeSet::from([own]),
            learners: BTreeSet::new(),
            electorate: None,
        }
    }

    /// Adds a member. Voters take part in every phase; learners only receive commits and
    /// execute (they count for garbage collection, not for quorums).
    pub fn add(&mut self, serial: Serial, voter: bool) -> Result<(), SyneviError> {
        if self.voters.contains(&serial) || self.learners.contains(&serial) {
            return Err(SyneviError::InvalidConfig(format!(
                "member {serial} was already added"
            )));
        }
        if voter {
            self.voters.insert(serial);
        } else {
            self.learners.insert(serial);
        }
        Ok(())
    }

    /// Restricts the fast-path electorate; `None` means all voters.
    pub fn set_electorate(&mut self, electorate: Option<&[Serial]>) -> Result<(), SyneviError> {
        self.electorate = electorate.map(|members| members.iter().copied().collect());
        self.validate()
    }

    /// Checks that the electorate is made of voters and is large enough (`>= n - f`).
    pub fn validate(&self) -> Result<(), SyneviError> {
        if let Some(electorate) = &self.electorate {
            if let Some(stranger) = electorate.iter().find(|s| !self.voters.contains(s)) {
                return Err(SyneviError::InvalidConfig(format!(
                    "fast-path electorate member {stranger} is not a voting member"
                )));
            }
            let needed = self.voters.len() - self.failures_tolerated();
            if electorate.len() < needed {
                return Err(SyneviError::InvalidConfig(format!(
                    "fast-path electorate has {} members; with {} voters it needs at least {needed}",
                    electorate.len(),
                    self.voters.len()
                )));
            }
        }
        Ok(())
    }

    /// `f`: how many voters may fail with the cluster still making progress.
    pub fn failures_tolerated(&self) -> usize {
        (self.voters.len() - 1) / 2
    }

    /// Votes a slow-path phase needs: a majority of voters.
    pub fn slow_quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// How many voters must hold something for every majority of voters to include one of
    /// them: `voters - majority + 1`. Voters are only ever added, so a count of voters that
    /// reaches this number stays above what any future majority can miss.
    pub fn every_majority_meets(&self) -> usize {
        self.voters.len() - self.slow_quorum() + 1
    }

    /// `t == t0` answers from electorate members the fast path needs:
    /// `ceil((|E| + f + 1) / 2)`.
    pub fn fast_quorum(&self) -> usize {
        let electorate = self.electorate_size();
        let fast = (electorate + self.failures_tolerated() + 2) / 2;
        debug_assert!(fast >= self.slow_quorum().min(electorate));
        debug_assert!(fast <= electorate);
        fast
    }

    /// Whether a quorum may consist of one voter (this node's own vote alone decides): a
    /// cluster of one voter, or an electorate whose fast quorum is one.
    pub fn own_vote_may_decide(&self) -> bool {
        self.slow_quorum() < 2 || self.fast_quorum() < 2
    }

    /// How many members are in the fast-path electorate.
    pub fn electorate_size(&self) -> usize {
        self.electorate
            .as_ref()
            .map_or(self.voters.len(), BTreeSet::len)
    }

    /// Whether `serial`'s PreAccept answer counts towards the fast path.
    pub fn in_electorate(&self, serial: Serial) -> bool {
        match &self.electorate {
            Some(electorate) => electorate.contains(&serial),
            None => self.voters.contains(&serial),
        }
    }

    /// The voting members, ascending.
    pub fn voters(&self) -> impl Iterator<Item = Serial> + '_ {
        self.voters.iter().copied()
    }

    /// Every member, voters and learners, ascending within each.
    pub fn members(&self) -> impl Iterator<Item = Serial> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// How many members there are, voters and learners.
    pub fn member_count(&self) -> usize {
        self.voters.len() + self.learners.len()
    }

    /// Whether `serial` is a voter.
    pub fn is_voter(&self, serial: Serial) -> bool {
        self.voters.contains(&serial)
    }

    /// Whether `serial` is a member at all.
    pub fn is_member(&self, serial: Serial) -> bool {
        self.voters.contains(&serial) || self.learners.contains(&serial)
    }
}

/// A cluster of voters 1 to `n`, seen from voter 1 (for tests).
#[cfg(test)]
pub(crate) fn cluster(n: u16) -> Quorums {
    let mut quorums = Quorums::new(1);
    for serial in 2..=n {
        quorums.add(serial, true).expect("new member");
    }
    quorums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_voter_decides_alone() {
        assert!(cluster(1).own_vote_may_decide());
        for n in 2..=7 {
            assert!(!cluster(n).own_vote_may_decide(), "{n} voters");
        }
        // Learners do not vote: one voter and two learners still decide alone.
        let mut quorums = cluster(1);
        quorums.add(2, false).expect("learner");
        quorums.add(3, false).expect("learner");
        assert!(quorums.own_vote_may_decide());
    }

    #[test]
    fn sizes_match_the_paper() {
        let sizes: Vec<_> = (1..=7)
            .map(|n| {
                let q = cluster(n);
                (q.failures_tolerated(), q.slow_quorum(), q.fast_quorum())
            })
            .collect();
        assert_eq!(
            sizes,
            vec![
                (0, 1, 1),
                (0, 2, 2),
                (1, 2, 3),
                (1, 3, 3),
                (2, 3, 4),
                (2, 4, 5),
                (3, 4, 6)
            ]
        );
    }

    #[test]
    fn fast_and_recovery_quorums_overlap_in_more_than_half() {
        for n in 1..=9u16 {
            let q = cluster(n);
            let (f, e, fast) = (q.failures_tolerated(), q.electorate_size(), q.fast_quorum());
            // A recovery quorum misses at most f electorate members.
            assert!(2 * (fast - f) > e - f, "n={n}");
        }
    }

    #[test]
    fn reduced_electorate_shrinks_the_fast_quorum_to_a_majority() {
        let mut q = cluster(5);
        q.set_electorate(Some(&[1, 2, 3]))
            .expect("n - f = 3 members is enough");
        assert_eq!(q.fast_quorum(), 3);
        assert!(q.set_electorate(Some(&[1, 2])).is_err());
        assert!(q.set_electorate(Some(&[1, 2, 9])).is_err());
    }
}
