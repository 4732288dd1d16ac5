//! No exemption from MTA-STS is ever inferred from message content
//! (DESIGN.md, Promises; issue 11 item 2), end to end: the real binary, a
//! real DNS server, a real HTTPS policy server and SMTP sinks on loopback.
//!
//! RFC 8460 §5.3 lets a TLS report reach a domain whose MTA-STS policy is
//! `enforce` even when TLS fails, since a broken TLS set-up is what it
//! reports. Delivery used to recognise reports by their bytes (null sender
//! plus `report-type=tlsrpt` in the header section), which anyone can
//! write. Three ways of producing those bytes must stay under enforcement:
//!
//! (a) a trusted-network client sends `MAIL FROM:<>` with a
//!     `Content-Type: multipart/report; report-type="tlsrpt"` header;
//! (b) an authenticated user does the same (sender ownership does not
//!     apply to the null sender, so the server takes it);
//! (c) an outside client sends from `<report-type=tlsrpt@bank.example>` to
//!     an unknown user of an accepted domain; the route's 550 makes our
//!     bounce carry that text in its `To:` header, towards bank.example.
//!
//! The enforce domains' DNS names an MX their policy does not list, a sink
//! without STARTTLS: under enforcement it is never contacted, and the
//! messages stay deferred with an MTA-STS reason. A real TLS report (the
//! binary's own `tlsrpt send`) to a domain set up the same way still gets
//! the exemption. `queue show` names each message's recorded origin.

use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::PolicyServer;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};
use portcullis_tls::TlsResultType;
use portcullis_tls::{ReportPolicy, ReportPolicyType};
use portcullis_tlsrpt::TlsRptRecorder;
use portcullis_tlsrpt::{TlsResultSink, TlsSessionResult};
use portcullis_types::{Clock, Domain};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);
/// Our TLS name (submissions listener).
const NAME: &str = "mx.portcullis.test";
/// The address `[relay] trusted_networks` trusts; every other loopback
/// client is an outsider.
const TRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
/// The header anyone can write.
const LOOKALIKE: &str = "From: app@example.test\r\nTo: postmaster@strict.test\r\nSubject: TLS report?\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\";\r\n boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nnot a report\r\n--b--";
/// The domain whose (recorded) TLS results yesterday's report is about.
const REPORTED: &str = "reported.test";

/// A clock that always says the same time.
struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Records one failed session of yesterday for [`REPORTED`] in the store
/// the binary will open (`data_dir/queue`), so that `tlsrpt send` has a
/// finished day to report; closed on return, so sled's lock is free.
fn record_yesterday(data_dir: &Path) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let yesterday = UNIX_EPOCH + Duration::from_secs(now / 86_400 * 86_400 - 86_400 + 43_200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&data_dir.join("queue")).unwrap();
        let recorder = TlsRptRecorder::new(&store, Arc::new(FixedClock(yesterday))).unwrap();
        recorder.record(TlsSessionResult {
            policy: ReportPolicy {
                policy_type: ReportPolicyType::NoPolicyFound,
                policy_domain: Domain::parse(REPORTED).unwrap(),
                policy_string: Vec::new(),
                mx_host: Vec::new(),
                failure: None,
            },
            sending_ip: None,
            mx_host: "mx.reported.test".into(),
            receiving_ip: "192.0.2.25".parse().unwrap(),
            receiving_helo: None,
            failure: Some(TlsResultType::StartTlsNotSupported),
            detail: "no STARTTLS".into(),
            reason_code: None,
            is_report: false,
        });
        store.commit().await.unwrap();
        store.flush_now().unwrap();
    });
    drop(rt);
    // sled lets go of its lock file once the last handle is gone.
    std::thread::sleep(Duration::from_millis(200));
}

/// The queue entry of `id`, `None` once it left the queue.
fn entry(server: &Portcullis, id: &str) -> Option<Value> {
    server
        .cli_json(&["queue", "list", "--json"])
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

/// Waits until `id` was attempted `attempts` times and asserts it is still
/// queued, deferred for an MTA-STS reason (a message that left the queue
/// was delivered or bounced: the enforcement was bypassed).
#[track_caller]
fn assert_held(server: &Portcullis, what: &str, id: &str, attempts: u64) {
    let e = eventually(
        &format!("{what}: {attempts} attempts"),
        WAIT,
        || match entry(server, id) {
            None => Some(None),
            // An attempt is counted before it connects: wait until its
            // result is written too (the recipient is no longer "queued").
            Some(e)
                if e["attempts"].as_u64()? >= attempts
                    && e["recipients"][0]["state"] != "queued" =>
            {
                Some(Some(e))
            }
            Some(_) => None,
        },
    )
    .unwrap_or_else(|| panic!("{what}: {id} left the queue: not held by MTA-STS"));
    assert_eq!(e["recipients"][0]["state"], "deferred", "{what}: {e}");
    let reason = e["last_error"].as_str().unwrap_or_default();
    assert!(reason.contains("MTA-STS"), "{what}: {e}");
}

/// The recorded origin of queued message `id`, from `queue show --json`.
fn origin(server: &Portcullis, id: &str) -> Value {
    server.cli_json(&["queue", "show", id, "--json"])["envelope"]["origin"].clone()
}

#[test]
fn only_our_own_tls_reports_are_exempt_from_enforce() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let pki = TestPki::new();
    let port = free_port();

    // Three enforce domains behind one policy host: the policy lists only
    // mx.<domain>; DNS names evil.<domain>, a sink without STARTTLS.
    let domains = [("strict.test", 21), ("bank.example", 22), ("rua.test", 23)];
    let sts_ip = Ipv4Addr::new(127, 0, 0, 20);
    let hosts: Vec<String> = domains
        .iter()
        .map(|(d, _)| format!("mta-sts.{d}"))
        .collect();
    let sts = rt.block_on(PolicyServer::start(
        sts_ip,
        &pki.issue(&hosts.iter().map(String::as_str).collect::<Vec<_>>()),
    ));
    let mut policy = String::from("version: STSv1\nmode: enforce\n");
    let mut evil = Vec::new();
    for ((domain, last), host) in domains.iter().zip(&hosts) {
        policy.push_str(&format!("mx: mx.{domain}\n"));
        dns.add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;");
        dns.add_a(host, sts_ip);
        let mx = format!("evil.{domain}");
        dns.add_mx(domain, 10, &mx);
        dns.add_a(&mx, Ipv4Addr::new(127, 0, 0, *last));
        evil.push(Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, *last], port)),
            ..SinkConfig::default()
        }));
    }
    policy.push_str("max_age: 86400\n");
    sts.set_policy(&policy);
    let (strict, bank, rua) = (&evil[0], &evil[1], &evil[2]);

    // The accepted domain's mail store knows no "nobody".
    let store = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 24], port)),
        rcpt_replies: vec![(
            "nobody@example.test".into(),
            "550 5.1.1 no such user".into(),
        )],
        ..SinkConfig::default()
    });
    // Yesterday's TLS results for reported.test go to tlsrpt@rua.test.
    dns.add_txt(
        &format!("_smtp._tls.{REPORTED}"),
        "v=TLSRPTv1; rua=mailto:tlsrpt@rua.test",
    );

    let dir = tempfile::tempdir().unwrap();
    pki.write_ca(dir.path());
    pki.issue(&[NAME]).write(dir.path(), "mx");
    dkim_rsa_key(&dir.path().join("tlsrpt.key"));
    record_yesterday(&dir.path().join("data"));
    let server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "{NAME}"
data_dir = "{{dir}}/data"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[[listen]]
address = "127.0.0.1:0"
role = "submissions"
[tls]
certificate = "{{dir}}/mx.crt"
private_key = "{{dir}}/mx.key"
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["{TRUSTED}/32"]
[routes]
"example.test" = "127.0.0.24:{port}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[mta_sts]
https_port = {https}
[tlsrpt]
enabled = true
organization = "Origin Test Org"
contact = "mailto:postmaster@example.test"
submitter = "example.test"
from = "tlsrpt-noreply@example.test"
dkim_selector = "tlsrpt"
dkim_key = "{{dir}}/tlsrpt.key"
# Keeps the start-up pass from sending: `tlsrpt send` does.
send_window = "100000d"
[submission]
users_file = "{{dir}}/users"
[admin]
socket = "{{dir}}/admin.sock"
"#,
            dns = dns.addr(),
            https = sts.port(),
        ),
    );
    let out = server.cli_with_stdin(&["user", "add", "alice"], Some("secret\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // (a) A trusted application.
    let mut c = Client::connect_raw_from(server.smtp(), IpAddr::V4(TRUSTED));
    assert_eq!(c.read_reply().code, 220);
    c.ehlo("app.example.test");
    c.cmd("MAIL FROM:<>", 250);
    c.cmd("RCPT TO:<postmaster@strict.test>", 250);
    let r = c.data(LOOKALIKE.as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    let trusted = queued_id(&r);
    c.cmd("QUIT", 221);

    // (b) An authenticated user (base64 of "\0alice\0secret").
    let mut c = Client::connect_tls(server.addr("submissions"), pki.client_config(), NAME);
    c.ehlo("laptop.example.test");
    c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 235);
    // Sender ownership concerns addresses; the null sender has none.
    c.cmd("MAIL FROM:<>", 250);
    c.cmd("RCPT TO:<postmaster@strict.test>", 250);
    let r = c.data(LOOKALIKE.as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    let submitted = queued_id(&r);
    c.cmd("QUIT", 221);

    assert_held(&server, "(a) trusted <>", &trusted, 1);
    assert_held(&server, "(b) authenticated <>", &submitted, 1);

    // (c) An outsider (127.0.0.1 is not trusted) and our own bounce.
    let mut c = Client::connect(server.smtp());
    c.ehlo("mail.bank.example");
    c.cmd("MAIL FROM:<report-type=tlsrpt@bank.example>", 250);
    c.cmd("RCPT TO:<nobody@example.test>", 250);
    let r = c.data(b"Subject: hello\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    let bounce = eventually("our bounce to bank.example", WAIT, || {
        assert!(
            bank.received().is_empty(),
            "(c) bounce: delivered to bank.example's unlisted MX"
        );
        server
            .cli_json(&["queue", "list", "--json"])
            .as_array()?
            .iter()
            .find(|e| e["recipients"][0]["address"] == "report-type=tlsrpt@bank.example")
            .map(|e| e["id"].as_str().unwrap().to_owned())
    });
    assert_eq!(store.received().len(), 0, "nobody@ was refused");

    for (what, id) in [
        ("(a) trusted <>", &trusted),
        ("(b) authenticated <>", &submitted),
        ("(c) bounce", &bounce),
    ] {
        assert_held(&server, what, id, 2);
    }
    let headers = server.cli_json(&["queue", "show", &bounce, "--json"])["headers"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("report-type=tlsrpt@bank.example"),
        "{headers}"
    );
    // The origin each was recorded with, in JSON and for people.
    assert_eq!(origin(&server, &trusted), "relay");
    assert_eq!(origin(&server, &submitted), "submission");
    assert_eq!(origin(&server, &bounce), "bounce");
    let text = String::from_utf8_lossy(&server.cli_ok(&["queue", "show", &bounce])).into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("origin:") && l.trim_end().ends_with(" bounce")),
        "{text}"
    );

    // A real report, made by the binary itself: exempt (RFC 8460 §5.3),
    // so it reaches rua.test's unlisted, plain-text MX.
    let sent = server.cli_json(&["tlsrpt", "send", "--json"]);
    assert_eq!(sent["outcomes"][0]["outcome"], "sent", "{sent:#}");
    let got = rua.wait_for(1, WAIT);
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpts, ["tlsrpt@rua.test"]);
    assert_eq!(got[0].tls, None, "the exemption: unlisted MX, no STARTTLS");
    assert!(String::from_utf8_lossy(&got[0].data).contains("report-type=\"tlsrpt\""));

    // The lookalikes are still held, and the unlisted MX hosts never saw a
    // connection.
    for (what, id) in [
        ("(a) trusted <>", &trusted),
        ("(b) authenticated <>", &submitted),
        ("(c) bounce", &bounce),
    ] {
        assert_held(&server, what, id, 3);
    }
    assert_eq!(strict.connections(), 0, "{:?}", strict.commands());
    assert_eq!(bank.connections(), 0, "{:?}", bank.commands());
    assert!(strict.received().is_empty() && bank.received().is_empty());
}
