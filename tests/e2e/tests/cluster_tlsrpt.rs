//! TLS-RPT across the nodes of a cluster (issue 17): real `portcullis`
//! processes, each with its own data directory, on one real PostgreSQL
//! server (tests/support's `TestPostgres`), the test DNS server publishing
//! `_smtp._tls.report.test` with an HTTPS destination, and a real HTTPS
//! collector (tests/support's `PolicyServer`, a certificate from the test
//! CA the nodes trust through `[tls] extra_roots`).
//!
//! The binary has no test clock (by design), so the finished day is made
//! as in `tlsrpt_send.rs`: before a node starts, the test records
//! yesterday's sessions in the store where it will open it. The send
//! window is huge, so only the operator's `tlsrpt send` sends.
//!
//! - Sessions recorded on three nodes make one report with the summed
//!   counts, sent once whichever nodes are asked to send.
//! - The node sending is SIGKILLed while the collector holds its POST;
//!   once its lease lapses another node takes the report over and the
//!   collector gets the same report (same report-id, summed counts), and
//!   no different one.
//! - With the database stopped a node keeps accepting and delivering
//!   (its sessions counted locally); when the database returns, another
//!   node's `tlsrpt show` of today includes them.

use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{
    Portcullis, background_runtime, eventually, free_port, metric, portcullis_bin,
};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::Client;
use portcullis_tls::{ReportPolicy, ReportPolicyType, TlsResultType};
use portcullis_tlsrpt::{Day, TlsResultSink, TlsRptRecorder, TlsSessionResult};
use portcullis_types::{Clock, Domain};
use serde_json::Value;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(30);
/// The policy domain reported on.
const DOMAIN: &str = "report.test";
/// The collector's host name.
const COLLECTOR: &str = "collector.rua.test";

struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn yesterday_noon() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now / 86_400 * 86_400 - 86_400 + 43_200)
}

fn session(failure: Option<TlsResultType>) -> TlsSessionResult {
    TlsSessionResult {
        policy: ReportPolicy {
            policy_type: ReportPolicyType::NoPolicyFound,
            policy_domain: Domain::parse(DOMAIN).unwrap(),
            policy_string: Vec::new(),
            mx_host: Vec::new(),
            failure: None,
        },
        sending_ip: None,
        mx_host: "mx.report.test".into(),
        receiving_ip: "192.0.2.25".parse().unwrap(),
        receiving_helo: None,
        failure,
        detail: failure.map(|_| "expired").unwrap_or_default().into(),
        reason_code: None,
        is_report: false,
    }
}

/// Records `ok` successes and `failed` failures for [`DOMAIN`] yesterday
/// in the store at `data_dir/queue` (where the binary opens it).
fn record_yesterday(data_dir: &Path, ok: usize, failed: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&data_dir.join("queue")).unwrap();
        let recorder = TlsRptRecorder::new(&store, Arc::new(FixedClock(yesterday_noon()))).unwrap();
        for _ in 0..ok {
            recorder.record(session(None));
        }
        for _ in 0..failed {
            recorder.record(session(Some(TlsResultType::CertificateExpired)));
        }
        store.commit().await.unwrap();
        store.flush_now().unwrap();
    });
    drop(rt);
    std::thread::sleep(Duration::from_millis(200));
}

/// The database, DNS, the collector, the MX of [`DOMAIN`] and the CA.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    pg: TestPostgres,
    collector: PolicyServer,
    mx: Sink,
    mx_port: u16,
    secrets: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        let pki = TestPki::new();
        let ip = Ipv4Addr::new(127, 0, 0, 61);
        let collector = rt.block_on(PolicyServer::start(ip, &pki.issue(&[COLLECTOR])));
        collector.set_reply(Reply::status(200));
        dns.add_a(COLLECTOR, ip);
        dns.add_txt(
            &format!("_smtp._tls.{DOMAIN}"),
            &format!(
                "v=TLSRPTv1; rua=https://{COLLECTOR}:{}/tlsrpt",
                collector.port()
            ),
        );
        let mx_port = free_port();
        let mx_ip = Ipv4Addr::new(127, 0, 0, 62);
        dns.add_mx(DOMAIN, 10, "mx.report.test");
        dns.add_a("mx.report.test", mx_ip);
        let mx = Sink::start(SinkConfig {
            bind: SocketAddr::from((mx_ip, mx_port)),
            tls: SinkTls::Cert(pki.issue(&["mx.report.test"])),
            ..SinkConfig::default()
        });
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("pg.pw"), PASSWORD).unwrap();
        World {
            rt,
            dns,
            pki,
            pg: TestPostgres::start(),
            collector,
            mx,
            mx_port,
            secrets,
        }
    }

    /// Node `name`, with yesterday's `ok`/`failed` sessions recorded
    /// before it starts.
    fn node(&self, name: &str, ok: usize, failed: usize) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.write_ca(dir.path());
        dkim_rsa_key(&dir.path().join("tlsrpt.key"));
        record_yesterday(&dir.path().join("data"), ok, failed);
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "{name}.portcullis.test"
data_dir = "{{dir}}/data"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[tlsrpt]
enabled = true
organization = "Cluster Org"
contact = "mailto:postmaster@example.test"
submitter = "example.test"
from = "tlsrpt-noreply@example.test"
dkim_selector = "tlsrpt"
dkim_key = "{{dir}}/tlsrpt.key"
send_window = "100000d"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[cluster]
database = "{url}"
node = "{name}"
password_file = "{pw}"
tls = "disable"
timeout = "2s"
sync_interval = "300ms"
"#,
                dns = self.dns.addr(),
                port = self.mx_port,
                url = self.pg.url(),
                pw = self.secrets.path().join("pg.pw").display(),
            ),
        )
    }

    /// The reports the collector got, as JSON.
    fn reports(&self) -> Vec<Value> {
        self.collector
            .request_log()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| {
                let mut json = Vec::new();
                flate2::read::GzDecoder::new(r.body.as_slice())
                    .read_to_end(&mut json)
                    .unwrap();
                serde_json::from_slice(&json).unwrap()
            })
            .collect()
    }
}

fn summary(report: &Value) -> (u64, u64) {
    let p = &report["policies"][0]["summary"];
    (
        p["total-successful-session-count"].as_u64().unwrap(),
        p["total-failure-session-count"].as_u64().unwrap(),
    )
}

fn yesterday() -> String {
    Day::of(yesterday_noon()).to_string()
}

fn today() -> String {
    Day::of(SystemTime::now()).to_string()
}

/// The `tlsrpt list` row of (`day`, [`DOMAIN`]) on `node` with its
/// (successful, failed), if any.
fn listed(node: &Portcullis, day: &str) -> Option<(u64, u64, String)> {
    let list = node.cli_json(&["tlsrpt", "list", "--json"]);
    list.as_array()?
        .iter()
        .find(|r| r["day"] == day && r["domain"] == DOMAIN)
        .map(|r| {
            (
                r["successful"].as_u64().unwrap_or(0),
                r["failed"].as_u64().unwrap_or(0),
                r["state"].as_str().unwrap_or("").to_owned(),
            )
        })
}

/// The outcomes `tlsrpt send` on `node` reports as sent.
fn sent(node: &Portcullis) -> usize {
    let out = node.cli_json(&["tlsrpt", "send", "--json"]);
    out["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "sent")
        .count()
}

#[test]
fn three_nodes_sessions_make_one_summed_report_sent_once() {
    let world = World::start();
    let a = world.node("a", 1, 0);
    let b = world.node("b", 2, 1);
    let c = world.node("c", 3, 2);
    let day = yesterday();
    // Every node's sync brings its counts: each lists the sum.
    for node in [&a, &b, &c] {
        eventually("the summed counts listed", WAIT, || {
            (listed(node, &day) == Some((6, 3, "pending".into()))).then_some(())
        });
    }
    let shown = c.cli_json(&["tlsrpt", "show", DOMAIN, "--day", &day, "--json"]);
    assert_eq!(summary(&shown), (6, 3), "{shown:#}");

    assert_eq!(sent(&b), 1);
    assert_eq!(sent(&a), 0);
    assert_eq!(sent(&c), 0);
    assert_eq!(sent(&b), 0);
    let reports = world.reports();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(summary(&reports[0]), (6, 3));
    assert_eq!(reports[0]["report-id"], shown["report-id"]);
    assert_eq!(listed(&a, &day), Some((6, 3, "sent".into())));
    assert_eq!(
        world
            .pg
            .sql("SELECT state || ' ' || holder FROM report_claims WHERE kind = 'tlsrpt'"),
        "done b"
    );
}

#[test]
fn a_node_killed_mid_send_is_replaced_and_the_same_report_arrives() {
    let world = World::start();
    let mut a = world.node("a", 4, 1);
    let b = world.node("b", 5, 0);
    let c = world.node("c", 1, 1);
    let day = yesterday();
    eventually("the summed counts listed", WAIT, || {
        (listed(&a, &day) == Some((10, 2, "pending".into()))).then_some(())
    });
    // The collector takes a's POST and holds it without answering.
    world
        .collector
        .push_reply(Reply::status(200).with_delay(Duration::from_secs(600)));
    let mut send_on_a = std::process::Command::new(portcullis_bin())
        .args(["tlsrpt", "send", "--json", "--config"])
        .arg(&a.config_path)
        .current_dir(a.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("a's POST held by the collector", WAIT, || {
        (!world.reports().is_empty()).then_some(())
    });
    a.kill9();
    let _ = send_on_a.wait();
    assert_eq!(
        world
            .pg
            .sql("SELECT state || ' ' || holder FROM report_claims WHERE kind = 'tlsrpt'"),
        "pending a"
    );
    // Once a's lease lapses, b (or c) takes the report over.
    eventually("the report taken over", WAIT, || {
        (sent(&b) == 1).then_some(())
    });
    assert_eq!(sent(&c), 0);
    assert_eq!(sent(&b), 0);
    let reports = world.reports();
    assert_eq!(reports.len(), 2, "{reports:#?}");
    assert_eq!(reports[0], reports[1], "two different reports");
    assert_eq!(summary(&reports[1]), (10, 2));
    assert_eq!(
        world
            .pg
            .sql("SELECT state || ' ' || holder FROM report_claims WHERE kind = 'tlsrpt'"),
        "done b"
    );
    let logs = b.log_events("TLS-RPT: report taken over from a node whose lease lapsed");
    assert_eq!(logs.len(), 1, "{logs:?}");
}

/// Sends one message to `to` through `node` and waits until it is
/// delivered (the queue is empty).
fn deliver(node: &Portcullis, to: &str) {
    let mut c = Client::connect(node.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<app@example.test>", 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(b"Subject: test\r\n\r\nbody\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    eventually("delivered", WAIT, || {
        node.queue_list().is_empty().then_some(())
    });
}

#[test]
fn with_the_database_stopped_a_node_delivers_and_its_counts_arrive_later() {
    let mut world = World::start();
    let a = world.node("a", 0, 0);
    let b = world.node("b", 0, 0);
    let today = today();
    deliver(&a, "one@report.test");
    world.pg.stop();
    // Accepting and delivering goes on; the sessions are counted in a's
    // store.
    deliver(&a, "two@report.test");
    deliver(&a, "three@report.test");
    assert_eq!(world.mx.wait_for(3, WAIT).len(), 3);
    eventually("a's sync falls back", WAIT, || {
        let page = a.metrics_page();
        metric(
            &page,
            r#"portcullis_cluster_fallbacks_total{store="tlsrpt"}"#,
        )
        .filter(|n| *n >= 1.0)
    });
    // No sum to show, and nothing sent, without the database: said so.
    assert!(!b.cli(&["tlsrpt", "list", "--json"]).status.success());
    let send = a.cli(&["tlsrpt", "send", "--json"]);
    assert!(!send.status.success());
    let said =
        String::from_utf8_lossy(&send.stderr).into_owned() + &String::from_utf8_lossy(&send.stdout);
    assert!(said.contains("cluster database"), "{said}");
    world.pg.start_again();
    eventually("a's buffered counts in b's view", WAIT, || {
        let shown = b.cli(&["tlsrpt", "show", DOMAIN, "--day", &today, "--json"]);
        let json: Value = serde_json::from_slice(&shown.stdout).ok()?;
        (summary(&json).0 == 3).then_some(())
    });
    let _ = &world.rt;
}
