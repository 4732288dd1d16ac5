//! The production resolver against a real DNS server on loopback: every
//! distinction the crate promises (records, null MX, NXDOMAIN versus no
//! records versus temporary failure) as it comes over the wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use portcullis_dns::{DnsError, HickoryResolver, Mx, Resolver};
use portcullis_test_support::dns::{FailMode, TestDns};

async fn setup() -> (TestDns, HickoryResolver) {
    setup_with_timeout(Duration::from_secs(2)).await
}

async fn setup_with_timeout(timeout: Duration) -> (TestDns, HickoryResolver) {
    let dns = TestDns::start().await;
    let resolver = HickoryResolver::new(&[dns.addr()], timeout).expect("resolver");
    (dns, resolver)
}

fn mx(preference: u16, exchange: &str) -> Mx {
    Mx {
        preference,
        exchange: exchange.to_owned(),
    }
}

#[tokio::test]
async fn mx_list_sorted_by_preference() {
    let (dns, r) = setup().await;
    dns.add_mx("example.test", 20, "MX2.example.test");
    dns.add_mx("example.test", 10, "mx1.example.test.");
    let got = r.mx("Example.Test.").await.unwrap();
    assert_eq!(
        got,
        vec![mx(10, "mx1.example.test"), mx(20, "mx2.example.test")]
    );
}

/// RFC 7505: `MX 0 .` comes back as a null MX, not as an error.
#[tokio::test]
async fn null_mx() {
    let (dns, r) = setup().await;
    dns.add_mx("nomail.test", 0, ".");
    let got = r.mx("nomail.test").await.unwrap();
    assert_eq!(got, vec![mx(0, "")]);
    assert!(got[0].is_null());
}

#[tokio::test]
async fn a_and_aaaa() {
    let (dns, r) = setup().await;
    let v6: Ipv6Addr = "2001:db8::25".parse().unwrap();
    dns.add_a("mx.example.test", Ipv4Addr::new(192, 0, 2, 25));
    dns.add_a("mx.example.test", Ipv4Addr::new(192, 0, 2, 26));
    dns.add_aaaa("mx.example.test", v6);
    let mut v4 = r.ipv4("mx.example.test").await.unwrap();
    v4.sort();
    assert_eq!(
        v4,
        vec![Ipv4Addr::new(192, 0, 2, 25), Ipv4Addr::new(192, 0, 2, 26)]
    );
    assert_eq!(r.ipv6("mx.example.test").await.unwrap(), vec![v6]);
}

/// RFC 1035 §3.3.14: a TXT record longer than 255 bytes travels as several
/// character-strings, which are joined back into one string (RFC 7208
/// §3.3); two records stay two strings.
#[tokio::test]
async fn txt_long_record_is_concatenated() {
    let (dns, r) = setup().await;
    let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
    dns.add_txt("sel._domainkey.example.test", &long);
    assert_eq!(
        r.txt("sel._domainkey.example.test").await.unwrap(),
        vec![long]
    );

    dns.add_txt("_mta-sts.example.test", "v=STSv1; id=1");
    dns.add_txt("_mta-sts.example.test", "unrelated");
    let mut got = r.txt("_mta-sts.example.test").await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec!["unrelated".to_owned(), "v=STSv1; id=1".to_owned()]
    );
}

#[tokio::test]
async fn cname_followed() {
    let (dns, r) = setup().await;
    dns.add_cname("alias.example.test", "real.example.test");
    dns.add_a("real.example.test", Ipv4Addr::new(192, 0, 2, 7));
    dns.add_cname("mxalias.example.test", "real.example.test");
    dns.add_mx("real.example.test", 5, "mx.example.test");
    assert_eq!(
        r.ipv4("alias.example.test").await.unwrap(),
        vec![Ipv4Addr::new(192, 0, 2, 7)]
    );
    assert_eq!(
        r.mx("mxalias.example.test").await.unwrap(),
        vec![mx(5, "mx.example.test")]
    );
}

/// A CNAME to a name without the asked type is "no records", never an
/// empty success.
#[tokio::test]
async fn cname_to_nothing_is_not_found() {
    let (dns, r) = setup().await;
    dns.add_cname("alias.example.test", "real.example.test");
    dns.add_a("real.example.test", Ipv4Addr::new(192, 0, 2, 7));
    let err = r.mx("alias.example.test").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    dns.add_cname("dangling.example.test", "missing.example.test");
    let err = r.ipv4("dangling.example.test").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

/// RFC 5321 §5.1: the implicit MX applies only when the domain exists
/// without MX records, so NXDOMAIN and NODATA must stay apart.
#[tokio::test]
async fn nxdomain_versus_no_records() {
    let (dns, r) = setup().await;
    dns.add_a("addr-only.test", Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        r.mx("addr-only.test").await.unwrap_err(),
        DnsError::NoRecords {
            name: "addr-only.test".into(),
            rtype: "MX"
        }
    );
    assert_eq!(
        r.ipv6("addr-only.test").await.unwrap_err(),
        DnsError::NoRecords {
            name: "addr-only.test".into(),
            rtype: "AAAA"
        }
    );
    assert_eq!(
        r.mx("nowhere.test").await.unwrap_err(),
        DnsError::NxDomain {
            name: "nowhere.test".into()
        }
    );
    assert_eq!(
        r.txt("_mta-sts.nowhere.test").await.unwrap_err(),
        DnsError::NxDomain {
            name: "_mta-sts.nowhere.test".into()
        }
    );
}

/// The threat model: SERVFAIL must never read as "no record".
#[tokio::test]
async fn servfail_is_temporary() {
    let (dns, r) = setup().await;
    dns.add_mx("broken.test", 10, "mx.broken.test");
    dns.fail("broken.test", FailMode::ServFail);
    let err = r.mx("broken.test").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(!err.is_not_found());
    let err = r.txt("broken.test").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");

    // Once the server answers again, so does the resolver (the failure was
    // not cached as a negative answer).
    dns.clear_fail("broken.test");
    assert_eq!(
        r.mx("broken.test").await.unwrap(),
        vec![mx(10, "mx.broken.test")]
    );
}

/// The threat model: a server that never answers gives a temporary failure
/// within the configured timeout (times the two attempts).
#[tokio::test]
async fn timeout_is_temporary() {
    let (dns, r) = setup_with_timeout(Duration::from_millis(200)).await;
    dns.add_mx("silent.test", 10, "mx.silent.test");
    dns.fail("silent.test", FailMode::Timeout);
    let started = Instant::now();
    let err = r.mx("silent.test").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    // It waited for the timeout rather than failing fast some other way...
    assert!(started.elapsed() >= Duration::from_millis(200));
    // ...and did not hang.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_server_is_temporary() {
    // Nothing listens on the discard port of loopback.
    let r = HickoryResolver::new(
        &["127.0.0.1:9".parse().unwrap()],
        Duration::from_millis(200),
    )
    .unwrap();
    let err = r.ipv4("example.test").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
}

#[tokio::test]
async fn ptr() {
    let (dns, r) = setup().await;
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 25));
    dns.add_ptr(ip, "MX.example.test");
    assert_eq!(r.ptr(ip).await.unwrap(), vec!["mx.example.test".to_owned()]);
    let v6 = IpAddr::V6("2001:db8::25".parse().unwrap());
    assert!(r.ptr(v6).await.unwrap_err().is_not_found());
}

/// Answers are cached for their TTL (1 s on `TestDns`), and a change is seen
/// once it expires — positive and negative answers alike.
#[tokio::test]
async fn changed_record_seen_after_ttl() {
    let (dns, r) = setup().await;
    dns.add_a("host.test", Ipv4Addr::new(192, 0, 2, 1));
    let first = Instant::now();
    assert_eq!(
        r.ipv4("host.test").await.unwrap(),
        vec![Ipv4Addr::new(192, 0, 2, 1)]
    );

    dns.remove("host.test", "A");
    dns.add_a("host.test", Ipv4Addr::new(192, 0, 2, 2));
    let cached = r.ipv4("host.test").await.unwrap();
    if first.elapsed() < Duration::from_millis(500) {
        assert_eq!(
            cached,
            vec![Ipv4Addr::new(192, 0, 2, 1)],
            "served from cache"
        );
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        r.ipv4("host.test").await.unwrap(),
        vec![Ipv4Addr::new(192, 0, 2, 2)]
    );

    // A name that did not exist appears once the negative answer expires.
    assert!(
        r.txt("_mta-sts.host.test")
            .await
            .unwrap_err()
            .is_not_found()
    );
    dns.add_txt("_mta-sts.host.test", "v=STSv1; id=2");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        r.txt("_mta-sts.host.test").await.unwrap(),
        vec!["v=STSv1; id=2".to_owned()]
    );
}

/// One resolver, shared: `Arc<HickoryResolver>` is a `Resolver` too.
#[tokio::test]
async fn shared_through_arc() {
    let (dns, r) = setup().await;
    dns.add_a("host.test", Ipv4Addr::LOCALHOST);
    let shared = std::sync::Arc::new(r);
    async fn lookup<R: Resolver>(r: &R) -> Vec<Ipv4Addr> {
        r.ipv4("host.test").await.unwrap()
    }
    assert_eq!(lookup(&shared).await, vec![Ipv4Addr::LOCALHOST]);
    async fn lookup_ttl<R: Resolver>(r: &R) -> Vec<Ipv4Addr> {
        r.ipv4_ttl("host.test").await.unwrap().0
    }
    assert_eq!(lookup_ttl(&shared).await, vec![Ipv4Addr::LOCALHOST]);
}

/// `ipv4_ttl` reports the records' TTL as they came over the wire (within
/// the seconds a cache may have counted down), and the smallest one of the
/// answer: a CNAME with a short TTL bounds the whole answer.
#[tokio::test]
async fn ipv4_ttl_is_the_answers_smallest_ttl() {
    let (dns, r) = setup().await;
    dns.add_a_ttl("listed.test", Ipv4Addr::new(127, 0, 0, 2), 3600);
    let (found, ttl) = r.ipv4_ttl("listed.test").await.unwrap();
    assert_eq!(found, vec![Ipv4Addr::new(127, 0, 0, 2)]);
    assert!(
        ttl <= Duration::from_secs(3600) && ttl > Duration::from_secs(3500),
        "{ttl:?}"
    );
    // Through the cache: counted down, never reset.
    let (_, again) = r.ipv4_ttl("listed.test").await.unwrap();
    assert!(again <= ttl, "{again:?} after {ttl:?}");

    // The CNAME has TestDns's 1 s TTL.
    dns.add_cname("alias.test", "listed.test");
    let (found, ttl) = r.ipv4_ttl("alias.test").await.unwrap();
    assert_eq!(found, vec![Ipv4Addr::new(127, 0, 0, 2)]);
    assert!(ttl <= Duration::from_secs(1), "{ttl:?}");
}

/// RFC 2308 §5: NXDOMAIN and no-records answers keep their typed errors
/// and carry the SOA's negative TTL; a SERVFAIL carries none (it is not an
/// answer anyone may cache).
#[tokio::test]
async fn ipv4_ttl_negative_answers_carry_the_soa_minimum() {
    let (dns, r) = setup().await;
    dns.set_negative_ttl(900);
    dns.add_txt("txt-only.test", "x");
    dns.add_a("broken.test", Ipv4Addr::LOCALHOST);
    dns.fail("broken.test", FailMode::ServFail);

    let nx = r.ipv4_ttl("2.0.0.127.bl.test").await.unwrap_err();
    assert_eq!(
        nx.error,
        DnsError::NxDomain {
            name: "2.0.0.127.bl.test".into()
        }
    );
    let ttl = nx.negative_ttl.expect("negative TTL");
    assert!(
        ttl <= Duration::from_secs(900) && ttl > Duration::from_secs(800),
        "{ttl:?}"
    );

    let none = r.ipv4_ttl("txt-only.test").await.unwrap_err();
    assert!(
        matches!(none.error, DnsError::NoRecords { rtype: "A", .. }),
        "{none:?}"
    );
    assert!(none.negative_ttl.is_some(), "{none:?}");

    let temp = r.ipv4_ttl("broken.test").await.unwrap_err();
    assert!(temp.error.is_temporary(), "{temp:?}");
    assert_eq!(temp.negative_ttl, None);

    // `ipv4` answers the same through the same lookup.
    assert!(
        r.ipv4("2.0.0.127.bl.test")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// The test server's DNS list helpers over the wire: a listed client at its
/// RFC 5782 name (IPv6 in nibbles), the rest of the zone NXDOMAIN, and a
/// whole zone failing.
#[tokio::test]
async fn test_dns_serves_dns_lists() {
    use portcullis_test_support::dns::list_name;
    let (dns, r) = setup().await;
    let v4: IpAddr = "127.0.0.2".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    dns.list("bl.test", v4, Ipv4Addr::new(127, 0, 0, 2), 600);
    dns.list("bl.test", v6, Ipv4Addr::new(127, 0, 0, 4), 600);
    let (found, _) = r.ipv4_ttl("2.0.0.127.bl.test").await.unwrap();
    assert_eq!(found, vec![Ipv4Addr::new(127, 0, 0, 2)]);
    let (found, _) = r.ipv4_ttl(&list_name("bl.test", v6)).await.unwrap();
    assert_eq!(found, vec![Ipv4Addr::new(127, 0, 0, 4)]);
    assert!(
        r.ipv4_ttl("3.0.0.127.bl.test")
            .await
            .unwrap_err()
            .error
            .is_not_found()
    );

    dns.fail_zone("down.test", FailMode::ServFail);
    dns.list("down.test", v4, Ipv4Addr::new(127, 0, 0, 2), 600);
    let err = r.ipv4_ttl("2.0.0.127.down.test").await.unwrap_err();
    assert!(err.error.is_temporary(), "{err:?}");
    dns.clear_fail_zone("down.test");
    assert!(r.ipv4_ttl("2.0.0.127.down.test").await.is_ok());
}
