//! The answers of DNS lists per (client, zone), each kept until its TTL
//! runs out on the injected clock, in a table of bounded size.
//!
//! Clients choose their addresses (an IPv6 attacker has billions), so the
//! table must not grow with them: when it is full, the entry that expires
//! soonest goes (expired ones first), which under a flood of new clients
//! is roughly the oldest. An index ordered by expiry makes both that
//! eviction and the removal of expired entries O(log n).

use portcullis_types::Domain;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// What a list said about a client, as cached. Failures are never cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Listed, with the list's answers.
    Listed(Vec<Ipv4Addr>),
    /// Not on the list.
    NotListed,
}

/// Where an entry sits in the expiry index: its expiry (Unix
/// milliseconds), then a sequence number that keeps equal expiries apart.
type Slot = (u64, u64);

#[derive(Debug)]
struct Entry {
    value: Cached,
    slot: Slot,
}

/// The bounded cache. Not synchronised: the caller holds it in a mutex and
/// never across an await.
#[derive(Debug)]
pub(crate) struct ListCache {
    capacity: usize,
    by_ip: HashMap<IpAddr, HashMap<Domain, Entry>>,
    by_expiry: BTreeMap<Slot, (IpAddr, Domain)>,
    next_seq: u64,
}

impl ListCache {
    /// An empty cache holding at most `capacity` answers (at least one).
    pub(crate) fn new(capacity: usize) -> ListCache {
        ListCache {
            capacity: capacity.max(1),
            by_ip: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Changes the bound; entries over it go at the next insertion.
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// How many answers are cached (expired ones included until they are
    /// swept at the next insertion or read).
    pub(crate) fn len(&self) -> usize {
        self.by_expiry.len()
    }

    /// The live answer of `zone` for `ip` at `now` (Unix milliseconds); an
    /// expired one is removed.
    pub(crate) fn get(&mut self, ip: IpAddr, zone: &Domain, now: u64) -> Option<Cached> {
        let zones = self.by_ip.get(&ip)?;
        let entry = zones.get(zone)?;
        if entry.slot.0 > now {
            return Some(entry.value.clone());
        }
        let slot = entry.slot;
        self.remove(ip, zone, slot);
        None
    }

    /// Keeps `value` for `zone` and `ip` until `expires` (Unix
    /// milliseconds), replacing an older answer; makes room first.
    pub(crate) fn insert(
        &mut self,
        ip: IpAddr,
        zone: &Domain,
        value: Cached,
        expires: u64,
        now: u64,
    ) {
        if let Some(old) = self.by_ip.get(&ip).and_then(|z| z.get(zone)) {
            let slot = old.slot;
            self.remove(ip, zone, slot);
        }
        self.sweep(now);
        while self.by_expiry.len() >= self.capacity {
            let Some((&slot, (old_ip, old_zone))) = self.by_expiry.iter().next() else {
                break;
            };
            let (old_ip, old_zone) = (*old_ip, old_zone.clone());
            self.remove(old_ip, &old_zone, slot);
        }
        let slot = (expires, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_expiry.insert(slot, (ip, zone.clone()));
        self.by_ip
            .entry(ip)
            .or_default()
            .insert(zone.clone(), Entry { value, slot });
    }

    /// Forgets every answer about `ip`; how many.
    pub(crate) fn forget(&mut self, ip: IpAddr) -> u64 {
        let Some(zones) = self.by_ip.remove(&ip) else {
            return 0;
        };
        for entry in zones.values() {
            self.by_expiry.remove(&entry.slot);
        }
        zones.len() as u64
    }

    /// Removes the entries expired at `now`.
    fn sweep(&mut self, now: u64) {
        while let Some((&slot, (ip, zone))) = self.by_expiry.iter().next() {
            if slot.0 > now {
                break;
            }
            let (ip, zone) = (*ip, zone.clone());
            self.remove(ip, &zone, slot);
        }
    }

    /// Removes one entry from both maps.
    fn remove(&mut self, ip: IpAddr, zone: &Domain, slot: Slot) {
        self.by_expiry.remove(&slot);
        if let Some(zones) = self.by_ip.get_mut(&ip) {
            zones.remove(zone);
            if zones.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn answers_live_until_they_expire() {
        let mut c = ListCache::new(10);
        let bl = zone("bl.test");
        c.insert(ip(1), &bl, Cached::NotListed, 2_000, 1_000);
        assert_eq!(c.get(ip(1), &bl, 1_999), Some(Cached::NotListed));
        assert_eq!(c.get(ip(1), &bl, 2_000), None);
        assert_eq!(c.len(), 0, "an expired entry is removed when read");
        assert_eq!(c.get(ip(2), &bl, 0), None);
    }

    #[test]
    fn a_new_answer_replaces_the_old_one() {
        let mut c = ListCache::new(10);
        let bl = zone("bl.test");
        c.insert(ip(1), &bl, Cached::NotListed, 2_000, 0);
        let listed = Cached::Listed(vec![Ipv4Addr::new(127, 0, 0, 2)]);
        c.insert(ip(1), &bl, listed.clone(), 5_000, 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(ip(1), &bl, 3_000), Some(listed));
    }

    /// The bound holds whatever the number of clients, and the entry that
    /// expires soonest is the one evicted.
    #[test]
    fn bounded_by_capacity() {
        let mut c = ListCache::new(100);
        let bl = zone("bl.test");
        for i in 0..10_000 {
            c.insert(ip(i), &bl, Cached::NotListed, 1_000_000 + u64::from(i), 0);
            assert!(c.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.by_ip.len(), 100);
        assert_eq!(c.get(ip(9_899), &bl, 0), None, "the oldest are gone");
        assert_eq!(c.get(ip(9_900), &bl, 0), Some(Cached::NotListed));
        assert_eq!(c.get(ip(9_999), &bl, 0), Some(Cached::NotListed));
    }

    /// Expired entries make room before live ones are evicted.
    #[test]
    fn expired_entries_go_first() {
        let mut c = ListCache::new(2);
        let bl = zone("bl.test");
        c.insert(ip(1), &bl, Cached::NotListed, 100, 0);
        c.insert(ip(2), &bl, Cached::NotListed, 10_000, 0);
        c.insert(ip(3), &bl, Cached::NotListed, 10_000, 500);
        assert_eq!(c.get(ip(2), &bl, 600), Some(Cached::NotListed));
        assert_eq!(c.get(ip(3), &bl, 600), Some(Cached::NotListed));
    }

    #[test]
    fn forget_drops_every_zone_of_one_client() {
        let mut c = ListCache::new(10);
        let (bl, wl) = (zone("bl.test"), zone("wl.test"));
        c.insert(ip(1), &bl, Cached::NotListed, 1_000, 0);
        c.insert(ip(1), &wl, Cached::NotListed, 1_000, 0);
        c.insert(ip(2), &bl, Cached::NotListed, 1_000, 0);
        assert_eq!(c.forget(ip(1)), 2);
        assert_eq!(c.forget(ip(1)), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(ip(1), &wl, 0), None);
        assert_eq!(c.get(ip(2), &bl, 0), Some(Cached::NotListed));
    }
}
