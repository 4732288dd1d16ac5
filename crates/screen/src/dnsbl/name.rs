//! The name a client's address is looked up at in a DNS list (RFC 5782
//! §2.1 for IPv4, §2.4 for IPv6).

use portcullis_types::Domain;
use std::fmt::Write as _;
use std::net::IpAddr;

/// The address a client is looked up (and cached) as: an IPv4-mapped IPv6
/// address (`::ffff:192.0.2.1`, a dual-stack socket's view of an IPv4
/// client) is that IPv4 address, so it is listed where IPv4 lists put it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip`'s query name under `zone`: the four octets of an IPv4 address in
/// reverse order (`2.0.0.127.zone`, RFC 5782 §2.1), the 32 nibbles of an
/// IPv6 address in reverse order, lowercase hex (RFC 5782 §2.4); an
/// IPv4-mapped IPv6 address as its IPv4 address.
pub fn query_name(ip: IpAddr, zone: &Domain) -> String {
    let mut name = String::with_capacity(64 + zone.as_str().len());
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let _ = write!(name, "{octet}.");
            }
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
        }
    }
    name.push_str(zone.as_str());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn case(ip: &str, zone: &str, expected: &str) {
        let zone = Domain::parse(zone).unwrap();
        assert_eq!(query_name(ip.parse().unwrap(), &zone), expected);
    }

    /// RFC 5782 §2.1: `192.0.2.99` is looked up as `99.2.0.192.zone`.
    #[test]
    fn ipv4_octets_reversed() {
        case(
            "192.0.2.99",
            "bl.example.test",
            "99.2.0.192.bl.example.test",
        );
        case("127.0.0.2", "BL.Example.Test.", "2.0.0.127.bl.example.test");
    }

    /// RFC 5782 §2.4's own example: 32 nibbles, least significant first.
    #[test]
    fn ipv6_nibbles_reversed() {
        case(
            "2001:db8:1:2:3:4:567:89ab",
            "ugly.example.com",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com",
        );
        case(
            "::1",
            "bl.test",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test",
        );
    }

    /// A dual-stack socket sees an IPv4 client as `::ffff:a.b.c.d`; lists
    /// know it by its IPv4 address.
    #[test]
    fn ipv4_mapped_is_ipv4() {
        case("::ffff:192.0.2.99", "bl.test", "99.2.0.192.bl.test");
        assert_eq!(
            canonical_ip("::ffff:192.0.2.99".parse().unwrap()),
            "192.0.2.99".parse::<IpAddr>().unwrap()
        );
        // Not mapped: stays IPv6.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}
