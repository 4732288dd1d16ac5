//! Submission against the real binary, part two: the mail clients of the
//! README (lettre over implicit TLS on `submissions`, Python's smtplib with
//! `starttls()` + `login()` on `submission`), SCRAM-SHA-256 with an
//! independent client, app passwords, the brute-force lockout across
//! sessions (per address and per user, from different loopback addresses)
//! and the per-user sending limits.

use std::net::IpAddr;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lettre::message::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use portcullis_test_support::scram::ScramClient;
use portcullis_test_support::server::{Portcullis, TlsServer, log_field, metric};
use portcullis_test_support::smtp::{Client, TlsStream, queued_id};
use serde_json::Value;

const TLS_NAME: &str = "mx.example.test";
/// base64 of "\0alice\0secret" and "\0alice\0wrong".
const PLAIN_OK: &str = "AGFsaWNlAHNlY3JldA==";
const PLAIN_BAD: &str = "AGFsaWNlAHdyb25n";

/// The binary with the three listeners; alice (password "secret") and
/// bulk (no sending limits) added through the CLI. Lockouts: 3 failures
/// per user, 4 per address, 100 ms first delay; limits: 2 messages per
/// hour and 2 recipients per message.
fn start() -> TlsServer {
    let mx = TlsServer::start(
        &["smtp", "submission", "submissions"],
        r#"[submission]
users_file = "{dir}/users"
max_auth_failures = 10
auth_failures_per_ip = 4
auth_failures_per_user = 3
auth_failure_delay = "100ms"
messages_per_hour = 2
recipients_per_message = 2
[submission.user_limits.bulk]
messages_per_hour = 0
recipients_per_message = 0
"#,
    );
    for (name, password) in [("alice", "secret"), ("bulk", "bulk-pw")] {
        let out = user(&mx.server, &["add", name], Some(&format!("{password}\n")));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The server looks at the file at most once a second.
    std::thread::sleep(Duration::from_millis(1100));
    mx
}

/// `portcullis user ARGS --config ...` with `stdin` piped in (or none).
fn user(server: &Portcullis, args: &[&str], stdin: Option<&str>) -> Output {
    server.cli_with_stdin(&[&["user"], args].concat(), stdin)
}

/// The value of the sample `series` (name with labels), 0 when absent.
fn sample(page: &str, series: &str) -> f64 {
    metric(page, series).unwrap_or(0.0)
}

/// A TLS session on `submissions` from the loopback address `source`,
/// after EHLO.
fn tls_from(mx: &TlsServer, source: &str) -> Client<TlsStream> {
    let source: IpAddr = source.parse().expect("source address");
    let raw = Client::connect_raw_from(mx.server.addr("submissions"), source);
    let mut c = raw.into_tls(mx.pki.client_config(), TLS_NAME);
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("auth.client.test");
    c
}

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

fn lettre_tls(mx: &TlsServer) -> TlsParameters {
    TlsParameters::builder(TLS_NAME.to_string())
        .add_root_certificate(Certificate::from_pem(mx.pki.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap()
}

fn message(to: &str) -> Message {
    Message::builder()
        .from("alice@example.test".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("submitted")
        .body(String::from("Hello.\r\n"))
        .unwrap()
}

fn queued(response: &lettre::transport::smtp::response::Response) -> String {
    let text: Vec<&str> = response.message().collect();
    text.join(" ")
        .rsplit("queued as ")
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// lettre with implicit TLS on `submissions` (the README's "465, SSL/TLS"),
/// with PLAIN and with LOGIN: accepted as ESMTPSA, relayed for alice.
#[test]
fn lettre_implicit_tls_on_submissions() {
    let mx = start();
    let addr = mx.server.addr("submissions");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(addr.port())
            .tls(Tls::Wrapper(lettre_tls(&mx)))
            .credentials(Credentials::new("alice".into(), "secret".into()))
            .authentication(vec![mechanism])
            .hello_name(ClientId::Domain("lettre.client.test".into()))
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let response = rt
            .block_on(mailer.send(message("carol@elsewhere.test")))
            .unwrap_or_else(|e| panic!("lettre {mechanism:?}: {e}"));
        let id = queued(&response);
        let detail = mx.server.cli_json(&["queue", "show", &id, "--json"]);
        let headers = detail["headers"].as_str().unwrap();
        assert!(
            headers.contains(&format!("with ESMTPSA id {id}")),
            "{headers}"
        );
        assert_eq!(detail["envelope"]["authenticated"], "alice", "{detail}");
    }
    // Wrong password: lettre reports the 535.
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(Tls::Wrapper(lettre_tls(&mx)))
        .credentials(Credentials::new("alice".into(), "nope".into()))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let err = rt
        .block_on(mailer.send(message("carol@elsewhere.test")))
        .expect_err("a wrong password is refused");
    assert!(err.to_string().contains("535"), "{err}");
}

/// Python's smtplib on `submission` (587): `starttls()` then `login()`,
/// with the password and with an app password made by `user app add`; the
/// log names the credential used.
#[test]
fn python_starttls_login_with_password_and_app_password() {
    let mx = start();
    let out = user(
        &mx.server,
        &["app", "add", "alice", "laptop", "--json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let app_password = made["password"].as_str().expect("password").to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let script = r#"
import smtplib, socket, ssl, sys
port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP("127.0.0.1", port, local_hostname="py.client.test", timeout=20)
s.ehlo()
assert not s.has_extn("auth"), "AUTH advertised before TLS"
# Verify the certificate for mx.example.test while dialling 127.0.0.1.
s._host = "mx.example.test"
s.starttls(context=ctx)
s.ehlo()
assert "SCRAM-SHA-256" in s.esmtp_features["auth"], s.esmtp_features["auth"]
code, _ = s.login(user, password)
assert code == 235, code
refused = s.sendmail("alice@example.test", ["dave@elsewhere.test"], b"Subject: py\r\n\r\nhi\r\n")
assert refused == {}, refused
s.quit()
print("ok")
"#;
    for password in ["secret", app_password.as_str()] {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(mx.server.addr("submission").port().to_string())
            .arg(&mx.ca)
            .arg("alice")
            .arg(password)
            .output()
            .expect("python3");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
            "python: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let logins = mx.server.wait_log_events("authenticated", 2);
    let via: Vec<&str> = logins
        .iter()
        .filter_map(|e| log_field(e, "via").as_str())
        .collect();
    assert_eq!(via, ["password", "app password laptop"], "{logins:?}");
    assert!(
        !mx.server.logs().iter().any(|l| l.contains(&app_password)),
        "an app password was logged"
    );
    // Revoked: the app password stops working, the password does not.
    assert!(
        user(&mx.server, &["app", "remove", "alice", "laptop"], None)
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", &app_password)),
        535,
    );
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
}

/// Runs a SCRAM-SHA-256 exchange for `user`/`password` on a new session;
/// returns the final reply, after checking the server's signature when the
/// server accepted the proof.
fn scram_login(mx: &TlsServer, user: &str, password: &str) -> (u16, String) {
    let mut c = tls_from(mx, "127.0.0.1");
    let mut client = ScramClient::new(user, password);
    let first = STANDARD.encode(client.client_first());
    let r = c.cmd(&format!("AUTH SCRAM-SHA-256 {first}"), 334);
    let server_first = STANDARD
        .decode(r.text[4..].trim())
        .expect("server-first is base64");
    let server_first = String::from_utf8(server_first).expect("UTF-8");
    let client_final = client.client_final(&server_first).expect("client-final");
    c.send(format!("{}\r\n", STANDARD.encode(client_final)).as_bytes());
    let r = c.read_reply();
    if r.code != 334 {
        return (r.code, r.text);
    }
    let server_final = STANDARD
        .decode(r.text[4..].trim())
        .expect("server-final is base64");
    client
        .verify_server_final(&String::from_utf8(server_final).expect("UTF-8"))
        .expect("the server proves it knows the secret");
    let r = c.cmd("", 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<erin@elsewhere.test>", 250);
    (r.code, r.text)
}

/// SCRAM-SHA-256 with an independent client: the password never crosses
/// the wire, the server proves it holds the secret, a wrong password and
/// an unknown user both fail at the proof (same exchange: no enumeration),
/// and a user from a users file without a SCRAM secret fails until the
/// password is set again.
#[test]
fn scram_sha_256_logins() {
    let mx = start();
    let (code, text) = scram_login(&mx, "alice", "secret");
    assert_eq!(code, 235, "{text}");
    let (code, text) = scram_login(&mx, "alice", "wrong");
    assert_eq!(code, 535, "{text}");
    assert!(text.starts_with("535 5.7.8"), "{text}");
    let (code, _) = scram_login(&mx, "nobody", "secret");
    assert_eq!(code, 535);
    // A users-file line in the old form (hash only).
    let path = mx.server.dir.path().join("users");
    let text = std::fs::read_to_string(&path).unwrap();
    let stripped: String = text
        .lines()
        .map(|l| match l.strip_prefix("alice:") {
            Some(rest) => format!("alice:{}\n", rest.split(':').next().unwrap()),
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(stripped, text);
    std::fs::write(&path, stripped).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _) = scram_login(&mx, "alice", "secret");
    assert_eq!(code, 535, "no SCRAM secret, no SCRAM login");
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    let hint = mx
        .server
        .wait_for_log("user has no SCRAM-SHA-256 secret", Duration::from_secs(5));
    assert!(hint.contains("alice"), "{hint}");
    assert!(
        user(&mx.server, &["passwd", "alice"], Some("secret\n"))
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (code, text) = scram_login(&mx, "alice", "secret");
    assert_eq!(code, 235, "{text}");
}

/// The brute-force defence across sessions. A user: three failures from
/// 127.0.0.2 in separate sessions, each answered later than the one before;
/// the third starts a lockout (535, then 421 4.7.0 and close); alice's
/// correct password from a new address (127.0.0.3) is refused with 421
/// without a check, while 127.0.0.1, where alice logged in before, still
/// works. An address: four failures from 127.0.0.4 for four different
/// users lock the address out; its next AUTH gets 421 at the command, with
/// no credentials sent. Logged and counted.
#[test]
fn lockouts_per_user_and_per_address_across_sessions() {
    let mx = start();
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    c.cmd("QUIT", 221);

    for attempt in 1..=3 {
        let mut c = tls_from(&mx, "127.0.0.2");
        c.send(format!("AUTH PLAIN {PLAIN_BAD}\r\n").as_bytes());
        let r = c.read_reply();
        assert_eq!(r.code, 535, "attempt {attempt}: {}", r.text);
        if attempt == 3 {
            let r = c.read_reply();
            assert!(
                r.text.starts_with("421 4.7.0") && r.text.contains("try again in 15 minutes"),
                "{}",
                r.text
            );
            assert!(c.is_closed());
        }
    }
    let failed = mx.server.wait_log_events("authentication failed", 3);
    let delays: Vec<u64> = failed
        .iter()
        .filter_map(|e| log_field(e, "delay_ms").as_u64())
        .collect();
    assert_eq!(delays, [100, 200, 400], "{failed:?}");
    let began = mx
        .server
        .wait_log_events("too many failed authentication attempts; lockout begins", 1);
    assert_eq!(log_field(&began[0], "scope"), "user", "{began:?}");
    assert_eq!(log_field(&began[0], "user"), "alice", "{began:?}");

    let mut c = tls_from(&mx, "127.0.0.3");
    c.send(format!("AUTH PLAIN {PLAIN_OK}\r\n").as_bytes());
    let r = c.read_reply();
    assert!(r.text.starts_with("421 4.7.0"), "{}", r.text);
    assert!(c.is_closed());
    // bulk is not locked out at that address.
    let mut c = tls_from(&mx, "127.0.0.3");
    c.cmd(&format!("AUTH PLAIN {}", plain("bulk", "bulk-pw")), 235);
    // alice's known address.
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);

    for (i, name) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
        let mut c = tls_from(&mx, "127.0.0.4");
        c.send(format!("AUTH PLAIN {}\r\n", plain(name, "guess")).as_bytes());
        assert_eq!(c.read_reply().code, 535);
        if i == 3 {
            let r = c.read_reply();
            assert!(r.text.starts_with("421 4.7.0"), "{}", r.text);
        }
    }
    // Refused at the command: the client never gets a 334.
    let mut c = tls_from(&mx, "127.0.0.4");
    c.send(b"AUTH PLAIN\r\n");
    let r = c.read_reply();
    assert!(r.text.starts_with("421 4.7.0"), "{}", r.text);
    assert!(c.is_closed());

    let metrics = mx.server.metrics_page();
    assert_eq!(
        sample(
            &metrics,
            "portcullis_smtp_auth_lockouts_total{scope=\"user\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "portcullis_smtp_auth_lockouts_total{scope=\"ip\"}"
        ),
        1.0
    );
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_locked_total"), 2.0);
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_failure_total"), 7.0);
    assert!(
        !mx.server.logs().iter().any(|l| l.contains("guess")),
        "a password was logged"
    );
}

/// Per-user limits: a third recipient is refused with 452 4.7.1 and the
/// message goes to the first two; the third message in the hour is refused
/// at MAIL FROM with 452 4.7.1; a user with an override is not limited.
#[test]
fn per_user_sending_limits() {
    let mx = start();
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<r1@elsewhere.test>", 250);
    c.cmd("RCPT TO:<r2@elsewhere.test>", 250);
    let r = c.cmd("RCPT TO:<r3@elsewhere.test>", 452);
    assert!(r.text.starts_with("452 4.7.1"), "{}", r.text);
    let r = c.data(b"Subject: one\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    let detail = mx.server.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(
        detail["envelope"]["recipients"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<r1@elsewhere.test>", 250);
    assert_eq!(c.data(b"Subject: two\r\n\r\nhi").code, 250);
    let r = c.cmd("MAIL FROM:<alice@example.test>", 452);
    assert!(
        r.text
            .starts_with("452 4.7.1 Sending limit of 2 messages per hour"),
        "{}",
        r.text
    );
    c.cmd("QUIT", 221);
    // The limit is the user's, not the session's.
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    c.cmd("MAIL FROM:<alice@example.test>", 452);
    c.cmd("QUIT", 221);
    // bulk has no limits.
    let mut c = tls_from(&mx, "127.0.0.1");
    c.cmd(&format!("AUTH PLAIN {}", plain("bulk", "bulk-pw")), 235);
    for _ in 0..3 {
        c.cmd("MAIL FROM:<bulk@example.test>", 250);
        for i in 0..3 {
            c.cmd(&format!("RCPT TO:<r{i}@elsewhere.test>"), 250);
        }
        assert_eq!(c.data(b"Subject: bulk\r\n\r\nhi").code, 250);
    }
    c.cmd("QUIT", 221);
    drop(c);
    // Session counters reach the metrics when the session ends, just after
    // its last reply: wait (bounded) for them.
    let series = "portcullis_user_limit_refusals_total{limit=\"messages_per_hour\"}";
    let mut metrics = mx.server.metrics_page();
    for _ in 0..50 {
        if sample(&metrics, series) >= 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        metrics = mx.server.metrics_page();
    }
    assert_eq!(sample(&metrics, series), 2.0, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "portcullis_user_limit_refusals_total{limit=\"recipients_per_message\"}"
        ),
        1.0
    );
}
