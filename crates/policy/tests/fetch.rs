//! Fetch outcomes against real parts on loopback: a real HTTPS policy
//! server (rustls, certificates from the test CA), a real DNS server, and the
//! production resolver. One row per outcome of RFC 8461 §3.1–§3.3, with the
//! TLS-RPT result type each failure maps to (RFC 8460 §4.3.3).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_dns::HickoryResolver;
use portcullis_policy::{
    Mode, NoPolicy, NoPolicyReason, PolicyEngine, PolicyFetcher, PolicyLookup, StsError,
};
use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_tls::{ClientTls, TlsResultType};
use portcullis_types::{Domain, SystemClock};

const POLICY: &str =
    "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.mx.example.test\nmax_age: 86400\n";

/// Which certificate the policy server presents.
#[derive(Debug, Clone, Copy)]
enum Cert {
    /// Issued by the test CA for `mta-sts.<domain>`.
    Good,
    /// Issued by the test CA for another name.
    WrongName,
    /// Self-signed for `mta-sts.<domain>`: no trust anchor.
    Untrusted,
    /// Issued by the test CA for `mta-sts.<domain>`, expired.
    Expired,
}

/// The expected outcome of a row.
#[derive(Debug)]
enum Want {
    /// A policy in this mode.
    Policy(Mode),
    /// An error for which `check` holds, mapping to `result`.
    Error(fn(&StsError) -> bool, TlsResultType),
}

struct Row {
    name: &'static str,
    cert: Cert,
    reply: Reply,
    want: Want,
}

fn row(name: &'static str, cert: Cert, reply: Reply, want: Want) -> Row {
    Row {
        name,
        cert,
        reply,
        want,
    }
}

struct Env {
    dns: TestDns,
    pki: TestPki,
    resolver: HickoryResolver,
}

async fn env() -> Env {
    let dns = TestDns::start().await;
    let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).expect("resolver");
    Env {
        dns,
        pki: TestPki::new(),
        resolver,
    }
}

impl Env {
    /// A policy server for `domain` on `ip`, with its A record in DNS.
    async fn server(&self, domain: &str, ip: Ipv4Addr, cert: Cert) -> PolicyServer {
        let host = format!("mta-sts.{domain}");
        let issued = match cert {
            Cert::Good => self.pki.issue(&[&host]),
            Cert::WrongName => self.pki.issue(&["mta-sts.other.test"]),
            Cert::Untrusted => TestPki::self_signed(&[&host]),
            Cert::Expired => self.pki.issue_expired(&[&host]),
        };
        self.dns.add_a(&host, ip);
        PolicyServer::start(ip, &issued).await
    }

    /// A fetcher trusting only the test CA, on `port`.
    fn fetcher(&self, port: u16, timeout: Duration) -> PolicyFetcher {
        PolicyFetcher::builder(self.resolver.clone())
            .tls(ClientTls::with_roots(self.pki.root_store()))
            .port(port)
            .timeout(timeout)
            .build()
            .expect("fetcher")
    }
}

fn big_body() -> String {
    let mut text = POLICY.to_owned();
    while text.len() <= 64 * 1024 {
        text.push_str(
            "x-padding: 0123456789012345678901234567890123456789012345678901234567890123456789\n",
        );
    }
    text
}

#[tokio::test]
async fn fetch_outcomes() {
    use TlsResultType::*;
    let env = env().await;
    let rows = vec![
        row(
            "valid policy",
            Cert::Good,
            Reply::policy(POLICY),
            Want::Policy(Mode::Enforce),
        ),
        row(
            "text/plain with a charset parameter",
            Cert::Good,
            Reply::policy(POLICY).with_content_type(Some("text/plain; charset=utf-8")),
            Want::Policy(Mode::Enforce),
        ),
        row(
            "CRLF line ends",
            Cert::Good,
            Reply::policy(&POLICY.replace('\n', "\r\n")),
            Want::Policy(Mode::Enforce),
        ),
        row(
            "404",
            Cert::Good,
            Reply::status(404),
            Want::Error(
                |e| matches!(e, StsError::Status { status: 404, .. }),
                StsPolicyFetchError,
            ),
        ),
        row(
            "500",
            Cert::Good,
            Reply::status(500),
            Want::Error(
                |e| matches!(e, StsError::Status { status: 500, .. }),
                StsPolicyFetchError,
            ),
        ),
        row(
            "301 redirect is not followed",
            Cert::Good,
            Reply::redirect(301, "https://policy.elsewhere.test/.well-known/mta-sts.txt"),
            Want::Error(
                |e| matches!(e, StsError::Redirect { status: 301, location: Some(l), .. } if l.contains("elsewhere")),
                StsPolicyFetchError,
            ),
        ),
        row(
            "body over 64 KiB with Content-Length",
            Cert::Good,
            Reply::policy(&big_body()),
            Want::Error(
                |e| matches!(e, StsError::TooLarge { limit: 65536, .. }),
                StsPolicyInvalid,
            ),
        ),
        row(
            "body over 64 KiB without Content-Length",
            Cert::Good,
            Reply::policy(&big_body()).without_content_length(),
            Want::Error(|e| matches!(e, StsError::TooLarge { .. }), StsPolicyInvalid),
        ),
        row(
            "wrong content type",
            Cert::Good,
            Reply::policy(POLICY).with_content_type(Some("text/html")),
            Want::Error(
                |e| matches!(e, StsError::ContentType { content_type: Some(t), .. } if t == "text/html"),
                StsPolicyInvalid,
            ),
        ),
        row(
            "no content type",
            Cert::Good,
            Reply::policy(POLICY).with_content_type(None),
            Want::Error(
                |e| {
                    matches!(
                        e,
                        StsError::ContentType {
                            content_type: None,
                            ..
                        }
                    )
                },
                StsPolicyInvalid,
            ),
        ),
        row(
            "invalid syntax",
            Cert::Good,
            Reply::policy("version: STSv1\nmode: enforce\nmax_age: 86400\n"),
            Want::Error(|e| matches!(e, StsError::Invalid { .. }), StsPolicyInvalid),
        ),
        row(
            "max_age too large",
            Cert::Good,
            Reply::policy("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n"),
            Want::Error(|e| matches!(e, StsError::Invalid { .. }), StsPolicyInvalid),
        ),
        row(
            "certificate for the wrong name",
            Cert::WrongName,
            Reply::policy(POLICY),
            Want::Error(
                |e| {
                    matches!(
                        e,
                        StsError::Tls {
                            certificate: TlsResultType::CertificateHostMismatch,
                            ..
                        }
                    )
                },
                StsWebpkiInvalid,
            ),
        ),
        row(
            "untrusted certificate",
            Cert::Untrusted,
            Reply::policy(POLICY),
            Want::Error(
                |e| {
                    matches!(
                        e,
                        StsError::Tls {
                            certificate: TlsResultType::CertificateNotTrusted,
                            ..
                        }
                    )
                },
                StsWebpkiInvalid,
            ),
        ),
        row(
            "expired certificate",
            Cert::Expired,
            Reply::policy(POLICY),
            Want::Error(
                |e| {
                    matches!(
                        e,
                        StsError::Tls {
                            certificate: TlsResultType::CertificateExpired,
                            ..
                        }
                    )
                },
                StsWebpkiInvalid,
            ),
        ),
    ];
    for (i, row) in rows.into_iter().enumerate() {
        let domain = format!("d{i}.example.test");
        let ip = Ipv4Addr::new(127, 0, 1, 10 + i as u8);
        let server = env.server(&domain, ip, row.cert).await;
        server.set_reply(row.reply);
        let fetcher = env.fetcher(server.port(), Duration::from_secs(10));
        let got = fetcher.fetch(&Domain::parse(&domain).unwrap()).await;
        match (&row.want, &got) {
            (Want::Policy(mode), Ok(policy)) => {
                assert_eq!(policy.mode, *mode, "{}", row.name);
                assert!(policy.matches_mx("mx1.example.test"), "{}", row.name);
                assert!(policy.matches_mx("a.mx.example.test"), "{}", row.name);
            }
            (Want::Error(check, result), Err(error)) => {
                assert!(check(error), "{}: wrong error {error:?}", row.name);
                assert_eq!(TlsResultType::from(error), *result, "{}: {error}", row.name);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", row.name),
        }
        // Redirects are never followed, and a certificate problem stops the
        // fetch before any request is sent.
        let want_requests = match row.cert {
            Cert::Good => 1,
            _ => 0,
        };
        assert_eq!(server.requests(), want_requests, "{}", row.name);
    }
}

/// §3.3: the fetch asks `mta-sts.<domain>` for the well-known path, with
/// that name as SNI and Host, on the configured port.
#[tokio::test]
async fn request_names_the_policy_host() {
    let env = env().await;
    let server = env
        .server("example.test", Ipv4Addr::new(127, 0, 2, 1), Cert::Good)
        .await;
    server.set_policy(POLICY);
    let fetcher = env.fetcher(server.port(), Duration::from_secs(10));
    fetcher
        .fetch(&Domain::parse("Example.Test.").unwrap())
        .await
        .unwrap();
    let log = server.request_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/.well-known/mta-sts.txt");
    assert_eq!(log[0].sni.as_deref(), Some("mta-sts.example.test"));
    assert_eq!(
        log[0].host.as_deref(),
        Some(format!("mta-sts.example.test:{}", server.port()).as_str())
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let env = env().await;
    let server = env
        .server("example.test", Ipv4Addr::new(127, 0, 2, 2), Cert::Good)
        .await;
    server.set_reply(Reply::policy(POLICY).with_delay(Duration::from_secs(5)));
    let fetcher = env.fetcher(server.port(), Duration::from_millis(500));
    let err = fetcher
        .fetch(&Domain::parse("example.test").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Timeout { .. }), "{err:?}");
    assert_eq!(
        TlsResultType::from(&err),
        TlsResultType::StsPolicyFetchError
    );
}

#[tokio::test]
async fn policy_host_without_address_is_a_dns_error() {
    let env = env().await;
    let fetcher = env.fetcher(443, Duration::from_secs(10));
    let err = fetcher
        .fetch(&Domain::parse("nowhere.example.test").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StsError::Dns { source, .. } if source.is_not_found()),
        "{err:?}"
    );
}

/// Record-level rows, through the engine: no policy and no fetch.
#[tokio::test]
async fn record_outcomes() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let server = env
        .server("two.example.test", Ipv4Addr::new(127, 0, 2, 3), Cert::Good)
        .await;
    server.set_policy(POLICY);
    env.dns
        .add_a("mta-sts.none.example.test", Ipv4Addr::new(127, 0, 2, 3));
    let engine = PolicyEngine::new(
        env.resolver.clone(),
        env.fetcher(server.port(), Duration::from_secs(10)),
        &store,
        Arc::new(SystemClock),
    )
    .unwrap();

    // §3.1: two v=STSv1 records → no policy.
    env.dns
        .add_txt("_mta-sts.two.example.test", "v=STSv1; id=1");
    env.dns
        .add_txt("_mta-sts.two.example.test", "v=STSv1; id=2");
    let got = engine
        .policy_for(&Domain::parse("two.example.test").unwrap())
        .await;
    assert!(
        matches!(
            got,
            PolicyLookup::None(NoPolicy::NoRecord(NoPolicyReason::MultipleRecords(2)))
        ),
        "{got:?}"
    );

    // No TXT record → no policy.
    let got = engine
        .policy_for(&Domain::parse("none.example.test").unwrap())
        .await;
    assert!(
        matches!(
            got,
            PolicyLookup::None(NoPolicy::NoRecord(NoPolicyReason::NoRecord))
        ),
        "{got:?}"
    );
    assert_eq!(server.requests(), 0, "no record, no fetch");
    assert!(engine.list().await.unwrap().is_empty());

    // With a single record the same engine fetches and caches.
    env.dns.remove("_mta-sts.two.example.test", "TXT");
    env.dns
        .add_txt("_mta-sts.two.example.test", "v=STSv1; id=3");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the resolver's cache (TTL 1 s)
    let got = engine
        .policy_for(&Domain::parse("two.example.test").unwrap())
        .await;
    assert_eq!(got.mode(), Some(Mode::Enforce), "{got:?}");
    assert_eq!(server.requests(), 1);
}
