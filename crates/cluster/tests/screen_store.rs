//! The screen's state in a real PostgreSQL server (tests/support's
//! `TestPostgres`): one behaviour table run against the sled store and
//! the PostgreSQL store alike (so the shared backend is a drop-in), the
//! capacity bound, the sweep, two nodes' stores on one database seeing
//! each other's writes, and the shared store falling back to the node's
//! local store, within the timeout, when the database is stopped.

use portcullis_cluster::screen::{MAX_KEY, MAX_VALUE, PgScreenStore};
use portcullis_cluster::screen_shared::SharedScreenStore;
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_metrics::MetricsWriter;
use portcullis_screen::state::{ScreenStore, SledScreenStore, Stored, Table};
use portcullis_store::Store;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn entry(value: &[u8], expires: u64) -> Stored {
    Stored {
        value: value.to_vec(),
        expires,
    }
}

fn keys(v: Vec<(Vec<u8>, Stored)>) -> Vec<Vec<u8>> {
    v.into_iter().map(|(k, _)| k).collect()
}

/// A cluster on `pg`, migrated, with `timeout` per operation.
async fn cluster(pg: &TestPostgres, node: &str, timeout: Duration) -> Cluster {
    let cluster = Cluster::new(ClusterSettings {
        database: pg.url(),
        password: Some(PASSWORD.to_owned()),
        node: node.to_owned(),
        tls: DbTls::Disable,
        pool_size: 4,
        timeout,
        sync_interval: Duration::from_secs(1),
    })
    .unwrap();
    cluster.migrate().await.unwrap();
    cluster
}

/// A sled store in a temporary directory (kept alive with it).
fn sled(capacity: u64) -> (tempfile::TempDir, SledScreenStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let screen = SledScreenStore::new(&store)
        .unwrap()
        .with_capacity(capacity);
    (dir, screen)
}

/// What every [`ScreenStore`] does, on an empty store holding at most 5
/// entries per table: the trait's promises, the sled store's tests as
/// one table.
async fn behaves_as_a_screen_store(s: &dyn ScreenStore, value_limit: usize) {
    // get: live until `expires`, gone from then on; tables apart.
    s.put(Table::Greylist, b"k", entry(b"v", 100))
        .await
        .unwrap();
    assert_eq!(
        s.get(Table::Greylist, b"k", 99).await.unwrap(),
        Some(entry(b"v", 100))
    );
    assert_eq!(s.get(Table::Greylist, b"k", 100).await.unwrap(), None);
    assert_eq!(s.get(Table::Recipients, b"k", 0).await.unwrap(), None);
    // put replaces.
    s.put(Table::Greylist, b"k", entry(b"w", 200))
        .await
        .unwrap();
    assert_eq!(
        s.get(Table::Greylist, b"k", 150).await.unwrap(),
        Some(entry(b"w", 200))
    );
    assert_eq!(s.remove_prefix(Table::Greylist, b"k").await.unwrap(), 1);

    // scan_prefix: live entries with the prefix, in byte order, limited;
    // keys with octets above 0x7F and a 0xFF prefix end sort as bytes.
    for (k, exp) in [
        (&b"a3"[..], 50),
        (b"a1", 50),
        (b"a2", 10),
        (&[b'a', 0xFF][..], 50),
        (b"b1", 50),
    ] {
        s.put(Table::Recipients, k, entry(k, exp)).await.unwrap();
    }
    let all = s
        .scan_prefix(Table::Recipients, b"a", 20, 100)
        .await
        .unwrap();
    assert_eq!(
        keys(all.clone()),
        vec![b"a1".to_vec(), b"a3".to_vec(), vec![b'a', 0xFF]]
    );
    assert_eq!(all[0].1, entry(b"a1", 50));
    let two = s.scan_prefix(Table::Recipients, b"a", 20, 2).await.unwrap();
    assert_eq!(keys(two), vec![b"a1".to_vec(), b"a3".to_vec()]);
    let ff = s
        .scan_prefix(Table::Recipients, &[b'a', 0xFF], 20, 100)
        .await
        .unwrap();
    assert_eq!(keys(ff), vec![vec![b'a', 0xFF]]);
    let everything = s
        .scan_prefix(Table::Recipients, b"", 20, 100)
        .await
        .unwrap();
    assert_eq!(everything.len(), 4);
    assert!(
        s.scan_prefix(Table::Greylist, b"a", 20, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // remove_prefix: that prefix only; how many (expired ones included).
    assert_eq!(s.remove_prefix(Table::Recipients, b"a").await.unwrap(), 4);
    assert!(s.get(Table::Recipients, b"b1", 0).await.unwrap().is_some());
    assert_eq!(s.remove_prefix(Table::Recipients, b"").await.unwrap(), 1);

    // sweep: expired entries of both tables, nothing live.
    s.put(Table::Greylist, b"old", entry(b"", 10))
        .await
        .unwrap();
    s.put(Table::Greylist, b"new", entry(b"", 30))
        .await
        .unwrap();
    s.put(Table::Recipients, b"old", entry(b"", 20))
        .await
        .unwrap();
    assert_eq!(s.sweep(20).await.unwrap(), 2);
    assert!(s.get(Table::Greylist, b"new", 20).await.unwrap().is_some());
    assert_eq!(s.sweep(20).await.unwrap(), 0);
    assert_eq!(s.remove_prefix(Table::Greylist, b"").await.unwrap(), 1);

    // Over-long values are refused and leave nothing behind.
    let big = vec![0u8; value_limit + 1];
    assert!(s.put(Table::Greylist, b"k", entry(&big, 10)).await.is_err());
    assert_eq!(s.get(Table::Greylist, b"k", 0).await.unwrap(), None);
    let largest = vec![7u8; value_limit];
    s.put(Table::Greylist, b"k", entry(&largest, 10))
        .await
        .unwrap();
    assert_eq!(
        s.get(Table::Greylist, b"k", 0).await.unwrap(),
        Some(entry(&largest, 10))
    );
    assert_eq!(s.remove_prefix(Table::Greylist, b"k").await.unwrap(), 1);

    // Capacity 5: new keys refused past it, rewrites taken; the other
    // table unaffected; a sweep and a removal make room.
    for (k, expires) in [
        (b"a", 10),
        (b"b", 100),
        (b"c", 100),
        (b"y", 100),
        (b"z", 100),
    ] {
        s.put(Table::Greylist, k, entry(b"v", expires))
            .await
            .unwrap();
    }
    let full = s.put(Table::Greylist, b"d", entry(b"v", 100)).await;
    assert!(full.unwrap_err().to_string().contains("full"));
    assert_eq!(s.get(Table::Greylist, b"d", 0).await.unwrap(), None);
    s.put(Table::Greylist, b"b", entry(b"w", 200))
        .await
        .unwrap();
    s.put(Table::Recipients, b"x", entry(b"v", 100))
        .await
        .unwrap();
    assert_eq!(s.sweep(50).await.unwrap(), 1);
    s.put(Table::Greylist, b"d", entry(b"v", 100))
        .await
        .unwrap();
    assert!(
        s.put(Table::Greylist, b"e", entry(b"v", 100))
            .await
            .is_err()
    );
    assert_eq!(s.remove_prefix(Table::Greylist, b"d").await.unwrap(), 1);
    s.put(Table::Greylist, b"e", entry(b"v", 100))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_sled_store_passes_the_behaviour_table() {
    let (_dir, s) = sled(5);
    behaves_as_a_screen_store(&s, portcullis_store::MAX_VALUE - 8).await;
}

#[tokio::test]
async fn the_postgres_store_passes_the_same_behaviour_table() {
    let pg = TestPostgres::start();
    let c = cluster(&pg, "a", Duration::from_secs(5)).await;
    let s = PgScreenStore::new(c).with_capacity(5);
    behaves_as_a_screen_store(&s, MAX_VALUE).await;
    // The triggers' count is the rows there are.
    assert_eq!(s.len(Table::Greylist).await.unwrap(), 5);
    assert_eq!(s.len(Table::Recipients).await.unwrap(), 1);
    assert_eq!(
        pg.sql("SELECT tbl, count(*) FROM screen_entries GROUP BY tbl ORDER BY tbl"),
        "1|5\n2|1"
    );
    // Both stores take the same values: a node falling back to sled
    // never meets one the database took and sled refuses.
    assert_eq!(MAX_VALUE + 8, portcullis_store::MAX_VALUE);
    // A key past the index's limit is refused with a clear error, not a
    // database failure.
    let long = vec![b'k'; MAX_KEY + 1];
    let e = s
        .put(Table::Greylist, &long, entry(b"", 10))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
}

/// Two nodes' stores on one database: a write by one is read by the
/// other; a clear on one is gone for the other; a sweep by either counts
/// each row once; the capacity is the cluster's, not each node's.
#[tokio::test]
async fn two_nodes_share_one_state() {
    let pg = TestPostgres::start();
    let a = PgScreenStore::new(cluster(&pg, "a", Duration::from_secs(5)).await).with_capacity(4);
    let b = PgScreenStore::new(cluster(&pg, "b", Duration::from_secs(5)).await).with_capacity(4);
    a.put(Table::Greylist, b"triplet", entry(b"passed", 500))
        .await
        .unwrap();
    assert_eq!(
        b.get(Table::Greylist, b"triplet", 100).await.unwrap(),
        Some(entry(b"passed", 500))
    );
    b.put(
        Table::Recipients,
        b"bob@example.test",
        entry(b"unknown", 50),
    )
    .await
    .unwrap();
    assert_eq!(
        keys(
            a.scan_prefix(Table::Recipients, b"bob", 0, 10)
                .await
                .unwrap()
        ),
        vec![b"bob@example.test".to_vec()]
    );
    assert_eq!(a.remove_prefix(Table::Greylist, b"tri").await.unwrap(), 1);
    assert_eq!(b.get(Table::Greylist, b"triplet", 100).await.unwrap(), None);

    for k in [&b"1"[..], b"2", b"3"] {
        a.put(Table::Greylist, k, entry(b"", 10)).await.unwrap();
    }
    b.put(Table::Greylist, b"4", entry(b"", 10)).await.unwrap();
    assert!(b.put(Table::Greylist, b"5", entry(b"", 10)).await.is_err());
    assert!(a.put(Table::Greylist, b"5", entry(b"", 10)).await.is_err());
    let (x, y) = tokio::join!(a.sweep(60), b.sweep(60));
    assert_eq!(x.unwrap() + y.unwrap(), 5);
    assert_eq!(pg.sql("SELECT count(*) FROM screen_entries"), "0");
    assert_eq!(pg.sql("SELECT sum(entries) FROM screen_counts"), "0");
}

/// The sweep removes more than one batch, and removal of a large prefix
/// too.
#[tokio::test]
async fn sweeps_and_removals_go_through_many_batches() {
    let pg = TestPostgres::start();
    let s = PgScreenStore::new(cluster(&pg, "a", Duration::from_secs(5)).await);
    pg.sql(
        "INSERT INTO screen_entries (tbl, key, value, expires_at) \
         SELECT 1, convert_to('old' || i, 'UTF8'), '', 10 FROM generate_series(1, 2500) i",
    );
    pg.sql(
        "INSERT INTO screen_entries (tbl, key, value, expires_at) \
         SELECT 2, convert_to('p' || i, 'UTF8'), '', 1000 FROM generate_series(1, 2100) i",
    );
    assert_eq!(s.len(Table::Greylist).await.unwrap(), 2500);
    assert_eq!(s.sweep(500).await.unwrap(), 2500);
    assert_eq!(
        s.remove_prefix(Table::Recipients, b"p").await.unwrap(),
        2100
    );
    assert_eq!(pg.sql("SELECT count(*) FROM screen_entries"), "0");
    assert_eq!(s.len(Table::Greylist).await.unwrap(), 0);
}

fn fallbacks(c: &Cluster) -> u64 {
    let mut w = MetricsWriter::new();
    c.render_metrics(&mut w);
    let page = w.finish();
    page.lines()
        .find(|l| l.starts_with("portcullis_cluster_fallbacks_total{store=\"screen\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Database stopped: the shared store answers from the node's local
/// store, within the timeout, counting each fall-back; what it writes
/// meanwhile stays local. Database back: the shared state answers again
/// (the entry written before the outage is there, the local one is not
/// consulted).
#[tokio::test]
async fn with_the_database_stopped_the_local_store_answers_and_it_is_counted() {
    let mut pg = TestPostgres::start();
    let timeout = Duration::from_secs(2);
    let c = cluster(&pg, "a", timeout).await;
    let (_dir, local) = sled(100);
    let local = Arc::new(local);
    let shared = SharedScreenStore::new(PgScreenStore::new(c.clone()), local.clone(), c.clone())
        .with_retry_after(Duration::ZERO);
    shared
        .put(Table::Greylist, b"before", entry(b"db", 500))
        .await
        .unwrap();
    assert_eq!(fallbacks(&c), 0);
    assert!(local.is_empty(Table::Greylist));

    pg.stop();
    let started = Instant::now();
    assert_eq!(
        shared.get(Table::Greylist, b"before", 100).await.unwrap(),
        None
    );
    shared
        .put(Table::Greylist, b"during", entry(b"local", 500))
        .await
        .unwrap();
    assert_eq!(
        shared.get(Table::Greylist, b"during", 100).await.unwrap(),
        Some(entry(b"local", 500))
    );
    // Three operations, each bounded by the timeout (connection included).
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert_eq!(fallbacks(&c), 3);
    assert_eq!(local.len(Table::Greylist), 1);

    pg.start_again();
    assert_eq!(
        shared.get(Table::Greylist, b"before", 100).await.unwrap(),
        Some(entry(b"db", 500))
    );
    assert_eq!(
        shared.get(Table::Greylist, b"during", 100).await.unwrap(),
        None
    );
    assert_eq!(fallbacks(&c), 3);
    // A clear reaches both, so the outage's entry cannot come back.
    assert_eq!(
        shared.remove_prefix(Table::Greylist, b"d").await.unwrap(),
        0
    );
    assert!(local.is_empty(Table::Greylist));
}

/// After a failure the store rests: the next operations go straight to the
/// local store without trying the database (each still counted).
#[tokio::test]
async fn after_a_failure_the_database_is_not_tried_for_a_while() {
    let mut pg = TestPostgres::start();
    let c = cluster(&pg, "a", Duration::from_secs(2)).await;
    let (_dir, local) = sled(100);
    let shared = SharedScreenStore::new(PgScreenStore::new(c.clone()), Arc::new(local), c.clone())
        .with_retry_after(Duration::from_secs(3600));
    pg.stop();
    assert_eq!(shared.get(Table::Greylist, b"k", 0).await.unwrap(), None);
    pg.start_again();
    shared
        .put(Table::Greylist, b"k", entry(b"v", 500))
        .await
        .unwrap();
    assert_eq!(fallbacks(&c), 2);
    // It went to the local store: the database has nothing.
    assert_eq!(pg.sql("SELECT count(*) FROM screen_entries"), "0");
}

/// A table full in the database is not side-stepped through the local
/// store: the write is refused, nothing counted as a fall-back.
#[tokio::test]
async fn a_full_shared_table_is_refused_not_written_locally() {
    let pg = TestPostgres::start();
    let c = cluster(&pg, "a", Duration::from_secs(5)).await;
    let (_dir, local) = sled(100);
    let local = Arc::new(local);
    let shared = SharedScreenStore::new(
        PgScreenStore::new(c.clone()).with_capacity(1),
        local.clone(),
        c.clone(),
    );
    shared
        .put(Table::Greylist, b"a", entry(b"", 500))
        .await
        .unwrap();
    assert!(
        shared
            .put(Table::Greylist, b"b", entry(b"", 500))
            .await
            .is_err()
    );
    assert!(local.is_empty(Table::Greylist));
    assert_eq!(fallbacks(&c), 0);
}

/// A recipient answer read from the database is used from memory for a
/// while (no round trip per RCPT): with the database then stopped, the
/// answer still comes without a fall-back, while a greylist entry (always
/// read from the database) falls back. A clear forgets the memory too.
#[tokio::test]
async fn recipient_answers_are_kept_in_memory_greylist_entries_are_not() {
    let mut pg = TestPostgres::start();
    let c = cluster(&pg, "a", Duration::from_secs(2)).await;
    let other = PgScreenStore::new(cluster(&pg, "b", Duration::from_secs(2)).await);
    other
        .put_entry(Table::Recipients, b"rcpt", entry(b"exists", 500))
        .await
        .unwrap();
    other
        .put_entry(Table::Greylist, b"grey", entry(b"seen", 500))
        .await
        .unwrap();
    let (_dir, local) = sled(100);
    let shared = SharedScreenStore::new(PgScreenStore::new(c.clone()), Arc::new(local), c.clone());
    assert_eq!(
        shared.get(Table::Recipients, b"rcpt", 100).await.unwrap(),
        Some(entry(b"exists", 500))
    );
    assert!(
        shared
            .get(Table::Greylist, b"grey", 100)
            .await
            .unwrap()
            .is_some()
    );

    pg.stop();
    assert_eq!(
        shared.get(Table::Recipients, b"rcpt", 100).await.unwrap(),
        Some(entry(b"exists", 500))
    );
    assert_eq!(fallbacks(&c), 0, "the recipient answer came from memory");
    // Past the entry's own expiry, memory does not answer.
    assert_eq!(
        shared.get(Table::Recipients, b"rcpt", 500).await.unwrap(),
        None
    );
    assert_eq!(fallbacks(&c), 1);
    pg.start_again();
    let shared = SharedScreenStore::new(
        PgScreenStore::new(c.clone()),
        Arc::new(sled(100).1),
        c.clone(),
    );
    assert!(
        shared
            .get(Table::Recipients, b"rcpt", 100)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        shared
            .remove_prefix(Table::Recipients, b"rc")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        shared.get(Table::Recipients, b"rcpt", 100).await.unwrap(),
        None
    );
}
