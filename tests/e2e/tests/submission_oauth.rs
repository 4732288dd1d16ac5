//! SMTP AUTH with OAuth 2.0 bearer tokens against the real binary:
//! OAUTHBEARER (RFC 7628) and XOAUTH2 on `submission` (STARTTLS, lettre)
//! and `submissions` (implicit TLS, raw sockets and Python's smtplib), each
//! token checked by token introspection (RFC 7662) at a real HTTPS endpoint
//! on loopback (`idp.example.test`, resolved through a real DNS server on
//! loopback, certificate from the test CA given as `ca_file`).
//!
//! What must hold: an active token with the required scope authenticates
//! the user its `username` claim names (and only when that is the user the
//! client asked for); any other answer about the token is `334` with the
//! RFC 7628 JSON error challenge and then `535 5.7.8`; an endpoint that
//! cannot answer is `454 4.7.0`, not a credential failure (it counts
//! against the session and the address only); positive answers are
//! cached; tokens and the client secret never reach the logs. Without
//! `[submission.oauth]` neither mechanism is offered or accepted, and
//! `config check` refuses an introspection URL that is not https.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::message::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use portcullis_test_support::dns::{FailMode, TestDns};
use portcullis_test_support::https::{PolicyServer, Reply, Request};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{
    Portcullis, TlsServer, background_runtime, log_field, metric, portcullis_bin,
};
use portcullis_test_support::smtp::{Client, TlsStream, queued_id};
use serde_json::{Value, json};

/// The name the server's certificate is issued for.
const TLS_NAME: &str = "mx.example.test";
/// The identity provider's host name, in the test DNS.
const IDP_HOST: &str = "idp.example.test";
/// Where the identity provider listens (an address no other e2e test uses).
const IDP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 71);
/// Our client secret at the identity provider (only characters that form
/// urlencoding keeps as they are).
const SECRET: &str = "s3cret-Value_42";
/// The user every good token belongs to.
const ALICE: &str = "alice@example.test";

/// The DNS server and the identity provider (on their own runtime), the
/// test CA and the server configured for them.
struct World {
    server: Portcullis,
    idp: PolicyServer,
    _dns: TestDns,
    pki: TestPki,
    ca: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl World {
    /// The DNS server with `idp.example.test` → 127.0.0.71 (and
    /// `elsewhere.test` failing with SERVFAIL, so that relayed mail stays
    /// deferred in the queue instead of bouncing while the test looks at
    /// it), the introspection endpoint there, and the server with
    /// `[submission.oauth]` pointing at it, and no users file: token
    /// introspection alone turns AUTH on.
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        dns.add_a(IDP_HOST, IDP_IP);
        dns.fail("elsewhere.test", FailMode::ServFail);
        let pki = TestPki::new();
        let idp = rt.block_on(PolicyServer::start(IDP_IP, &pki.issue(&[IDP_HOST])));
        let dir = tempfile::tempdir().unwrap();
        // A trailing newline: the secret is read trimmed.
        std::fs::write(dir.path().join("oauth-secret"), format!("{SECRET}\n")).unwrap();
        let extra = format!(
            r#"[submission]
auth_failure_delay = "0s"
[submission.oauth]
introspection_url = "https://{IDP_HOST}:{port}/introspect"
client_id = "portcullis"
client_secret_file = "{{dir}}/oauth-secret"
required_scope = "mail.send"
cache_ttl = "60s"
timeout = "10s"
ca_file = "{{dir}}/ca.pem"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
"#,
            port = idp.port(),
            dns = dns.addr(),
        );
        let TlsServer { server, pki, ca } =
            TlsServer::start_in(dir, pki, &["smtp", "submission", "submissions"], &extra);
        World {
            server,
            idp,
            _dns: dns,
            pki,
            ca,
            rt,
        }
    }

    /// A TLS session on `submissions`, after EHLO.
    fn submissions(&self) -> Client<TlsStream> {
        let mut c = Client::connect_tls(
            self.server.addr("submissions"),
            self.pki.client_config(),
            TLS_NAME,
        );
        c.ehlo("raw.client.test");
        c
    }
}

/// An introspection answer: active, `user`, `scope`, valid for an hour.
fn active(user: &str, scope: &str) -> Reply {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Reply::json(&json!({"active": true, "username": user, "scope": scope, "exp": exp}).to_string())
}

/// The OAUTHBEARER client response, base64: GS2 header with authorization
/// identity `user` (if any), `auth=Bearer <token>`.
fn oauthbearer(user: Option<&str>, token: &str) -> String {
    let authzid = user.map(|u| format!("a={u}")).unwrap_or_default();
    STANDARD.encode(format!(
        "n,{authzid},\x01host={IDP_HOST}\x01auth=Bearer {token}\x01\x01"
    ))
}

/// The XOAUTH2 client response, base64.
fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The decoded JSON of a `334` error challenge.
#[track_caller]
fn challenge_json(reply: &str) -> Value {
    let b64 = reply
        .strip_prefix("334 ")
        .unwrap_or_else(|| panic!("not a 334 challenge: {reply}"));
    let bytes = STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("challenge {b64:?} is not base64: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "challenge {:?} is not JSON: {e}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// The RFC 7628 §3.2.2 error challenge the server sends for a bad token.
fn invalid_token_challenge() -> Value {
    json!({"status": "invalid_token", "schemes": "bearer", "scope": "mail.send"})
}

/// `line` refused as a bad token: `334` with the JSON error challenge, the
/// client's `%x01` (base64 `AQ==`), then `535 5.7.8`.
#[track_caller]
fn refused_with_challenge(c: &mut Client<TlsStream>, line: &str) {
    let r = c.cmd(line, 334);
    assert_eq!(challenge_json(&r.text), invalid_token_challenge());
    let r = c.cmd("AQ==", 535);
    assert!(r.text.starts_with("535 5.7.8"), "{}", r.text);
}

/// Checks one introspection request: a POST of exactly `token` (RFC 7662
/// §2.1) with our client credentials in HTTP Basic authentication, sent to
/// `idp.example.test` (SNI and Host).
#[track_caller]
fn assert_introspection(request: &Request, token: &str, port: u16) {
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(request.path, "/introspect", "{request:?}");
    assert_eq!(request.sni.as_deref(), Some(IDP_HOST), "{request:?}");
    assert_eq!(
        request.host.as_deref(),
        Some(format!("{IDP_HOST}:{port}").as_str()),
        "{request:?}"
    );
    let basic = format!("Basic {}", STANDARD.encode(format!("portcullis:{SECRET}")));
    assert_eq!(request.header("authorization"), Some(basic.as_str()));
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&request.body),
        format!("token={token}&token_type_hint=access_token")
    );
}

/// The sample `name` (with labels); panics when absent.
fn sample(page: &str, name: &str) -> f64 {
    metric(page, name).unwrap_or_else(|| panic!("{name} not in metrics:\n{page}"))
}

/// No log line carries any of `secrets`.
#[track_caller]
fn assert_not_logged(server: &Portcullis, secrets: &[&str]) {
    for line in server.logs() {
        for secret in secrets {
            assert!(!line.contains(secret), "{secret:?} logged: {line}");
        }
    }
}

/// The AUTH line of an EHLO reply, without the code.
#[track_caller]
fn auth_line(ehlo: &str) -> Option<String> {
    ehlo.lines()
        .map(|l| l.get(4..).unwrap_or(""))
        .find(|l| l.starts_with("AUTH"))
        .map(str::to_owned)
}

/// lettre, STARTTLS on `submission`, `Mechanism::Xoauth2`: the token is
/// introspected with our client credentials, alice relays to an outside
/// domain, and the envelope and the log name her.
#[test]
fn lettre_xoauth2_over_starttls_relays_as_the_token_user() {
    let w = World::new();
    let token = "ya29.alice-lettre_token";
    w.idp.set_reply(active(ALICE, "mail.send openid"));
    let addr = w.server.addr("submission");
    let tls = TlsParameters::builder(TLS_NAME.to_string())
        .add_root_certificate(Certificate::from_pem(w.pki.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(ALICE.into(), token.into()))
        .authentication(vec![Mechanism::Xoauth2])
        .hello_name(ClientId::Domain("lettre.client.test".into()))
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let message = Message::builder()
        .from(ALICE.parse().unwrap())
        .to("someone@elsewhere.test".parse().unwrap())
        .subject("bearer")
        .body(String::from("Hello.\r\n"))
        .unwrap();
    let response = w.rt.block_on(mailer.send(message)).expect("lettre send");
    assert_eq!(response.code().to_string(), "250");
    let text: Vec<&str> = response.message().collect();
    let id = text
        .join(" ")
        .rsplit("queued as ")
        .next()
        .unwrap()
        .trim()
        .to_string();
    let detail = w.server.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(detail["envelope"]["authenticated"], ALICE, "{detail}");
    assert_eq!(detail["entry"]["sender"], format!("<{ALICE}>"), "{detail}");
    let headers = detail["headers"].as_str().unwrap();
    assert!(
        headers.contains(&format!("with ESMTPSA id {id}")),
        "{headers}"
    );

    let log = w.idp.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_introspection(&log[0], token, w.idp.port());

    let ok = w.server.wait_log_events("authenticated", 1);
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(log_field(&ok[0], "user"), ALICE);
    assert_eq!(log_field(&ok[0], "mechanism"), "XOAUTH2");
    assert_eq!(log_field(&ok[0], "via"), "bearer token");
    assert_not_logged(&w.server, &[token, SECRET]);
    let metrics = w.server.metrics_page();
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_success_total"), 1.0);
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_failure_total"), 0.0);
}

/// Raw sockets on `submissions`, OAUTHBEARER: a good token (initial
/// response or after an empty `334`) authenticates alice, who relays but
/// may not send as bob; an inactive token, a token of bob's for alice, a
/// token without the required scope and an expired token are each `334`
/// with the JSON challenge, then `535 5.7.8`; an endpoint answering 500 or
/// non-JSON is `454 4.7.0` and the session goes on; a good token is
/// answered from the cache the second time; the metrics count exactly that.
#[test]
fn raw_oauthbearer_success_refusals_and_endpoint_failures() {
    let w = World::new();
    let port = w.idp.port();

    // Offered after TLS only.
    let mut plain = Client::connect(w.server.addr("submission"));
    let ehlo = plain.ehlo("raw.client.test");
    assert_eq!(auth_line(&ehlo.text), None, "{}", ehlo.text);
    let r = plain.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(None, "t")), 530);
    assert!(r.text.starts_with("530 5.7.0"), "{}", r.text);
    plain.cmd("QUIT", 221);
    assert_eq!(w.idp.requests(), 0, "a token sent before TLS was checked");

    // Success with an initial response; then relay as alice only.
    let good = "good-token.alice";
    w.idp.push_reply(active(ALICE, "openid mail.send"));
    let mut c = Client::connect_tls(
        w.server.addr("submissions"),
        w.pki.client_config(),
        TLS_NAME,
    );
    let ehlo = c.ehlo("raw.client.test");
    assert_eq!(
        auth_line(&ehlo.text).as_deref(),
        Some("AUTH PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2"),
        "{}",
        ehlo.text
    );
    let r = c.cmd(
        &format!("AUTH OAUTHBEARER {}", oauthbearer(Some(ALICE), good)),
        235,
    );
    assert!(r.text.starts_with("235 2.7.0"), "{}", r.text);
    let r = c.cmd("MAIL FROM:<bob@example.test>", 553);
    assert!(r.text.starts_with("553 5.7.1"), "{}", r.text);
    c.cmd(&format!("MAIL FROM:<{ALICE}>"), 250);
    c.cmd("RCPT TO:<someone@elsewhere.test>", 250);
    let r = c.data(b"Subject: raw bearer\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    c.cmd("QUIT", 221);
    let detail = w.server.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(detail["envelope"]["authenticated"], ALICE, "{detail}");
    let log = w.idp.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_introspection(&log[0], good, port);

    // The same token again, without an initial response: from the cache.
    let mut c = w.submissions();
    let r = c.cmd("AUTH OAUTHBEARER", 334);
    assert_eq!(r.text.trim_end(), "334", "an empty challenge first");
    let r = c.cmd(&oauthbearer(None, good), 235);
    assert!(r.text.starts_with("235 2.7.0"), "{}", r.text);
    assert_eq!(w.idp.requests(), 1, "a cached token was introspected again");
    c.cmd("QUIT", 221);

    // Refusals, one session each (three failures would end a session).
    let refusals: [(&str, Reply, Option<&str>); 4] = [
        ("inactive-token", Reply::json(r#"{"active":false}"#), Some(ALICE)),
        ("bobs-token", active("bob@example.test", "mail.send"), Some(ALICE)),
        ("no-scope-token", active(ALICE, "openid mail.read"), None),
        (
            "expired-token",
            Reply::json(
                &json!({"active": true, "username": ALICE, "scope": "mail.send", "exp": 1_000_000_000})
                    .to_string(),
            ),
            Some(ALICE),
        ),
    ];
    for (token, reply, user) in &refusals {
        w.idp.push_reply(reply.clone());
        let mut c = w.submissions();
        refused_with_challenge(
            &mut c,
            &format!("AUTH OAUTHBEARER {}", oauthbearer(*user, token)),
        );
        // Not authenticated: no mail.
        let r = c.cmd(&format!("MAIL FROM:<{ALICE}>"), 530);
        assert!(r.text.starts_with("530 5.7.0"), "{token}: {}", r.text);
        c.cmd("QUIT", 221);
    }
    let log = w.idp.request_log();
    assert_eq!(log.len(), 1 + refusals.len(), "{log:?}");
    for (request, (token, _, _)) in log[1..].iter().zip(&refusals) {
        assert_introspection(request, token, port);
    }

    // The endpoint fails: 454, not a credential failure (two of the
    // session's three attempts are used up), and the session can try again.
    let mut c = w.submissions();
    w.idp.push_reply(Reply::status(500));
    let r = c.cmd(
        &format!("AUTH OAUTHBEARER {}", oauthbearer(Some(ALICE), "t500")),
        454,
    );
    assert!(r.text.starts_with("454 4.7.0"), "{}", r.text);
    w.idp.push_reply(Reply::policy("not json"));
    let r = c.cmd(
        &format!("AUTH OAUTHBEARER {}", oauthbearer(Some(ALICE), "t-text")),
        454,
    );
    assert!(r.text.starts_with("454 4.7.0"), "{}", r.text);
    w.idp.push_reply(active(ALICE, "mail.send"));
    let r = c.cmd(
        &format!(
            "AUTH OAUTHBEARER {}",
            oauthbearer(Some(ALICE), "retry-token")
        ),
        235,
    );
    assert!(r.text.starts_with("235 2.7.0"), "{}", r.text);
    c.cmd("QUIT", 221);
    assert_eq!(w.idp.requests(), 1 + refusals.len() + 3);

    let metrics = w.server.metrics_page();
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_success_total"), 3.0);
    assert_eq!(
        sample(&metrics, "portcullis_smtp_auth_failure_total"),
        refusals.len() as f64
    );
    assert_eq!(
        sample(&metrics, "portcullis_smtp_auth_temporary_total"),
        2.0
    );

    let ok = w.server.wait_log_events("authenticated", 3);
    assert_eq!(ok.len(), 3, "{ok:?}");
    for e in &ok {
        assert_eq!(log_field(e, "user"), ALICE, "{e}");
        assert_eq!(log_field(e, "mechanism"), "OAUTHBEARER", "{e}");
        assert_eq!(log_field(e, "via"), "bearer token", "{e}");
    }
    let failed = w
        .server
        .wait_log_events("authentication failed", refusals.len());
    assert_eq!(failed.len(), refusals.len(), "{failed:?}");
    let mut secrets: Vec<&str> = refusals.iter().map(|(t, _, _)| *t).collect();
    secrets.extend([good, "t500", "t-text", "retry-token", SECRET]);
    assert_not_logged(&w.server, &secrets);
}

/// Python's smtplib, `SMTP_SSL` on `submissions`, `auth("XOAUTH2", ...)`:
/// the user name is compared case-insensitively and the envelope names the
/// token's user; an inactive token gets the JSON challenge, to which
/// smtplib answers with an empty line, and `535`.
#[test]
fn python_smtplib_xoauth2() {
    let w = World::new();
    w.idp.push_reply(active(ALICE, "mail.send"));
    w.idp.push_reply(Reply::json(r#"{"active":false}"#));
    let script = r#"
import base64, json, smtplib, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)

class Named(smtplib.SMTP_SSL):
    # Verify the certificate for mx.example.test while dialling 127.0.0.1.
    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname="mx.example.test")

def xoauth2(user, token, challenges):
    def answer(challenge=None):
        if challenge is None:
            return "user=%s\x01auth=Bearer %s\x01\x01" % (user, token)
        challenges.append(challenge.decode())
        return ""
    return answer

s = Named("127.0.0.1", port, context=ctx, timeout=20)
s.ehlo("py.client.test")
mechanisms = s.esmtp_features.get("auth", "").strip()
code, _ = s.auth("XOAUTH2", xoauth2("ALICE@Example.TEST", "py-good-token", []))
msg = "From: alice@example.test\r\nTo: dave@elsewhere.test\r\nSubject: py\r\n\r\nhi\r\n"
s.sendmail("alice@example.test", ["dave@elsewhere.test"], msg)
s.quit()
challenges = []
s2 = Named("127.0.0.1", port, context=ctx, timeout=20)
s2.ehlo("py.client.test")
try:
    s2.auth("XOAUTH2", xoauth2("alice@example.test", "py-bad-token", challenges))
    bad = None
except smtplib.SMTPAuthenticationError as e:
    bad = e.smtp_code
s2.quit()
print(json.dumps({"mechanisms": mechanisms, "good": code, "bad": bad, "challenges": challenges}))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(w.server.addr("submissions").port().to_string())
        .arg(&w.ca)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["mechanisms"], "PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2",
        "{v}"
    );
    assert_eq!(v["good"], 235, "{v}");
    assert_eq!(v["bad"], 535, "{v}");
    let challenges = v["challenges"].as_array().unwrap();
    assert_eq!(challenges.len(), 1, "{v}");
    let challenge: Value = serde_json::from_str(challenges[0].as_str().unwrap()).unwrap();
    assert_eq!(challenge, invalid_token_challenge());

    let list = w.server.cli_json(&["queue", "list", "--json"]);
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    let id = entries[0]["id"].as_str().unwrap();
    let detail = w.server.cli_json(&["queue", "show", id, "--json"]);
    assert_eq!(detail["envelope"]["authenticated"], ALICE, "{detail}");
    let log = w.idp.request_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_introspection(&log[0], "py-good-token", w.idp.port());
    assert_introspection(&log[1], "py-bad-token", w.idp.port());
    let ok = w.server.wait_log_events("authenticated", 1);
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(log_field(&ok[0], "user"), ALICE);
    assert_eq!(log_field(&ok[0], "mechanism"), "XOAUTH2");
    let metrics = w.server.metrics_page();
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_success_total"), 1.0);
    assert_eq!(sample(&metrics, "portcullis_smtp_auth_failure_total"), 1.0);
    assert_not_logged(&w.server, &["py-good-token", "py-bad-token", SECRET]);
}

/// Without `[submission.oauth]`: EHLO after TLS offers password mechanisms
/// only, and AUTH XOAUTH2 / OAUTHBEARER are unknown mechanisms (504 5.5.4).
#[test]
fn without_oauth_config_bearer_mechanisms_are_not_offered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    pki.issue(&[TLS_NAME]).write(dir.path(), "mx");
    let config = r#"hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "submission"
[[listen]]
address = "127.0.0.1:0"
role = "submissions"
[tls]
certificate = "{dir}/mx.crt"
private_key = "{dir}/mx.key"
[relay]
accepted_domains = ["example.test"]
[submission]
users_file = "{dir}/users"
auth_failure_delay = "0s"
"#;
    let server = Portcullis::start_in(dir, config);
    let mut c = Client::connect(server.addr("submission"));
    c.ehlo("raw.client.test");
    let mut c = c.starttls(pki.client_config(), TLS_NAME);
    let ehlo = c.ehlo("raw.client.test");
    assert_eq!(
        auth_line(&ehlo.text).as_deref(),
        Some("AUTH PLAIN LOGIN SCRAM-SHA-256"),
        "{}",
        ehlo.text
    );
    let r = c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(ALICE, "tok")), 504);
    assert!(r.text.starts_with("504 5.5.4"), "{}", r.text);
    let r = c.cmd(
        &format!("AUTH OAUTHBEARER {}", oauthbearer(Some(ALICE), "tok")),
        504,
    );
    assert!(r.text.starts_with("504 5.5.4"), "{}", r.text);
    let r = c.cmd("AUTH XOAUTH2", 504);
    assert!(r.text.starts_with("504 5.5.4"), "{}", r.text);
    // The session is still usable.
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);
    let failed = server.log_events("authentication failed");
    assert!(failed.is_empty(), "{failed:?}");
}

/// `config check` refuses an `http://` introspection URL with exit 2,
/// naming the file, line and key; the same file with `https://` passes.
#[test]
fn config_check_refuses_a_plain_http_introspection_url() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("oauth-secret"), SECRET).unwrap();
    let config = |url: &str| {
        format!(
            r#"hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "submission"
[relay]
accepted_domains = ["example.test"]
[submission]
users_file = "{d}/users"
[submission.oauth]
introspection_url = "{url}"
client_id = "portcullis"
client_secret_file = "{d}/oauth-secret"
"#,
            d = dir.path().display()
        )
    };
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(portcullis_bin())
            .args(["config", "check", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .expect("run portcullis");
        (path, out)
    };
    let (path, out) = check("http.toml", &config("http://idp.example.test/introspect"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let want = format!("{}:10: submission.oauth.introspection_url:", path.display());
    assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    assert!(
        stderr.contains("http://idp.example.test/introspect"),
        "{stderr}"
    );

    let (_, out) = check("https.toml", &config("https://idp.example.test/introspect"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
