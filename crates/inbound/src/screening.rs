//! The screen as one connection meets it (the driver's side of
//! `portcullis-screen`): the connection rate at connect, the DNS list
//! lookup started at once so it runs while the greeting is paused and
//! sent, the message rate at MAIL, and each RCPT's decision.
//!
//! Who is screened is decided from what the server recorded: the
//! listener's role, the client's address (trusted networks), the user the
//! session authenticated as; never from anything the client wrote in a
//! message. Rates and lists apply to `smtp` listeners only; recipients
//! are verified on every listener. A DNS list lookup that does not finish
//! in time scores nothing: a DNS failure never refuses mail.

use crate::accept::{AcceptPipeline, SenderAnswer};
use crate::metrics::{InboundMetrics, RejectReason};
use crate::session::{RecipientCheck, SenderCheck};
use portcullis_config::Role;
use portcullis_screen::dnsbl::ListsVerdict;
use portcullis_screen::{RcptFacts, Screen};
use portcullis_types::Reply;
use std::net::IpAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::info;

/// How long a RCPT waits for the client's DNS list lookup at most (it
/// started at connect): longer than a couple of resolver timeouts, far
/// below a client's RCPT timeout (RFC 5321 §4.5.3.2.3: 5 minutes).
const LISTS_WAIT: Duration = Duration::from_secs(15);

/// The screen for one connection.
pub(crate) struct ConnScreen {
    /// The generation's screen; `None`: nothing is screened.
    screen: Option<Screen>,
    /// The listener's role.
    role: Role,
    /// The client.
    ip: IpAddr,
    /// The client's DNS list verdict, as far as it is known.
    lists: Lists,
}

/// Where the client's DNS list lookup is.
enum Lists {
    /// Not looked up (no lists, an exempt client, another role).
    None,
    /// Running since the connection; aborted when the connection ends.
    Running(AbortOnDrop),
    /// Finished (`None`: failed or too slow, scores nothing).
    Done(Option<ListsVerdict>),
}

/// A task that is aborted when its handle is dropped, so a connection
/// that ends leaves no lookup behind.
struct AbortOnDrop(JoinHandle<ListsVerdict>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConnScreen {
    /// The screen of a new connection of `ip` on a listener of `role`:
    /// the client's connection counted (`smtp` listeners, outside trusted
    /// networks), its DNS list lookup started; the 421 reply to send
    /// before closing when it is over its connection rate.
    pub(crate) fn connect(
        screen: Option<&Screen>,
        role: Role,
        ip: IpAddr,
        trusted: bool,
    ) -> Result<ConnScreen, Reply> {
        let mut conn = ConnScreen {
            screen: screen.cloned(),
            role,
            ip,
            lists: Lists::None,
        };
        let Some(screen) = screen.filter(|_| role == Role::Smtp && !trusted) else {
            return Ok(conn);
        };
        screen.connect(ip)?;
        if screen.looks_up_lists() {
            let screen = screen.clone();
            let task = tokio::spawn(async move { screen.lists(ip).await });
            conn.lists = Lists::Running(AbortOnDrop(task));
        }
        Ok(conn)
    }

    /// The checks of MAIL FROM that `check` asks for: the message rate
    /// first (452 4.7.1, no SPF lookup for a client over it), then SPF
    /// through `pipeline`. A refusal by the rate is counted in `metrics`.
    pub(crate) async fn sender(
        &self,
        pipeline: &AcceptPipeline,
        check: &SenderCheck,
        metrics: &InboundMetrics,
    ) -> SenderAnswer {
        if check.count_message
            && let Some(screen) = &self.screen
            && let Err(refusal) = screen.mail(self.ip)
        {
            // The screen logs the refusal (one line, with its check).
            metrics.rejected(RejectReason::Screen, 1);
            return SenderAnswer {
                refusal: Some(refusal),
                spf_pass: None,
            };
        }
        if check.spf {
            pipeline.check_sender(check).await
        } else {
            SenderAnswer::default()
        }
    }

    /// The screen's decision on one RCPT: `None` to take the recipient,
    /// else the refusal (the screen logs it). Trusted and authenticated
    /// clients, and every client of the submission roles, are exempt from
    /// lists, rates and greylisting; their recipients are still verified.
    pub(crate) async fn recipient(&mut self, check: &RecipientCheck) -> Option<Reply> {
        let screen = self.screen.clone()?;
        let exempt = check.trusted || check.authenticated.is_some() || self.role != Role::Smtp;
        if exempt {
            // An authenticated session is not screened: its lookup is
            // of no use.
            self.lists = Lists::Done(None);
        }
        let lists = self.lists().await;
        let facts = RcptFacts {
            ip: check.client_ip,
            exempt,
            lists,
            sender: &check.sender,
            spf_pass: check.spf_pass.as_ref(),
            recipient: &check.recipient,
        };
        screen.rcpt(&facts).await.err()
    }

    /// The client's DNS list verdict: waits (at most [`LISTS_WAIT`]) for
    /// the lookup the connection started; `None` when there was none, it
    /// failed, or it took too long (then it scores nothing).
    async fn lists(&mut self) -> Option<&ListsVerdict> {
        if let Lists::Running(task) = &mut self.lists {
            let verdict = match tokio::time::timeout(LISTS_WAIT, &mut task.0).await {
                Ok(Ok(verdict)) => Some(verdict),
                Ok(Err(e)) => {
                    info!(client = %self.ip, error = %e, "DNS list lookup failed; not scored");
                    None
                }
                Err(_) => {
                    info!(client = %self.ip, wait_secs = LISTS_WAIT.as_secs(), "DNS list lookup unfinished; not scored");
                    None
                }
            };
            self.lists = Lists::Done(verdict);
        }
        match &self.lists {
            Lists::Done(verdict) => verdict.as_ref(),
            Lists::None | Lists::Running(_) => None,
        }
    }
}
