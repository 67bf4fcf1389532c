//! [`SimRng`]: the simulator's seeded random numbers.

/// A small, fast, seeded generator (splitmix64). Same seed, same numbers, on every machine.
///
/// The simulator forks one generator per concern (network, clocks, faults, client load), so
/// that changing how one concern draws numbers does not reshuffle the others.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng {
            state: seed ^ 0x6a09_e667_f3bc_c909,
        }
    }

    /// An independent generator for one concern, derived from this one's seed and `label`.
    pub fn fork(&self, label: u64) -> SimRng {
        let mut fork = SimRng {
            state: self.state ^ label.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        fork.next_u64();
        fork
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1_000) < u64::from(per_mille)
    }

    /// One of `items`, uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }
}
