//! Bad input over real sockets against the real binary. The promise under
//! test (DESIGN.md, "Promises"): malformed commands, over-long lines, bare LF
//! or bare CR inside DATA, commands pipelined behind STARTTLS, oversized
//! messages and abusive clients get a clear SMTP reply and never a crash,
//! never a lost message, never smuggled mail; and no open relay. After every
//! abuse the server must still serve a normal transaction on a new
//! connection.

use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::Portcullis;
use portcullis_test_support::smtp::{Client, Reply, queued_id};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Harness helpers (local to this file).
// ---------------------------------------------------------------------------

/// The server name the test certificate is issued for.
const HOST: &str = "mx.example.test";

/// A running server plus the PKI that issued its certificate.
struct Mx {
    server: Portcullis,
    pki: TestPki,
}

/// Starts the binary with TLS files from a fresh [`TestPki`] and `extra`
/// appended after `[relay]` (so `extra` may continue that table, e.g. with
/// `trusted_networks`, or open new tables such as `[limits]`).
fn start(extra: &str) -> Mx {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    pki.issue(&[HOST]).write(dir.path(), "mx");
    let config = format!(
        r#"
hostname = "{HOST}"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
certificate = "{{dir}}/mx.crt"
private_key = "{{dir}}/mx.key"
[relay]
accepted_domains = ["example.test"]
{extra}
"#
    );
    let server = Portcullis::start_in(dir, &config);
    Mx { server, pki }
}

/// The `[admin]` table with metrics on an ephemeral port.
const METRICS: &str = "[admin]\nsocket = \"{dir}/admin.sock\"\nmetrics = \"127.0.0.1:0\"\n";

/// Asserts the reply's code and enhanced status code (`"5.5.2"`).
#[track_caller]
fn expect(r: &Reply, code: u16, enhanced: &str) {
    assert_eq!(r.code, code, "expected {code} {enhanced}, got {:?}", r.text);
    let prefix = format!("{code} {enhanced} ");
    assert!(
        r.text.starts_with(&prefix),
        "expected {prefix:?}…, got {:?}",
        r.text
    );
}

/// `queue list --json`, parsed.
fn queue(server: &Portcullis) -> Vec<serde_json::Value> {
    server.queue_list()
}

/// The recipient addresses of the queued message `id`.
#[track_caller]
fn queued_recipients(server: &Portcullis, id: &str) -> Vec<String> {
    let list = queue(server);
    let entry = list
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the queue: {list:?}"));
    entry["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_string())
        .collect()
}

/// A complete, ordinary transaction on an open session; returns the queue id.
#[track_caller]
fn transaction<S: Read + Write>(c: &mut Client<S>, rcpt: &str) -> String {
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    let r = c.data(b"Subject: ordinary\r\n\r\nnothing to see here");
    expect(&r, 250, "2.0.0");
    queued_id(&r)
}

/// Proves the server is alive and well: a new connection carries a normal
/// transaction that ends up in the queue. Returns its queue id.
#[track_caller]
fn assert_still_serves(server: &Portcullis) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    let id = transaction(&mut c, "ok@example.test");
    c.cmd("QUIT", 221);
    assert!(
        queue(server).iter().any(|m| m["id"] == id.as_str()),
        "message {id} acknowledged but not queued"
    );
    id
}

/// Reads whatever the server still sends until it closes the connection.
fn read_to_eof(s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut s = s;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Asserts that the next thing on the connection is EOF, not another reply.
#[track_caller]
fn assert_closed<S: Read + Write>(c: &mut Client<S>) {
    if let Some(r) = c.try_read_reply() {
        panic!(
            "expected the server to close the connection, got {:?}",
            r.text
        );
    }
}

/// The value of one metric line (`name` includes any labels) from a raw
/// HTTP GET /metrics.
fn metric(server: &Portcullis, name: &str) -> f64 {
    let page = server.metrics_page();
    portcullis_test_support::server::metric(&page, name)
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

/// Polls a counter until it reaches `at_least` (the server bumps some
/// counters just after it closes the socket); returns the final value.
fn metric_reaches(server: &Portcullis, name: &str, at_least: f64) -> f64 {
    for _ in 0..200 {
        let v = metric(server, name);
        if v >= at_least {
            return v;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    metric(server, name)
}

/// Polls the log (it arrives through a pipe) until `message` was logged
/// `at_least` times; returns the final count.
fn log_count(server: &Portcullis, message: &str, at_least: usize) -> usize {
    server.wait_log_events(message, at_least).len()
}

/// Connects, retrying while the server still counts a connection the test
/// just closed (it frees the slot right after closing the socket).
#[track_caller]
fn connect_when_free(addr: SocketAddr) -> Client<TcpStream> {
    for _ in 0..200 {
        let mut c = Client::connect_raw(addr);
        let r = c.read_reply();
        if r.code == 220 {
            return c;
        }
        expect(&r, 421, "4.7.0");
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the server never freed a connection slot");
}

/// A plain TCP connection from a chosen loopback source address (to tell
/// per-IP limits from the total one).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(source).expect("bind source address");
        sock.connect(addr)
            .await
            .expect("connect")
            .into_std()
            .unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads one CRLF line from a raw stream.
fn read_line_raw(s: &TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    let mut s = s;
    while s.read(&mut b).map(|n| n == 1).unwrap_or(false) {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}

/// The stored bytes of each message in `ids`: stops the server (sled locks
/// its directory) and opens its queue.
fn stored_messages(mx: &mut Mx, ids: &[String]) -> Vec<Vec<u8>> {
    mx.server.kill9();
    let dir = mx.server.data_dir().join("queue");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = portcullis_store::Store::open(&dir).expect("open store");
        let q = portcullis_queue::Queue::open(&store).expect("open queue");
        ids.iter()
            .map(|id| {
                q.message(id.parse().expect("queue id"))
                    .expect("stored message")
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------
// 1. STARTTLS command injection.
// ---------------------------------------------------------------------------

/// Guards "commands pipelined behind STARTTLS … never smuggled mail"
/// (RFC 3207 §4.2, CVE-2011-0411): commands sent in the same write as
/// STARTTLS are discarded, never executed after the handshake; the session
/// state resets so EHLO is needed again; only the legitimate message is queued.
#[test]
fn commands_pipelined_behind_starttls_are_discarded_not_executed() {
    let mx = start("");
    let mut c = Client::connect(mx.server.smtp());
    let injected = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.test>\r\n";
    let mut write = b"EHLO x\r\nSTARTTLS\r\n".to_vec();
    write.extend_from_slice(injected);
    c.send(&write);
    let ehlo = c.read_reply();
    assert_eq!(ehlo.code, 250, "{}", ehlo.text);
    assert!(ehlo.text.contains("STARTTLS"), "{}", ehlo.text);
    expect(&c.read_reply(), 220, "2.0.0");

    let mut t = c.into_tls(mx.pki.client_config(), HOST);
    // The injected MAIL did not run and the EHLO before TLS is forgotten.
    expect(&t.cmd("MAIL FROM:<a@b.test>", 503), 503, "5.5.1");
    let ehlo = t.ehlo("x");
    assert!(
        !ehlo.text.contains("STARTTLS"),
        "STARTTLS offered twice: {}",
        ehlo.text
    );
    t.cmd("MAIL FROM:<a@b.test>", 250);
    t.cmd("RCPT TO:<legit@example.test>", 250);
    let r = t.data(b"Subject: legit\r\n\r\nhello");
    expect(&r, 250, "2.0.0");
    let id = queued_id(&r);
    t.cmd("QUIT", 221);

    let warning = "discarded bytes pipelined behind STARTTLS";
    mx.server.wait_for_log(warning, Duration::from_secs(10));
    let warned = mx.server.log_events(warning);
    assert_eq!(warned.len(), 1, "{:?}", mx.server.logs());
    assert_eq!(warned[0]["octets"], injected.len());
    let list = queue(&mx.server);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["sender"], "<a@b.test>");
    assert_eq!(queued_recipients(&mx.server, &id), ["legit@example.test"]);
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 2. SMTP smuggling.
// ---------------------------------------------------------------------------

/// The lenient end-of-data sequences of the 2023 SMTP smuggling research;
/// only `<CRLF>.<CRLF>` ends DATA.
const SMUGGLING: &[(&str, &[u8])] = &[
    ("bare LF dot bare LF", b"\n.\n"),
    ("bare LF dot CRLF", b"\n.\r\n"),
    ("bare CR dot CRLF", b"\r.\r\n"),
    ("CRLF dot bare LF", b"\r\n.\n"),
    ("CRLF dot bare CR", b"\r\n.\r"),
    ("bare CR dot bare CR", b"\r.\r"),
];

const SMUGGLED: &[u8] =
    b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil body";

/// Sends a first message, the smuggling separator and a "second message",
/// then the real terminator; returns the final reply.
fn smuggle(server: &Portcullis, sep: &[u8]) -> (Client<TcpStream>, Reply) {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    let mut data = b"Subject: first\r\n\r\nfirst body".to_vec();
    data.extend_from_slice(sep);
    data.extend_from_slice(SMUGGLED);
    let r = c.data(&data);
    (c, r)
}

/// Guards "bare LF or bare CR inside DATA … never smuggled mail" with the
/// default policy `bare_newline = "reject"`: every smuggling variant is
/// refused as a whole with 550 5.5.2 — no message at all, never two — and
/// the session is back in command state with no transaction open.
#[test]
fn smuggling_variants_are_rejected_whole() {
    let mx = start("");
    #[track_caller]
    fn case(server: &Portcullis, name: &str, sep: &[u8]) {
        let (mut c, r) = smuggle(server, sep);
        assert_eq!(r.code, 550, "{name}: {}", r.text);
        expect(&r, 550, "5.5.2");
        // Neither the first nor the smuggled transaction survives.
        let r = c.cmd("RCPT TO:<x@example.test>", 503);
        expect(&r, 503, "5.5.1");
        c.cmd("QUIT", 221);
        assert!(queue(server).is_empty(), "{name}: something was queued");
    }
    for (name, sep) in SMUGGLING {
        case(&mx.server, name, sep);
    }
    assert_still_serves(&mx.server);
    assert_eq!(queue(&mx.server).len(), 1);
}

/// Guards "never smuggled mail" for BDAT (RFC 3030): chunks are counted,
/// never scanned for terminators, so a `<CRLF>.<CRLF>` and a second
/// envelope inside a chunk are data of ONE message for the first envelope.
#[test]
fn terminator_inside_a_bdat_chunk_is_data_of_one_message() {
    let mut mx = start("");
    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    let mut chunk = b"Subject: first\r\n\r\nfirst body\r\n.\r\n".to_vec();
    chunk.extend_from_slice(SMUGGLED);
    chunk.extend_from_slice(b"\r\n");
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    c.send(&chunk);
    let r = c.read_reply();
    expect(&r, 250, "2.0.0");
    let id = queued_id(&r);
    // Exactly one reply: nothing in the chunk ran as a command.
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);
    assert_eq!(queue(&mx.server).len(), 1);
    assert_eq!(queued_recipients(&mx.server, &id), ["u@example.test"]);
    let stored = stored_messages(&mut mx, &[id]).remove(0);
    assert!(
        stored.ends_with(&chunk),
        "{:?}",
        String::from_utf8_lossy(&stored)
    );
}

/// Guards the same promise with `bare_newline = "normalize"`: each variant
/// yields exactly ONE message, for the first envelope only, whose stored
/// content carries the smuggled commands as data, with every line ending
/// rewritten to CRLF (no bare CR or LF is passed on).
#[test]
fn smuggling_variants_are_one_message_when_normalized() {
    let mut mx = start("[smtp]\nbare_newline = \"normalize\"\n");
    let mut ids = Vec::new();
    for (name, sep) in SMUGGLING {
        let (mut c, r) = smuggle(&mx.server, sep);
        assert_eq!(r.code, 250, "{name}: {}", r.text);
        let id = queued_id(&r);
        c.cmd("RCPT TO:<x@example.test>", 503);
        c.cmd("QUIT", 221);
        let list = queue(&mx.server);
        assert_eq!(list.len(), ids.len() + 1, "{name}: {list:?}");
        assert_eq!(
            queued_recipients(&mx.server, &id),
            ["u@example.test"],
            "{name}"
        );
        assert_eq!(
            list.last().unwrap()["sender"],
            "<alice@sender.test>",
            "{name}"
        );
        ids.push(id);
    }
    assert_still_serves(&mx.server);
    let list = queue(&mx.server);
    assert_eq!(list.len(), SMUGGLING.len() + 1);
    assert!(
        list.iter()
            .all(|m| m["recipients"].as_array().unwrap().len() == 1
                && m["recipients"][0]["address"] != "victim@example.test"),
        "{list:?}"
    );

    for ((name, _), stored) in SMUGGLING.iter().zip(stored_messages(&mut mx, &ids)) {
        let text = String::from_utf8_lossy(&stored);
        assert!(text.contains("first body"), "{name}: {text:?}");
        assert!(
            text.contains(
                "MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil body"
            ),
            "{name}: smuggled text is not kept as data: {text:?}"
        );
        for (i, &b) in stored.iter().enumerate() {
            let bare = match b {
                b'\r' => stored.get(i + 1) != Some(&b'\n'),
                b'\n' => i == 0 || stored[i - 1] != b'\r',
                _ => false,
            };
            assert!(!bare, "{name}: bare CR/LF at {i} in {text:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Over-long command lines.
// ---------------------------------------------------------------------------

/// Guards "over-long lines get a clear SMTP reply": a command line longer
/// than `max_line_length` (default 2048 with CRLF) is answered 500 5.5.2,
/// skipped to its end (never half-executed) and the next command works; a
/// line of exactly the limit is still a command.
#[test]
fn over_long_command_lines_are_refused_and_skipped() {
    let mx = start("");
    #[track_caller]
    fn case(server: &Portcullis, name: &str, line: Vec<u8>, code: u16) {
        let mut c = Client::connect(server.smtp());
        c.ehlo("client.test");
        c.send(&line);
        let r = c.read_reply();
        assert_eq!(r.code, code, "{name}: {}", r.text);
        if code == 500 {
            expect(&r, 500, "5.5.2");
            // The over-long MAIL did not open a transaction.
            c.cmd("RCPT TO:<x@example.test>", 503);
        }
        c.cmd("NOOP", 250);
        transaction(&mut c, "ok@example.test");
        c.cmd("QUIT", 221);
    }
    let padded = |prefix: &str, total: usize| {
        let mut l = prefix.as_bytes().to_vec();
        l.resize(total - 2, b'x');
        l.extend_from_slice(b"\r\n");
        l
    };
    let long_mail = |n: usize| format!("MAIL FROM:<{}@b.test>\r\n", "a".repeat(n)).into_bytes();
    case(
        &mx.server,
        "NOOP of exactly 2048 octets",
        padded("NOOP ", 2048),
        250,
    );
    case(
        &mx.server,
        "NOOP one octet over",
        padded("NOOP ", 2049),
        500,
    );
    case(&mx.server, "5000-octet NOOP", padded("NOOP ", 5000), 500);
    case(&mx.server, "5000-octet MAIL FROM", long_mail(5000), 500);
    case(
        &mx.server,
        "100000-octet MAIL FROM",
        long_mail(100_000),
        500,
    );
    case(&mx.server, "5000 octets of junk", padded("", 5000), 500);
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 4. Oversized messages.
// ---------------------------------------------------------------------------

/// Guards "oversized messages get a clear SMTP reply" (RFC 1870, RFC 3030):
/// SIZE over the limit is refused at MAIL with 552 5.3.4; DATA and BDAT over
/// the limit are drained and refused with 552 5.3.4, and the same session
/// carries on; nothing oversized is queued.
#[test]
fn oversized_messages_get_552_and_the_session_continues() {
    let mx = start("[limits]\nmax_message_size = 70000\n");
    let mut c = Client::connect(mx.server.smtp());
    let ehlo = c.ehlo("client.test");
    assert!(ehlo.text.contains("SIZE 70000"), "{}", ehlo.text);

    // Declared size.
    expect(&c.cmd("MAIL FROM:<a@b.test> SIZE=70001", 552), 552, "5.3.4");
    c.cmd("MAIL FROM:<a@b.test> SIZE=70000", 250);
    c.cmd("RSET", 250);

    // DATA over the limit: refused after the terminator, not before.
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() <= 80_000 {
        body.extend_from_slice(&[b'x'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    expect(&c.data(&body), 552, "5.3.4");
    c.cmd("NOOP", 250);
    let first = transaction(&mut c, "ok@example.test");

    // One BDAT chunk over the limit.
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    c.send(b"BDAT 70001 LAST\r\n");
    c.send(&vec![b'y'; 70001]);
    expect(&c.read_reply(), 552, "5.3.4");
    c.cmd("NOOP", 250);

    // Chunks that add up to more than the limit.
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    c.send(b"BDAT 40000\r\n");
    c.send(&vec![b'z'; 40000]);
    expect(&c.read_reply(), 250, "2.0.0");
    c.send(b"BDAT 40000 LAST\r\n");
    c.send(&vec![b'z'; 40000]);
    expect(&c.read_reply(), 552, "5.3.4");
    // The refused transaction is gone.
    expect(&c.cmd("RCPT TO:<x@example.test>", 503), 503, "5.5.1");

    // A BDAT message within the limit still works on the same session.
    c.cmd("MAIL FROM:<a@b.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    let msg = b"Subject: chunked\r\n\r\nsmall\r\n";
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(msg);
    let r = c.read_reply();
    expect(&r, 250, "2.0.0");
    let second = queued_id(&r);
    c.cmd("QUIT", 221);

    let ids: Vec<_> = queue(&mx.server)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [first, second]);
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 5. Too many recipients.
// ---------------------------------------------------------------------------

/// Guards "never a lost message" under the recipient limit (RFC 5321
/// §4.5.3.1.10): past `max_recipients` each RCPT gets 452 4.5.3 (the client
/// retries those later) and the message is still accepted for the first 100.
#[test]
fn recipients_past_the_limit_get_452_and_the_rest_is_accepted() {
    let mx = start("[limits]\nmax_recipients = 100\n");
    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<a@b.test>", 250);
    for i in 0..100 {
        c.cmd(&format!("RCPT TO:<u{i}@example.test>"), 250);
    }
    expect(&c.cmd("RCPT TO:<u100@example.test>", 452), 452, "4.5.3");
    expect(&c.cmd("RCPT TO:<u101@example.test>", 452), 452, "4.5.3");
    let r = c.data(b"Subject: many\r\n\r\nhi");
    expect(&r, 250, "2.0.0");
    let id = queued_id(&r);
    c.cmd("QUIT", 221);

    let rcpts = queued_recipients(&mx.server, &id);
    let want: Vec<String> = (0..100).map(|i| format!("u{i}@example.test")).collect();
    assert_eq!(rcpts, want);
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 6. Talking before the greeting.
// ---------------------------------------------------------------------------

/// Guards the pre-greeting check (RFC 5321 §4.3.1: the client waits for the
/// 220): a client that writes before the greeting — at once, or a moment
/// later but still within `greet_pause` — gets 554 and is closed, which is
/// logged and counted; a patient client is served.
///
/// Regression test: a spurious readiness wake-up of the socket ended the
/// pause at once, so clients were greeted early and pre-greeters slipped
/// through (the "a moment later" row failed every time, the others now and
/// then).
#[test]
fn talking_before_the_greeting_is_refused() {
    let mx = start(&format!("[limits]\ngreet_pause = \"3s\"\n{METRICS}"));
    let rows: &[(&str, u64, &[u8])] = &[
        ("EHLO at once", 0, b"EHLO x\r\n"),
        ("HELO at once", 0, b"HELO x\r\n"),
        (
            "a whole pipelined transaction",
            0,
            b"HELO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n",
        ),
        ("half a line", 0, b"EH"),
        ("binary", 0, &[0x16, 0x03, 0x01, 0x00]),
        // Well inside the 3s pause: the greeting must not have come yet.
        ("EHLO a moment later", 200, b"EHLO x\r\n"),
    ];
    for (name, wait_ms, bytes) in rows {
        let mut c = Client::connect_raw(mx.server.smtp());
        std::thread::sleep(Duration::from_millis(*wait_ms));
        c.send(bytes);
        let r = c.read_reply();
        assert_eq!(r.code, 554, "{name}: {}", r.text);
        expect(&r, 554, "5.5.1");
        assert_closed(&mut c);
    }
    let logged = log_count(
        &mx.server,
        "client talked before the greeting; rejected",
        rows.len(),
    );
    assert_eq!(logged, rows.len(), "{:?}", mx.server.logs());
    let refused = r#"portcullis_connections_refused_total{reason="pregreet"}"#;
    let n = rows.len() as f64;
    assert_eq!(metric_reaches(&mx.server, refused, n), n);
    assert!(queue(&mx.server).is_empty());
    assert_still_serves(&mx.server);
    assert_eq!(metric(&mx.server, refused), n);
}

// ---------------------------------------------------------------------------
// 7. Slow clients.
// ---------------------------------------------------------------------------

/// Guards "a clear SMTP reply" for idle clients (RFC 5321 §4.5.3.2): past
/// `command_timeout` or `data_timeout` the server says 421 4.4.2 and closes;
/// a message cut off mid-DATA is not queued.
#[test]
fn idle_clients_get_421_and_half_sent_data_is_not_queued() {
    let mx = start("[limits]\ncommand_timeout = \"1s\"\ndata_timeout = \"1s\"\n");
    #[track_caller]
    fn case(server: &Portcullis, name: &str, script: &[(&str, u16)], partial: &[u8]) {
        let mut c = Client::connect(server.smtp());
        for (line, code) in script {
            c.cmd(line, *code);
        }
        c.send(partial);
        let r = c
            .try_read_reply()
            .unwrap_or_else(|| panic!("{name}: closed without a reply"));
        assert_eq!(r.code, 421, "{name}: {}", r.text);
        expect(&r, 421, "4.4.2");
        assert_closed(&mut c);
    }
    case(&mx.server, "idle after the greeting", &[], b"");
    case(
        &mx.server,
        "idle mid-transaction",
        &[("EHLO x", 250), ("MAIL FROM:<a@b.test>", 250)],
        b"",
    );
    case(
        &mx.server,
        "half a command line",
        &[("EHLO x", 250)],
        b"MAIL FROM:<a@b",
    );
    case(
        &mx.server,
        "stops mid-DATA",
        &[
            ("EHLO x", 250),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<u@example.test>", 250),
            ("DATA", 354),
        ],
        b"Subject: cut off\r\n\r\nhalf a mess",
    );
    case(
        &mx.server,
        "stops mid-BDAT",
        &[
            ("EHLO x", 250),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<u@example.test>", 250),
        ],
        b"BDAT 1000 LAST\r\nSubject: cut off\r\n\r\nhalf",
    );
    assert!(queue(&mx.server).is_empty(), "a cut-off message was queued");
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 8. Connection limits.
// ---------------------------------------------------------------------------

/// Guards the per-IP connection cap: the third concurrent connection from
/// one IP gets 421 4.7.0 and is closed, another IP is still served, and a
/// freed slot is served again.
#[test]
fn per_ip_connection_limit_refuses_with_421() {
    let mx = start("[limits]\nmax_connections_per_ip = 2\nmax_connections = 10\n");
    let addr = mx.server.smtp();
    let mut c1 = Client::connect(addr);
    let _c2 = Client::connect(addr);
    let mut c3 = Client::connect_raw(addr);
    expect(&c3.read_reply(), 421, "4.7.0");
    assert_closed(&mut c3);

    // Another client address is not affected by 127.0.0.1's count.
    let other = connect_from("127.0.0.2", addr);
    let greeting = read_line_raw(&other);
    assert!(greeting.starts_with("220 "), "{greeting}");
    drop(other);

    c1.cmd("QUIT", 221);
    assert_closed(&mut c1);
    let mut c = connect_when_free(addr);
    c.ehlo("client.test");
    transaction(&mut c, "ok@example.test");
    c.cmd("QUIT", 221);
}

/// Guards the total connection cap: with `max_connections = 3` the fourth
/// concurrent connection, from any IP, gets 421 4.7.0 and is closed; a freed
/// slot is served again.
#[test]
fn total_connection_limit_refuses_with_421() {
    let mx = start("[limits]\nmax_connections = 3\nmax_connections_per_ip = 10\n");
    let addr = mx.server.smtp();
    let mut c1 = Client::connect(addr);
    let _c2 = Client::connect(addr);
    let _c3 = Client::connect(addr);
    let mut c4 = Client::connect_raw(addr);
    expect(&c4.read_reply(), 421, "4.7.0");
    assert_closed(&mut c4);
    let other = connect_from("127.0.0.2", addr);
    let refused = read_line_raw(&other);
    assert!(refused.starts_with("421 4.7.0 "), "{refused}");
    assert!(read_to_eof(&other).is_empty());

    c1.cmd("QUIT", 221);
    assert_closed(&mut c1);
    let mut c = connect_when_free(addr);
    c.ehlo("client.test");
    transaction(&mut c, "ok@example.test");
    c.cmd("QUIT", 221);
}

// ---------------------------------------------------------------------------
// 9. Error limit.
// ---------------------------------------------------------------------------

/// Guards `max_errors` (RFC 5321 §4.3.2 lets a server close): the third
/// error reply is followed by 421 4.7.0 and the connection closes, whatever
/// kind of errors they were.
#[test]
fn too_many_errors_close_the_session_with_421() {
    let mx = start("[limits]\nmax_errors = 3\n");
    #[track_caller]
    fn case(server: &Portcullis, name: &str, script: &[(&str, u16)]) {
        let mut c = Client::connect(server.smtp());
        for (line, code) in script {
            let r = c.cmd(line, *code);
            assert_eq!(r.code, *code, "{name}: {line}");
        }
        let r = c
            .try_read_reply()
            .unwrap_or_else(|| panic!("{name}: closed without 421"));
        expect(&r, 421, "4.7.0");
        assert_closed(&mut c);
    }
    case(
        &mx.server,
        "unknown commands",
        &[("FOO", 500), ("BAR", 500), ("BAZ", 500)],
    );
    case(
        &mx.server,
        "out of sequence",
        &[
            ("MAIL FROM:<a@b.test>", 503),
            ("RCPT TO:<u@example.test>", 503),
            ("DATA", 503),
        ],
    );
    case(
        &mx.server,
        "mixed, with good commands between",
        &[
            ("EHLO x", 250),
            ("MAIL FROM:<<<>>>", 501),
            ("NOOP", 250),
            ("EXPN staff", 502),
            ("MAIL FROM:<a@b.test>", 250),
            ("RCPT TO:<u@elsewhere.test>", 554),
        ],
    );
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 10. Garbage.
// ---------------------------------------------------------------------------

/// Guards "malformed commands get a clear SMTP reply, never a crash": NUL
/// and 8-bit bytes, empty lines, broken addresses and bare CRs each get a
/// 5xx reply, open no transaction, and the session stays usable.
#[test]
fn garbage_commands_get_5xx_and_the_session_stays_usable() {
    let mx = start("");
    #[track_caller]
    fn case(
        server: &Portcullis,
        name: &str,
        setup: &[&str],
        input: &[u8],
        code: u16,
        enhanced: &str,
    ) {
        let mut c = Client::connect(server.smtp());
        c.ehlo("client.test");
        for line in setup {
            c.cmd(line, 250);
        }
        c.send(input);
        let r = c
            .try_read_reply()
            .unwrap_or_else(|| panic!("{name}: connection closed"));
        assert_eq!(r.code, code, "{name}: {}", r.text);
        expect(&r, code, enhanced);
        // Still in sync: exactly one reply for the garbage, then normal service.
        c.cmd("RSET", 250);
        transaction(&mut c, "ok@example.test");
        c.cmd("QUIT", 221);
    }
    const MAIL: &[&str] = &["MAIL FROM:<a@b.test>"];
    case(&mx.server, "NUL bytes", &[], b"\0\0\0\0\r\n", 500, "5.5.1");
    case(
        &mx.server,
        "NUL inside a command",
        &[],
        b"NO\0OP\r\n",
        500,
        "5.5.1",
    );
    case(
        &mx.server,
        "NUL inside an address",
        &[],
        b"MAIL FROM:<a\0b@b.test>\r\n",
        501,
        "5.1.7",
    );
    case(
        &mx.server,
        "8-bit bytes",
        &[],
        b"\xff\xfe\xfd\x80\r\n",
        500,
        "5.5.1",
    );
    case(
        &mx.server,
        "8-bit address without SMTPUTF8",
        &[],
        "MAIL FROM:<jörg@b.test>\r\n".as_bytes(),
        553,
        "5.6.7",
    );
    case(
        &mx.server,
        "invalid UTF-8 address",
        &[],
        b"MAIL FROM:<j\xffrg@b.test>\r\n",
        553,
        "5.6.7",
    );
    case(
        &mx.server,
        "8-bit EHLO name",
        &[],
        b"EHLO h\xe9llo\r\n",
        501,
        "5.5.4",
    );
    case(&mx.server, "empty line (bare LF)", &[], b"\n", 500, "5.5.1");
    case(&mx.server, "line of only CRLF", &[], b"\r\n", 500, "5.5.1");
    case(&mx.server, "only spaces", &[], b"    \r\n", 500, "5.5.1");
    case(
        &mx.server,
        "MAIL FROM:<<<>>>",
        &[],
        b"MAIL FROM:<<<>>>\r\n",
        501,
        "5.1.7",
    );
    case(
        &mx.server,
        "RCPT TO:<a@b@c>",
        MAIL,
        b"RCPT TO:<a@b@c>\r\n",
        501,
        "5.1.3",
    );
    case(
        &mx.server,
        "RCPT without brackets",
        MAIL,
        b"RCPT TO:u@example.test\r\n",
        501,
        "5.5.4",
    );
    case(
        &mx.server,
        "bare CR inside a command",
        &[],
        b"NOOP\rRSET\r\n",
        500,
        "5.5.2",
    );
    case(
        &mx.server,
        "bare CR hiding a second command",
        &[],
        b"MAIL FROM:<a@b.test>\rRCPT TO:<u@example.test>\r\n",
        500,
        "5.5.2",
    );
    case(
        &mx.server,
        "TLS ClientHello on the plain port",
        &[],
        b"\x16\x03\x01\x00\x2e\x01\x00\x00\x2a\x03\x03\r\n",
        500,
        "5.5.1",
    );
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 11. TLS garbage.
// ---------------------------------------------------------------------------

/// Guards "bad input never crashes the server" at the TLS layer: non-TLS
/// bytes (or a stalled handshake) after STARTTLS's 220 drop that connection
/// without any SMTP reply in plaintext, are counted in
/// `portcullis_tls_handshake_failures_total`, and the next connection
/// (including a real STARTTLS) works.
#[test]
fn garbage_instead_of_a_tls_handshake_drops_only_that_connection() {
    let mx = start(&format!(
        "[limits]\ntls_handshake_timeout = \"2s\"\n{METRICS}"
    ));
    let rows: &[(&str, &[u8])] = &[
        (
            "plaintext SMTP",
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.test>\r\n",
        ),
        ("binary junk", &[0xff; 64]),
        (
            "a truncated TLS record, then silence",
            b"\x16\x03\x01\x02\x00\x01\x00",
        ),
    ];
    for (name, bytes) in rows {
        let mut c = Client::connect(mx.server.smtp());
        c.ehlo("x");
        c.cmd("STARTTLS", 220);
        c.send(bytes);
        let rest = read_to_eof(c.socket());
        assert!(
            !rest.windows(4).any(|w| w == b"250 " || w == b"503 "),
            "{name}: the server answered in plaintext: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    let failures = "portcullis_tls_handshake_failures_total";
    assert_eq!(
        metric_reaches(&mx.server, failures, rows.len() as f64),
        rows.len() as f64
    );

    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("x");
    let mut t = c.starttls(mx.pki.client_config(), HOST);
    t.ehlo("x");
    transaction(&mut t, "ok@example.test");
    t.cmd("QUIT", 221);
    assert_eq!(
        queue(&mx.server).len(),
        1,
        "plaintext after STARTTLS was executed"
    );
    assert_still_serves(&mx.server);
}

// ---------------------------------------------------------------------------
// 12. Anti-relay.
// ---------------------------------------------------------------------------

/// Guards "no open relay": an untrusted client may send only to
/// `accepted_domains`; the %-hack stays a local part at our domain, a source
/// route does not smuggle a foreign domain, and look-alike domains are
/// foreign.
#[test]
fn untrusted_clients_cannot_relay() {
    let mx = start("");
    #[track_caller]
    fn case(server: &Portcullis, rcpt: &str, code: u16, enhanced: &str, queued_as: Option<&str>) {
        let mut c = Client::connect(server.smtp());
        c.ehlo("client.test");
        c.cmd("MAIL FROM:<a@b.test>", 250);
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"), code);
        expect(&r, code, enhanced);
        match queued_as {
            Some(addr) => {
                let r = c.data(b"Subject: relay test\r\n\r\nhi");
                expect(&r, 250, "2.0.0");
                assert_eq!(queued_recipients(server, &queued_id(&r)), [addr], "{rcpt}");
            }
            None => expect(&c.cmd("DATA", 554), 554, "5.5.1"),
        }
        c.cmd("QUIT", 221);
    }
    let s = &mx.server;
    case(s, "u@elsewhere.test", 554, "5.7.1", None);
    case(
        s,
        "u%elsewhere.test@example.test",
        250,
        "2.1.5",
        Some("u%elsewhere.test@example.test"),
    );
    case(s, "@example.test:u@elsewhere.test", 554, "5.7.1", None);
    case(
        s,
        "@elsewhere.test:u@example.test",
        250,
        "2.1.5",
        Some("u@example.test"),
    );
    case(s, "u@sub.example.test", 554, "5.7.1", None);
    case(s, "u@notexample.test", 554, "5.7.1", None);
    case(s, "u@example.test.elsewhere.test", 554, "5.7.1", None);
    case(s, "u@EXAMPLE.TEST", 250, "2.1.5", Some("u@example.test"));
    let before = queue(s).len();
    assert_eq!(before, 3);
    assert!(
        queue(s).iter().all(|m| m["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["address"].as_str().unwrap().ends_with("@example.test"))),
        "a foreign recipient was queued"
    );
    assert_still_serves(s);
}

/// Guards the other half of the relay rule: a client in `trusted_networks`
/// may relay to any domain.
#[test]
fn trusted_networks_may_relay() {
    let mx = start("trusted_networks = [\"127.0.0.0/8\"]\n");
    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<a@b.test>", 250);
    expect(&c.cmd("RCPT TO:<u@elsewhere.test>", 250), 250, "2.1.5");
    let r = c.data(b"Subject: outbound\r\n\r\nhi");
    expect(&r, 250, "2.0.0");
    let id = queued_id(&r);
    c.cmd("QUIT", 221);
    assert_eq!(queued_recipients(&mx.server, &id), ["u@elsewhere.test"]);
    assert_still_serves(&mx.server);
}
