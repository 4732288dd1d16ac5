//! Brute-force defence across sessions: failed AUTH attempts counted per
//! client address (an IPv6 /64 counts as one address: one host owns it) and
//! per user over `[submission] lockout_window`. Each failure is answered
//! after a delay that doubles with the failures already in the window; at
//! the limit the address or the user is locked out for the window.
//!
//! A user lockout does not apply to addresses the user authenticated from
//! in the last day: an attacker guessing alice's password locks out the
//! attacker, not alice's phone.
//!
//! Time is a parameter (`now`) so tests drive it. The state is in memory
//! behind this narrow interface, so that a shared backend (cluster mode)
//! can take its place.

use portcullis_config::Lockout;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a successful login marks the client's address as the user's.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Known addresses kept per user.
const KNOWN_PER_USER: usize = 16;
/// Entries (addresses plus users) kept before idle ones are swept; past it
/// even unlocked entries with failures are dropped, so memory stays bounded
/// however many addresses an attacker uses.
const MAX_ENTRIES: usize = 100_000;
/// The delay grows to at most this multiple of the first one.
const MAX_DELAY_FACTOR: u32 = 16;

/// What a lockout applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client's address (IPv6: its /64).
    Ip,
    /// The user name.
    User,
}

impl Scope {
    /// `ip` or `user`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::User => "user",
        }
    }
}

/// An active lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// What is locked out.
    pub scope: Scope,
    /// How long it still lasts.
    pub remaining: Duration,
}

/// What a recorded failure means for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Set when this failure started a lockout (the reply closes the
    /// session with 421).
    pub locked: Option<Lock>,
}

/// The key an address is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    /// The upper 64 bits.
    V6(u64),
}

impl IpKey {
    fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4.to_bits()),
                None => IpKey::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Record {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Record {
    fn lock_remaining(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Drops failures older than the window; returns how many remain.
    fn prune(&mut self, now: Instant, window: Duration) -> usize {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.len()
    }

    /// Records a failure; true when it reaches `limit` (and starts a
    /// lockout until `now + window`).
    fn fail(&mut self, now: Instant, window: Duration, limit: u32) -> bool {
        self.prune(now, window);
        self.failures.push_back(now);
        // The record never needs more than `limit` entries.
        while self.failures.len() > limit as usize {
            self.failures.pop_front();
        }
        if self.failures.len() >= limit as usize && self.lock_remaining(now).is_none() {
            self.locked_until = Some(now + window);
            self.failures.clear();
            return true;
        }
        false
    }

    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.lock_remaining(now).is_none()
            && self
                .failures
                .back()
                .is_none_or(|t| now.saturating_duration_since(*t) >= window)
    }
}

#[derive(Debug, Default)]
struct State {
    ips: HashMap<IpKey, Record>,
    users: HashMap<String, Record>,
    known: HashMap<String, Vec<(IpKey, Instant)>>,
}

/// Failed-AUTH accounting shared by all sessions.
#[derive(Debug)]
pub struct AuthGuard {
    settings: Lockout,
    state: Mutex<State>,
}

impl AuthGuard {
    /// A guard with `settings` (`[submission]` lockout keys).
    pub fn new(settings: Lockout) -> AuthGuard {
        AuthGuard {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lockout that refuses an attempt from `ip` (as `user`, when the
    /// name is known yet), if any. The address is checked first.
    pub fn locked(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Option<Lock> {
        let key = IpKey::of(ip);
        let st = self.state();
        if let Some(remaining) = st.ips.get(&key).and_then(|r| r.lock_remaining(now)) {
            return Some(Lock {
                scope: Scope::Ip,
                remaining,
            });
        }
        let user = user?;
        let remaining = st.users.get(user).and_then(|r| r.lock_remaining(now))?;
        let known = st.known.get(user).is_some_and(|list| {
            list.iter()
                .any(|(k, t)| *k == key && now.saturating_duration_since(*t) < KNOWN_FOR)
        });
        (!known).then_some(Lock {
            scope: Scope::User,
            remaining,
        })
    }

    /// Records a failed attempt from `ip` as `user`: the delay before the
    /// 535, and the lockout it started, if it reached a limit.
    pub fn failure(&self, ip: IpAddr, user: &str, now: Instant) -> Failure {
        let s = &self.settings;
        let key = IpKey::of(ip);
        let mut st = self.state();
        if st.ips.len() + st.users.len() >= MAX_ENTRIES {
            sweep(&mut st, now, s.window);
        }
        let ip_record = st.ips.entry(key).or_default();
        let before_ip = ip_record.prune(now, s.window);
        let ip_locked = ip_record.fail(now, s.window, s.failures_per_ip);
        let mut before_user = 0;
        let mut user_locked = false;
        if !user.is_empty() {
            let user_record = st.users.entry(user.to_string()).or_default();
            before_user = user_record.prune(now, s.window);
            user_locked = user_record.fail(now, s.window, s.failures_per_user);
        }
        let earlier = before_ip.max(before_user).min(31) as u32;
        let factor = 1u32.checked_shl(earlier).unwrap_or(u32::MAX);
        let delay = s.failure_delay * factor.min(MAX_DELAY_FACTOR);
        let locked = if ip_locked {
            Some(Lock {
                scope: Scope::Ip,
                remaining: s.window,
            })
        } else if user_locked {
            Some(Lock {
                scope: Scope::User,
                remaining: s.window,
            })
        } else {
            None
        };
        Failure { delay, locked }
    }

    /// Records a successful login: the address becomes one of the user's
    /// known addresses, and the user's failures are forgiven.
    pub fn success(&self, ip: IpAddr, user: &str, now: Instant) {
        let key = IpKey::of(ip);
        let mut st = self.state();
        if let Some(record) = st.users.get_mut(user) {
            record.failures.clear();
        }
        let list = st.known.entry(user.to_string()).or_default();
        list.retain(|(k, t)| *k != key && now.saturating_duration_since(*t) < KNOWN_FOR);
        if list.len() >= KNOWN_PER_USER {
            list.remove(0);
        }
        list.push((key, now));
    }

    /// Addresses and users currently tracked (what the memory bound
    /// applies to).
    pub fn tracked(&self) -> usize {
        let st = self.state();
        st.ips.len() + st.users.len()
    }
}

/// Drops idle entries; when that is not enough, every entry that is not
/// locked (memory stays bounded; lockouts survive).
fn sweep(st: &mut State, now: Instant, window: Duration) {
    st.ips.retain(|_, r| !r.idle(now, window));
    st.users.retain(|_, r| !r.idle(now, window));
    if st.ips.len() + st.users.len() >= MAX_ENTRIES {
        st.ips.retain(|_, r| r.lock_remaining(now).is_some());
        st.users.retain(|_, r| r.lock_remaining(now).is_some());
    }
    st.known.retain(|_, list| {
        list.retain(|(_, t)| now.saturating_duration_since(*t) < KNOWN_FOR);
        !list.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Lockout {
        Lockout {
            failures_per_ip: 4,
            failures_per_user: 3,
            window: Duration::from_secs(600),
            failure_delay: Duration::from_millis(100),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delays_double_then_the_user_is_locked_out() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let f1 = g.failure(a, "alice", t0);
        assert_eq!(f1.delay, Duration::from_millis(100));
        assert_eq!(f1.locked, None);
        let f2 = g.failure(a, "alice", t0 + Duration::from_secs(1));
        assert_eq!(f2.delay, Duration::from_millis(200));
        assert!(g.locked(a, Some("alice"), t0).is_none());
        let f3 = g.failure(a, "alice", t0 + Duration::from_secs(2));
        assert_eq!(f3.delay, Duration::from_millis(400));
        assert_eq!(f3.locked.map(|l| l.scope), Some(Scope::User));
        // Locked for alice from anywhere new, not for bob.
        let lock = g.locked(
            ip("198.51.100.7"),
            Some("alice"),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(lock.map(|l| l.scope), Some(Scope::User));
        assert!(
            g.locked(a, Some("bob"), t0 + Duration::from_secs(3))
                .is_none()
        );
        // Until the window has passed.
        let later = t0 + Duration::from_secs(2) + Duration::from_secs(600);
        assert!(g.locked(a, Some("alice"), later).is_none());
    }

    #[test]
    fn an_address_guessing_many_users_is_locked_out() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let a = ip("2001:db8:1:2::10");
        for (i, user) in ["u1", "u2", "u3"].iter().enumerate() {
            assert_eq!(
                g.failure(a, user, t0 + Duration::from_secs(i as u64))
                    .locked,
                None
            );
        }
        // Another address in the same /64 is the same client.
        let f = g.failure(ip("2001:db8:1:2::99"), "u4", t0 + Duration::from_secs(4));
        assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
        assert_eq!(f.delay, Duration::from_millis(800));
        let lock = g.locked(a, None, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(lock.scope, Scope::Ip);
        assert_eq!(lock.remaining, Duration::from_secs(599));
        // A different /64 is not.
        assert!(g.locked(ip("2001:db8:1:3::10"), None, t0).is_none());
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        g.failure(a, "alice", t0);
        g.failure(a, "alice", t0 + Duration::from_secs(1));
        // Both have left the window: the delay starts over, no lockout.
        let f = g.failure(a, "alice", t0 + Duration::from_secs(700));
        assert_eq!(f.delay, Duration::from_millis(100));
        assert_eq!(f.locked, None);
    }

    #[test]
    fn a_known_address_is_not_locked_out_by_others_guessing() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let phone = ip("203.0.113.5");
        g.success(phone, "alice", t0);
        let attacker = ip("192.0.2.66");
        for i in 0..3 {
            g.failure(attacker, "alice", t0 + Duration::from_secs(i));
        }
        assert!(
            g.locked(attacker, Some("alice"), t0 + Duration::from_secs(5))
                .is_some()
        );
        assert!(
            g.locked(phone, Some("alice"), t0 + Duration::from_secs(5))
                .is_none()
        );
        // A success forgives the user's earlier failures (not the lock).
        let g = AuthGuard::new(settings());
        g.failure(phone, "alice", t0);
        g.failure(phone, "alice", t0);
        g.success(phone, "alice", t0);
        assert_eq!(g.failure(ip("192.0.2.9"), "alice", t0).locked, None);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        assert_eq!(
            IpKey::of(ip("::ffff:192.0.2.1")),
            IpKey::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn delay_is_capped_and_zero_stays_zero() {
        let mut s = settings();
        s.failures_per_ip = 1000;
        s.failures_per_user = 1000;
        let g = AuthGuard::new(s.clone());
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = g.failure(ip("192.0.2.1"), "x", t0).delay;
        }
        assert_eq!(last, Duration::from_millis(1600));
        s.failure_delay = Duration::ZERO;
        let g = AuthGuard::new(s);
        assert_eq!(g.failure(ip("192.0.2.1"), "x", t0).delay, Duration::ZERO);
    }

    #[test]
    fn memory_stays_bounded() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            g.failure(IpAddr::V4(std::net::Ipv4Addr::from_bits(i)), "", t0);
        }
        assert!(g.tracked() <= MAX_ENTRIES);
    }
}
