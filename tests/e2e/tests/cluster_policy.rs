//! The MTA-STS cache and operator pins shared by the nodes of a cluster
//! (issue 17): two real `portcullis` processes, each with its own data
//! directory, on one real PostgreSQL server (tests/support's
//! `TestPostgres`), the test DNS server with an `_mta-sts` TXT record, a
//! real HTTPS policy server with a certificate from the test CA, and an
//! SMTP sink as the recipient's MX offering STARTTLS with a valid
//! certificate.
//!
//! What must hold: a policy fetched by node A is used by node B without a
//! second fetch (the policy server sees one request); a pin set through
//! A's CLI governs B's delivery, and removed through A stops governing B;
//! with the database stopped, B still enforces the cached policy (mail to
//! an MX that lost STARTTLS is deferred, never sent in clear, even with
//! the policy server failing) and counts the fall-back; when the database
//! returns, delivery resumes. Time is driven by a one-second retry
//! schedule; nothing asserts how long anything took.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::postgres::{PASSWORD, TestPostgres};
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

/// How long [`eventually`] waits for the servers to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// The DNS server and the policy server (on their own runtime), the test
/// CA, the database and its password file, and the MX port.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    port: u16,
    pg: TestPostgres,
    secrets: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("pg.pw"), PASSWORD).unwrap();
        World {
            rt,
            dns,
            pki: TestPki::new(),
            port: free_port(),
            pg: TestPostgres::start(),
            secrets,
        }
    }

    /// Publishes an enforce policy for `domain` listing `mx1.<domain>`
    /// (TXT id 1, the policy server at 127.0.0.`policy_last`), and the MX
    /// `mx1.<domain>` at 127.0.0.`mx_last` with a valid certificate: the
    /// policy server and the MX sink.
    fn enforce(&self, domain: &str, policy_last: u8, mx_last: u8) -> (PolicyServer, Sink) {
        self.dns
            .add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;");
        let host = format!("mta-sts.{domain}");
        let ip = Ipv4Addr::new(127, 0, 0, policy_last);
        self.dns.add_a(&host, ip);
        let server = self
            .rt
            .block_on(PolicyServer::start(ip, &self.pki.issue(&[&host])));
        let mx = format!("mx1.{domain}");
        server.set_policy(&format!(
            "version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n"
        ));
        self.dns.add_mx(domain, 10, &mx);
        self.dns.add_a(&mx, Ipv4Addr::new(127, 0, 0, mx_last));
        let sink = Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, mx_last], self.port)),
            tls: SinkTls::Cert(self.pki.issue(&[&mx])),
            ..SinkConfig::default()
        });
        (server, sink)
    }

    /// Starts node `node` of the cluster: the test CA trusted, policies
    /// fetched from `https_port`, a one-second retry schedule, the
    /// cluster's database with a short sync interval.
    fn node(&self, node: &str, https_port: u16) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.write_ca(dir.path());
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "{node}.portcullis.test"
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
[mta_sts]
https_port = {https_port}
[queue]
retry = ["1s"]
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[cluster]
database = "{url}"
node = "{node}"
password_file = "{pw}"
tls = "disable"
timeout = "2s"
sync_interval = "300ms"
"#,
                dns = self.dns.addr(),
                port = self.port,
                url = self.pg.url(),
                pw = self.secrets.path().join("pg.pw").display(),
            ),
        )
    }
}

/// Sends one message to `to` through `server`; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, to: &str, body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<a@sender.test>", 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(format!("Subject: test\r\nMessage-ID: <{body}@t>\r\n\r\n{body}").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

fn queue(server: &Portcullis) -> serde_json::Value {
    server.cli_json(&["queue", "list", "--json"])
}

/// Waits until message `id` has been attempted and its recipient is
/// deferred; returns its queue entry.
#[track_caller]
fn wait_deferred(server: &Portcullis, id: &str) -> serde_json::Value {
    eventually(&format!("{id} to be deferred"), WAIT, || {
        let q = queue(server);
        let e = q.as_array()?.iter().find(|e| e["id"] == id)?.clone();
        (e["attempts"].as_u64()? >= 1 && e["recipients"][0]["state"] == "deferred").then_some(e)
    })
}

/// The queue empties: every recipient is done.
#[track_caller]
fn wait_empty(server: &Portcullis) {
    eventually("an empty queue", WAIT, || {
        queue(server).as_array().unwrap().is_empty().then_some(())
    });
}

/// The sum of `name`'s samples whose labels include every `labels` pair.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (n, rest) = head.split_once('{').unwrap_or((head, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (n == name && all).then(|| value.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// MAIL commands the sink received: transactions started.
fn mails(sink: &Sink) -> usize {
    sink.commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .count()
}

/// Delivered over TLS: the sink's `n`th message holds `body`.
#[track_caller]
fn delivered_over_tls(sink: &Sink, n: usize, body: &str) {
    let got = sink.wait_for(n, WAIT);
    let m = &got[n - 1];
    assert!(
        String::from_utf8_lossy(&m.data).contains(body),
        "{body}: {m:?}"
    );
    assert!(
        matches!(m.tls.as_deref(), Some("TLSv1.3" | "TLSv1.2")),
        "{body}: delivered over {:?}",
        m.tls
    );
}

fn tomorrow() -> String {
    portcullis_types::date::ymd(SystemTime::now() + Duration::from_secs(86_400))
}

/// (a) A relays first and fetches the policy; B delivers under the same
/// policy without fetching (the policy server saw one request) and lists
/// it. (b) A pin set through A's CLI whose MX pattern does not match the
/// MX makes B defer; `policy unpin` through A lets B deliver.
#[test]
fn a_policy_fetched_on_a_is_used_by_b_and_a_pin_set_on_a_governs_b() {
    let w = World::new();
    let domain = "shared.sts.test";
    let rcpt = format!("u@{domain}");
    let (sts, sink) = w.enforce(domain, 110, 111);
    let a = w.node("a", sts.port());
    let b = w.node("b", sts.port());

    send(&a, &rcpt, "via-a");
    delivered_over_tls(&sink, 1, "via-a");
    wait_empty(&a);
    assert_eq!(sts.requests(), 1);

    send(&b, &rcpt, "via-b");
    delivered_over_tls(&sink, 2, "via-b");
    wait_empty(&b);
    assert_eq!(sts.requests(), 1, "B must use A's policy, not fetch it");
    let m = b.metrics_page();
    assert_eq!(
        counter(&m, "portcullis_mta_sts_fetches_total", &[]),
        0,
        "{m}"
    );
    assert!(
        counter(
            &m,
            "portcullis_deliveries_by_policy_mode_total",
            &[("mode", "enforce")]
        ) >= 1,
        "{m}"
    );
    let list = b.cli_json(&["policy", "list", "--json"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == domain && e["source"] == "cache")
        .unwrap_or_else(|| panic!("{domain} not listed on B: {list}"))
        .clone();
    assert_eq!(entry["mode"], "enforce", "{entry}");
    assert_eq!(entry["mx"][0], format!("mx1.{domain}"), "{entry}");

    // (b) The pin, set through A, governs B: its MX does not match.
    a.cli_ok(&[
        "policy",
        "pin",
        domain,
        "--mode",
        "enforce",
        "--mx",
        "mx9.elsewhere.test",
        "--until",
        &tomorrow(),
        "--reason",
        "moving to the new MX",
    ]);
    let id = send(&b, &rcpt, "pinned");
    let e = wait_deferred(&b, &id);
    assert!(
        e["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("MTA-STS"),
        "{e}"
    );
    assert_eq!(mails(&sink), 2, "{:?}", sink.commands());
    let list = b.cli_json(&["policy", "list", "--json"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["domain"] == domain && e["pinned"] == true),
        "B lists A's pin: {list}"
    );

    // Removed through A: B delivers on its next attempt.
    a.cli_ok(&["policy", "unpin", domain]);
    delivered_over_tls(&sink, 3, "pinned");
    wait_empty(&b);
    assert_eq!(sts.requests(), 1);
}

/// First contact on both nodes at once, the policy server slow to
/// answer: one node fetches (it holds the domain's fetch lease), the other
/// waits for that policy instead of fetching too, and both deliver under
/// it. The policy server sees one request.
#[test]
fn nodes_meeting_a_domain_at_once_fetch_its_policy_once() {
    let w = World::new();
    let domain = "together.sts.test";
    let rcpt = format!("u@{domain}");
    let (sts, sink) = w.enforce(domain, 130, 131);
    sts.set_reply(
        Reply::policy(&format!(
            "version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmax_age: 86400\n"
        ))
        .with_delay(Duration::from_secs(3)),
    );
    let a = w.node("a", sts.port());
    let b = w.node("b", sts.port());
    send(&a, &rcpt, "together-a");
    send(&b, &rcpt, "together-b");
    sink.wait_for(2, WAIT);
    wait_empty(&a);
    wait_empty(&b);
    assert!(
        sink.received()
            .iter()
            .all(|m| matches!(m.tls.as_deref(), Some("TLSv1.3" | "TLSv1.2"))),
        "both over TLS"
    );
    assert_eq!(sts.requests(), 1, "one fetch for the cluster");
    let fetched = counter(&a.metrics_page(), "portcullis_mta_sts_fetches_total", &[])
        + counter(&b.metrics_page(), "portcullis_mta_sts_fetches_total", &[]);
    assert_eq!(fetched, 1);
}

/// (c) With the database stopped, B enforces the policy A fetched (its
/// mirror got it through the sync; the policy server now fails, so it
/// cannot be fetched again): mail to an MX that lost STARTTLS is
/// deferred, never sent in clear, and the fall-back is counted. With the
/// database back and the MX fixed, the message goes.
#[test]
fn with_the_database_stopped_b_still_enforces_the_cached_policy() {
    let mut w = World::new();
    let domain = "outage.sts.test";
    let rcpt = format!("u@{domain}");
    let (sts, sink) = w.enforce(domain, 120, 121);
    let a = w.node("a", sts.port());
    let b = w.node("b", sts.port());

    send(&a, &rcpt, "before");
    delivered_over_tls(&sink, 1, "before");
    wait_empty(&a);
    // B's mirror holds the policy once its sync has run (B has not
    // delivered to the domain).
    eventually("the policy in B's mirror", WAIT, || {
        (counter(&b.metrics_page(), "portcullis_mta_sts_policies_cached", &[]) == 1).then_some(())
    });

    w.pg.stop();
    sts.set_reply(Reply::status(500));
    let cert = w.pki.issue(&[&format!("mx1.{domain}")]);
    sink.reconfigure(|c| c.tls = SinkTls::None);
    let id = send(&b, &rcpt, "during");
    let e = wait_deferred(&b, &id);
    assert!(
        e["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("MTA-STS"),
        "{e}"
    );
    eventually("a few more attempts", WAIT, || {
        let q = queue(&b);
        let e = q
            .as_array()?
            .iter()
            .find(|e| e["id"] == id.as_str())?
            .clone();
        (e["attempts"].as_u64()? >= 3).then_some(())
    });
    assert_eq!(mails(&sink), 1, "nothing in clear: {:?}", sink.commands());
    assert_eq!(sink.received().len(), 1);
    let m = b.metrics_page();
    assert!(
        counter(
            &m,
            "portcullis_cluster_fallbacks_total",
            &[("store", "policy")]
        ) >= 1,
        "{m}"
    );

    // The database back, the MX fixed: the message goes, over TLS.
    w.pg.start_again();
    sink.reconfigure(|c| c.tls = SinkTls::Cert(cert));
    delivered_over_tls(&sink, 2, "during");
    wait_empty(&b);
}
