//! RFC 8460 §4.3 result types and the classification of handshake failures.

use std::fmt;

use rustls::{CertificateError, Error};

use crate::dane::TlsaMismatch;

/// A TLS-RPT result type (RFC 8460 §4.3), as an explicit value rather than a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsResultType {
    /// §4.3.1 `starttls-not-supported`: the receiving MX did not offer STARTTLS.
    StartTlsNotSupported,
    /// §4.3.1 `certificate-host-mismatch`: the certificate does not name the MX host.
    CertificateHostMismatch,
    /// §4.3.1 `certificate-expired`: the certificate has expired.
    CertificateExpired,
    /// §4.3.1 `certificate-not-trusted`: the chain does not lead to a trust anchor.
    CertificateNotTrusted,
    /// §4.3.1 `validation-failure`: any other failure of the TLS session or its validation.
    ValidationFailure,
    /// §4.3.3 `sts-policy-fetch-error`: the MTA-STS policy could not be fetched.
    StsPolicyFetchError,
    /// §4.3.3 `sts-policy-invalid`: the MTA-STS policy was fetched but is invalid.
    StsPolicyInvalid,
    /// §4.3.3 `sts-webpki-invalid`: the policy host's HTTPS certificate did not validate.
    StsWebpkiInvalid,
    /// §4.3.2 `tlsa-invalid`: a TLSA record was invalid.
    TlsaInvalid,
    /// §4.3.2 `dnssec-invalid`: DNSSEC validation failed.
    DnssecInvalid,
    /// §4.3.2 `dane-required`: DANE was required but no valid TLSA records were found.
    DaneRequired,
}

impl TlsResultType {
    /// Every result type, in RFC order (handy for tables and tests).
    pub const ALL: [TlsResultType; 11] = [
        TlsResultType::StartTlsNotSupported,
        TlsResultType::CertificateHostMismatch,
        TlsResultType::CertificateExpired,
        TlsResultType::CertificateNotTrusted,
        TlsResultType::ValidationFailure,
        TlsResultType::StsPolicyFetchError,
        TlsResultType::StsPolicyInvalid,
        TlsResultType::StsWebpkiInvalid,
        TlsResultType::TlsaInvalid,
        TlsResultType::DnssecInvalid,
        TlsResultType::DaneRequired,
    ];

    /// The `result-type` string as written in a report, e.g. `"starttls-not-supported"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsResultType::StartTlsNotSupported => "starttls-not-supported",
            TlsResultType::CertificateHostMismatch => "certificate-host-mismatch",
            TlsResultType::CertificateExpired => "certificate-expired",
            TlsResultType::CertificateNotTrusted => "certificate-not-trusted",
            TlsResultType::ValidationFailure => "validation-failure",
            TlsResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            TlsResultType::StsPolicyInvalid => "sts-policy-invalid",
            TlsResultType::StsWebpkiInvalid => "sts-webpki-invalid",
            TlsResultType::TlsaInvalid => "tlsa-invalid",
            TlsResultType::DnssecInvalid => "dnssec-invalid",
            TlsResultType::DaneRequired => "dane-required",
        }
    }

    /// The inverse of [`TlsResultType::as_str`].
    pub fn parse(s: &str) -> Option<TlsResultType> {
        TlsResultType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TlsResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies the error of a failed *client* handshake into the RFC 8460 result type.
///
/// The certificate name check maps to `certificate-host-mismatch`, expiry to
/// `certificate-expired`, an unknown issuer or a bad signature in the chain to
/// `certificate-not-trusted`, no DANE TLSA record matching to `tlsa-invalid`;
/// everything else (protocol errors, alerts from
/// the peer, not-yet-valid certificates, ...) is `validation-failure`
/// (RFC 8460 §4.3.1).
pub fn classify(err: &Error) -> TlsResultType {
    match err {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsResultType::CertificateHostMismatch
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsResultType::CertificateExpired
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsResultType::CertificateNotTrusted
            }
            CertificateError::Other(other) if TlsaMismatch::is(other) => TlsResultType::TlsaInvalid,
            _ => TlsResultType::ValidationFailure,
        },
        _ => TlsResultType::ValidationFailure,
    }
}

/// A short, stable code for a handshake error, for TLS-RPT's
/// `failure-reason-code` (RFC 8460 §4.4): the rustls certificate error or
/// alert by name (`UnknownIssuer`, `NotValidForName`, `Expired`,
/// `AlertReceived:HandshakeFailure`), `TlsaMismatch` under DANE, else the
/// error's kind. Never text chosen by the peer.
pub fn reason_code(err: &Error) -> String {
    match err {
        Error::InvalidCertificate(CertificateError::Other(other)) if TlsaMismatch::is(other) => {
            "TlsaMismatch".to_owned()
        }
        Error::InvalidCertificate(cert) => variant_name(&format!("{cert:?}")),
        Error::AlertReceived(alert) => format!("AlertReceived:{alert:?}"),
        other => variant_name(&format!("{other:?}")),
    }
}

/// The variant name at the start of a `Debug` rendering: `Expired` of
/// `ExpiredContext { time: .. }` stays `ExpiredContext`, anything after the
/// first `(`, `{` or space is dropped.
fn variant_name(debug: &str) -> String {
    debug
        .split(['(', '{', ' '])
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_rfc_8460() {
        let expected = [
            "starttls-not-supported",
            "certificate-host-mismatch",
            "certificate-expired",
            "certificate-not-trusted",
            "validation-failure",
            "sts-policy-fetch-error",
            "sts-policy-invalid",
            "sts-webpki-invalid",
            "tlsa-invalid",
            "dnssec-invalid",
            "dane-required",
        ];
        for (t, s) in TlsResultType::ALL.iter().zip(expected) {
            assert_eq!(t.as_str(), s);
            assert_eq!(t.to_string(), s);
            assert_eq!(TlsResultType::parse(s), Some(*t));
        }
        assert_eq!(TlsResultType::parse("bogus"), None);
    }

    #[test]
    fn reason_codes_name_the_error_not_its_text() {
        assert_eq!(
            reason_code(&CertificateError::UnknownIssuer.into()),
            "UnknownIssuer"
        );
        assert_eq!(reason_code(&CertificateError::Expired.into()), "Expired");
        assert_eq!(
            reason_code(&crate::dane::TlsaMismatch::error()),
            "TlsaMismatch"
        );
        assert_eq!(
            reason_code(&Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            "AlertReceived:HandshakeFailure"
        );
        assert_eq!(
            reason_code(&Error::General("peer chose this text".into())),
            "General"
        );
    }

    #[track_caller]
    fn check(err: Error, want: TlsResultType) {
        assert_eq!(classify(&err), want, "{err:?}");
    }

    #[test]
    fn classify_maps_rustls_errors() {
        use TlsResultType::*;
        check(
            CertificateError::NotValidForName.into(),
            CertificateHostMismatch,
        );
        check(CertificateError::Expired.into(), CertificateExpired);
        check(
            CertificateError::UnknownIssuer.into(),
            CertificateNotTrusted,
        );
        check(CertificateError::BadSignature.into(), CertificateNotTrusted);
        check(CertificateError::NotValidYet.into(), ValidationFailure);
        check(CertificateError::BadEncoding.into(), ValidationFailure);
        check(crate::dane::TlsaMismatch::error(), TlsaInvalid);
        let foreign = rustls::OtherError(std::sync::Arc::new(std::fmt::Error));
        check(CertificateError::Other(foreign).into(), ValidationFailure);
        check(Error::HandshakeNotComplete, ValidationFailure);
        check(
            Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            ValidationFailure,
        );
    }
}
