//! The deliverer against real parts on loopback: SMTP sinks from the test
//! support crate stand in for MX hosts (and for our own listener), policies
//! live in a real sled store, DNS is the in-memory resolver. Three promises:
//!
//! - only the recorded origin of a message (`Origin::TlsReport`), never
//!   its content, exempts it from an `enforce` policy (RFC 8460 §5.3);
//! - an MX host that is this server itself is never contacted, and when no
//!   other host is left the recipient fails with 5.4.6;
//! - a policy store that cannot be read defers delivery, it never means
//!   "no policy".

use portcullis_config::{NextHop, Route, RouteTls};
use portcullis_delivery::{
    Deliverer, DelivererSettings, DeliveryMetrics, Planner, SelfAddresses, TcpConnector, Timeouts,
    TlsResultSink, TlsSessionResult,
};
use portcullis_dns::MemoryResolver;
use portcullis_policy::{CachedPolicy, Policy, PolicyEngine, PolicyFetcher};
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_store::{Store, TreeName};
use portcullis_test_support::server::free_port;
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_tls::ClientTls;
use portcullis_types::{
    Address, BodyType, Domain, Envelope, Notify, Origin, QueueId, Recipient, ReversePath,
    SystemClock,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header text anyone can write: a TLS report's Content-Type.
const REPORT_LOOKALIKE: &str = "From: a@b.test\r\nContent-Type: multipart/report; report-type=\"tlsrpt\";\r\n boundary=x\r\nSubject: looks like a report\r\n\r\n--x--\r\n";

/// Collects every TLS result the deliverer hands to TLS-RPT.
#[derive(Clone, Default)]
struct Results(Arc<Mutex<Vec<TlsSessionResult>>>);

impl TlsResultSink for Results {
    fn record(&self, result: TlsSessionResult) {
        self.0.lock().unwrap().push(result);
    }
}

fn deliverer(
    dns: &MemoryResolver,
    port: u16,
    routes: Vec<Route>,
    myself: SelfAddresses,
) -> Deliverer<MemoryResolver, TcpConnector> {
    Deliverer::new(DelivererSettings {
        planner: Planner {
            resolver: dns.clone(),
            destinations: portcullis_delivery::LiveDestinations::new(
                portcullis_delivery::Destinations {
                    routes,
                    accepted: vec![Domain::parse("example.test").unwrap()],
                    dane_only: Vec::new(),
                },
            ),
            port,
            myself,
        },
        connector: TcpConnector {
            timeout: Duration::from_secs(5),
        },
        hostname: "mx.portcullis.test".into(),
        tls: ClientTls::with_roots(rustls::RootCertStore::empty()),
        timeouts: Timeouts {
            greeting: Duration::from_secs(5),
            ehlo: Duration::from_secs(5),
            mail: Duration::from_secs(5),
            rcpt: Duration::from_secs(5),
            data_init: Duration::from_secs(5),
            data_end: Duration::from_secs(5),
            ..Timeouts::default()
        },
        per_domain: 4,
        metrics: Arc::new(DeliveryMetrics::default()),
    })
}

fn job(origin: Origin, sender: &str, rcpt: &str, message: &str) -> DeliveryJob {
    let id = QueueId::generate(1_700_000_000_000, 7);
    DeliveryJob {
        id,
        envelope: Arc::new(Envelope {
            id,
            sender: ReversePath::parse(sender).unwrap(),
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
            authenticated: (origin == Origin::Submission).then(|| "alice".to_owned()),
            size: message.len() as u64,
            origin,
            require_tls: false,
            tls_optional: false,
        }),
        pending: vec![0],
        message: message.as_bytes().into(),
        attempt: 1,
    }
}

fn sink(ip: [u8; 4], port: u16) -> Sink {
    Sink::start(SinkConfig {
        bind: SocketAddr::from((ip, port)),
        ..SinkConfig::default()
    })
}

#[track_caller]
fn only(results: &[RecipientResult]) -> &RecipientOutcome {
    assert_eq!(results.len(), 1, "{results:?}");
    &results[0].outcome
}

#[track_caller]
fn assert_deferred(name: &str, results: &[RecipientResult], needle: &str) {
    match only(results) {
        RecipientOutcome::Deferred { reason, .. } => {
            assert!(reason.contains(needle), "{name}: {reason}")
        }
        other => panic!("{name}: expected deferred ({needle}), got {other:?}"),
    }
}

// ---------------------------------------------------------------- loops

/// What one loop row expects.
enum LoopWant {
    /// Failed 5.4.6 "mail for DOMAIN loops back to myself".
    Loops,
    /// Deferred, the reason containing this.
    Deferred(&'static str),
    /// Delivered to the sink with this last octet.
    DeliveredAt(u8),
}

/// One row: `listeners` are ours (as `ip:port`, port `P` = the delivery
/// port), `mx` the domain's MX hosts (preference, last octet of its
/// 127.0.0.x address, or `None` for a name whose lookup fails
/// temporarily), `routed` routes the domain to 127.0.0.`n`:P.
struct LoopRow {
    name: &'static str,
    listeners: &'static [&'static str],
    /// Which 127.0.0.0/8 addresses the injected local test calls ours.
    local_last: &'static [u8],
    mx: &'static [(u16, Option<u8>)],
    routed: Option<u8>,
    want: LoopWant,
}

async fn loop_row(row: LoopRow) {
    let port = free_port();
    let domain = format!("{}.loop.test", row.name);
    let dns = MemoryResolver::new();
    let mut sinks = Vec::new();
    for (i, (pref, last)) in row.mx.iter().enumerate() {
        let host = format!("mx{i}.{domain}");
        dns.add_mx(&domain, *pref, &host);
        match last {
            Some(last) => {
                dns.add_a(&host, Ipv4Addr::new(127, 0, 0, *last));
                sinks.push((*last, sink([127, 0, 0, *last], port)));
            }
            None => {
                dns.add_a(&host, Ipv4Addr::new(192, 0, 2, 1));
                dns.set_temp_fail(&host, true);
            }
        }
    }
    let routes = match row.routed {
        Some(last) => {
            sinks.push((last, sink([127, 0, 0, last], port)));
            vec![Route {
                domain: Domain::parse(&domain).unwrap(),
                include_subdomains: false,
                next_hop: NextHop {
                    host: format!("127.0.0.{last}"),
                    port,
                },
                tls: RouteTls::Opportunistic,
            }]
        }
        None => Vec::new(),
    };
    let listeners = row
        .listeners
        .iter()
        .map(|l| l.replace('P', &port.to_string()).parse().unwrap())
        .collect();
    let local: Vec<Ipv4Addr> = row
        .local_last
        .iter()
        .map(|l| Ipv4Addr::new(127, 0, 0, *l))
        .collect();
    let myself = SelfAddresses::with_local_test(
        listeners,
        Arc::new(move |ip| matches!(ip, IpAddr::V4(v4) if local.contains(&v4))),
    );
    let d = deliverer(&dns, port, routes, myself);
    let results = d
        .deliver(job(
            Origin::Relay,
            "a@sender.test",
            &format!("u@{domain}"),
            "Subject: x\r\n\r\nhi\r\n",
        ))
        .await;
    let name = row.name;
    match row.want {
        LoopWant::Loops => match only(&results) {
            RecipientOutcome::Failed {
                status,
                reason,
                remote_mta,
            } => {
                assert_eq!(*status, (5, 4, 6), "{name}: {reason}");
                assert_eq!(reason, &format!("mail for {domain} loops back to myself"));
                assert_eq!(remote_mta, &None, "{name}");
            }
            other => panic!("{name}: expected 5.4.6, got {other:?}"),
        },
        LoopWant::Deferred(needle) => assert_deferred(name, &results, needle),
        LoopWant::DeliveredAt(last) => {
            assert!(
                matches!(only(&results), RecipientOutcome::Delivered { .. }),
                "{name}: {results:?}"
            );
            let (_, s) = sinks.iter().find(|(l, _)| *l == last).unwrap();
            assert_eq!(s.received().len(), 1, "{name}");
        }
    }
    // Every sink but the one that got the mail stands for a host that must
    // not have been contacted: ourselves, or nobody after a loop.
    for (last, s) in &sinks {
        if !matches!(row.want, LoopWant::DeliveredAt(l) if l == *last) {
            assert_eq!(
                s.connections(),
                0,
                "{name}: connected to 127.0.0.{last}, myself"
            );
        }
    }
}

/// Regression test: delivery connected to any MX address, its own
/// listener included, so an MX record pointing at us made the server
/// deliver to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_hosts_that_are_this_server_are_never_contacted() {
    let rows = [
        LoopRow {
            name: "exact",
            listeners: &["127.0.0.1:P"],
            local_last: &[],
            mx: &[(10, Some(1))],
            routed: None,
            want: LoopWant::Loops,
        },
        LoopRow {
            name: "wildcard",
            listeners: &["0.0.0.0:P"],
            local_last: &[3],
            mx: &[(10, Some(3))],
            routed: None,
            want: LoopWant::Loops,
        },
        LoopRow {
            name: "mapped",
            listeners: &["[::ffff:127.0.0.1]:P"],
            local_last: &[],
            mx: &[(10, Some(1))],
            routed: None,
            want: LoopWant::Loops,
        },
        LoopRow {
            name: "every-mx",
            listeners: &["127.0.0.1:P", "0.0.0.0:P"],
            local_last: &[4],
            mx: &[(10, Some(1)), (20, Some(4))],
            routed: None,
            want: LoopWant::Loops,
        },
        // Only the preferred MX is us: the other one gets the mail.
        LoopRow {
            name: "other-mx",
            listeners: &["127.0.0.1:P"],
            local_last: &[],
            mx: &[(10, Some(1)), (20, Some(5))],
            routed: None,
            want: LoopWant::DeliveredAt(5),
        },
        // A wildcard listener, but the MX address is not local.
        LoopRow {
            name: "not-local",
            listeners: &["0.0.0.0:P"],
            local_last: &[],
            mx: &[(10, Some(6))],
            routed: None,
            want: LoopWant::DeliveredAt(6),
        },
        // The other MX cannot be resolved now: it may be someone else.
        LoopRow {
            name: "other-unresolved",
            listeners: &["127.0.0.1:P"],
            local_last: &[],
            mx: &[(10, Some(1)), (20, None)],
            routed: None,
            want: LoopWant::Deferred("loops back to myself"),
        },
        // A configured route is the operator's own hop, even to us.
        LoopRow {
            name: "routed",
            listeners: &["127.0.0.7:P"],
            local_last: &[],
            mx: &[],
            routed: Some(7),
            want: LoopWant::DeliveredAt(7),
        },
    ];
    for row in rows {
        loop_row(row).await;
    }
}

// ------------------------------------------------- origin and policies

/// A domain with an `enforce` policy (cached in a real store, TXT id
/// matching) that lists only `mx.sts.test`, while DNS names
/// `evil.sts.test` at 127.0.0.`last`, a sink without STARTTLS.
struct Enforced {
    dns: MemoryResolver,
    engine: Arc<PolicyEngine<MemoryResolver>>,
    store: Store,
    sink: Sink,
    port: u16,
    _dir: tempfile::TempDir,
}

const STS: &str = "sts.test";

async fn enforced(last: u8) -> Enforced {
    let port = free_port();
    let dns = MemoryResolver::new()
        .mx(STS, 10, "evil.sts.test")
        .a("evil.sts.test", Ipv4Addr::new(127, 0, 0, last))
        .txt("_mta-sts.sts.test", "v=STSv1; id=1");
    let sink = sink([127, 0, 0, last], port);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The policy host has no address: every fetch fails.
    let fetcher = PolicyFetcher::builder(dns.clone())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let engine =
        Arc::new(PolicyEngine::new(dns.clone(), fetcher, &store, Arc::new(SystemClock)).unwrap());
    let policy =
        Policy::parse("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n").unwrap();
    let domain = Domain::parse(STS).unwrap();
    engine
        .cache()
        .put(&CachedPolicy::new(domain, "1".into(), policy, engine.now()))
        .await
        .unwrap();
    Enforced {
        dns,
        engine,
        store,
        sink,
        port,
        _dir: dir,
    }
}

impl Enforced {
    fn deliverer(&self, results: &Results) -> Deliverer<MemoryResolver, TcpConnector> {
        deliverer(&self.dns, self.port, Vec::new(), SelfAddresses::default())
            .with_policy(self.engine.clone())
            .with_reporter(Arc::new(results.clone()))
    }
}

/// Regression test: delivery sniffed the message (null sender and
/// `report-type=tlsrpt` in the header) and delivered such mail to an
/// `enforce` domain's unlisted MX in clear. Whoever made the message,
/// the same bytes now stay under enforcement; only a message whose
/// envelope records that we made it as a TLS report is exempt, and its
/// session is not counted for TLS-RPT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_recorded_origin_exempts_a_tls_report() {
    for (origin, sender) in [
        (Origin::Relay, ""),
        (Origin::Submission, ""),
        (Origin::Bounce, ""),
        (Origin::Relay, "report-type=tlsrpt@bank.example"),
    ] {
        let world = enforced(20).await;
        let results = Results::default();
        let got = world
            .deliverer(&results)
            .deliver(job(origin, sender, "tlsrpt@sts.test", REPORT_LOOKALIKE))
            .await;
        let name = format!("{origin} <{sender}>");
        assert_deferred(&name, &got, "MTA-STS");
        assert_eq!(world.sink.connections(), 0, "{name}: unlisted MX contacted");
        assert!(
            results.0.lock().unwrap().iter().all(|r| !r.is_report),
            "{name}: counted as a report session"
        );
    }

    // Our own report: the RFC 8460 §5.3 exemption, and not counted.
    let world = enforced(21).await;
    let results = Results::default();
    let got = world
        .deliverer(&results)
        .deliver(job(
            Origin::TlsReport,
            "",
            "tlsrpt@sts.test",
            REPORT_LOOKALIKE,
        ))
        .await;
    assert!(
        matches!(only(&got), RecipientOutcome::Delivered { .. }),
        "{got:?}"
    );
    assert_eq!(world.sink.received().len(), 1);
    let recorded = results.0.lock().unwrap();
    assert!(!recorded.is_empty());
    assert!(recorded.iter().all(|r| r.is_report), "{recorded:?}");
}

/// Regression test: a cached policy entry that could not be read was taken
/// for "nothing cached", so with its fetch failing the domain was delivered
/// to as if it had no policy (in clear, to any MX). Now delivery defers
/// with an MTA-STS reason and contacts no MX; the entry is left for a
/// successful fetch to replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_policy_store_entry_defers_delivery() {
    let world = enforced(22).await;
    let tree = world.store.tree(TreeName::MtaStsPolicies).unwrap();
    tree.insert(STS, &b"{\"domain\":\"sts.test\",\"mode\":"[..])
        .unwrap();
    let results = Results::default();
    for origin in [Origin::Relay, Origin::TlsReport] {
        let got = world
            .deliverer(&results)
            .deliver(job(
                origin,
                "a@sender.test",
                "u@sts.test",
                "Subject: x\r\n\r\nhi\r\n",
            ))
            .await;
        assert_deferred(&format!("{origin}"), &got, "MTA-STS");
        let RecipientOutcome::Deferred { reason, .. } = only(&got) else {
            unreachable!()
        };
        assert!(
            reason.contains("sts.test") && reason.contains("cannot be read"),
            "{reason}"
        );
    }
    assert_eq!(world.sink.connections(), 0, "an MX was contacted");
    assert_eq!(
        tree.get(STS).unwrap().as_deref(),
        Some(&b"{\"domain\":\"sts.test\",\"mode\":"[..])
    );
}
