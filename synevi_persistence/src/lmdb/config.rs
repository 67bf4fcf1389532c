//! [`LmdbConfig`]: how large the LMDB memory map starts, how far it may grow, and by how much.

use std::time::Duration;

use synevi_types::SyneviError;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// The smallest map the store accepts. LMDB needs a few pages for its two meta pages, the
/// table of named databases and one root page per table; below this even an empty store
/// would not fit.
pub const MAP_SIZE_MIN: usize = 256 * KIB;

/// The size of an LMDB store's memory map and how it grows.
///
/// LMDB maps the whole database file into memory and refuses writes past the map's size
/// (`MDB_MAP_FULL`). The map reserves address space, not disk or memory: the file grows only
/// with the data written, so a generous map costs nothing on a 64-bit machine. When a commit
/// does not fit, the store grows the map by [`LmdbConfig::map_size_growth`] (or by more, if the
/// batch needs it), never past [`LmdbConfig::map_size_max`], and retries the commit once.
///
/// ```
/// use synevi_persistence::LmdbConfig;
///
/// let config = LmdbConfig::default()
///     .map_size_initial(64 << 20)
///     .map_size_max(4 << 30)
///     .map_size_growth(256 << 20);
/// assert_eq!(config.map_size_max_bytes(), 4 << 30);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmdbConfig {
    map_size_initial: usize,
    map_size_max: usize,
    map_size_growth: usize,
    commit_log: bool,
    checkpoint_interval: Duration,
}

/// How often, at most, a store with the commit log on applies the log's batches to LMDB.
const CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

impl Default for LmdbConfig {
    /// Starts at 1 GiB and grows by 1 GiB up to 1 TiB (on 32-bit targets: 256 MiB, by 256 MiB,
    /// up to 1 GiB, because the map must fit in the address space).
    fn default() -> Self {
        if usize::BITS >= 64 {
            LmdbConfig {
                map_size_initial: GIB,
                map_size_max: GIB.saturating_mul(1024),
                map_size_growth: GIB,
                commit_log: true,
                checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            }
        } else {
            LmdbConfig {
                map_size_initial: 256 * MIB,
                map_size_max: GIB,
                map_size_growth: 256 * MIB,
                commit_log: true,
                checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            }
        }
    }
}

impl LmdbConfig {
    /// Sets the map size a store starts with, in bytes (rounded up to the page size). On
    /// opening, the map is also made at least one growth step larger than the data file
    /// (never past the maximum), so a store that grew does not find its map full on the
    /// first commit after a restart.
    pub fn map_size_initial(mut self, bytes: usize) -> Self {
        self.map_size_initial = bytes;
        self
    }

    /// Sets the largest map the store grows to, in bytes (rounded down to the page size).
    /// A commit that does not fit even then fails with [`SyneviError::StoreFull`].
    pub fn map_size_max(mut self, bytes: usize) -> Self {
        self.map_size_max = bytes;
        self
    }

    /// Sets how many bytes the map grows by, at least, each time a commit finds it full.
    pub fn map_size_growth(mut self, bytes: usize) -> Self {
        self.map_size_growth = bytes;
        self
    }

    /// Turns the commit log on (the default) or off. On, a commit is one record appended to
    /// the log and flushed once; LMDB gets the batches of many commits in one synced write
    /// transaction later (see [`crate::LmdbStore`]). Off, each commit is a synced LMDB write
    /// transaction, which flushes twice. Either way a commit is durable when it returns; a
    /// store opened with the log off first applies what a log left in its directory holds.
    pub fn commit_log(mut self, on: bool) -> Self {
        self.commit_log = on;
        self
    }

    /// Sets how long, at most, batches gather in one of the commit log's two files before
    /// the store's checkpoint thread applies them to LMDB (100 ms by default). Longer puts
    /// more batches into each LMDB write transaction and makes the log's files larger (and
    /// the batches they hold, kept in memory until their checkpoint); a store also
    /// checkpoints when a file fills, before it is read, and when it is closed.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Whether the commit log is on.
    pub fn commit_log_on(&self) -> bool {
        self.commit_log
    }

    /// The configured checkpoint interval.
    pub fn checkpoint_interval_duration(&self) -> Duration {
        self.checkpoint_interval
    }

    /// The configured initial map size in bytes.
    pub fn map_size_initial_bytes(&self) -> usize {
        self.map_size_initial
    }

    /// The configured maximum map size in bytes.
    pub fn map_size_max_bytes(&self) -> usize {
        self.map_size_max
    }

    /// The configured growth step in bytes.
    pub fn map_size_growth_bytes(&self) -> usize {
        self.map_size_growth
    }

    /// Checks the sizes and aligns them to the OS page size, as LMDB requires.
    pub(crate) fn validated(&self) -> Result<Validated, SyneviError> {
        let page = page_size::get();
        let initial = round_up(self.map_size_initial, page).ok_or_else(|| {
            SyneviError::InvalidConfig(format!(
                "LMDB initial map size of {} bytes overflows when rounded up to the page size",
                self.map_size_initial
            ))
        })?;
        let max = round_down(self.map_size_max, page);
        if initial < MAP_SIZE_MIN {
            return Err(SyneviError::InvalidConfig(format!(
                "LMDB initial map size of {} bytes is below the minimum of {MAP_SIZE_MIN} bytes",
                self.map_size_initial
            )));
        }
        if max < initial {
            return Err(SyneviError::InvalidConfig(format!(
                "LMDB maximum map size of {} bytes is below the initial map size of {} bytes",
                self.map_size_max, self.map_size_initial
            )));
        }
        Ok(Validated {
            page,
            initial,
            max,
            growth: round_up(self.map_size_growth.max(page), page).unwrap_or(max),
            commit_log: self.commit_log,
            checkpoint_interval: self.checkpoint_interval,
        })
    }
}

/// A checked [`LmdbConfig`]: every size a multiple of `page`, `MAP_SIZE_MIN <= initial <= max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validated {
    pub(crate) page: usize,
    pub(crate) initial: usize,
    pub(crate) max: usize,
    pub(crate) growth: usize,
    pub(crate) commit_log: bool,
    pub(crate) checkpoint_interval: Duration,
}

impl Validated {
    /// The map size to grow to from `current` when a batch needing about `needed` more bytes
    /// did not fit, or `None` when the map is at its maximum already.
    pub(crate) fn grown(&self, current: usize, needed: usize) -> Option<usize> {
        if current >= self.max {
            return None;
        }
        let step = self.growth.max(needed);
        let target = current.saturating_add(step).min(self.max);
        // `max` is page-aligned, so rounding up a target below it cannot pass it.
        let target = round_up(target, self.page)
            .unwrap_or(self.max)
            .min(self.max);
        debug_assert!(target > current, "growing must enlarge the map");
        debug_assert!(
            target % self.page == 0,
            "LMDB requires page-aligned map sizes"
        );
        Some(target)
    }
}

fn round_up(bytes: usize, page: usize) -> Option<usize> {
    bytes.checked_next_multiple_of(page)
}

fn round_down(bytes: usize, page: usize) -> usize {
    bytes - bytes % page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_page_aligned_and_ordered() {
        let page = page_size::get();
        let config = LmdbConfig::default()
            .map_size_initial(MAP_SIZE_MIN + 1)
            .map_size_max(MAP_SIZE_MIN * 4 + 1)
            .map_size_growth(1);
        let valid = config.validated().expect("valid");
        assert_eq!(valid.initial % page, 0);
        assert!(valid.initial > MAP_SIZE_MIN);
        assert_eq!(valid.max, MAP_SIZE_MIN * 4);
        assert_eq!(valid.growth, page);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let too_small = LmdbConfig::default().map_size_initial(4096);
        assert!(matches!(
            too_small.validated(),
            Err(SyneviError::InvalidConfig(_))
        ));
        let inverted = LmdbConfig::default()
            .map_size_initial(MAP_SIZE_MIN * 2)
            .map_size_max(MAP_SIZE_MIN);
        assert!(matches!(
            inverted.validated(),
            Err(SyneviError::InvalidConfig(_))
        ));
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        let valid = LmdbConfig::default()
            .map_size_initial(MAP_SIZE_MIN)
            .map_size_max(MAP_SIZE_MIN * 3)
            .map_size_growth(MAP_SIZE_MIN)
            .validated()
            .expect("valid");
        assert_eq!(valid.grown(valid.initial, 0), Some(MAP_SIZE_MIN * 2));
        assert_eq!(
            valid.grown(MAP_SIZE_MIN * 2, MAP_SIZE_MIN * 10),
            Some(MAP_SIZE_MIN * 3)
        );
        assert_eq!(valid.grown(MAP_SIZE_MIN * 3, 1), None);
    }
}
