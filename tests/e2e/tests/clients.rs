//! Real SMTP clients against the real binary: lettre (STARTTLS and implicit
//! TLS), Python's smtplib (STARTTLS, SMTP_SSL, TLS 1.2 forced, TLS 1.1
//! refused), the `submission` role's TLS requirement, the implicit-TLS
//! handshake timeout, the Prometheus counters of a TLS session, and the
//! EHLO extension list the README promises.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lettre::message::Message;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use portcullis_test_support::server::{Portcullis, TlsServer, metric};
use portcullis_test_support::smtp::{Client, queued_id};
use serde_json::Value;

const TLS_NAME: &str = "mx.example.test";

/// The queue id in a lettre response ("2.0.0 Ok: queued as ID").
fn lettre_queue_id(response: &lettre::transport::smtp::response::Response) -> String {
    let text: Vec<&str> = response.message().collect();
    let text = text.join("\n");
    text.rsplit("queued as ")
        .next()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 16)
        .unwrap_or_else(|| panic!("no queue id in {text:?}"))
}

fn lettre_message(subject: &str) -> Message {
    Message::builder()
        .from("alice@sender.test".parse().unwrap())
        .to("bob@example.test".parse().unwrap())
        .subject(subject)
        .body(String::from("Hello from lettre.\r\n"))
        .expect("build message")
}

/// lettre TLS parameters trusting only the test CA, verifying mx.example.test.
fn lettre_tls(mx: &TlsServer) -> TlsParameters {
    TlsParameters::builder(TLS_NAME.to_string())
        .add_root_certificate(Certificate::from_pem(mx.pki.ca_pem().as_bytes()).expect("CA PEM"))
        .build_rustls()
        .expect("rustls parameters")
}

/// Sends one message with lettre to `addr` using `tls`; returns the response.
fn lettre_send(
    addr: SocketAddr,
    tls: Tls,
    subject: &str,
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(tls)
        .hello_name(ClientId::Domain("lettre.client.test".into()))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mailer.send(lettre_message(subject)))
}

/// The result of one run of tests/e2e/py/smtplib_client.py.
fn smtplib(mx: &TlsServer, mode: &str, role: &str, max_tls: &str, api: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/smtplib_client.py");
    let addr = mx.server.addr(role);
    let out = Command::new("python3")
        .arg(&script)
        .arg(mode)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&mx.ca)
        .arg(TLS_NAME)
        .arg(max_tls)
        .arg(api)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "smtplib output {e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The queue id in a smtplib result's DATA reply.
fn smtplib_queue_id(result: &Value) -> String {
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["code"], 250, "{result}");
    let reply = result["reply"].as_str().unwrap();
    let id = reply
        .rsplit("queued as ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(id.len(), 16, "{reply}");
    id
}

/// The value of the sample named exactly `series` (name plus labels).
fn sample(page: &str, series: &str) -> f64 {
    metric(page, series).unwrap_or_else(|| panic!("no sample {series} in:\n{page}"))
}

/// Polls the metrics until `series` equals `want` (counters are bumped just
/// after the socket closes, so a client can see EOF first).
fn wait_sample(server: &Portcullis, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = server.metrics_page();
        if sample(&page, series) == want || Instant::now() > deadline {
            assert_eq!(sample(&page, series), want, "{series}");
            return page;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The extension keywords of an EHLO reply (first line, the greeting, dropped).
fn extensions(ehlo: &str) -> Vec<String> {
    ehlo.lines()
        .skip(1)
        .map(|l| l.get(4..).unwrap_or("").to_string())
        .collect()
}

/// Promise: a STARTTLS client that requires TLS (lettre, `Tls::Required`,
/// verifying mx.example.test under the test CA) gets its message accepted
/// with a queue id, and the stored Received header records ESMTPS and the
/// negotiated TLS 1.3.
#[test]
fn lettre_starttls_required_is_accepted_and_traced_as_esmtps_tls13() {
    let mx = TlsServer::start(&["smtp"], "");
    let response = lettre_send(
        mx.server.smtp(),
        Tls::Required(lettre_tls(&mx)),
        "lettre starttls",
    )
    .expect("lettre send");
    assert_eq!(u16::from(response.code()), 250, "{response:?}");
    let id = lettre_queue_id(&response);

    let list = mx.server.queue_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["sender"], "<alice@sender.test>");
    assert_eq!(list[0]["recipients"][0]["address"], "bob@example.test");

    let headers = mx.server.stored_headers(&id);
    assert!(
        headers.starts_with("Received: from lettre.client.test ([127.0.0.1])"),
        "{headers}"
    );
    assert!(
        headers.contains("(using TLSv1.3 with cipher TLS13_"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("with ESMTPS id {id}")),
        "{headers}"
    );
    assert!(headers.contains("Subject: lettre starttls"), "{headers}");
}

/// Promise: the `submissions` listener speaks TLS from the first byte (RFC
/// 8314): no plaintext greeting before the handshake, the 220 after it, no
/// STARTTLS offered inside TLS, and lettre with `Tls::Wrapper` gets a message
/// accepted (recipient in accepted_domains), traced as ESMTPS.
#[test]
fn lettre_implicit_tls_on_submissions_is_accepted() {
    // Loopback trusted: without AUTH, the submission listeners take
    // mail only from trusted networks (AUTH: submission*.rs).
    let mx = TlsServer::start_trusted(&["submissions"], "");
    let addr = mx.server.addr("submissions");

    // A raw socket sees nothing in plaintext, then the greeting inside TLS.
    let c = Client::connect_raw(addr);
    c.socket()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let mut sock: &TcpStream = c.socket();
    match sock.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence before the TLS handshake, got {other:?}"),
    }
    c.socket()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut t = c.into_tls(mx.pki.client_config(), TLS_NAME);
    let greeting = t.read_reply();
    assert_eq!(greeting.code, 220, "{}", greeting.text);
    assert!(
        greeting.text.contains("mx.example.test"),
        "{}",
        greeting.text
    );
    let ehlo = t.ehlo("raw.client.test");
    assert!(
        !extensions(&ehlo.text).iter().any(|e| e == "STARTTLS"),
        "{}",
        ehlo.text
    );
    t.cmd("QUIT", 221);

    let response = lettre_send(addr, Tls::Wrapper(lettre_tls(&mx)), "lettre wrapper")
        .expect("lettre send over implicit TLS");
    assert_eq!(u16::from(response.code()), 250, "{response:?}");
    let id = lettre_queue_id(&response);
    let list = mx.server.queue_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    let headers = mx.server.stored_headers(&id);
    assert!(
        headers.contains(&format!("with ESMTPS id {id}")),
        "{headers}"
    );
    assert!(headers.contains("(using TLSv1.3 with cipher "), "{headers}");
}

/// Promise: Python's smtplib (OpenSSL) interoperates: `SMTP` + `starttls`
/// with a verifying context and `send_message` succeeds, and so does
/// `SMTP_SSL` against the implicit-TLS listener; both messages are queued
/// with their subjects and ESMTPS traces.
#[test]
fn python_smtplib_starttls_and_smtp_ssl_are_accepted() {
    // Loopback trusted: without AUTH, the submission listeners take
    // mail only from trusted networks (AUTH: submission*.rs).
    let mx = TlsServer::start_trusted(&["smtp", "submissions"], "");

    let r = smtplib(&mx, "starttls", "smtp", "default", "sendmail");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["tls"], "TLSv1.3", "{r}");
    let list = mx.server.queue_list();
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let headers = mx.server.stored_headers(&id);
    assert!(
        headers.starts_with("Received: from py.client.test ([127.0.0.1])"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("with ESMTPS id {id}")),
        "{headers}"
    );
    assert!(
        headers.contains("Subject: smtplib starttls default"),
        "{headers}"
    );

    let r = smtplib(&mx, "ssl", "submissions", "default", "lowlevel");
    assert_eq!(r["tls"], "TLSv1.3", "{r}");
    let id2 = smtplib_queue_id(&r);
    let list = mx.server.queue_list();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().any(|m| m["id"] == id2.as_str()), "{list:?}");
    let headers = mx.server.stored_headers(&id2);
    assert!(
        headers.contains(&format!("with ESMTPS id {id2}")),
        "{headers}"
    );
    assert!(
        headers.contains("Subject: smtplib ssl default"),
        "{headers}"
    );
}

/// Promise: TLS 1.2 is still served (a client capped at TLS 1.2 gets its mail
/// accepted and the trace says TLSv1.2), TLS 1.1 is refused at the handshake
/// (the server offers TLS 1.2+ only), and a refused handshake does not stop
/// the server from serving the next connection.
#[test]
fn python_tls12_is_served_tls11_is_refused_and_service_continues() {
    let mx = TlsServer::start(&["smtp"], "");

    let r = smtplib(&mx, "starttls", "smtp", "1.2", "lowlevel");
    assert_eq!(r["tls"], "TLSv1.2", "{r}");
    let id = smtplib_queue_id(&r);
    let headers = mx.server.stored_headers(&id);
    assert!(headers.contains("(using TLSv1.2 with cipher "), "{headers}");
    assert!(
        headers.contains(&format!("with ESMTPS id {id}")),
        "{headers}"
    );

    let r = smtplib(&mx, "starttls", "smtp", "1.1", "lowlevel");
    assert_eq!(r["ok"], false, "TLS 1.1 must not be negotiated: {r}");
    assert_eq!(r["stage"], "starttls", "{r}");
    // The refusal is the server's: it read the TLS 1.1 ClientHello and failed
    // it as incompatible (rustls names the first missing TLS 1.2 feature, the
    // signature_algorithms extension, rather than the version).
    let failed = mx
        .server
        .wait_for_log("tls handshake failed", Duration::from_secs(10));
    assert!(failed.contains("peer is incompatible"), "{failed}");
    let page = wait_sample(&mx.server, "portcullis_tls_handshake_failures_total", 1.0);
    assert_eq!(
        sample(
            &page,
            r#"portcullis_tls_handshakes_total{version="TLSv1.2"}"#
        ),
        1.0
    );
    assert_eq!(mx.server.queue_list().len(), 1);

    // The next client is served normally.
    let r = smtplib(&mx, "starttls", "smtp", "default", "lowlevel");
    assert_eq!(r["tls"], "TLSv1.3", "{r}");
    let id2 = smtplib_queue_id(&r);
    let list = mx.server.queue_list();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().any(|m| m["id"] == id2.as_str()), "{list:?}");
}

/// Promise: the `submission` role (587) offers STARTTLS and refuses mail
/// before it with 530 5.7.0; after STARTTLS and a fresh EHLO the same
/// transaction is accepted and queued.
#[test]
fn submission_requires_starttls_before_mail() {
    // Loopback trusted: without AUTH, the submission listeners take
    // mail only from trusted networks (AUTH: submission*.rs).
    let mx = TlsServer::start_trusted(&["submission"], "");
    let mut c = Client::connect(mx.server.addr("submission"));
    let ehlo = c.ehlo("sub.client.test");
    assert!(
        extensions(&ehlo.text).iter().any(|e| e == "STARTTLS"),
        "{}",
        ehlo.text
    );
    let r = c.cmd("MAIL FROM:<alice@sender.test>", 530);
    assert!(r.text.starts_with("530 5.7.0 "), "{}", r.text);
    let r = c.cmd("RCPT TO:<bob@example.test>", 503);
    assert!(r.text.starts_with("503 5.5.1"), "{}", r.text);

    let mut t = c.starttls(mx.pki.client_config(), TLS_NAME);
    assert_eq!(t.tls_version(), "TLSv1_3");
    t.ehlo("sub.client.test");
    t.cmd("MAIL FROM:<alice@sender.test>", 250);
    t.cmd("RCPT TO:<bob@example.test>", 250);
    let r = t.data(b"Subject: after starttls\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    t.cmd("QUIT", 221);

    let list = mx.server.queue_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    let headers = mx.server.stored_headers(&id);
    assert!(
        headers.contains(&format!("with ESMTPS id {id}")),
        "{headers}"
    );
}

/// Promise: on the implicit-TLS listener a client that never starts the
/// handshake gets no plaintext greeting and is disconnected once
/// `[limits] tls_handshake_timeout` (1s here) expires, counted as a failed
/// handshake; the listener keeps serving.
#[test]
fn implicit_tls_plaintext_client_is_dropped_after_handshake_timeout() {
    let mx = TlsServer::start(
        &["submissions"],
        "[limits]\ntls_handshake_timeout = \"1s\"\n",
    );
    let addr = mx.server.addr("submissions");

    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("no disconnect within 15s: {e}"),
        }
    };
    let waited = started.elapsed();
    assert!(
        got.is_empty(),
        "server sent {:?} ({end})",
        String::from_utf8_lossy(&got)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "disconnected after {waited:?}"
    );
    mx.server
        .wait_for_log("tls handshake timed out", Duration::from_secs(5));
    let page = wait_sample(
        &mx.server,
        r#"portcullis_sessions_total{outcome="tls_failed"}"#,
        1.0,
    );
    assert_eq!(
        sample(&page, "portcullis_tls_handshake_failures_total"),
        1.0
    );

    // Still serving TLS clients.
    let mut t = Client::connect_tls(addr, mx.pki.client_config(), TLS_NAME);
    t.ehlo("after.client.test");
    t.cmd("QUIT", 221);
}

/// Promise: the Prometheus endpoint counts what happened: after one STARTTLS
/// session that delivered one message, the TLS 1.3 handshake counter is 1
/// (TLS 1.2: 0) and exactly one message is counted as accepted.
#[test]
fn metrics_count_one_starttls_session_and_one_message() {
    let mx = TlsServer::start(&["smtp"], "");
    let before = mx.server.metrics_page();
    assert_eq!(
        sample(
            &before,
            r#"portcullis_tls_handshakes_total{version="TLSv1.3"}"#
        ),
        0.0
    );
    assert_eq!(sample(&before, "portcullis_messages_accepted_total"), 0.0);

    let mut c = Client::connect(mx.server.smtp());
    c.ehlo("metrics.client.test");
    let mut t = c.starttls(mx.pki.client_config(), TLS_NAME);
    t.ehlo("metrics.client.test");
    t.cmd("MAIL FROM:<alice@sender.test>", 250);
    t.cmd("RCPT TO:<bob@example.test>", 250);
    let r = t.data(b"Subject: metrics\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    t.cmd("QUIT", 221);

    let page = wait_sample(
        &mx.server,
        r#"portcullis_sessions_total{outcome="quit"}"#,
        1.0,
    );
    assert_eq!(
        sample(
            &page,
            r#"portcullis_tls_handshakes_total{version="TLSv1.3"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"portcullis_tls_handshakes_total{version="TLSv1.2"}"#
        ),
        0.0
    );
    assert_eq!(sample(&page, "portcullis_messages_accepted_total"), 1.0);
    assert_eq!(
        sample(&page, "portcullis_tls_handshake_failures_total"),
        0.0
    );
}

/// Promise (README): EHLO advertises PIPELINING, SIZE n (the configured
/// limit), 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN and
/// STARTTLS; after STARTTLS the same list minus STARTTLS, and a second
/// STARTTLS is refused.
#[test]
fn ehlo_advertises_the_readme_extensions_and_drops_starttls_after_tls() {
    let mx = TlsServer::start(&["smtp"], "[limits]\nmax_message_size = 12345678\n");
    let mut c = Client::connect(mx.server.smtp());
    let ehlo = c.ehlo("ext.client.test");
    assert!(
        ehlo.text.starts_with("250-mx.example.test"),
        "{}",
        ehlo.text
    );
    let common = [
        "PIPELINING",
        "SIZE 12345678",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
    ];
    let exts = extensions(&ehlo.text);
    for want in common.iter().chain(&["STARTTLS"]) {
        assert!(
            exts.iter().any(|e| e == want),
            "{want} missing: {}",
            ehlo.text
        );
    }

    let mut t = c.starttls(mx.pki.client_config(), TLS_NAME);
    let ehlo = t.ehlo("ext.client.test");
    let exts = extensions(&ehlo.text);
    for want in common {
        assert!(
            exts.iter().any(|e| e == want),
            "{want} missing after TLS: {}",
            ehlo.text
        );
    }
    assert!(
        !exts.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS")),
        "STARTTLS offered inside TLS: {}",
        ehlo.text
    );
    let r = t.cmd("STARTTLS", 503);
    assert!(r.text.starts_with("503 5.5.1"), "{}", r.text);
    t.cmd("QUIT", 221);
}
