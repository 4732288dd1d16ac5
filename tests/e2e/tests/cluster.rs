//! Cluster mode end to end: one real PostgreSQL server (tests/support's
//! `TestPostgres`) and two real `portcullis` processes with `[cluster]`
//! (nodes "a" and "b", plain TCP to the database on loopback, the
//! password from a file). Both start and migrate the shared schema (one
//! applies it, the other finds it applied); `cluster migrate` reports
//! every version already applied; `status` on each shows both nodes;
//! with the database stopped both still accept mail and say the database
//! is unreachable, and when it returns they are reachable again. A node
//! with `tls = "verify-full"` reaches a database that takes TCP only over
//! TLS, under the CA of `tls_ca`; with another CA it does not. And
//! `config check` refuses a password written into the database URL.

use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{Portcullis, eventually, metric, portcullis_bin};
use portcullis_test_support::smtp::Client;
use std::time::Duration;

/// A node of the cluster: its own data dir and queue, the shared database.
fn node(pg: &TestPostgres, name: &str) -> Portcullis {
    node_with(pg, name, "tls = \"disable\"")
}

/// [`node`] with `tls` lines of its own in `[cluster]`.
fn node_with(pg: &TestPostgres, name: &str, tls: &str) -> Portcullis {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let config = format!(
        r#"hostname = "{name}.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[cluster]
database = "{url}"
node = "{name}"
{tls}
password_file = "{pw}"
timeout = "2s"
"#,
        url = pg.url(),
        pw = password_file.display(),
    );
    Portcullis::start_in(dir, &config)
}

/// `status --json`'s cluster block.
fn cluster_status(p: &Portcullis) -> serde_json::Value {
    let status = p.cli_json(&["status", "--json"]);
    status["cluster"].clone()
}

/// The node names `status` lists.
fn nodes_seen(cluster: &serde_json::Value) -> Vec<String> {
    cluster["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One message accepted over SMTP (250 at the end of DATA).
#[track_caller]
fn accepts_a_message(p: &Portcullis) {
    let mut c = Client::connect(p.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(b"Subject: cluster\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
}

#[test]
fn two_nodes_share_the_schema_and_see_each_other_and_keep_accepting_without_the_database() {
    let mut pg = TestPostgres::start();
    let a = node(&pg, "a");
    let b = node(&pg, "b");

    // Both started with the database up: the schema is there, each
    // version once, and a second migrate has nothing to do.
    let migrated = a.cli_json(&["cluster", "migrate", "--json"]);
    let versions = migrated["versions"].as_array().expect("versions");
    assert!(!versions.is_empty(), "{migrated}");
    for v in versions {
        assert_eq!(v["applied_now"], false, "{migrated}");
    }
    assert_eq!(
        pg.sql("SELECT count(*) FROM portcullis_schema"),
        versions.len().to_string()
    );
    let human = String::from_utf8_lossy(&b.cli_ok(&["cluster", "migrate"])).into_owned();
    assert!(human.contains("already applied"), "{human}");

    // Each node's heartbeat is written at once after its migrate: both
    // see both.
    for p in [&a, &b] {
        let seen = eventually("both nodes in status", Duration::from_secs(30), || {
            let c = cluster_status(p);
            (nodes_seen(&c) == ["a", "b"]).then_some(c)
        });
        assert_eq!(seen["reachable"], true, "{seen}");
        // The newest version (versions may have gaps until every
        // branch's migration is merged).
        let newest = versions.iter().filter_map(|v| v["version"].as_u64()).max();
        assert_eq!(seen["schema_version"].as_u64(), newest, "{seen}");
    }
    assert_eq!(cluster_status(&a)["node"], "a");
    assert_eq!(cluster_status(&b)["node"], "b");
    let text = String::from_utf8_lossy(&a.cli_ok(&["status"])).into_owned();
    assert!(
        text.contains("cluster database state") && text.contains("reachable"),
        "{text}"
    );
    assert!(text.contains("b (") && text.contains("s ago)"), "{text}");
    let page = a.metrics_page();
    assert_eq!(
        metric(&page, "portcullis_cluster_database_up"),
        Some(1.0),
        "{page}"
    );

    // The database goes away: mail is still accepted on both nodes, and
    // each says the database is unreachable.
    pg.stop();
    for p in [&a, &b] {
        accepts_a_message(p);
        let c = cluster_status(p);
        assert_eq!(c["reachable"], false, "{c}");
        assert!(
            c["error"]
                .as_str()
                .is_some_and(|e| e.contains("unreachable")),
            "{c}"
        );
        let text = String::from_utf8_lossy(&p.cli_ok(&["status"])).into_owned();
        assert!(text.contains("unreachable"), "{text}");
    }
    assert_eq!(
        metric(&a.metrics_page(), "portcullis_cluster_database_up"),
        Some(0.0)
    );
    // `cluster migrate` says why it cannot run, non-zero.
    let out = a.cli(&["cluster", "migrate"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It returns: reachable again, both nodes listed again.
    pg.start_again();
    for p in [&a, &b] {
        let c = eventually("reachable again", Duration::from_secs(30), || {
            let c = cluster_status(p);
            (c["reachable"] == true && nodes_seen(&c) == ["a", "b"]).then_some(c)
        });
        assert_eq!(c["error"], serde_json::Value::Null, "{c}");
        accepts_a_message(p);
    }
}

/// A node whose database is down at start still starts and accepts mail;
/// it migrates and joins once the database is there.
#[test]
fn a_node_starts_without_its_database_and_joins_when_it_comes() {
    let mut pg = TestPostgres::start();
    pg.stop();
    let a = node(&pg, "a");
    accepts_a_message(&a);
    assert_eq!(cluster_status(&a)["reachable"], false);
    pg.start_again();
    let c = eventually("joined", Duration::from_secs(40), || {
        let c = cluster_status(&a);
        (nodes_seen(&c) == ["a"]).then_some(c)
    });
    assert_eq!(c["reachable"], true, "{c}");
    assert!(c["schema_version"].as_u64().is_some_and(|v| v > 0), "{c}");
}

/// `config check` refuses a password in `[cluster] database`, naming the
/// key and where the password belongs.
#[test]
fn config_check_refuses_a_password_in_the_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "hostname = \"mx.example.test\"\n[cluster]\ndatabase = \"postgresql://portcullis:hunter2x@127.0.0.1/portcullis\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(portcullis_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.database"), "{err}");
    assert!(err.contains("PGPASSWORD or password_file"), "{err}");
    assert!(!err.contains("hunter2x"), "the password is echoed: {err}");
}

#[test]
fn a_node_reaches_a_tls_only_database_under_its_tls_ca_and_not_under_another() {
    let pki = TestPki::new();
    let pg = TestPostgres::start_tls(&pki.issue(&["127.0.0.1"]));
    let secrets = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(secrets.path());
    let a = node_with(
        &pg,
        "a",
        &format!("tls = \"verify-full\"\ntls_ca = \"{}\"", ca.display()),
    );
    let seen = eventually(
        "node a on the TLS database",
        Duration::from_secs(30),
        || {
            let c = cluster_status(&a);
            (c["reachable"] == true && nodes_seen(&c) == ["a"]).then_some(c)
        },
    );
    assert!(seen["schema_version"].as_u64().unwrap() > 0, "{seen}");
    // The server takes TCP only over TLS (hostssl), so the heartbeat row
    // could only have come over TLS.
    assert_eq!(pg.sql("SELECT node FROM portcullis_nodes"), "a");

    // Another CA: the node starts and accepts mail, and says why the
    // database is out of reach.
    let other = TestPki::new();
    std::fs::create_dir(secrets.path().join("other")).unwrap();
    let other_ca = other.write_ca(&secrets.path().join("other"));
    let b = node_with(
        &pg,
        "b",
        &format!("tls = \"verify-full\"\ntls_ca = \"{}\"", other_ca.display()),
    );
    accepts_a_message(&b);
    let status = cluster_status(&b);
    assert_eq!(status["reachable"], false, "{status}");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{status}"
    );
    assert_eq!(
        pg.sql("SELECT count(*) FROM portcullis_nodes WHERE node = 'b'"),
        "0"
    );
}
