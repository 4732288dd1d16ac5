//! The test PKI: a certificate authority made with rcgen, certificates it
//! issues (valid, expired, any validity window, or self-signed outside it),
//! and ready-made rustls configurations for servers and clients in tests.
//!
//! Everything uses the ring provider explicitly and TLS 1.3 / 1.2 only, as
//! the server does. Test code: failures panic with a message.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const DAY: Duration = Duration::from_secs(24 * 3600);
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority made with rcgen ("Portcullis Test CA").
pub struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_cert: rcgen::Certificate,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

impl TestPki {
    /// A fresh CA named "Portcullis Test CA", valid from yesterday for ten years.
    pub fn new() -> TestPki {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Portcullis Test CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Portcullis tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(&mut params, now - DAY, now + 3650 * DAY);
        let ca_cert = params.self_signed(&key).expect("self-sign CA");
        TestPki {
            issuer: Issuer::new(params, key),
            ca_cert,
        }
    }

    /// The CA certificate as PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// The CA certificate as DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// The CA's SubjectPublicKeyInfo as DER (RFC 5280 §4.1; what a TLSA
    /// record with selector 1 names, e.g. DANE-TA `2 1 1`).
    pub fn ca_spki_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.issuer.key().subject_public_key_info()
    }

    /// A server certificate valid from an hour ago for a year; subject
    /// alternative names are `names` (IP addresses become IP SANs), the common
    /// name is the first name.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let now = SystemTime::now();
        self.issue_with_validity(names, now - Duration::from_secs(3600), now + 365 * DAY)
    }

    /// Like [`issue`](TestPki::issue) but expired: valid from 90 days ago until yesterday.
    pub fn issue_expired(&self, names: &[&str]) -> Issued {
        let now = SystemTime::now();
        self.issue_with_validity(names, now - 90 * DAY, now - DAY)
    }

    /// Like [`issue`](TestPki::issue) with an explicit validity window.
    pub fn issue_with_validity(
        &self,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Issued {
        let key = KeyPair::generate().expect("generate leaf key");
        let params = leaf_params(names, not_before, not_after);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A self-signed certificate for `names`, valid for a year, not issued by any test CA.
    pub fn self_signed(names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("generate key");
        let now = SystemTime::now();
        let params = leaf_params(names, now - Duration::from_secs(3600), now + 365 * DAY);
        let cert = params.self_signed(&key).expect("self-sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("add CA to root store");
        roots
    }

    /// A client configuration (ring, TLS 1.3/1.2) that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(VERSIONS)
                .expect("protocol versions")
                .with_root_certificates(self.root_store())
                .with_no_client_auth(),
        )
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns that path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

/// A certificate and its private key, both PEM (the key is PKCS#8).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// Writes `dir/<stem>.crt` and `dir/<stem>.key` (mode 0600) and returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)
            .unwrap_or_else(|e| panic!("write {}: {e}", cert.display()));
        std::fs::write(&key, &self.key_pem)
            .unwrap_or_else(|e| panic!("write {}: {e}", key.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", key.display()));
        }
        (cert, key)
    }

    /// The same certificate presented with `issuer_pem` after it (the
    /// chain a server sends: leaf first, then its issuer).
    pub fn with_chain(mut self, issuer_pem: &str) -> Issued {
        if !self.cert_pem.ends_with('\n') {
            self.cert_pem.push('\n');
        }
        self.cert_pem.push_str(issuer_pem);
        self
    }

    /// The leaf certificate as DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("certificate PEM")
    }

    /// Every certificate of [`Issued::cert_pem`] (the leaf, then any chain
    /// added with [`Issued::with_chain`]) as DER.
    pub fn chain_der(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM")
    }

    /// The leaf's SubjectPublicKeyInfo as DER (TLSA selector 1, e.g.
    /// DANE-EE `3 1 1`).
    pub fn spki_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        KeyPair::from_pem(&self.key_pem)
            .expect("key PEM")
            .subject_public_key_info()
    }

    /// The private key as DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM")
    }

    /// A server configuration (ring, TLS 1.3/1.2, no client auth) presenting this
    /// certificate, for SMTP sinks and HTTPS policy servers in tests.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(VERSIONS)
                .expect("protocol versions")
                .with_no_client_auth()
                .with_single_cert(self.chain_der(), self.key_der())
                .expect("certificate and key match"),
        )
    }
}

fn leaf_params(names: &[&str], not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                (*name)
                    .to_string()
                    .try_into()
                    .unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}")),
            ),
        })
        .collect();
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, not_before, not_after);
    params
}

/// Sets the validity window as "epoch + offset", which needs neither the
/// `time` crate as a dependency here nor its `std` feature.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("validity after 1970")
    };
    params.not_before = epoch + since(not_before);
    params.not_after = epoch + since(not_after);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Handshakes a server presenting `issued` with `client`, connecting to `name`.
    async fn handshake(
        issued: &Issued,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(issued.server_config());
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(server_io).await.ok()?;
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).await.ok()?;
            tls.write_all(&buf).await.ok()
        });
        let name = ServerName::try_from(name.to_owned()).unwrap();
        match TlsConnector::from(client).connect(name, client_io).await {
            Ok(mut tls) => {
                tls.write_all(b"hi").await.unwrap();
                let mut buf = [0u8; 2];
                tls.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"hi");
                server.await.unwrap().unwrap();
                Ok(())
            }
            Err(e) => {
                server.abort();
                Err(*e.into_inner().unwrap().downcast::<rustls::Error>().unwrap())
            }
        }
    }

    #[tokio::test]
    async fn issued_certificate_verifies_under_the_root_store() {
        let pki = TestPki::new();
        let issued = pki.issue(&["mx.example.test", "127.0.0.1"]);
        handshake(&issued, pki.client_config(), "mx.example.test")
            .await
            .unwrap();
        handshake(&issued, pki.client_config(), "127.0.0.1")
            .await
            .unwrap();
        let err = handshake(&issued, pki.client_config(), "other.example.test")
            .await
            .unwrap_err();
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn expired_and_foreign_certificates_do_not_verify() {
        let pki = TestPki::new();
        let err = handshake(
            &pki.issue_expired(&["mx.example.test"]),
            pki.client_config(),
            "mx.example.test",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );

        let err = handshake(
            &TestPki::self_signed(&["mx.example.test"]),
            pki.client_config(),
            "mx.example.test",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );

        // Another test CA has the same subject name, so webpki finds it as the
        // issuer candidate and the signature check fails instead.
        let other = TestPki::new();
        let err = handshake(
            &other.issue(&["mx.example.test"]),
            pki.client_config(),
            "mx.example.test",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn files_are_written_where_promised() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new();
        let ca = pki.write_ca(dir.path());
        assert_eq!(ca, dir.path().join("ca.pem"));
        assert_eq!(std::fs::read_to_string(&ca).unwrap(), pki.ca_pem());
        let (cert, key) = pki.issue(&["a.example.test"]).write(dir.path(), "a");
        assert_eq!(cert, dir.path().join("a.crt"));
        assert_eq!(key, dir.path().join("a.key"));
        assert!(
            std::fs::read_to_string(cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            std::fs::read_to_string(key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
    }
}
