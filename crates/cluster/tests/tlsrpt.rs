//! TLS-RPT across nodes against a real PostgreSQL server: three nodes, each
//! with its own sled store and recorder, on one database; the report of a
//! finished day is the sum of every node's counts and is sent once, by one
//! node, to a real HTTPS receiver on loopback (tests/support's
//! `PolicyServer`, rustls, a certificate from the test CA). A node that
//! dies mid-send (its task dropped while the receiver holds the POST) is
//! replaced once its lease lapses, and the report goes again with the same
//! report-id. With the database stopped a node sends nothing and counts
//! the fall-back; what it counted meanwhile arrives with its next push.

use flate2::read::GzDecoder;
use portcullis_cluster::reports::{ClaimState, ReportClaims, ReportKind};
use portcullis_cluster::tlsrpt::PgTlsRpt;
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_dns::MemoryResolver;
use portcullis_metrics::MetricsWriter;
use portcullis_store::Store;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_tls::{ClientTls, ReportPolicy, ReportPolicyType, TlsResultType};
use portcullis_tlsrpt::shared::{CountSync, SharedReports};
use portcullis_tlsrpt::{
    Day, HttpsPoster, ReportInfo, ReportMailer, ReportParts, ReportSender, ReportSettings,
    SendOutcome, TlsResultSink, TlsRptRecorder, TlsSessionResult,
};
use portcullis_types::{Clock, Domain};
use serde_json::Value;
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DOMAIN: &str = "example.test";
const HOST: &str = "reports.example.test";
const LEASE: Duration = Duration::from_secs(2);

/// A clock the test sets.
struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

impl HandClock {
    fn set(&self, t: SystemTime) {
        let s = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        self.0.store(s, Ordering::SeqCst);
    }
}

/// No mail destinations in these tests (HTTPS only).
struct NoMail;

impl ReportMailer for NoMail {
    async fn submit(&self, _: &str, _: &str, _: Vec<u8>) -> Result<String, String> {
        Err("no mail in this test".into())
    }
}

fn day() -> Day {
    "2026-03-10".parse().unwrap()
}

fn session(failure: Option<TlsResultType>) -> TlsSessionResult {
    TlsSessionResult {
        policy: ReportPolicy {
            policy_type: ReportPolicyType::Sts,
            policy_domain: Domain::parse(DOMAIN).unwrap(),
            policy_string: vec!["version: STSv1".into(), "mode: enforce".into()],
            mx_host: vec!["mx1.example.test".into()],
            failure: None,
        },
        sending_ip: None,
        mx_host: "mx1.example.test".into(),
        receiving_ip: "192.0.2.10".parse().unwrap(),
        receiving_helo: None,
        failure,
        detail: failure.map(|_| "expired").unwrap_or_default().into(),
        reason_code: None,
        is_report: false,
    }
}

/// A sender over `store`, in cluster mode with `sync`.
fn sender(
    world: &World,
    store: &Store,
    recorder: &TlsRptRecorder,
    sync: Option<&Arc<CountSync>>,
) -> Arc<ReportSender<Arc<MemoryResolver>, NoMail>> {
    let poster = HttpsPoster::builder(world.resolver.clone())
        .tls(ClientTls::with_roots(world.pki.root_store()))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let parts = ReportParts {
        store: store.clone(),
        recorder: recorder.clone(),
        resolver: world.resolver.clone(),
        mailer: NoMail,
        poster,
    };
    let info = ReportInfo {
        organization: "Org".into(),
        contact: "mailto:postmaster@sender.test".into(),
        submitter: "sender.test".into(),
    };
    let mut builder = ReportSender::builder(parts, ReportSettings::new(info, "r@sender.test"))
        .backoff(vec![Duration::from_secs(1)]);
    if let Some(sync) = sync {
        builder = builder.shared(sync.clone(), LEASE);
    }
    Arc::new(builder.build().unwrap())
}

/// One node: its store, clock, recorder, count push and sender.
struct Node {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<HandClock>,
    recorder: TlsRptRecorder,
    sync: Arc<CountSync>,
    sender: Arc<ReportSender<Arc<MemoryResolver>, NoMail>>,
    cluster: Cluster,
}

impl Node {
    async fn start(pg: &TestPostgres, name: &str, world: &World) -> Node {
        let cluster = Cluster::new(ClusterSettings {
            database: pg.url(),
            password: Some(PASSWORD.to_owned()),
            node: name.to_owned(),
            tls: DbTls::Disable,
            pool_size: 2,
            timeout: Duration::from_secs(2),
            sync_interval: Duration::from_millis(300),
        })
        .unwrap();
        cluster.migrate().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = Arc::new(HandClock(AtomicU64::new(0)));
        clock.set(day().start() + Duration::from_secs(12 * 3600));
        let recorder = TlsRptRecorder::new(&store, clock.clone()).unwrap();
        let shared: Arc<dyn SharedReports> = Arc::new(PgTlsRpt::new(cluster.clone()));
        let sync = Arc::new(CountSync::new(recorder.clone(), shared));
        let sender = sender(world, &store, &recorder, Some(&sync));
        Node {
            _dir: dir,
            store,
            clock,
            recorder,
            sync,
            sender,
            cluster,
        }
    }

    /// The same node before it joined the cluster: a sender on its own.
    fn alone(&self, world: &World) -> Arc<ReportSender<Arc<MemoryResolver>, NoMail>> {
        sender(world, &self.store, &self.recorder, None)
    }

    fn record(&self, ok: usize, failed: usize) {
        for _ in 0..ok {
            self.recorder.record(session(None));
        }
        for _ in 0..failed {
            self.recorder
                .record(session(Some(TlsResultType::CertificateExpired)));
        }
    }

    /// The day is over for this node.
    fn day_over(&self) {
        self.clock.set(day().end() + Duration::from_secs(60));
    }

    fn fallbacks(&self) -> String {
        let mut w = MetricsWriter::new();
        self.cluster.render_metrics(&mut w);
        w.finish()
    }
}

/// The receiver and the names that lead to it.
struct World {
    pki: TestPki,
    resolver: Arc<MemoryResolver>,
    receiver: PolicyServer,
}

impl World {
    async fn start() -> World {
        let pki = TestPki::new();
        let receiver = PolicyServer::start(Ipv4Addr::LOCALHOST, &pki.issue(&[HOST])).await;
        receiver.set_reply(Reply::status(200));
        let resolver = Arc::new(MemoryResolver::new());
        resolver.add_a(HOST, Ipv4Addr::LOCALHOST);
        resolver.add_txt(
            &format!("_smtp._tls.{DOMAIN}"),
            &format!("v=TLSRPTv1; rua=https://{HOST}:{}/tlsrpt", receiver.port()),
        );
        World {
            pki,
            resolver,
            receiver,
        }
    }

    /// The reports POSTed so far.
    fn reports(&self) -> Vec<Value> {
        self.receiver
            .request_log()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                let mut json = Vec::new();
                GzDecoder::new(r.body.as_slice())
                    .read_to_end(&mut json)
                    .unwrap();
                serde_json::from_slice(&json).unwrap()
            })
            .collect()
    }
}

fn summary(report: &Value) -> (u64, u64) {
    let p = &report["policies"][0]["summary"];
    (
        p["total-successful-session-count"].as_u64().unwrap(),
        p["total-failure-session-count"].as_u64().unwrap(),
    )
}

fn sent(outcomes: &[SendOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Sent { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_counts_make_one_report_sent_once() {
    let pg = TestPostgres::start();
    let world = World::start().await;
    let a = Node::start(&pg, "a", &world).await;
    let b = Node::start(&pg, "b", &world).await;
    let c = Node::start(&pg, "c", &world).await;
    a.record(1, 0);
    b.record(2, 1);
    c.record(3, 2);
    // b and c push (their sync task does it every sync_interval).
    b.sync.push().await.unwrap();
    c.sync.push().await.unwrap();
    for n in [&a, &b, &c] {
        n.day_over();
    }
    // What a node lists is the sum of what has been pushed: a's counts
    // arrive with its next sync.
    let listed = c.sender.summaries().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].successful, listed[0].failed), (5, 3));
    assert_eq!(a.sync.push().await.unwrap(), 1);
    assert_eq!(a.sync.push().await.unwrap(), 0, "nothing changed since");
    let listed = c.sender.summaries().await.unwrap();
    assert_eq!((listed[0].successful, listed[0].failed), (6, 3));
    let shown = b.sender.report_json(DOMAIN, Some(day())).await.unwrap();
    assert_eq!(summary(&shown), (6, 3));

    let outcomes = a.sender.send_now().await;
    assert_eq!(sent(&outcomes), 1, "{outcomes:?}");
    assert!(b.sender.send_now().await.is_empty());
    assert!(c.sender.send_now().await.is_empty());
    assert!(a.sender.send_now().await.is_empty());
    let reports = world.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(summary(&reports[0]), (6, 3));
    // The report-id `show` named on another node is the one sent.
    assert_eq!(reports[0]["report-id"], shown["report-id"]);
    let claims = ReportClaims::new(a.cluster.clone(), ReportKind::TlsRpt);
    let row = claims
        .get(&day().to_string(), DOMAIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.holder.as_str()), (ClaimState::Done, "a"));
    let listed = b.sender.summaries().await.unwrap();
    assert_eq!(listed[0].state.as_str(), "sent", "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dead_mid_send_is_replaced_with_the_same_report_id() {
    let pg = TestPostgres::start();
    let world = World::start().await;
    let a = Node::start(&pg, "a", &world).await;
    let b = Node::start(&pg, "b", &world).await;
    a.record(4, 1);
    b.record(5, 0);
    b.sync.push().await.unwrap();
    a.day_over();
    b.day_over();
    // The receiver takes a's POST and never answers it in time.
    world
        .receiver
        .push_reply(Reply::status(200).with_delay(Duration::from_secs(600)));
    let sender = a.sender.clone();
    let a_task = tokio::spawn(async move { sender.send_now().await });
    for _ in 0..600 {
        if !world.reports().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(world.reports().len(), 1, "a never posted");
    // a dies: its pass (and the lease renewal in it) stops mid-send.
    a_task.abort();
    let _ = a_task.await;
    let claims = ReportClaims::new(b.cluster.clone(), ReportKind::TlsRpt);
    let row = claims
        .get(&day().to_string(), DOMAIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.holder.as_str()), (ClaimState::Pending, "a"));
    // b takes over once a's lease has lapsed, and sends the same report.
    let mut taken = Vec::new();
    for _ in 0..100 {
        taken = b.sender.send_now().await;
        if !taken.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sent(&taken), 1, "{taken:?}");
    let reports = world.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0], reports[1], "not the same report");
    assert_eq!(summary(&reports[1]), (9, 1));
    let row = claims
        .get(&day().to_string(), DOMAIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.holder.as_str()), (ClaimState::Done, "b"));
    // Never a third time.
    assert!(b.sender.send_now().await.is_empty());
    assert!(a.sender.send_now().await.is_empty());
    assert_eq!(world.reports().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_nothing_is_sent_and_counts_wait_locally() {
    let mut pg = TestPostgres::start();
    let world = World::start().await;
    let a = Node::start(&pg, "a", &world).await;
    let b = Node::start(&pg, "b", &world).await;
    b.record(2, 0);
    b.sync.push().await.unwrap();
    pg.stop();
    // Counted while the database is down: kept in a's sled.
    a.record(3, 1);
    assert!(a.sync.push().await.is_err());
    a.day_over();
    b.day_over();
    // A report of one node's counts would be wrong: nothing is sent.
    assert!(a.sender.send_now().await.is_empty());
    assert!(a.sender.summaries().await.is_err());
    assert!(world.reports().is_empty());
    let page = a.fallbacks();
    assert!(
        page.contains(r#"portcullis_cluster_fallbacks_total{store="tlsrpt"}"#),
        "{page}"
    );
    pg.start_again();
    // a's next sync brings what it buffered; b's report has it.
    let mut pushed = Err(portcullis_tlsrpt::TlsRptError::Shared("not yet".into()));
    for _ in 0..100 {
        pushed = a.sync.push().await;
        if pushed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pushed.unwrap(), 1);
    let outcomes = b.sender.send_now().await;
    assert_eq!(sent(&outcomes), 1, "{outcomes:?}");
    let reports = world.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(summary(&reports[0]), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_a_node_sent_alone_before_joining_is_not_sent_again() {
    let pg = TestPostgres::start();
    let world = World::start().await;
    let a = Node::start(&pg, "a", &world).await;
    let b = Node::start(&pg, "b", &world).await;
    a.record(2, 0);
    b.record(3, 0);
    a.day_over();
    b.day_over();
    // a ran alone and sent its report of the day.
    let outcomes = a.alone(&world).send_now().await;
    assert_eq!(sent(&outcomes), 1, "{outcomes:?}");
    let alone = world.reports();
    assert_eq!(summary(&alone[0]), (2, 0));
    // Joined: the first pass of a carries its state into the cluster, so
    // no second, different report goes for that day. (Had b claimed the
    // day first, it would not know of a's report: the README says to join
    // after the day's reports are out.)
    b.sync.push().await.unwrap();
    assert!(a.sender.send_now().await.is_empty());
    assert!(b.sender.send_now().await.is_empty());
    assert_eq!(world.reports().len(), 1);
    let row = ReportClaims::new(b.cluster.clone(), ReportKind::TlsRpt)
        .get(&day().to_string(), DOMAIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ClaimState::Done);
}
