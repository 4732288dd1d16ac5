//! Per-user sending rate (`messages_per_hour`): a GCRA token bucket per
//! user, one instant of state each. A full bucket allows a burst of the
//! hourly limit; it refills evenly over the hour.
//!
//! Checked at MAIL FROM, charged when a message is accepted: concurrent
//! sessions of one user may overshoot by the messages in flight, never
//! more. Time is a parameter (`now`); the state sits behind this narrow
//! interface so that a shared backend (cluster mode) can take its place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
/// Users tracked before users with full buckets are swept.
const MAX_USERS: usize = 100_000;

/// Messages per hour, per user.
#[derive(Debug, Default)]
pub struct SendRate {
    /// User → the theoretical arrival time of their next message.
    tat: Mutex<HashMap<String, Instant>>,
}

impl SendRate {
    /// An empty limiter (every bucket full).
    pub fn new() -> SendRate {
        SendRate::default()
    }

    /// `Ok` when `user` may send one more message now under `per_hour`
    /// (0: no limit); otherwise how long until they may.
    pub fn check(&self, user: &str, per_hour: u32, now: Instant) -> Result<(), Duration> {
        if per_hour == 0 {
            return Ok(());
        }
        let map = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tat) = map.get(user) else {
            return Ok(());
        };
        let next = (*tat).max(now) + interval(per_hour);
        match next.checked_duration_since(now) {
            Some(ahead) if ahead > HOUR => Err(ahead - HOUR),
            _ => Ok(()),
        }
    }

    /// Charges one accepted message to `user`.
    pub fn record(&self, user: &str, per_hour: u32, now: Instant) {
        if per_hour == 0 {
            return;
        }
        let mut map = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_USERS && !map.contains_key(user) {
            // A bucket whose arrival time has passed is full: forgetting
            // it changes nothing.
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.entry(user.to_string()).or_insert(now);
        *tat = (*tat).max(now) + interval(per_hour);
    }
}

fn interval(per_hour: u32) -> Duration {
    HOUR / per_hour.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_hourly_limit_then_refill() {
        let r = SendRate::new();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(r.check("alice", 10, t0), Ok(()), "message {i}");
            r.record("alice", 10, t0);
        }
        // The eleventh waits one interval (6 minutes).
        assert_eq!(r.check("alice", 10, t0), Err(Duration::from_secs(360)));
        // Others are not affected.
        assert_eq!(r.check("bob", 10, t0), Ok(()));
        // After 6 minutes, one more fits, not two.
        let t1 = t0 + Duration::from_secs(360);
        assert_eq!(r.check("alice", 10, t1), Ok(()));
        r.record("alice", 10, t1);
        assert!(r.check("alice", 10, t1).is_err());
        // After an hour the bucket is full again.
        let t2 = t1 + HOUR;
        for _ in 0..10 {
            assert_eq!(r.check("alice", 10, t2), Ok(()));
            r.record("alice", 10, t2);
        }
        assert!(r.check("alice", 10, t2).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let r = SendRate::new();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            r.record("alice", 0, t0);
        }
        assert_eq!(r.check("alice", 0, t0), Ok(()));
    }

    #[test]
    fn one_per_hour() {
        let r = SendRate::new();
        let t0 = Instant::now();
        r.record("alice", 1, t0);
        assert_eq!(
            r.check("alice", 1, t0 + Duration::from_secs(60)),
            Err(Duration::from_secs(3540))
        );
        assert_eq!(r.check("alice", 1, t0 + HOUR), Ok(()));
    }
}
