//! The screen's state shared by the nodes of a cluster (issue 17): two
//! real `portcullis` processes, each with its own data directory, on one
//! real PostgreSQL server (tests/support's `TestPostgres`), the test DNS
//! server for names, a real SMTP sink as the internal route. A greylist
//! pass recorded by node A is honoured by node B without a new delay; a
//! recipient answer probed by A is used by B (the route sees one probe);
//! with the database stopped a node still greylists, from its local
//! store, and counts the fall-back.

use portcullis_test_support::dns::BackgroundDns as Dns;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{Portcullis, eventually, metric};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::Client;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A node's config: one `smtp` listener, `example.test` accepted and
/// routed to `route`, names through the test DNS server, the cluster's
/// database `pg` (password from `password_file`), and `extra` tables.
fn config(
    node: &str,
    dns: SocketAddr,
    route: SocketAddr,
    pg: &TestPostgres,
    password_file: &Path,
    extra: &str,
) -> String {
    format!(
        r#"hostname = "{node}.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[routes]
"example.test" = "{route}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[cluster]
database = "{url}"
node = "{node}"
password_file = "{pw}"
tls = "disable"
timeout = "2s"
{extra}"#,
        url = pg.url(),
        pw = password_file.display(),
    )
}

/// The database, its password in a file, and two nodes on it with
/// `extra` in their configs; the route and DNS are the caller's.
struct Cluster {
    pg: TestPostgres,
    _secrets: tempfile::TempDir,
    a: Portcullis,
    b: Portcullis,
}

impl Cluster {
    fn start(dns: &Dns, route: &Sink, extra: &str) -> Cluster {
        let pg = TestPostgres::start();
        let secrets = tempfile::tempdir().unwrap();
        let pw = secrets.path().join("pg.pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        let a = Portcullis::start(&config("a", dns.addr(), route.addr(), &pg, &pw, extra));
        let b = Portcullis::start(&config("b", dns.addr(), route.addr(), &pg, &pw, extra));
        Cluster {
            pg,
            _secrets: secrets,
            a,
            b,
        }
    }
}

/// A client from `source` that has said EHLO.
fn client(server: &Portcullis, source: &str) -> Client<TcpStream> {
    let mut c = Client::connect_raw_from(server.smtp(), source.parse().unwrap());
    let greeting = c.read_reply();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo("client.example.net");
    c
}

/// The reply to `RCPT TO:<rcpt>` in a fresh transaction from `from`.
fn rcpt_reply(c: &mut Client<TcpStream>, from: &str, rcpt: &str) -> (u16, String) {
    c.cmd("RSET", 250);
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    let r = c.read_reply();
    (r.code, r.text)
}

/// How many `RCPT TO` commands for `rcpt` the route has seen.
fn probes(route: &Sink, rcpt: &str) -> usize {
    let needle = format!("RCPT TO:<{rcpt}>").to_ascii_lowercase();
    route
        .commands()
        .iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&needle))
        .count()
}

#[test]
fn a_greylist_pass_on_node_a_is_honoured_on_node_b() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let cluster = Cluster::start(&dns, &route, "[greylist]\nenabled = true\ndelay = \"2s\"\n");
    // First attempt, through node A: deferred, and the entry is in the
    // shared table (not only in A's sled).
    let mut on_a = client(&cluster.a, "127.0.2.1");
    let (code, text) = rcpt_reply(&mut on_a, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("Greylisted"), "{text}");
    assert_eq!(
        cluster
            .pg
            .sql("SELECT count(*) > 0 FROM screen_entries WHERE tbl = 1"),
        "t"
    );
    std::thread::sleep(Duration::from_millis(2500));
    // The retry after the delay goes to the other MX, node B, which has
    // never seen this client: it passes at once (a node on its own would
    // defer it as new), and the whole message goes through.
    let mut on_b = client(&cluster.b, "127.0.2.1");
    let (code, text) = rcpt_reply(&mut on_b, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    on_b.cmd("RSET", 250);
    on_b.cmd("MAIL FROM:<s@nospf.example.net>", 250);
    on_b.cmd("RCPT TO:<bob@example.test>", 250);
    assert_eq!(on_b.data(b"Subject: x\r\n\r\nx\r\n").code, 250);
    route.wait_for(1, Duration::from_secs(20));
    // Control: greylisting runs on B: a new triplet is deferred there.
    assert_eq!(
        rcpt_reply(&mut on_b, "t@nospf.example.net", "bob@example.test").0,
        451
    );
    // The operator on node A sees the entry B used, and a clear on A
    // removes it for B: the client is deferred there again.
    let shown = cluster
        .a
        .cli_json(&["screen", "show", "127.0.2.1", "--json"])
        .to_string();
    assert!(shown.contains("bob@example.test"), "{shown}");
    let cleared = cluster
        .a
        .cli_json(&["screen", "clear", "127.0.2.1", "--json"]);
    assert!(cleared["greylist"].as_u64() >= Some(1), "{cleared}");
    let mut again = client(&cluster.b, "127.0.2.1");
    assert_eq!(
        rcpt_reply(&mut again, "s@nospf.example.net", "bob@example.test").0,
        451
    );
    // Nothing fell back: both nodes answered from the database.
    for node in [&cluster.a, &cluster.b] {
        let page = node.metrics_page();
        assert_eq!(
            metric(
                &page,
                r#"portcullis_cluster_fallbacks_total{store="screen"}"#
            ),
            None,
            "{page}"
        );
    }
}

#[test]
fn a_recipient_answer_probed_by_node_a_is_used_by_node_b() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig {
        rcpt_replies: [(
            "ghost@example.test".to_string(),
            "550 5.1.1 no such user".to_string(),
        )]
        .into_iter()
        .collect(),
        ..SinkConfig::default()
    });
    let cluster = Cluster::start(&dns, &route, "[recipients]\nverify = \"route\"\n");
    let mut on_a = client(&cluster.a, "127.0.0.1");
    assert_eq!(
        rcpt_reply(&mut on_a, "s@remote.example.net", "alice@example.test").0,
        250
    );
    let (code, text) = rcpt_reply(&mut on_a, "s@remote.example.net", "ghost@example.test");
    assert_eq!(code, 550, "{text}");
    let mut on_b = client(&cluster.b, "127.0.0.2");
    assert_eq!(
        rcpt_reply(&mut on_b, "t@remote.example.net", "alice@example.test").0,
        250
    );
    let (code, text) = rcpt_reply(&mut on_b, "t@remote.example.net", "ghost@example.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("user unknown"), "{text}");
    // One probe per address for the whole cluster.
    assert_eq!(
        probes(&route, "alice@example.test"),
        1,
        "{:?}",
        route.commands()
    );
    assert_eq!(
        probes(&route, "ghost@example.test"),
        1,
        "{:?}",
        route.commands()
    );
    assert_eq!(
        cluster
            .pg
            .sql("SELECT count(*) FROM screen_entries WHERE tbl = 2"),
        "2"
    );
}

#[test]
fn with_the_database_stopped_a_node_still_greylists_from_its_local_state() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let mut cluster = Cluster::start(&dns, &route, "[greylist]\nenabled = true\ndelay = \"2s\"\n");
    cluster.pg.stop();
    // Greylisting is not relaxed: the first attempt is deferred, from A's
    // local store.
    let mut on_a = client(&cluster.a, "127.0.6.1");
    let (code, text) = rcpt_reply(&mut on_a, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 451, "{text}");
    std::thread::sleep(Duration::from_millis(2500));
    // The retry to the same node passes from its local entry.
    let (code, text) = rcpt_reply(&mut on_a, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    let page = cluster.a.metrics_page();
    let fell_back = metric(
        &page,
        r#"portcullis_cluster_fallbacks_total{store="screen"}"#,
    );
    assert!(fell_back.is_some_and(|n| n >= 2.0), "{page}");
    // Node B never saw it (nothing is shared while the database is down):
    // the same client is deferred there.
    let mut on_b = client(&cluster.b, "127.0.6.1");
    assert_eq!(
        rcpt_reply(&mut on_b, "s@nospf.example.net", "bob@example.test").0,
        451
    );
    // The database returns: the nodes use it again (B's next new triplet
    // is written there).
    cluster.pg.start_again();
    eventually(
        "the shared table is written again",
        Duration::from_secs(30),
        || {
            let mut c = client(&cluster.b, "127.0.7.1");
            let _ = rcpt_reply(&mut c, "u@nospf.example.net", "bob@example.test");
            (cluster
                .pg
                .sql("SELECT count(*) FROM screen_entries WHERE tbl = 1")
                != "0")
                .then_some(())
        },
    );
}
