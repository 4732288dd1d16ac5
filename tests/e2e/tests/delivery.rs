//! Outbound delivery end to end: the real binary, a real DNS server on
//! loopback, and SMTP sinks on 127.0.0.x addresses standing in for MX hosts.
//! Time is driven with a one-second retry schedule and `queue retry`, never
//! by waiting out real schedules.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::server::{
    Portcullis, background_runtime, eventually, free_port, relay_config,
};
use portcullis_test_support::sink::{ReceivedMail, Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(20);

/// The DNS server (on its own runtime) and the port every "MX" listens on.
struct World {
    _rt: tokio::runtime::Runtime,
    dns: TestDns,
    port: u16,
}

impl World {
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        World {
            _rt: rt,
            dns,
            port: free_port(),
        }
    }

    /// `domain` has an MX `host` (preference `pref`) at 127.0.0.`last`.
    fn mx(&self, domain: &str, pref: u16, host: &str, last: u8) {
        self.dns.add_mx(domain, pref, host);
        self.dns.add_a(host, Ipv4Addr::new(127, 0, 0, last));
    }

    fn sink_at(&self, last: u8, cfg: SinkConfig) -> Sink {
        Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            ..cfg
        })
    }

    /// Starts the server with `extra` TOML appended.
    fn server(&self, extra: &str) -> Portcullis {
        Portcullis::start(&format!(
            "{}[delivery]\nport = {}\n{extra}\n",
            relay_config("127.0.0.1:0", self.dns.addr()),
            self.port
        ))
    }
}

fn sink() -> SinkConfig {
    SinkConfig::default()
}

/// Sends one message; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, from: &str, to: &[&str], body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    let r = c.data(format!("Subject: test\r\nMessage-ID: <{body}@t>\r\n\r\n{body}").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

fn queue(server: &Portcullis) -> serde_json::Value {
    server.cli_json(&["queue", "list", "--json"])
}

fn text(m: &ReceivedMail) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

/// The queue empties: every recipient is done.
#[track_caller]
fn wait_empty(server: &Portcullis) {
    eventually("an empty queue", WAIT, || {
        queue(server).as_array().unwrap().is_empty().then_some(())
    });
}

/// A routed domain goes to its next hop, with our trace header on top and
/// the message intact.
#[test]
fn routed_domain_is_relayed_to_its_next_hop() {
    let w = World::new();
    let hop = w.sink_at(20, sink());
    let server = w.server(&format!(
        "[routes]\n\"example.test\" = \"127.0.0.20:{}\"\n",
        w.port
    ));
    let id = send(&server, "a@sender.test", &["u@example.test"], "routed");
    let got = hop.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].mail_from, "a@sender.test");
    assert_eq!(got[0].rcpts, vec!["u@example.test"]);
    let t = text(&got[0]);
    assert!(
        t.starts_with("Received: from app.internal.test ([127.0.0.1])"),
        "{t}"
    );
    assert!(t.contains(&format!("id {id}")), "{t}");
    assert!(t.ends_with("\r\n\r\nrouted\r\n"), "{t:?}");
    wait_empty(&server);
}

/// MX preference decides; the lower-preference host is not contacted.
#[test]
fn mx_delivery_by_preference() {
    let w = World::new();
    w.mx("remote.test", 20, "mx2.remote.test", 3);
    w.mx("remote.test", 10, "mx1.remote.test", 2);
    let mx1 = w.sink_at(2, sink());
    let mx2 = w.sink_at(3, sink());
    let server = w.server("");
    send(&server, "a@sender.test", &["u@remote.test"], "by-mx");
    let got = mx1.wait_for(1, Duration::from_secs(20));
    assert!(text(&got[0]).contains("by-mx"));
    wait_empty(&server);
    assert_eq!(mx2.connections(), 0);
    let show = server.cli(&["queue", "list", "--json"]);
    assert!(show.status.success());
}

/// The next MX is tried when one refuses (4xx greeting) or is down.
#[test]
fn falls_back_to_the_next_mx() {
    let w = World::new();
    w.mx("fallback.test", 10, "mx1.fallback.test", 4);
    w.mx("fallback.test", 20, "mx2.fallback.test", 5);
    w.mx("fallback.test", 30, "mx3.fallback.test", 6);
    // mx1 answers 421; mx2 has nothing listening; mx3 works.
    let refusing = w.sink_at(
        4,
        SinkConfig {
            greeting: 421,
            ..sink()
        },
    );
    let good = w.sink_at(6, sink());
    let server = w.server("");
    send(&server, "a@sender.test", &["u@fallback.test"], "fallback");
    good.wait_for(1, Duration::from_secs(20));
    assert!(refusing.connections() >= 1);
    wait_empty(&server);
}

/// No MX: the domain's own address is the mail host (RFC 5321 §5.1).
#[test]
fn implicit_mx() {
    let w = World::new();
    w.dns.add_a("implicit.test", Ipv4Addr::new(127, 0, 0, 7));
    let host = w.sink_at(7, sink());
    let server = w.server("");
    send(&server, "a@sender.test", &["u@implicit.test"], "implicit");
    host.wait_for(1, Duration::from_secs(20));
    wait_empty(&server);
}

/// A null MX bounces at once with 5.1.10, and the DSN reaches the sender.
#[test]
fn null_mx_bounces_at_once() {
    let w = World::new();
    w.dns.add_mx("nullmx.test", 0, ".");
    w.mx("sender.test", 10, "mx.sender.test", 9);
    let bounces = w.sink_at(9, sink());
    let server = w.server("");
    send(&server, "alice@sender.test", &["u@nullmx.test"], "to-null");
    let got = bounces.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].mail_from, "", "DSNs come from the null sender");
    assert_eq!(got[0].rcpts, vec!["alice@sender.test"]);
    let t = text(&got[0]);
    assert!(t.contains("report-type=delivery-status"), "{t}");
    assert!(t.contains("Status: 5.1.10"), "{t}");
    assert!(t.contains("Final-Recipient: rfc822; u@nullmx.test"), "{t}");
    wait_empty(&server);
}

/// 4xx: deferred, the attempt and next retry recorded; a later attempt
/// delivers. Never a bounce for a temporary failure.
#[test]
fn temporary_failure_is_retried_on_schedule() {
    let w = World::new();
    w.mx("later.test", 10, "mx.later.test", 10);
    let busy = w.sink_at(
        10,
        SinkConfig {
            rcpt_replies: vec![("u@later.test".into(), "451 4.3.0 try again later".into())],
            ..sink()
        },
    );
    let server = w.server("[queue]\nretry = [\"1h\"]\n");
    let id = send(&server, "a@sender.test", &["u@later.test"], "later");
    let entry = eventually("a deferred attempt", WAIT, || {
        let q = queue(&server);
        let e = q.as_array()?.first()?.clone();
        (e["attempts"] == 1 && e["recipients"][0]["state"] == "deferred").then_some(e)
    });
    assert!(
        entry["last_error"]
            .as_str()
            .unwrap()
            .contains("451 4.3.0 try again later"),
        "{entry}"
    );
    let received = entry["received_at"].as_u64().unwrap();
    let next = entry["next_attempt"].as_u64().unwrap();
    assert!(
        next >= received + 3500,
        "next attempt follows the 1h schedule: {entry}"
    );
    drop(busy);
    let good = w.sink_at(10, sink());
    let out = server.cli(&["queue", "retry", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    good.wait_for(1, Duration::from_secs(20));
    wait_empty(&server);
}

/// One recipient refused with 5xx: the others are delivered, and the DSN
/// names only the failed one, quoting the remote reply whole.
#[test]
fn one_permanent_failure_gives_a_partial_dsn() {
    let w = World::new();
    w.mx("partial.test", 10, "mx.partial.test", 11);
    w.mx("sender.test", 10, "mx.sender.test", 12);
    let mx = w.sink_at(
        11,
        SinkConfig {
            rcpt_replies: vec![(
                "bad@partial.test".into(),
                "550 5.1.1 <bad@partial.test>: no such user here".into(),
            )],
            ..sink()
        },
    );
    let bounces = w.sink_at(12, sink());
    let server = w.server("");
    send(
        &server,
        "alice@sender.test",
        &["good@partial.test", "bad@partial.test"],
        "partial",
    );
    let got = mx.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts, vec!["good@partial.test"]);
    let dsn = bounces.wait_for(1, Duration::from_secs(20));
    let t = text(&dsn[0]);
    assert!(
        t.contains("Final-Recipient: rfc822; bad@partial.test"),
        "{t}"
    );
    assert!(
        !t.contains("Final-Recipient: rfc822; good@partial.test"),
        "{t}"
    );
    assert!(
        t.contains("550 5.1.1 <bad@partial.test>: no such user here"),
        "{t}"
    );
    assert!(t.contains("Status: 5.1.1"), "{t}");
    wait_empty(&server);
}

/// Past max_age the message bounces with the last error.
#[test]
fn expiry_bounces_with_the_last_error() {
    let w = World::new();
    w.mx("never.test", 10, "mx.never.test", 13);
    w.mx("sender.test", 10, "mx.sender.test", 14);
    let _busy = w.sink_at(
        13,
        SinkConfig {
            rcpt_replies: vec![("u@never.test".into(), "452 4.2.2 mailbox full".into())],
            ..sink()
        },
    );
    let bounces = w.sink_at(14, sink());
    let server = w.server("[queue]\nretry = [\"1s\"]\nmax_age = \"3s\"\ndelay_warning = \"2s\"\n");
    send(&server, "alice@sender.test", &["u@never.test"], "expire");
    // A delay warning first, then the failure report.
    let got = bounces.wait_for(2, Duration::from_secs(30));
    let texts: Vec<String> = got.iter().map(text).collect();
    assert!(
        texts.iter().any(|t| t.contains("Action: delayed")),
        "{texts:?}"
    );
    let failed = texts
        .iter()
        .find(|t| t.contains("Action: failed"))
        .expect("failure DSN");
    assert!(failed.contains("452 4.2.2 mailbox full"), "{failed}");
    assert!(failed.contains("Status: 4.4.7"), "{failed}");
    wait_empty(&server);
}

/// Never a bounce for a bounce: a failing message from the null sender is
/// kept, failed and visible, and nothing is sent about it.
#[test]
fn no_bounce_for_a_bounce() {
    let w = World::new();
    w.mx("gone.test", 10, "mx.gone.test", 15);
    let mx = w.sink_at(
        15,
        SinkConfig {
            rcpt_replies: vec![("u@gone.test".into(), "550 5.1.1 gone".into())],
            ..sink()
        },
    );
    let server = w.server("");
    let id = send(&server, "", &["u@gone.test"], "bounce-of-bounce");
    let entry = eventually("a failed notification", WAIT, || {
        let q = queue(&server);
        let e = q
            .as_array()?
            .iter()
            .find(|e| e["id"] == id.as_str())?
            .clone();
        (e["recipients"][0]["state"] == "failed").then_some(e)
    });
    assert_eq!(entry["sender"], "<>");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        queue(&server).as_array().unwrap().len(),
        1,
        "no DSN was queued about a DSN"
    );
    assert_eq!(mx.received().len(), 0);
    // The operator can remove it.
    assert!(server.cli(&["queue", "delete", &id]).status.success());
    wait_empty(&server);
}

/// SIGKILL while the next hop holds the message after DATA: after a restart
/// the message is delivered; nothing is lost.
#[test]
fn kill9_mid_delivery_then_delivered_after_restart() {
    let w = World::new();
    w.mx("stall.test", 10, "mx.stall.test", 16);
    let stalling = w.sink_at(
        16,
        SinkConfig {
            stall_after_data: true,
            ..sink()
        },
    );
    let mut server = w.server("[queue]\nretry = [\"1s\"]\n");
    let id = send(&server, "a@sender.test", &["u@stall.test"], "stalled");
    eventually("the sink to receive the data", WAIT, || {
        (stalling.commands().iter().any(|c| c == "DATA")).then_some(())
    });
    server.kill9();
    drop(stalling);
    let good = w.sink_at(16, sink());
    server.restart();
    let got = good.wait_for(1, Duration::from_secs(20));
    assert!(text(&got[0]).contains(&format!("id {id}")));
    wait_empty(&server);
}

/// A recipient delivered in one attempt is never delivered again when the
/// message is retried for another recipient.
#[test]
fn delivered_recipients_are_not_delivered_again() {
    let w = World::new();
    w.mx("ok.test", 10, "mx.ok.test", 17);
    w.mx("slow.test", 10, "mx.slow.test", 18);
    let ok = w.sink_at(17, sink());
    let slow = w.sink_at(
        18,
        SinkConfig {
            rcpt_replies: vec![("u@slow.test".into(), "451 4.7.1 greylisted".into())],
            ..sink()
        },
    );
    let server = w.server("[queue]\nretry = [\"1s\"]\n");
    let id = send(
        &server,
        "a@sender.test",
        &["u@ok.test", "u@slow.test"],
        "twice",
    );
    ok.wait_for(1, Duration::from_secs(20));
    eventually("two attempts", WAIT, || {
        let q = queue(&server);
        (q.as_array()?.first()?["attempts"].as_u64()? >= 2).then_some(())
    });
    drop(slow);
    let fixed = w.sink_at(18, sink());
    server.cli(&["queue", "retry", &id]);
    fixed.wait_for(1, Duration::from_secs(20));
    wait_empty(&server);
    assert_eq!(ok.received().len(), 1, "u@ok.test got the message once");
}
