//! The rustls certificate verifier that authenticates a server by its TLSA
//! records (RFC 7672 §3.1): DANE-EE by the leaf alone, DANE-TA by a chain to
//! a designated anchor plus a reference identifier.

use std::fmt;
use std::sync::Arc;

use portcullis_types::Tlsa;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use super::matching::Presented;
use super::{TlsaMismatch, anchor};

/// Accepts a server when one of its usable TLSA records does; the handshake
/// signatures are checked as always, so a certificate without its key fails.
pub(super) struct DaneVerifier {
    /// Usable DANE-EE(3) records.
    pub(super) ee: Vec<Tlsa>,
    /// Usable DANE-TA(2) records.
    pub(super) ta: Vec<Tlsa>,
    /// The reference identifiers a DANE-TA leaf must carry (DNS names).
    pub(super) names: Vec<ServerName<'static>>,
    /// The crypto provider whose algorithms check chains and signatures.
    pub(super) provider: Arc<CryptoProvider>,
}

impl fmt::Debug for DaneVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaneVerifier")
            .field("ee", &self.ee.len())
            .field("ta", &self.ta.len())
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl DaneVerifier {
    /// The first reference identifier, for logs.
    fn mx(&self) -> String {
        self.names
            .first()
            .map(|n| n.to_str().into_owned())
            .unwrap_or_default()
    }

    /// DANE-TA: the leaf chains to a designated anchor (validity dates
    /// checked at `now`) and names one of the reference identifiers.
    fn verify_ta(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        anchors: Vec<TrustAnchor<'static>>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let roots = RootCertStore { roots: anchors };
        let parsed = ParsedCertificate::try_from(leaf)?;
        let algorithms = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &roots, intermediates, now, algorithms)?;
        let mut outcome = Err(CertificateError::NotValidForName.into());
        for name in &self.names {
            outcome = verify_server_name(&parsed, name);
            if outcome.is_ok() {
                break;
            }
        }
        outcome
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf = Presented::new(end_entity);
        if self.ee.iter().any(|r| leaf.matches(r)) {
            tracing::info!(mx = %self.mx(), usage = "dane-ee", "DANE: server authenticated by its TLSA record");
            return Ok(ServerCertVerified::assertion());
        }
        let chain: Vec<Presented<'_>> = intermediates.iter().map(Presented::new).collect();
        let ta: Vec<&Tlsa> = self.ta.iter().collect();
        let anchors = anchor::anchors(&ta, &leaf, &chain);
        if anchors.is_empty() {
            tracing::info!(mx = %self.mx(), "DANE: no TLSA record matches the server's certificates");
            return Err(TlsaMismatch::error());
        }
        match self.verify_ta(end_entity, intermediates, anchors, now) {
            Ok(()) => {
                tracing::info!(mx = %self.mx(), usage = "dane-ta", "DANE: server authenticated by its TLSA record");
                Ok(ServerCertVerified::assertion())
            }
            Err(error) => {
                tracing::info!(mx = %self.mx(), %error, "DANE: the chain to the TLSA trust anchor fails");
                Err(error)
            }
        }
    }

    crate::provider::provider_signature_checks!();
}
