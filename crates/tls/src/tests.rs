//! Unit tests that need real certificates and real handshakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::*;

mod dane;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Sets validity from `SystemTime`s without naming the `time` crate.
fn set_validity(params: &mut CertificateParams, from: SystemTime, to: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + from.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    params.not_after = epoch + to.duration_since(SystemTime::UNIX_EPOCH).unwrap();
}

/// A throw-away CA for these tests (the full test PKI lives in tests/support).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

struct Pair {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "tls unit test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        set_validity(&mut params, now - DAY, now + 365 * DAY);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    fn issue_valid(&self, names: &[&str], from: SystemTime, to: SystemTime) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, from, to);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn issue(&self, names: &[&str]) -> Pair {
        let now = SystemTime::now();
        self.issue_valid(names, now - DAY, now + 30 * DAY)
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for der in crate::pem::certs_from_pem(Path::new("ca"), self.cert_pem.as_bytes()).unwrap() {
            roots.add(der).unwrap();
        }
        roots
    }
}

impl Pair {
    fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// Handshakes `server` with a client using `client_config`, connecting to `name`.
/// Returns what the client negotiated, or the client's handshake error.
async fn handshake(
    server: &ServerTls,
    client_config: Arc<ClientConfig>,
    name: &str,
) -> Result<TlsInfo, rustls::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = server.acceptor();
    let server_task = tokio::spawn(async move {
        let mut tls = acceptor.accept(server_io).await.ok()?;
        let info = TlsInfo::from_connection(tls.get_ref().1);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.ok()?;
        tls.write_all(&buf).await.ok()?;
        tls.shutdown().await.ok()?;
        info
    });
    let connector = TlsConnector::from(client_config);
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    match connector.connect(server_name, client_io).await {
        Ok(mut tls) => {
            let info = TlsInfo::from_connection(tls.get_ref().1).unwrap();
            tls.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            let server_info = server_task.await.unwrap().unwrap();
            assert_eq!(server_info, info, "both ends agree");
            Ok(info)
        }
        Err(e) => {
            server_task.abort();
            Err(*e.into_inner().unwrap().downcast::<rustls::Error>().unwrap())
        }
    }
}

fn client(roots: RootCertStore) -> Arc<ClientConfig> {
    ClientTls::with_roots(roots).pkix_config().unwrap()
}

fn client_tls12_only(roots: RootCertStore) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[test]
fn builders_accept_ring_with_tls13_and_tls12() {
    // Guards the `unreachable!` in ClientTls::builder.
    assert!(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .is_ok()
    );
    assert!(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .is_ok()
    );
}

#[test]
fn from_files_loads_a_good_pair_and_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca
        .issue(&["mx.example.test", "127.0.0.1"])
        .write(dir.path(), "mx");
    let tls = ServerTls::from_files(&cert, &key).unwrap();
    let summary = tls.describe();
    assert_eq!(summary.names, vec!["mx.example.test", "127.0.0.1"]);
    assert_eq!(summary.subject, "CN=mx.example.test");
    assert_eq!(summary.issuer, "CN=tls unit test CA");
    assert_eq!(summary.sha256.len(), 64);
    assert!(summary.sha256.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(summary.is_valid_at(SystemTime::now()));
    let text = summary.to_string();
    assert!(
        text.contains("mx.example.test") && text.contains(&summary.sha256),
        "{text}"
    );
}

#[test]
fn from_files_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue(&["mx.example.test"]).write(dir.path(), "mx");
    let missing = dir.path().join("nope.pem");

    let err = ServerTls::from_files(&missing, &key).unwrap_err();
    assert!(
        matches!(&err, TlsError::Read { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let err = ServerTls::from_files(&cert, &missing).unwrap_err();
    assert!(
        matches!(&err, TlsError::Read { path, .. } if path == &missing),
        "{err:?}"
    );
}

#[test]
fn from_files_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue(&["mx.example.test"]).write(dir.path(), "mx");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM at all\n").unwrap();

    let err = ServerTls::from_files(&garbage, &key).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if path == &garbage),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    let err = ServerTls::from_files(&cert, &garbage).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoPrivateKey { path } if path == &garbage),
        "{err:?}"
    );

    // The certificate where the key should be: still "no key".
    let err = ServerTls::from_files(&cert, &cert).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoPrivateKey { path } if path == &cert),
        "{err:?}"
    );

    // A truncated PEM section is reported as bad PEM.
    let truncated = dir.path().join("truncated.pem");
    let text = std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    let err = ServerTls::from_files(&truncated, &key).unwrap_err();
    assert!(
        matches!(&err, TlsError::BadPem { path, .. } if path == &truncated),
        "{err:?}"
    );
}

#[test]
fn from_files_rejects_a_key_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, _) = ca.issue(&["mx.example.test"]).write(dir.path(), "a");
    let (_, other_key) = ca.issue(&["mx.example.test"]).write(dir.path(), "b");
    let err = ServerTls::from_files(&cert, &other_key).unwrap_err();
    assert!(
        matches!(&err, TlsError::KeyMismatch { cert: c, key: k } if c == &cert && k == &other_key),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("a.crt") && text.contains("b.key"), "{text}");
}

#[test]
fn self_signed_creates_files_then_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = ServerTls::self_signed(&data, "mx.example.test").unwrap();
    let cert = data.join(CERT_FILE);
    let key = data.join(KEY_FILE);
    assert!(cert.is_file() && key.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let summary = first.describe();
    assert_eq!(summary.names, vec!["mx.example.test", "localhost"]);
    assert_eq!(summary.subject, summary.issuer);

    let second = ServerTls::self_signed(&data, "mx.example.test").unwrap();
    assert_eq!(
        second.describe().sha256,
        summary.sha256,
        "reused, not regenerated"
    );

    // Another hostname: a new certificate.
    let third = ServerTls::self_signed(&data, "other.example.test").unwrap();
    assert_ne!(third.describe().sha256, summary.sha256);
    assert!(third.describe().covers("other.example.test"));
}

#[tokio::test]
async fn self_signed_certificate_serves_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(dir.path(), "mx.example.test").unwrap();
    let mut roots = RootCertStore::empty();
    add_roots_from_file(&mut roots, &dir.path().join(CERT_FILE)).unwrap();
    let info = handshake(&tls, client(roots.clone()), "localhost")
        .await
        .unwrap();
    assert_eq!(info.version, "TLSv1.3");
    handshake(&tls, client(roots), "mx.example.test")
        .await
        .unwrap();
}

#[tokio::test]
async fn reload_keeps_the_old_config_on_bad_files_and_swaps_on_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue(&["mx.example.test"]).write(dir.path(), "mx");
    let tls = ServerTls::from_files(&cert, &key).unwrap();
    let acceptor_before = tls.clone();
    let original = tls.describe();

    // Garbage in place of the certificate: error, old certificate still in force.
    std::fs::write(&cert, "garbage").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert_eq!(tls.describe(), original);
    handshake(&tls, client(ca.roots()), "mx.example.test")
        .await
        .unwrap();

    // A key that does not match: same.
    let other = ca.issue(&["mx.example.test"]);
    std::fs::write(&cert, &other.cert_pem).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(tls.describe(), original);

    // Missing key file: same.
    std::fs::remove_file(&key).unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));
    assert_eq!(tls.describe(), original);

    // A good new pair with a new name: swapped, and handshakes use it.
    let renewed = ca.issue(&["mx2.example.test"]);
    std::fs::write(&cert, &renewed.cert_pem).unwrap();
    std::fs::write(&key, &renewed.key_pem).unwrap();
    tls.reload().unwrap();
    let now = tls.describe();
    assert_ne!(now.sha256, original.sha256);
    assert_eq!(now.names, vec!["mx2.example.test"]);
    handshake(&tls, client(ca.roots()), "mx2.example.test")
        .await
        .unwrap();
    // Clones (and acceptors made before the reload) see the new certificate too.
    assert_eq!(acceptor_before.describe(), now);
    let err = handshake(&acceptor_before, client(ca.roots()), "mx.example.test")
        .await
        .unwrap_err();
    assert_eq!(classify(&err), TlsResultType::CertificateHostMismatch);
}

#[tokio::test]
async fn handshake_negotiates_tls13_and_tls12_clients_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (cert, key) = ca.issue(&["mx.example.test"]).write(dir.path(), "mx");
    let tls = ServerTls::from_files(&cert, &key).unwrap();

    let info = handshake(&tls, client(ca.roots()), "mx.example.test")
        .await
        .unwrap();
    assert_eq!(info.version, "TLSv1.3");
    assert!(info.cipher.starts_with("TLS13_"), "{info:?}");
    assert_eq!(
        info.to_string(),
        format!("version=TLSv1.3 cipher={}", info.cipher)
    );

    let info = handshake(&tls, client_tls12_only(ca.roots()), "mx.example.test")
        .await
        .unwrap();
    assert_eq!(info.version, "TLSv1.2");
    assert!(info.cipher.starts_with("TLS_ECDHE_"), "{info:?}");
}

#[tokio::test]
async fn classify_real_handshake_failures() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let stranger = Ca::new();
    let now = SystemTime::now();
    let expired = ca.issue_valid(&["mx.example.test"], now - 60 * DAY, now - DAY);
    let not_yet = ca.issue_valid(&["mx.example.test"], now + DAY, now + 60 * DAY);
    let cases: [(&str, Pair, &str, Option<TlsResultType>); 5] = [
        (
            "good",
            ca.issue(&["mx.example.test"]),
            "mx.example.test",
            None,
        ),
        (
            "wrong-name",
            ca.issue(&["other.example.test"]),
            "mx.example.test",
            Some(TlsResultType::CertificateHostMismatch),
        ),
        (
            "expired",
            expired,
            "mx.example.test",
            Some(TlsResultType::CertificateExpired),
        ),
        (
            "untrusted",
            stranger.issue(&["mx.example.test"]),
            "mx.example.test",
            Some(TlsResultType::CertificateNotTrusted),
        ),
        (
            "not-yet-valid",
            not_yet,
            "mx.example.test",
            Some(TlsResultType::ValidationFailure),
        ),
    ];
    for (case, pair, name, want) in cases {
        let (cert, key) = pair.write(dir.path(), case);
        let server = ServerTls::from_files(&cert, &key).unwrap();
        let got = handshake(&server, client(ca.roots()), name)
            .await
            .err()
            .map(|e| classify(&e));
        assert_eq!(got, want, "case {case}");

        // Opportunistic: always connects, and records what PKIX would have said.
        let (config, record) = ClientTls::with_roots(ca.roots()).opportunistic_config();
        handshake(&server, config, name).await.unwrap();
        let recorded = match record.get().unwrap() {
            WouldVerify::Yes => None,
            WouldVerify::No { result_type, .. } => Some(result_type),
        };
        assert_eq!(recorded, want, "opportunistic case {case}");
    }
}

#[tokio::test]
async fn opportunistic_default_accepts_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::self_signed(dir.path(), "mx.example.test").unwrap();
    let info = handshake(&tls, ClientTls::opportunistic(), "mx.example.test")
        .await
        .unwrap();
    assert_eq!(info.version, "TLSv1.3");
    // The Web PKI does not trust it.
    let err = handshake(&tls, ClientTls::pkix(&[]).unwrap(), "mx.example.test")
        .await
        .unwrap_err();
    assert_eq!(classify(&err), TlsResultType::CertificateNotTrusted);
}

#[test]
fn pkix_extra_roots_are_loaded_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let tls = ClientTls::new(std::slice::from_ref(&ca_path)).unwrap();
    assert_eq!(tls.roots().len(), web_roots().len() + 1);
    ClientTls::pkix(&[ca_path]).unwrap();

    let missing = dir.path().join("missing.pem");
    let err = ClientTls::pkix(std::slice::from_ref(&missing)).unwrap_err();
    assert!(
        matches!(&err, TlsError::Read { path, .. } if path == &missing),
        "{err:?}"
    );

    let err = ClientTls::with_roots(RootCertStore::empty())
        .pkix_config()
        .unwrap_err();
    assert!(matches!(err, TlsError::Verifier { .. }), "{err:?}");
}
