//! Why a session ended without a transaction report.

use portcullis_tls::TlsResultType;
use portcullis_types::Reply;

use super::timeouts::Stage;

/// Why a session produced no [`TransactionReport`](super::TransactionReport).
///
/// Remote replies are kept whole, for the DSN. [`is_permanent`](SessionError::is_permanent)
/// says whether the message should be bounced rather than retried; which
/// host to try next is the caller's decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Reading or writing failed (connection reset, closed by the peer).
    #[error("I/O error at {stage}: {detail}")]
    Io {
        /// Where it happened.
        stage: Stage,
        /// The error as text.
        detail: String,
    },
    /// The peer did not answer (or accept our writes) within the stage's timeout.
    #[error("timeout at {stage}")]
    Timeout {
        /// Where it happened.
        stage: Stage,
    },
    /// The greeting was not 2xx (RFC 5321 §3.1: 421 or 554).
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    /// Both EHLO and the HELO fallback were refused, or EHLO got a 4xx.
    #[error("EHLO refused: {0}")]
    Ehlo(Reply),
    /// The peer advertised STARTTLS but refused the command, and TLS was required.
    #[error("STARTTLS refused: {0}")]
    StartTls(Reply),
    /// TLS was required but the peer does not advertise STARTTLS.
    #[error("STARTTLS required but not offered")]
    StartTlsRequired,
    /// The TLS handshake failed, or the certificate did not verify when TLS
    /// was required; nothing was sent after it.
    #[error("TLS failed ({result_type}): {detail}")]
    Tls {
        /// The RFC 8460 classification of the failure.
        result_type: TlsResultType,
        /// What rustls (or the handshake) reported.
        detail: String,
    },
    /// MAIL FROM was refused.
    #[error("MAIL FROM refused: {0}")]
    Mail(Reply),
    /// The peer broke the protocol (unparsable reply, data pushed after its 220
    /// to STARTTLS, ...), or our own configuration is unusable (bad HELO name).
    #[error("protocol error at {stage}: {detail}")]
    Protocol {
        /// Where it happened.
        stage: Stage,
        /// What was wrong.
        detail: String,
    },
    /// The message is larger than the SIZE the peer advertised (RFC 1870);
    /// nothing was sent.
    #[error("message of {size} octets exceeds the peer's limit of {max}")]
    SizeExceeded {
        /// The message size in octets.
        size: usize,
        /// The peer's limit.
        max: usize,
    },
    /// The message needs SMTPUTF8 and the peer does not offer it (RFC 6531).
    #[error("message needs SMTPUTF8, which the peer does not offer")]
    Smtputf8Unsupported,
    /// The message is BODY=BINARYMIME and the peer lacks CHUNKING or
    /// BINARYMIME (RFC 3030).
    #[error("message is BINARYMIME, which the peer cannot receive")]
    BinaryMimeUnsupported,
    /// The message was sent with REQUIRETLS and the peer does not
    /// advertise it (RFC 8689 §4.2.1); nothing was sent.
    #[error("REQUIRETLS support required: the peer does not offer it")]
    RequireTlsUnsupported,
    /// An envelope string would have broken the command syntax (control
    /// characters); nothing was sent.
    #[error("invalid envelope: {detail}")]
    InvalidEnvelope {
        /// What was wrong.
        detail: String,
    },
}

impl SessionError {
    /// True when retrying cannot help and the message should bounce: a 5xx
    /// greeting or MAIL reply, a size over the peer's limit, SMTPUTF8 or
    /// BINARYMIME that the peer cannot take, an unusable envelope. Everything
    /// else is temporary.
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Greeting(reply) | SessionError::Mail(reply) => reply.is_permanent(),
            SessionError::SizeExceeded { .. }
            | SessionError::Smtputf8Unsupported
            | SessionError::BinaryMimeUnsupported
            | SessionError::RequireTlsUnsupported
            | SessionError::InvalidEnvelope { .. } => true,
            _ => false,
        }
    }

    /// The remote reply that caused the failure, if there was one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SessionError::Greeting(reply)
            | SessionError::Ehlo(reply)
            | SessionError::StartTls(reply)
            | SessionError::Mail(reply) => Some(reply),
            _ => None,
        }
    }

    /// The RFC 3463 status for a DSN or log: the remote reply's enhanced
    /// code (or its class), else a local status: 5.3.4 message too big,
    /// 5.6.7 SMTPUTF8 not available (RFC 6533), 5.6.3 conversion required,
    /// 5.7.30 REQUIRETLS support required (RFC 8689 §5),
    /// 5.1.3 bad address syntax, 4.7.5 cryptographic failure, 4.5.0 protocol,
    /// 4.4.2 bad connection.
    pub fn status(&self) -> (u8, u16, u16) {
        if let Some(reply) = self.reply() {
            return match reply.enhanced {
                Some(enhanced) => enhanced,
                None if reply.is_permanent() => (5, 0, 0),
                None => (4, 0, 0),
            };
        }
        match self {
            SessionError::SizeExceeded { .. } => (5, 3, 4),
            SessionError::Smtputf8Unsupported => (5, 6, 7),
            SessionError::BinaryMimeUnsupported => (5, 6, 3),
            SessionError::RequireTlsUnsupported => (5, 7, 30),
            SessionError::InvalidEnvelope { .. } => (5, 1, 3),
            SessionError::Tls { .. } | SessionError::StartTlsRequired => (4, 7, 5),
            SessionError::Protocol { .. } => (4, 5, 0),
            _ => (4, 4, 2),
        }
    }

    /// Whether the SMTP dialogue is still in a known state after this error,
    /// so that a polite QUIT makes sense.
    pub(crate) fn dialogue_intact(&self) -> bool {
        matches!(
            self,
            SessionError::Greeting(_)
                | SessionError::Ehlo(_)
                | SessionError::StartTls(_)
                | SessionError::StartTlsRequired
                | SessionError::Mail(_)
                | SessionError::SizeExceeded { .. }
                | SessionError::Smtputf8Unsupported
                | SessionError::BinaryMimeUnsupported
                | SessionError::RequireTlsUnsupported
                | SessionError::InvalidEnvelope { .. }
        )
    }
}
