//! Never deliver to ourselves: an MX host that resolves to one of our own
//! listening sockets would hand the message straight back to this server,
//! which would queue it and deliver it to itself again, forever (RFC 5321
//! §5.1: an SMTP client must not deliver to itself through an MX it is the
//! best of; Postfix refuses with "mail for DOMAIN loops back to myself").
//!
//! A target (IP address, port contacted) is this server when it is one of
//! our listeners' addresses, or when a listener on that port is bound to
//! the unspecified address (0.0.0.0, ::) and the IP belongs to this machine.
//! IPv4-mapped IPv6 addresses compare as IPv4. The test "belongs to this
//! machine" is injected, so tests can decide it; production binds a UDP
//! socket to the address, which succeeds only for a local address.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

/// Decides whether an IP address belongs to this machine.
pub type LocalTest = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Our own listening sockets, and how to tell a local address: answers
/// "would connecting to this target reach this server?".
#[derive(Clone)]
pub struct SelfAddresses {
    listeners: Vec<SocketAddr>,
    is_local: LocalTest,
}

impl std::fmt::Debug for SelfAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfAddresses")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl Default for SelfAddresses {
    /// No listeners: nothing is ever ourselves (a deliverer without an
    /// inbound side).
    fn default() -> Self {
        SelfAddresses::with_local_test(Vec::new(), Arc::new(|_| false))
    }
}

impl SelfAddresses {
    /// The server listening on `listeners` (their bound addresses), with
    /// the production local-address test ([`is_local_address`]).
    pub fn new(listeners: Vec<SocketAddr>) -> SelfAddresses {
        SelfAddresses::with_local_test(listeners, Arc::new(is_local_address))
    }

    /// As [`new`](Self::new), with `is_local` deciding which addresses
    /// belong to this machine (for tests).
    pub fn with_local_test(listeners: Vec<SocketAddr>, is_local: LocalTest) -> SelfAddresses {
        let listeners = listeners
            .into_iter()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .collect();
        SelfAddresses {
            listeners,
            is_local,
        }
    }

    /// True when connecting to `target` would reach one of our listeners.
    pub fn is_self(&self, target: SocketAddr) -> bool {
        let ip = canonical(target.ip());
        self.listeners
            .iter()
            .filter(|l| l.port() == target.port())
            .any(|l| {
                let ours = l.ip();
                ours == ip
                    // Connecting to 0.0.0.0 or :: reaches this host's
                    // loopback (Linux), so a loopback or wildcard listener.
                    || (ip.is_unspecified() && (ours.is_unspecified() || ours.is_loopback()))
                    || (ours.is_unspecified() && covers(ours, ip) && (self.is_local)(ip))
            })
    }
}

/// The production test: true when `ip` is an address of this machine
/// (binding a UDP socket to it succeeds; nothing is sent), or unspecified
/// (connecting to it reaches this machine).
pub fn is_local_address(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_unspecified() || UdpSocket::bind((ip, 0)).is_ok()
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A wildcard listener's reach: 0.0.0.0 takes IPv4 only, :: takes both
/// (dual-stack, the Linux default).
fn covers(wildcard: IpAddr, ip: IpAddr) -> bool {
    wildcard.is_ipv6() || ip.is_ipv4()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Pretends 192.0.2.7 and 2001:db8::7 are this machine's addresses.
    fn ours(listeners: &[&str]) -> SelfAddresses {
        SelfAddresses::with_local_test(
            listeners.iter().map(|s| sa(s)).collect(),
            Arc::new(|ip: IpAddr| {
                ip == IpAddr::from([192, 0, 2, 7])
                    || ip == "2001:db8::7".parse::<IpAddr>().unwrap()
                    || ip.is_loopback()
            }),
        )
    }

    #[track_caller]
    fn case(listeners: &[&str], target: &str, want: bool) {
        assert_eq!(
            ours(listeners).is_self(sa(target)),
            want,
            "listeners {listeners:?}, target {target}"
        );
    }

    /// One row per rule: exact address, wildcard listeners by family,
    /// IPv4-mapped IPv6, unspecified targets, other ports and hosts.
    #[test]
    fn which_targets_are_ourselves() {
        // A listener on one address: only that address and port.
        case(&["127.0.0.1:2525"], "127.0.0.1:2525", true);
        case(&["127.0.0.1:2525"], "127.0.0.1:25", false);
        case(&["127.0.0.1:2525"], "127.0.0.2:2525", false);
        case(&["127.0.0.1:2525"], "192.0.2.7:2525", false);
        case(&["127.0.0.1:2525"], "[::ffff:127.0.0.1]:2525", true);
        case(&["[::ffff:127.0.0.1]:2525"], "127.0.0.1:2525", true);
        case(&["[2001:db8::7]:25"], "[2001:db8::7]:25", true);
        // A wildcard listener: every local address on its port.
        case(&["0.0.0.0:25"], "192.0.2.7:25", true);
        case(&["0.0.0.0:25"], "127.0.0.9:25", true);
        case(&["0.0.0.0:25"], "192.0.2.8:25", false);
        case(&["0.0.0.0:25"], "192.0.2.7:587", false);
        case(&["0.0.0.0:25"], "[::ffff:192.0.2.7]:25", true);
        case(&["0.0.0.0:25"], "[2001:db8::7]:25", false);
        case(&["[::]:25"], "[2001:db8::7]:25", true);
        case(&["[::]:25"], "192.0.2.7:25", true);
        case(&["[::]:25"], "[2001:db8::8]:25", false);
        // Unspecified targets reach this host.
        case(&["0.0.0.0:25"], "0.0.0.0:25", true);
        case(&["127.0.0.1:25"], "0.0.0.0:25", true);
        case(&["127.0.0.1:25"], "[::]:25", true);
        case(&["192.0.2.7:25"], "0.0.0.0:25", false);
        // No listeners: never ourselves.
        case(&[], "127.0.0.1:25", false);
        assert!(!SelfAddresses::default().is_self(sa("127.0.0.1:25")));
    }

    /// The production test against this machine's real interfaces.
    #[test]
    fn local_addresses_are_recognised_by_binding() {
        assert!(is_local_address(IpAddr::from([127, 0, 0, 1])));
        assert!(is_local_address(IpAddr::from([127, 0, 0, 42])));
        assert!(is_local_address(IpAddr::from([0, 0, 0, 0])));
        assert!(is_local_address("::ffff:127.0.0.1".parse().unwrap()));
        // TEST-NET-1 (RFC 5737) is never configured on a test machine.
        assert!(!is_local_address(IpAddr::from([192, 0, 2, 1])));
        let wildcard = SelfAddresses::new(vec![sa("0.0.0.0:2525")]);
        assert!(wildcard.is_self(sa("127.0.0.3:2525")));
        assert!(!wildcard.is_self(sa("192.0.2.1:2525")));
    }
}
