//! Serving our own MTA-STS policy (RFC 8461 §3.3) on a `role = "mta-sts"`
//! listener, end to end: the real binary, the test DNS server with the MX
//! records of our domain, certificates from the test CA, and a real HTTPS
//! client (reqwest, trusting only the test CA, `mta-sts.example.test`
//! resolved to the listener) fetching the policy as a remote sender would.
//!
//! What must hold: our domain's policy is served with `text/plain` and
//! lists exactly the MX hosts DNS has (the same text, hence the same id,
//! as `own_policy` makes); other hosts and paths get 404, never a
//! redirect; an oversized report POST gets 413, a broken one 400, and a
//! real one is stored and listed by `tlsrpt received list`; a client that never finishes its request head is cut off;
//! every listener's certificate expiry is on /metrics and in `status`,
//! and a certificate within 14 days of its end is warned about.

use portcullis_config::Publish;
use portcullis_policy::{MxPattern, Policy};
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, log_field, metric};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: Duration = Duration::from_secs(86_400);
const POLICY_URL: &str = "https://mta-sts.example.test/.well-known/mta-sts.txt";

/// The test DNS (our domain's two MX hosts), the CA, and a runtime for
/// both the DNS server and the HTTPS client.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
}

impl World {
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        dns.add_mx("example.test", 10, "mx1.example.test");
        dns.add_mx("example.test", 20, "mx2.example.test");
        World {
            rt,
            dns,
            pki: TestPki::new(),
        }
    }

    /// Starts the binary with an `smtp` and an `mta-sts` listener,
    /// `example.test` accepted, the `[tls]` certificate `tls` (names and
    /// days of validity left) and, when given, the mta-sts listener's own.
    fn start(&self, tls: (&[&str], u64), own: Option<(&[&str], u64)>) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let issue = |names: &[&str], days: u64, stem: &str| {
            self.pki
                .issue_with_validity(names, now - DAY, now + DAY * days as u32)
                .write(dir.path(), stem)
        };
        let (cert, key) = issue(tls.0, tls.1, "tls");
        let own = match own {
            Some((names, days)) => {
                let (c, k) = issue(names, days, "sts");
                format!(
                    "certificate = \"{}\"\nprivate_key = \"{}\"\n",
                    c.display(),
                    k.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            r#"hostname = "mx1.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[[listen]]
address = "127.0.0.1:0"
role = "mta-sts"
max_connections = 8
{own}
[tls]
certificate = "{}"
private_key = "{}"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
"#,
            cert.display(),
            key.display(),
            self.dns.addr()
        );
        Portcullis::start_in(dir, &config)
    }

    /// A client trusting only the test CA, with `mta-sts.example.test`
    /// and `mta-sts.other.test` at the listener, following no redirect.
    fn client(&self, server: &Portcullis) -> reqwest::Client {
        let at: SocketAddr = server.addr("mta-sts");
        reqwest::Client::builder()
            .tls_backend_preconfigured((*self.pki.client_config()).clone())
            .resolve("mta-sts.example.test", at)
            .resolve("mta-sts.other.test", at)
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// GETs `url`: (status, Content-Type, body).
    fn get(&self, client: &reqwest::Client, url: &str) -> (u16, String, String) {
        self.rt.block_on(async {
            let r = client.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, kind, r.text().await.unwrap())
        })
    }
}

/// The policy our `[publish]` defaults make for the DNS MX names.
fn expected() -> portcullis_publish::OwnPolicy {
    portcullis_publish::own_policy(
        &Publish::default(),
        "example.test",
        &["mx1.example.test".into(), "mx2.example.test".into()],
    )
    .unwrap()
}

/// A TLS report about example.test as another provider POSTs it (RFC
/// 8460 §5.2: gzip JSON): 50 good sessions, 3 failed.
fn gzip_report() -> Vec<u8> {
    use std::io::Write;
    let json = serde_json::json!({
        "organization-name": "Posting Mail Inc",
        "date-range": {
            "start-datetime": "2026-12-04T00:00:00Z",
            "end-datetime": "2026-12-04T23:59:59Z"
        },
        "contact-info": "tlsrpt@posting.example",
        "report-id": "2026-12-04_example.test@posting.example",
        "policies": [{
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.example.test", "max_age: 604800"],
                "policy-domain": "example.test"
            },
            "summary": {
                "total-successful-session-count": 50,
                "total-failure-session-count": 3
            },
            "failure-details": [{
                "result-type": "certificate-host-mismatch",
                "receiving-mx-hostname": "mx1.example.test",
                "receiving-ip": "192.0.2.25",
                "failed-session-count": 3
            }]
        }]
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.to_string().as_bytes()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn our_policy_is_served_to_a_real_https_client() {
    let w = World::new();
    let server = w.start(
        (&["mx1.example.test"], 365),
        Some((&["mta-sts.example.test", "mta-sts.other.test"], 90)),
    );
    let client = w.client(&server);

    let (status, kind, body) = w.get(&client, POLICY_URL);
    assert_eq!(status, 200, "{body}");
    assert_eq!(kind, "text/plain");
    let policy = Policy::parse(&body).unwrap();
    let want: Vec<MxPattern> = ["mx1.example.test", "mx2.example.test"]
        .iter()
        .map(|m| MxPattern::parse(m).unwrap())
        .collect();
    assert_eq!(policy.mx, want, "the policy lists the MX hosts DNS has");
    let own = expected();
    assert_eq!(body, own.text);
    let served = server.wait_log_events("mta-sts request", 1);
    let detail = log_field(&served[0], "detail").as_str().unwrap_or_default();
    assert_eq!(detail, format!("example.test id={}", own.id), "{served:?}");
    assert!(
        log_field(&served[0], "peer")
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{served:?}"
    );

    // Another host (not an accepted domain) and other paths: 404.
    let other = "https://mta-sts.other.test/.well-known/mta-sts.txt";
    assert_eq!(w.get(&client, other).0, 404);
    assert_eq!(w.get(&client, "https://mta-sts.example.test/").0, 404);
    assert_eq!(
        w.get(
            &client,
            "https://mta-sts.example.test/.well-known/mta-sts.txt.bak"
        )
        .0,
        404
    );

    // A report of 2 MiB is refused by its length; a truncated gzip body is
    // no report (400); a real one, gzip as RFC 8460 §5.2 sends it, is
    // stored (201) and listed by `tlsrpt received list`.
    let post = |body: Vec<u8>| {
        w.rt.block_on(async {
            client
                .post("https://mta-sts.example.test/tlsrpt")
                .header("content-type", "application/tlsrpt+gzip")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    assert_eq!(post(vec![0u8; 2 * 1024 * 1024]).unwrap(), 413);
    assert_eq!(post(b"\x1f\x8b".to_vec()).unwrap(), 400);
    assert_eq!(post(gzip_report()).unwrap(), 201);
    let listed = server.cli_json(&["tlsrpt", "received", "list", "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["organization"], "Posting Mail Inc");
    assert_eq!(listed[0]["failed"], 3);
    let id = listed[0]["id"].as_str().unwrap();
    let shown = server.cli_json(&["tlsrpt", "received", "show", id, "--json"]);
    assert_eq!(shown["channel"], "https", "{shown}");

    let page = server.metrics_page();
    let requests = |result: &str| {
        metric(
            &page,
            &format!("portcullis_mta_sts_requests_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(requests("policy"), Some(1.0), "{page}");
    assert_eq!(requests("not_found"), Some(3.0), "{page}");
    assert_eq!(requests("too_large"), Some(1.0), "{page}");
    assert_eq!(requests("report_invalid"), Some(1.0), "{page}");
    assert_eq!(requests("report_stored"), Some(1.0), "{page}");

    // Each listener's certificate: the mta-sts one its own (90 days), the
    // smtp one [tls] (365 days).
    let expiry = |addr: SocketAddr, role: &str| {
        metric(
            &page,
            &format!(
                "portcullis_tls_certificate_expiry_seconds{{listener=\"{addr}\",role=\"{role}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("no expiry for {addr} in {page}"))
    };
    let sts = expiry(server.addr("mta-sts"), "mta-sts");
    let smtp = expiry(server.smtp(), "smtp");
    let days = |secs: f64| secs / 86_400.0;
    assert!((89.0..=90.0).contains(&days(sts)), "{sts}");
    assert!((364.0..=365.0).contains(&days(smtp)), "{smtp}");
    assert!(server.log_events("TLS certificate expires soon").is_empty());

    let status = String::from_utf8(server.cli_ok(&["status"])).unwrap();
    assert!(
        status.contains(&format!(
            "{} (mta-sts), certificate until",
            server.addr("mta-sts")
        )),
        "{status}"
    );
    // 90 days less the moments since it was issued: 89 or 90 whole days.
    assert!(
        status.contains("(89 days left)") || status.contains("(90 days left)"),
        "{status}"
    );
    assert!(!status.contains("renew it"), "{status}");
}

/// A client that opens TLS and never finishes its head is answered 408
/// and closed (after the 10 s head limit), not held forever.
#[test]
fn a_client_that_never_finishes_its_head_is_cut_off() {
    let w = World::new();
    let server = w.start((&["mx1.example.test", "mta-sts.example.test"], 365), None);
    let at = server.addr("mta-sts");
    let connector = tokio_rustls::TlsConnector::from(w.pki.client_config());
    let reply = w.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("mta-sts.example.test").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-")
            .await
            .unwrap();
        let mut out = Vec::new();
        // Generous: the server's own limit is what ends this.
        tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut out))
            .await
            .expect("the server never closed")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    let events = server.wait_log_events("mta-sts request", 1);
    assert_eq!(log_field(&events[0], "result"), "timeout", "{events:?}");
    assert!(log_field(&events[0], "peer").is_string(), "{events:?}");
}

/// A `[tls]` certificate ending in 10 days: the warning at start names
/// the listeners that present it, `status` says to renew it, and the
/// mta-sts listener serves with it (no certificate of its own). A reload
/// with `[publish]` changed serves the new policy.
#[test]
fn an_expiring_certificate_is_warned_about_and_a_reload_changes_the_policy() {
    let w = World::new();
    let server = w.start((&["mx1.example.test", "mta-sts.example.test"], 10), None);
    let warned = server.wait_log_events("TLS certificate expires soon", 2);
    let roles: Vec<&str> = warned
        .iter()
        .filter_map(|e| log_field(e, "role").as_str())
        .collect();
    assert_eq!(roles, ["smtp", "mta-sts"], "{warned:?}");
    assert_eq!(warned[0]["level"], "WARN");
    let status = String::from_utf8(server.cli_ok(&["status"])).unwrap();
    assert!(status.contains("days left: renew it)"), "{status}");

    let client = w.client(&server);
    let (status, _, body) = w.get(&client, POLICY_URL);
    assert_eq!((status, body), (200, expected().text));

    server.edit_config(|c| {
        format!("{c}\n[publish]\nmode = \"testing\"\nmx = [\"*.example.test\"]\n")
    });
    server.cli_ok(&["reload"]);
    let (status, _, body) = w.get(&client, POLICY_URL);
    assert_eq!(status, 200);
    let policy = Policy::parse(&body).unwrap();
    assert_eq!(policy.mode, portcullis_policy::Mode::Testing);
    assert_eq!(policy.mx, vec![MxPattern::parse("*.example.test").unwrap()]);
}

/// `config check` shows an `mta-sts` listener with its own certificate;
/// such a listener needs no more than that (without a `[publish]` section
/// the defaults apply).
#[test]
fn config_check_shows_the_mta_sts_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        r#"hostname = "mx1.example.test"
[[listen]]
address = "127.0.0.1:25"
[[listen]]
address = "127.0.0.1:443"
role = "mta-sts"
max_connections = 50
certificate = "/etc/portcullis/sts.pem"
private_key = "/etc/portcullis/sts.key"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(portcullis_test_support::server::portcullis_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("listen")
            && l.contains("127.0.0.1:443 (mta-sts) max_connections 50, certificate /etc/portcullis/sts.pem / /etc/portcullis/sts.key")),
        "{text}"
    );
}
