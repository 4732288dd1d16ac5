//! The injected wall clock. Production uses [`SystemClock`]; tests drive
//! their own so that expiry, retry and report logic needs no real waiting.

use std::time::SystemTime;

/// A source of wall-clock time. Timers stay on tokio (which tests can pause);
/// this is for timestamps that are stored or compared across restarts.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch (0 for times before it).
    fn unix_secs(&self) -> u64 {
        crate::date::unix_secs(self.now())
    }

    /// Milliseconds since the Unix epoch (0 for times before it).
    fn unix_millis(&self) -> u64 {
        crate::date::unix_millis(self.now())
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
