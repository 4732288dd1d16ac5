//! The one error type of the crate, classified onto TLS-RPT result types.

use std::path::PathBuf;

use portcullis_dns::DnsError;
use portcullis_store::StoreError;
use portcullis_tls::TlsResultType;

use crate::record::NoPolicyReason;

/// Everything that can go wrong while discovering, fetching, parsing,
/// caching or pinning an MTA-STS policy.
///
/// Each variant maps onto the RFC 8460 §4.3.3 result type that a TLS-RPT
/// report names for it (`TlsResultType::from(&error)`):
/// certificate problems on the policy host are `sts-webpki-invalid`, a policy
/// that was served but is not a valid policy resource (syntax, media type,
/// size) is `sts-policy-invalid`, and every other failure to get the policy
/// is `sts-policy-fetch-error`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StsError {
    /// A DNS lookup failed: the `_mta-sts` TXT record (temporarily) or the
    /// policy host's addresses (temporarily or because the name has none).
    #[error("DNS lookup of {name} failed: {source}")]
    Dns {
        /// The name that was looked up.
        name: String,
        /// The classified DNS error (see [`DnsError::is_temporary`]).
        #[source]
        source: DnsError,
    },
    /// There is no usable `_mta-sts` TXT record, so there is no policy to
    /// fetch (only [`PolicyEngine::fetch_now`](crate::PolicyEngine::fetch_now)
    /// reports this; at delivery it simply means "no policy").
    #[error("{domain}: no MTA-STS policy: {reason}")]
    NoRecord {
        /// The policy domain.
        domain: String,
        /// Why the TXT lookup yielded no record (RFC 8461 §3.1).
        reason: NoPolicyReason,
    },
    /// The TCP connection to the policy host failed (refused, unreachable,
    /// reset, or a TLS failure that is not about the certificate).
    #[error("cannot connect to {host}: {reason}")]
    Connect {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The policy host's certificate did not pass PKIX validation for
    /// `mta-sts.<domain>` under the trust anchors (RFC 8461 §3.3).
    #[error("certificate of {host} not valid ({certificate}): {reason}")]
    Tls {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// The certificate-level classification (host mismatch, expired,
        /// not trusted, other validation failure), for logs and the admin CLI.
        certificate: TlsResultType,
        /// The verifier's message.
        reason: String,
    },
    /// The fetch (connect, handshake, request and body) took longer than the
    /// configured timeout.
    #[error("fetching the policy from {host} timed out")]
    Timeout {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
    },
    /// The policy host answered with a status other than 200 (and not a
    /// redirect).
    #[error("{host} answered HTTP {status}")]
    Status {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The policy host answered with a redirect, which is never followed
    /// (RFC 8461 §3.3).
    #[error("{host} answered HTTP {status} (redirect to {}), redirects are not followed", location.as_deref().unwrap_or("nowhere"))]
    Redirect {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// The 3xx status code.
        status: u16,
        /// The `Location` header, if any.
        location: Option<String>,
    },
    /// The response's media type is not `text/plain` (RFC 8461 §3.2).
    #[error("{host} served the policy as {}, not text/plain", content_type.as_deref().unwrap_or("(no content type)"))]
    ContentType {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// The `Content-Type` header as received, if any.
        content_type: Option<String>,
    },
    /// The response body is longer than the limit; reading stopped there.
    #[error("the policy from {host} is larger than {limit} bytes")]
    TooLarge {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// The limit in bytes (64 KiB).
        limit: usize,
    },
    /// Any other HTTP-level failure (malformed response, connection closed
    /// mid-body, …).
    #[error("HTTP error from {host}: {reason}")]
    Http {
        /// The policy host (`mta-sts.<domain>`).
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The policy text is not a valid RFC 8461 §3.2 policy.
    #[error("invalid MTA-STS policy: {reason}")]
    Invalid {
        /// What is wrong, with the line number where there is one.
        reason: String,
    },
    /// A pinned policy file in the pins directory is unusable.
    #[error("pinned policy {}: {reason}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A name given by the operator or a caller is not a domain name.
    #[error("invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The name as given.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The fetcher could not be built (trust anchors, TLS configuration).
    #[error("cannot set up the policy fetcher: {reason}")]
    Setup {
        /// What went wrong.
        reason: String,
    },
    /// The policy cache or pin store failed (a local problem, never the
    /// remote domain's fault).
    #[error("policy store: {0}")]
    Store(#[from] StoreError),
}

impl StsError {
    /// True when the failure may go away by itself soon (a temporary DNS
    /// failure, a timeout, a refused connection, a 5xx answer).
    pub fn is_temporary(&self) -> bool {
        match self {
            StsError::Dns { source, .. } => source.is_temporary(),
            StsError::Connect { .. } | StsError::Timeout { .. } | StsError::Http { .. } => true,
            StsError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// RFC 8460 §4.3.3: the result type a TLS-RPT report records for a policy
/// failure.
impl From<&StsError> for TlsResultType {
    fn from(error: &StsError) -> TlsResultType {
        match error {
            StsError::Tls { .. } => TlsResultType::StsWebpkiInvalid,
            // The server answered 200 but what it served is not a valid
            // policy resource: syntax (§3.2), media type (§3.2) or size.
            StsError::Invalid { .. }
            | StsError::ContentType { .. }
            | StsError::TooLarge { .. }
            | StsError::PinFile { .. } => TlsResultType::StsPolicyInvalid,
            StsError::Dns { .. }
            | StsError::NoRecord { .. }
            | StsError::Connect { .. }
            | StsError::Timeout { .. }
            | StsError::Status { .. }
            | StsError::Redirect { .. }
            | StsError::Http { .. }
            | StsError::InvalidDomain { .. }
            | StsError::Setup { .. }
            | StsError::Store(_) => TlsResultType::StsPolicyFetchError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> String {
        "mta-sts.example.test".to_owned()
    }

    #[track_caller]
    fn maps(error: StsError, want: TlsResultType) {
        assert_eq!(TlsResultType::from(&error), want, "{error}");
    }

    #[test]
    fn errors_map_onto_rfc_8460_result_types() {
        use TlsResultType::*;
        maps(
            StsError::Tls {
                host: host(),
                certificate: CertificateHostMismatch,
                reason: "x".into(),
            },
            StsWebpkiInvalid,
        );
        maps(StsError::Invalid { reason: "x".into() }, StsPolicyInvalid);
        maps(
            StsError::ContentType {
                host: host(),
                content_type: Some("text/html".into()),
            },
            StsPolicyInvalid,
        );
        maps(
            StsError::TooLarge {
                host: host(),
                limit: 65536,
            },
            StsPolicyInvalid,
        );
        maps(
            StsError::Status {
                host: host(),
                status: 404,
            },
            StsPolicyFetchError,
        );
        maps(
            StsError::Redirect {
                host: host(),
                status: 301,
                location: None,
            },
            StsPolicyFetchError,
        );
        maps(StsError::Timeout { host: host() }, StsPolicyFetchError);
        maps(
            StsError::Connect {
                host: host(),
                reason: "refused".into(),
            },
            StsPolicyFetchError,
        );
        maps(
            StsError::Dns {
                name: host(),
                source: DnsError::NxDomain { name: host() },
            },
            StsPolicyFetchError,
        );
    }

    #[test]
    fn temporary_classification() {
        assert!(
            StsError::Status {
                host: host(),
                status: 503
            }
            .is_temporary()
        );
        assert!(
            !StsError::Status {
                host: host(),
                status: 404
            }
            .is_temporary()
        );
        assert!(!StsError::Invalid { reason: "x".into() }.is_temporary());
    }
}
