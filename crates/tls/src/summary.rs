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
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m as u32, d as u32)
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
