//! DANE for SMTP (RFC 7672 §3): a rustls client configuration that
//! authenticates the server by its TLSA records instead of (not in
//! addition to) the Web PKI.
//!
//! - DANE-EE(3): the server's own certificate (selector 0) or public key
//!   (selector 1) matches a record; names and validity dates are ignored
//!   (§3.1.1).
//! - DANE-TA(2): a certificate of the chain the server sent matches a
//!   record, the leaf chains to it, and the leaf carries one of the
//!   reference identifiers (the MX host name; for an implicit MX also the
//!   domain, §3.2.2); validity dates are checked.
//! - Records that are not usable for SMTP ([`Tlsa::usable`]) are ignored;
//!   the caller only asks for a DANE configuration when at least one is.
//!
//! SKELETON: the signature is the contract; the body is being built.

use crate::TlsError;
use portcullis_types::Tlsa;
use rustls::ClientConfig;
use std::sync::Arc;

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
    /// (TLS 1.2+, the same provider as the other configurations). Fails
    /// when no record of `authority` is usable.
    pub fn dane_config(&self, authority: &DaneAuthority) -> Result<Arc<ClientConfig>, TlsError> {
        let _ = authority;
        Err(TlsError::Verifier {
            detail: "DANE is not built yet".into(),
        })
    }
}
