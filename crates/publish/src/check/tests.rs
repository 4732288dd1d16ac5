//! One row per outcome of each judgement, and the STARTTLS probe against a
//! real SMTP sink with certificates from the test CA.

use super::*;
use crate::policy::own_policy;
use portcullis_config::{Publish, PublishMode};
use portcullis_delivery::TcpConnector;
use portcullis_dns::MemoryResolver;
use portcullis_policy::{NoPolicyReason, Policy, RecordLookup, StsError, StsRecord};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::ClientTls;
use portcullis_tlsrpt::{Destination, DestinationLookup};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

const DAY: Duration = Duration::from_secs(86_400);

fn domain() -> Domain {
    Domain::parse("example.test").unwrap()
}

fn ours(mx: &[&str]) -> OwnPolicy {
    let publish = Publish {
        mode: PublishMode::Enforce,
        mx: Some(mx.iter().map(|s| s.to_string()).collect()),
        ..Publish::default()
    };
    own_policy(&publish, "example.test", &[]).unwrap()
}

fn temp() -> DnsError {
    DnsError::Temporary {
        name: "x.example.test".into(),
        reason: "SERVFAIL".into(),
    }
}

#[track_caller]
fn expect(j: &Judged, outcome: Outcome, words: &[&str], publish: Option<&str>) {
    assert_eq!(j.check.outcome, outcome, "{j:?}");
    for w in words {
        assert!(
            j.check.detail.contains(w),
            "{w:?} not in {:?}",
            j.check.detail
        );
    }
    match publish {
        Some(p) => assert_eq!(j.publish.as_deref(), Some(p), "{j:?}"),
        None => assert_eq!(j.publish, None, "{j:?}"),
    }
}

#[test]
fn mta_sts_record_rows() {
    let p = ours(&["mx1.example.test"]);
    let line = format!("_mta-sts.example.test. IN TXT \"v=STSv1; id={}\"", p.id);
    let found = |id: &str| RecordLookup::Found(StsRecord { id: id.into() });
    let d = domain();
    expect(
        &record::judge(&d, &found(&p.id), &p),
        Outcome::Ok,
        &[&p.id],
        None,
    );
    expect(
        &record::judge(&d, &found("old1"), &p),
        Outcome::Gap,
        &["id=old1", &p.id],
        Some(&line),
    );
    expect(
        &record::judge(&d, &RecordLookup::NoPolicy(NoPolicyReason::NoRecord), &p),
        Outcome::Gap,
        &["missing", "_mta-sts.example.test"],
        Some(&line),
    );
    expect(
        &record::judge(
            &d,
            &RecordLookup::NoPolicy(NoPolicyReason::MultipleRecords(2)),
            &p,
        ),
        Outcome::Gap,
        &["2 v=STSv1 TXT records"],
        Some(&line),
    );
    // A temporary failure is not "missing", and nothing is to be published.
    expect(
        &record::judge(&d, &RecordLookup::Temporary(temp()), &p),
        Outcome::Temporary,
        &["temporary DNS failure"],
        None,
    );
}

#[test]
fn mx_coverage_names_each_uncovered_host() {
    let p = ours(&["mx1.example.test", "*.backup.test"]);
    let mx = |hosts: &[&str]| -> Result<Vec<Mx>, DnsError> {
        Ok(hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Mx {
                preference: i as u16 * 10,
                exchange: h.to_string(),
            })
            .collect())
    };
    let d = domain();
    let ok = coverage::judge(&d, &mx(&["mx1.example.test", "a.backup.test"]), &p);
    assert!(ok.is_ok(), "{ok:?}");
    let gap = coverage::judge(
        &d,
        &mx(&["mx1.example.test", "mx2.example.test", "mx3.other.test"]),
        &p,
    );
    assert_eq!(gap.outcome, Outcome::Gap);
    assert!(
        gap.detail
            .contains("MX hosts mx2.example.test, mx3.other.test not covered"),
        "{}",
        gap.detail
    );
    let t = coverage::judge(&d, &Err(temp()), &p);
    assert_eq!(t.outcome, Outcome::Temporary, "{t:?}");
    let none = coverage::judge(
        &d,
        &Err(DnsError::NoRecords {
            name: "example.test".into(),
            rtype: "MX",
        }),
        &p,
    );
    assert_eq!(none.outcome, Outcome::Gap, "{none:?}");
}

#[test]
fn served_policy_rows() {
    let p = ours(&["mx1.example.test"]);
    let d = domain();
    let same = Policy::parse(&p.text).unwrap();
    let j = served::judge(&d, &Ok(same), &p, "mx.portcullis.test");
    assert!(j.check.is_ok(), "{j:?}");
    // Another pattern and mode: both named, and the diff shows the lines.
    let other =
        Policy::parse("version: STSv1\nmode: testing\nmx: mx9.example.test\nmax_age: 604800\n")
            .unwrap();
    let j = served::judge(&d, &Ok(other), &p, "mx.portcullis.test");
    expect(
        &j,
        Outcome::Gap,
        &[
            "mode testing instead of enforce",
            "mx mx1.example.test missing",
            "mx mx9.example.test not ours",
        ],
        None,
    );
    let diff = j.check.diff.unwrap();
    assert!(
        diff.contains("-mode: testing") && diff.contains("+mode: enforce"),
        "{diff}"
    );
    assert!(diff.contains("+mx: mx1.example.test"), "{diff}");
    // The policy host does not exist: point it at us.
    let nx = StsError::Dns {
        name: "mta-sts.example.test".into(),
        source: DnsError::NxDomain {
            name: "mta-sts.example.test".into(),
        },
    };
    expect(
        &served::judge(&d, &Err(nx), &p, "mx.portcullis.test"),
        Outcome::Gap,
        &["mta-sts.example.test has no address"],
        Some("mta-sts.example.test. IN CNAME mx.portcullis.test."),
    );
    let t = StsError::Dns {
        name: "mta-sts.example.test".into(),
        source: temp(),
    };
    expect(
        &served::judge(&d, &Err(t), &p, "mx.portcullis.test"),
        Outcome::Temporary,
        &["temporary DNS failure"],
        None,
    );
    let status = StsError::Status {
        host: "mta-sts.example.test".into(),
        status: 404,
    };
    expect(
        &served::judge(&d, &Err(status), &p, "mx.portcullis.test"),
        Outcome::Gap,
        &["HTTP 404"],
        None,
    );
}

#[test]
fn tlsrpt_record_rows() {
    let d = domain();
    let rua = vec!["mailto:tlsrpt@example.test".to_string()];
    let line = "_smtp._tls.example.test. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@example.test\"";
    let found = |to: &str| DestinationLookup::Found(vec![Destination::Mailto(to.into())]);
    expect(
        &tlsrpt::judge(&d, &found("tlsrpt@example.test"), &rua),
        Outcome::Ok,
        &["rua=mailto:tlsrpt@example.test"],
        None,
    );
    expect(
        &tlsrpt::judge(&d, &found("someone@else.test"), &rua),
        Outcome::Gap,
        &["not mailto:tlsrpt@example.test"],
        Some(line),
    );
    expect(
        &tlsrpt::judge(
            &d,
            &DestinationLookup::None("no v=TLSRPTv1 record".into()),
            &rua,
        ),
        Outcome::Gap,
        &["missing", "_smtp._tls.example.test"],
        Some(line),
    );
    // Without [publish] tlsrpt_rua any valid record passes.
    assert!(tlsrpt::judge(&d, &found("x@y.test"), &[]).check.is_ok());
    expect(
        &tlsrpt::judge(&d, &DestinationLookup::Temporary(temp()), &rua),
        Outcome::Temporary,
        &["temporary"],
        None,
    );
}

/// A probe of a sink presenting `cert` at 127.0.0.1, named `host` in DNS.
async fn probe(pki: &TestPki, host: &str, tls: SinkTls) -> Check {
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
        ..SinkConfig::default()
    });
    let resolver = MemoryResolver::new().a(host, Ipv4Addr::LOCALHOST);
    let probe = StartTlsProbe::new(
        resolver,
        TcpConnector::default(),
        ClientTls::with_roots(pki.root_store()),
        sink.addr().port(),
        "checker.example.test",
        Duration::from_secs(10),
    );
    let probed = probe.probe(host).await;
    certificate::judge(host, &probed, SystemTime::now())
}

#[tokio::test]
async fn certificates_are_judged_from_a_real_starttls_handshake() {
    let pki = TestPki::new();
    let host = "mx1.example.test";
    let now = SystemTime::now();

    let good = probe(&pki, host, SinkTls::Cert(pki.issue(&[host]))).await;
    assert!(good.is_ok(), "{good:?}");
    assert!(
        good.detail.contains("expires in 365 days"),
        "{}",
        good.detail
    );
    assert_eq!(good.host.as_deref(), Some(host));

    let soon = pki.issue_with_validity(&[host], now - DAY, now + 5 * DAY);
    let c = probe(&pki, host, SinkTls::Cert(soon)).await;
    assert_eq!(c.outcome, Outcome::Gap);
    assert!(
        c.detail.contains("expires within 14 days") && c.detail.contains("expires in 5 days"),
        "{}",
        c.detail
    );

    let other = probe(
        &pki,
        host,
        SinkTls::Cert(pki.issue(&["other.example.test"])),
    )
    .await;
    assert_eq!(other.outcome, Outcome::Gap);
    assert!(
        other
            .detail
            .contains("certificate-host-mismatch: the certificate is for other.example.test, not mx1.example.test"),
        "{}",
        other.detail
    );

    let plain = probe(&pki, host, SinkTls::None).await;
    assert!(
        plain.detail.contains("does not offer STARTTLS"),
        "{plain:?}"
    );
}

#[tokio::test]
async fn a_host_without_address_is_a_gap_and_a_dns_failure_is_temporary() {
    let probe = |resolver: MemoryResolver| {
        StartTlsProbe::new(
            resolver,
            TcpConnector::default(),
            ClientTls::with_roots(TestPki::new().root_store()),
            25,
            "checker.example.test",
            Duration::from_secs(5),
        )
    };
    let now = SystemTime::now();
    let host = "mx1.example.test";
    let missing = probe(MemoryResolver::new()).probe(host).await;
    assert_eq!(
        certificate::judge(host, &missing, now).outcome,
        Outcome::Gap
    );
    let failing = probe(MemoryResolver::new().temp_fail(host))
        .probe(host)
        .await;
    assert_eq!(
        certificate::judge(host, &failing, now).outcome,
        Outcome::Temporary,
        "{failing:?}"
    );
}
