//! Authenticated submission against the real binary: users managed with
//! `portcullis user ...` (password on stdin), SMTP AUTH (RFC 4954) with
//! lettre (STARTTLS on `submission`), Python's smtplib (`SMTP_SSL` +
//! `login()` on `submissions`) and raw sockets (AUTH before TLS, bad
//! base64, wrong password, lockout, a sender the user does not own, relay
//! with and without AUTH); the Received header says ESMTPSA and the
//! envelope names the user.

use std::process::{Command, Output};
use std::time::Duration;

use lettre::message::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use portcullis_test_support::server::{Portcullis, TlsServer, metric};
use portcullis_test_support::smtp::{Client, queued_id};
use serde_json::Value;

const TLS_NAME: &str = "mx.example.test";
/// base64 of "\0alice\0secret" and "\0alice\0wrong".
const PLAIN_OK: &str = "AGFsaWNlAHNlY3JldA==";
const PLAIN_BAD: &str = "AGFsaWNlAHdyb25n";

/// The binary with smtp, submission and submissions listeners, the users
/// file `{dir}/users` and alice (password "secret") added through the CLI
/// while the server runs (it picks the file up without a restart).
fn start() -> TlsServer {
    let mx = TlsServer::start(
        &["smtp", "submission", "submissions"],
        "[submission]\nusers_file = \"{dir}/users\"\n",
    );
    let out = user(&mx.server, &["add", "alice"], Some("secret\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    mx
}

/// `portcullis user ARGS --config ...` with `stdin` piped in (or none).
fn user(server: &Portcullis, args: &[&str], stdin: Option<&str>) -> Output {
    server.cli_with_stdin(&[&["user"], args].concat(), stdin)
}

/// The sample `name` (with labels); panics when absent.
fn sample(page: &str, name: &str) -> f64 {
    metric(page, name).unwrap_or_else(|| panic!("{name} not in metrics"))
}

/// The CLI: add from stdin, duplicates and missing users refused, bad
/// names refused, app passwords made and revoked, list (table and JSON),
/// passwd, remove; the file is 0600 and holds no password.
#[test]
fn user_cli_manages_the_users_file() {
    let mx = start();
    let s = &mx.server;
    let out = user(s, &["add", "alice"], Some("other\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = user(s, &["passwd", "nobody"], Some("x\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user"));
    let out = user(s, &["add", "bad:name"], Some("x\n"));
    assert!(!out.status.success());
    let out = user(s, &["add", "carol"], Some(""));
    assert!(!out.status.success(), "an empty password is refused");
    assert!(user(s, &["add", "bob"], Some("pw-b\r\n")).status.success());
    let out = user(s, &["app", "add", "bob", "phone"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("app password phone of bob: "), "{shown}");
    assert!(
        !user(s, &["app", "add", "bob", "phone"], None)
            .status
            .success()
    );
    assert!(
        !user(s, &["app", "add", "nobody", "phone"], None)
            .status
            .success()
    );
    let out = user(s, &["list", "--json"], None);
    let users: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["scram"], true);
    assert_eq!(users[0]["app_passwords"], serde_json::json!([]));
    assert_eq!(users[1]["name"], "bob");
    assert_eq!(users[1]["app_passwords"][0]["label"], "phone");
    assert_eq!(users.as_array().map(Vec::len), Some(2));
    let out = user(s, &["list"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("bob ") && l.contains("yes") && l.contains("phone (")),
        "{text}"
    );
    assert!(
        user(s, &["app", "remove", "bob", "phone"], None)
            .status
            .success()
    );
    assert!(
        !user(s, &["app", "remove", "bob", "phone"], None)
            .status
            .success()
    );
    assert!(user(s, &["passwd", "bob"], Some("pw-2\n")).status.success());
    assert!(user(s, &["remove", "bob"], None).status.success());
    assert!(!user(s, &["remove", "bob"], None).status.success());
    let path = s.dir.path().join("users");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("alice:$argon2id$"), "{text}");
    assert!(!text.contains("secret"));
    // Made by the CLI: the directory's group may read it (the server's
    // group in a packaged install), others may not.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), std::fs::metadata(s.dir.path()).unwrap().gid());
}

/// lettre, STARTTLS on `submission`, with credentials: relays to an outside
/// domain; Received says ESMTPSA and the envelope names alice.
#[test]
fn lettre_starttls_with_credentials_is_accepted_as_esmtpsa() {
    let mx = start();
    let addr = mx.server.addr("submission");
    let tls = TlsParameters::builder(TLS_NAME.to_string())
        .add_root_certificate(Certificate::from_pem(mx.pki.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new("alice".into(), "secret".into()))
        .hello_name(ClientId::Domain("lettre.client.test".into()))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let message = Message::builder()
        .from("alice@example.test".parse().unwrap())
        .to("carol@elsewhere.test".parse().unwrap())
        .subject("submitted")
        .body(String::from("Hello.\r\n"))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = rt.block_on(mailer.send(message)).expect("lettre send");
    let text: Vec<&str> = response.message().collect();
    let id = text
        .join(" ")
        .rsplit("queued as ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    let detail = mx.server.cli_json(&["queue", "show", &id, "--json"]);
    let headers = detail["headers"].as_str().unwrap();
    assert!(
        headers.contains(&format!("with ESMTPSA id {id}")),
        "{headers}"
    );
    assert_eq!(detail["envelope"]["authenticated"], "alice", "{detail}");
    let metrics = mx.server.metrics_page();
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_success_total"), 1.0);
}

/// Python's smtplib: `SMTP_SSL` + `login()` on `submissions`.
#[test]
fn python_smtp_ssl_login_on_submissions() {
    let mx = start();
    let addr = mx.server.addr("submissions");
    let script = r#"
import json, smtplib, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)

class Named(smtplib.SMTP_SSL):
    # Verify the certificate for mx.example.test while dialling 127.0.0.1.
    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname="mx.example.test")

s = Named("127.0.0.1", port, context=ctx, timeout=20)
s.ehlo("py.client.test")
code, _ = s.login("alice", "secret")
msg = "From: alice@example.test\r\nTo: dave@elsewhere.test\r\nSubject: py\r\n\r\nhi\r\n"
s.sendmail("alice@example.test", ["dave@elsewhere.test"], msg)
s.quit()
try:
    s2 = Named("127.0.0.1", port, context=ctx, timeout=20)
    s2.login("alice", "nope")
    wrong = None
except smtplib.SMTPAuthenticationError as e:
    wrong = e.smtp_code
print(json.dumps({"login": code, "wrong": wrong}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(addr.port().to_string())
        .arg(&mx.ca)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["login"], 235, "{v}");
    assert_eq!(v["wrong"], 535, "{v}");
    let list = mx.server.cli_json(&["queue", "list", "--json"]);
    let id = list[0]["id"].as_str().unwrap();
    let detail = mx.server.cli_json(&["queue", "show", id, "--json"]);
    assert_eq!(detail["envelope"]["authenticated"], "alice");
    assert!(detail["headers"].as_str().unwrap().contains("with ESMTPSA"));
}

/// Raw sockets: AUTH is neither advertised nor accepted before TLS (530
/// 5.7.0 on `submission`); no mail without AUTH (530 5.7.0); bad base64
/// 501; wrong password 535; an unowned sender 553; relay after AUTH;
/// lockout after three failures (421); the failures are logged with the
/// user and never the password.
#[test]
fn raw_auth_refusals_lockout_and_relay() {
    let mx = start();
    let addr = mx.server.addr("submission");
    let tls = mx.pki.client_config();

    let mut c = Client::connect(addr);
    let ehlo = c.ehlo("raw.client.test");
    assert!(!ehlo.text.contains("AUTH"), "{}", ehlo.text);
    let r = c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 530);
    assert!(r.text.starts_with("530 5.7.0"), "{}", r.text);
    let mut c = c.starttls(tls.clone(), TLS_NAME);
    let ehlo = c.ehlo("raw.client.test");
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"), "{}", ehlo.text);
    // Unauthenticated after TLS: no mail at all (not even to our own
    // domains: that mail belongs on port 25, where it is verified).
    let r = c.cmd("MAIL FROM:<alice@example.test>", 530);
    assert!(
        r.text.starts_with("530 5.7.0 Authentication required"),
        "{}",
        r.text
    );
    c.cmd("RCPT TO:<bob@example.test>", 503);
    let r = c.cmd("AUTH PLAIN not*base64", 501);
    assert!(r.text.starts_with("501 5.5.2"), "{}", r.text);
    let r = c.cmd(&format!("AUTH PLAIN {PLAIN_BAD}"), 535);
    assert!(r.text.starts_with("535 5.7.8"), "{}", r.text);
    c.cmd("AUTH LOGIN", 334);
    c.cmd("YWxpY2U=", 334);
    c.cmd("c2VjcmV0", 235);
    c.cmd("AUTH LOGIN", 503);
    let r = c.cmd("MAIL FROM:<bob@example.test>", 553);
    assert!(r.text.starts_with("553 5.7.1"), "{}", r.text);
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<erin@elsewhere.test>", 250);
    let r = c.data(b"Subject: relayed\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    c.cmd("QUIT", 221);
    let detail = mx.server.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(detail["envelope"]["authenticated"], "alice");

    // Lockout: three failures end the session with 421 4.7.0.
    let mut c = Client::connect_tls(mx.server.addr("submissions"), tls, TLS_NAME);
    c.ehlo("raw.client.test");
    c.cmd(&format!("AUTH PLAIN {PLAIN_BAD}"), 535);
    c.cmd(&format!("AUTH PLAIN {PLAIN_BAD}"), 535);
    c.send(format!("AUTH PLAIN {PLAIN_BAD}\r\n").as_bytes());
    assert_eq!(c.read_reply().code, 535);
    let r = c.read_reply();
    assert!(r.text.starts_with("421 4.7.0"), "{}", r.text);
    assert!(c.is_closed());

    // The server logs before it replies, but the harness reads its stderr
    // on another thread: wait (bounded) for the fourth line to arrive.
    let failures = mx.server.wait_log_events("authentication failed", 4);
    assert_eq!(failures.len(), 4, "{failures:?}");
    // The user and the peer (from the session span) are on every line.
    assert!(
        failures
            .iter()
            .all(|e| (e["user"] == "alice" || e["fields"]["user"] == "alice")
                && e.to_string().contains("127.0.0.1")),
        "{failures:?}"
    );
    assert!(
        !mx.server.logs().iter().any(|l| l.contains("wrong")),
        "a password was logged"
    );
    let metrics = mx.server.metrics_page();
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_failure_total"), 4.0);
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_success_total"), 1.0);
}

/// The running server picks up `user passwd` and `user remove` without a
/// restart (the file is looked at on AUTH, at most once per second).
#[test]
fn password_changes_are_picked_up_without_restart() {
    let mx = start();
    let tls = mx.pki.client_config();
    let addr = mx.server.addr("submissions");
    let auth = |line: &str, code: u16| {
        let mut c = Client::connect_tls(addr, tls.clone(), TLS_NAME);
        c.ehlo("raw.client.test");
        c.cmd(line, code);
        c.cmd("QUIT", 221);
    };
    auth(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    let out = user(&mx.server, &["passwd", "alice"], Some("wrong\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1100));
    auth(&format!("AUTH PLAIN {PLAIN_OK}"), 535);
    auth(&format!("AUTH PLAIN {PLAIN_BAD}"), 235);
    assert!(
        user(&mx.server, &["remove", "alice"], None)
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(1100));
    auth(&format!("AUTH PLAIN {PLAIN_BAD}"), 535);
}
