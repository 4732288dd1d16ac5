//! The greylist's keys. Every part is length-prefixed (two octets, big
//! endian), so no sender or recipient can make two different tuples
//! collide, whatever bytes it holds; the client network is a fixed-length
//! part placed first, so one network's entries (and one domain's) are a
//! key prefix that `screen show` lists and `screen clear` removes.
//!
//! - triplet: `t` ‖ network ‖ sender ‖ recipient, network = `4` + the /24's
//!   three octets, or `6` + the /64's eight octets;
//! - verified pair: `d` ‖ domain ‖ recipient;
//! - domain trust: `c` ‖ domain.

use portcullis_types::{Address, Domain, ReversePath};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TRIPLET: u8 = b't';
const PAIR: u8 = b'd';
const TRUST: u8 = b'c';

/// Appends `part` with its length (parts are addresses and domains, far
/// under 64 KiB; a longer one is cut, which only merges keys of a sender
/// that is already invalid).
fn push_part(out: &mut Vec<u8>, part: &str) {
    let bytes = &part.as_bytes()[..part.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An address as keys hold it: lowercase, so a sender that changes the
/// case of its retry is the same sender.
fn address(a: &Address) -> String {
    a.to_string().to_ascii_lowercase()
}

/// The prefix of every triplet of `ip`'s network (IPv4 /24, IPv6 /64;
/// IPv4-mapped IPv6 as IPv4).
pub(crate) fn network_prefix(ip: IpAddr) -> Vec<u8> {
    let mut out = vec![TRIPLET];
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'4');
            out.extend_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) => {
            out.push(b'6');
            out.extend_from_slice(&v6.octets()[..8]);
        }
    }
    out
}

/// The classic triplet: client network, sender (empty for `<>`),
/// recipient.
pub(crate) fn triplet(ip: IpAddr, sender: &ReversePath, recipient: &Address) -> Vec<u8> {
    let mut out = network_prefix(ip);
    push_part(&mut out, &sender.address().map(address).unwrap_or_default());
    push_part(&mut out, &address(recipient));
    out
}

/// The prefix of every verified pair of `domain`.
pub(crate) fn pair_prefix(domain: &Domain) -> Vec<u8> {
    let mut out = vec![PAIR];
    push_part(&mut out, domain.as_str());
    out
}

/// The pair of a verified sender domain and a recipient.
pub(crate) fn pair(domain: &Domain, recipient: &Address) -> Vec<u8> {
    let mut out = pair_prefix(domain);
    push_part(&mut out, &address(recipient));
    out
}

/// The pass count (trust) of a verified domain.
pub(crate) fn trust(domain: &Domain) -> Vec<u8> {
    let mut out = vec![TRUST];
    push_part(&mut out, domain.as_str());
    out
}

/// Splits the length-prefixed parts of `rest`; `None` if malformed.
fn parts(mut rest: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let part = rest.get(2..2 + len)?;
        out.push(String::from_utf8_lossy(part).into_owned());
        rest = &rest[2 + len..];
    }
    Some(out)
}

/// A key for people: `192.0.2.0/24 a@b.test -> c@d.test`,
/// `domain b.test -> c@d.test`, `trust b.test`; `None` if malformed.
pub(crate) fn describe(key: &[u8]) -> Option<String> {
    let (&kind, rest) = key.split_first()?;
    match kind {
        TRIPLET => {
            let (net, rest) = match rest.first()? {
                b'4' => {
                    let o = rest.get(1..4)?;
                    (
                        format!("{}/24", Ipv4Addr::new(o[0], o[1], o[2], 0)),
                        &rest[4..],
                    )
                }
                b'6' => {
                    let mut o = [0u8; 16];
                    o[..8].copy_from_slice(rest.get(1..9)?);
                    (format!("{}/64", Ipv6Addr::from(o)), &rest[9..])
                }
                _ => return None,
            };
            let [sender, rcpt] = <[String; 2]>::try_from(parts(rest)?).ok()?;
            Some(format!("{net} <{sender}> -> {rcpt}"))
        }
        PAIR => {
            let [domain, rcpt] = <[String; 2]>::try_from(parts(rest)?).ok()?;
            Some(format!("domain {domain} -> {rcpt}"))
        }
        TRUST => {
            let [domain] = <[String; 1]>::try_from(parts(rest)?).ok()?;
            Some(format!("trust {domain}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }
    fn path(s: &str) -> ReversePath {
        ReversePath::parse(s).unwrap()
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        // Both tuples concatenate to "a@x.testb@y.test": only the length
        // prefixes keep them apart.
        let net = ip("192.0.2.1");
        let a = triplet(net, &path("a@x.test"), &addr("b@y.test"));
        let b = triplet(net, &path("a@x.te"), &addr("stb@y.test"));
        assert_ne!(a, b);
        let d = |s: &str| Domain::parse(s).unwrap();
        assert_ne!(
            pair(&d("a.test"), &addr("b@c.test")),
            pair(&d("a.tes"), &addr("tb@c.test"))
        );
    }

    #[test]
    fn one_network_shares_a_prefix_and_the_next_does_not() {
        let r = addr("u@ours.test");
        let s = path("s@them.test");
        let p = network_prefix(ip("192.0.2.200"));
        assert!(triplet(ip("192.0.2.1"), &s, &r).starts_with(&p));
        assert!(!triplet(ip("192.0.3.1"), &s, &r).starts_with(&p));
        let p6 = network_prefix(ip("2001:db8:1:2::1"));
        assert!(triplet(ip("2001:db8:1:2:ffff::9"), &s, &r).starts_with(&p6));
        assert!(!triplet(ip("2001:db8:1:3::1"), &s, &r).starts_with(&p6));
        assert_eq!(network_prefix(ip("::ffff:192.0.2.9")), p);
    }

    #[test]
    fn a_domain_prefix_does_not_cover_a_longer_domain() {
        let short = pair_prefix(&Domain::parse("b.test").unwrap());
        let long = pair(&Domain::parse("b.testing").unwrap(), &addr("u@ours.test"));
        assert!(!long.starts_with(&short));
        let t = trust(&Domain::parse("b.test").unwrap());
        assert!(!trust(&Domain::parse("b.testing").unwrap()).starts_with(&t));
    }

    #[test]
    fn keys_describe_themselves() {
        let k = triplet(ip("192.0.2.7"), &path(""), &addr("U@Ours.test"));
        assert_eq!(describe(&k).unwrap(), "192.0.2.0/24 <> -> u@ours.test");
        let k = triplet(ip("2001:db8::1"), &path("a@b.test"), &addr("u@ours.test"));
        assert_eq!(
            describe(&k).unwrap(),
            "2001:db8::/64 <a@b.test> -> u@ours.test"
        );
        let d = Domain::parse("b.test").unwrap();
        assert_eq!(
            describe(&pair(&d, &addr("u@ours.test"))).unwrap(),
            "domain b.test -> u@ours.test"
        );
        assert_eq!(describe(&trust(&d)).unwrap(), "trust b.test");
        assert_eq!(describe(b"t4\x01"), None);
        assert_eq!(describe(b"c\x00\x09ab"), None);
    }
}
