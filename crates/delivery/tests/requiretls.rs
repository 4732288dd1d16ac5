//! REQUIRETLS and `TLS-Required: No` (RFC 8689) through the real deliverer
//! on loopback: SMTP sinks with real certificates from a test CA stand in
//! for MX hosts, the MTA-STS policy is `enforce` in a real sled store, DNS
//! is the in-memory resolver. The promises:
//!
//! - a REQUIRETLS message goes only over authenticated TLS to a host that
//!   advertises REQUIRETLS, and carries the parameter on;
//! - otherwise it fails for good with 5.7.30 and nothing is sent;
//! - `TLS-Required: No` (as recorded in the envelope) delivers where the
//!   policy would refuse, and the same message without it is deferred.

use portcullis_delivery::{
    Deliverer, DelivererSettings, DeliveryMetrics, LogTlsResults, Planner, SelfAddresses,
    TcpConnector, Timeouts,
};
use portcullis_dns::MemoryResolver;
use portcullis_policy::{CachedPolicy, Policy, PolicyEngine, PolicyFetcher};
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_store::Store;
use portcullis_test_support::pki::{Issued, TestPki};
use portcullis_test_support::server::free_port;
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::ClientTls;
use portcullis_types::{
    Address, BodyType, Domain, Envelope, Notify, Origin, QueueId, Recipient, ReversePath,
    SystemClock,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const MESSAGE: &str = "From: a@b.test\r\nSubject: secret\r\n\r\nhello\r\n";

/// What the envelope asks for.
#[derive(Clone, Copy)]
struct Flags {
    require_tls: bool,
    tls_optional: bool,
}

fn job(rcpt: &str, flags: Flags) -> DeliveryJob {
    let id = QueueId::generate(1_700_000_000_000, 9);
    DeliveryJob {
        id,
        envelope: Arc::new(Envelope {
            id,
            sender: ReversePath::parse("alice@b.test").unwrap(),
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
            authenticated: Some("alice".into()),
            size: MESSAGE.len() as u64,
            origin: Origin::Submission,
            require_tls: flags.require_tls,
            tls_optional: flags.tls_optional,
        }),
        pending: vec![0],
        message: MESSAGE.as_bytes().into(),
        attempt: 1,
    }
}

/// `sts.test` with an `enforce` policy listing `mx.sts.test` (cached in a
/// real store), whose MX is a sink at 127.0.0.`last` with STARTTLS and
/// certificate `cert`; `plain.test` (no policy) has the same sink as MX.
struct World {
    pki: TestPki,
    dns: MemoryResolver,
    engine: Arc<PolicyEngine<MemoryResolver>>,
    sink: Sink,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn world(last: u8, cert: impl FnOnce(&TestPki) -> Issued, requiretls: bool) -> World {
    let pki = TestPki::new();
    let port = free_port();
    let ip = Ipv4Addr::new(127, 0, 0, last);
    let dns = MemoryResolver::new()
        .mx("sts.test", 10, "mx.sts.test")
        .mx("plain.test", 10, "mx.sts.test")
        .a("mx.sts.test", ip)
        .txt("_mta-sts.sts.test", "v=STSv1; id=1");
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from((ip, port)),
        tls: SinkTls::Cert(cert(&pki)),
        requiretls,
        ..SinkConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fetcher = PolicyFetcher::builder(dns.clone())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine =
        Arc::new(PolicyEngine::new(dns.clone(), fetcher, &store, Arc::new(SystemClock)).unwrap());
    let policy =
        Policy::parse("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n").unwrap();
    let domain = Domain::parse("sts.test").unwrap();
    engine
        .cache()
        .put(&CachedPolicy::new(domain, "1".into(), policy, engine.now()))
        .await
        .unwrap();
    World {
        pki,
        dns,
        engine,
        sink,
        port,
        _dir: dir,
    }
}

impl World {
    async fn deliver(&self, rcpt: &str, flags: Flags) -> Vec<RecipientResult> {
        let secs = Duration::from_secs(5);
        Deliverer::new(DelivererSettings {
            planner: Planner {
                resolver: self.dns.clone(),
                destinations: portcullis_delivery::LiveDestinations::new(Default::default()),
                port: self.port,
                myself: SelfAddresses::default(),
            },
            connector: TcpConnector { timeout: secs },
            hostname: "mx.portcullis.test".into(),
            tls: ClientTls::with_roots(self.pki.root_store()),
            timeouts: Timeouts {
                greeting: secs,
                ehlo: secs,
                mail: secs,
                rcpt: secs,
                data_init: secs,
                data_end: secs,
                ..Timeouts::default()
            },
            per_domain: 4,
            metrics: Arc::new(DeliveryMetrics::default()),
        })
        .with_policy(self.engine.clone())
        .with_reporter(Arc::new(LogTlsResults::default()))
        .deliver(job(rcpt, flags))
        .await
    }
}

const REQUIRE: Flags = Flags {
    require_tls: true,
    tls_optional: false,
};
const OPTIONAL: Flags = Flags {
    require_tls: false,
    tls_optional: true,
};
const PLAIN: Flags = Flags {
    require_tls: false,
    tls_optional: false,
};

#[track_caller]
fn only(results: &[RecipientResult]) -> &RecipientOutcome {
    assert_eq!(results.len(), 1, "{results:?}");
    &results[0].outcome
}

#[track_caller]
fn assert_failed_5730(results: &[RecipientResult]) {
    match only(results) {
        RecipientOutcome::Failed { status, reason, .. } => {
            assert_eq!(*status, (5, 7, 30), "{reason}");
            assert!(reason.contains("REQUIRETLS"), "{reason}");
        }
        other => panic!("expected 5.7.30, got {other:?}"),
    }
}

/// Authenticated TLS (MTA-STS enforce, valid certificate) to a host that
/// advertises REQUIRETLS: delivered, and the MAIL command carries it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_with_requiretls_passed_on() {
    let w = world(40, |p| p.issue(&["mx.sts.test"]), true).await;
    let got = w.deliver("bob@sts.test", REQUIRE).await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    let received = w.sink.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].raw_mail_line.ends_with(" REQUIRETLS"),
        "{}",
        received[0].raw_mail_line
    );
    // Without REQUIRETLS the parameter is not sent.
    let got = w.deliver("bob@sts.test", PLAIN).await;
    assert!(matches!(only(&got), RecipientOutcome::Delivered { .. }));
    let received = w.sink.received();
    assert!(!received[1].raw_mail_line.contains("REQUIRETLS"));
}

/// Authenticated TLS, but the host does not advertise REQUIRETLS: 5.7.30,
/// and the message never left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounced_when_the_host_lacks_requiretls() {
    let w = world(41, |p| p.issue(&["mx.sts.test"]), false).await;
    let got = w.deliver("bob@sts.test", REQUIRE).await;
    assert_failed_5730(&got);
    assert!(w.sink.received().is_empty());
    assert!(
        !w.sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        w.sink.commands()
    );
}

/// A domain without MTA-STS (or DANE) offers no authenticated TLS: 5.7.30
/// before anything is contacted, even though the host would take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounced_without_authenticated_tls() {
    let w = world(42, |p| p.issue(&["mx.sts.test"]), true).await;
    let got = w.deliver("bob@plain.test", REQUIRE).await;
    assert_failed_5730(&got);
    assert_eq!(w.sink.connections(), 0);
}

/// The MX's certificate does not verify: under `enforce` the message is
/// deferred, unless its sender was allowed to say `TLS-Required: No`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_delivers_past_a_bad_certificate() {
    let w = world(43, |_| TestPki::self_signed(&["mx.sts.test"]), false).await;
    let got = w.deliver("bob@sts.test", PLAIN).await;
    match only(&got) {
        RecipientOutcome::Deferred { reason, .. } => {
            assert!(reason.contains("MTA-STS"), "{reason}")
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
    assert!(w.sink.received().is_empty());
    let got = w.deliver("bob@sts.test", OPTIONAL).await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    assert_eq!(w.sink.received().len(), 1);
}
