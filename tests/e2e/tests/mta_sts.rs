//! MTA-STS (RFC 8461) in delivery, end to end: the real binary, a real DNS
//! server on loopback, a real HTTPS policy server with a certificate from
//! the test CA, and SMTP sinks on 127.0.0.x standing in for MX hosts that
//! offer STARTTLS with a valid, wrong-name, expired or self-signed
//! certificate, or no STARTTLS at all.
//!
//! What must hold (DESIGN.md, Promises): under an `enforce` policy mail goes
//! only over PKIX-valid TLS to a listed MX, anything else is a temporary
//! failure and never a plaintext retry; a cached policy survives a vanished
//! TXT record and a failed fetch until its `max_age`; only a successfully
//! fetched policy replaces it. Time is driven with a one-second retry
//! schedule and `queue retry`; nothing asserts how long anything took.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{ReceivedMail, Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// The DNS server and the policy servers (on their own runtime), the test
/// CA, and the port every "MX" listens on.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    port: u16,
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
        }
    }

    /// `domain` has an MX `host` (preference `pref`) at 127.0.0.`last`.
    fn mx(&self, domain: &str, pref: u16, host: &str, last: u8) {
        self.dns.add_mx(domain, pref, host);
        self.dns.add_a(host, Ipv4Addr::new(127, 0, 0, last));
    }

    /// An SMTP sink at 127.0.0.`last` on the MX port.
    fn sink_at(&self, last: u8, tls: SinkTls) -> Sink {
        Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls,
            ..SinkConfig::default()
        })
    }

    /// Publishes an MTA-STS policy for `domain`: TXT `_mta-sts.<domain>`
    /// with `id`, `mta-sts.<domain>` at 127.0.0.`last`, where an HTTPS
    /// server with a certificate from the test CA serves `policy`.
    fn publish(&self, domain: &str, id: &str, last: u8, policy: &str) -> PolicyServer {
        self.dns
            .add_txt(&format!("_mta-sts.{domain}"), &format!("v=STSv1; id={id};"));
        let host = format!("mta-sts.{domain}");
        let ip = Ipv4Addr::new(127, 0, 0, last);
        self.dns.add_a(&host, ip);
        let cert = self.pki.issue(&[&host]);
        let server = self.rt.block_on(PolicyServer::start(ip, &cert));
        server.set_policy(policy);
        server
    }

    /// A certificate for `name` from the test CA.
    fn cert(&self, name: &str) -> SinkTls {
        SinkTls::Cert(self.pki.issue(&[name]))
    }

    /// Starts the server: the test CA as an extra trust anchor, policies
    /// fetched from `https_port`, metrics on, `extra` TOML appended.
    fn server(&self, https_port: u16, extra: &str) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.write_ca(dir.path());
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
[mta_sts]
https_port = {https_port}
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
{extra}
"#,
                self.dns.addr(),
                self.port
            ),
        )
    }
}

/// An `enforce` (or other `mode`) policy listing `mx` hosts.
fn policy(mode: &str, mx: &[&str], max_age: u64) -> String {
    let mut text = format!("version: STSv1\nmode: {mode}\n");
    for m in mx {
        text.push_str(&format!("mx: {m}\n"));
    }
    text.push_str(&format!("max_age: {max_age}\n"));
    text
}

/// Sends one message; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, from: &str, to: &str, body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
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

fn text(m: &ReceivedMail) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

/// MAIL commands the sink received: the transaction started.
fn mails(sink: &Sink) -> usize {
    sink.commands()
        .iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("MAIL"))
        .count()
}

/// One MX of an enforce row: preference, host label (`mx1` → `mx1.<domain>`),
/// last octet, and what it offers.
struct Mx {
    pref: u16,
    label: &'static str,
    last: u8,
    tls: SinkTls,
}

/// What an enforce row expects.
enum Expect {
    /// Delivered over TLS at the MX with this label.
    DeliveredAt(&'static str),
    /// Deferred, nothing sent to any MX, this TLS-RPT result counted.
    Deferred(&'static str),
}

/// One enforce row: its own domain, policy server and Portcullis; the
/// policy lists `listed` MX labels; `mxs` are the DNS MX hosts.
#[track_caller]
fn enforce_row(
    w: &World,
    name: &str,
    domain: &str,
    policy_last: u8,
    listed: &[&str],
    mxs: Vec<Mx>,
    expect: Expect,
) {
    let listed: Vec<String> = listed.iter().map(|l| format!("{l}.{domain}")).collect();
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    let sts = w.publish(domain, "1", policy_last, &policy("enforce", &listed, 86400));
    let mut sinks = Vec::new();
    for mx in mxs {
        let host = format!("{}.{domain}", mx.label);
        w.mx(domain, mx.pref, &host, mx.last);
        sinks.push((mx.label, w.sink_at(mx.last, mx.tls)));
    }
    let server = w.server(sts.port(), "");
    let id = send(&server, "a@sender.test", &format!("u@{domain}"), name);
    match expect {
        Expect::DeliveredAt(label) => {
            let (_, sink) = sinks.iter().find(|(l, _)| *l == label).unwrap();
            let got = sink.wait_for(1, Duration::from_secs(30));
            assert!(text(&got[0]).contains(name), "{name}");
            let tls = got[0].tls.as_deref();
            assert!(
                matches!(tls, Some("TLSv1.3" | "TLSv1.2")),
                "{name}: delivered over {tls:?}"
            );
            wait_empty(&server);
            for (l, other) in &sinks {
                if *l != label {
                    assert!(other.received().is_empty(), "{name}: {l} got mail too");
                }
            }
            let m = server.metrics_page();
            assert!(
                counter(
                    &m,
                    "portcullis_tls_sessions_total",
                    &[("domain", domain), ("result", "success")]
                ) >= 1,
                "{name}: {m}"
            );
            assert!(
                counter(
                    &m,
                    "portcullis_deliveries_by_policy_mode_total",
                    &[("mode", "enforce")]
                ) >= 1,
                "{name}: {m}"
            );
            assert!(
                counter(&m, "portcullis_mta_sts_fetches_total", &[("outcome", "ok")]) >= 1,
                "{name}: {m}"
            );
        }
        Expect::Deferred(result) => {
            let entry = wait_deferred(&server, &id);
            let reason = entry["last_error"].as_str().unwrap_or_default();
            assert!(reason.contains("MTA-STS"), "{name}: {entry}");
            for (l, sink) in &sinks {
                assert!(sink.connections() >= 1, "{name}: {l} was not tried");
                assert_eq!(mails(sink), 0, "{name}: {l}: {:?}", sink.commands());
                assert!(sink.received().is_empty(), "{name}: {l} got mail");
            }
            let m = server.metrics_page();
            assert!(
                counter(
                    &m,
                    "portcullis_tls_sessions_total",
                    &[("domain", domain), ("result", result)]
                ) >= 1,
                "{name}: no {result} session counted:\n{m}"
            );
            assert!(
                counter(
                    &m,
                    "portcullis_policy_deferrals_total",
                    &[("reason", "tls")]
                ) >= 1,
                "{name}: {m}"
            );
            assert!(
                counter(
                    &m,
                    "portcullis_tls_policy_failures_total",
                    &[("domain", domain)]
                ) >= 1,
                "{name}: {m}"
            );
            assert_eq!(
                counter(
                    &m,
                    "portcullis_tls_sessions_total",
                    &[("domain", domain), ("result", "success")]
                ),
                0,
                "{name}: {m}"
            );
        }
    }
    // Every MX that DNS names but the policy does not was never contacted.
    for (l, sink) in &sinks {
        if !listed.contains(&format!("{l}.{domain}").as_str()) {
            assert_eq!(sink.connections(), 0, "{name}: unlisted {l} was contacted");
        }
    }
}

/// `enforce`: PKIX-valid TLS with a listed MX, or nothing — and nothing
/// ever in clear.
#[test]
fn enforce_mode() {
    let w = World::new();
    let ok = |d: &str, l: &str| w.cert(&format!("{l}.{d}"));
    enforce_row(
        &w,
        "valid-mx",
        "valid.sts.test",
        100,
        &["mx1", "mx2"],
        vec![Mx {
            pref: 10,
            label: "mx1",
            last: 2,
            tls: ok("valid.sts.test", "mx1"),
        }],
        Expect::DeliveredAt("mx1"),
    );
    enforce_row(
        &w,
        "no-starttls",
        "plain.sts.test",
        101,
        &["mx1", "mx2"],
        vec![Mx {
            pref: 10,
            label: "mx1",
            last: 3,
            tls: SinkTls::None,
        }],
        Expect::Deferred("starttls-not-supported"),
    );
    enforce_row(
        &w,
        "wrong-name",
        "wrongname.sts.test",
        102,
        &["mx1", "mx2"],
        vec![Mx {
            pref: 10,
            label: "mx1",
            last: 4,
            tls: w.cert("other.test"),
        }],
        Expect::Deferred("certificate-host-mismatch"),
    );
    enforce_row(
        &w,
        "expired",
        "expired.sts.test",
        103,
        &["mx1", "mx2"],
        vec![Mx {
            pref: 10,
            label: "mx1",
            last: 5,
            tls: SinkTls::Cert(w.pki.issue_expired(&["mx1.expired.sts.test"])),
        }],
        Expect::Deferred("certificate-expired"),
    );
    enforce_row(
        &w,
        "self-signed",
        "selfsigned.sts.test",
        104,
        &["mx1", "mx2"],
        vec![Mx {
            pref: 10,
            label: "mx1",
            last: 6,
            tls: SinkTls::Cert(TestPki::self_signed(&["mx1.selfsigned.sts.test"])),
        }],
        Expect::Deferred("certificate-not-trusted"),
    );
    enforce_row(
        &w,
        "unlisted-mx",
        "unlisted.sts.test",
        105,
        &["mx1"],
        vec![
            // Preferred, and with a certificate valid for its name: only
            // the policy keeps it out.
            Mx {
                pref: 5,
                label: "evil",
                last: 7,
                tls: ok("unlisted.sts.test", "evil"),
            },
            Mx {
                pref: 10,
                label: "mx1",
                last: 8,
                tls: ok("unlisted.sts.test", "mx1"),
            },
        ],
        Expect::DeliveredAt("mx1"),
    );
    enforce_row(
        &w,
        "second-mx",
        "second.sts.test",
        106,
        &["mx1", "mx2"],
        vec![
            Mx {
                pref: 10,
                label: "mx1",
                last: 9,
                tls: SinkTls::Cert(TestPki::self_signed(&["mx1.second.sts.test"])),
            },
            Mx {
                pref: 20,
                label: "mx2",
                last: 10,
                tls: ok("second.sts.test", "mx2"),
            },
        ],
        Expect::DeliveredAt("mx2"),
    );
}

/// `testing`: delivered as usual (TLS without verification, or in clear),
/// and every failure that enforce would have refused is counted.
#[test]
fn testing_mode_delivers_and_records_failures() {
    let w = World::new();
    #[track_caller]
    fn row(w: &World, domain: &str, policy_last: u8, last: u8, tls: SinkTls, result: &str) {
        let mx1 = format!("mx1.{domain}");
        let sts = w.publish(domain, "1", policy_last, &policy("testing", &[&mx1], 86400));
        w.mx(domain, 10, &mx1, last);
        let encrypted = matches!(tls, SinkTls::Cert(_));
        let sink = w.sink_at(last, tls);
        let server = w.server(sts.port(), "");
        send(&server, "a@sender.test", &format!("u@{domain}"), domain);
        let got = sink.wait_for(1, Duration::from_secs(30));
        assert_eq!(
            got[0].tls.is_some(),
            encrypted,
            "{domain}: delivered over {:?}",
            got[0].tls
        );
        wait_empty(&server);
        let m = server.metrics_page();
        assert!(
            counter(
                &m,
                "portcullis_tls_sessions_total",
                &[("domain", domain), ("result", result)]
            ) >= 1,
            "{domain}: no {result} session counted:\n{m}"
        );
        assert!(
            counter(
                &m,
                "portcullis_deliveries_by_policy_mode_total",
                &[("mode", "testing")]
            ) >= 1,
            "{domain}: {m}"
        );
        // What LogTlsResults does: any failure under an `sts` policy counts
        // as a failure where a policy expects TLS, testing mode included.
        assert!(
            counter(
                &m,
                "portcullis_tls_policy_failures_total",
                &[("domain", domain)]
            ) >= 1,
            "{domain}: {m}"
        );
    }
    row(
        &w,
        "selfsigned.testing.test",
        100,
        2,
        SinkTls::Cert(TestPki::self_signed(&["mx1.selfsigned.testing.test"])),
        "certificate-not-trusted",
    );
    row(
        &w,
        "wrongname.testing.test",
        101,
        3,
        w.cert("other.test"),
        "certificate-host-mismatch",
    );
    row(
        &w,
        "expired.testing.test",
        102,
        4,
        SinkTls::Cert(w.pki.issue_expired(&["mx1.expired.testing.test"])),
        "certificate-expired",
    );
    row(
        &w,
        "plain.testing.test",
        103,
        5,
        SinkTls::None,
        "starttls-not-supported",
    );
}

/// After a good delivery under enforce, an attacker who removes the TXT
/// record, breaks the policy host and strips STARTTLS gets nothing in
/// clear; only a successfully fetched new policy (mode `none`) withdraws
/// enforcement.
#[test]
fn downgrade_attempts_are_refused_until_a_new_policy_is_fetched() {
    let w = World::new();
    let domain = "downgrade.sts.test";
    let sts = w.publish(
        domain,
        "1",
        100,
        &policy("enforce", &["mx1.downgrade.sts.test"], 86400),
    );
    w.mx(domain, 10, "mx1.downgrade.sts.test", 2);
    let sink = w.sink_at(2, w.cert("mx1.downgrade.sts.test"));
    let server = w.server(sts.port(), "[queue]\nretry = [\"1s\"]\n");

    send(&server, "a@sender.test", "u@downgrade.sts.test", "first");
    let got = sink.wait_for(1, Duration::from_secs(30));
    assert!(got[0].tls.is_some(), "{:?}", got[0]);
    wait_empty(&server);
    let fetches = sts.requests();
    assert!(fetches >= 1);

    // The attack.
    w.dns.remove(&format!("_mta-sts.{domain}"), "TXT");
    sts.set_reply(Reply::status(500));
    sink.reconfigure(|c| c.tls = SinkTls::None);

    let id = send(&server, "a@sender.test", "u@downgrade.sts.test", "second");
    let entry = wait_deferred(&server, &id);
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("MTA-STS"),
        "{entry}"
    );
    // A few more attempts on the one-second schedule: still nothing.
    eventually("three attempts", WAIT, || {
        let q = queue(&server);
        let e = q
            .as_array()?
            .iter()
            .find(|e| e["id"] == id.as_str())?
            .clone();
        (e["attempts"].as_u64()? >= 3).then_some(())
    });
    assert_eq!(
        mails(&sink),
        1,
        "only the first message: {:?}",
        sink.commands()
    );
    assert_eq!(sink.received().len(), 1);
    let m = server.metrics_page();
    assert!(
        counter(
            &m,
            "portcullis_tls_policy_failures_total",
            &[("domain", domain)]
        ) >= 1,
        "{m}"
    );
    assert!(
        counter(
            &m,
            "portcullis_tls_sessions_total",
            &[("domain", domain), ("result", "starttls-not-supported")]
        ) >= 1,
        "{m}"
    );

    // The domain withdraws its policy properly: a new id, mode none,
    // fetched successfully.
    sts.set_policy(&policy("none", &["mx1.downgrade.sts.test"], 86400));
    w.dns
        .add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=2;");
    server.cli_ok(&["queue", "retry", "--all"]);
    let got = sink.wait_for(2, Duration::from_secs(30));
    assert!(text(&got[1]).contains("second"), "{}", text(&got[1]));
    assert_eq!(got[1].tls, None, "opportunistic, in clear");
    wait_empty(&server);
    assert!(sts.requests() > fetches, "the new policy was fetched");
}

/// A cached policy lapses at its max_age when it cannot be refreshed:
/// after that, with no TXT record, there is no policy and mail goes
/// opportunistically.
#[test]
fn expired_policy_without_refresh_lapses() {
    let w = World::new();
    let domain = "lapse.sts.test";
    let sts = w.publish(
        domain,
        "1",
        100,
        &policy("enforce", &["mx1.lapse.sts.test"], 2),
    );
    w.mx(domain, 10, "mx1.lapse.sts.test", 2);
    let sink = w.sink_at(2, w.cert("mx1.lapse.sts.test"));
    let server = w.server(sts.port(), "[queue]\nretry = [\"1s\"]\n");

    send(&server, "a@sender.test", "u@lapse.sts.test", "first");
    let got = sink.wait_for(1, Duration::from_secs(30));
    assert!(got[0].tls.is_some(), "{:?}", got[0]);
    wait_empty(&server);

    w.dns.remove(&format!("_mta-sts.{domain}"), "TXT");
    sts.set_reply(Reply::status(500));
    sink.reconfigure(|c| c.tls = SinkTls::None);
    // A refresh now fails (500); it must not extend the policy.
    let _ = server.cli(&["policy", "refresh", domain]);

    // Deferred while the cached policy is in force, retried every second,
    // delivered once it has lapsed (2 s after the fetch).
    send(&server, "a@sender.test", "u@lapse.sts.test", "second");
    let got = sink.wait_for(2, Duration::from_secs(30));
    assert!(text(&got[1]).contains("second"));
    assert_eq!(
        got[1].tls, None,
        "the policy lapsed: opportunistic, in clear"
    );
    wait_empty(&server);
}

/// When the queue lifetime runs out under enforce, the DSN says it was
/// MTA-STS.
#[test]
fn dsn_after_the_queue_lifetime_names_mta_sts() {
    let w = World::new();
    let domain = "bounce.sts.test";
    let sts = w.publish(
        domain,
        "1",
        100,
        &policy("enforce", &["mx1.bounce.sts.test"], 86400),
    );
    w.mx(domain, 10, "mx1.bounce.sts.test", 2);
    w.mx("sender.test", 10, "mx.sender.test", 3);
    let plain = w.sink_at(2, SinkTls::None);
    let bounces = w.sink_at(3, SinkTls::None);
    let server = w.server(
        sts.port(),
        "[queue]\nretry = [\"1s\"]\nmax_age = \"3s\"\ndelay_warning = \"2s\"\n",
    );
    send(&server, "alice@sender.test", "u@bounce.sts.test", "doomed");
    // A delay warning, then the failure report.
    let got = bounces.wait_for(2, Duration::from_secs(30));
    let failed = got
        .iter()
        .find(|m| text(m).contains("Action: failed"))
        .expect("a failure DSN");
    let t = text(failed);
    assert_eq!(failed.mail_from, "");
    assert_eq!(failed.rcpts, vec!["alice@sender.test"]);
    assert!(t.contains("Action: failed"), "{t}");
    assert!(
        t.contains("Final-Recipient: rfc822; u@bounce.sts.test"),
        "{t}"
    );
    assert!(t.contains("MTA-STS"), "{t}");
    assert_eq!(mails(&plain), 0, "{:?}", plain.commands());
    wait_empty(&server);
}
