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
//! An attempt is counted *before* its credentials are checked
//! ([`AuthGuard::attempt`]): a flood of guesses from one address reaches
//! the limit after `failures_per_ip` attempts however many run at once, and
//! the rest are refused without costing an argon2 hash or an HTTP request.
//! The outcome then settles the count: a failure keeps it
//! ([`AuthGuard::failed`]), a success takes it back, with any lockout it
//! started ([`AuthGuard::succeeded`]), and a check that could not be made
//! (454) keeps it against the address but not the user
//! ([`AuthGuard::unchecked`]): the user did nothing wrong, the client did
//! make us work.
//!
//! Time is a parameter (`now`) so tests drive it. The state is in memory
//! behind this narrow interface.
//!
//! Cluster mode shares it without putting the database on the AUTH path:
//! the guard remembers which addresses and users changed
//! ([`AuthGuard::changed`]: this node's failures in the window and its
//! lockouts, pushed by a periodic task) and holds the other nodes' sums
//! ([`AuthGuard::set_remote`]), which count with its own: their failures
//! bring a key nearer its limit here, their lockouts refuse here. A
//! client thus gets at most `failures_per_ip` guesses plus what it can
//! try on the other nodes in one exchange interval (each guess slowed by
//! the doubling delay). Remote state is only ever added: a lockout known
//! locally always applies, whatever the database does. A user's known
//! addresses stay per node (a user locked out by guesses elsewhere is let
//! in from an address known on this node only).

use portcullis_config::Lockout;
use std::collections::{HashMap, HashSet, VecDeque};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// An attempt counted by [`AuthGuard::attempt`] before its check, to be
/// settled by [`AuthGuard::failed`], [`AuthGuard::succeeded`] or
/// [`AuthGuard::unchecked`].
#[derive(Debug)]
#[must_use = "an attempt is settled with failed, succeeded or unchecked"]
pub struct Attempt {
    key: IpKey,
    user: String,
    at: Instant,
    delay: Duration,
    ip_locked: bool,
    user_locked: bool,
}

impl Attempt {
    /// The delay before answering, should the attempt fail (it doubles
    /// with the failures already in the window).
    pub fn delay(&self) -> Duration {
        self.delay
    }
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
    /// lockout until `now + window`). The failures stay (they age out of
    /// the window by the time the lockout ends) so that
    /// [`Record::forget`] can take this one back.
    /// `elsewhere`: the other nodes' failures in the window (cluster
    /// mode), which count towards the limit too.
    fn fail(&mut self, now: Instant, window: Duration, limit: u32, elsewhere: usize) -> bool {
        self.prune(now, window);
        self.failures.push_back(now);
        // The record never needs more than `limit` entries.
        while self.failures.len() > limit as usize {
            self.failures.pop_front();
        }
        let all = self.failures.len().saturating_add(elsewhere);
        if all >= limit as usize && self.lock_remaining(now).is_none() {
            self.locked_until = Some(now + window);
            return true;
        }
        false
    }

    /// Takes back the failure recorded at `at` (and the lockout it
    /// started, when `started_lock`).
    fn forget(&mut self, at: Instant, window: Duration, started_lock: bool) {
        if let Some(i) = self.failures.iter().rposition(|t| *t == at) {
            self.failures.remove(i);
        }
        if started_lock && self.locked_until == Some(at + window) {
            self.locked_until = None;
        }
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
    /// Keys changed since [`AuthGuard::changed`] last took them (cluster
    /// mode), at most [`MAX_ENTRIES`].
    dirty: HashSet<SharedKey>,
    /// The other nodes' failures and lockouts (cluster mode), at most
    /// [`MAX_ENTRIES`].
    remote: HashMap<SharedKey, Remote>,
    /// True in cluster mode ([`AuthGuard::share`]): only then is `dirty`
    /// kept.
    sharing: bool,
}

impl State {
    /// Marks `key` for the next push (dropped past the bound: memory
    /// stays bounded under a flood of addresses; the flood's own node
    /// still counts them).
    fn touched(&mut self, key: SharedKey) {
        if self.sharing && self.dirty.len() < MAX_ENTRIES {
            self.dirty.insert(key);
        }
    }

    /// The other nodes' live failures of `key` at `now`.
    fn remote_failures(&self, key: &SharedKey, now: Instant) -> usize {
        self.remote
            .get(key)
            .filter(|r| r.counts_until > now)
            .map_or(0, |r| r.failures as usize)
    }

    /// The other nodes' lockout of `key` still running at `now`.
    fn remote_lock(&self, key: &SharedKey, now: Instant) -> Option<Duration> {
        self.remote
            .get(key)
            .and_then(|r| r.locked_until)
            .and_then(|t| t.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

/// An address or a user, as nodes exchange them: the scope and the key's
/// octets (4 of an IPv4 address, the 8 of an IPv6 /64, a user name's
/// UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedKey {
    /// An address or a user.
    pub scope: Scope,
    /// The octets.
    pub key: Vec<u8>,
}

impl SharedKey {
    fn ip(key: IpKey) -> SharedKey {
        let key = match key {
            IpKey::V4(v4) => v4.to_be_bytes().to_vec(),
            IpKey::V6(v6) => v6.to_be_bytes().to_vec(),
        };
        SharedKey {
            scope: Scope::Ip,
            key,
        }
    }

    fn user(name: &str) -> SharedKey {
        SharedKey {
            scope: Scope::User,
            key: name.as_bytes().to_vec(),
        }
    }
}

/// One node's state of one key, as pushed ([`AuthGuard::changed`]) or
/// the other nodes' sum of it, as pulled ([`AuthGuard::set_remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// The address or user.
    pub key: SharedKey,
    /// Failures in the window (0: nothing to share; a success took them
    /// back or they aged out).
    pub failures: u32,
    /// How long from now the failures still count.
    pub counts_for: Duration,
    /// How long from now a lockout of the key lasts, when there is one.
    pub locked_for: Option<Duration>,
}

/// The other nodes' state of one key, on this node's clock.
#[derive(Debug, Clone, Copy)]
struct Remote {
    failures: u32,
    counts_until: Instant,
    locked_until: Option<Instant>,
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
        let local = st.ips.get(&key).and_then(|r| r.lock_remaining(now));
        if let Some(remaining) = local.or_else(|| st.remote_lock(&SharedKey::ip(key), now)) {
            return Some(Lock {
                scope: Scope::Ip,
                remaining,
            });
        }
        let user = user?;
        let local = st.users.get(user).and_then(|r| r.lock_remaining(now));
        let remaining = local.or_else(|| st.remote_lock(&SharedKey::user(user), now))?;
        let known = st.known.get(user).is_some_and(|list| {
            list.iter()
                .any(|(k, t)| *k == key && now.saturating_duration_since(*t) < KNOWN_FOR)
        });
        (!known).then_some(Lock {
            scope: Scope::User,
            remaining,
        })
    }

    /// Records a failed attempt from `ip` as `user` (empty: no user
    /// named): the delay before the 535, and the lockout it started, if it
    /// reached a limit. Counts like [`AuthGuard::attempt`] (without its
    /// lockout check) followed by [`AuthGuard::failed`], for callers that
    /// know the outcome already.
    pub fn failure(&self, ip: IpAddr, user: &str, now: Instant) -> Failure {
        let attempt = self.count(ip, user, now);
        self.failed(attempt)
    }

    /// Starts an attempt from `ip` as `user` (empty: no user named yet),
    /// BEFORE its credentials are checked: refused with the lockout in
    /// force, if any; otherwise counted as a failure now (so concurrent
    /// attempts from one address cannot exceed the limit while their checks
    /// run) and settled later by [`AuthGuard::failed`],
    /// [`AuthGuard::succeeded`] or [`AuthGuard::unchecked`]. An attempt
    /// that is dropped unsettled stays counted as a failure.
    pub fn attempt(&self, ip: IpAddr, user: &str, now: Instant) -> Result<Attempt, Lock> {
        let named = (!user.is_empty()).then_some(user);
        if let Some(lock) = self.locked(ip, named, now) {
            return Err(lock);
        }
        Ok(self.count(ip, user, now))
    }

    /// Counts a failure from `ip` as `user` at `now`.
    fn count(&self, ip: IpAddr, user: &str, now: Instant) -> Attempt {
        let s = &self.settings;
        let key = IpKey::of(ip);
        let mut st = self.state();
        if st.ips.len() + st.users.len() >= MAX_ENTRIES {
            sweep(&mut st, now, s.window);
        }
        let shared_ip = SharedKey::ip(key);
        let elsewhere = st.remote_failures(&shared_ip, now);
        st.touched(shared_ip);
        let ip_record = st.ips.entry(key).or_default();
        let before_ip = ip_record.prune(now, s.window) + elsewhere;
        let ip_locked = ip_record.fail(now, s.window, s.failures_per_ip, elsewhere);
        let mut before_user = 0;
        let mut user_locked = false;
        if !user.is_empty() {
            let shared_user = SharedKey::user(user);
            let elsewhere = st.remote_failures(&shared_user, now);
            st.touched(shared_user);
            let user_record = st.users.entry(user.to_string()).or_default();
            before_user = user_record.prune(now, s.window) + elsewhere;
            user_locked = user_record.fail(now, s.window, s.failures_per_user, elsewhere);
        }
        let earlier = before_ip.max(before_user).min(31) as u32;
        let factor = 1u32.checked_shl(earlier).unwrap_or(u32::MAX);
        Attempt {
            key,
            user: user.to_string(),
            at: now,
            delay: s.failure_delay * factor.min(MAX_DELAY_FACTOR),
            ip_locked,
            user_locked,
        }
    }

    /// Settles `attempt` as a failure (bad credentials): it stays counted;
    /// the delay before the 535 and the lockout it started.
    pub fn failed(&self, attempt: Attempt) -> Failure {
        let window = self.settings.window;
        let locked = if attempt.ip_locked {
            Some(Lock {
                scope: Scope::Ip,
                remaining: window,
            })
        } else if attempt.user_locked {
            Some(Lock {
                scope: Scope::User,
                remaining: window,
            })
        } else {
            None
        };
        Failure {
            delay: attempt.delay,
            locked,
        }
    }

    /// Settles `attempt` as a check that could not be made (454: password
    /// hashing saturated, the introspection endpoint failing): it stays
    /// counted against the address, which made us work, but not against
    /// the user, who did nothing wrong (a user lockout it started is lifted).
    pub fn unchecked(&self, attempt: Attempt) -> Failure {
        let window = self.settings.window;
        if !attempt.user.is_empty() {
            let mut st = self.state();
            if let Some(record) = st.users.get_mut(&attempt.user) {
                record.forget(attempt.at, window, attempt.user_locked);
            }
            st.touched(SharedKey::user(&attempt.user));
        }
        Failure {
            delay: attempt.delay,
            locked: attempt.ip_locked.then_some(Lock {
                scope: Scope::Ip,
                remaining: window,
            }),
        }
    }

    /// Settles `attempt` as a success for `user` (the user the credentials
    /// proved, which for a bearer token may differ from the name given):
    /// the attempt is no longer counted, a lockout it started is lifted,
    /// and the login is recorded as by [`AuthGuard::success`].
    pub fn succeeded(&self, attempt: Attempt, user: &str, ip: IpAddr, now: Instant) {
        let window = self.settings.window;
        {
            let mut st = self.state();
            if let Some(record) = st.ips.get_mut(&attempt.key) {
                record.forget(attempt.at, window, attempt.ip_locked);
            }
            st.touched(SharedKey::ip(attempt.key));
            if !attempt.user.is_empty()
                && let Some(record) = st.users.get_mut(&attempt.user)
            {
                record.forget(attempt.at, window, attempt.user_locked);
                st.touched(SharedKey::user(&attempt.user));
            }
        }
        self.success(ip, user, now);
    }

    /// Records a successful login: the address becomes one of the user's
    /// known addresses, and the user's failures are forgiven.
    pub fn success(&self, ip: IpAddr, user: &str, now: Instant) {
        let key = IpKey::of(ip);
        let mut st = self.state();
        if let Some(record) = st.users.get_mut(user) {
            record.failures.clear();
            st.touched(SharedKey::user(user));
        }
        let list = st.known.entry(user.to_string()).or_default();
        list.retain(|(k, t)| *k != key && now.saturating_duration_since(*t) < KNOWN_FOR);
        if list.len() >= KNOWN_PER_USER {
            list.remove(0);
        }
        list.push((key, now));
    }

    /// Cluster mode: from now on the guard remembers which keys changed,
    /// for [`AuthGuard::changed`] (a single node never calls it and keeps
    /// no such set).
    pub fn share(&self) {
        self.state().sharing = true;
    }

    /// This node's state of at most `most` keys changed since the last
    /// call (cluster mode: what to push): its failures in the window and
    /// its lockout. The keys are no longer marked as changed.
    pub fn changed(&self, now: Instant, most: usize) -> Vec<SharedCount> {
        let window = self.settings.window;
        let mut st = self.state();
        let keys: Vec<SharedKey> = st.dirty.iter().take(most).cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            st.dirty.remove(&key);
            let record = match key.scope {
                Scope::Ip => ip_key(&key.key).and_then(|k| st.ips.get_mut(&k)),
                Scope::User => std::str::from_utf8(&key.key)
                    .ok()
                    .and_then(|u| st.users.get_mut(u)),
            };
            let (failures, counts_for, locked_for) = match record {
                Some(r) => {
                    let n = r.prune(now, window);
                    let counts_for = r.failures.back().map_or(Duration::ZERO, |t| {
                        window.saturating_sub(now.saturating_duration_since(*t))
                    });
                    (
                        u32::try_from(n).unwrap_or(u32::MAX),
                        counts_for,
                        r.lock_remaining(now),
                    )
                }
                None => (0, Duration::ZERO, None),
            };
            out.push(SharedCount {
                key,
                failures,
                counts_for,
                locked_for,
            });
        }
        out
    }

    /// Marks `keys` as changed again (their push failed).
    pub fn requeue(&self, keys: impl IntoIterator<Item = SharedKey>) {
        let mut st = self.state();
        for key in keys {
            st.touched(key);
        }
    }

    /// Replaces the other nodes' state with `sums` (cluster mode: their
    /// failures and lockouts per key, as pulled at `now`); at most
    /// [`MAX_ENTRIES`] keys are kept.
    pub fn set_remote(&self, sums: impl IntoIterator<Item = SharedCount>, now: Instant) {
        let mut remote = HashMap::new();
        for s in sums.into_iter().take(MAX_ENTRIES) {
            remote.insert(
                s.key,
                Remote {
                    failures: s.failures,
                    counts_until: now + s.counts_for,
                    locked_until: s.locked_for.map(|d| now + d),
                },
            );
        }
        self.state().remote = remote;
    }

    /// Addresses and users currently tracked (what the memory bound
    /// applies to).
    pub fn tracked(&self) -> usize {
        let st = self.state();
        st.ips.len() + st.users.len()
    }
}

/// The address key of `octets` as [`SharedKey`] writes them.
fn ip_key(octets: &[u8]) -> Option<IpKey> {
    match octets.len() {
        4 => Some(IpKey::V4(u32::from_be_bytes(octets.try_into().ok()?))),
        8 => Some(IpKey::V6(u64::from_be_bytes(octets.try_into().ok()?))),
        _ => None,
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

    /// The flood the count-before-check order exists for: many attempts
    /// from one address at once. Only `failures_per_ip` of them get to be
    /// checked; every later one is refused before any work, even though
    /// none of the checks has finished yet.
    #[test]
    fn attempts_are_counted_before_their_check() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let mut admitted = Vec::new();
        let mut refused = 0;
        for i in 0..100 {
            match g.attempt(a, &format!("u{i}"), t0) {
                Ok(attempt) => admitted.push(attempt),
                Err(lock) => {
                    assert_eq!(lock.scope, Scope::Ip);
                    refused += 1;
                }
            }
        }
        assert_eq!(admitted.len(), 4, "failures_per_ip");
        assert_eq!(refused, 96);
        // The fourth started the lockout; its failure says so.
        let failures: Vec<Failure> = admitted.into_iter().map(|a| g.failed(a)).collect();
        assert_eq!(failures[3].locked.map(|l| l.scope), Some(Scope::Ip));
        assert!(failures[..3].iter().all(|f| f.locked.is_none()));
    }

    /// A success takes its pending count back: a user who logs in
    /// correctly over and over is never locked out, and the success of the
    /// attempt that reached the limit lifts the lockout it started.
    #[test]
    fn a_success_takes_its_attempt_back() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..20 {
            let t = t0 + Duration::from_secs(i);
            let attempt = g.attempt(a, "alice", t).expect("not locked");
            g.succeeded(attempt, "alice", a, t);
        }
        assert!(
            g.locked(a, Some("alice"), t0 + Duration::from_secs(20))
                .is_none()
        );
        // Three failures from another address for several users, then a
        // fourth attempt that reaches the address limit but succeeds.
        let b = ip("198.51.100.1");
        for user in ["x", "y", "z"] {
            let f = g.failed(g.attempt(b, user, t0).unwrap());
            assert_eq!(f.locked, None);
        }
        let last = g.attempt(b, "bob", t0).unwrap();
        // While it is being checked, the address is locked for others.
        assert!(g.attempt(b, "w", t0).is_err());
        g.succeeded(last, "bob", b, t0);
        assert!(g.locked(b, None, t0).is_none(), "the lockout was lifted");
        // The three failures still count: one more reaches the limit.
        let f = g.failed(g.attempt(b, "v", t0).unwrap());
        assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
    }

    /// A 454 (the check could not be made) counts against the address,
    /// not against the user.
    #[test]
    fn an_unchecked_attempt_counts_for_the_address_only() {
        let mut s = settings();
        s.failures_per_user = 2;
        let g = AuthGuard::new(s);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..3 {
            let f = g.unchecked(g.attempt(a, "alice", t0).unwrap());
            assert_eq!(f.locked, None, "attempt {i}");
        }
        // Not a user lockout: alice can still log in from elsewhere.
        assert!(g.locked(ip("198.51.100.1"), Some("alice"), t0).is_none());
        // The fourth reaches the address limit.
        let f = g.unchecked(g.attempt(a, "alice", t0).unwrap());
        assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
        assert_eq!(g.locked(a, None, t0).map(|l| l.scope), Some(Scope::Ip));
    }

    /// Every entry point keys the address the same way: an IPv6 /64 is one
    /// client (the counting, the lockout check, the pending attempt and the
    /// known addresses of a user), an IPv4-mapped address is its IPv4
    /// address.
    #[test]
    fn the_key_is_the_ipv6_64_everywhere() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let one = ip("2001:db8:5:6::1");
        let other_host = ip("2001:db8:5:6:ffff:ffff:ffff:ffff");
        let other_net = ip("2001:db8:5:7::1");
        // Attempts from different hosts of one /64 add up.
        for (i, from) in [one, other_host, one].into_iter().enumerate() {
            let f = g.failed(g.attempt(from, &format!("u{i}"), t0).unwrap());
            assert_eq!(f.locked, None);
        }
        let f = g.failed(g.attempt(other_host, "u3", t0).unwrap());
        assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
        assert!(g.attempt(one, "u4", t0).is_err());
        assert!(g.attempt(other_net, "u4", t0).is_ok());
        // A login from one host of a /64 makes the whole /64 known.
        let g = AuthGuard::new(settings());
        g.success(one, "alice", t0);
        for i in 0..3 {
            let _ = g.failed(
                g.attempt(ip("192.0.2.66"), "alice", t0 + Duration::from_secs(i))
                    .unwrap(),
            );
        }
        assert!(g.locked(ip("192.0.2.67"), Some("alice"), t0).is_some());
        assert!(g.locked(other_host, Some("alice"), t0).is_none());
        // IPv4-mapped IPv6 is the IPv4 address, in attempts too.
        let g = AuthGuard::new(settings());
        for i in 0..4 {
            let _ = g.failed(
                g.attempt(ip("::ffff:192.0.2.9"), &format!("u{i}"), t0)
                    .unwrap(),
            );
        }
        assert!(g.attempt(ip("192.0.2.9"), "x", t0).is_err());
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

    /// Cluster mode: what one node pushes, another adds to its own: the
    /// failures bring the address to its limit sooner, a lockout refuses
    /// at once, and nothing pulled ever lifts a local lockout.
    #[test]
    fn other_nodes_failures_and_lockouts_count_here() {
        let a = AuthGuard::new(settings());
        let b = AuthGuard::new(settings());
        a.share();
        b.share();
        let t0 = Instant::now();
        let client = ip("192.0.2.1");
        for i in 0..3 {
            let _ = a.failed(a.attempt(client, &format!("u{i}"), t0).unwrap());
        }
        let pushed = a.changed(t0, 100);
        assert_eq!(pushed.len(), 4, "the address and three users: {pushed:?}");
        let addr = pushed.iter().find(|c| c.key.scope == Scope::Ip).unwrap();
        assert_eq!(addr.failures, 3);
        assert_eq!(addr.locked_for, None);
        assert!(a.changed(t0, 100).is_empty(), "taken once");
        // B knows A's three: its first failure reaches the limit of four.
        b.set_remote(pushed, t0);
        let f = b.failed(b.attempt(client, "v", t0).unwrap());
        assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
        assert_eq!(
            f.delay,
            Duration::from_millis(800),
            "the delay counts A's too"
        );
        // A lockout started on B refuses on A without a failure there.
        let from_b = b.changed(t0, 100);
        a.set_remote(from_b, t0);
        assert_eq!(a.locked(client, None, t0).map(|l| l.scope), Some(Scope::Ip));
        // An empty pull (the database lost its rows) lifts nothing B
        // locked itself.
        b.set_remote([], t0);
        assert!(b.locked(client, None, t0).is_some());
        // Remote state ends with its window.
        let later = t0 + Duration::from_secs(601);
        assert!(a.locked(client, None, later).is_none());
    }

    #[test]
    fn a_failed_push_is_pushed_again_and_keys_round_trip() {
        let g = AuthGuard::new(settings());
        let t0 = Instant::now();
        let _ = g.failure(ip("192.0.2.200"), "eve", t0);
        assert!(
            g.changed(t0, 100).is_empty(),
            "a single node remembers nothing"
        );
        g.share();
        let _ = g.failure(ip("2001:db8:1:2::3"), "alice", t0);
        let pushed = g.changed(t0, 100);
        assert_eq!(pushed.len(), 2);
        g.requeue(pushed.iter().map(|c| c.key.clone()));
        let again = g.changed(t0, 100);
        assert_eq!(again.len(), 2);
        let ipk = again.iter().find(|c| c.key.scope == Scope::Ip).unwrap();
        assert_eq!(
            ip_key(&ipk.key.key),
            Some(IpKey::of(ip("2001:db8:1:2::99")))
        );
        assert_eq!(ip_key(&[1, 2, 3]), None);
    }
}
