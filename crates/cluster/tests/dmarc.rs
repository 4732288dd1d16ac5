//! DMARC aggregate reports of a cluster against a real PostgreSQL server:
//! three nodes count in their own sled stores, push their totals, and the
//! report is the sum over the nodes, sent by exactly one of them even when
//! all three send at once; each node forgets its aggregates once the
//! report is done; a node that dies mid-send is taken over (same report
//! id, the destinations left); without the database nothing is sent and
//! counting goes on, and what was counted meanwhile is in the report.

use portcullis_auth::DkimSigner;
use portcullis_cluster::dmarc::ClusterDmarc;
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_dmarc::{
    Day, Destination, DkimAuth, DmarcMailer, DmarcRecorder, DmarcSender, Limits, Observation,
    Published, REPORT_HEADERS, ReportInfo, ReportSource, RowFacts, Rua, SendOutcome, SendState,
    SendStates, SenderSettings, SpfAuth, Taken,
};
use portcullis_dns::MemoryResolver;
use portcullis_metrics::MetricsWriter;
use portcullis_store::Store;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_types::SystemClock;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const ED25519: &str = "-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIPduBFJ69OEeWd+/xMmq0/T5phXuEgLE//1Bjm6QGn5G\n\
-----END PRIVATE KEY-----\n";

/// What a node's sender queued: (to, message).
#[derive(Default)]
struct Outbox(Mutex<Vec<(String, String)>>);

#[derive(Clone, Default)]
struct Mailer(Arc<Outbox>);

impl DmarcMailer for Mailer {
    async fn submit(&self, to: &str, message: Vec<u8>) -> Result<String, String> {
        let mut m = self.0.0.lock().map_err(|e| e.to_string())?;
        m.push((
            to.to_owned(),
            String::from_utf8_lossy(&message).into_owned(),
        ));
        Ok(format!("q{}", m.len()))
    }
}

struct Node {
    cluster: Cluster,
    recorder: DmarcRecorder,
    shared: Arc<ClusterDmarc>,
    sender: DmarcSender<MemoryResolver, Mailer>,
    _dir: tempfile::TempDir,
}

async fn node(pg: &TestPostgres, name: &str, lease: Duration, outbox: &Mailer) -> Node {
    let cluster = Cluster::new(ClusterSettings {
        database: pg.url(),
        password: Some(PASSWORD.to_owned()),
        node: name.to_owned(),
        tls: DbTls::Disable,
        pool_size: 2,
        timeout: Duration::from_secs(2),
        sync_interval: Duration::from_millis(100),
    })
    .unwrap();
    cluster.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let recorder = DmarcRecorder::open(&store, Limits::default(), Arc::default()).unwrap();
    let shared = Arc::new(ClusterDmarc::new(cluster.clone(), recorder.clone()).with_lease(lease));
    let signer =
        DkimSigner::from_pem(ED25519.as_bytes(), "mx.test", "s1", &REPORT_HEADERS).unwrap();
    let info = ReportInfo {
        organization: "Org".into(),
        contact: "postmaster@mx.test".into(),
        submitter: "mx.test".into(),
    };
    let sender = DmarcSender::new(
        store,
        recorder.clone(),
        MemoryResolver::new(),
        outbox.clone(),
        signer,
        SenderSettings::new(info, "dmarc-reports@mx.test"),
        Arc::new(SystemClock),
    )
    .unwrap()
    .with_backend(shared.clone(), shared.clone());
    Node {
        cluster,
        recorder,
        shared,
        sender,
        _dir: dir,
    }
}

/// Two days ago: finished, and well within the retention.
fn day() -> Day {
    Day::from_days_since_epoch(Day::of(SystemTime::now()).days_since_epoch() - 2)
}

fn row(ip: &str) -> RowFacts {
    RowFacts {
        source_ip: ip.parse().unwrap(),
        envelope_from: "a.test".into(),
        disposition: "none".into(),
        dkim_aligned: true,
        spf_aligned: false,
        local_policy: false,
        dkim: vec![DkimAuth {
            domain: "a.test".into(),
            selector: "s1".into(),
            result: "pass".into(),
        }],
        spf: SpfAuth {
            domain: "a.test".into(),
            helo: false,
            result: "pass".into(),
        },
    }
}

fn count(n: &Node, ip: &str, times: u64) {
    count_row(n, row(ip), times);
}

fn count_row(n: &Node, row: RowFacts, times: u64) {
    for _ in 0..times {
        n.recorder
            .record(&Observation {
                header_from: "a.test".into(),
                day: day(),
                published: Published {
                    rua: vec![Rua {
                        uri: "mailto:d@a.test".into(),
                        max_size: 0,
                    }],
                    adkim_strict: false,
                    aspf_strict: false,
                    p: "reject".into(),
                    sp: "reject".into(),
                    pct: 100,
                },
                row: row.clone(),
            })
            .unwrap();
    }
}

fn sent(outcomes: &[SendOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Sent { .. }))
        .count()
}

fn fallbacks(c: &Cluster) -> u64 {
    let mut w = MetricsWriter::new();
    c.render_metrics(&mut w);
    let page = w.finish();
    page.lines()
        .find(|l| l.starts_with("portcullis_cluster_fallbacks_total{store=\"dmarc\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_the_sum_of_every_node_and_sent_by_one() {
    let mut pg = TestPostgres::start();
    let outbox = Mailer::default();
    let lease = Duration::from_secs(60);
    let a = node(&pg, "a", lease, &outbox).await;
    let b = node(&pg, "b", lease, &outbox).await;
    let c = node(&pg, "c", lease, &outbox).await;
    // The same row on two nodes is one row of the report, its counts
    // added; a row of one node only is there too.
    count(&a, "192.0.2.1", 2);
    count(&b, "192.0.2.1", 3);
    count(&b, "192.0.2.2", 1);
    count(&c, "192.0.2.2", 1);
    for n in [&a, &b, &c] {
        n.shared.sync(SystemTime::now()).await.unwrap();
    }
    // A sync repeated counts nothing twice.
    a.shared.sync(SystemTime::now()).await.unwrap();
    let pending = ReportSource::pending(&*b.shared).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0].messages, pending[0].rows), (7, 2));
    let rows = ReportSource::rows(&*c.shared, day(), "a.test")
        .await
        .unwrap();
    let counts: Vec<(String, u64)> = rows
        .iter()
        .map(|(r, n)| (r.source_ip.to_string(), *n))
        .collect();
    assert_eq!(
        counts,
        [("192.0.2.1".to_owned(), 5), ("192.0.2.2".to_owned(), 2)]
    );
    // All three send at once: one report.
    let (x, y, z) = tokio::join!(
        a.sender.send_now(),
        b.sender.send_now(),
        c.sender.send_now()
    );
    assert_eq!(sent(&x) + sent(&y) + sent(&z), 1, "{x:?} {y:?} {z:?}");
    let mail = outbox.0.0.lock().unwrap().clone();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].0, "d@a.test");
    // Done: every node forgets its aggregates at its next sync, and no
    // node sends it again.
    for n in [&a, &b, &c] {
        n.shared.sync(SystemTime::now()).await.unwrap();
        assert!(n.recorder.pending().unwrap().is_empty());
        assert!(n.sender.send_now().await.is_empty());
    }
    assert!(ReportSource::pending(&*a.shared).await.unwrap().is_empty());
    assert_eq!(outbox.0.0.lock().unwrap().len(), 1);
    pg.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_send_is_taken_over_with_the_same_report_id() {
    let mut pg = TestPostgres::start();
    let outbox = Mailer::default();
    let a = node(&pg, "a", Duration::from_millis(500), &outbox).await;
    let b = node(&pg, "b", Duration::from_millis(500), &outbox).await;
    count(&a, "192.0.2.1", 4);
    count(&b, "192.0.2.1", 1);
    a.shared.sync(SystemTime::now()).await.unwrap();
    b.shared.sync(SystemTime::now()).await.unwrap();
    // Node a takes the report and writes that it is queuing to two
    // destinations, then dies (never renews, never finishes).
    assert_eq!(
        a.shared.take(day(), "a.test").await.unwrap(),
        Taken::Yours(None)
    );
    let state = SendState {
        report_id: "rid-1@mx.test".into(),
        state: "sending".into(),
        attempts: 0,
        last_error: None,
        decided_at: None,
        remaining: vec![
            Destination {
                address: "one@a.test".into(),
                max_size: 0,
            },
            Destination {
                address: "two@a.test".into(),
                max_size: 0,
            },
        ],
    };
    assert!(a.shared.save(day(), "a.test", &state, false).await.unwrap());
    // While a's lease runs, b leaves it alone.
    assert_eq!(
        b.shared.take(day(), "a.test").await.unwrap(),
        Taken::Elsewhere
    );
    // Once it lapsed, b's pass sends it to what was left, same id.
    let mut outcomes = Vec::new();
    for _ in 0..100 {
        outcomes = b.sender.send_now().await;
        if !outcomes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent(&outcomes), 2, "{outcomes:?}");
    let mail = outbox.0.0.lock().unwrap().clone();
    let to: Vec<&str> = mail.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(to, ["one@a.test", "two@a.test"]);
    for (_, m) in &mail {
        assert!(m.contains("rid-1@mx.test"), "{m}");
    }
    // The old holder can no longer write or renew.
    assert!(!a.shared.renew(day(), "a.test").await.unwrap());
    assert!(!a.shared.save(day(), "a.test", &state, false).await.unwrap());
    assert!(a.sender.send_now().await.is_empty());
    pg.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_nothing_is_sent_and_the_counts_wait() {
    let mut pg = TestPostgres::start();
    let outbox = Mailer::default();
    let a = node(&pg, "a", Duration::from_secs(60), &outbox).await;
    let b = node(&pg, "b", Duration::from_secs(60), &outbox).await;
    count(&a, "192.0.2.1", 1);
    count(&b, "192.0.2.1", 1);
    a.shared.sync(SystemTime::now()).await.unwrap();
    b.shared.sync(SystemTime::now()).await.unwrap();
    pg.stop();
    // Counting goes on locally; a sync and a send fail and are counted.
    count(&a, "192.0.2.1", 2);
    assert!(a.shared.sync(SystemTime::now()).await.is_err());
    assert!(a.sender.send_now().await.is_empty());
    assert!(fallbacks(&a.cluster) >= 2);
    assert!(outbox.0.0.lock().unwrap().is_empty());
    pg.start_again();
    // Back: the counts of the outage are in the one report.
    let mut outcomes = Vec::new();
    for _ in 0..100 {
        outcomes = a.sender.send_now().await;
        if !outcomes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent(&outcomes), 1, "{outcomes:?}");
    let mail = outbox.0.0.lock().unwrap().clone();
    assert_eq!(mail.len(), 1);
    // The row's count in the report XML is 4 (1 + 1 + 2 of the outage):
    // read back through the sum the sender built it from.
    let rows = portcullis_cluster::reports::ReportCounts::new(
        b.cluster.clone(),
        portcullis_cluster::reports::ReportKind::Dmarc,
    )
    .rows(&day().to_string(), "a.test")
    .await
    .unwrap();
    let merged = portcullis_cluster::dmarc::merge_rows(&rows);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].1, 4);
    pg.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_longer_than_a_shared_key_is_summed_too() {
    let mut pg = TestPostgres::start();
    let outbox = Mailer::default();
    let a = node(&pg, "a", Duration::from_secs(60), &outbox).await;
    let b = node(&pg, "b", Duration::from_secs(60), &outbox).await;
    // Eight signatures with long selectors: facts of a few kB.
    let mut long = row("192.0.2.9");
    long.dkim = (0..8)
        .map(|i| DkimAuth {
            domain: "a.test".into(),
            selector: format!("{i}{}", "s".repeat(250)),
            result: "pass".into(),
        })
        .collect();
    assert!(serde_json::to_vec(&long).unwrap().len() > 1024);
    count_row(&a, long.clone(), 2);
    count_row(&b, long.clone(), 3);
    a.shared.sync(SystemTime::now()).await.unwrap();
    b.shared.sync(SystemTime::now()).await.unwrap();
    let rows = ReportSource::rows(&*a.shared, day(), "a.test")
        .await
        .unwrap();
    assert_eq!(rows, [(long, 5)]);
    pg.stop();
}
