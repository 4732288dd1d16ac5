//! The TLS decision a caller makes for a session, what actually happened,
//! and the STARTTLS handshake (RFC 3207).

use std::sync::Arc;
use std::time::Duration;

use portcullis_tls::{
    ClientTls, TlsError, TlsInfo, TlsResultType, VerificationRecord, WouldVerify,
};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What TLS the caller demands for a session: the decision is explicit, so
/// that an MTA-STS `enforce` policy (RFC 8461 §5) cannot quietly become
/// opportunistic.
#[derive(Debug, Clone)]
pub enum TlsDecision {
    /// STARTTLS when offered, accepting any certificate (RFC 3207 as practised);
    /// when it is not offered, or the STARTTLS command is refused, the session
    /// continues in clear. A failed handshake ends the session: whether to try
    /// again in clear on a new connection is the caller's policy.
    Opportunistic {
        /// An opportunistic configuration ([`ClientTls::opportunistic_config`]).
        config: Arc<ClientConfig>,
        /// Where that configuration records whether PKIX would have accepted the
        /// certificate; use a fresh pair per connection.
        record: VerificationRecord,
    },
    /// STARTTLS must be offered and the certificate must verify for the
    /// server name under PKIX ([`ClientTls::pkix_config`]); otherwise the
    /// session ends before any MAIL (RFC 8461 §5: no downgrade).
    Required {
        /// A PKIX-verifying configuration.
        config: Arc<ClientConfig>,
    },
    /// No STARTTLS even when offered (e.g. a route to an internal next hop
    /// configured without TLS).
    Disabled,
}

impl TlsDecision {
    /// An opportunistic decision with a fresh configuration and record from `tls`.
    pub fn opportunistic(tls: &ClientTls) -> TlsDecision {
        let (config, record) = tls.opportunistic_config();
        TlsDecision::Opportunistic { config, record }
    }

    /// A required-and-verified decision with `tls`'s trust anchors.
    pub fn required(tls: &ClientTls) -> Result<TlsDecision, TlsError> {
        Ok(TlsDecision::Required {
            config: tls.pkix_config()?,
        })
    }
}

/// What TLS actually happened on a session, for TLS-RPT (RFC 8460) and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsOutcome {
    /// The session ended (greeting refused, EHLO failed, connection lost)
    /// before TLS could be negotiated: not a TLS result at all.
    NotAttempted,
    /// The caller's decision was [`TlsDecision::Disabled`].
    Disabled,
    /// The peer did not advertise STARTTLS.
    NotOffered,
    /// The handshake completed.
    Established {
        /// e.g. `"TLSv1.3"`.
        version: String,
        /// e.g. `"TLS13_AES_256_GCM_SHA384"`.
        cipher: String,
        /// Whether the certificate passed (or, opportunistically, would have
        /// passed) PKIX validation for the server name.
        verified: bool,
        /// When not verified: why PKIX would have refused it.
        failure: Option<TlsResultType>,
        /// When not verified: the code of the verification error
        /// ([`portcullis_tls::reason_code`]).
        code: Option<String>,
    },
    /// STARTTLS was refused or the handshake failed.
    Failed {
        /// The RFC 8460 classification.
        result_type: TlsResultType,
        /// The refusing reply or the handshake error, as text.
        detail: String,
        /// The handshake error's code ([`portcullis_tls::reason_code`]),
        /// when a handshake failed.
        code: Option<String>,
    },
}

impl TlsOutcome {
    /// The TLS-RPT failure this outcome represents, `None` for a verified
    /// session or when TLS was not in question (disabled, not attempted).
    /// `NotOffered` is `starttls-not-supported` (RFC 8460 §4.3.1).
    pub fn failure(&self) -> Option<TlsResultType> {
        match self {
            TlsOutcome::NotAttempted | TlsOutcome::Disabled => None,
            TlsOutcome::NotOffered => Some(TlsResultType::StartTlsNotSupported),
            TlsOutcome::Established { failure, .. } => *failure,
            TlsOutcome::Failed { result_type, .. } => Some(*result_type),
        }
    }

    /// The code of the failure for TLS-RPT's `failure-reason-code`, when
    /// one is known (a handshake or verification error).
    pub fn reason_code(&self) -> Option<&str> {
        match self {
            TlsOutcome::Established { code, .. } | TlsOutcome::Failed { code, .. } => {
                code.as_deref()
            }
            _ => None,
        }
    }

    /// True when the mail (if any) travelled encrypted.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, TlsOutcome::Established { .. })
    }
}

/// Runs the client handshake over `stream` with SNI `server_name`, within
/// `limit`; a failure comes back classified.
pub(crate) async fn handshake<S>(
    stream: S,
    server_name: &str,
    config: Arc<ClientConfig>,
    limit: Duration,
) -> Result<TlsStream<S>, (TlsResultType, String, Option<String>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        (
            TlsResultType::ValidationFailure,
            format!("invalid server name {server_name:?}: {e}"),
            None,
        )
    })?;
    let connect = TlsConnector::from(config).connect(name, stream);
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(classify_io(&e)),
        Err(_) => Err((
            TlsResultType::ValidationFailure,
            format!("TLS handshake timed out after {limit:?}"),
            Some("HandshakeTimeout".to_owned()),
        )),
    }
}

/// Classifies a handshake error: rustls errors through
/// [`portcullis_tls::classify`], anything else (EOF, reset) as
/// `validation-failure`.
fn classify_io(e: &std::io::Error) -> (TlsResultType, String, Option<String>) {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => (
            portcullis_tls::classify(tls),
            tls.to_string(),
            Some(portcullis_tls::reason_code(tls)),
        ),
        None => (
            TlsResultType::ValidationFailure,
            e.to_string(),
            Some(format!("Io:{:?}", e.kind())),
        ),
    }
}

/// The outcome of a completed handshake. With `record` (opportunistic), the
/// verification is what PKIX would have said; without (required), the PKIX
/// configuration has already verified the certificate.
pub(crate) fn established<S>(
    tls: &TlsStream<S>,
    record: Option<&VerificationRecord>,
) -> TlsOutcome {
    let (_, conn) = tls.get_ref();
    let (version, cipher) = match TlsInfo::from_connection(conn) {
        Some(info) => (info.version, info.cipher),
        None => (String::new(), String::new()),
    };
    let (verified, failure, code) = match record.map(VerificationRecord::get) {
        None => (true, None, None),
        Some(Some(WouldVerify::Yes)) => (true, None, None),
        Some(Some(WouldVerify::No { result_type, error })) => (
            false,
            Some(result_type),
            Some(portcullis_tls::reason_code(&error)),
        ),
        // No certificate was seen (a resumed session on a shared configuration):
        // unknown, so not counted as verified.
        Some(None) => (false, Some(TlsResultType::ValidationFailure), None),
    };
    TlsOutcome::Established {
        version,
        cipher,
        verified,
        failure,
        code,
    }
}
