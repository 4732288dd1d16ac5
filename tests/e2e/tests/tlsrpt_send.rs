//! TLS-RPT (RFC 8460) sending with the real binary: a finished UTC day's
//! report goes out by mail (DKIM-signed, through the Portcullis queue to the
//! `rua` domain's MX) and by HTTPS POST, with the right content, once.
//!
//! The binary has no test clock (by design), so "yesterday" is made before
//! it starts: the test opens the store where the binary will
//! (`<data_dir>/queue`), records a day of sessions for `report.test` with
//! a recorder whose clock stands at yesterday noon UTC, and closes it. The
//! configured send window is huge, so the server's own pass at start-up
//! (which honours the random delay) leaves the report pending, and the
//! operator's `portcullis tlsrpt send` (which ignores the delay) sends it.
//!
//! The world: a real DNS server on loopback publishing `_smtp._tls`, the
//! DKIM key and the addresses; an SMTP sink on 127.0.0.41 as the MX of the
//! mailto destination; a rustls HTTPS receiver on 127.0.0.42 with a
//! certificate from the test CA that records every request.

use flate2::read::GzDecoder;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mail_parser::{MessageParser, MimeHeaders};
use portcullis_dns::HickoryResolver;
use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::pki::{Issued, TestPki};
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::TlsResultType;
use portcullis_tls::{ReportPolicy, ReportPolicyType};
use portcullis_tlsrpt::{Day, TlsRptRecorder};
use portcullis_tlsrpt::{TlsResultSink, TlsSessionResult};
use portcullis_types::{Clock, Domain};
use serde_json::{Value, json};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// The policy domain the report is about.
const DOMAIN: &str = "report.test";
/// Where its owner wants reports by mail.
const RUA_MAIL: &str = "tlsrpt@rua.test";
/// The HTTPS receiver's host name.
const RUA_HOST: &str = "reports.rua.test";
const SUBMITTER: &str = "submitter.test";
const FROM: &str = "tlsrpt-noreply@submitter.test";
const SELECTOR: &str = "tlsrpt";
const ORG: &str = "Portcullis Send Test Org";
const CONTACT: &str = "mailto:postmaster@submitter.test";
const POLICY: [&str; 4] = [
    "version: STSv1",
    "mode: enforce",
    "mx: mx1.report.test",
    "max_age: 86400",
];

/// A clock that always says the same time.
struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// One HTTP request as the receiver saw it.
#[derive(Debug, Clone)]
struct Post {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// An HTTPS server that answers `200` to every request and records it
/// (head and `Content-Length` body); it stops with its runtime.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    async fn start(ip: Ipv4Addr, cert: &Issued) -> Receiver {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = TlsAcceptor::from(cert.server_config());
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some(post) = read_request(&mut tls).await else {
                        return;
                    };
                    log.lock().unwrap().push(post);
                    let reply =
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = tls.write_all(reply).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Receiver { addr, requests }
    }

    fn requests(&self) -> Vec<Post> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request: the head, then `Content-Length` bytes.
async fn read_request<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<Post> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let mut content_type = None;
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Post {
        method,
        path,
        content_type,
        body,
    })
}

/// 12:00 UTC yesterday.
fn yesterday_noon() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now / 86_400 * 86_400 - 86_400 + 43_200)
}

fn session(failure: Option<TlsResultType>) -> TlsSessionResult {
    TlsSessionResult {
        policy: ReportPolicy {
            policy_type: ReportPolicyType::Sts,
            policy_domain: Domain::parse(DOMAIN).unwrap(),
            policy_string: POLICY.iter().map(|s| (*s).to_owned()).collect(),
            mx_host: vec!["mx1.report.test".into()],
            failure: None,
        },
        sending_ip: None,
        mx_host: "mx1.report.test".into(),
        receiving_ip: "192.0.2.25".parse().unwrap(),
        receiving_helo: failure.map(|_| "mx1.report.test".to_owned()),
        failure,
        detail: if failure.is_some() {
            "certificate expired".into()
        } else {
            String::new()
        },
        reason_code: None,
        is_report: false,
    }
}

/// Records a day of sessions (the one of `at`) for [`DOMAIN`] in the store at
/// `data_dir/queue` (where the binary opens it): 3 successes and 2
/// `certificate-expired` failures. Everything is closed on return, so that
/// sled's lock is free for the binary.
fn record_day(data_dir: &Path, at: SystemTime) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&data_dir.join("queue")).unwrap();
        let recorder = TlsRptRecorder::new(&store, Arc::new(FixedClock(at))).unwrap();
        for _ in 0..3 {
            recorder.record(session(None));
        }
        for _ in 0..2 {
            recorder.record(session(Some(TlsResultType::CertificateExpired)));
        }
        store.commit().await.unwrap();
        store.flush_now().unwrap();
    });
    drop(rt);
    // sled lets go of its lock file once the last handle is gone.
    std::thread::sleep(Duration::from_millis(200));
}

fn gunzip(gz: &[u8]) -> Value {
    let mut json = Vec::new();
    GzDecoder::new(gz).read_to_end(&mut json).expect("gunzip");
    serde_json::from_slice(&json).expect("report JSON")
}

#[test]
fn a_finished_day_is_reported_by_mail_and_https_once() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let pki = TestPki::new();
    let port = free_port();

    // The rua's MX: a sink with a certificate from the test CA.
    let mx = "mx.rua.test";
    let mx_ip = Ipv4Addr::new(127, 0, 0, 41);
    dns.add_mx("rua.test", 10, mx);
    dns.add_a(mx, mx_ip);
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from((mx_ip, port)),
        tls: SinkTls::Cert(pki.issue(&[mx])),
        ..SinkConfig::default()
    });
    // The HTTPS receiver.
    let https_ip = Ipv4Addr::new(127, 0, 0, 42);
    dns.add_a(RUA_HOST, https_ip);
    let receiver = rt.block_on(Receiver::start(https_ip, &pki.issue(&[RUA_HOST])));
    let https_url = format!("https://{RUA_HOST}:{}/tlsrpt", receiver.addr.port());
    dns.add_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!("v=TLSRPTv1; rua=mailto:{RUA_MAIL},{https_url}"),
    );

    // Yesterday, before the binary starts; the DKIM key and its record.
    let dir = tempfile::tempdir().unwrap();
    pki.write_ca(dir.path());
    let p = dkim_rsa_key(&dir.path().join("tlsrpt.key"));
    dns.add_txt(
        &format!("{SELECTOR}._domainkey.{SUBMITTER}"),
        &format!("v=DKIM1; k=rsa; s=tlsrpt; p={p}"),
    );
    let yesterday = yesterday_noon();
    record_day(&dir.path().join("data"), yesterday);
    let day = Day::of(yesterday);

    let server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "mx.portcullis.test"
data_dir = "{{dir}}/data"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[tlsrpt]
enabled = true
organization = "{ORG}"
contact = "{CONTACT}"
submitter = "{SUBMITTER}"
from = "{FROM}"
dkim_selector = "{SELECTOR}"
dkim_key = "{{dir}}/tlsrpt.key"
# The delay is picked at random within the window: this one keeps the
# start-up pass from sending, so that `tlsrpt send` does.
send_window = "100000d"
[admin]
socket = "{{dir}}/admin.sock"
"#,
            dns.addr()
        ),
    );

    // The day is over and counted, not sent yet.
    let list = server.cli_json(&["tlsrpt", "list", "--json"]);
    assert_eq!(
        list,
        json!([{
            "day": day.to_string(),
            "domain": DOMAIN,
            "successful": 3,
            "failed": 2,
            "destinations": [],
            "state": "pending",
            "last_error": null,
        }]),
        "{list:#}"
    );
    assert!(sink.received().is_empty());
    assert!(receiver.requests().is_empty());
    // The report as it will be sent (the report-id is fixed now).
    let expected = server.cli_json(&[
        "tlsrpt",
        "show",
        DOMAIN,
        "--day",
        &day.to_string(),
        "--json",
    ]);

    // Send.
    let sent = server.cli_json(&["tlsrpt", "send", "--json"]);
    assert_eq!(sent["collecting"], 0, "{sent:#}");
    let outcomes = sent["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{sent:#}");
    for (transport, destination) in [
        ("mailto", format!("mailto:{RUA_MAIL}")),
        ("https", https_url.clone()),
    ] {
        let o = outcomes
            .iter()
            .find(|o| o["transport"] == transport)
            .unwrap_or_else(|| panic!("no {transport} outcome in {sent:#}"));
        assert_eq!(o["outcome"], "sent", "{sent:#}");
        assert_eq!(o["day"], day.to_string());
        assert_eq!(o["domain"], DOMAIN);
        assert_eq!(o["destination"], destination.as_str(), "{sent:#}");
    }

    // The report JSON, checked once; both transports must carry exactly it.
    let id = expected["report-id"].as_str().unwrap().to_owned();
    assert_eq!(expected["organization-name"], ORG, "{expected:#}");
    assert_eq!(expected["contact-info"], CONTACT);
    assert_eq!(
        expected["date-range"]["start-datetime"],
        format!("{day}T00:00:00Z")
    );
    assert_eq!(
        expected["date-range"]["end-datetime"],
        format!("{day}T23:59:59Z")
    );
    let policies = expected["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{expected:#}");
    let p = &policies[0];
    assert_eq!(p["policy"]["policy-type"], "sts");
    assert_eq!(p["policy"]["policy-domain"], DOMAIN);
    assert_eq!(p["policy"]["policy-string"], json!(POLICY));
    assert_eq!(p["policy"]["mx-host"], json!(["mx1.report.test"]));
    assert_eq!(p["summary"]["total-successful-session-count"], 3);
    assert_eq!(p["summary"]["total-failure-session-count"], 2);
    let details = p["failure-details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{expected:#}");
    assert_eq!(details[0]["result-type"], "certificate-expired");
    assert_eq!(details[0]["receiving-mx-hostname"], "mx1.report.test");
    assert_eq!(details[0]["receiving-mx-helo"], "mx1.report.test");
    assert_eq!(details[0]["receiving-ip"], "192.0.2.25");
    assert_eq!(details[0]["failed-session-count"], 2);
    assert_eq!(details[0]["additional-information"], "certificate expired");

    // By HTTPS: one POST of the gzip JSON.
    let posts = receiver.requests();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].method, "POST");
    assert_eq!(posts[0].path, "/tlsrpt");
    assert_eq!(
        posts[0].content_type.as_deref(),
        Some("application/tlsrpt+gzip")
    );
    assert_eq!(gunzip(&posts[0].body), expected);

    // By mail: through the queue to the rua's MX, from the null sender.
    let got = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    let mail = &got[0];
    assert_eq!(mail.mail_from, "", "{}", mail.raw_mail_line);
    assert_eq!(mail.rcpts, [RUA_MAIL]);
    assert!(mail.tls.is_some(), "delivered without TLS");
    let raw = &mail.data;
    let text = String::from_utf8_lossy(raw);
    let msg = MessageParser::default().parse(raw).expect("parse");
    let ct = msg.content_type().expect("content-type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "{text}"
    );
    assert_eq!(ct.attribute("report-type"), Some("tlsrpt"), "{text}");
    assert_eq!(
        msg.header("TLS-Report-Domain").and_then(|h| h.as_text()),
        Some(DOMAIN)
    );
    assert_eq!(
        msg.header("TLS-Report-Submitter").and_then(|h| h.as_text()),
        Some(SUBMITTER)
    );
    assert_eq!(
        msg.subject(),
        Some(format!("Report Domain: {DOMAIN} Submitter: {SUBMITTER} Report-ID: <{id}>").as_str())
    );
    assert_eq!(
        msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
        Some(FROM)
    );
    assert_eq!(
        msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some(RUA_MAIL)
    );
    let att = msg.attachment(0).expect("the report part");
    let act = att.content_type().expect("part content-type");
    assert_eq!(
        (act.ctype(), act.subtype()),
        ("application", Some("tlsrpt+gzip"))
    );
    let filename = att.attachment_name().expect("file name");
    let parts: Vec<&str> = filename.split('!').collect();
    assert_eq!(parts.len(), 5, "{filename}");
    assert_eq!(parts[0], SUBMITTER, "{filename}");
    assert_eq!(parts[1], DOMAIN, "{filename}");
    assert_eq!(parts[2], day.start_timestamp().to_string(), "{filename}");
    assert_eq!(parts[3], day.end_timestamp().to_string(), "{filename}");
    let unique = parts[4].strip_suffix(".json.gz").expect(".json.gz");
    assert!(
        !unique.is_empty() && unique.chars().all(|c| c.is_ascii_alphanumeric()),
        "{filename}"
    );
    assert_eq!(gunzip(att.contents()), expected);

    // The DKIM signature, as it arrived, verifies against the published key.
    let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    let verifier = MessageAuthenticator(resolver.inner().clone());
    let am = AuthenticatedMessage::parse(raw).expect("authenticated message");
    let results = rt.block_on(verifier.verify_dkim(&am));
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].result(), &DkimResult::Pass, "{results:?}");
    let sig = results[0].signature().expect("signature");
    assert_eq!((sig.d.as_str(), sig.s.as_str()), (SUBMITTER, SELECTOR));

    // The queue has let go of it, and the day is sent.
    eventually("an empty queue", WAIT, || {
        let q = server.cli_json(&["queue", "list", "--json"]);
        q.as_array().unwrap().is_empty().then_some(())
    });
    let list = server.cli_json(&["tlsrpt", "list", "--json"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list:#}");
    assert_eq!(rows[0]["day"], day.to_string());
    assert_eq!(rows[0]["domain"], DOMAIN);
    assert_eq!(rows[0]["state"], "sent", "{list:#}");
    assert_eq!(rows[0]["last_error"], Value::Null, "{list:#}");
    assert_eq!(
        rows[0]["destinations"],
        json!([format!("mailto:{RUA_MAIL}"), https_url]),
        "{list:#}"
    );

    // The report's own SMTP session was seen by the recorder and not
    // counted (RFC 8460 §3): no row for rua.test, nothing collecting today.
    eventually("the report session to be recognised", WAIT, || {
        server
            .log_events("TLS-RPT: session carried a report; not counted")
            .iter()
            .any(|e| e["policy_domain"] == "rua.test" || e["fields"]["policy_domain"] == "rua.test")
            .then_some(())
    });

    // Never twice.
    let again = server.cli_json(&["tlsrpt", "send", "--json"]);
    assert_eq!(again, json!({"outcomes": [], "collecting": 0}), "{again:#}");
    // Nothing more was queued: an empty queue now means anything queued
    // by that pass has already reached the sink.
    let q = server.cli_json(&["queue", "list", "--json"]);
    assert_eq!(q, json!([]), "{q:#}");
    assert_eq!(sink.received().len(), 1);
    assert_eq!(receiver.requests().len(), 1);
    let list = server.cli_json(&["tlsrpt", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["state"], "sent", "{list:#}");
}
