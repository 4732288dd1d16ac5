//! TLS to the database (`[cluster] tls = "verify-full"`) against a real
//! PostgreSQL server that takes TCP sessions only over TLS (tests/support's
//! `TestPostgres::start_tls`, its certificate from the test CA): with the
//! CA as `tls_ca` the node connects, migrates, and the server itself says
//! the session is TLS 1.2 or newer; a certificate from another CA, or one
//! for another name, is refused before any password is sent; `disable`
//! (plain TCP) is refused by the server.

use portcullis_cluster::{Cluster, ClusterError, ClusterSettings, DbTls};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use std::sync::Arc;
use std::time::Duration;

fn settings(pg: &TestPostgres, tls: DbTls) -> ClusterSettings {
    ClusterSettings {
        database: pg.url(),
        password: Some(PASSWORD.to_owned()),
        node: "a".to_owned(),
        tls,
        pool_size: 2,
        timeout: Duration::from_secs(2),
        sync_interval: Duration::from_secs(1),
    }
}

fn verify_full(pki: &TestPki) -> DbTls {
    DbTls::VerifyFull {
        roots: Arc::new(pki.root_store()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_over_tls_under_the_configured_ca() {
    let pki = TestPki::new();
    // The URL names 127.0.0.1: the certificate carries it as an IP SAN.
    let pg = TestPostgres::start_tls(&pki.issue(&["127.0.0.1"]));
    let c = Cluster::new(settings(&pg, verify_full(&pki))).unwrap();
    c.migrate().await.unwrap();
    c.heartbeat().await.unwrap();
    assert!(c.status().await.reachable);
    let client = c.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (ssl, version): (bool, String) = (row.get(0), row.get(1));
    assert!(ssl, "the server says the session is not TLS");
    assert!(
        version == "TLSv1.3" || version == "TLSv1.2",
        "session protocol {version}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_or_for_another_name_is_refused() {
    let pki = TestPki::new();
    let pg = TestPostgres::start_tls(&pki.issue(&["127.0.0.1"]));
    let other = TestPki::new();
    let c = Cluster::new(settings(&pg, verify_full(&other))).unwrap();
    let err = c.client().await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(!c.status().await.reachable);
    drop(pg);

    let pg = TestPostgres::start_tls(&pki.issue(&["db.other.test"]));
    let c = Cluster::new(settings(&pg, verify_full(&pki))).unwrap();
    let err = c.client().await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // The refusal is the certificate's, not the password's: nothing was
    // sent to a server we could not authenticate.
    assert!(!err.to_string().contains("authentication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_is_refused_by_a_tls_only_server() {
    let pki = TestPki::new();
    let pg = TestPostgres::start_tls(&pki.issue(&["127.0.0.1"]));
    let c = Cluster::new(settings(&pg, DbTls::Disable)).unwrap();
    let err = c.client().await.unwrap_err();

    assert!(matches!(err, ClusterError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("no encryption"), "{err}");
}
