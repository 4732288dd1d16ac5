//! The cluster core against a real PostgreSQL server (tests/support's
//! `TestPostgres`): the pool connects with the password, migrations apply
//! once (also when two nodes migrate at once), heartbeats show in
//! `status`, a stopped database is reported unreachable within the
//! timeout and reachable again when it returns, a wrong password is named
//! as an authentication refusal, and a newer schema is refused.

use portcullis_cluster::{Cluster, ClusterError, ClusterSettings, DbTls, MIGRATIONS, migrations};
use portcullis_metrics::MetricsWriter;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use std::time::Duration;

fn settings(pg: &TestPostgres, node: &str, password: &str) -> ClusterSettings {
    ClusterSettings {
        database: pg.url(),
        password: Some(password.to_owned()),
        node: node.to_owned(),
        tls: DbTls::Disable,
        pool_size: 4,
        timeout: Duration::from_secs(2),
        sync_interval: Duration::from_secs(1),
    }
}

fn cluster(pg: &TestPostgres, node: &str) -> Cluster {
    Cluster::new(settings(pg, node, PASSWORD)).unwrap()
}

fn metrics(c: &Cluster) -> String {
    let mut w = MetricsWriter::new();
    c.render_metrics(&mut w);
    w.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_each_version_once_and_status_shows_the_nodes() {
    let pg = TestPostgres::start();
    let a = cluster(&pg, "a");
    let b = cluster(&pg, "b");

    let first = a.migrate().await.unwrap();
    assert_eq!(first.len(), MIGRATIONS.len());
    assert!(first.iter().all(|m| m.now), "{first:?}");
    let again = a.migrate().await.unwrap();
    assert!(again.iter().all(|m| !m.now), "{again:?}");
    assert_eq!(
        again.iter().map(|m| m.version).collect::<Vec<_>>(),
        MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM portcullis_schema"),
        MIGRATIONS.len().to_string()
    );

    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    // A node not seen for a long time is not listed.
    pg.sql("INSERT INTO portcullis_nodes VALUES ('gone', now() - interval '10 minutes')");
    let status = a.status().await;
    assert!(status.reachable, "{status:?}");
    assert_eq!(status.error, None);
    assert_eq!(status.node, "a");
    assert_eq!(status.database, pg.url());
    assert_eq!(status.schema_version, migrations::latest());
    let names: Vec<_> = status.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(status.nodes.iter().all(|n| n.seconds_ago < 60));
    assert!(metrics(&a).contains("portcullis_cluster_database_up 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_migrating_at_once_apply_each_version_once() {
    let pg = TestPostgres::start();
    let a = cluster(&pg, "a");
    let b = cluster(&pg, "b");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(ra[i].version, m.version);
        assert_eq!(rb[i].version, m.version);
        // Exactly one of the two applied it.
        assert!(ra[i].now ^ rb[i].now, "{ra:?} {rb:?}");
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM portcullis_schema"),
        MIGRATIONS.len().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_unreachable_within_the_timeout_and_comes_back() {
    let mut pg = TestPostgres::start();
    let a = cluster(&pg, "a");
    a.migrate().await.unwrap();
    a.heartbeat().await.unwrap();
    assert!(a.status().await.reachable);

    pg.stop();
    // The pool bounds the connect by the timeout (2 s) and checks a pooled
    // connection before handing it out: the call returns an error rather
    // than a dead socket (no timing is asserted here).
    let err = a.client().await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable(_)), "{err:?}");
    assert!(a.heartbeat().await.is_err());
    let status = a.status().await;
    assert!(!status.reachable);
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable")),
        "{status:?}"
    );
    assert!(a.last_error().is_some());
    assert!(metrics(&a).contains("portcullis_cluster_database_up 0"));
    a.fell_back("greylist", &err);
    a.fell_back("greylist", &err);
    assert!(
        metrics(&a).contains("portcullis_cluster_fallbacks_total{store=\"greylist\"} 2"),
        "{}",
        metrics(&a)
    );

    pg.start_again();
    a.heartbeat().await.unwrap();
    let status = a.status().await;
    assert!(status.reachable, "{status:?}");
    assert_eq!(status.error, None);
    assert_eq!(status.nodes.len(), 1);
    assert!(metrics(&a).contains("portcullis_cluster_database_up 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_unreachable_naming_authentication() {
    let pg = TestPostgres::start();
    let c = Cluster::new(settings(&pg, "a", "wrong")).unwrap();
    let err = c.client().await.unwrap_err();
    match &err {
        ClusterError::Unreachable(text) => {
            assert!(text.contains("authentication"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let status = c.status().await;
    assert!(!status.reachable);
    assert!(status.error.unwrap().contains("authentication"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused_naming_both_versions() {
    let pg = TestPostgres::start();
    let a = cluster(&pg, "a");
    a.migrate().await.unwrap();
    let newer = migrations::latest() as usize + 5;
    pg.sql(&format!(
        "INSERT INTO portcullis_schema (version, name) VALUES ({newer}, 'future')"
    ));
    let err = a.migrate().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ClusterError::SchemaNewer { database, binary }
            if database as usize == newer && binary == migrations::latest()),
        "{err:?}"
    );
    assert!(text.contains(&newer.to_string()) && text.contains(&migrations::latest().to_string()));
    // No store is handed a connection to it from then on.
    assert!(matches!(
        a.client().await,
        Err(ClusterError::SchemaNewer { .. })
    ));
}

#[test]
fn a_bad_url_is_a_settings_error() {
    let s = ClusterSettings {
        database: "postgresql://[::1".into(),
        password: None,
        node: "a".into(),
        tls: DbTls::Disable,
        pool_size: 1,
        timeout: Duration::from_secs(1),
        sync_interval: Duration::from_secs(1),
    };
    assert!(matches!(Cluster::new(s), Err(ClusterError::Settings(_))));
}
