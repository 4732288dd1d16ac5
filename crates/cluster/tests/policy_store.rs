//! The MTA-STS state in a real PostgreSQL server (tests/support's
//! `TestPostgres`): the conditional replace that never downgrades to an
//! older fetch, eviction tombstones that keep a node's copy from coming
//! back, operator pins shared and removed for every node, the fetch lease
//! elected once among racing nodes and lapsing after a crash, and the
//! shared store falling back to the node's sled mirror when the database
//! is stopped (an enforce policy stays in force) and handing what it
//! fetched meanwhile to the database when it returns; a pin changed
//! during an outage is the node's own until the database answers again.

use portcullis_cluster::policy::PgPolicyStore;
use portcullis_cluster::policy_shared::SharedPolicyStore;
use portcullis_cluster::{Cluster, ClusterSettings, DbTls};
use portcullis_metrics::MetricsWriter;
use portcullis_policy::{
    CachedPolicy, Mode, MxPattern, Pin, PinSource, Policy, PolicyStore, SledPolicyStore, Turn,
};
use portcullis_store::Store;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_types::Domain;
use std::sync::Arc;
use std::time::Duration;

/// Now, in Unix seconds (the tombstones are on the database's clock).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn domain() -> Domain {
    Domain::parse("example.test").unwrap()
}

/// A policy of `domain()` with id `id` and mode `mode`, fetched at
/// `fetched_at`.
fn policy(id: &str, mode: &str, fetched_at: u64) -> CachedPolicy {
    let p = Policy::parse(&format!(
        "version: STSv1\nmode: {mode}\nmx: mx.example.test\nmax_age: 86400\n"
    ))
    .unwrap();
    CachedPolicy::new(domain(), id.into(), p, fetched_at)
}

fn pin(mode: Mode, mx: &str) -> Pin {
    Pin {
        domain: domain(),
        mode,
        mx: vec![MxPattern::parse(mx).unwrap()],
        until: Some(now() + 3600),
        reason: "partner broke".into(),
        source: PinSource::Operator,
        created_at: now(),
    }
}

/// A cluster on `pg` for node `node`, migrated.
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

/// A node's shared store: its database store and its sled mirror (the
/// directory kept alive with it), resting `retry_after` after a failure.
struct Node {
    cluster: Cluster,
    db: PgPolicyStore,
    local: Arc<SledPolicyStore>,
    shared: Arc<SharedPolicyStore>,
    _dir: tempfile::TempDir,
}

async fn node(pg: &TestPostgres, name: &str, retry_after: Duration) -> Node {
    let cluster = cluster(pg, name).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let local = Arc::new(SledPolicyStore::open(&store).unwrap());
    let db = PgPolicyStore::new(cluster.clone(), Duration::from_secs(30));
    let shared =
        Arc::new(SharedPolicyStore::new(db.clone(), local.clone()).with_retry_after(retry_after));
    Node {
        cluster,
        db,
        local,
        shared,
        _dir: dir,
    }
}

fn fallbacks(c: &Cluster) -> u64 {
    let mut w = MetricsWriter::new();
    c.render_metrics(&mut w);
    let page = w.finish();
    page.lines()
        .find(|l| l.starts_with("portcullis_cluster_fallbacks_total{store=\"policy\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A row is replaced only by a policy fetched no earlier, whichever node
/// writes: a late, older fetch from another node is refused and the newer
/// policy stays, and every node's store reads the same row.
#[tokio::test]
async fn a_cached_policy_is_never_replaced_by_an_older_fetch() {
    let pg = TestPostgres::start();
    let a = node(&pg, "a", Duration::ZERO).await;
    let b = node(&pg, "b", Duration::ZERO).await;
    let t = now();
    assert!(a.db.put(&policy("2", "enforce", t)).await.unwrap());
    assert!(
        !b.db.put(&policy("1", "none", t - 100)).await.unwrap(),
        "an older fetch must not replace a newer policy"
    );
    let got = b.db.get(&domain()).await.unwrap().unwrap();
    assert_eq!((got.id.as_str(), got.mode), ("2", Mode::Enforce));
    // Through the shared store too: the refused write leaves b's mirror
    // with what the database holds.
    b.shared.put(&policy("1", "none", t - 100)).await.unwrap();
    let mirrored = b.local.get(&domain()).await.unwrap().unwrap();
    assert_eq!((mirrored.id.as_str(), mirrored.mode), ("2", Mode::Enforce));
    // The same fetch noted with an error (same fetched_at) and a later one
    // are taken.
    let mut noted = policy("2", "enforce", t);
    noted.last_error = Some("HTTP 500".into());
    assert!(a.db.put(&noted).await.unwrap());
    assert!(b.db.put(&policy("3", "testing", t + 1)).await.unwrap());
    let got = a.shared.get(&domain()).await.unwrap().unwrap();
    assert_eq!((got.id.as_str(), got.mode), ("3", Mode::Testing));
    assert_eq!(a.shared.list().await.unwrap(), vec![got]);
    assert_eq!(fallbacks(&a.cluster) + fallbacks(&b.cluster), 0);
}

/// An operator's eviction on one node is not undone by another node's
/// copy: b's mirror held the policy; after a's eviction, b reads nothing,
/// its mirror is emptied, and neither its sync nor a late write of the
/// evicted fetch brings it back. A policy fetched afterwards is taken.
#[tokio::test]
async fn an_eviction_is_not_undone_by_another_nodes_copy() {
    let pg = TestPostgres::start();
    let a = node(&pg, "a", Duration::ZERO).await;
    let b = node(&pg, "b", Duration::ZERO).await;
    let old = policy("1", "enforce", now() - 10);
    a.shared.put(&old).await.unwrap();
    assert_eq!(b.shared.get(&domain()).await.unwrap(), Some(old.clone()));
    assert_eq!(b.local.get(&domain()).await.unwrap(), Some(old.clone()));

    assert!(a.shared.evict(&domain()).await.unwrap());
    // A copy that reappears locally (as after an outage) is offered to the
    // database, which refuses it: fetched before the eviction.
    b.local.put(&old).await.unwrap();
    b.shared.sync().await.unwrap();
    assert_eq!(b.db.get(&domain()).await.unwrap(), None);
    assert_eq!(b.local.get(&domain()).await.unwrap(), None);
    assert_eq!(b.shared.get(&domain()).await.unwrap(), None);
    assert!(!b.db.put(&old).await.unwrap());

    let fresh = policy("2", "enforce", now() + 1);
    assert!(b.db.put(&fresh).await.unwrap());
    assert_eq!(a.shared.get(&domain()).await.unwrap(), Some(fresh));
}

/// A pin set through one node governs the other; removed through one, it
/// is gone for the other too (the database is the truth while it
/// answers), and the other's mirror follows.
#[tokio::test]
async fn pins_are_shared_and_removed_for_every_node() {
    let pg = TestPostgres::start();
    let a = node(&pg, "a", Duration::ZERO).await;
    let b = node(&pg, "b", Duration::ZERO).await;
    let p = pin(Mode::Enforce, "nowhere.example.test");
    a.shared.put_pin(&p).await.unwrap();
    assert_eq!(b.shared.pin(&domain()).await.unwrap(), Some(p.clone()));
    assert_eq!(b.local.pin(&domain()).await.unwrap(), Some(p.clone()));
    assert_eq!(b.shared.pins().await.unwrap(), vec![p.clone()]);

    assert!(a.shared.remove_pin(&domain()).await.unwrap());
    assert_eq!(b.shared.pin(&domain()).await.unwrap(), None);
    assert_eq!(b.local.pin(&domain()).await.unwrap(), None);
    assert!(!b.shared.remove_pin(&domain()).await.unwrap());

    // The sync brings a pin into a node's mirror without a lookup.
    a.shared.put_pin(&p).await.unwrap();
    assert_eq!(b.local.pin(&domain()).await.unwrap(), None);
    b.shared.sync().await.unwrap();
    assert_eq!(b.local.pin(&domain()).await.unwrap(), Some(p));
}

/// Six nodes ask for the fetch of one domain at once: exactly one gets the
/// turn. Once it is done, another may fetch; a lease whose holder never
/// gives it up (a crash) lapses and is taken over.
#[tokio::test]
async fn one_node_of_many_racing_gets_the_fetch() {
    let pg = TestPostgres::start();
    let mut nodes = Vec::new();
    for i in 0..6 {
        nodes.push(node(&pg, &format!("n{i}"), Duration::ZERO).await);
    }
    let d = domain();
    let racing: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (s, d) = (n.shared.clone(), d.clone());
            tokio::spawn(async move { s.fetch_turn(&d).await })
        })
        .collect();
    let mut turns = Vec::new();
    for r in racing {
        turns.push(r.await.unwrap());
    }
    let mine: Vec<usize> = turns
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == Turn::Mine)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(mine.len(), 1, "{turns:?}");
    let winner = mine[0];
    let other = (winner + 1) % nodes.len();
    assert_eq!(nodes[other].shared.fetch_turn(&d).await, Turn::Theirs);
    // The holder asking again keeps its turn (its own lease).
    assert_eq!(nodes[winner].shared.fetch_turn(&d).await, Turn::Mine);
    nodes[winner].shared.fetch_done(&d).await;
    assert_eq!(nodes[other].shared.fetch_turn(&d).await, Turn::Mine);
    assert_eq!(nodes[winner].shared.fetch_turn(&d).await, Turn::Theirs);

    // A holder that dies without fetch_done: its short lease lapses.
    let crashed = PgPolicyStore::new(cluster(&pg, "crashed").await, Duration::from_millis(300));
    let d2 = Domain::parse("other.test").unwrap();
    assert!(crashed.take_lease(&d2).await.unwrap());
    assert!(!nodes[0].db.take_lease(&d2).await.unwrap());
    let mut taken = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if nodes[0].db.take_lease(&d2).await.unwrap() {
            taken = true;
            break;
        }
    }
    assert!(taken, "a lapsed lease must be taken over");
}

/// Database stopped: the mirror answers (an enforce policy stays in force,
/// a pin keeps governing), each fall-back counted, the election says
/// "fetch here"; a policy fetched meanwhile stays in the mirror and is in
/// the database after it returns and the node syncs.
#[tokio::test]
async fn with_the_database_stopped_the_mirror_answers_and_it_is_counted() {
    let mut pg = TestPostgres::start();
    let a = node(&pg, "a", Duration::ZERO).await;
    let enforce = policy("1", "enforce", now() - 10);
    a.shared.put(&enforce).await.unwrap();
    let p = pin(Mode::Testing, "*.example.test");
    a.shared.put_pin(&p).await.unwrap();
    assert_eq!(fallbacks(&a.cluster), 0);

    pg.stop();
    let got = a.shared.get(&domain()).await.unwrap().unwrap();
    assert_eq!(got.mode, Mode::Enforce, "the enforce policy stays in force");
    assert_eq!(a.shared.pin(&domain()).await.unwrap(), Some(p));
    assert_eq!(a.shared.fetch_turn(&domain()).await, Turn::Mine);
    assert!(fallbacks(&a.cluster) >= 3, "{}", fallbacks(&a.cluster));
    let during = policy("2", "enforce", now());
    a.shared.put(&during).await.unwrap();
    assert_eq!(a.local.get(&domain()).await.unwrap(), Some(during.clone()));
    assert_eq!(a.shared.cached_len(), 1);

    pg.start_again();
    a.shared.sync().await.unwrap();
    let b = node(&pg, "b", Duration::ZERO).await;
    assert_eq!(b.shared.get(&domain()).await.unwrap(), Some(during));
}

/// A pin removed while the database is unreachable stops governing this
/// node only; when the database answers again its pin governs again (the
/// database is the truth while it answers), and the sync puts it back in
/// the mirror.
#[tokio::test]
async fn a_pin_changed_during_an_outage_is_this_nodes_until_the_database_returns() {
    let mut pg = TestPostgres::start();
    let a = node(&pg, "a", Duration::ZERO).await;
    let p = pin(Mode::Enforce, "mx.example.test");
    a.shared.put_pin(&p).await.unwrap();

    pg.stop();
    assert!(a.shared.remove_pin(&domain()).await.unwrap());
    assert_eq!(a.shared.pin(&domain()).await.unwrap(), None);
    let before = fallbacks(&a.cluster);
    assert!(before >= 2, "{before}");

    pg.start_again();
    assert_eq!(a.shared.pin(&domain()).await.unwrap(), Some(p.clone()));
    a.local.remove_pin(&domain()).await.unwrap();
    a.shared.sync().await.unwrap();
    assert_eq!(a.local.pin(&domain()).await.unwrap(), Some(p));
}
