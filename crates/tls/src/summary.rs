//! A printable summary of a leaf certificate, for logs and `portcullis status`.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;
use crate::provider::{hex, sha256};

/// What an operator needs to know about the certificate in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// SHA-256 over the leaf certificate's DER, lower-case hex without separators.
    pub sha256: String,
    /// The subject distinguished name, as text (e.g. `CN=mx.example.test`).
    pub subject: String,
    /// The issuer distinguished name, as text.
    pub issuer: String,
    /// The subject alternative names: DNS names as written, IP addresses as text.
    pub names: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertSummary {
    /// Summarises a DER certificate; `path` names its origin in errors.
    pub fn from_der(path: &Path, der: &CertificateDer<'_>) -> Result<CertSummary, TlsError> {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| TlsError::BadCertificate {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push((*dns).to_string()),
                    GeneralName::IPAddress(raw) => names.push(ip_text(raw)),
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(CertSummary {
            sha256: hex(&sha256(der.as_ref())),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_before: unix_to_system(validity.not_before.timestamp()),
            not_after: unix_to_system(validity.not_after.timestamp()),
        })
    }

    /// Whether `now` lies within the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether the subject alternative names include `name` (ASCII case-insensitive, exact).
    pub fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject \"{}\", names [{}], not after {}, sha256 {}",
            self.subject,
            self.names.join(", "),
            rfc3339(self.not_after),
            self.sha256
        )
    }
}

fn ip_text(raw: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(raw) {
        std::net::Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(raw) {
        std::net::Ipv6Addr::from(v6).to_string()
    } else {
        format!("ip:{}", hex(raw))
    }
}

fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Formats a time as RFC 3339 UTC with second precision, e.g. `2026-01-31T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    portcullis_types::date::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }
}
