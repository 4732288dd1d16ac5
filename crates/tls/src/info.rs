//! What was negotiated on a TLS session.

use std::fmt;

use rustls::{CommonState, ProtocolVersion};

/// What was negotiated on a TLS session, for the `Received` header and logs:
/// e.g. version `"TLSv1.3"`, cipher `"TLS13_AES_256_GCM_SHA384"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version, `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: String,
    /// The IANA-style cipher suite name as rustls spells it.
    pub cipher: String,
}

impl TlsInfo {
    /// Reads the negotiated version and cipher suite; `None` before the handshake completed.
    pub fn from_connection(conn: &CommonState) -> Option<TlsInfo> {
        let version = match conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = conn.negotiated_cipher_suite()?.suite();
        let cipher = match suite.as_str() {
            Some(name) => name.to_owned(),
            None => format!("{suite:?}"),
        };
        Some(TlsInfo { version, cipher })
    }
}

impl fmt::Display for TlsInfo {
    /// The RFC 5321 `Received` header style: `version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version={} cipher={}", self.version, self.cipher)
    }
}
