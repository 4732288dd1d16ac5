//! Outbound client configurations: PKIX-verifying and opportunistic.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::provider::{PROTOCOL_VERSIONS, provider};
use crate::result_type::{TlsResultType, classify};
use crate::{TlsError, pem};

/// Outbound TLS client configurations (SMTP delivery, MTA-STS policy fetches).
///
/// Two kinds: [`pkix`](ClientTls::pkix) verifies the chain and the host name
/// (what an `enforce` MTA-STS policy demands, RFC 8461 §4.2), and
/// [`opportunistic`](ClientTls::opportunistic) accepts any certificate, as
/// RFC 3207 opportunistic STARTTLS does in practice, while still working out
/// whether the certificate would have verified.
#[derive(Debug, Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    time: Option<Arc<dyn TimeProvider>>,
}

impl ClientTls {
    /// An opportunistic configuration that accepts any certificate; whether it
    /// would have verified against the Web PKI roots is logged at `debug`.
    pub fn opportunistic() -> Arc<ClientConfig> {
        ClientTls::with_roots(web_roots()).opportunistic_config().0
    }

    /// A PKIX-verifying configuration trusting the Web PKI roots and the PEM
    /// certificates in `extra_roots`.
    pub fn pkix(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, TlsError> {
        ClientTls::new(extra_roots)?.pkix_config()
    }

    /// Trust anchors: the Web PKI roots (`webpki-roots`) plus every certificate in
    /// the PEM files `extra_roots`.
    pub fn new(extra_roots: &[PathBuf]) -> Result<ClientTls, TlsError> {
        let mut roots = web_roots();
        for path in extra_roots {
            add_roots_from_file(&mut roots, path)?;
        }
        Ok(ClientTls::with_roots(roots))
    }

    /// Exactly the trust anchors in `roots` (no Web PKI roots); for tests and
    /// private deployments.
    pub fn with_roots(roots: RootCertStore) -> ClientTls {
        ClientTls {
            roots: Arc::new(roots),
            time: None,
        }
    }

    /// Uses `time` instead of the system clock for certificate validity checks.
    pub fn with_time_provider(mut self, time: Arc<dyn TimeProvider>) -> ClientTls {
        self.time = Some(time);
        self
    }

    /// The trust anchors in use.
    pub fn roots(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.roots)
    }

    /// A configuration that verifies chain, validity and host name against
    /// [`roots`](ClientTls::roots); fails when there are no trust anchors.
    pub fn pkix_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = self.webpki_verifier()?;
        let config = self
            .builder()
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// An opportunistic configuration plus the record of whether the peer's
    /// certificate would have passed [`pkix_config`](ClientTls::pkix_config).
    ///
    /// Use one configuration per connection when the record matters: the record
    /// holds the outcome of the latest handshake made with it.
    pub fn opportunistic_config(&self) -> (Arc<ClientConfig>, VerificationRecord) {
        let record = VerificationRecord::default();
        let provider = provider();
        let verifier = OpportunisticVerifier {
            inner: self.webpki_verifier().ok(),
            provider: Arc::clone(&provider),
            record: record.clone(),
        };
        let config = self
            .builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        (Arc::new(config), record)
    }

    /// A ring-based builder limited to TLS 1.3 and 1.2, with the injected clock if any.
    pub(crate) fn builder(&self) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
        let builder = match &self.time {
            Some(time) => ClientConfig::builder_with_details(provider(), Arc::clone(time)),
            None => ClientConfig::builder_with_provider(provider()),
        };
        match builder.with_protocol_versions(PROTOCOL_VERSIONS) {
            Ok(builder) => builder,
            // The ring provider has TLS 1.3 and 1.2 suites and matching key exchange
            // groups, so rustls's consistency check cannot fail; the unit test
            // `builders_accept_ring_with_tls13_and_tls12` keeps this true.
            Err(e) => unreachable!("ring provider rejected TLS 1.3/1.2: {e}"),
        }
    }

    fn webpki_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
        WebPkiServerVerifier::builder_with_provider(Arc::clone(&self.roots), provider())
            .build()
            .map_err(|e| TlsError::Verifier {
                detail: e.to_string(),
            })
    }
}

/// The Web PKI roots compiled in from `webpki-roots`.
pub fn web_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// Adds every certificate of the PEM file at `path` to `roots` as a trust anchor.
pub fn add_roots_from_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    for der in pem::load_certs(path)? {
        roots.add(der).map_err(|source| TlsError::BadTrustAnchor {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Whether a certificate accepted opportunistically would have passed PKIX validation.
#[derive(Debug, Clone, PartialEq)]
pub enum WouldVerify {
    /// Chain, validity and host name were all good.
    Yes,
    /// Validation failed; `result_type` is the RFC 8460 classification of `error`.
    No {
        /// The TLS-RPT result type for the failure.
        result_type: TlsResultType,
        /// The verifier's error.
        error: rustls::Error,
    },
}

/// Shared slot filled by an opportunistic configuration's verifier during a handshake.
#[derive(Debug, Clone, Default)]
pub struct VerificationRecord(Arc<Mutex<Option<WouldVerify>>>);

impl VerificationRecord {
    /// The outcome of the latest handshake; `None` before any certificate was seen.
    pub fn get(&self) -> Option<WouldVerify> {
        match self.0.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: WouldVerify) {
        match self.0.lock() {
            Ok(mut guard) => *guard = Some(value),
            Err(poisoned) => *poisoned.into_inner() = Some(value),
        }
    }
}

/// Accepts any server certificate but checks the handshake signatures, and
/// records what PKIX validation would have said.
struct OpportunisticVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    record: VerificationRecord,
}

impl fmt::Debug for OpportunisticVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpportunisticVerifier")
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for OpportunisticVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = match &self.inner {
            Some(inner) => {
                match inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                ) {
                    Ok(_) => WouldVerify::Yes,
                    Err(error) => WouldVerify::No {
                        result_type: classify(&error),
                        error,
                    },
                }
            }
            None => WouldVerify::No {
                result_type: TlsResultType::CertificateNotTrusted,
                error: rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            },
        };
        tracing::debug!(server = ?server_name, outcome = ?outcome, "opportunistic TLS: certificate accepted");
        self.record.set(outcome);
        Ok(ServerCertVerified::assertion())
    }

    crate::provider::provider_signature_checks!();
}
