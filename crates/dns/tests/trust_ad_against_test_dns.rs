//! `[dns] dnssec = "trust-ad"` against the test DNS server standing in
//! for a validating loopback resolver: it sets AD on the names a test
//! marks authentic, and (as real resolvers, RFC 6840 §5.7) only when the
//! query asked with AD or DO. So these tests fail if the secured lookups
//! ask the way hickory-resolver does without validation (neither bit).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use portcullis_dns::{
    DnsError, DnsSecurity, DnssecMode, DnssecSettings, HickoryResolver, Resolver,
};
use portcullis_test_support::dns::{FailMode, TestDns};

const HASH: [u8; 32] = [0xab; 32];

fn trust_ad(dns: &TestDns, timeout: Duration) -> HickoryResolver {
    let settings = DnssecSettings {
        mode: DnssecMode::TrustAd,
        trust_anchors: Vec::new(),
    };
    HickoryResolver::with_dnssec(&[dns.addr()], timeout, &settings).expect("resolver")
}

#[tokio::test]
async fn answers_with_ad_are_secure() {
    let dns = TestDns::start().await;
    dns.add_mx("vouched.test", 20, "mx2.vouched.test");
    dns.add_mx("vouched.test", 10, "mx1.vouched.test");
    dns.add_a("mx1.vouched.test", Ipv4Addr::new(192, 0, 2, 1));
    dns.add_aaaa("mx1.vouched.test", Ipv6Addr::LOCALHOST);
    dns.add_tlsa("_25._tcp.mx1.vouched.test", 3, 1, 1, &HASH);
    for name in [
        "vouched.test",
        "mx1.vouched.test",
        "_25._tcp.mx1.vouched.test",
    ] {
        dns.set_authentic(name);
    }
    let r = trust_ad(&dns, Duration::from_secs(2));

    let mx = r.mx_secured("vouched.test").await.unwrap();
    assert_eq!(mx.security, DnsSecurity::Secure);
    let names: Vec<&str> = mx.value.iter().map(|m| m.exchange.as_str()).collect();
    assert_eq!(
        names,
        ["mx1.vouched.test", "mx2.vouched.test"],
        "by preference"
    );

    let addrs = r.addresses_secured("mx1.vouched.test").await.unwrap();
    assert_eq!(addrs.security, DnsSecurity::Secure);
    assert!(
        addrs
            .value
            .contains(&IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
    );
    assert!(addrs.value.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));

    let tlsa = r.tlsa("_25._tcp.mx1.vouched.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Secure);
    assert_eq!(tlsa.value.len(), 1);
    assert_eq!(
        (
            tlsa.value[0].usage,
            tlsa.value[0].selector,
            tlsa.value[0].matching
        ),
        (3, 1, 1)
    );
    assert_eq!(tlsa.value[0].data, HASH.to_vec());
}

#[tokio::test]
async fn answers_without_ad_are_insecure() {
    let dns = TestDns::start().await;
    dns.add_mx("plain.test", 10, "mx.plain.test");
    dns.add_a("mx.plain.test", Ipv4Addr::new(192, 0, 2, 2));
    dns.add_tlsa("_25._tcp.mx.plain.test", 3, 1, 1, &HASH);
    let r = trust_ad(&dns, Duration::from_secs(2));
    let mx = r.mx_secured("plain.test").await.unwrap();
    assert_eq!(mx.security, DnsSecurity::Insecure);
    let addrs = r.addresses_secured("mx.plain.test").await.unwrap();
    assert_eq!(addrs.security, DnsSecurity::Insecure);
    assert_eq!(addrs.value, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))]);
    let tlsa = r.tlsa("_25._tcp.mx.plain.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Insecure);
}

/// A host with only A records (AAAA: NODATA) under AD is secure; the
/// missing AAAA RRset does not make it insecure.
#[tokio::test]
async fn addresses_without_aaaa_are_secure_under_ad() {
    let dns = TestDns::start().await;
    dns.add_a("v4only.test", Ipv4Addr::new(192, 0, 2, 3));
    dns.set_authentic("v4only.test");
    let r = trust_ad(&dns, Duration::from_secs(2));
    let addrs = r.addresses_secured("v4only.test").await.unwrap();
    assert_eq!(addrs.security, DnsSecurity::Secure);
    assert_eq!(addrs.value, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3))]);
}

/// The CNAME chain the resolver followed is followed inside the answer;
/// its AD bit covers the whole answer.
#[tokio::test]
async fn cnames_in_the_answer_are_followed() {
    let dns = TestDns::start().await;
    dns.add_cname("_25._tcp.alias.test", "_25._tcp.target.test");
    dns.add_tlsa("_25._tcp.target.test", 3, 1, 1, &HASH);
    dns.set_authentic("_25._tcp.alias.test");
    let r = trust_ad(&dns, Duration::from_secs(2));
    let tlsa = r.tlsa("_25._tcp.alias.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Secure);
    assert_eq!(tlsa.value.len(), 1);
}

#[tokio::test]
async fn servfail_and_silence_are_temporary_never_no_record() {
    let dns = TestDns::start().await;
    dns.add_tlsa("_25._tcp.mx.fail.test", 3, 1, 1, &HASH);
    dns.set_authentic("_25._tcp.mx.fail.test");
    dns.fail("_25._tcp.mx.fail.test", FailMode::ServFail);
    dns.add_a("mx.quiet.test", Ipv4Addr::new(192, 0, 2, 5));
    dns.fail("mx.quiet.test", FailMode::Timeout);
    let r = trust_ad(&dns, Duration::from_millis(300));

    let err = r.tlsa("_25._tcp.mx.fail.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary { .. }), "{err:?}");
    assert!(
        err.to_string().contains("SERVFAIL") || err.to_string().contains("Server Failure"),
        "{err}"
    );
    let err = r.addresses_secured("mx.quiet.test").await.unwrap_err();
    assert!(err.is_temporary() && !err.is_not_found(), "{err:?}");

    dns.clear_fail("_25._tcp.mx.fail.test");
    let tlsa = r.tlsa("_25._tcp.mx.fail.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Secure);
}

#[tokio::test]
async fn nxdomain_and_nodata_are_not_found() {
    let dns = TestDns::start().await;
    dns.add_a("mx.none.test", Ipv4Addr::new(192, 0, 2, 6));
    dns.set_authentic("nothing.none.test");
    let r = trust_ad(&dns, Duration::from_secs(2));
    let err = r.tlsa("_25._tcp.nothing.none.test").await.unwrap_err();
    assert!(matches!(err, DnsError::NxDomain { .. }), "{err:?}");
    let err = r.mx_secured("mx.none.test").await.unwrap_err();
    assert!(
        matches!(err, DnsError::NoRecords { rtype: "MX", .. }),
        "{err:?}"
    );
    let err = r.addresses_secured("nothing.none.test").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

/// An answer too long for the advertised UDP size comes truncated and is
/// asked again over TCP, in full (20 records of 200 bytes: more than our
/// UDP buffer too, so only TCP can bring them all).
#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let dns = TestDns::start().await;
    let name = "_25._tcp.mx.big.test";
    for i in 0..20u8 {
        dns.add_tlsa(name, 3, 0, 0, &[i; 200]);
    }
    dns.set_authentic(name);
    let r = trust_ad(&dns, Duration::from_secs(2));
    let tlsa = r.tlsa(name).await.unwrap();
    assert_eq!(tlsa.value.len(), 20);
    assert_eq!(tlsa.security, DnsSecurity::Secure);
}

/// The plain lookups keep going through hickory and answer as before.
#[tokio::test]
async fn plain_lookups_are_unchanged() {
    let dns = TestDns::start().await;
    dns.add_mx("plain.test", 10, "mx.plain.test");
    dns.add_a("mx.plain.test", Ipv4Addr::new(192, 0, 2, 7));
    let r = trust_ad(&dns, Duration::from_secs(2));
    assert_eq!(
        r.mx("plain.test").await.unwrap()[0].exchange,
        "mx.plain.test"
    );
    assert_eq!(
        r.ipv4("mx.plain.test").await.unwrap(),
        vec![Ipv4Addr::new(192, 0, 2, 7)]
    );
}

/// `trust-ad` without explicit nameservers cannot be built.
#[test]
fn trust_ad_needs_nameservers() {
    let settings = DnssecSettings {
        mode: DnssecMode::TrustAd,
        trust_anchors: Vec::new(),
    };
    let err = HickoryResolver::with_dnssec(&[], Duration::from_secs(1), &settings).unwrap_err();
    assert!(err.to_string().contains("nameservers"), "{err}");
}
