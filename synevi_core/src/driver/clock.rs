//! The driver's clock: the only place a real clock is read.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::effects::Now;

/// Reads wall and monotonic time for the core.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverClock {
    origin: Instant,
}

impl DriverClock {
    pub fn new() -> Self {
        DriverClock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        Now {
            wall_ms,
            monotonic_ms: self.origin.elapsed().as_millis() as u64,
        }
    }

    /// The instant a monotonic deadline (in the core's milliseconds) falls on.
    pub fn instant_of(&self, monotonic_ms: u64) -> Instant {
        self.origin + Duration::from_millis(monotonic_ms)
    }
}
