//! The key per-client limits count under: an IPv4 address, or an IPv6 /64.
//!
//! Why an IPv6 /64: RFC 4291 §2.5.1 and RFC 7421 make /64 the size of one
//! subnet, and a single host is routinely given a whole /64 (SLAAC, RFC
//! 8981 temporary addresses), so counting exact IPv6 addresses would give
//! one client 2^64 budgets. IPv4-mapped IPv6 peers count as their IPv4
//! address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// What per-address limits count under: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address (also from an IPv4-mapped IPv6 address).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address: its /64.
    V6(u64),
}

impl AddrKey {
    /// The key `ip` counts under: IPv4-mapped IPv6 as its IPv4 address,
    /// other IPv6 addresses as their /64.
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4),
                None => AddrKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for AddrKey {
    /// `192.0.2.1` or `2001:db8:1:2::/64`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrKey::V4(v4) => v4.fmt(f),
            AddrKey::V6(prefix) => {
                let net = std::net::Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(f, "{net}/64")
            }
        }
    }
}
