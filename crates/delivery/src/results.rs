//! What one SMTP session means for the recipients it carried (RFC 5321
//! §4.2.5, §6): delivered, deferred or failed, each with the remote reply
//! kept whole for the DSN; or a reason to try the next host, or to try the
//! same address again without TLS.

use crate::client::{SessionError, SessionReport, Stage, TlsOutcome};
use portcullis_queue::{RecipientOutcome, RecipientResult};
use portcullis_tls::TlsResultType;
use portcullis_types::Reply;
use tracing::info;

/// What one session means for the recipients it carried.
pub(crate) enum Step {
    /// Final for this attempt.
    Done(Vec<RecipientResult>),
    /// This host did not work out: try the next one.
    NextHost(String),
    /// TLS failed (the STARTTLS handshake, or a TLS requirement the peer
    /// did not meet): with no policy demanding TLS, try the same address
    /// again without TLS (the opportunistic downgrade an MTA-STS policy
    /// forbids); under `enforce`, a policy deferral for this MX.
    RetryWithoutTls(String),
}

/// Maps a session's report onto the recipients `idxs`; `mx` names the
/// host as `name[address]`.
pub(crate) fn interpret(mx: &str, report: SessionReport, idxs: &[usize]) -> Step {
    let tx = match report.result {
        Ok(tx) => tx,
        Err(e) => return session_failed(mx, &e, idxs),
    };
    let data = tx.data.as_ref();
    let results = idxs
        .iter()
        .zip(&tx.rcpts)
        .map(|(&index, rcpt)| RecipientResult {
            index,
            outcome: recipient_outcome(mx, rcpt, data),
        })
        .collect();
    info!(%mx, tls = ?report.tls, "session finished");
    Step::Done(results)
}

/// A session that ended before the transaction completed.
fn session_failed(mx: &str, e: &SessionError, idxs: &[usize]) -> Step {
    let text = format!("{mx}: {e}");
    let deferred = || {
        Step::Done(all(idxs, |_| RecipientOutcome::Deferred {
            remote_mta: Some(mx.to_string()),
            reason: text.clone(),
        }))
    };
    match e {
        // Also the two ways a peer fails a TLS requirement (only an
        // enforced policy requires TLS): reported as an MTA-STS refusal,
        // never retried in clear.
        SessionError::Tls { .. } | SessionError::StartTlsRequired | SessionError::StartTls(_) => {
            Step::RetryWithoutTls(text)
        }
        e if e.is_permanent() => {
            let status = permanent_status(e);
            Step::Done(all(idxs, |_| RecipientOutcome::Failed {
                remote_mta: Some(mx.to_string()),
                status,
                reason: text.clone(),
            }))
        }
        // Once the data went out, another host could deliver a second
        // copy: defer instead of moving on.
        SessionError::Timeout {
            stage: Stage::DataEnd,
        }
        | SessionError::Io {
            stage: Stage::DataEnd,
            ..
        } => deferred(),
        SessionError::Mail(reply) if reply.is_transient() => deferred(),
        _ => Step::NextHost(text),
    }
}

/// One recipient of a completed transaction: its RCPT reply, then the
/// reply to the data.
fn recipient_outcome(mx: &str, rcpt: &Reply, data: Option<&Reply>) -> RecipientOutcome {
    let remote_mta = mx.to_string();
    if rcpt.is_permanent() {
        return RecipientOutcome::Failed {
            remote_mta: Some(remote_mta),
            status: status_of(rcpt, (5, 0, 0)),
            reason: rcpt.to_string(),
        };
    }
    if !rcpt.is_positive() {
        return RecipientOutcome::Deferred {
            remote_mta: Some(remote_mta),
            reason: rcpt.to_string(),
        };
    }
    match data {
        Some(d) if d.is_positive() => RecipientOutcome::Delivered {
            remote_mta,
            reply: d.to_string(),
        },
        Some(d) if d.is_permanent() => RecipientOutcome::Failed {
            remote_mta: Some(remote_mta),
            status: status_of(d, (5, 0, 0)),
            reason: d.to_string(),
        },
        Some(d) => RecipientOutcome::Deferred {
            remote_mta: Some(remote_mta),
            reason: d.to_string(),
        },
        None => RecipientOutcome::Deferred {
            remote_mta: Some(remote_mta),
            reason: "no reply to DATA".into(),
        },
    }
}

fn status_of(reply: &Reply, default: (u8, u16, u16)) -> (u8, u16, u16) {
    reply.enhanced.unwrap_or(default)
}

fn permanent_status(e: &SessionError) -> (u8, u16, u16) {
    let (class, subject, detail) = e.status();
    // A permanent error always bounces with a 5.x.x status.
    (5.max(class), subject, detail)
}

/// The same outcome for every recipient in `idxs`.
pub(crate) fn all(idxs: &[usize], f: impl Fn(usize) -> RecipientOutcome) -> Vec<RecipientResult> {
    idxs.iter()
        .map(|&index| RecipientResult {
            index,
            outcome: f(index),
        })
        .collect()
}

/// The RFC 8460 result type of a session's TLS, `None` for a good session.
pub(crate) fn tls_failure(tls: &TlsOutcome) -> Option<TlsResultType> {
    match tls {
        TlsOutcome::Established { verified: true, .. } => None,
        TlsOutcome::Established { failure, .. } => {
            Some(failure.unwrap_or(TlsResultType::ValidationFailure))
        }
        other => other.failure(),
    }
}
