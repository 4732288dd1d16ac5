//! TLS-RPT (RFC 8460) with the real binary: every outbound session is
//! counted per (UTC day, policy domain, policy), `portcullis tlsrpt list`
//! and `tlsrpt show` give the counts and the report JSON as it would be
//! sent, the counts survive a restart, and `tlsrpt send` sends nothing for
//! a day that is not over.
//!
//! The world: a real DNS server on loopback, HTTPS policy servers with
//! certificates from the test CA, and SMTP sinks on 127.0.0.x standing in
//! for MX hosts. Three domains:
//!
//! - `sts.tlsrpt.test`: an `enforce` policy listing mx1 and mx2; mx1
//!   (preferred) shows a self-signed certificate, mx2 a valid one, so every
//!   message costs one `certificate-not-trusted` session and one success;
//! - `testing.tlsrpt.test`: a `testing` policy whose only MX is self-signed:
//!   delivered anyway, counted as a failure;
//! - `plain.tlsrpt.test`: no policy, a valid MX: `no-policy-found`, success.
//!
//! Sending a finished day through the binary (mailto over the queue, https,
//! DKIM, nothing twice) is `tlsrpt_send.rs`; the random delay and backoff
//! with an injected clock are in `crates/policy/tests/tlsrpt.rs` (the binary
//! has no test clock by design).

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::{Client, queued_id};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

const STS: &str = "sts.tlsrpt.test";
const TESTING: &str = "testing.tlsrpt.test";
const PLAIN: &str = "plain.tlsrpt.test";

/// The DNS server and the policy servers (on their own runtime), the test
/// CA, the port every "MX" listens on, and the MX sinks.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    port: u16,
    sinks: Vec<Sink>,
    policy_servers: Vec<PolicyServer>,
}

impl World {
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        World {
            rt,
            dns,
            pki: TestPki::new(),
            port: free_port(),
            sinks: Vec::new(),
            policy_servers: Vec::new(),
        }
    }

    /// `domain` has an MX `host` (preference `pref`) at 127.0.0.`last`,
    /// where a sink offers `tls`.
    fn mx(&mut self, domain: &str, pref: u16, host: &str, last: u8, tls: SinkTls) {
        self.dns.add_mx(domain, pref, host);
        self.dns.add_a(host, Ipv4Addr::new(127, 0, 0, last));
        self.sinks.push(Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls,
            ..SinkConfig::default()
        }));
    }

    /// The three domains of the module comment; returns the HTTPS port of
    /// their policy server.
    ///
    /// One policy server (127.0.0.100, a certificate for both `mta-sts.`
    /// names) serves both policies, since `[mta_sts] https_port` is one
    /// port: it answers the testing policy, except for a fetch prepared with
    /// [`World::next_fetch_is_sts`], which gets the enforce policy. Tests
    /// deliver to the enforce domain first, so its fetch takes that reply.
    fn domains(&mut self) -> u16 {
        let ip = Ipv4Addr::new(127, 0, 0, 100);
        let hosts = [format!("mta-sts.{STS}"), format!("mta-sts.{TESTING}")];
        for (domain, host) in [STS, TESTING].iter().zip(&hosts) {
            self.dns
                .add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;");
            self.dns.add_a(host, ip);
        }
        let cert = self.pki.issue(&[&hosts[0], &hosts[1]]);
        let server = self.rt.block_on(PolicyServer::start(ip, &cert));
        server.set_policy(&format!(
            "version: STSv1\nmode: testing\nmx: mx1.{TESTING}\nmax_age: 86400\n"
        ));
        let port = server.port();
        self.policy_servers.push(server);
        self.dns.add_txt(
            &format!("_smtp._tls.{STS}"),
            "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test",
        );

        let mx1 = format!("mx1.{STS}");
        let mx2 = format!("mx2.{STS}");
        self.mx(
            STS,
            10,
            &mx1,
            2,
            SinkTls::Cert(TestPki::self_signed(&[&mx1])),
        );
        let good = SinkTls::Cert(self.pki.issue(&[&mx2]));
        self.mx(STS, 20, &mx2, 3, good);
        let testing_mx = format!("mx1.{TESTING}");
        self.mx(
            TESTING,
            10,
            &testing_mx,
            4,
            SinkTls::Cert(TestPki::self_signed(&[&testing_mx])),
        );
        let plain_mx = format!("mx1.{PLAIN}");
        let good = SinkTls::Cert(self.pki.issue(&[&plain_mx]));
        self.mx(PLAIN, 10, &plain_mx, 5, good);
        port
    }

    /// The next policy fetch gets the enforce policy of [`STS`].
    fn next_fetch_is_sts(&self) {
        self.policy_servers[0].push_reply(Reply::policy(&format!(
            "version: STSv1\nmode: enforce\nmx: mx1.{STS}\nmx: mx2.{STS}\nmax_age: 86400\n"
        )));
    }

    /// Starts the server with the test CA as an extra trust anchor, an RSA
    /// DKIM key for reports and `tlsrpt` as the `[tlsrpt]` section body.
    fn server(&self, https_port: u16, tlsrpt: &str) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.write_ca(dir.path());
        dkim_rsa_key(&dir.path().join("tlsrpt.key"));
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[delivery]
port = {}
[queue]
retry = ["1s"]
[mta_sts]
https_port = {https_port}
[tlsrpt]
{tlsrpt}
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
"#,
                self.dns.addr(),
                self.port
            ),
        )
    }
}

/// The `[tlsrpt]` section with reporting on.
const ENABLED: &str = r#"enabled = true
organization = "Portcullis Test Org"
contact = "mailto:postmaster@example.test"
submitter = "example.test"
from = "tlsrpt-noreply@example.test"
dkim_selector = "tlsrpt"
dkim_key = "{dir}/tlsrpt.key"
"#;

/// Today as `YYYY-MM-DD` (UTC).
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Sends one message; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, to: &str, body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<app@example.test>", 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(format!("Subject: test\r\nMessage-ID: <{body}@t>\r\n\r\n{body}").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

#[track_caller]
fn cli_fails(server: &Portcullis, args: &[&str]) -> Output {
    let out = server.cli(args);
    assert!(
        !out.status.success(),
        "portcullis {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Sends one message to `to` and waits until the queue is empty again, so
/// that every message has sessions of its own.
#[track_caller]
fn deliver(server: &Portcullis, to: &str, body: &str) {
    let id = send(server, to, body);
    eventually(&format!("{id} to {to} delivered"), WAIT, || {
        let q = server.cli_json(&["queue", "list", "--json"]);
        q.as_array().unwrap().is_empty().then_some(())
    });
}

/// The `tlsrpt list --json` row of (`day`, `domain`).
#[track_caller]
fn row(list: &Value, day: &str, domain: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["day"] == day && r["domain"] == domain)
        .unwrap_or_else(|| panic!("no row for {day} {domain} in {list:#}"))
        .clone()
}

/// Checks the three domains' rows and report JSON after `n` rounds of one
/// message to each domain.
#[track_caller]
fn check_reports(server: &Portcullis, day: &str, n: u64) {
    let list = server.cli_json(&["tlsrpt", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list:#}");
    for (domain, ok, failed) in [(STS, n, n), (TESTING, 0, n), (PLAIN, n, 0)] {
        let r = row(&list, day, domain);
        assert_eq!(r["successful"], ok, "{domain}: {r}");
        assert_eq!(r["failed"], failed, "{domain}: {r}");
        // The day is not over: the report is still being collected, and
        // destinations are looked up only when it is due.
        assert_eq!(r["state"], "collecting", "{domain}: {r}");
        assert_eq!(r["destinations"], serde_json::json!([]), "{domain}: {r}");
    }

    // enforce: one policy, n successes at mx2, n certificate-not-trusted at mx1.
    let sts = server.cli_json(&["tlsrpt", "show", STS, "--json"]);
    assert_eq!(sts["organization-name"], "Portcullis Test Org", "{sts:#}");
    assert_eq!(sts["contact-info"], "mailto:postmaster@example.test");
    assert_eq!(
        sts["date-range"]["start-datetime"],
        format!("{day}T00:00:00Z"),
        "{sts:#}"
    );
    assert_eq!(
        sts["date-range"]["end-datetime"],
        format!("{day}T23:59:59Z")
    );
    let id = sts["report-id"].as_str().unwrap();
    assert!(id.ends_with("@example.test"), "{id}");
    let policies = sts["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{sts:#}");
    let p = &policies[0];
    assert_eq!(p["policy"]["policy-type"], "sts", "{sts:#}");
    assert_eq!(p["policy"]["policy-domain"], STS);
    let strings: Vec<&str> = p["policy"]["policy-string"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(strings.contains(&"mode: enforce"), "{strings:?}");
    assert!(strings.contains(&"mx: mx2.sts.tlsrpt.test"), "{strings:?}");
    assert_eq!(p["summary"]["total-successful-session-count"], n, "{sts:#}");
    assert_eq!(p["summary"]["total-failure-session-count"], n, "{sts:#}");
    let details = p["failure-details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{sts:#}");
    assert_eq!(details[0]["result-type"], "certificate-not-trusted");
    assert_eq!(details[0]["receiving-mx-hostname"], "mx1.sts.tlsrpt.test");
    assert_eq!(details[0]["receiving-ip"], "127.0.0.2");
    assert_eq!(
        details[0]["sending-mta-ip"], "127.0.0.1",
        "our side of the connection"
    );
    assert_eq!(details[0]["failed-session-count"], n);

    // Without --json, the same report as an operator reads it.
    let human = String::from_utf8(server.cli_ok(&["tlsrpt", "show", STS])).unwrap();
    for want in [
        // (a report still collecting gets a fresh id each time it is shown)
        format!("report  {day}.{STS}."),
        format!("period  {day}T00:00:00Z to {day}T23:59:59Z"),
        format!("policy sts for {STS}"),
        "  | mode: enforce".to_string(),
        format!("  sessions: {n} successful, {n} failed"),
    ] {
        assert!(human.contains(&want), "{want:?} not in:\n{human}");
    }
    let failure = human
        .lines()
        .find(|l| l.contains("certificate-not-trusted"))
        .unwrap_or_else(|| panic!("no failure row in:\n{human}"));
    for col in ["mx1.sts.tlsrpt.test", "127.0.0.2", &n.to_string()] {
        assert!(failure.contains(col), "{failure}");
    }

    // testing: delivered, and still a failure in the report.
    let testing = server.cli_json(&["tlsrpt", "show", TESTING, "--day", day, "--json"]);
    let p = &testing["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "sts", "{testing:#}");
    assert_eq!(p["policy"]["policy-domain"], TESTING);
    assert_eq!(p["summary"]["total-successful-session-count"], 0);
    assert_eq!(p["summary"]["total-failure-session-count"], n);
    assert_eq!(
        p["failure-details"][0]["result-type"], "certificate-not-trusted",
        "{testing:#}"
    );
    assert_eq!(
        p["failure-details"][0]["receiving-mx-hostname"],
        "mx1.testing.tlsrpt.test"
    );

    // No policy: `no-policy-found`, no policy-string, no failures.
    let plain = server.cli_json(&["tlsrpt", "show", PLAIN, "--json"]);
    let p = &plain["policies"][0];
    assert_eq!(p["policy"]["policy-type"], "no-policy-found", "{plain:#}");
    assert_eq!(p["policy"]["policy-domain"], PLAIN);
    assert!(p["policy"].get("policy-string").is_none(), "{plain:#}");
    assert_eq!(p["summary"]["total-successful-session-count"], n);
    assert_eq!(p["summary"]["total-failure-session-count"], 0);
    assert!(p.get("failure-details").is_none(), "{plain:#}");
    // RFC 8460 §4.4 has no nulls.
    for report in [&sts, &testing, &plain] {
        assert!(!report.to_string().contains("null"), "{report:#}");
    }
}

#[test]
fn sessions_are_counted_reported_and_survive_a_restart() {
    let mut w = World::new();
    let https_port = w.domains();
    let mut server = w.server(https_port, ENABLED);
    let day = today();
    w.next_fetch_is_sts();

    for i in 0..2 {
        deliver(&server, &format!("u@{STS}"), &format!("sts-{i}"));
        deliver(&server, &format!("u@{TESTING}"), &format!("testing-{i}"));
        deliver(&server, &format!("u@{PLAIN}"), &format!("plain-{i}"));
    }
    // Every message arrived, the enforce ones at mx2 only.
    assert_eq!(
        w.sinks[0].received().len(),
        0,
        "self-signed mx1 of {STS} got mail"
    );
    assert_eq!(w.sinks[1].received().len(), 2);
    assert_eq!(w.sinks[2].received().len(), 2);
    assert_eq!(w.sinks[3].received().len(), 2);
    check_reports(&server, &day, 2);

    // The human table.
    let table = String::from_utf8(server.cli_ok(&["tlsrpt", "list"])).unwrap();
    let header = table.lines().next().unwrap();
    for col in ["DAY", "DOMAIN", "OK", "FAILED", "DESTINATIONS", "STATE"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains(STS) && l.contains(&day) && l.contains("collecting")),
        "{table}"
    );
    // `show` without --json is the human layout of the same report.
    let plain = String::from_utf8(server.cli_ok(&["tlsrpt", "show", PLAIN])).unwrap();
    assert!(
        plain.contains(&format!("policy no-policy-found for {PLAIN}")),
        "{plain}"
    );

    // Unknown domains and days are errors, not empty reports.
    let out = cli_fails(&server, &["tlsrpt", "show", "nowhere.test"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no TLS-RPT data"),
        "{out:?}"
    );
    let out = cli_fails(&server, &["tlsrpt", "show", STS, "--day", "2001-01-01"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no TLS-RPT data for sts.tlsrpt.test on 2001-01-01"),
        "{out:?}"
    );
    let out = cli_fails(&server, &["tlsrpt", "show", STS, "--day", "2026-02-30"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("YYYY-MM-DD"),
        "{out:?}"
    );

    // The day is not over: nothing is due, nothing is sent, and it says so.
    let sent = server.cli_json(&["tlsrpt", "send", "--json"]);
    assert_eq!(sent["outcomes"], serde_json::json!([]), "{sent:#}");
    assert_eq!(sent["collecting"], 3, "{sent:#}");
    let text = String::from_utf8(server.cli_ok(&["tlsrpt", "send"])).unwrap();
    assert!(text.contains("nothing to send"), "{text}");
    assert!(
        text.contains("3 report(s) of today are still being collected"),
        "{text}"
    );
    let list = server.cli_json(&["tlsrpt", "list", "--json"]);
    assert_eq!(row(&list, &day, STS)["state"], "collecting");
    // Nothing went to the reporting address's MX (there is none) nor
    // anywhere else: the sinks hold only the six messages.
    let total: usize = w.sinks.iter().map(|s| s.received().len()).sum();
    assert_eq!(total, 6);

    // SIGTERM and restart: the counts are on disk.
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    server.restart();
    check_reports(&server, &day, 2);

    // And counting goes on where it stopped.
    deliver(&server, &format!("u@{STS}"), "sts-after-restart");
    deliver(&server, &format!("u@{TESTING}"), "testing-after-restart");
    deliver(&server, &format!("u@{PLAIN}"), "plain-after-restart");
    check_reports(&server, &day, 3);
}

#[test]
fn with_reporting_disabled_sessions_are_still_counted_but_nothing_is_sent() {
    let mut w = World::new();
    let https_port = w.domains();
    let day = today();

    // Disabled, but the reporter is named: `show` can still build the report.
    let named = w.server(
        https_port,
        "enabled = false\norganization = \"Portcullis Test Org\"\ncontact = \"mailto:postmaster@example.test\"\nsubmitter = \"example.test\"\n",
    );
    w.next_fetch_is_sts();
    deliver(&named, &format!("u@{STS}"), "sts-disabled");
    deliver(&named, &format!("u@{PLAIN}"), "plain-disabled");
    let list = named.cli_json(&["tlsrpt", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    let r = row(&list, &day, STS);
    assert_eq!(
        (r["successful"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["state"], "collecting");
    let r = row(&list, &day, PLAIN);
    assert_eq!(
        (r["successful"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    let sts = named.cli_json(&["tlsrpt", "show", STS, "--json"]);
    assert_eq!(
        sts["policies"][0]["policy"]["policy-type"], "sts",
        "{sts:#}"
    );
    assert_eq!(
        sts["policies"][0]["summary"]["total-failure-session-count"],
        1
    );
    let out = cli_fails(&named, &["tlsrpt", "send"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS reporting is disabled ([tlsrpt] enabled = false)"),
        "{err}"
    );

    // Disabled and nothing named: `list` works, `show` says why it cannot.
    let bare = w.server(https_port, "enabled = false\n");
    deliver(&bare, &format!("u@{PLAIN}"), "plain-bare");
    let list = bare.cli_json(&["tlsrpt", "list", "--json"]);
    let r = row(&list, &day, PLAIN);
    assert_eq!(r["successful"], 1, "{r}");
    let out = cli_fails(&bare, &["tlsrpt", "show", PLAIN]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS reporting is disabled ([tlsrpt] enabled = false)"),
        "{err}"
    );
    cli_fails(&bare, &["tlsrpt", "send", "--json"]);
}

#[test]
fn without_a_server_the_cli_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{0}/data\"\n[admin]\nsocket = \"{0}/admin.sock\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    for args in [
        &["tlsrpt", "list"][..],
        &["tlsrpt", "show", "example.test"],
        &["tlsrpt", "send", "--json"],
    ] {
        let out = Command::new(portcullis_test_support::server::portcullis_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}
