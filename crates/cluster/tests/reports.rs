//! The shared report tables (migration 3) against a real PostgreSQL
//! server: counts are per node and replaced whole (a repeated push counts
//! nothing twice, the sum over nodes is what each node pushed), one node
//! at a time holds a report, a lapsed lease is taken over with the state
//! the first holder wrote, a taken-over node can no longer write, and a
//! done report is never claimed again.

use portcullis_cluster::reports::{ClaimState, CountRow, ReportClaims, ReportCounts, ReportKind};
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use std::time::Duration;

async fn node(pg: &TestPostgres, name: &str) -> Cluster {
    let c = Cluster::new(ClusterSettings {
        database: pg.url(),
        password: Some(PASSWORD.to_owned()),
        node: name.to_owned(),
        tls: DbTls::Disable,
        pool_size: 2,
        timeout: Duration::from_secs(2),
        sync_interval: Duration::from_secs(1),
    })
    .unwrap();
    c.migrate().await.unwrap();
    c
}

fn row(domain: &str, key: &str, n: u64) -> CountRow {
    CountRow {
        day: "2026-12-05".into(),
        domain: domain.into(),
        key: key.into(),
        value: n.to_string().into_bytes(),
    }
}

fn sum(rows: &[portcullis_cluster::reports::NodeCount]) -> u64 {
    rows.iter()
        .map(|r| {
            std::str::from_utf8(&r.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_per_node_totals_and_sum_across_nodes() {
    let pg = TestPostgres::start();
    let a = ReportCounts::new(node(&pg, "a").await, ReportKind::TlsRpt);
    let b = ReportCounts::new(node(&pg, "b").await, ReportKind::TlsRpt);
    a.push(&[row("x.test", "p1", 3)]).await.unwrap();
    // Pushed again (a sync after a crash): replaced, not added.
    a.push(&[row("x.test", "p1", 3)]).await.unwrap();
    a.push(&[row("x.test", "p1", 5)]).await.unwrap();
    b.push(&[row("x.test", "p1", 7), row("y.test", "p1", 1)])
        .await
        .unwrap();
    let rows = a.rows("2026-12-05", "x.test").await.unwrap();
    assert_eq!(rows.len(), 2, "one row per node: {rows:?}");
    assert_eq!(sum(&rows), 12);
    assert_eq!(
        b.days().await.unwrap(),
        [
            ("2026-12-05".to_owned(), "x.test".to_owned()),
            ("2026-12-05".to_owned(), "y.test".to_owned())
        ]
    );
    // Another kind does not see them.
    let d = ReportCounts::new(node(&pg, "a").await, ReportKind::Dmarc);
    assert!(d.days().await.unwrap().is_empty());
    // An over-long key is skipped, the rest written.
    let long = "k".repeat(5000);
    assert_eq!(
        a.push(&[row("x.test", &long, 1), row("x.test", "p2", 1)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(sum(&a.rows("2026-12-05", "x.test").await.unwrap()), 13);
    assert_eq!(a.prune_before("2026-12-06").await.unwrap(), 4);
    assert!(a.days().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_a_lapsed_lease_is_taken_over() {
    let pg = TestPostgres::start();
    let a = ReportClaims::new(node(&pg, "a").await, ReportKind::TlsRpt);
    let b = ReportClaims::new(node(&pg, "b").await, ReportKind::TlsRpt);
    let (day, dom) = ("2026-12-05", "x.test");
    let long = Duration::from_secs(60);

    let first = a.claim(day, dom, long).await.unwrap().expect("a claims");
    assert_eq!(first.record, None);
    assert_eq!(first.taken_from, None);
    assert_eq!(b.claim(day, dom, long).await.unwrap(), None, "a holds it");
    // The holder claims again (its next pass) and writes its state.
    assert!(a.claim(day, dom, long).await.unwrap().is_some());
    assert!(
        a.save(day, dom, b"id-1", ClaimState::Pending)
            .await
            .unwrap()
    );
    assert!(
        !b.save(day, dom, b"id-2", ClaimState::Pending)
            .await
            .unwrap()
    );

    // a stops renewing (killed): its lease lapses, b takes over with a's
    // state, and a can no longer renew or write.
    a.claim(day, dom, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let taken = b
        .claim(day, dom, long)
        .await
        .unwrap()
        .expect("b takes over");
    assert_eq!(taken.record.as_deref(), Some(&b"id-1"[..]));
    assert_eq!(taken.taken_from.as_deref(), Some("a"));
    assert!(!a.renew(day, dom, long).await.unwrap());
    assert!(!a.save(day, dom, b"late", ClaimState::Done).await.unwrap());
    assert!(b.renew(day, dom, long).await.unwrap());

    // Done: nobody claims it again, whoever asks and however long after.
    assert!(
        b.save(day, dom, b"id-1 sent", ClaimState::Done)
            .await
            .unwrap()
    );
    b.release(day, dom).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.claim(day, dom, long).await.unwrap(), None);
    assert_eq!(b.claim(day, dom, long).await.unwrap(), None);
    let row = a.get(day, dom).await.unwrap().unwrap();
    assert_eq!(row.state, ClaimState::Done);
    assert_eq!(row.holder, "b");
    assert_eq!(row.record.as_deref(), Some(&b"id-1 sent"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claiming_at_once_get_one_winner() {
    let pg = TestPostgres::start();
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.push(ReportClaims::new(
            node(&pg, &format!("n{i}")).await,
            ReportKind::Dmarc,
        ));
    }
    for round in 0..5 {
        let dom = format!("d{round}.test");
        let tasks: Vec<_> = nodes
            .iter()
            .cloned()
            .map(|c| {
                let dom = dom.clone();
                tokio::spawn(async move {
                    c.claim("2026-12-05", &dom, Duration::from_secs(60))
                        .await
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
