//! The recipient probe against a real SMTP server on loopback (the test
//! support sink, as a mail store that knows some users): what each reply
//! means, the route in force (reloads apply), TLS as delivery speaks it,
//! and the per-route pool: connections reused, at most four at once,
//! a bounded wait for a slot, idle connections closed, a stale one
//! replaced.

use portcullis_config::{NextHop, Route, RouteTls};
use portcullis_delivery::{
    Destinations, LiveDestinations, Planner, ProbeSettings, RouteProbe, SelfAddresses,
    TcpConnector, Timeouts,
};
use portcullis_dns::MemoryResolver;
use portcullis_screen::recipients::{ProbeAnswer, RecipientProbe};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::free_port;
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::ClientTls;
use portcullis_types::{Address, Domain};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

fn route(name: &str, host: &str, port: u16) -> Route {
    Route {
        domain: domain(name),
        include_subdomains: false,
        next_hop: NextHop {
            host: host.to_owned(),
            port,
        },
        tls: RouteTls::Opportunistic,
    }
}

fn settings() -> ProbeSettings {
    ProbeSettings {
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        ..ProbeSettings::default()
    }
}

/// A probe whose routes are `routes` (`example.test` and `other.test` are
/// ours), with `store.example.test` resolving to 127.0.0.1.
fn probe(
    routes: Vec<Route>,
    tls: ClientTls,
    settings: ProbeSettings,
) -> (
    Arc<RouteProbe<MemoryResolver, TcpConnector>>,
    LiveDestinations,
) {
    let live = LiveDestinations::new(Destinations {
        routes,
        accepted: vec![domain("example.test"), domain("other.test")],
        dane_only: Vec::new(),
    });
    let planner = Planner {
        resolver: MemoryResolver::new().a("store.example.test", Ipv4Addr::LOCALHOST),
        destinations: live.clone(),
        port: 25,
        myself: SelfAddresses::new(Vec::new()),
    };
    let probe = RouteProbe::new(
        planner,
        TcpConnector {
            timeout: Duration::from_secs(5),
        },
        "mx.portcullis.test",
        tls,
    )
    .with_settings(settings);
    (Arc::new(probe), live)
}

fn no_roots() -> ClientTls {
    ClientTls::with_roots(rustls::RootCertStore::empty())
}

/// A store that knows alice and bob; `busy@` gets a 4xx.
fn store() -> Sink {
    Sink::start(SinkConfig {
        known_users: Some(vec!["alice@example.test".into(), "bob@example.test".into()]),
        rcpt_replies: vec![(
            "busy@example.test".into(),
            "450 4.2.1 mailbox busy, try later".into(),
        )],
        ..SinkConfig::default()
    })
}

fn to_store(sink: &Sink) -> Vec<Route> {
    vec![route("example.test", "127.0.0.1", sink.addr().port())]
}

async fn ask(probe: &RouteProbe<MemoryResolver, TcpConnector>, address: &str) -> ProbeAnswer {
    probe.probe(&Address::parse(address).unwrap()).await
}

#[track_caller]
fn is_unreachable(answer: &ProbeAnswer, needle: &str) {
    match answer {
        ProbeAnswer::Unreachable { reason } => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Unreachable ({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn replies_mean_exists_unknown_or_nothing_on_one_reused_connection() {
    for pipelining in [true, false] {
        let sink = store();
        sink.reconfigure(|c| c.pipelining = pipelining);
        let (probe, _) = probe(to_store(&sink), no_roots(), settings());
        assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
        assert_eq!(ask(&probe, "Bob@example.test").await, ProbeAnswer::Exists);
        match ask(&probe, "carol@example.test").await {
            ProbeAnswer::Unknown { reply } => assert!(reply.starts_with("550 5.1.1"), "{reply}"),
            other => panic!("{other:?}"),
        }
        is_unreachable(&ask(&probe, "busy@example.test").await, "450 4.2.1");
        assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);

        assert_eq!(
            sink.connections(),
            1,
            "one pooled connection for every probe"
        );
        let commands = sink.commands();
        let mails = commands.iter().filter(|c| *c == "MAIL FROM:<>").count();
        let rsets = commands.iter().filter(|c| *c == "RSET").count();
        assert_eq!((mails, rsets), (5, 5), "{commands:?}");
        assert!(commands.contains(&"RCPT TO:<carol@example.test>".to_owned()));
        assert_eq!(sink.pipelined_commands().is_empty(), !pipelining);
        assert!(sink.received().is_empty(), "a probe never sends data");
    }
}

#[tokio::test]
async fn a_domain_without_a_route_is_not_probed() {
    let sink = store();
    let (probe, _) = probe(to_store(&sink), no_roots(), settings());
    // Ours without a route, and somebody else's (MX delivery): no route.
    assert_eq!(ask(&probe, "x@other.test").await, ProbeAnswer::NoRoute);
    assert_eq!(ask(&probe, "x@elsewhere.test").await, ProbeAnswer::NoRoute);
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn a_route_down_or_refusing_says_nothing() {
    let port = free_port();
    let (probe, live) = probe(
        vec![route("example.test", "127.0.0.1", port)],
        no_roots(),
        settings(),
    );
    is_unreachable(&ask(&probe, "alice@example.test").await, "connect");

    let refusing = Sink::start(SinkConfig {
        greeting: 421,
        ..SinkConfig::default()
    });
    live.set(Destinations {
        routes: to_store(&refusing),
        accepted: vec![domain("example.test")],
        dane_only: Vec::new(),
    });
    is_unreachable(&ask(&probe, "alice@example.test").await, "421");

    let no_null_sender = Sink::start(SinkConfig {
        mail_reply: Some("550 5.7.1 null sender refused".into()),
        ..SinkConfig::default()
    });
    live.set(Destinations {
        routes: to_store(&no_null_sender),
        accepted: vec![domain("example.test")],
        dane_only: Vec::new(),
    });
    // A route that refuses MAIL FROM:<> cannot say who exists: never "unknown".
    is_unreachable(
        &ask(&probe, "alice@example.test").await,
        "MAIL FROM refused",
    );
}

#[tokio::test]
async fn the_route_in_force_is_asked_after_a_reload() {
    let first = store();
    let second = Sink::start(SinkConfig {
        known_users: Some(vec!["carol@example.test".into()]),
        ..SinkConfig::default()
    });
    let (probe, live) = probe(to_store(&first), no_roots(), settings());
    assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
    live.set(Destinations {
        routes: to_store(&second),
        accepted: vec![domain("example.test")],
        dane_only: Vec::new(),
    });
    assert_eq!(ask(&probe, "carol@example.test").await, ProbeAnswer::Exists);
    assert!(matches!(
        ask(&probe, "alice@example.test").await,
        ProbeAnswer::Unknown { .. }
    ));
    assert_eq!((first.connections(), second.connections()), (1, 1));
}

#[tokio::test]
async fn the_route_is_spoken_to_over_starttls_as_delivery_does() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig {
        tls: SinkTls::Cert(pki.issue(&["store.example.test"])),
        known_users: Some(vec!["alice@example.test".into()]),
        ..SinkConfig::default()
    });
    let routes = vec![route(
        "example.test",
        "store.example.test",
        sink.addr().port(),
    )];
    let (probe, _) = probe(routes, ClientTls::with_roots(pki.root_store()), settings());
    assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
    assert!(matches!(
        ask(&probe, "mallory@example.test").await,
        ProbeAnswer::Unknown { .. }
    ));
    let commands = sink.commands();
    let starttls = commands.iter().position(|c| c == "STARTTLS");
    let mail = commands.iter().position(|c| c == "MAIL FROM:<>");
    assert!(starttls.is_some() && starttls < mail, "{commands:?}");
    assert!(sink.tls_errors().is_empty(), "{:?}", sink.tls_errors());
    assert_eq!(sink.connections(), 1);
}

/// A route with `tls = "verify"` to an IP next hop: the probe verifies the
/// certificate for `tls_name` as delivery does; a certificate for another
/// name is unreachable (never asked in clear).
#[tokio::test]
async fn a_verified_route_is_probed_only_over_tls_for_its_name() {
    let pki = TestPki::new();
    for (cert_name, good) in [("store.example.test", true), ("someone-else.test", false)] {
        let sink = Sink::start(SinkConfig {
            tls: SinkTls::Cert(pki.issue(&[cert_name])),
            known_users: Some(vec!["alice@example.test".into()]),
            ..SinkConfig::default()
        });
        let mut verified = route("example.test", "127.0.0.1", sink.addr().port());
        verified.tls = RouteTls::Verify {
            name: "store.example.test".into(),
        };
        let (probe, _) = probe(
            vec![verified],
            ClientTls::with_roots(pki.root_store()),
            settings(),
        );
        let answer = ask(&probe, "alice@example.test").await;
        if good {
            assert_eq!(answer, ProbeAnswer::Exists);
        } else {
            assert!(
                matches!(answer, ProbeAnswer::Unreachable { .. }),
                "{answer:?}"
            );
            assert!(
                !sink.commands().iter().any(|c| c.starts_with("MAIL")),
                "asked in clear: {:?}",
                sink.commands()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_probes_use_at_most_four_connections() {
    let sink = Sink::start(SinkConfig {
        known_users: Some((0..10).map(|i| format!("user{i}@example.test")).collect()),
        rcpt_delay: Some(Duration::from_millis(30)),
        ..SinkConfig::default()
    });
    let (probe, _) = probe(to_store(&sink), no_roots(), settings());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let probe = Arc::clone(&probe);
        tasks.push(tokio::spawn(async move {
            (i, ask(&probe, &format!("user{i}@example.test")).await)
        }));
    }
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        match (i < 10, answer) {
            (true, ProbeAnswer::Exists) | (false, ProbeAnswer::Unknown { .. }) => {}
            (_, other) => panic!("user{i}: {other:?}"),
        }
    }
    assert!(
        sink.max_open_connections() <= 4,
        "{}",
        sink.max_open_connections()
    );
    assert!(sink.connections() <= 4, "{}", sink.connections());
}

#[tokio::test]
async fn a_probe_waits_for_a_slot_only_so_long() {
    let sink = Sink::start(SinkConfig {
        rcpt_delay: Some(Duration::from_secs(2)),
        ..SinkConfig::default()
    });
    let one_slot = ProbeSettings {
        per_route: 1,
        wait: Duration::from_millis(100),
        ..settings()
    };
    let (probe, _) = probe(to_store(&sink), no_roots(), one_slot);
    let first = {
        let probe = Arc::clone(&probe);
        tokio::spawn(async move { ask(&probe, "a@example.test").await })
    };
    // The first probe holds the only slot (its RCPT is being answered).
    while !sink.commands().iter().any(|c| c.starts_with("RCPT")) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    is_unreachable(&ask(&probe, "b@example.test").await, "busy");
    assert_eq!(first.await.unwrap(), ProbeAnswer::Exists);
    assert_eq!(sink.connections(), 1);
}

#[tokio::test]
async fn idle_connections_are_closed_and_replaced() {
    let sink = store();
    let quick = ProbeSettings {
        idle: Duration::from_millis(200),
        ..settings()
    };
    let (probe, _) = probe(to_store(&sink), no_roots(), quick);
    assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
    assert_eq!(sink.open_connections(), 1);
    // The reaper says QUIT to the idle connection (waited for off the
    // runtime the reaper runs on).
    let sink = Arc::new(sink);
    let waiter = Arc::clone(&sink);
    tokio::task::spawn_blocking(move || waiter.wait_open(0, WAIT))
        .await
        .unwrap();
    assert!(sink.commands().contains(&"QUIT".to_owned()));
    assert_eq!(ask(&probe, "bob@example.test").await, ProbeAnswer::Exists);
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_route_closed_is_replaced() {
    let first = store();
    let addr: SocketAddr = first.addr();
    let (probe, _) = probe(to_store(&first), no_roots(), settings());
    assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
    // The store restarts on the same address: the pooled connection is dead.
    drop(first);
    let second = Sink::start(SinkConfig {
        bind: addr,
        known_users: Some(vec!["alice@example.test".into()]),
        ..SinkConfig::default()
    });
    assert_eq!(ask(&probe, "alice@example.test").await, ProbeAnswer::Exists);
    assert_eq!(second.connections(), 1);
}
