//! The verification steps of the pipeline: SPF at MAIL FROM (`[verify]
//! spf_fail = "reject"`) and the checks of a whole message (SPF, DKIM,
//! DMARC, ARC through the `auth` crate), each verdict counted and logged.

use super::SenderAnswer;
use crate::metrics::{InboundMetrics, RejectReason};
use crate::session::{Arrival, SenderCheck};
use portcullis_auth::{AuthResult, Disposition, Envelope as AuthEnvelope, Verdict, Verifier};
use portcullis_types::{Domain, QueueId, Reply, ReversePath};
use std::sync::Arc;
use tracing::info;

/// The verifier with the counters its verdicts go to.
pub(crate) struct Verification {
    verifier: Arc<Verifier>,
    metrics: Arc<InboundMetrics>,
}

impl Verification {
    /// Verification with `verifier`, counted in `metrics`.
    pub fn new(verifier: Arc<Verifier>, metrics: Arc<InboundMetrics>) -> Verification {
        Verification { verifier, metrics }
    }

    /// SPF at MAIL FROM: the reply that refuses a failing sender before
    /// any data is sent (`None` to go on), and the domain SPF passed for.
    pub async fn check_sender(&self, check: &SenderCheck) -> SenderAnswer {
        let envelope = AuthEnvelope {
            client_ip: check.client_ip,
            helo: &check.helo,
            sender: &check.sender,
        };
        let verdict = self.verifier.check_sender(&envelope).await;
        match &verdict.reply {
            Some(reply) => {
                let reason = if reply.is_permanent() {
                    RejectReason::Spf
                } else {
                    RejectReason::AuthTemporary
                };
                self.metrics.rejected(reason, 1);
                info!(from = %format_args!("<{}>", check.sender), spf = %verdict.spf.result, reply = %reply, "sender refused by SPF");
            }
            None => {
                if let Some(exception) = &verdict.exception {
                    info!(from = %format_args!("<{}>", check.sender), spf = %verdict.spf.result, %exception, "SPF result excused by an exception");
                }
            }
        }
        let spf_pass = match verdict.spf.result {
            AuthResult::Pass if verdict.reply.is_none() => spf_domain(check),
            _ => None,
        };
        SenderAnswer {
            refusal: verdict.reply,
            spf_pass,
        }
    }

    /// Verifies `message` exactly as received (before our Received header
    /// and before anything is removed from it). The checks run on the
    /// verification runtime and share the bytes.
    pub async fn verify<M>(
        &self,
        arrival: &Arrival,
        sender: &ReversePath,
        message: Arc<M>,
    ) -> Verdict
    where
        M: AsRef<[u8]> + Send + Sync + ?Sized + 'static,
    {
        let envelope = AuthEnvelope {
            client_ip: arrival.client_ip,
            helo: &arrival.helo,
            sender,
        };
        self.verifier.verify(&envelope, message).await
    }

    /// Counts and logs the verdict on message `id` (one line per message
    /// with every result); the reply that refuses the message, if the
    /// verdict refuses it.
    pub fn judge(&self, id: QueueId, sender: &ReversePath, v: &Verdict) -> Option<Reply> {
        for (method, result) in v.results.each() {
            self.metrics.auth_result(method, result);
        }
        self.metrics.auth_verdict(&v.disposition);
        // One line per message with every verdict.
        info!(
            queue_id = %id,
            from = %format_args!("<{}>", sender),
            spf = %v.results.spf.result,
            dkim = %v.results.dkim_summary(),
            dmarc = %v.results.dmarc.result,
            dmarc_policy = v.results.dmarc.policy.map(|p| p.as_str()),
            header_from = %v.results.dmarc.from_domain,
            arc = %v.results.arc.result,
            verdict = v.disposition.as_str(),
            exception = v.exception.as_deref(),
            reply = v.disposition.reply().map(tracing::field::display),
            "message verified"
        );
        let reply = v.disposition.reply()?;
        let reason = match &v.disposition {
            Disposition::TempFail(_) => RejectReason::AuthTemporary,
            // RFC 7372: 5.7.23 is SPF's; every other refusal is DMARC's.
            Disposition::Reject(r) if r.enhanced == Some((5, 7, 23)) => RejectReason::Spf,
            _ => RejectReason::Dmarc,
        };
        self.metrics.rejected(reason, 1);
        Some(reply.clone())
    }
}

/// The domain an SPF check at MAIL FROM was for (RFC 7208 §2.4): the MAIL
/// FROM domain, or the HELO name for a null sender (none when the HELO
/// name is not a domain, e.g. an address literal).
fn spf_domain(check: &SenderCheck) -> Option<Domain> {
    match &check.sender {
        ReversePath::Mailbox(address) => Some(address.domain.clone()),
        ReversePath::Null => Domain::parse(&check.helo).ok(),
    }
}
