//! DMARC aggregate reports of a cluster (issue 17): two real `portcullis`
//! processes, each with its own data directory, on one real PostgreSQL
//! server, the test DNS server, real SMTP sinks for the inbox and the
//! rua's MX. Both nodes receive mail from a domain with a DMARC `rua`;
//! `dmarc list` on either shows the cluster's sum; while the database is
//! stopped a node keeps accepting and counting, and once it is back those
//! counts reach the database; `dmarc send` on both nodes at once sends
//! exactly one report whose counts are the sum of both nodes, and later
//! `dmarc send`s send nothing.
//!
//! As in dmarc_reports.rs, the binary has no test clock: the test moves
//! each node's aggregates to yesterday (the nodes stopped), then restarts
//! them; they push yesterday's counts at their next sync.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mail_parser::MessageParser;
use portcullis_dmarc::{Day, DmarcRecorder, Limits, Observation};
use portcullis_store::Store;
use portcullis_test_support::dns::BackgroundDns as Dns;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{Portcullis, eventually, free_port, metric};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::Client;

const RUA: &str = "dmarc@reports.test";
const FROM: &str = "dmarc-reports@reporter.test";

fn config(
    node: &str,
    dns: SocketAddr,
    inbox: SocketAddr,
    pg: &TestPostgres,
    password_file: &Path,
) -> String {
    format!(
        r#"hostname = "{node}.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[routes]
"example.test" = "{inbox}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[verify]
enabled = true
[dmarc_reports]
enabled = true
organization = "Portcullis Cluster Test"
contact = "postmaster@reporter.test"
from = "{FROM}"
dkim_selector = "dmarc"
dkim_key = "{{dir}}/report.key"
send_window = "100000d"
[cluster]
database = "{url}"
node = "{node}"
password_file = "{pw}"
tls = "disable"
timeout = "2s"
sync_interval = "300ms"
"#,
        port = inbox.port(),
        url = pg.url(),
        pw = password_file.display(),
    )
}

/// One message from alice@sender.test (SPF aligned, unsigned: every
/// message is the same report row).
fn send(server: &Portcullis, n: usize) {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.sender.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let data = format!(
        "From: <alice@sender.test>\r\nTo: <bob@example.test>\r\nSubject: m{n}\r\n\
         Message-ID: <m{n}-{}@test>\r\n\r\nHello.\r\n",
        server.pid()
    );
    let r = c.data(data.as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
}

/// `dmarc list --json` of `server`, when the command succeeds.
fn list(server: &Portcullis) -> Option<Vec<serde_json::Value>> {
    let out = server.cli(&["dmarc", "list", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()?
        .as_array()
        .cloned()
}

/// The messages `server`'s `dmarc list` shows for sender.test in `state`.
fn listed(server: &Portcullis, state: &str) -> Option<u64> {
    list(server)?
        .iter()
        .find(|e| e["domain"] == "sender.test" && e["state"] == state)
        .and_then(|e| e["messages"].as_u64())
}

/// Moves every aggregate the node recorded today to yesterday, through
/// the dmarc crate's API (the node is stopped: sled is ours).
fn move_to_yesterday(data_dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&data_dir.join("queue")).unwrap();
        let recorder = DmarcRecorder::open(&store, Limits::default(), Arc::default()).unwrap();
        let pending = recorder.pending().unwrap();
        assert!(!pending.is_empty());
        for p in pending {
            let yesterday = Day::from_days_since_epoch(p.day.days_since_epoch() - 1);
            for (row, count) in recorder.rows(p.day, &p.domain).unwrap() {
                for _ in 0..count {
                    recorder
                        .record(&Observation {
                            header_from: p.domain.clone(),
                            day: yesterday,
                            published: p.published.clone(),
                            row: row.clone(),
                        })
                        .unwrap();
                }
            }
            recorder.remove(p.day, &p.domain).unwrap();
        }
        store.commit().await.unwrap();
        store.flush_now().unwrap();
    });
}

fn gunzip(gz: &[u8]) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

fn sent(outcomes: &serde_json::Value) -> usize {
    outcomes["outcomes"]
        .as_array()
        .map_or(0, |o| o.iter().filter(|o| o["outcome"] == "sent").count())
}

#[test]
fn one_report_per_domain_and_day_with_the_counts_of_every_node() {
    let dns = Dns::start();
    let port = free_port();
    let inbox = Sink::start(SinkConfig {
        bind: SocketAddr::from((Ipv4Addr::new(127, 0, 0, 81), port)),
        ..SinkConfig::default()
    });
    let reports_ip = Ipv4Addr::new(127, 0, 0, 82);
    let reports = Sink::start(SinkConfig {
        bind: SocketAddr::from((reports_ip, port)),
        ..SinkConfig::default()
    });
    dns.add_mx("reports.test", 10, "mx.reports.test");
    dns.add_a("mx.reports.test", reports_ip);
    dns.add_txt("sender.test", "v=spf1 ip4:127.0.0.1 -all");
    dns.add_txt(
        "_dmarc.sender.test",
        &format!("v=DMARC1; p=none; rua=mailto:{RUA}"),
    );
    dns.add_txt("sender.test._report._dmarc.reports.test", "v=DMARC1");

    let mut pg = TestPostgres::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pg.pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let dir_a = tempfile::tempdir().unwrap();
    let p = dkim_rsa_key(&dir_a.path().join("report.key"));
    dns.add_txt(
        "dmarc._domainkey.reporter.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir_a.path().join("report.key"),
        dir_b.path().join("report.key"),
    )
    .unwrap();
    let mut a = Portcullis::start_in(dir_a, &config("a", dns.addr(), inbox.addr(), &pg, &pw));
    let mut b = Portcullis::start_in(dir_b, &config("b", dns.addr(), inbox.addr(), &pg, &pw));

    // Two messages through A, one through B: each node's list shows the
    // cluster's sum once both have synced.
    send(&a, 1);
    send(&a, 2);
    send(&b, 3);
    for node in [&a, &b] {
        eventually("the nodes' counts summed", Duration::from_secs(30), || {
            (listed(node, "collecting") == Some(3)).then_some(())
        });
    }

    // The database stops: B still accepts and counts (locally), and
    // counts the fall-back of its sync.
    pg.stop();
    send(&b, 4);
    eventually("B's sync falling back", Duration::from_secs(30), || {
        let page = b.metrics_page();
        metric(
            &page,
            r#"portcullis_cluster_fallbacks_total{store="dmarc"}"#,
        )
        .filter(|n| *n > 0.0)
    });
    // Back: what B counted meanwhile reaches the database.
    pg.start_again();
    eventually("the outage's count shared", Duration::from_secs(60), || {
        (listed(&a, "collecting") == Some(4)).then_some(())
    });

    // The day ends (moved to yesterday, the nodes stopped and restarted).
    for node in [&mut a, &mut b] {
        node.terminate(Duration::from_secs(30));
        move_to_yesterday(&node.data_dir());
        node.restart();
    }
    for node in [&a, &b] {
        eventually("yesterday's counts summed", Duration::from_secs(30), || {
            (listed(node, "pending") == Some(4)).then_some(())
        });
    }

    // `dmarc send` on both nodes at once: one report, from one of them.
    let (on_a, on_b) = std::thread::scope(|s| {
        let on_a = s.spawn(|| a.cli_json(&["dmarc", "send", "--json"]));
        let on_b = s.spawn(|| b.cli_json(&["dmarc", "send", "--json"]));
        (on_a.join().unwrap(), on_b.join().unwrap())
    });
    assert_eq!(sent(&on_a) + sent(&on_b), 1, "{on_a} {on_b}");
    let got = reports.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].rcpts, [RUA]);
    let msg = MessageParser::default().parse(&got[0].data).expect("mime");
    let xml = gunzip(msg.attachment(0).expect("attachment").contents());
    let records: Vec<&str> = xml.split("<record>").skip(1).collect();
    assert_eq!(records.len(), 1, "{xml}");
    assert!(records[0].contains("<count>4</count>"), "{xml}");
    let yesterday = Day::from_days_since_epoch(Day::of(SystemTime::now()).days_since_epoch() - 1);
    assert!(
        xml.contains(&format!("<begin>{}</begin>", yesterday.start_timestamp())),
        "{xml}"
    );

    // Done everywhere: nothing pending on either node, nothing sent again.
    for node in [&a, &b] {
        eventually(
            "the report done on every node",
            Duration::from_secs(30),
            || {
                list(node)
                    .filter(|l| !l.iter().any(|e| e["state"] == "pending"))
                    .map(|_| ())
            },
        );
        let again = node.cli_json(&["dmarc", "send", "--json"]);
        assert_eq!(sent(&again), 0, "{again}");
    }
    assert_eq!(reports.received().len(), 1);
    drop(a);
    drop(b);
    pg.stop();
}
