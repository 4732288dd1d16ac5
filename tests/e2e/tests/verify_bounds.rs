//! The work verification may do for one message is bounded, and it does
//! not hold up other sessions (issue 12, "CPU → DKIM"): the real binary, a
//! real DNS server on loopback with DKIM keys made here, raw SMTP clients.
//!
//! "Meanwhile" is proven by order, never by timing: the test DNS server
//! holds the key lookup of a signature of the crafted message, so the
//! message is provably in verification while a second client is served,
//! and the crafted message's reply can only come after the hold ends.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::server::{Portcullis, log_field};
use portcullis_test_support::smtp::{Client, queued_id};

/// Longer than any wait of a passing test; a broken server fails there.
const WAIT: Duration = Duration::from_secs(10);

use portcullis_test_support::dns::BackgroundDns as Dns;

/// An Ed25519 DKIM key made for this test.
struct Key(Vec<u8>);

impl Key {
    fn new() -> Key {
        Key(Ed25519Key::generate_pkcs8().expect("ed25519 key"))
    }

    fn signer(&self) -> Ed25519Key {
        Ed25519Key::from_pkcs8_der(&self.0).expect("ed25519 key")
    }

    /// The key record (RFC 8463) for `s._domainkey.<domain>`.
    fn record(&self) -> String {
        format!(
            "v=DKIM1; k=ed25519; p={}",
            B64.encode(self.signer().public_key())
        )
    }

    /// A valid DKIM-Signature field of `message` by `domain`, selector `s`.
    fn signature(&self, message: &str, domain: &str) -> String {
        DkimSigner::from_key(self.signer())
            .domain(domain)
            .selector("s")
            .headers(["From", "To", "Subject"])
            .sign(message.as_bytes())
            .expect("sign")
            .to_header()
    }
}

/// A message from `from` to bob@example.test.
fn message(from: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <bob@example.test>\r\nSubject: flood\r\n\
         Date: Mon, 23 Nov 2026 07:00:00 +0000\r\nMessage-ID: <flood@test>\r\n\r\n\
         Hello Bob.\r\n"
    )
}

/// The crafted signature of the issue: `h=` lists 100,000 field names
/// (folded, 50 to a line), `bh=` is the message's true body hash, `b=` is
/// bogus, and `domain` has a key in DNS, so a verifier that takes it on
/// hashes the header fields it lists: ~5·10⁹ name comparisons in mail-auth.
fn crafted_signature(key: &Key, message: &str, domain: &str) -> String {
    let real = key.signature(message, "any.test");
    let start = real.find("bh=").expect("bh=") + 3;
    let end = start + real[start..].find(';').expect("end of bh=");
    let bh: String = real[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let mut h = String::from("From");
    for i in 1..100_000 {
        h.push(':');
        if i % 50 == 0 {
            h.push_str("\r\n\t");
        }
        h.push_str(&format!("X-N{i}"));
    }
    format!(
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d={domain}; s=s;\r\n\
         \th={h};\r\n\tbh={bh}; b=AAAA\r\n"
    )
}

fn config(dns: &TestDns, verify: &str) -> String {
    // The resolver waits longer than any hold of a passing test.
    format!(
        r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{}"]
timeout = "10s"
[admin]
socket = "{{dir}}/admin.sock"
[limits]
# The crafted signature alone is ~800 KB of header: above the default
# header-section bound (256 KiB, which refuses it outright with 552), so
# the bound is raised here to reach the DKIM caps this file tests.
max_header_size = 4194304
[verify]
{verify}
"#,
        dns.addr()
    )
}

/// Opens a transaction from `from` and sends the whole message with its
/// terminator, without reading the final reply.
fn send_without_reply(
    server: &Portcullis,
    from: &str,
    message: &str,
) -> Client<std::net::TcpStream> {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    c.cmd("DATA", 354);
    c.send(message.as_bytes());
    c.send(b"\r\n.\r\n");
    c
}

/// The crafted message (one signature with `h=` of 100,000 names, a correct
/// `bh=` and a bogus `b=`) gets its verdict — its signature is not verified
/// but recorded as `dkim=policy (too many signed header fields)`, visible
/// in the stored Authentication-Results and in the "message verified" log
/// line — and while the message is in verification (the key lookup of its
/// second, valid signature is held by the DNS server) a second client gets
/// its greeting and completes EHLO and QUIT.
///
/// Regression test: the old server verified the crafted signature inside
/// the session task, seconds of CPU (minutes in a debug build) before its
/// reply, with `[verify] timeout` powerless; it never reached the held
/// lookup here.
#[test]
fn crafted_signature_gets_its_verdict_and_others_are_served() {
    let dns = Dns::start();
    let key = Key::new();
    dns.add_txt("s._domainkey.flood.test", &key.record());
    dns.add_txt("s._domainkey.gate.test", &key.record());
    let server = Portcullis::start(&config(&dns, ""));

    let plain = message("alice@flood.test");
    let crafted = format!(
        "{}{}{plain}",
        crafted_signature(&key, &plain, "flood.test"),
        key.signature(&plain, "gate.test"),
    );
    assert!(crafted.len() > 600_000, "{} bytes", crafted.len());

    let hold = dns.hold("s._domainkey.gate.test");
    let mut flood = send_without_reply(&server, "alice@flood.test", &crafted);
    // The crafted message is now in verification, waiting for the key.
    hold.wait_for_query(WAIT);

    let mut other = Client::connect(server.smtp());
    other.ehlo("other.test");
    other.cmd("QUIT", 221);

    hold.release();
    let reply = flood.read_reply();
    assert_eq!(reply.code, 250, "{}", reply.text);
    flood.cmd("QUIT", 221);

    let headers = server.stored_headers(&queued_id(&reply));
    for want in [
        "\tdkim=policy (too many signed header fields) header.d=flood.test header.s=s \
         header.a=ed25519-sha256;",
        "\tdkim=pass header.d=gate.test header.s=s header.a=ed25519-sha256;",
    ] {
        assert!(
            headers.contains(want),
            "stored headers lack {want:?}:\n{headers}"
        );
    }
    let events = server.wait_log_events("message verified", 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        log_field(&events[0], "dkim").as_str(),
        Some("pass:gate.test,policy:flood.test"),
        "{}",
        events[0]
    );
}

/// `[verify] timeout` is enforced for real: the client gets 451 4.7.0 while
/// the check is still busy (its key lookup is held, and released only after
/// the reply came), and the session goes on.
#[test]
fn timeout_answers_while_the_check_is_still_busy() {
    let dns = Dns::start();
    let key = Key::new();
    dns.add_txt("s._domainkey.slow.test", &key.record());
    let server = Portcullis::start(&config(&dns, "timeout = \"1s\""));

    let plain = message("alice@slow.test");
    let signed = format!("{}{plain}", key.signature(&plain, "slow.test"));
    let hold = dns.hold("s._domainkey.slow.test");
    let mut c = send_without_reply(&server, "alice@slow.test", &signed);
    hold.wait_for_query(WAIT);
    let reply = c.read_reply();
    assert_eq!(reply.code, 451, "{}", reply.text);
    assert!(reply.text.contains("4.7.0"), "{}", reply.text);
    // The answer came while the lookup was still held.
    hold.release();
    c.cmd("RSET", 250);
    c.cmd("QUIT", 221);
    assert!(server.queue_list().is_empty());
}

/// With the default limits the crafted message never reaches DKIM at all:
/// its header section (the signature alone is ~800 KB) is over
/// `[limits] max_header_size` (256 KiB) and the message is refused with
/// `552 5.3.4` after its data, nothing queued, no verification run.
#[test]
fn default_header_bound_refuses_the_crafted_message_before_verification() {
    let dns = Dns::start();
    let key = Key::new();
    dns.add_txt("s._domainkey.flood.test", &key.record());
    let server = Portcullis::start(&config(&dns, "").replace("max_header_size = 4194304\n", ""));
    let plain = message("alice@flood.test");
    let crafted = format!("{}{plain}", crafted_signature(&key, &plain, "flood.test"));
    let mut c = send_without_reply(&server, "alice@flood.test", &crafted);
    let reply = c.read_reply();
    assert_eq!(reply.code, 552, "{}", reply.text);
    assert!(reply.text.contains(" 5.3.4 "), "{}", reply.text);
    c.cmd("QUIT", 221);
    assert!(server.log_events("message verified").is_empty());
    assert!(server.queue_list().is_empty());
}
