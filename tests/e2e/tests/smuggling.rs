//! Issue 11 against the real binary over raw TCP sockets: SMTP smuggling
//! (DATA ends only at `<CRLF>.<CRLF>`, the first line of DATA is at the
//! start of a line), mail loops (`[limits] max_received_headers`), and the
//! removal of forged `Authentication-Results` (our authserv-id) and
//! `X-Portcullis-Quarantine` fields from trusted and authenticated mail.
//! Accepted mail goes through the queue to a sink route, so what the next
//! hop receives is checked, after our outbound client's own dot-stuffing.

use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::Portcullis;
use portcullis_test_support::sink::{ReceivedMail, Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, Reply};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const HOST: &str = "mx.example.test";
/// base64 of "\0alice\0secret".
const PLAIN_OK: &str = "AGFsaWNlAHNlY3JldA==";
/// The address of the trusted network in [`start`].
const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A running server whose accepted and relayed mail goes to `sink`.
struct Mx {
    server: Portcullis,
    sink: Sink,
    pki: TestPki,
}

/// The binary on an ephemeral `smtp` (and `submission`) port, hostname
/// [`HOST`], `example.test` accepted, [`TRUSTED`] trusted, alice (password
/// "secret") a user, `example.test` and `elsewhere.test` routed to a
/// sink; `extra` is appended (whole tables).
fn start(extra: &str) -> Mx {
    let sink = Sink::start(SinkConfig::default());
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.issue(&[HOST]).write(dir.path(), "mx");
    let hop = sink.addr();
    let server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "{HOST}"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[[listen]]
address = "127.0.0.1:0"
role = "submission"
[tls]
certificate = "{{dir}}/mx.crt"
private_key = "{{dir}}/mx.key"
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["{TRUSTED}/32"]
[routes]
"example.test" = "{hop}"
"elsewhere.test" = "{hop}"
[queue]
retry = ["1s"]
[submission]
users_file = "{{dir}}/users"
{extra}
"#
        ),
    );
    let out = server.cli_with_stdin(&["user", "add", "alice"], Some("secret\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Mx { server, sink, pki }
}

/// Opens a port-25 session from 127.0.0.1 (not trusted) up to the 354.
fn open_data(mx: &Mx) -> Client<std::net::TcpStream> {
    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("a.test");
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<x@example.test>", 250);
    c.cmd("DATA", 354);
    // A hang would show as a failed read, not as a slow test.
    c.socket()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c
}

#[track_caller]
fn expect(r: &Reply, prefix: &str) {
    assert!(r.text.starts_with(prefix), "expected {prefix}…, got {r:?}");
}

/// The bytes after the 354 in issue 11's reproduction.
const REPRODUCTION: &[u8] = b"Subject: t\r\n\r\nHi\r\n.\r\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n";

/// Regression test (issue 11, SMTP smuggling): `<CRLF>.<CR><CRLF>` ended
/// the data and the bytes after it were run as commands, so the server
/// answered 550, then 250, 250, 354 and queued a second message from
/// `<a@b>`. Now everything up to `<CRLF>.<CRLF>` is one message, refused
/// with one 550 5.5.2; the next reply is the NOOP's and nothing is queued.
#[test]
fn the_issue_reproduction_gets_one_550_and_nothing_is_queued() {
    let mx = start("");
    let mut c = open_data(&mx);
    c.send(REPRODUCTION);
    expect(&c.read_reply(), "550 5.5.2 ");
    c.send(b"NOOP\r\n");
    // Not "250 2.1.0 Sender OK": no smuggled command ran.
    assert_eq!(c.read_reply().text, "250 2.0.0 OK");
    c.cmd("QUIT", 221);
    assert_eq!(mx.server.queue_list(), Vec::<serde_json::Value>::new());
    assert!(mx.sink.received().is_empty());
    // The operator sees why, once.
    mx.server.wait_for_log(
        "message refused at the end of its data",
        Duration::from_secs(10),
    );
    let refused = mx
        .server
        .log_events("message refused at the end of its data");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["reason"], "bare_newline");
}

/// With `bare_newline = "normalize"` the same bytes are one message with
/// one 250, the smuggled text in its body, for the one recipient of the
/// real transaction.
#[test]
fn the_issue_reproduction_normalized_is_one_message() {
    let mx = start("[smtp]\nbare_newline = \"normalize\"\n");
    let mut c = open_data(&mx);
    c.send(REPRODUCTION);
    expect(&c.read_reply(), "250 2.0.0 Ok: queued as ");
    c.send(b"NOOP\r\n");
    assert_eq!(c.read_reply().text, "250 2.0.0 OK");
    c.cmd("QUIT", 221);
    let got = mx.sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "a@b.test");
    assert_eq!(got[0].rcpts, ["x@example.test"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.ends_with("\r\n\r\nHi\r\n\r\n\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n"),
        "{text:?}"
    );
}

/// Regression test: the data began as if in the middle of a line, so
/// `DATA` then `.<CRLF>` got no reply until the data timeout, and a first
/// line sent dot-stuffed as `..x` was stored and passed on as `..x`. Now
/// the empty message is answered at once, and `..x` reaches the next hop
/// as `.x` (stored as `.x`, stuffed again by our client, unstuffed by the
/// sink).
#[test]
fn the_first_line_of_data_starts_a_line() {
    let mx = start("");
    let mut c = open_data(&mx);
    c.send(b".\r\n");
    expect(&c.read_reply(), "250 2.0.0 Ok: queued as ");
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<y@example.test>", 250);
    let r = c.data(b"..x\r\n\r\n..y");
    expect(&r, "250 2.0.0 Ok: queued as ");
    c.cmd("QUIT", 221);
    let got = mx.sink.wait_for(2, Duration::from_secs(20));
    let of = |rcpt: &str| -> String {
        let m = got.iter().find(|m| m.rcpts == [rcpt]).expect(rcpt);
        String::from_utf8_lossy(&m.data).into_owned()
    };
    // The empty message: our Received header and nothing else.
    let empty = of("x@example.test");
    assert!(empty.starts_with("Received: "), "{empty:?}");
    assert!(
        empty.ends_with("\r\n") && empty.lines().skip(1).all(|l| l.starts_with([' ', '\t'])),
        "{empty:?}"
    );
    let stuffed = of("y@example.test");
    assert!(stuffed.ends_with("\r\n.x\r\n\r\n.y\r\n"), "{stuffed:?}");
}

/// The header section of `n` Received fields and a subject.
fn hops(n: usize) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..n {
        m.extend_from_slice(format!("Received: from h{i}.test by r{i}.test; x\r\n").as_bytes());
    }
    m.extend_from_slice(format!("Subject: hops {n}\r\n\r\nbody").as_bytes());
    m
}

/// Issue 11 item 3a, with the default `max_received_headers = 100`: 101
/// Received fields are a loop, 554 5.4.6, nothing queued; 100 are
/// accepted and arrive with ours on top (101).
#[test]
fn more_than_100_received_fields_is_a_loop() {
    let mx = start("");
    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("a.test");
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<x@example.test>", 250);
    let r = c.data(&hops(101));
    assert_eq!(r.text, "554 5.4.6 Too many hops");
    assert_eq!(mx.server.queue_list(), Vec::<serde_json::Value>::new());
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<x@example.test>", 250);
    expect(&c.data(&hops(100)), "250 2.0.0 Ok: queued as ");
    c.cmd("QUIT", 221);
    let got = mx.sink.wait_for(1, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Subject: hops 100\r\n"), "{text}");
    let received = text.lines().filter(|l| l.starts_with("Received: ")).count();
    assert_eq!(received, 101, "{text}");
}

/// A message claiming our verification results and our quarantine tag,
/// plus a result of another server that must be kept.
const FORGED: &[u8] =
    b"Authentication-Results: mx.example.test; dkim=pass header.d=bank.example\r\n\
X-Portcullis-Quarantine: yes\r\n\
x-portcullis-quarantine:\r\n folded\r\n\
Authentication-Results: other.example; spf=pass smtp.mailfrom=bank.example\r\n\
From: ceo@bank.example\r\n\
Subject: forged\r\n\
\r\n\
Authentication-Results: mx.example.test; in the body, untouched";

#[track_caller]
fn assert_no_forged_fields(m: &ReceivedMail) {
    let text = String::from_utf8_lossy(&m.data);
    let header = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        !header.contains("authentication-results: mx.example.test"),
        "{text}"
    );
    assert!(!header.contains("x-portcullis-quarantine"), "{text}");
    assert!(!header.contains("folded"), "{text}");
    assert!(
        header.contains("authentication-results: other.example; spf=pass"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "\r\n\r\nAuthentication-Results: mx.example.test; in the body, untouched\r\n"
        ),
        "{text}"
    );
}

/// Regression test (issue 11 item 5): only verified mail lost forged
/// `Authentication-Results` with our authserv-id and incoming
/// `X-Portcullis-Quarantine` fields; mail from a trusted network and from
/// an authenticated user reached the next hop with them. Now both lose
/// them (other servers' results and the body are kept).
#[test]
fn forged_trust_headers_are_removed_from_trusted_and_authenticated_mail() {
    let mx = start("[verify]\nenabled = true\nskip_trusted = true\n");

    // Trusted network: relays to elsewhere.test without AUTH.
    let mut c = Client::connect_raw_from(mx.server.smtp(), IpAddr::V4(TRUSTED));
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<app@example.test>", 250);
    c.cmd("RCPT TO:<trusted@elsewhere.test>", 250);
    expect(&c.data(FORGED), "250 2.0.0 Ok: queued as ");
    c.cmd("QUIT", 221);

    // Authenticated submission.
    let mut c = Client::connect(mx.server.addr("submission"));
    c.ehlo("laptop.test");
    let mut c = c.starttls(mx.pki.client_config(), HOST);
    c.ehlo("laptop.test");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<authenticated@elsewhere.test>", 250);
    expect(&c.data(FORGED), "250 2.0.0 Ok: queued as ");
    c.cmd("QUIT", 221);

    let got = mx.sink.wait_for(2, Duration::from_secs(20));
    for rcpt in ["trusted@elsewhere.test", "authenticated@elsewhere.test"] {
        let m = got.iter().find(|m| m.rcpts == [rcpt]).expect(rcpt);
        assert_no_forged_fields(m);
    }
}
