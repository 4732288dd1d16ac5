//! The limits nodes enforce together (issue 17), on a real PostgreSQL
//! server (tests/support's `TestPostgres`): two nodes' rate tables and
//! AUTH guards exchanging through the database as the server's periodic
//! task does ([`LimitsExchange`]), the DNS-list answers one node shares
//! answering the other, and what happens while the database is stopped
//! (local limits hold, the fall-back is counted, what was not pushed is
//! pushed when it returns).

use portcullis_cluster::limits::LimitsExchange;
use portcullis_cluster::lists::PgLists;
use portcullis_cluster::lockouts::MAX_KEY;
use portcullis_cluster::rates::PgRates;
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_config::Lockout;
use portcullis_metrics::MetricsWriter;
use portcullis_screen::dnsbl::{SharedAnswer, SharedLists};
use portcullis_screen::rates::{Kind, MinuteCounts, RateTable};
use portcullis_submission::lockout::{AuthGuard, Scope};
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_types::{AddrKey, Domain, SystemClock};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cluster on `pg`, migrated.
async fn cluster(pg: &TestPostgres, node: &str) -> Cluster {
    let cluster = Cluster::new(ClusterSettings {
        database: pg.url(),
        password: Some(PASSWORD.to_owned()),
        node: node.to_owned(),
        tls: DbTls::Disable,
        pool_size: 4,
        timeout: Duration::from_secs(2),
        sync_interval: Duration::from_secs(1),
    })
    .unwrap();
    cluster.migrate().await.unwrap();
    cluster
}

/// One node's limits: its rate table, its AUTH guard, its exchange.
struct Node {
    cluster: Cluster,
    rates: RateTable,
    guard: AuthGuard,
    exchange: LimitsExchange,
    lists: Arc<PgLists>,
}

impl Node {
    async fn on(pg: &TestPostgres, name: &str) -> Node {
        let cluster = cluster(pg, name).await;
        let lists = Arc::new(PgLists::new(cluster.clone()));
        let rates = RateTable::new(1000, Arc::new(SystemClock));
        let guard = AuthGuard::new(lockout());
        rates.share();
        guard.share();
        Node {
            rates,
            guard,
            exchange: LimitsExchange::new(cluster.clone(), lists.clone()),
            lists,
            cluster,
        }
    }

    async fn exchange(&self) {
        self.exchange.exchange(&self.rates, &self.guard).await;
    }

    fn fallbacks(&self, store: &str) -> u64 {
        let mut w = MetricsWriter::new();
        self.cluster.render_metrics(&mut w);
        let page = w.finish();
        let prefix = format!("portcullis_cluster_fallbacks_total{{store=\"{store}\"}}");
        page.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

fn lockout() -> Lockout {
    Lockout {
        failures_per_ip: 3,
        failures_per_user: 3,
        window: Duration::from_secs(600),
        failure_delay: Duration::ZERO,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Connections counted on A and on B add up to one limit: after an
/// exchange each node refuses the client once the cluster's count reaches
/// it, while another client is untouched.
#[tokio::test]
async fn connections_on_two_nodes_hit_one_limit() {
    let pg = TestPostgres::start();
    let (a, b) = (Node::on(&pg, "a").await, Node::on(&pg, "b").await);
    let client = AddrKey::of(ip("192.0.2.10"));
    let limit = 5;
    for _ in 0..3 {
        a.rates.check(client, Kind::Connections, limit).unwrap();
    }
    for _ in 0..2 {
        b.rates.check(client, Kind::Connections, limit).unwrap();
    }
    a.exchange().await;
    b.exchange().await;
    a.exchange().await;
    assert_eq!(a.rates.count(client).connections, 5);
    assert_eq!(b.rates.count(client).connections, 5);
    assert!(a.rates.check(client, Kind::Connections, limit).is_err());
    assert!(b.rates.check(client, Kind::Connections, limit).is_err());
    let other = AddrKey::of(ip("2001:db8:1:2::5"));
    b.rates.check(other, Kind::Connections, limit).unwrap();
    // Each node's rows are its own: A's three, B's two (and B's one for
    // the IPv6 /64, pushed at the next exchange).
    b.exchange().await;
    assert_eq!(
        pg.sql("SELECT string_agg(node || '=' || connections, ',' ORDER BY node, connections) FROM rate_counts"),
        "a=3,b=1,b=2"
    );
    assert_eq!(a.fallbacks("rates"), 0);
}

/// A push is absolute: pushing the same counts twice counts nothing twice.
#[tokio::test]
async fn a_repeated_push_counts_once() {
    let pg = TestPostgres::start();
    let c = cluster(&pg, "a").await;
    let rates = PgRates::new(c);
    let counts = [MinuteCounts {
        key: AddrKey::of(ip("198.51.100.1")),
        minute: 29_000_000,
        counts: [4, 2, 9],
    }];
    rates.push(&counts).await.unwrap();
    rates.push(&counts).await.unwrap();
    assert_eq!(
        pg.sql("SELECT sum(connections) || '/' || sum(messages) || '/' || sum(recipients) FROM rate_counts"),
        "4/2/9"
    );
    // The sweep removes minutes before the one named.
    assert_eq!(rates.sweep(29_000_001).await.unwrap(), 1);
}

/// Failures from one address on A bring it to the limit on B; a lockout
/// started on A refuses on B; a success on A takes its count back from the
/// database too. An over-long user name is not shared.
#[tokio::test]
async fn auth_failures_and_lockouts_are_the_clusters() {
    let pg = TestPostgres::start();
    let (a, b) = (Node::on(&pg, "a").await, Node::on(&pg, "b").await);
    let t = Instant::now();
    let client = ip("203.0.113.7");
    for user in ["u1", "u2"] {
        let _ = a.guard.failed(a.guard.attempt(client, user, t).unwrap());
    }
    a.exchange().await;
    b.exchange().await;
    // B's first failure is the address's third in the cluster.
    let f = b.guard.failed(b.guard.attempt(client, "u3", t).unwrap());
    assert_eq!(f.locked.map(|l| l.scope), Some(Scope::Ip));
    b.exchange().await;
    a.exchange().await;
    let lock = a
        .guard
        .locked(client, None, Instant::now())
        .expect("locked on A too");
    assert_eq!(lock.scope, Scope::Ip);
    assert!(lock.remaining > Duration::from_secs(590), "{lock:?}");
    // A user lockout from A holds on B for an address B never saw.
    let t = Instant::now();
    for from in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let _ = a
            .guard
            .failed(a.guard.attempt(ip(from), "carol", t).unwrap());
    }
    a.exchange().await;
    b.exchange().await;
    let lock = b
        .guard
        .locked(ip("192.0.2.99"), Some("carol"), Instant::now());
    assert_eq!(lock.map(|l| l.scope), Some(Scope::User));
    // A success on A takes its count back: the row goes.
    let dave = ip("198.51.100.20");
    let attempt = a.guard.attempt(dave, "dave", t).unwrap();
    a.exchange().await;
    assert_eq!(
        pg.sql("SELECT count(*) FROM auth_failures WHERE key = convert_to('dave', 'UTF8')"),
        "1"
    );
    a.guard.succeeded(attempt, "dave", dave, t);
    a.exchange().await;
    assert_eq!(
        pg.sql("SELECT count(*) FROM auth_failures WHERE key = convert_to('dave', 'UTF8')"),
        "0"
    );
    // Bounded: a made-up name longer than MAX_KEY stays on its node.
    let long = "x".repeat(MAX_KEY + 1);
    let _ = a
        .guard
        .failed(a.guard.attempt(ip("198.51.100.30"), &long, t).unwrap());
    a.exchange().await;
    assert_eq!(
        pg.sql(&format!(
            "SELECT count(*) FROM auth_failures WHERE length(key) > {MAX_KEY}"
        )),
        "0"
    );
    assert_eq!(a.fallbacks("lockouts") + b.fallbacks("lockouts"), 0);
}

/// A DNS-list answer shared by A answers B until its TTL; an expired one
/// does not; with the database stopped B gets no answer (it asks DNS),
/// within the timeout, and the fall-back is counted.
#[tokio::test]
async fn dnsbl_answers_are_shared_until_their_ttl() {
    let mut pg = TestPostgres::start();
    let (a, b) = (Node::on(&pg, "a").await, Node::on(&pg, "b").await);
    let zone = Domain::parse("bl.example.test").unwrap();
    let client = ip("192.0.2.50");
    let listed = SharedAnswer {
        listed: Some(vec![Ipv4Addr::new(127, 0, 0, 2)]),
        remaining: Duration::from_secs(600),
    };
    a.lists.put(client, &zone, listed.clone()).await;
    let got = b.lists.get(client, &zone).await.expect("shared");
    assert_eq!(got.listed, listed.listed);
    assert!(got.remaining <= Duration::from_secs(600) && got.remaining > Duration::from_secs(590));
    // An IPv4-mapped address is its IPv4 address.
    assert!(b.lists.get(ip("::ffff:192.0.2.50"), &zone).await.is_some());
    // Not listed, and an answer whose TTL has run out.
    let other = ip("2001:db8::9");
    let clean = SharedAnswer {
        listed: None,
        remaining: Duration::from_secs(300),
    };
    a.lists.put(other, &zone, clean.clone()).await;
    assert_eq!(
        b.lists.get(other, &zone).await.map(|a| a.listed),
        Some(None)
    );
    let gone = ip("192.0.2.51");
    a.lists
        .put(
            gone,
            &zone,
            SharedAnswer {
                listed: None,
                remaining: Duration::ZERO,
            },
        )
        .await;
    assert_eq!(b.lists.get(gone, &zone).await, None);
    // The sweep removes it.
    a.exchange().await;
    assert_eq!(pg.sql("SELECT count(*) FROM dnsbl_answers"), "2");
    assert_eq!(b.fallbacks("dnsbl"), 0);
    // `screen clear` on one node removes a client's answers for all.
    assert_eq!(b.lists.forget(other).await, 1);
    assert_eq!(a.lists.get(other, &zone).await, None);
    assert_eq!(pg.sql("SELECT count(*) FROM dnsbl_answers"), "1");

    pg.stop();
    let started = Instant::now();
    assert_eq!(b.lists.get(client, &zone).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.fallbacks("dnsbl"), 1);
    // Resting: the next lookup goes straight to DNS, still counted.
    assert_eq!(b.lists.get(client, &zone).await, None);
    assert_eq!(b.fallbacks("dnsbl"), 2);
}

/// Database stopped: each node keeps enforcing its own counts and the
/// other nodes' last known ones, counts the fall-back, and pushes what it
/// counted meanwhile when the database returns.
#[tokio::test]
async fn with_the_database_stopped_local_limits_hold_and_counts_catch_up() {
    let mut pg = TestPostgres::start();
    let (a, b) = (Node::on(&pg, "a").await, Node::on(&pg, "b").await);
    let client = AddrKey::of(ip("192.0.2.77"));
    let limit = 4;
    b.rates.check(client, Kind::Messages, limit).unwrap();
    b.exchange().await;
    a.exchange().await;
    pg.stop();
    for _ in 0..3 {
        a.rates.check(client, Kind::Messages, limit).unwrap();
    }
    a.exchange().await;
    assert!(a.fallbacks("rates") >= 1);
    // B's one (known before the outage) and A's three: the limit holds.
    assert!(a.rates.check(client, Kind::Messages, limit).is_err());
    // A lockout known locally holds whatever the database does.
    let t = Instant::now();
    let guesser = ip("198.51.100.66");
    for i in 0..3 {
        let _ = a
            .guard
            .failed(a.guard.attempt(guesser, &format!("u{i}"), t).unwrap());
    }
    a.exchange().await;
    assert!(a.guard.locked(guesser, None, Instant::now()).is_some());

    pg.start_again();
    a.exchange().await;
    b.exchange().await;
    assert_eq!(
        b.rates.count(client).messages,
        4,
        "A's outage counts arrived"
    );
    assert!(b.rates.check(client, Kind::Messages, limit).is_err());
    assert!(b.guard.locked(guesser, None, Instant::now()).is_some());
}
