//! The accept pipeline: what happens to a complete message between the end
//! of its data and the final reply. Verify (when the session says so) →
//! remove forged fields → prepend our Received header → sign submitted
//! mail → enqueue; 250 only after the fsync, a refusal from verification
//! before anything is stored. A spooled message is read back whole only
//! for what needs it as one slice (verification, DKIM signing), within the
//! shared read budget.

mod dmarc;
mod envelope;
#[cfg(test)]
mod tests;
mod tls_required;
mod verify;

use crate::dkim::DkimSigners;
use crate::metrics::{InboundMetrics, RejectReason};
use crate::received::received_header;
use crate::session::{IncomingMessage, SenderCheck};
use crate::spooler::{ReadBudget, Spooler};
use portcullis_auth::{Verdict, Verifier};
use portcullis_dmarc::DmarcRecorder;
use portcullis_queue::Queue;
use portcullis_types::{Clock, Domain, QueueId, Reply};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, error, info};
use verify::Verification;

/// How the pipeline answered a message; the driver tells the session.
#[derive(Debug)]
pub(crate) enum Answer {
    /// On disk under this id: 250.
    Stored(QueueId),
    /// Refused by verification with this reply; nothing was stored.
    Rejected(Reply),
    /// Could not be read back or stored: 451.
    Failed,
}

/// What the checks at MAIL FROM found; the driver tells the session.
#[derive(Debug, Default)]
pub(crate) struct SenderAnswer {
    /// The reply that refuses the sender; `None`: go on.
    pub refusal: Option<Reply>,
    /// The domain SPF passed for (the MAIL FROM domain, or the HELO name
    /// for a null sender): greylisting keys on it.
    pub spf_pass: Option<Domain>,
}

/// The accept pipeline, built once and shared by every session.
pub(crate) struct AcceptPipeline {
    queue: Queue,
    clock: Arc<dyn Clock>,
    /// `None`: nothing is verified.
    verification: Option<Verification>,
    dkim: Arc<DkimSigners>,
    /// Counts DMARC results for aggregate reports; `None`: not counted.
    dmarc: Option<DmarcRecorder>,
    /// Draws the queue ids of messages that were not spooled.
    spooler: Spooler,
    /// Octets of spooled messages read back whole (for verification and
    /// signing) at once.
    read_budget: ReadBudget,
    metrics: Arc<InboundMetrics>,
}

/// What [`AcceptPipeline::new`] takes.
pub(crate) struct PipelineParts {
    /// Where accepted mail goes.
    pub queue: Queue,
    /// The time of the Received header and the envelope.
    pub clock: Arc<dyn Clock>,
    /// Verifies mail when a session asks for it; `None`: nothing is.
    pub verifier: Option<Arc<Verifier>>,
    /// The keys submitted and trusted mail is signed with.
    pub dkim: Arc<DkimSigners>,
    /// Where DMARC results are counted for aggregate reports (`[dmarc_reports]`).
    pub dmarc: Option<DmarcRecorder>,
    /// The sessions' spooler (its ids are the queue's ids).
    pub spooler: Spooler,
    /// How many octets of spooled messages may be read back at once.
    pub read_budget: ReadBudget,
    /// Where acceptances, refusals and verdicts are counted.
    pub metrics: Arc<InboundMetrics>,
}

impl AcceptPipeline {
    /// The pipeline from its parts.
    pub fn new(parts: PipelineParts) -> AcceptPipeline {
        AcceptPipeline {
            verification: parts
                .verifier
                .map(|v| Verification::new(v, parts.metrics.clone())),
            queue: parts.queue,
            clock: parts.clock,
            dkim: parts.dkim,
            dmarc: parts.dmarc,
            spooler: parts.spooler,
            read_budget: parts.read_budget,
            metrics: parts.metrics,
        }
    }

    /// SPF at MAIL FROM (`[verify] spf_fail = "reject"`, or for the
    /// screen's greylisting): the reply that refuses a failing sender
    /// before any data is sent (only with `spf_fail = "reject"`), and the
    /// domain SPF passed for. Without verification: neither.
    pub async fn check_sender(&self, check: &SenderCheck) -> SenderAnswer {
        match &self.verification {
            Some(verification) => verification.check_sender(check).await,
            None => SenderAnswer::default(),
        }
    }

    /// Verifies (when the session says so), stores a complete message and
    /// answers: stored only after the fsync; a refusal from verification
    /// before anything is stored. `hostname` is ours, as the session
    /// greeted with it.
    pub async fn accept(&self, mut msg: IncomingMessage, hostname: &str) -> Answer {
        let now = self.clock.now();
        // A spooled message already has its id: its chunks are filed under it.
        let id = msg
            .spooled
            .as_ref()
            .map_or_else(|| self.spooler.new_id(), |s| s.id());
        let verdict = match self.verify(id, &mut msg).await {
            Ok(verdict) => verdict,
            Err(answer) => return answer,
        };
        // RFC 8601 §5: results that claim to be ours but come from outside
        // the trust boundary are removed before ours are added, and so is
        // our quarantine tag. On every path: verified, authenticated and
        // trusted mail alike (a submitting user or a trusted application
        // is still outside the boundary of what we vouch for).
        let received = std::mem::take(&mut msg.data);
        let data = match portcullis_auth::strip_forged(&received, hostname) {
            Some(stripped) => {
                debug!(queue_id = %id, "removed Authentication-Results or X-Portcullis-Quarantine claiming to be ours");
                Cow::Owned(stripped)
            }
            None => Cow::Borrowed(received.as_slice()),
        };
        let auth_headers = verdict.map(|v| v.headers).unwrap_or_default();
        let header = received_header(&envelope::trace(&msg, hostname, id, now));
        let signature = self.sign(id, &mut msg, &data).await;
        let parts: [&[u8]; 4] = [
            signature.as_bytes(),
            header.as_bytes(),
            auth_headers.as_bytes(),
            &data,
        ];
        self.enqueue(id, now, msg, &parts).await
    }

    /// Verifies the message as received, when it is to be: the verdict
    /// (`None` when not verified), or the answer that refuses it.
    async fn verify(
        &self,
        id: QueueId,
        msg: &mut IncomingMessage,
    ) -> Result<Option<Verdict>, Answer> {
        let Some(verification) = self.verification.as_ref().filter(|_| msg.verify) else {
            return Ok(None);
        };
        // The checks run on the verification runtime and share the bytes:
        // a spooled message's read-back copy (its budget permit held until
        // the checks end), or the message itself, which comes back when
        // the checks are done (a copy only if a check is still busy after
        // its timeout).
        let verdict = match msg.spooled.as_mut() {
            Some(spool) => match self.read_whole(&msg.data, spool).await {
                Ok((copy, _permit)) => {
                    verification
                        .verify(&msg.arrival, &msg.sender, Arc::new(copy))
                        .await
                }
                Err(e) => {
                    self.metrics.rejected(RejectReason::Store, 1);
                    error!(queue_id = %id, error = %e, "could not read the spooled message back; answered 451");
                    return Err(Answer::Failed);
                }
            },
            None => {
                let shared = Arc::new(std::mem::take(&mut msg.data));
                let verdict = verification
                    .verify(&msg.arrival, &msg.sender, Arc::clone(&shared))
                    .await;
                msg.data = Arc::try_unwrap(shared).unwrap_or_else(|s| s.as_ref().clone());
                verdict
            }
        };
        // Verified: the whole copy and its share of the budget are gone.
        if let Some(recorder) = &self.dmarc {
            dmarc::count(
                recorder,
                &verdict,
                &msg.arrival,
                &msg.data,
                self.clock.now(),
            );
        }
        match verification.judge(id, &msg.sender, &verdict) {
            Some(refusal) => Err(Answer::Rejected(refusal)),
            None => Ok(Some(verdict)),
        }
    }

    /// The DKIM-Signature of mail we originate (submitted by a user, or
    /// relayed for a client in `trusted_networks`) whose From domain has a
    /// key, signed as it was received (never lost: a failure leaves it
    /// unsigned); empty for other mail.
    async fn sign(&self, id: QueueId, msg: &mut IncomingMessage, data: &[u8]) -> String {
        let who = match &msg.arrival.authenticated {
            Some(user) => Some(user.clone()),
            None if msg.arrival.trusted => Some(format!("trusted {}", msg.arrival.client_ip)),
            None => None,
        };
        match who {
            Some(user) if !self.dkim.is_empty() => match self.dkim.signer_for(data, &msg.sender) {
                Some(signer) => match self.sign_whole(signer, data, msg.spooled.as_mut()).await {
                    Ok(sig) => {
                        debug!(queue_id = %id, user = %user, domain = signer.domain(), selector = signer.selector(), "DKIM-signed");
                        sig
                    }
                    Err(e) => {
                        error!(queue_id = %id, user = %user, domain = signer.domain(), error = %e, "DKIM signing failed; accepting the message unsigned");
                        String::new()
                    }
                },
                None => String::new(),
            },
            _ => String::new(),
        }
    }

    /// Writes the message (`parts` before a spooled message's file) and
    /// its envelope durably: one shared fsync, then the answer.
    async fn enqueue(
        &self,
        id: QueueId,
        now: SystemTime,
        mut msg: IncomingMessage,
        parts: &[&[u8]; 4],
    ) -> Answer {
        let spooled = msg.spooled.take();
        let spooled_len = spooled.as_ref().map_or(0, |s| s.len());
        let size = parts.iter().map(|p| p.len()).sum::<usize>() + spooled_len as usize;
        // The last part is the message as received (its header section
        // first); ours come before it.
        let envelope = envelope::envelope(msg, parts[3], id, now, size as u64);
        let sender = envelope.sender.to_string();
        let rcpts = envelope.recipients.len();
        let stored = match spooled {
            // The spooled chunks become the end of the body, where they are.
            Some(spool) => spool.commit(envelope, parts).await,
            None => self.queue.enqueue_parts(envelope, parts).await,
        };
        match stored {
            Ok(()) => {
                self.metrics.accepted(size);
                info!(queue_id = %id, from = %format_args!("<{sender}>"), rcpts, size, "message accepted");
                Answer::Stored(id)
            }
            Err(e) => {
                self.metrics.rejected(RejectReason::Store, 1);
                error!(queue_id = %id, error = %e, "could not store message; answered 451");
                Answer::Failed
            }
        }
    }

    /// A spooled message in one piece, `head` then the spooled octets,
    /// with its share of the read budget (waiting for it when other large
    /// messages are in memory): the verifier and the DKIM signer need one
    /// slice.
    async fn read_whole(
        &self,
        head: &[u8],
        spool: &mut portcullis_queue::Spool,
    ) -> Result<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>), portcullis_queue::QueueError>
    {
        let len = head.len() as u64 + spool.len();
        // The budget's semaphore is never closed; `None` cannot happen.
        let permit = self.read_budget.acquire(len).await;
        let mut whole = Vec::with_capacity(len as usize);
        whole.extend_from_slice(head);
        spool.read_into(&mut whole)?;
        Ok((whole, permit))
    }

    /// The DKIM signature of the message whose header section (and, when
    /// not spooled, everything) is `data`.
    async fn sign_whole(
        &self,
        signer: &portcullis_auth::DkimSigner,
        data: &[u8],
        spool: Option<&mut portcullis_queue::Spool>,
    ) -> Result<String, String> {
        match spool {
            None => signer.signature_header(data).map_err(|e| e.to_string()),
            Some(spool) => {
                let (whole, _permit) = self
                    .read_whole(data, spool)
                    .await
                    .map_err(|e| e.to_string())?;
                signer.signature_header(&whole).map_err(|e| e.to_string())
            }
        }
    }
}
