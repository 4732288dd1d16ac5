//! Connections, messages and recipients per minute per client (an IPv4
//! address or an IPv6 /64), in a bounded in-memory table: when full, the
//! entry seen longest ago is evicted, so memory does not grow with the
//! number of clients.
//!
//! The window: two fixed one-minute buckets aligned on the clock's
//! minutes, the current one and the one before; the count "in the last
//! minute" is the current bucket plus the previous bucket weighted by the
//! part of it still inside the sliding minute. This is a sliding window to
//! within the spread of events over the previous minute, in 3 × 2 counters
//! per client instead of a timestamp per event (whose memory a client
//! would choose).
//!
//! Threat model: a client chooses how many keys it shows up under (an IPv6
//! /48 holds 65,536 /64s), so the table has a fixed capacity and evicts the
//! entry seen longest ago, in O(log n) (an order index beside the map, no
//! scan). A client whose entry is evicted starts afresh; an attacker able
//! to flush the table from that many networks only resets budgets, never
//! exhausts memory. A refused attempt is not counted, so a client that
//! waits the hint it was given gets through.
//!
//! Cluster mode: the table never waits on the database. It remembers
//! which clients it counted since the last exchange ([`RateTable::changed`]:
//! this node's own counts of the current and previous minutes, to push)
//! and holds the other nodes' counts of those minutes
//! ([`RateTable::set_remote`], pulled by the same periodic task), which
//! every check adds to its own. On a single node the remote side stays
//! empty and nothing changes. Across `n` nodes a client gets at most its
//! limit plus what it can do on the other nodes in one exchange interval
//! (the counts not pushed yet): about `limit + n × rate × interval`.

use portcullis_types::{AddrKey, Clock};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One bucket: a minute, in milliseconds.
const WINDOW_MS: u64 = 60_000;

/// The default number of clients the table keeps (about 8 MiB at most).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connections (checked at connect).
    Connections,
    /// Messages (checked at MAIL).
    Messages,
    /// Recipients (checked at RCPT).
    Recipients,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 3] = [Kind::Connections, Kind::Messages, Kind::Recipients];

    /// `connections`, `messages` or `recipients`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connections => "connections",
            Kind::Messages => "messages",
            Kind::Recipients => "recipients",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Connections => 0,
            Kind::Messages => 1,
            Kind::Recipients => 2,
        }
    }
}

/// A client's counts in the last minute (weighted, rounded up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections.
    pub connections: u32,
    /// Messages.
    pub messages: u32,
    /// Recipients.
    pub recipients: u32,
}

impl Counts {
    /// The count of `kind`.
    pub fn get(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Connections => self.connections,
            Kind::Messages => self.messages,
            Kind::Recipients => self.recipients,
        }
    }
}

/// The two buckets of one client.
#[derive(Debug, Clone, Copy, Default)]
struct Buckets {
    /// The minute (`ms / WINDOW_MS`) `current` counts.
    window: u64,
    current: [u32; 3],
    previous: [u32; 3],
}

impl Buckets {
    /// Moves the buckets to `window`: the current one becomes the previous
    /// one when `window` is the next minute; older counts are dropped.
    fn roll(&mut self, window: u64) {
        if window <= self.window {
            return;
        }
        self.previous = if window == self.window + 1 {
            self.current
        } else {
            [0; 3]
        };
        self.current = [0; 3];
        self.window = window;
    }

    /// These buckets plus `other`'s (both seen at `window`).
    fn plus(&self, other: Option<Buckets>, window: u64) -> Buckets {
        let Some(mut other) = other else {
            return *self;
        };
        other.roll(window);
        let mut sum = *self;
        if other.window != sum.window {
            // `other` is from a later minute than a stale local entry:
            // impossible after both rolled to `window`; keep ours.
            return sum;
        }
        for i in 0..3 {
            sum.current[i] = sum.current[i].saturating_add(other.current[i]);
            sum.previous[i] = sum.previous[i].saturating_add(other.previous[i]);
        }
        sum
    }

    /// The count of the last minute × `WINDOW_MS` (exact integer), at
    /// `offset` ms into the current minute.
    fn scaled(&self, i: usize, offset: u64) -> u64 {
        u64::from(self.previous[i]) * (WINDOW_MS - offset) + u64::from(self.current[i]) * WINDOW_MS
    }

    /// How long from `offset` until the count of `i` is under `limit`
    /// (no further counts), in milliseconds; 0 when it already is.
    fn wait_ms(&self, i: usize, limit: u32, offset: u64) -> u64 {
        let limit = u64::from(limit);
        if self.scaled(i, offset) < limit * WINDOW_MS {
            return 0;
        }
        let (current, previous) = (u64::from(self.current[i]), u64::from(self.previous[i]));
        if current < limit {
            // Within this minute: previous × (W − t) < (limit − current) × W
            // first holds at t = W − ⌈need / previous⌉ + 1 (previous > 0,
            // or the count would be under the limit already).
            let need = (limit - current) * WINDOW_MS;
            let at = WINDOW_MS + 1 - need.div_ceil(previous.max(1));
            at.saturating_sub(offset)
        } else {
            // Next minute, this one's count weighted: current × (W − s) <
            // limit × W first holds at s = W − ⌈limit × W / current⌉ + 1.
            let s = (WINDOW_MS + 1).saturating_sub((limit * WINDOW_MS).div_ceil(current));
            WINDOW_MS - offset + s
        }
    }
}

/// One client's entry: its buckets and its place in the eviction order.
#[derive(Debug)]
struct Slot {
    buckets: Buckets,
    seen: u64,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<AddrKey, Slot>,
    /// Last-seen sequence number → key: the first is evicted.
    order: BTreeMap<u64, AddrKey>,
    next_seen: u64,
    /// Clients counted since their counts were last taken by
    /// [`RateTable::changed`] (always keys of `slots`: bounded with it);
    /// kept only once [`RateTable::share`] was called.
    dirty: HashSet<AddrKey>,
    /// True in cluster mode ([`RateTable::share`]).
    sharing: bool,
    /// The other nodes' counts (cluster mode), at most the table's
    /// capacity of clients; empty on a single node.
    remote: HashMap<AddrKey, Buckets>,
}

impl Inner {
    /// `key`'s slot, created (evicting the entry seen longest ago when the
    /// table is full) and marked as seen now.
    fn touch(&mut self, key: AddrKey, capacity: usize) -> &mut Slot {
        let seen = self.next_seen;
        self.next_seen += 1;
        if let Some(old) = self.slots.get(&key).map(|s| s.seen) {
            self.order.remove(&old);
        } else {
            while self.slots.len() >= capacity.max(1) {
                let Some((_, evicted)) = self.order.pop_first() else {
                    break;
                };
                self.slots.remove(&evicted);
                self.dirty.remove(&evicted);
            }
        }
        self.order.insert(seen, key);
        let slot = self.slots.entry(key).or_insert(Slot {
            buckets: Buckets::default(),
            seen,
        });
        slot.seen = seen;
        slot
    }
}

/// The per-client counters, shared by every session (and kept across
/// reloads: limits are passed per call).
pub struct RateTable {
    inner: Mutex<Inner>,
    capacity: usize,
    clock: Arc<dyn Clock>,
}

impl RateTable {
    /// A table of at most `capacity` clients (at least one), on `clock`.
    pub fn new(capacity: usize, clock: Arc<dyn Clock>) -> RateTable {
        RateTable {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters
        // inconsistent in a way that matters more than losing them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one `kind` event of `key` unless that would put it over
    /// `limit` per minute (0: no limit, always counted). `Err` holds how
    /// long to wait (whole seconds, rounded up) before the next one fits;
    /// a refused event is not counted.
    pub fn check(&self, key: AddrKey, kind: Kind, limit: u32) -> Result<(), Duration> {
        let now = self.clock.unix_millis();
        let (window, offset) = (now / WINDOW_MS, now % WINDOW_MS);
        let mut inner = self.lock();
        let remote = inner.remote.get(&key).copied();
        let slot = inner.touch(key, self.capacity);
        slot.buckets.roll(window);
        let i = kind.index();
        if limit > 0 {
            let all = slot.buckets.plus(remote, window);
            let wait = all.wait_ms(i, limit, offset);
            if wait > 0 {
                return Err(Duration::from_secs(wait.div_ceil(1000).max(1)));
            }
        }
        slot.buckets.current[i] = slot.buckets.current[i].saturating_add(1);
        if inner.sharing {
            inner.dirty.insert(key);
        }
        Ok(())
    }

    /// `key`'s counts in the last minute (zero when unknown), without
    /// marking it as seen.
    pub fn count(&self, key: AddrKey) -> Counts {
        let now = self.clock.unix_millis();
        let (window, offset) = (now / WINDOW_MS, now % WINDOW_MS);
        let inner = self.lock();
        let remote = inner.remote.get(&key).copied();
        let mut buckets = inner.slots.get(&key).map(|s| s.buckets).unwrap_or_default();
        drop(inner);
        buckets.roll(window);
        let buckets = buckets.plus(remote, window);
        let n = |kind: Kind| {
            let c = buckets.scaled(kind.index(), offset).div_ceil(WINDOW_MS);
            u32::try_from(c).unwrap_or(u32::MAX)
        };
        Counts {
            connections: n(Kind::Connections),
            messages: n(Kind::Messages),
            recipients: n(Kind::Recipients),
        }
    }

    /// Forgets `key` (`screen clear`); true when it was known. In
    /// cluster mode the other nodes' counts are forgotten too, until the
    /// next exchange brings them back.
    pub fn forget(&self, key: AddrKey) -> bool {
        let mut inner = self.lock();
        inner.dirty.remove(&key);
        inner.remote.remove(&key);
        match inner.slots.remove(&key) {
            Some(slot) => {
                inner.order.remove(&slot.seen);
                true
            }
            None => false,
        }
    }

    /// How many clients the table holds now.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// True when the table holds no client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cluster mode: from now on the table remembers which clients it
    /// counted, for [`RateTable::changed`] (a single node never calls it
    /// and keeps no such set).
    pub fn share(&self) {
        self.lock().sharing = true;
    }

    /// This node's counts of at most `most` clients counted since the last
    /// call (cluster mode: what to push), for the current minute and the
    /// one before (a minute counted nothing is left out); those clients
    /// are no longer marked as changed. Counts are absolute, so pushing
    /// the same ones twice changes nothing.
    pub fn changed(&self, most: usize) -> Vec<MinuteCounts> {
        let window = self.clock.unix_millis() / WINDOW_MS;
        let mut inner = self.lock();
        let keys: Vec<AddrKey> = inner.dirty.iter().take(most).copied().collect();
        let mut out = Vec::with_capacity(keys.len() * 2);
        for key in keys {
            inner.dirty.remove(&key);
            let Some(slot) = inner.slots.get(&key) else {
                continue;
            };
            let mut b = slot.buckets;
            b.roll(window);
            for (minute, counts) in [(window, b.current), (window.saturating_sub(1), b.previous)] {
                if counts != [0; 3] {
                    out.push(MinuteCounts {
                        key,
                        minute,
                        counts,
                    });
                }
            }
        }
        out
    }

    /// Marks `keys` as changed again (their push failed: the next
    /// exchange sends them).
    pub fn requeue(&self, keys: impl IntoIterator<Item = AddrKey>) {
        let mut inner = self.lock();
        for key in keys {
            if inner.slots.contains_key(&key) {
                inner.dirty.insert(key);
            }
        }
    }

    /// Replaces the other nodes' counts with `counts` (cluster mode: their
    /// sums, as pulled); only the current and previous minutes matter,
    /// and at most the table's capacity of clients is kept.
    pub fn set_remote(&self, counts: impl IntoIterator<Item = MinuteCounts>) {
        let window = self.clock.unix_millis() / WINDOW_MS;
        let mut remote: HashMap<AddrKey, Buckets> = HashMap::new();
        for c in counts {
            let fresh = c.minute == window || c.minute.saturating_add(1) == window;
            if !fresh || (remote.len() >= self.capacity && !remote.contains_key(&c.key)) {
                continue;
            }
            let b = remote.entry(c.key).or_insert(Buckets {
                window,
                ..Buckets::default()
            });
            let bucket = if c.minute == window {
                &mut b.current
            } else {
                &mut b.previous
            };
            for (into, n) in bucket.iter_mut().zip(c.counts) {
                *into = into.saturating_add(n);
            }
        }
        self.lock().remote = remote;
    }
}

/// One client's counts of one minute, as nodes exchange them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCounts {
    /// The client (IPv4 address or IPv6 /64).
    pub key: AddrKey,
    /// The minute: Unix milliseconds / 60,000.
    pub minute: u64,
    /// Connections, messages, recipients (the order of [`Kind::ALL`]).
    pub counts: [u32; 3],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestClock;
    use std::net::IpAddr;

    fn key(ip: &str) -> AddrKey {
        AddrKey::of(ip.parse::<IpAddr>().unwrap())
    }

    fn table(capacity: usize) -> (Arc<TestClock>, RateTable) {
        // 30 s into a minute, so both buckets are exercised.
        let clock = Arc::new(TestClock::at_millis(1_700_000_010_000));
        (clock.clone(), RateTable::new(capacity, clock))
    }

    #[test]
    fn a_limit_refuses_with_a_hint_that_is_enough_and_not_more() {
        let (clock, t) = table(16);
        let k = key("192.0.2.1");
        for _ in 0..3 {
            t.check(k, Kind::Messages, 3).unwrap();
        }
        let hint = t.check(k, Kind::Messages, 3).unwrap_err();
        assert!(hint.as_secs() >= 1, "{hint:?}");
        assert_eq!(t.count(k).messages, 3, "the refusal was counted");
        // One second short of the hint: still refused.
        clock.advance(Duration::from_secs(hint.as_secs() - 1));
        assert!(t.check(k, Kind::Messages, 3).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.check(k, Kind::Messages, 3), Ok(()));
    }

    #[test]
    fn a_client_recovers_fully_after_the_window() {
        let (clock, t) = table(16);
        let k = key("192.0.2.1");
        for _ in 0..5 {
            t.check(k, Kind::Connections, 5).unwrap();
        }
        assert!(t.check(k, Kind::Connections, 5).is_err());
        clock.advance(Duration::from_secs(120));
        assert_eq!(t.count(k), Counts::default());
        for _ in 0..5 {
            t.check(k, Kind::Connections, 5).unwrap();
        }
    }

    #[test]
    fn the_previous_minute_still_weighs_after_the_bucket_changes() {
        let (clock, t) = table(16);
        let k = key("192.0.2.1");
        for _ in 0..4 {
            t.check(k, Kind::Recipients, 4).unwrap();
        }
        // 40 s later (10 s into the next minute) the previous minute
        // weighs 50/60 of its 4: one more fits, not four as a fixed bucket
        // would allow.
        clock.advance(Duration::from_secs(40));
        t.check(k, Kind::Recipients, 4).unwrap();
        assert!(t.check(k, Kind::Recipients, 4).is_err());
        assert_eq!(t.count(k).recipients, 5, "4 × 50/60 + 1, rounded up");
    }

    #[test]
    fn kinds_count_apart_and_no_limit_still_counts() {
        let (_clock, t) = table(16);
        let k = key("192.0.2.1");
        t.check(k, Kind::Connections, 1).unwrap();
        t.check(k, Kind::Messages, 1).unwrap();
        for _ in 0..10 {
            t.check(k, Kind::Recipients, 0).unwrap();
        }
        assert_eq!(
            t.count(k),
            Counts {
                connections: 1,
                messages: 1,
                recipients: 10
            }
        );
        assert!(t.check(k, Kind::Connections, 1).is_err());
    }

    #[test]
    fn addresses_of_one_ipv6_64_share_a_budget() {
        let (_clock, t) = table(16);
        t.check(key("2001:db8:0:1::1"), Kind::Connections, 2)
            .unwrap();
        t.check(key("2001:db8:0:1::ffff:2"), Kind::Connections, 2)
            .unwrap();
        assert!(
            t.check(key("2001:db8:0:1:8000::3"), Kind::Connections, 2)
                .is_err()
        );
        // The next /64 has its own budget, as has an IPv4 neighbour.
        t.check(key("2001:db8:0:2::1"), Kind::Connections, 2)
            .unwrap();
        assert_eq!(t.count(key("2001:db8:0:1::9")).connections, 2);
        assert_eq!(t.count(key("2001:db8:0:2::9")).connections, 1);
    }

    #[test]
    fn forget_resets_a_client() {
        let (_clock, t) = table(16);
        let k = key("198.51.100.7");
        t.check(k, Kind::Messages, 1).unwrap();
        assert!(t.check(k, Kind::Messages, 1).is_err());
        assert!(t.forget(k));
        assert!(!t.forget(k));
        t.check(k, Kind::Messages, 1).unwrap();
    }

    #[test]
    fn the_table_stays_at_capacity_under_100000_clients() {
        let (_clock, t) = table(DEFAULT_CAPACITY);
        let ip = |i: u32| AddrKey::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..100_000 {
            t.check(ip(i), Kind::Connections, 2).unwrap();
            assert!(t.len() <= DEFAULT_CAPACITY);
        }
        assert_eq!(t.len(), DEFAULT_CAPACITY);
        // The oldest went first; the newest are counted and limited.
        assert_eq!(t.count(ip(0)).connections, 0);
        assert_eq!(
            t.count(ip(100_000 - DEFAULT_CAPACITY as u32)).connections,
            1
        );
        let newest = ip(99_999);
        t.check(newest, Kind::Connections, 2).unwrap();
        assert!(t.check(newest, Kind::Connections, 2).is_err());
        // A client seen again moves to the back of the eviction order.
        let old = ip(100_000 - DEFAULT_CAPACITY as u32);
        t.check(old, Kind::Connections, 2).unwrap();
        t.check(ip(200_000), Kind::Connections, 2).unwrap();
        assert_eq!(t.count(old).connections, 2);
        assert_eq!(t.len(), DEFAULT_CAPACITY);
    }

    /// Cluster mode: the other nodes' counts add to this node's, so the
    /// limit is the cluster's; what this node counted is handed out once
    /// per change, and handed out again after a failed push.
    #[test]
    fn remote_counts_add_to_the_local_ones() {
        let (clock, t) = table(16);
        t.share();
        let k = key("192.0.2.1");
        let window = clock.unix_millis() / WINDOW_MS;
        t.check(k, Kind::Connections, 5).unwrap();
        t.set_remote([
            MinuteCounts {
                key: k,
                minute: window,
                counts: [3, 0, 0],
            },
            // Too old to matter: ignored.
            MinuteCounts {
                key: k,
                minute: window - 5,
                counts: [100, 0, 0],
            },
        ]);
        assert_eq!(t.count(k).connections, 4);
        t.check(k, Kind::Connections, 5).unwrap();
        assert!(
            t.check(k, Kind::Connections, 5).is_err(),
            "3 remote + 2 local"
        );
        // Another client is not affected.
        t.check(key("192.0.2.2"), Kind::Connections, 5).unwrap();
        let changed = t.changed(100);
        assert_eq!(changed.len(), 2, "{changed:?}");
        let mine = changed.iter().find(|c| c.key == k).unwrap();
        assert_eq!((mine.minute, mine.counts), (window, [2, 0, 0]));
        assert!(t.changed(100).is_empty(), "handed out once");
        t.requeue([k]);
        assert_eq!(t.changed(100).len(), 1, "again after a failed push");
        // Remote counts of the previous minute weigh as local ones do, and
        // roll away with the clock.
        clock.advance(Duration::from_secs(120));
        assert_eq!(t.count(k).connections, 0);
        // An empty pull (single node) changes nothing else.
        t.set_remote([]);
        t.check(k, Kind::Connections, 1).unwrap();
    }

    #[test]
    fn changed_is_bounded_per_call() {
        let (_clock, t) = table(1000);
        t.check(key("192.0.2.1"), Kind::Messages, 0).unwrap();
        assert!(t.changed(10).is_empty(), "a single node remembers nothing");
        t.share();
        for i in 0..500u32 {
            t.check(AddrKey::V4(std::net::Ipv4Addr::from(i)), Kind::Messages, 0)
                .unwrap();
        }
        assert_eq!(t.changed(200).len(), 200);
        assert_eq!(t.changed(1000).len(), 300);
    }
}
