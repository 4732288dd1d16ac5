//! DANE for SMTP (RFC 7672 §3): a rustls client configuration that
//! authenticates the server by its TLSA records instead of (not in
//! addition to) the Web PKI.
//!
//! - DANE-EE(3): the server's own certificate (selector 0) or public key
//!   (selector 1) matches a record; names and validity dates are ignored
//!   (§3.1.1).
//! - DANE-TA(2): a certificate of the chain the server sent matches a
//!   record (or the record is the whole TA certificate or key, §3.1.2), the
//!   leaf chains to it, and the leaf carries one of the reference
//!   identifiers (the MX host name; for an implicit MX also the domain,
//!   §3.2.2); validity dates are checked.
//! - Records that are not usable for SMTP ([`Tlsa::usable`]) are ignored;
//!   with none usable there is no DANE configuration.
//!
//! Failures stay distinguishable for TLS-RPT through [`crate::classify`]:
//! no record matching is `tlsa-invalid`, an expired DANE-TA chain
//! `certificate-expired`, a DANE-TA leaf without a reference identifier
//! `certificate-host-mismatch` (RFC 8460 §4.3).

mod anchor;
mod matching;
mod verifier;

use std::sync::Arc;

use portcullis_types::Tlsa;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use crate::TlsError;
use crate::provider::provider;
use verifier::DaneVerifier;

/// What DANE authenticates a server by: its usable TLSA records and the
/// reference identifiers a DANE-TA chain must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneAuthority {
    /// The TLSA RRset (secure), unusable records included (ignored).
    pub records: Vec<Tlsa>,
    /// The names a DANE-TA leaf must carry: the MX host name first (also
    /// the SNI), then, for an implicit MX, the recipient domain.
    pub names: Vec<String>,
}

impl crate::ClientTls {
    /// A configuration that accepts a server only when `authority` does
    /// (TLS 1.2+, the same provider and clock as the other configurations).
    /// Fails when no record of `authority` is usable.
    pub fn dane_config(&self, authority: &DaneAuthority) -> Result<Arc<ClientConfig>, TlsError> {
        let usable = authority.records.iter().filter(|r| r.usable());
        let (ta, ee): (Vec<Tlsa>, Vec<Tlsa>) = usable.cloned().partition(|r| r.usage == 2);
        if ta.is_empty() && ee.is_empty() {
            return Err(TlsError::Verifier {
                detail: "no usable TLSA record (RFC 7672 §3.1)".into(),
            });
        }
        let names = authority
            .names
            .iter()
            .filter_map(|name| ServerName::try_from(name.trim_end_matches('.').to_owned()).ok())
            .filter(|name| matches!(name, ServerName::DnsName(_)))
            .collect();
        let verifier = DaneVerifier {
            ee,
            ta,
            names,
            provider: provider(),
        };
        let config = self
            .builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The verifier's error when no usable TLSA record matches the server's
/// certificates; [`crate::classify`] maps it to `tlsa-invalid`.
#[derive(Debug, thiserror::Error)]
#[error("no TLSA record matches the server's certificates")]
pub(crate) struct TlsaMismatch;

impl TlsaMismatch {
    /// The rustls error carrying it.
    pub(crate) fn error() -> rustls::Error {
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(TlsaMismatch))).into()
    }

    /// True when `error` is the one [`TlsaMismatch::error`] makes.
    pub(crate) fn is(error: &rustls::OtherError) -> bool {
        error.0.downcast_ref::<TlsaMismatch>().is_some()
    }
}

/// What the DANE verifier makes of a chain a server sent (`chain[0]` the
/// leaf) under `records`, before any signature check: how many records
/// the leaf matches, and how many trust anchors the records designate.
/// For the fuzz target `dane_chain`: certificates come from the network,
/// so every byte string must be read without a panic.
#[doc(hidden)]
pub fn inspect_chain(chain: &[Vec<u8>], records: &[Tlsa]) -> (usize, usize) {
    let ders: Vec<rustls_pki_types::CertificateDer<'_>> = chain
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.as_slice()))
        .collect();
    let Some((leaf, rest)) = ders.split_first() else {
        return (0, 0);
    };
    let leaf = matching::Presented::new(leaf);
    let rest: Vec<matching::Presented<'_>> = rest.iter().map(matching::Presented::new).collect();
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    let matched = usable.iter().filter(|r| leaf.matches(r)).count();
    let ta: Vec<&Tlsa> = usable.iter().copied().filter(|r| r.usage == 2).collect();
    (matched, anchor::anchors(&ta, &leaf, &rest).len())
}
