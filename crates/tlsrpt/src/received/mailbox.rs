//! The mail path of received reports (RFC 8460 §5.3): [`ReportMailbox`]
//! wraps the deliverer the scheduler calls. Recipients that are one of our
//! `[publish] tlsrpt_rua` mailboxes are read here instead of delivered
//! onward: the report attachment (`application/tlsrpt+gzip` or
//! `application/tlsrpt+json`) goes to the same [`ReportIntake`] as an HTTPS
//! POST, and the recipient is done. Every other recipient goes to the
//! wrapped deliverer unchanged.
//!
//! Why here: the message is already durably queued (the 250 was given
//! after the fsync), and the scheduler marks a recipient done only after
//! the result comes back, which is after the intake fsynced the report.
//! A crash in between hands the message over again; the intake then finds
//! a duplicate and the recipient is done. A store failure defers the
//! recipient (retried like any delivery); a message with no usable report
//! is dropped with a log line and no bounce (reports come from the null
//! sender or automated mailboxes: a bounce would be backscatter).

use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders};
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use tracing::{info, warn};

use super::{Channel, IntakeError, LiveOurs, MAX_REPORT_BYTES, ReportIntake};

/// The largest report message read: a report attachment at the cap in
/// base64 (4/3) plus room for headers and a text part. A larger message
/// cannot carry a report we would take.
pub const MAX_REPORT_MESSAGE: u64 = (MAX_REPORT_BYTES as u64) * 4 / 3 + 256 * 1024;

/// What the `remote_mta` of a recipient read here says.
const LOCAL_MTA: &str = "tlsrpt intake (local)";

/// The deliverer `D`, with our report mailboxes read locally.
pub struct ReportMailbox<D> {
    inner: Arc<D>,
    intake: Arc<dyn ReportIntake>,
    ours: LiveOurs,
}

impl<D> ReportMailbox<D> {
    /// Reads mail to the mailboxes of `ours` into `intake`; hands the rest
    /// to `inner`.
    pub fn new(inner: Arc<D>, intake: Arc<dyn ReportIntake>, ours: LiveOurs) -> ReportMailbox<D> {
        ReportMailbox {
            inner,
            intake,
            ours,
        }
    }
}

/// How reading one message went.
enum Read {
    /// A report was taken (stored now or before).
    Taken(String),
    /// Nothing usable: dropped.
    Unusable(String),
    /// The store failed: try again later.
    Later(String),
}

/// The candidate report attachments of `message`, in order: parts whose
/// media type is `application/tlsrpt+gzip` or `+json` (RFC 8460 §5.3),
/// else parts named `*.json.gz` or `*.json` (some senders label them
/// `application/octet-stream`).
fn attachments(message: &[u8]) -> Vec<Vec<u8>> {
    let Some(parsed) = MessageParser::new().parse(message) else {
        return Vec::new();
    };
    let mut typed = Vec::new();
    let mut named = Vec::new();
    for part in parsed.parts.iter() {
        let is_type = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("tlsrpt+gzip") || s.eq_ignore_ascii_case("tlsrpt+json")
                })
        });
        let is_named = part.attachment_name().is_some_and(|n| {
            let n = n.to_ascii_lowercase();
            n.ends_with(".json.gz") || n.ends_with(".json")
        });
        if is_type {
            typed.push(part.contents().to_vec());
        } else if is_named {
            named.push(part.contents().to_vec());
        }
    }
    typed.extend(named);
    typed
}

/// Reads `message` into `intake`: the first attachment it takes wins.
fn read_report(message: &[u8], intake: &dyn ReportIntake) -> Read {
    let found = attachments(message);
    if found.is_empty() {
        return Read::Unusable("no application/tlsrpt+gzip or +json attachment".into());
    }
    let mut why = String::new();
    for body in found {
        match intake.take(&body, Channel::Mail) {
            Ok(id) => return Read::Taken(id),
            Err(IntakeError::Store(e)) => return Read::Later(e),
            Err(IntakeError::Invalid(e)) => why = e,
        }
    }
    Read::Unusable(why)
}

impl<D: Deliver> ReportMailbox<D> {
    /// Reads the report in `job`'s message, off the async workers (mail
    /// parsing, gunzip and the intake's fsync all block).
    async fn read(&self, job: &DeliveryJob) -> Read {
        let size = job.message.len();
        if size > MAX_REPORT_MESSAGE {
            return Read::Unusable(format!(
                "{size} bytes, larger than any report we take ({MAX_REPORT_MESSAGE})"
            ));
        }
        let message = match job.message.to_vec().await {
            Ok(m) => m,
            Err(e) => return Read::Later(format!("reading the queued message: {e}")),
        };
        let intake = self.intake.clone();
        match tokio::task::spawn_blocking(move || read_report(&message, intake.as_ref())).await {
            Ok(read) => read,
            Err(e) => Read::Later(format!("the report reader stopped: {e}")),
        }
    }
}

impl<D: Deliver> Deliver for ReportMailbox<D> {
    async fn deliver(&self, mut job: DeliveryJob) -> Vec<RecipientResult> {
        let ours = self.ours.get();
        let envelope = job.envelope.clone();
        let (mine, rest): (Vec<usize>, Vec<usize>) = job.pending.iter().partition(|&&i| {
            envelope
                .recipients
                .get(i)
                .is_some_and(|r| ours.is_mailbox(&r.address))
        });
        let mut results = Vec::with_capacity(job.pending.len());
        if !mine.is_empty() {
            let outcome = match self.read(&job).await {
                Read::Taken(id) => {
                    info!(queue_id = %job.id, report = %id, "TLS report mail read");
                    RecipientOutcome::Delivered {
                        remote_mta: LOCAL_MTA.into(),
                        reply: format!("TLS report stored as {id}"),
                    }
                }
                Read::Unusable(why) => {
                    warn!(queue_id = %job.id, sender = %envelope.sender, reason = %why, "mail to the TLS report address without a usable report: dropped, no bounce");
                    RecipientOutcome::Delivered {
                        remote_mta: LOCAL_MTA.into(),
                        reply: format!("dropped: no usable TLS report ({why})"),
                    }
                }
                Read::Later(why) => {
                    warn!(queue_id = %job.id, reason = %why, "TLS report mail not read now; will retry");
                    RecipientOutcome::Deferred {
                        remote_mta: None,
                        reason: format!("TLS report not stored: {why}"),
                    }
                }
            };
            results.extend(mine.iter().map(|&index| RecipientResult {
                index,
                outcome: outcome.clone(),
            }));
        }
        if !rest.is_empty() {
            job.pending = rest;
            results.extend(self.inner.deliver(job).await);
        }
        results
    }
}
