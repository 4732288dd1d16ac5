//! The limits shared by the nodes of a cluster (issue 17): two real
//! `portcullis` processes, each with its own data directory, on one real
//! PostgreSQL server (tests/support's `TestPostgres`), exchanging counts
//! every 300 ms (`[cluster] sync_interval`). Connections spread over both
//! nodes hit one shared rate limit; with the database stopped each node
//! still enforces its own; an AUTH lockout started by failures on A holds
//! on B; a DNS-list answer looked up by A answers B without a DNS query.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_test_support::dns::{BackgroundDns as Dns, list_name};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{Portcullis, TlsServer, eventually, metric};
use portcullis_test_support::smtp::{Client, TlsStream};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the nodes exchange counts in these tests.
const SYNC: &str = "300ms";

/// The `[cluster]` table of node `node` on `pg`, then `extra` tables.
fn cluster_table(node: &str, pg: &TestPostgres, password_file: &Path, extra: &str) -> String {
    format!(
        r#"[cluster]
database = "{url}"
node = "{node}"
password_file = "{pw}"
tls = "disable"
timeout = "2s"
sync_interval = "{SYNC}"
{extra}"#,
        url = pg.url(),
        pw = password_file.display(),
    )
}

/// A node's config: one `smtp` listener, `example.test` accepted, names
/// through the test DNS server, the cluster's database, `extra` tables.
fn smtp_config(node: &str, dns: SocketAddr, pg: &TestPostgres, pw: &Path, extra: &str) -> String {
    format!(
        r#"hostname = "{node}.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
{cluster}"#,
        cluster = cluster_table(node, pg, pw, extra),
    )
}

/// The database and its password in a file.
fn database() -> (TestPostgres, tempfile::TempDir, std::path::PathBuf) {
    let pg = TestPostgres::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pg.pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    (pg, secrets, pw)
}

/// The first reply a connection from `source` gets (the greeting, or the
/// refusal), then QUIT when greeted.
fn connect(server: &Portcullis, source: &str) -> String {
    let mut c = Client::connect_raw_from(server.smtp(), source.parse().unwrap());
    let r = c.read_reply();
    if r.code == 220 {
        c.send(b"QUIT\r\n");
    }
    r.text
}

/// The connections of `source` in the last minute as `screen show` on
/// `server` reports them (this node's and, in a cluster, the others').
fn connections_seen(server: &Portcullis, source: &str) -> u64 {
    let shown = server.cli_json(&["screen", "show", source, "--json"]);
    shown["rates"]
        .as_array()
        .and_then(|r| r.iter().find(|l| l["kind"] == "connections"))
        .and_then(|l| l["count"].as_u64())
        .unwrap_or(0)
}

/// Waits, when fewer than 20 s of the current minute are left, for the
/// next minute: the rate window weighs the previous minute by what is
/// left of it, so a test spanning a minute boundary would see its counts
/// shrink.
fn away_from_a_minute_boundary() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        % 60_000;
    if ms > 40_000 {
        std::thread::sleep(Duration::from_millis(60_000 - ms + 100));
    }
}

/// `connections_per_minute = 4`: two connections on A and two on B (each
/// seen by the other node before going on) fill the client's allowance,
/// and the next connection to either node is refused with the rate reply
/// (one node alone would have let two more through). Another client is
/// not affected. Then the database is stopped: each node still enforces
/// the limit on its own counts, and counts the fall-back.
#[test]
fn connections_spread_over_two_nodes_hit_one_shared_rate_limit() {
    let dns = Dns::start();
    let (mut pg, _secrets, pw) = database();
    let extra = "[screen]\nconnections_per_minute = 4\n";
    let a = Portcullis::start(&smtp_config("a", dns.addr(), &pg, &pw, extra));
    let b = Portcullis::start(&smtp_config("b", dns.addr(), &pg, &pw, extra));
    away_from_a_minute_boundary();
    let client = "127.0.3.1";
    for _ in 0..2 {
        assert!(connect(&a, client).starts_with("220"));
    }
    eventually("B sees A's connections", Duration::from_secs(20), || {
        (connections_seen(&b, client) == 2).then_some(())
    });
    for _ in 0..2 {
        assert!(connect(&b, client).starts_with("220"));
    }
    eventually("A sees B's connections", Duration::from_secs(20), || {
        (connections_seen(&a, client) == 4).then_some(())
    });
    for node in [&a, &b] {
        let refused = connect(node, client);
        assert!(refused.starts_with("421 4.7.0"), "{refused}");
    }
    assert!(connect(&b, "127.0.3.2").starts_with("220"));
    for node in [&a, &b] {
        let page = node.metrics_page();
        assert_eq!(
            metric(
                &page,
                r#"portcullis_cluster_fallbacks_total{store="rates"}"#
            ),
            None,
            "{page}"
        );
    }

    // The database stopped: each node counts on its own and still refuses
    // a client over the limit.
    pg.stop();
    let client = "127.0.3.9";
    for node in [&a, &b] {
        for _ in 0..4 {
            assert!(connect(node, client).starts_with("220"));
        }
        let refused = connect(node, client);
        assert!(refused.starts_with("421 4.7.0"), "{refused}");
        eventually("the fall-back counted", Duration::from_secs(30), || {
            let page = node.metrics_page();
            metric(
                &page,
                r#"portcullis_cluster_fallbacks_total{store="rates"}"#,
            )
            .filter(|n| *n > 0.0)
        });
    }
}

/// base64 of `\0user\0password` (AUTH PLAIN).
fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

/// A TLS session on `submissions` of `mx` from `source`, after EHLO.
fn tls_from(mx: &TlsServer, source: &str) -> Client<TlsStream> {
    let source: IpAddr = source.parse().unwrap();
    let raw = Client::connect_raw_from(mx.server.addr("submissions"), source);
    let mut c = raw.into_tls(mx.pki.client_config(), "mx.example.test");
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("auth.client.test");
    c
}

/// Three failed AUTH attempts from one address on node A (the limit is
/// three per address) lock it out there; node B, where that address
/// never failed, refuses it too (421 at the AUTH command, even with the
/// right password), once the nodes have exchanged their state: the
/// client gets three guesses in the cluster, not three per node. Another
/// address still logs in on B.
#[test]
fn an_auth_lockout_started_on_node_a_holds_on_node_b() {
    let (pg, _secrets, pw) = database();
    let extra = r#"[submission]
users_file = "{dir}/users"
auth_failures_per_ip = 3
auth_failures_per_user = 10
auth_failure_delay = "10ms"
"#;
    let node = |name: &str| {
        let mx = TlsServer::start_in(
            tempfile::tempdir().unwrap(),
            TestPki::new(),
            &["submissions"],
            &cluster_table(name, &pg, &pw, extra),
        );
        let out = mx
            .server
            .cli_with_stdin(&["user", "add", "alice"], Some("secret\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        mx
    };
    let (a, b) = (node("a"), node("b"));
    // The server looks at the users file at most once a second.
    std::thread::sleep(Duration::from_millis(1100));

    let guesser = "127.0.4.1";
    for (i, user) in ["u1", "u2", "u3"].into_iter().enumerate() {
        let mut c = tls_from(&a, guesser);
        c.send(format!("AUTH PLAIN {}\r\n", plain(user, "guess")).as_bytes());
        let r = c.read_reply();
        assert_eq!(r.code, 535, "attempt {i}: {}", r.text);
        if i == 2 {
            let r = c.read_reply();
            assert!(r.text.starts_with("421 4.7.0"), "{}", r.text);
        }
    }
    // On B: a right password from the guesser's address is refused once B
    // knows A's lockout (before that it would log in: a success takes its
    // own attempt back, so polling counts nothing against the address).
    eventually(
        "B refuses the locked-out address",
        Duration::from_secs(20),
        || {
            let mut c = tls_from(&b, guesser);
            c.send(format!("AUTH PLAIN {}\r\n", plain("alice", "secret")).as_bytes());
            let r = c.read_reply();
            r.text.starts_with("421 4.7.0").then_some(())
        },
    );
    let mut c = tls_from(&b, "127.0.4.2");
    c.cmd(&format!("AUTH PLAIN {}", plain("alice", "secret")), 235);
    assert_eq!(
        pg.sql("SELECT count(*) FROM auth_failures WHERE node = 'a' AND locked_until > now()"),
        "1"
    );
}

/// A client listed on `bl.test`, first seen by node A (554 at RCPT, one
/// DNS query), is refused by node B from the shared answer: the DNS
/// server sees no second query for its name.
#[test]
fn a_dnsbl_answer_looked_up_by_node_a_answers_node_b() {
    let dns = Dns::start();
    let (pg, _secrets, pw) = database();
    let listed = "127.0.5.1";
    let listed_ip: IpAddr = listed.parse().unwrap();
    dns.list("bl.test", listed_ip, Ipv4Addr::new(127, 0, 0, 2), 600);
    // Held and released at once: every query for the name is counted.
    let queries = dns.hold(&list_name("bl.test", listed_ip));
    queries.release();
    let extra = "[[dnsbl]]\nzone = \"bl.test\"\nweight = 1\n";
    let a = Portcullis::start(&smtp_config("a", dns.addr(), &pg, &pw, extra));
    let b = Portcullis::start(&smtp_config("b", dns.addr(), &pg, &pw, extra));
    let rcpt = |server: &Portcullis| {
        let mut c = Client::connect_raw_from(server.smtp(), listed.parse().unwrap());
        assert_eq!(c.read_reply().code, 220);
        c.ehlo("client.example.net");
        c.cmd("MAIL FROM:<s@remote.example.net>", 250);
        c.send(b"RCPT TO:<bob@example.test>\r\n");
        c.read_reply()
    };
    let r = rcpt(&a);
    assert_eq!(r.code, 554, "{}", r.text);
    assert!(r.text.contains("bl.test"), "{}", r.text);
    assert_eq!(queries.queries(), 1);
    eventually("the answer shared", Duration::from_secs(20), || {
        (pg.sql("SELECT count(*) FROM dnsbl_answers WHERE listed") == "1").then_some(())
    });
    let r = rcpt(&b);
    assert_eq!(r.code, 554, "{}", r.text);
    assert!(r.text.contains("bl.test"), "{}", r.text);
    assert_eq!(queries.queries(), 1, "B asked DNS again");
    let page = b.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_cluster_fallbacks_total{store="dnsbl"}"#
        ),
        None,
        "{page}"
    );
    // Control: a client nobody looked up is asked of DNS by B.
    let other: IpAddr = "127.0.5.2".parse().unwrap();
    let other_queries = dns.hold(&list_name("bl.test", other));
    other_queries.release();
    let mut c = Client::connect_raw_from(b.smtp(), other);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("client.example.net");
    c.cmd("MAIL FROM:<s@remote.example.net>", 250);
    c.send(b"RCPT TO:<bob@example.test>\r\n");
    let _ = c.read_reply();
    assert_eq!(other_queries.queries(), 1);
}
