//! DNSSEC validation by the production resolver against the test DNS
//! server's signed root and zones: secure, insecure (an unsigned zone
//! under the signed root), bogus (a broken signature) and failures.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use portcullis_dns::{
    DnsError, DnsSecurity, DnssecHealth, DnssecMode, DnssecSettings, HickoryResolver, Resolver,
    Tlsa,
};
use portcullis_test_support::dns::{FailMode, TestDns};

/// A test DNS server with `signed.test` signed, and a validating resolver
/// trusting the server's root (the anchor file lives in `dir`).
async fn setup(dir: &tempfile::TempDir) -> (TestDns, HickoryResolver) {
    let dns = TestDns::start().await;
    dns.sign_zone("signed.test");
    let anchor = dir.path().join("anchor.key");
    std::fs::write(&anchor, dns.trust_anchor()).expect("write the anchor");
    let settings = DnssecSettings {
        mode: DnssecMode::Validate,
        trust_anchors: vec![anchor],
    };
    let resolver = HickoryResolver::with_dnssec(&[dns.addr()], Duration::from_secs(2), &settings)
        .expect("resolver");
    (dns, resolver)
}

const HASH: [u8; 32] = [0xab; 32];

#[tokio::test]
async fn signed_zone_answers_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, r) = setup(&dir).await;
    dns.add_mx("signed.test", 10, "mx.signed.test");
    dns.add_a("mx.signed.test", Ipv4Addr::new(192, 0, 2, 1));
    dns.add_tlsa("_25._tcp.mx.signed.test", 3, 1, 1, &HASH);

    let mx = r.mx_secured("signed.test").await.unwrap();
    assert_eq!(mx.security, DnsSecurity::Secure);
    assert_eq!(mx.value[0].exchange, "mx.signed.test");

    let addrs = r.addresses_secured("mx.signed.test").await.unwrap();
    assert_eq!(addrs.value, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]);
    assert_eq!(
        addrs.security,
        DnsSecurity::Secure,
        "A secure, AAAA proven absent"
    );

    let tlsa = r.tlsa("_25._tcp.mx.signed.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Secure);
    assert_eq!(
        tlsa.value,
        vec![Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: HASH.to_vec()
        }]
    );
}

#[tokio::test]
async fn unsigned_zone_answers_are_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, r) = setup(&dir).await;
    dns.add_mx("plain.test", 10, "mx.plain.test");
    dns.add_a("mx.plain.test", Ipv4Addr::new(192, 0, 2, 2));
    dns.add_tlsa("_25._tcp.mx.plain.test", 3, 1, 1, &HASH);

    let mx = r.mx_secured("plain.test").await.unwrap();
    assert_eq!(mx.security, DnsSecurity::Insecure);
    assert_eq!(mx.value[0].exchange, "mx.plain.test");
    let addrs = r.addresses_secured("mx.plain.test").await.unwrap();
    assert_eq!(addrs.security, DnsSecurity::Insecure);
    assert_eq!(addrs.value.len(), 1);
    let tlsa = r.tlsa("_25._tcp.mx.plain.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Insecure);
    // The plain methods answer as without DNSSEC.
    assert_eq!(
        r.ipv4("mx.plain.test").await.unwrap(),
        vec![Ipv4Addr::new(192, 0, 2, 2)]
    );
    let none = r.ipv4("nothing.plain.test").await.unwrap_err();
    assert!(none.is_not_found(), "{none:?}");
}

#[tokio::test]
async fn broken_signature_is_bogus_and_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, r) = setup(&dir).await;
    dns.add_a("mx.signed.test", Ipv4Addr::new(192, 0, 2, 1));
    dns.add_tlsa("_25._tcp.mx.signed.test", 3, 1, 1, &HASH);
    dns.break_signature("_25._tcp.mx.signed.test");
    dns.break_signature("mx.signed.test");

    let err = r.tlsa("_25._tcp.mx.signed.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus { .. }), "{err:?}");
    assert!(err.is_temporary());
    let err = r.addresses_secured("mx.signed.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus { .. }), "{err:?}");
    let err = r.ipv4("mx.signed.test").await.unwrap_err();
    assert!(err.is_temporary() && !err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn servfail_on_tlsa_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, r) = setup(&dir).await;
    dns.fail("_25._tcp.mx.signed.test", FailMode::ServFail);
    let err = r.tlsa("_25._tcp.mx.signed.test").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
}

/// With DNSSEC off even a signed zone's answers are insecure.
#[tokio::test]
async fn off_is_always_insecure() {
    let dns = TestDns::start().await;
    dns.sign_zone("signed.test");
    dns.add_tlsa("_25._tcp.mx.signed.test", 3, 1, 1, &HASH);
    let r = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).expect("resolver");
    let tlsa = r.tlsa("_25._tcp.mx.signed.test").await.unwrap();
    assert_eq!(tlsa.security, DnsSecurity::Insecure);
    assert_eq!(tlsa.value.len(), 1);
}

/// What `validate` with only the root's keys makes of a zone no chain
/// from the real root reaches (the unsigned test zones of the other
/// tests): not insecure but bogus, a temporary failure. So tests with
/// unsigned zones set `[dns] dnssec = "off"`.
#[tokio::test]
async fn validate_from_the_real_root_fails_unsigned_test_zones() {
    let dns = TestDns::start().await;
    dns.add_a("mx.plain.test", Ipv4Addr::new(192, 0, 2, 2));
    let settings = DnssecSettings {
        mode: DnssecMode::Validate,
        trust_anchors: Vec::new(),
    };
    let r = HickoryResolver::with_dnssec(&[dns.addr()], Duration::from_secs(2), &settings)
        .expect("resolver");
    let err = r.ipv4("mx.plain.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Bogus { .. }), "{err:?}");
}

/// `trust-ad`: secure exactly when the (loopback) resolver set AD; no
/// validation of its own.
#[tokio::test]
async fn trust_ad_believes_the_ad_bit() {
    let dns = TestDns::start().await;
    dns.add_tlsa("_25._tcp.mx.vouched.test", 3, 1, 1, &HASH);
    dns.add_tlsa("_25._tcp.mx.plain.test", 3, 1, 1, &HASH);
    dns.set_authentic("_25._tcp.mx.vouched.test");
    let settings = DnssecSettings {
        mode: DnssecMode::TrustAd,
        trust_anchors: Vec::new(),
    };
    let r = HickoryResolver::with_dnssec(&[dns.addr()], Duration::from_secs(2), &settings)
        .expect("resolver");
    let vouched = r.tlsa("_25._tcp.mx.vouched.test").await.unwrap();
    assert_eq!(vouched.security, DnsSecurity::Secure);
    let plain = r.tlsa("_25._tcp.mx.plain.test").await.unwrap();
    assert_eq!(plain.security, DnsSecurity::Insecure);
}

/// The start-up self-check: through a server that signs (its root
/// trusted), the root's SOA validates; through one that answers without
/// DNSSEC records (as a resolver that strips them), it is bogus and says
/// so; a server that does not answer says nothing either way; `off` has
/// nothing to check.
#[tokio::test]
async fn the_self_check_tells_a_path_that_carries_dnssec_from_one_that_strips_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_dns, r) = setup(&dir).await;
    assert_eq!(r.dnssec_self_check().await, DnssecHealth::Secure);

    // The same trust anchor, but a server that does not sign: every
    // answer lacks the proof the anchor demands.
    let plain = TestDns::start().await;
    let anchor = dir.path().join("anchor.key");
    let settings = DnssecSettings {
        mode: DnssecMode::Validate,
        trust_anchors: vec![anchor],
    };
    let stripped = HickoryResolver::with_dnssec(&[plain.addr()], Duration::from_secs(2), &settings)
        .expect("resolver");
    assert!(
        matches!(stripped.dnssec_self_check().await, DnssecHealth::Bogus(_)),
        "{:?}",
        stripped.dnssec_self_check().await
    );

    let failing = TestDns::start().await;
    failing.fail(".", FailMode::ServFail);
    let unknown =
        HickoryResolver::with_dnssec(&[failing.addr()], Duration::from_secs(2), &settings)
            .expect("resolver");
    assert!(
        matches!(unknown.dnssec_self_check().await, DnssecHealth::Unknown(_)),
        "{:?}",
        unknown.dnssec_self_check().await
    );

    let off = HickoryResolver::with_dnssec(
        &[plain.addr()],
        Duration::from_secs(2),
        &DnssecSettings::off(),
    )
    .expect("resolver");
    assert_eq!(off.dnssec_self_check().await, DnssecHealth::NotValidating);
}
