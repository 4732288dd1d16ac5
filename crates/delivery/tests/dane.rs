//! DANE (RFC 7672) and TLS-RPT in delivery, against real parts on
//! loopback: SMTP sinks from the test support crate stand in for MX hosts,
//! DNS is the in-memory resolver with DNSSEC flags and TLSA records,
//! policies live in a real sled store. The promises:
//!
//! - a host with usable TLSA records is never given mail without TLS its
//!   records authenticate (never in clear);
//! - a host whose TLSA lookup is bogus is not contacted, and TLS-RPT gets a
//!   `dnssec-invalid` result under a `tlsa` policy;
//! - a `testing` MTA-STS policy reports an MX host it does not list;
//! - (with the DANE verifier) a certificate matching a DANE-EE record is
//!   delivered to and reported as a `tlsa` success;
//! - `dane_only` keeps a host without usable DANE out, reported as
//!   `dane-required`;
//! - only unusable TLSA records: delivered as without DANE, reported as
//!   `tlsa-invalid` with the records as policy-string.

use portcullis_delivery::{
    Deliverer, DelivererSettings, DeliveryMetrics, Planner, SelfAddresses, TcpConnector, Timeouts,
    TlsResultSink, TlsSessionResult,
};
use portcullis_dns::MemoryResolver;
use portcullis_policy::{CachedPolicy, Policy, PolicyEngine, PolicyFetcher};
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_store::Store;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::free_port;
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::{ClientTls, ReportPolicyType, TlsResultType};
use portcullis_types::{
    Address, BodyType, Domain, Envelope, Notify, Origin, QueueId, Recipient, ReversePath,
    SystemClock, Tlsa,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DOMAIN: &str = "dane.test";
const MX: &str = "mx.dane.test";

/// Collects every TLS result the deliverer hands to TLS-RPT.
#[derive(Clone, Default)]
struct Results(Arc<Mutex<Vec<TlsSessionResult>>>);

impl TlsResultSink for Results {
    fn record(&self, result: TlsSessionResult) {
        self.0.lock().unwrap().push(result);
    }
}

impl Results {
    fn all(&self) -> Vec<TlsSessionResult> {
        self.0.lock().unwrap().clone()
    }
}

fn deliverer(
    dns: &MemoryResolver,
    port: u16,
    tls: ClientTls,
) -> Deliverer<MemoryResolver, TcpConnector> {
    deliverer_dane_only(dns, port, tls, Vec::new())
}

/// [`deliverer`] with `[delivery] dane_only`.
fn deliverer_dane_only(
    dns: &MemoryResolver,
    port: u16,
    tls: ClientTls,
    dane_only: Vec<Domain>,
) -> Deliverer<MemoryResolver, TcpConnector> {
    let five = Duration::from_secs(5);
    Deliverer::new(DelivererSettings {
        planner: Planner {
            resolver: dns.clone(),
            destinations: portcullis_delivery::LiveDestinations::new(
                portcullis_delivery::Destinations {
                    routes: Vec::new(),
                    accepted: Vec::new(),
                    dane_only,
                },
            ),
            port,
            myself: SelfAddresses::default(),
        },
        connector: TcpConnector { timeout: five },
        hostname: "mx.portcullis.test".into(),
        tls,
        timeouts: Timeouts {
            greeting: five,
            ehlo: five,
            mail: five,
            rcpt: five,
            data_init: five,
            data_end: five,
            ..Timeouts::default()
        },
        per_domain: 4,
        metrics: Arc::new(DeliveryMetrics::default()),
    })
}

fn job(rcpt: &str) -> DeliveryJob {
    let id = QueueId::generate(1_700_000_000_000, 9);
    let message = "Subject: x\r\n\r\nhi\r\n";
    DeliveryJob {
        id,
        envelope: Arc::new(Envelope {
            id,
            sender: ReversePath::parse("a@sender.test").unwrap(),
            recipients: vec![Recipient {
                address: Address::parse(rcpt).unwrap(),
                notify: Notify::default(),
                orcpt: None,
            }],
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            received_at: 1_700_000_000,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            helo: "client.test".into(),
            tls: None,
            authenticated: None,
            size: message.len() as u64,
            origin: Origin::Relay,
            require_tls: false,
            tls_optional: false,
        }),
        pending: vec![0],
        message: message.as_bytes().into(),
        attempt: 1,
    }
}

#[track_caller]
fn only(results: &[RecipientResult]) -> &RecipientOutcome {
    assert_eq!(results.len(), 1, "{results:?}");
    &results[0].outcome
}

/// A signed domain whose one MX is 127.0.0.`last`, DNSSEC-secure up to
/// the host; TLSA records are added by the caller.
fn signed(last: u8) -> MemoryResolver {
    MemoryResolver::new()
        .mx(DOMAIN, 10, MX)
        .a(MX, Ipv4Addr::new(127, 0, 0, last))
        .secure(DOMAIN)
        .secure(MX)
}

fn tlsa_name(port: u16) -> String {
    format!("_{port}._tcp.{MX}")
}

fn sink(last: u8, port: u16, tls: SinkTls) -> Sink {
    Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, last], port)),
        tls,
        ..SinkConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usable_tlsa_records_never_let_mail_go_unauthenticated() {
    let port = free_port();
    let pki = TestPki::new();
    // A server that offers STARTTLS with a certificate no record matches,
    // and one that offers no STARTTLS at all: neither gets the mail.
    for (last, tls) in [(30, SinkTls::Cert(pki.issue(&[MX]))), (31, SinkTls::None)] {
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32],
        };
        let dns = signed(last)
            .tlsa(&tlsa_name(port), record)
            .secure(&tlsa_name(port));
        let mx = sink(last, port, tls);
        let results = Results::default();
        let got = deliverer(&dns, port, ClientTls::with_roots(pki.root_store()))
            .with_reporter(Arc::new(results.clone()))
            .deliver(job("u@dane.test"))
            .await;
        match only(&got) {
            RecipientOutcome::Deferred { reason, .. } => {
                assert!(reason.contains("DANE"), "{last}: {reason}")
            }
            other => panic!("{last}: expected deferred, got {other:?}"),
        }
        assert!(mx.received().is_empty(), "{last}: mail went without DANE");
        for r in results.all() {
            assert_eq!(r.policy.policy_type, ReportPolicyType::Tlsa, "{r:?}");
            assert!(r.failure.is_some(), "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_tlsa_answer_defers_and_is_reported_as_dnssec_invalid() {
    let port = free_port();
    let dns = signed(32).bogus(&tlsa_name(port));
    let mx = sink(32, port, SinkTls::None);
    let results = Results::default();
    let got = deliverer(
        &dns,
        port,
        ClientTls::with_roots(rustls::RootCertStore::empty()),
    )
    .with_reporter(Arc::new(results.clone()))
    .deliver(job("u@dane.test"))
    .await;
    match only(&got) {
        RecipientOutcome::Deferred { reason, .. } => {
            assert!(reason.contains("TLSA"), "{reason}")
        }
        other => panic!("expected deferred, got {other:?}"),
    }
    assert_eq!(mx.connections(), 0, "the MX was contacted");
    let recorded = results.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!(r.policy.policy_type, ReportPolicyType::Tlsa);
    assert_eq!(r.policy.policy_domain.as_str(), DOMAIN);
    assert_eq!(r.failure, Some(TlsResultType::DnssecInvalid));
    assert_eq!(r.mx_host, MX);
    assert_eq!(r.receiving_ip, IpAddr::from([127, 0, 0, 32]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testing_policy_reports_an_mx_it_does_not_list() {
    let port = free_port();
    let pki = TestPki::new();
    let dns = MemoryResolver::new()
        .mx("sts.test", 10, "other.sts.test")
        .a("other.sts.test", Ipv4Addr::new(127, 0, 0, 33))
        .txt("_mta-sts.sts.test", "v=STSv1; id=1");
    let mx = sink(33, port, SinkTls::Cert(pki.issue(&["other.sts.test"])));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fetcher = PolicyFetcher::builder(dns.clone())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine =
        Arc::new(PolicyEngine::new(dns.clone(), fetcher, &store, Arc::new(SystemClock)).unwrap());
    let policy =
        Policy::parse("version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n").unwrap();
    let domain = Domain::parse("sts.test").unwrap();
    engine
        .cache()
        .put(&CachedPolicy::new(domain, "1".into(), policy, engine.now()))
        .await
        .unwrap();
    let results = Results::default();
    let got = deliverer(&dns, port, ClientTls::with_roots(pki.root_store()))
        .with_policy(engine)
        .with_reporter(Arc::new(results.clone()))
        .deliver(job("u@sts.test"))
        .await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    assert_eq!(mx.received().len(), 1);
    let recorded = results.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!(r.policy.policy_type, ReportPolicyType::Sts);
    assert_eq!(r.policy.mode(), "testing");
    assert_eq!(r.failure, Some(TlsResultType::ValidationFailure), "{r:?}");
    assert!(r.detail.contains("not listed"), "{}", r.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_matching_a_dane_ee_record_is_delivered_to() {
    let port = free_port();
    let pki = TestPki::new();
    let issued = pki.issue(&[MX]);
    let record = Tlsa {
        usage: 3,
        selector: 0,
        matching: 0,
        data: issued.cert_der().to_vec(),
    };
    let dns = signed(34)
        .tlsa(&tlsa_name(port), record.clone())
        .secure(&tlsa_name(port));
    let mx = sink(34, port, SinkTls::Cert(issued));
    let results = Results::default();
    // No Web PKI roots at all: only the record can authenticate the server.
    let got = deliverer(
        &dns,
        port,
        ClientTls::with_roots(rustls::RootCertStore::empty()),
    )
    .with_reporter(Arc::new(results.clone()))
    .deliver(job("u@dane.test"))
    .await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    assert_eq!(mx.received().len(), 1);
    let recorded = results.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].policy.policy_type, ReportPolicyType::Tlsa);
    assert_eq!(recorded[0].policy.policy_string, vec![record.to_string()]);
    assert_eq!(recorded[0].failure, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_only_keeps_out_a_host_without_dane_and_reports_dane_required() {
    let port = free_port();
    let pki = TestPki::new();
    // Secure up to the host, but no TLSA records.
    let dns = signed(35);
    let mx = sink(35, port, SinkTls::Cert(pki.issue(&[MX])));
    let results = Results::default();
    let got = deliverer_dane_only(
        &dns,
        port,
        ClientTls::with_roots(pki.root_store()),
        vec![Domain::parse(DOMAIN).unwrap()],
    )
    .with_reporter(Arc::new(results.clone()))
    .deliver(job("u@dane.test"))
    .await;
    match only(&got) {
        RecipientOutcome::Deferred { reason, .. } => {
            assert!(
                reason.contains("dane_only") && reason.contains("no TLSA records"),
                "{reason}"
            )
        }
        other => panic!("expected deferred, got {other:?}"),
    }
    assert_eq!(mx.connections(), 0, "the MX was contacted");
    let recorded = results.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!(r.policy.policy_type, ReportPolicyType::Tlsa);
    assert_eq!(r.failure, Some(TlsResultType::DaneRequired));
    assert_eq!(r.mx_host, MX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_records_are_delivered_and_reported_as_tlsa_invalid() {
    let port = free_port();
    let pki = TestPki::new();
    let issued = pki.issue(&[MX]);
    // PKIX-EE: unusable for SMTP (RFC 7672 §3.1.3).
    let record = Tlsa {
        usage: 1,
        selector: 0,
        matching: 0,
        data: issued.cert_der().to_vec(),
    };
    let dns = signed(36)
        .tlsa(&tlsa_name(port), record.clone())
        .secure(&tlsa_name(port));
    let mx = sink(36, port, SinkTls::Cert(issued));
    let results = Results::default();
    let got = deliverer(&dns, port, ClientTls::with_roots(pki.root_store()))
        .with_reporter(Arc::new(results.clone()))
        .deliver(job("u@dane.test"))
        .await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    assert_eq!(mx.received().len(), 1);
    let recorded = results.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let r = &recorded[0];
    assert_eq!(r.policy.policy_type, ReportPolicyType::Tlsa);
    assert_eq!(r.policy.policy_string, vec![record.to_string()]);
    assert_eq!(r.failure, Some(TlsResultType::TlsaInvalid));
}
