//! Connection slots: a total shared by every listener (`[limits]
//! max_connections`), a cap per listener (`[[listen]] max_connections`) and,
//! on each listener, a cap per client address (`[limits]
//! max_connections_per_ip`) where an address is an IPv4 address or an IPv6
//! /64. A place is released by dropping its guard.
//!
//! Why an IPv6 /64: RFC 4291 §2.5.1 and RFC 7421 make /64 the size of one
//! subnet, and a single host is routinely given a whole /64 (SLAAC, RFC
//! 8981 temporary addresses), so counting exact IPv6 addresses would give
//! one client 2^64 budgets. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`, what a
//! dual-stack socket reports for IPv4 clients) count as their IPv4 address.
//!
//! Why per listener: the point of a listener's cap is that a flood on port
//! 25 cannot lock authenticated users out of 587/465, and the per-address
//! count follows the same line, so a bot behind a NAT that fills its share
//! of port 25 does not shut the users behind the same NAT out of
//! submission.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[limits] max_connections` reached (all listeners together).
    Total,
    /// This listener's `max_connections` reached.
    Listener,
    /// `[limits] max_connections_per_ip` reached for this IPv4 address or
    /// IPv6 /64 on this listener.
    PerAddress,
}

pub use portcullis_types::AddrKey;

/// The total of open connections over all listeners.
#[derive(Clone)]
pub struct ConnLimit {
    open: Arc<AtomicU32>,
    max: u32,
}

impl ConnLimit {
    /// A total of at most `max` open connections.
    pub fn new(max: u32) -> ConnLimit {
        ConnLimit {
            open: Arc::new(AtomicU32::new(0)),
            max,
        }
    }

    /// Takes one place of the total, or says there is none.
    fn take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// The places of one listener: its own cap and its per-address caps, and
/// a share of the total.
#[derive(Clone)]
pub struct ListenerSlots {
    total: ConnLimit,
    inner: Arc<Mutex<Counts>>,
    max: u32,
}

struct Counts {
    open: u32,
    per_addr: HashMap<AddrKey, u32>,
}

/// Holds one connection's place; dropping it frees the place everywhere
/// it was counted.
pub struct ConnGuard {
    slots: ListenerSlots,
    key: AddrKey,
}

impl ListenerSlots {
    /// A listener taking at most `max` connections within `total` (the cap
    /// per address key is given with each [`ListenerSlots::acquire`]).
    pub fn new(total: ConnLimit, max: u32) -> ListenerSlots {
        ListenerSlots {
            total,
            inner: Arc::new(Mutex::new(Counts {
                open: 0,
                per_addr: HashMap::new(),
            })),
            max,
        }
    }

    /// Takes a place for a connection from `ip`, at most `max_per_addr`
    /// from its address key (the cap in force when the connection came: a
    /// reload may change it), or says why not. The client's own excess is
    /// named first (per address), then the listener's, then the server's.
    pub fn acquire(&self, ip: IpAddr, max_per_addr: u32) -> Result<ConnGuard, Refusal> {
        let key = AddrKey::of(ip);
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.per_addr.get(&key).copied().unwrap_or(0) >= max_per_addr {
            return Err(Refusal::PerAddress);
        }
        if c.open >= self.max {
            return Err(Refusal::Listener);
        }
        if !self.total.take() {
            return Err(Refusal::Total);
        }
        *c.per_addr.entry(key).or_insert(0) += 1;
        c.open += 1;
        Ok(ConnGuard {
            slots: self.clone(),
            key,
        })
    }

    /// Connections open on this listener now.
    #[cfg(test)]
    fn open(&self) -> u32 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).open
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.open = c.open.saturating_sub(1);
        if let Some(n) = c.per_addr.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_addr.remove(&self.key);
            }
        }
        drop(c);
        self.slots.total.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's slots with the per-address cap the server would
    /// give each `acquire`.
    struct Slots(ListenerSlots, u32);

    impl Slots {
        fn acquire(&self, ip: IpAddr) -> Result<ConnGuard, Refusal> {
            self.0.acquire(ip, self.1)
        }

        fn open(&self) -> u32 {
            self.0.open()
        }
    }

    fn slots(total: ConnLimit, max: u32, max_per_addr: u32) -> Slots {
        Slots(ListenerSlots::new(total, max), max_per_addr)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_and_release() {
        let l = slots(ConnLimit::new(3), 3, 2);
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let g1 = l.acquire(a).unwrap();
        let _g2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(Refusal::PerAddress));
        let _g3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).err(), Some(Refusal::Listener));
        assert_eq!(l.open(), 3);
        drop(g1);
        assert_eq!(l.open(), 2);
        assert!(l.acquire(a).is_ok());
    }

    /// Filling one listener leaves the others their places: the point of
    /// per-listener caps (port 25 full, 587 still served).
    #[test]
    fn a_full_listener_does_not_take_anothers_places() {
        let total = ConnLimit::new(4);
        let smtp = slots(total.clone(), 2, 10);
        let submission = slots(total.clone(), 2, 10);
        let _s: Vec<_> = (1..=2)
            .map(|i| smtp.acquire(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(smtp.acquire(ip("192.0.2.9")).err(), Some(Refusal::Listener));
        let g = submission.acquire(ip("192.0.2.9")).unwrap();
        let _h = submission.acquire(ip("192.0.2.10")).unwrap();
        drop(g);
        assert!(submission.acquire(ip("192.0.2.11")).is_ok());
    }

    /// The total binds when the listeners' own caps add up to more.
    #[test]
    fn the_total_caps_all_listeners_together() {
        let total = ConnLimit::new(2);
        let a = slots(total.clone(), 2, 10);
        let b = slots(total.clone(), 2, 10);
        let g = a.acquire(ip("192.0.2.1")).unwrap();
        let _h = b.acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(b.acquire(ip("192.0.2.3")).err(), Some(Refusal::Total));
        // A refusal by the total takes nothing from the listener.
        assert_eq!(b.open(), 1);
        drop(g);
        assert!(b.acquire(ip("192.0.2.3")).is_ok());
    }

    /// The same address may use its budget on each listener.
    #[test]
    fn per_address_counts_are_per_listener() {
        let total = ConnLimit::new(10);
        let a = slots(total.clone(), 10, 1);
        let b = slots(total.clone(), 10, 1);
        let _g = a.acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(a.acquire(ip("192.0.2.1")).err(), Some(Refusal::PerAddress));
        assert!(b.acquire(ip("192.0.2.1")).is_ok());
    }

    /// IPv6 addresses in one /64 share one budget; another /64 has its own.
    #[test]
    fn ipv6_counts_per_64() {
        let l = slots(ConnLimit::new(100), 100, 2);
        let _a = l.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = l.acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8:1:2:dead:beef::7")).err(),
            Some(Refusal::PerAddress)
        );
        // Neighbouring /64s (one bit either side of the boundary).
        let _c = l.acquire(ip("2001:db8:1:3::1")).unwrap();
        let _d = l.acquire(ip("2001:db8:1:1:ffff::1")).unwrap();
        let _e = l.acquire(ip("2001:db8:1:3::2")).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8:1:3::3")).err(),
            Some(Refusal::PerAddress)
        );
        assert_eq!(l.open(), 5);
    }

    #[test]
    fn releasing_one_address_of_a_64_frees_a_place_for_another() {
        let l = slots(ConnLimit::new(100), 100, 1);
        let g = l.acquire(ip("2001:db8::1")).unwrap();
        assert_eq!(
            l.acquire(ip("2001:db8::2")).err(),
            Some(Refusal::PerAddress)
        );
        drop(g);
        assert!(l.acquire(ip("2001:db8::2")).is_ok());
    }

    /// A dual-stack socket reports IPv4 clients as `::ffff:a.b.c.d`: they
    /// count as that IPv4 address, not as the /64 `::ffff:0:0/64` shared by
    /// every IPv4 client.
    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        assert_eq!(
            AddrKey::of(ip("::ffff:192.0.2.1")),
            AddrKey::of(ip("192.0.2.1"))
        );
        let l = slots(ConnLimit::new(100), 100, 1);
        let _a = l.acquire(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(l.acquire(ip("192.0.2.1")).err(), Some(Refusal::PerAddress));
        assert!(l.acquire(ip("::ffff:192.0.2.2")).is_ok());
    }

    #[test]
    fn keys_display_as_address_or_prefix() {
        assert_eq!(AddrKey::of(ip("192.0.2.1")).to_string(), "192.0.2.1");
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(AddrKey::of(ip("::1")).to_string(), "::/64");
    }
}
