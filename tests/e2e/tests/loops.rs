//! Delivery never connects to this server itself (issue 11 item 3b), end
//! to end: the real binary listens on 127.0.0.1:P and delivers MX mail to
//! port P (`[delivery] port`), and the real test DNS server points MX
//! records at 127.0.0.1.
//!
//! - Every MX of `loop.test` is us: the recipient fails at once with 5.4.6
//!   "mail for loop.test loops back to myself" (Postfix's words) and the
//!   sender gets the bounce; the server never opens a session to itself.
//! - The preferred MX of `partial.test` is us, the other one is not: the
//!   other one gets the mail.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::server::{
    Portcullis, background_runtime, eventually, free_port, metric, relay_config,
};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// Sends one message from a trusted client; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, from: &str, to: &str, subject: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(format!("Subject: {subject}\r\n\r\n{subject}").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

/// Regression test: with an MX record pointing at the server's own
/// address and port, delivery connected to itself, so the server accepted
/// the message again (and again: a mail loop bounded only by the hop
/// count).
#[test]
fn mx_pointing_at_ourselves_bounces_5_4_6_without_connecting() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let port = free_port();

    dns.add_mx("loop.test", 10, "mx.loop.test");
    dns.add_a("mx.loop.test", Ipv4Addr::LOCALHOST);
    dns.add_mx("partial.test", 10, "mx1.partial.test");
    dns.add_a("mx1.partial.test", Ipv4Addr::LOCALHOST);
    dns.add_mx("partial.test", 20, "mx2.partial.test");
    dns.add_a("mx2.partial.test", Ipv4Addr::new(127, 0, 0, 32));
    dns.add_mx("sender.test", 10, "mx.sender.test");
    dns.add_a("mx.sender.test", Ipv4Addr::new(127, 0, 0, 31));
    let sink = |last: u8| {
        Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], port)),
            ..SinkConfig::default()
        })
    };
    let bounces = sink(31);
    let partial = sink(32);

    let server = Portcullis::start(&format!(
        r#"{}[delivery]
port = {port}
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
"#,
        relay_config(&format!("127.0.0.1:{port}"), dns.addr())
    ));
    assert_eq!(server.smtp(), SocketAddr::from(([127, 0, 0, 1], port)));

    send(&server, "alice@sender.test", "u@loop.test", "looped");
    // The bounce, at once: a loop is not a temporary problem. A second
    // session would be the server talking to itself.
    let got = eventually("the bounce", WAIT, || {
        let sessions = server.log_events("connected").len();
        assert_eq!(sessions, 1, "the server opened a session to itself");
        let got = bounces.received();
        (!got.is_empty()).then_some(got)
    });
    let dsn = String::from_utf8_lossy(&got[0].data).into_owned();
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpts, ["alice@sender.test"]);
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Status: 5.4.6"), "{dsn}");
    assert!(
        dsn.contains("mail for loop.test loops back to myself"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; u@loop.test"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Subject: looped"),
        "the original's headers: {dsn}"
    );

    // Only the preferred MX is us: the next one gets the mail.
    send(&server, "alice@sender.test", "u@partial.test", "partial");
    let got = partial.wait_for(1, WAIT);
    assert!(String::from_utf8_lossy(&got[0].data).contains("partial"));
    eventually("an empty queue", WAIT, || {
        server.queue_list().is_empty().then_some(())
    });

    // The server saw only its two test clients: it never opened a session
    // to itself, and accepted nothing but the two messages.
    assert_eq!(server.log_events("connected").len(), 2);
    assert_eq!(server.log_events("message accepted").len(), 2);
    assert_eq!(bounces.received().len(), 1, "one bounce, nothing else");
    let page = server.metrics_page();
    for mx in ["mx.loop.test", "mx1.partial.test"] {
        let series = format!(
            "portcullis_delivery_attempts_by_mx_total{{mx=\"{mx}\",result=\"loops_to_self\"}}"
        );
        assert!(
            metric(&page, &series).unwrap_or(0.0) >= 1.0,
            "{series}\n{page}"
        );
    }
}
