//! A circuit breaker for the token introspection endpoint. When the
//! endpoint keeps failing (transport errors, 5xx, 429, bodies that are not
//! an answer), asking it again for every AUTH attempt helps nobody: clients
//! get 454 either way, and a client that keeps sending tokens would turn
//! us into an amplifier against the identity provider exactly when it is
//! struggling. After `failures` consecutive endpoint failures the breaker
//! opens: attempts are answered 454 without a request for `open_for`; then
//! one request (the probe) goes through; its success closes the breaker,
//! its failure opens it again for another `open_for`.
//!
//! Time is a parameter (`now`, from the introspector's injected clock) so
//! tests drive it. A clock that goes backwards counts as the open time
//! having passed: a probe is let through rather than the breaker staying
//! open for as long as the clock jumped.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive endpoint failures that open the breaker; 0: never opens.
    pub failures: u32,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    /// 5 failures, 30 seconds.
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The breaker's state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go to the endpoint.
    Closed,
    /// Requests are refused without asking the endpoint.
    Open,
    /// The open time has passed and one probe request is (or may be) on its
    /// way; others are still refused.
    Probing,
}

impl BreakerState {
    /// `closed`, `open` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}

/// What [`Breaker::admit`] let through; hand it back to
/// [`Breaker::record`] with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "record the outcome of an admitted request"]
pub enum Admission {
    /// An ordinary request (the breaker is closed).
    Normal,
    /// The one probe after the open time.
    Probe,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed { failures: u32 },
    Open { since: SystemTime },
    Probing { since: SystemTime },
}

/// The circuit breaker. Share it with its introspector.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    opened: AtomicU64,
}

impl Breaker {
    /// A closed breaker with `settings`.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `since` lies at least the open time before `now` (or in
    /// the future: the clock went backwards).
    fn passed(&self, since: SystemTime, now: SystemTime) -> bool {
        now.duration_since(since)
            .map_or(true, |d| d >= self.settings.open_for)
    }

    /// May a request go to the endpoint at `now`? `None`: no, the breaker
    /// is open (answer 454 without asking). A probe in flight for longer
    /// than the open time is taken as lost and another is let through.
    pub fn admit(&self, now: SystemTime) -> Option<Admission> {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Some(Admission::Normal),
            Inner::Open { since } | Inner::Probing { since } if self.passed(since, now) => {
                *inner = Inner::Probing { since: now };
                Some(Admission::Probe)
            }
            Inner::Open { .. } | Inner::Probing { .. } => None,
        }
    }

    /// Records the outcome of an admitted request: `endpoint_ok` when the
    /// endpoint gave an answer (whatever it said about the token), false
    /// when it failed. True when this outcome opened the breaker.
    pub fn record(&self, admission: Admission, endpoint_ok: bool, now: SystemTime) -> bool {
        let mut inner = self.lock();
        let open = match (*inner, admission, endpoint_ok) {
            // Any answer shows the endpoint works again.
            (_, _, true) => {
                *inner = Inner::Closed { failures: 0 };
                false
            }
            (Inner::Closed { failures }, Admission::Normal, false) => {
                let failures = failures.saturating_add(1);
                *inner = Inner::Closed { failures };
                self.settings.failures > 0 && failures >= self.settings.failures
            }
            (_, Admission::Probe, false) => true,
            // A request admitted before the breaker opened, failing after:
            // it is open already.
            (_, Admission::Normal, false) => false,
        };
        if open {
            *inner = Inner::Open { since: now };
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        open
    }

    /// The state at `now`: `Probing` once the open time has passed.
    pub fn state(&self, now: SystemTime) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { since } if self.passed(since, now) => BreakerState::Probing,
            Inner::Open { .. } => BreakerState::Open,
            Inner::Probing { .. } => BreakerState::Probing,
        }
    }

    /// How many times the breaker has opened (again) since it was made.
    pub fn opened_total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000 + secs)
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(30),
        })
    }

    #[track_caller]
    fn fail(b: &Breaker, now: SystemTime) {
        let a = b.admit(now).expect("admitted");
        let _ = b.record(a, false, now);
    }

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_probe_through() {
        let b = breaker();
        fail(&b, at(0));
        fail(&b, at(1));
        assert_eq!(b.state(at(1)), BreakerState::Closed);
        fail(&b, at(2));
        assert_eq!(b.state(at(2)), BreakerState::Open);
        assert_eq!(b.opened_total(), 1);
        // Refused for the open time.
        assert_eq!(b.admit(at(3)), None);
        assert_eq!(b.admit(at(31)), None);
        // Then one probe, and only one.
        assert_eq!(b.state(at(32)), BreakerState::Probing);
        let probe = b.admit(at(32));
        assert_eq!(probe, Some(Admission::Probe));
        assert_eq!(b.admit(at(32)), None);
        // The probe fails: open again for the whole time.
        assert!(b.record(Admission::Probe, false, at(33)));
        assert_eq!(b.opened_total(), 2);
        assert_eq!(b.admit(at(62)), None);
        let probe = b.admit(at(63)).expect("second probe");
        // The probe succeeds: closed, and the count starts over.
        assert!(!b.record(probe, true, at(63)));
        assert_eq!(b.state(at(63)), BreakerState::Closed);
        fail(&b, at(64));
        fail(&b, at(65));
        assert_eq!(b.admit(at(66)), Some(Admission::Normal));
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = breaker();
        fail(&b, at(0));
        fail(&b, at(1));
        let a = b.admit(at(2)).unwrap();
        assert!(!b.record(a, true, at(2)));
        fail(&b, at(3));
        fail(&b, at(4));
        assert_eq!(b.state(at(4)), BreakerState::Closed);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_open_time() {
        let b = breaker();
        for t in 0..3 {
            fail(&b, at(t));
        }
        let _lost = b.admit(at(40)).expect("probe");
        assert_eq!(b.admit(at(50)), None);
        assert_eq!(b.admit(at(70)), Some(Admission::Probe));
    }

    #[test]
    fn a_clock_going_backwards_lets_a_probe_through() {
        let b = breaker();
        for t in 100..103 {
            fail(&b, at(t));
        }
        assert_eq!(b.admit(at(0)), Some(Admission::Probe));
    }

    #[test]
    fn zero_failures_never_opens() {
        let b = Breaker::new(BreakerSettings {
            failures: 0,
            open_for: Duration::from_secs(30),
        });
        for t in 0..100 {
            fail(&b, at(t));
        }
        assert_eq!(b.state(at(100)), BreakerState::Closed);
    }
}
