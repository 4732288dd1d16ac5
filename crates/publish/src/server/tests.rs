//! The listener over real TCP and TLS on loopback (the self-signed
//! certificate of `portcullis-tls`, trusted by the test client): what each
//! request gets, and the limits.

use super::*;
use crate::site::Site;
use portcullis_config::Publish;
use portcullis_dns::MemoryResolver;
use portcullis_tls::rustls::pki_types::ServerName;
use portcullis_tls::rustls::{ClientConfig, RootCertStore};
use portcullis_tls::tokio_rustls::TlsConnector;
use portcullis_tlsrpt::received::{Channel, IntakeError, MAX_REPORT_BYTES};
use portcullis_types::Domain;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The store's stand-in at the trait boundary: records what it was given
/// and answers as told.
struct Intake {
    taken: Mutex<Vec<Vec<u8>>>,
    answer: fn() -> Result<String, IntakeError>,
}

impl ReportIntake for Intake {
    fn take(&self, body: &[u8], channel: Channel) -> Result<String, IntakeError> {
        assert_eq!(channel, Channel::Https);
        self.taken.lock().unwrap().push(body.to_vec());
        (self.answer)()
    }
}

struct Running {
    addr: SocketAddr,
    connector: TlsConnector,
    metrics: Arc<PublishMetrics>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(intake: Option<Arc<dyn ReportIntake>>, max: u32, limits: Limits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(dir.path(), "mta-sts.example.test").unwrap();
    let mut roots = RootCertStore::empty();
    for c in portcullis_tls::load_certs(&dir.path().join(portcullis_tls::CERT_FILE)).unwrap() {
        roots.add(c).unwrap();
    }
    let client = ClientConfig::builder_with_provider(portcullis_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let dns = MemoryResolver::new().mx("example.test", 10, "mx1.example.test");
    let site = Site::new(
        dns,
        Publish::default(),
        &[Domain::parse("example.test").unwrap()],
    );
    let metrics = Arc::new(PublishMetrics::default());
    let server = Arc::new(Server {
        site,
        intake,
        metrics: metrics.clone(),
        limits,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run(listener, tls, max, shutdown.clone()));
    Running {
        addr,
        connector: TlsConnector::from(Arc::new(client)),
        metrics,
        shutdown,
        _dir: dir,
    }
}

type Tls = portcullis_tls::tokio_rustls::client::TlsStream<TcpStream>;

impl Running {
    async fn connect(&self) -> Tls {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("mta-sts.example.test").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }

    /// Sends `request` whole and returns (status, headers, body).
    async fn ask(&self, request: &[u8]) -> (u16, String, String) {
        let mut s = self.connect().await;
        s.write_all(request).await.unwrap();
        read_reply(&mut s).await
    }
}

async fn read_reply(s: &mut Tls) -> (u16, String, String) {
    let mut out = Vec::new();
    // The server closes after its reply; a reset after it is fine too.
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn post(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /tlsrpt HTTP/1.1\r\nHost: mta-sts.example.test\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn intake(answer: fn() -> Result<String, IntakeError>) -> Arc<Intake> {
    Arc::new(Intake {
        taken: Mutex::new(Vec::new()),
        answer,
    })
}

#[tokio::test]
async fn the_policy_is_served_for_our_host_only() {
    let r = start(None, 4, Limits::default()).await;
    let (status, head, body) = r.ask(&get(POLICY_PATH, "MTA-STS.Example.Test:443")).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/plain\r\n"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    let policy = portcullis_policy::Policy::parse(&body).unwrap();
    assert!(policy.matches_mx("mx1.example.test"));
    let (status, head, body) = r
        .ask(b"HEAD /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.test\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty(), "HEAD has no body: {body:?}");
    assert_eq!(r.ask(&get(POLICY_PATH, "mta-sts.other.test")).await.0, 404);
    assert_eq!(r.ask(&get(POLICY_PATH, "example.test")).await.0, 404);
    assert_eq!(r.ask(&get("/", "mta-sts.example.test")).await.0, 404);
    assert_eq!(
        r.ask(&get("/.well-known/mta-sts.txt/", "mta-sts.example.test"))
            .await
            .0,
        404
    );
    let (status, head, _) = r
        .ask(b"POST /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.test\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(r.ask(b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").await.0, 405);
    assert_eq!(
        r.ask(b"GET /tlsrpt HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
        405
    );
    assert_eq!(r.ask(b"GET / HTTP/1.1\r\n\r\n").await.0, 400);
    assert_eq!(r.metrics.get(Outcome::Policy), 2);
    assert_eq!(r.metrics.get(Outcome::NotFound), 4);
    assert_eq!(r.metrics.get(Outcome::MethodNotAllowed), 3);
    assert_eq!(r.metrics.get(Outcome::BadRequest), 1);
}

#[tokio::test]
async fn reports_go_to_the_intake_which_decides_the_status() {
    let none = start(None, 4, Limits::default()).await;
    assert_eq!(
        none.ask(&post("application/tlsrpt+json", b"{}")).await.0,
        503
    );

    let ok = intake(|| Ok("r1".into()));
    let r = start(Some(ok.clone()), 4, Limits::default()).await;
    let (status, _, body) = r
        .ask(&post("application/tlsrpt+gzip", b"\x1f\x8bzipped"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body.trim(), "r1");
    let (status, _, _) = r
        .ask(&post(
            "Application/TLSRPT+JSON; charset=utf-8",
            br#"{"report-id":"x"}"#,
        ))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        *ok.taken.lock().unwrap(),
        vec![b"\x1f\x8bzipped".to_vec(), br#"{"report-id":"x"}"#.to_vec()]
    );
    assert_eq!(r.ask(&post("text/plain", b"{}")).await.0, 415);
    assert_eq!(
        r.ask(b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\n\r\n")
            .await
            .0,
        411
    );
    assert_eq!(
        r.ask(b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: gzip\r\n\r\n")
            .await
            .0,
        501
    );
    assert_eq!(
        ok.taken.lock().unwrap().len(),
        2,
        "refused POSTs never reach the intake"
    );
    // A chunked report is decoded before the intake sees it.
    let (status, _, _) = r
        .ask(b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n")
        .await;
    assert_eq!(status, 201);
    assert_eq!(ok.taken.lock().unwrap()[2], br#"{"a"}"#.to_vec());

    let invalid = start(
        Some(intake(|| Err(IntakeError::Invalid("not json".into())))),
        4,
        Limits::default(),
    )
    .await;
    assert_eq!(
        invalid
            .ask(&post("application/tlsrpt+json", b"nope"))
            .await
            .0,
        400
    );
    let failing = start(
        Some(intake(|| Err(IntakeError::Store("disk".into())))),
        4,
        Limits::default(),
    )
    .await;
    assert_eq!(
        failing.ask(&post("application/tlsrpt+json", b"{}")).await.0,
        503
    );
    assert_eq!(failing.metrics.get(Outcome::ReportUnavailable), 1);
}

/// A body over the cap is refused by its announced length: the reply
/// comes although not one byte of the body was sent.
#[tokio::test]
async fn an_oversized_report_gets_413_before_its_body_is_read() {
    let ok = intake(|| Ok("r".into()));
    let r = start(Some(ok.clone()), 4, Limits::default()).await;
    let head = format!(
        "POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Length: {}\r\n\r\n",
        MAX_REPORT_BYTES + 1
    );
    let (status, _, _) = r.ask(head.as_bytes()).await;
    assert_eq!(status, 413);
    assert!(ok.taken.lock().unwrap().is_empty());
    // A chunked body over the cap is refused as it crosses it.
    let mut chunked = b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", MAX_REPORT_BYTES + 1).as_bytes());
    assert_eq!(r.ask(&chunked).await.0, 413);
    assert!(ok.taken.lock().unwrap().is_empty());
    let exactly = vec![b'x'; MAX_REPORT_BYTES];
    assert_eq!(
        r.ask(&post("application/tlsrpt+json", &exactly)).await.0,
        201
    );
    assert_eq!(ok.taken.lock().unwrap()[0].len(), MAX_REPORT_BYTES);
}

#[tokio::test]
async fn a_head_that_never_ends_is_cut_off_and_so_is_a_body() {
    let limits = Limits {
        head: Duration::from_millis(300),
        request: Duration::from_millis(600),
        write: Duration::from_secs(5),
    };
    let r = start(Some(intake(|| Ok("r".into()))), 4, limits).await;
    let mut s = r.connect().await;
    s.write_all(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.exa")
        .await
        .unwrap();
    let (status, _, _) = read_reply(&mut s).await;
    assert_eq!(status, 408);
    let mut s = r.connect().await;
    s.write_all(b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: 10\r\n\r\n{").await.unwrap();
    let (status, _, _) = read_reply(&mut s).await;
    assert_eq!(status, 408);
    assert_eq!(r.metrics.get(Outcome::Timeout), 2);

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEAD)
    );
    assert_eq!(r.ask(big.as_bytes()).await.0, 400);
}

/// Past the listener's cap a connection is closed at once, and the cap
/// frees as connections end.
#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let limits = Limits {
        head: Duration::from_secs(30),
        ..Limits::default()
    };
    let r = start(None, 1, limits).await;
    let held = r.connect().await;
    let tcp = TcpStream::connect(r.addr).await.unwrap();
    let name = ServerName::try_from("mta-sts.example.test").unwrap();
    assert!(
        r.connector.connect(name, tcp).await.is_err(),
        "a second connection is refused"
    );
    assert_eq!(r.metrics.get(Outcome::Busy), 1);
    drop(held);
    // Once the held connection is gone, the place is free again.
    let mut status = 0;
    for _ in 0..50 {
        let tcp = TcpStream::connect(r.addr).await.unwrap();
        let name = ServerName::try_from("mta-sts.example.test").unwrap();
        if let Ok(mut s) = r.connector.connect(name, tcp).await {
            s.write_all(&get(POLICY_PATH, "mta-sts.example.test"))
                .await
                .unwrap();
            status = read_reply(&mut s).await.0;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}
