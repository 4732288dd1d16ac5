//! Sender verification for Portcullis: SPF (RFC 7208), DKIM (RFC 6376),
//! DMARC (RFC 7489) and ARC (RFC 8617) through mail-auth, the
//! Authentication-Results header (RFC 8601) and Received-SPF (RFC 7208
//! §9.1) that record the results, and the verdict — accept, tag for
//! quarantine, reject, or "try again later" — that `[verify]` asks for.
//! This crate never talks SMTP: the inbound driver hands it the envelope
//! and the message as received and writes the reply it returns.
//!
//! All DNS goes through the `dns` crate's [`HickoryResolver`]: mail-auth's
//! [`MessageAuthenticator`] is built around the very same hickory resolver
//! (a clone shares its TTL cache), and our own lookups (DMARC `pct`,
//! iprev for exceptions) use its [`Resolver`] methods, so `[dns]
//! nameservers` is obeyed and nothing is asked twice within a TTL.
//!
//! Threat model: every input is the sender's — the envelope, the headers,
//! the signatures — and so is much of the DNS (the sender's zone). So:
//! - a *failure to find out* is never a verdict: a temporary DNS failure
//!   that matters for the outcome gives 451 (never a false 550, never a
//!   false accept of mail the domain asks us to refuse), and the whole
//!   verification is bounded by `[verify] timeout`;
//! - the work one message can cause is bounded before mail-auth sees it
//!   (`bounds`: signatures per message, `h=` entries, header fields), and
//!   the checks run on a runtime of their own with a thread per core
//!   (`pool`), never on the threads that serve sessions, so a heavy message
//!   costs at most its share of the cores and its sender gets the
//!   timeout's answer even while a check is still busy;
//! - our verdict cannot be forged: incoming Authentication-Results fields
//!   carrying our authserv-id, and our quarantine tag, are removed before
//!   ours are added (RFC 8601 §5), and every client- or DNS-supplied value
//!   we write is quoted so it cannot inject results or header lines;
//! - exceptions match only identities the checks *authenticated* (an SPF
//!   pass, a DKIM or ARC pass, a forward-confirmed reverse name, the TCP
//!   peer address), never a name the sender merely claims;
//! - the message is verified exactly as received; the body is never
//!   rewritten.

#![forbid(unsafe_code)]

mod bounds;
mod headers;
mod pool;
mod results;
mod signer;
mod verdict;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, MessageAuthenticator, SpfOutput, SpfResult};
use portcullis_config::Verify;
use portcullis_dns::{DnsError, HickoryResolver, Resolver};
use portcullis_types::ReversePath;
use tracing::{debug, error};

use crate::bounds::Limits;
use crate::pool::{Pool, Unfinished};

pub use headers::{QUARANTINE_HEADER, authentication_results, received_spf, strip_forged};
pub use results::{
    ArcVerdict, AuthResult, DkimVerdict, DmarcPolicy, DmarcReportFacts, DmarcRua, DmarcVerdict,
    Method, Results, SpfIdentity, SpfVerdict,
};
pub use signer::{DkimSigner, SignerError, SignerKeyType};
pub use verdict::{
    Disposition, Identities, SenderVerdict, Verdict, decide, matching_exception, spf_rule,
};

/// What can go wrong in this crate's own work (the methods' own failures
/// are results, not errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The checks did not finish within `[verify] timeout`.
    #[error("verification did not finish within {limit:?}")]
    Timeout {
        /// The configured bound.
        limit: Duration,
    },
    /// One of our own lookups (DMARC `pct`, iprev) failed.
    #[error("dns lookup failed: {0}")]
    Dns(#[from] DnsError),
    /// The verification runtime could not be started (threads).
    #[error("cannot start the verification runtime: {0}")]
    Runtime(String),
}

/// The SMTP envelope of a message, as far as verification needs it.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The client's address (the TCP peer).
    pub client_ip: IpAddr,
    /// The EHLO/HELO name.
    pub helo: &'a str,
    /// MAIL FROM.
    pub sender: &'a ReversePath,
}

impl Envelope<'_> {
    /// The MAIL FROM address as text, empty when null.
    fn mail_from(&self) -> String {
        match self.sender {
            ReversePath::Null => String::new(),
            ReversePath::Mailbox(a) => a.to_string(),
        }
    }

    /// The SPF identity (RFC 7208 §2.4: HELO when MAIL FROM is null).
    fn identity(&self) -> SpfIdentity {
        match self.sender {
            ReversePath::Null => SpfIdentity::Helo,
            ReversePath::Mailbox(_) => SpfIdentity::MailFrom,
        }
    }
}

/// Verifies messages: one per server, shared by every session (a clone
/// shares the resolver and the verification runtime).
#[derive(Clone)]
pub struct Verifier {
    authenticator: MessageAuthenticator,
    resolver: HickoryResolver,
    hostname: String,
    config: Verify,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hostname", &self.hostname)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier on `resolver` (shared, cache included, with mail-auth);
    /// `hostname` is the authserv-id of our Authentication-Results. Its
    /// checks run on a runtime of their own with a worker thread per core,
    /// started here (the error says why it could not be).
    pub fn new(
        resolver: &HickoryResolver,
        hostname: &str,
        config: Verify,
    ) -> Result<Verifier, AuthError> {
        let pool = Pool::for_this_machine().map_err(|e| AuthError::Runtime(e.to_string()))?;
        Ok(Verifier {
            authenticator: MessageAuthenticator(resolver.inner().clone()),
            resolver: resolver.clone(),
            hostname: hostname.to_owned(),
            config,
            pool: Arc::new(pool),
        })
    }

    /// The `[verify]` settings.
    pub fn config(&self) -> &Verify {
        &self.config
    }

    /// The SPF check at MAIL FROM, for `spf_fail = "reject"`: a `fail`
    /// refuses the sender (550 5.7.23), a `temperror` defers it (451
    /// 4.7.24), unless an exception matches the client (its address, or a
    /// forward-confirmed reverse name).
    pub async fn check_sender(&self, envelope: &Envelope<'_>) -> SenderVerdict {
        let spf = match tokio::time::timeout(self.config.timeout, self.spf(envelope)).await {
            Ok(output) => self.spf_verdict(envelope, output.result()),
            Err(_) => self.spf_verdict(envelope, SpfResult::TempError),
        };
        let mut reply = spf_rule(&self.config, &spf);
        let mut exception = None;
        if reply.is_some() {
            let names = self.iprev_names(envelope.client_ip).await;
            let who = Identities {
                client_ip: Some(envelope.client_ip),
                domains: names.iter().map(String::as_str).collect(),
            };
            exception = matching_exception(&self.config.exceptions, &who);
            if exception.is_some() {
                reply = None;
            }
        }
        SenderVerdict {
            spf,
            reply,
            exception,
        }
    }

    /// Verifies `message` (exactly as received, without our trace header)
    /// and decides what happens to it.
    ///
    /// The checks run on the verification runtime, not in the caller's
    /// task (which only waits), so they share `message`; the verdict comes
    /// within `[verify] timeout` even when a check is still busy (then it
    /// is the temporary failure of a timeout, and the check is aborted at
    /// its next await point). Must be called within a tokio runtime.
    pub async fn verify<M>(&self, envelope: &Envelope<'_>, message: Arc<M>) -> Verdict
    where
        M: AsRef<[u8]> + Send + Sync + ?Sized + 'static,
    {
        let limit = self.config.timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let this = self.clone();
        let (client_ip, helo, sender) = (
            envelope.client_ip,
            envelope.helo.to_owned(),
            envelope.sender.clone(),
        );
        let job = async move {
            let envelope = Envelope {
                client_ip,
                helo: &helo,
                sender: &sender,
            };
            this.run(&envelope, (*message).as_ref()).await
        };
        let results = match self.pool.run(deadline, job).await {
            Ok(results) => results,
            Err(Unfinished::TimedOut) => {
                let error = AuthError::Timeout { limit };
                debug!(%error, "verification timed out");
                Results::timed_out(self.spf_verdict(envelope, SpfResult::TempError))
            }
            Err(Unfinished::Failed(error)) => {
                // Never a verdict from a check that broke: try again later.
                error!(%error, "verification failed");
                Results::timed_out(self.spf_verdict(envelope, SpfResult::TempError))
            }
        };
        let mut disposition = decide(&self.config, &results);
        let mut exception = None;
        if disposition != Disposition::Accept {
            let who = Identities::from_results(envelope.client_ip, &results);
            exception = matching_exception(&self.config.exceptions, &who);
            if exception.is_none() {
                // Only now is a reverse lookup worth its cost.
                let names = self.iprev_names(envelope.client_ip).await;
                let mut who = Identities::from_results(envelope.client_ip, &results);
                who.domains.extend(names.iter().map(String::as_str));
                exception = matching_exception(&self.config.exceptions, &who);
            }
            if exception.is_some() {
                disposition = Disposition::Accept;
            }
        }
        let dis = match disposition {
            Disposition::Quarantine => DmarcPolicy::Quarantine,
            Disposition::Reject(_) if results.dmarc.result == AuthResult::Fail => {
                DmarcPolicy::Reject
            }
            _ => DmarcPolicy::None,
        };
        let mut headers = authentication_results(&self.hostname, &results, envelope.client_ip, dis);
        headers.push_str(&received_spf(&self.hostname, &results, envelope.client_ip));
        if disposition == Disposition::Quarantine {
            headers.push_str(&headers::quarantine(
                &results.dmarc.from_domain,
                results.dmarc.applied,
            ));
        }
        Verdict {
            results,
            disposition,
            exception,
            headers,
        }
    }

    /// Every check, with the work bounded by `bounds` and the time by the
    /// caller.
    async fn run(&self, envelope: &Envelope<'_>, message: &[u8]) -> Results {
        let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
            // No header section: nothing to sign, no From to align with.
            let spf = self.spf(envelope).await;
            return Results {
                spf: self.spf_verdict(envelope, spf.result()),
                dkim: Vec::new(),
                dmarc: DmarcVerdict {
                    result: AuthResult::None,
                    from_domain: String::new(),
                    policy: None,
                    pct: 100,
                    applied: DmarcPolicy::None,
                    reason: None,
                    report: None,
                },
                arc: ArcVerdict {
                    result: AuthResult::None,
                    sealer: None,
                    reason: None,
                },
                timed_out: false,
            };
        };
        let skipped = bounds::apply(&mut parsed, &Limits::from(&self.config));
        let parsed = parsed;
        // SPF, DKIM and ARC are independent: run them together.
        let (spf, dkim, arc) = tokio::join!(
            self.spf(envelope),
            self.authenticator.verify_dkim(&parsed),
            self.authenticator.verify_arc(&parsed),
        );
        // RFC 7489 §4.1: the SPF-authenticated identifier is the MAIL FROM
        // domain, or the HELO name when MAIL FROM is null.
        let spf_domain = match envelope.sender {
            ReversePath::Null => envelope.helo.to_owned(),
            ReversePath::Mailbox(a) => a.domain.to_string(),
        };
        let output = self
            .authenticator
            .verify_dmarc(DmarcParameters::new(&parsed, &dkim, &spf_domain, &spf))
            .await;
        let mut dmarc = DmarcVerdict::from_output(&output);
        self.apply_pct(&mut dmarc).await;
        self.report_pct(&mut dmarc).await;
        // mail-auth reports malformed signatures without a signature.
        let (verified, malformed): (Vec<_>, Vec<_>) =
            dkim.iter().partition(|o| o.signature().is_some());
        let mut unverified: Vec<DkimVerdict> = malformed
            .into_iter()
            .map(DkimVerdict::from_output)
            .collect();
        unverified.extend(skipped.dkim);
        Results {
            spf: self.spf_verdict(envelope, spf.result()),
            dkim: bounds::recorded(
                verified.into_iter().map(DkimVerdict::from_output).collect(),
                unverified,
            ),
            dmarc,
            arc: skipped.arc.unwrap_or_else(|| ArcVerdict::from_output(&arc)),
            timed_out: false,
        }
    }

    /// SPF for the envelope's identity with the client's real address.
    async fn spf(&self, envelope: &Envelope<'_>) -> SpfOutput {
        let mail_from = envelope.mail_from();
        let params = match envelope.identity() {
            SpfIdentity::Helo => {
                SpfParameters::verify_ehlo(envelope.client_ip, envelope.helo, &self.hostname)
            }
            SpfIdentity::MailFrom => SpfParameters::verify_mail_from(
                envelope.client_ip,
                envelope.helo,
                &self.hostname,
                &mail_from,
            ),
        };
        self.authenticator.verify_spf(params).await
    }

    fn spf_verdict(&self, envelope: &Envelope<'_>, result: SpfResult) -> SpfVerdict {
        SpfVerdict::from_output(
            result,
            envelope.identity(),
            &envelope.mail_from(),
            envelope.helo,
        )
    }

    /// RFC 7489 §6.6.4: only `pct` percent of failing messages get the
    /// policy, the rest the next less strict one. mail-auth 0.13 follows
    /// DMARCbis, which dropped `pct`, so we read it from the record
    /// ourselves (the lookup is answered from the resolver's cache: mail-auth
    /// has just asked the same question). The record is the From domain's,
    /// else the nearest parent's, as in the DMARC tree walk.
    /// The `pct=` an aggregate report names (RFC 7489 §7.2
    /// `policy_published`), looked up (through the shared cache) only for
    /// a domain that asks for reports; a failed lookup leaves 100.
    async fn report_pct(&self, dmarc: &mut DmarcVerdict) {
        let Some(report) = dmarc.report.as_mut() else {
            return;
        };
        report.pct = if dmarc.result == AuthResult::Fail && dmarc.policy != Some(DmarcPolicy::None)
        {
            dmarc.pct
        } else {
            self.dmarc_pct(&dmarc.from_domain).await.unwrap_or(100)
        };
    }

    async fn apply_pct(&self, dmarc: &mut DmarcVerdict) {
        let Some(policy) = dmarc.policy else {
            return;
        };
        if dmarc.result != AuthResult::Fail || policy == DmarcPolicy::None {
            return;
        }
        match self.dmarc_pct(&dmarc.from_domain).await {
            Ok(pct) => {
                dmarc.pct = pct;
                let selected = pct >= 100 || rand::random_range(0..100u8) < pct;
                dmarc.applied = if selected { policy } else { policy.relaxed() };
            }
            Err(error) => {
                // Never guess: a temporary failure is a DMARC temperror.
                debug!(%error, "dmarc pct lookup failed");
                dmarc.result = AuthResult::TempError;
                dmarc.reason = Some("dns error");
            }
        }
    }

    async fn dmarc_pct(&self, domain: &str) -> Result<u8, AuthError> {
        let mut name = domain;
        loop {
            match self.resolver.txt(&format!("_dmarc.{name}")).await {
                Ok(records) => {
                    if let Some(pct) = records.iter().find_map(|r| dmarc_record_pct(r)) {
                        return Ok(pct);
                    }
                }
                Err(e) if e.is_temporary() => return Err(e.into()),
                Err(_) => {}
            }
            match name.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => name = parent,
                _ => return Ok(100),
            }
        }
    }

    /// Forward-confirmed reverse names of `ip` (RFC 8601 §3 "iprev"): PTR
    /// names whose A/AAAA records include `ip`. Only looked up when some
    /// exception is a domain; any failure means no names.
    async fn iprev_names(&self, ip: IpAddr) -> Vec<String> {
        if !verdict::has_domain_exceptions(&self.config.exceptions) {
            return Vec::new();
        }
        let lookup = async {
            let mut confirmed = Vec::new();
            let names = self.resolver.ptr(ip).await.map_err(AuthError::from)?;
            // RFC 7208 §5.5 caps PTR names at 10 for the same reason.
            for name in names.into_iter().take(10) {
                let forward = match ip {
                    IpAddr::V4(v4) => self.resolver.ipv4(&name).await.map(|a| a.contains(&v4)),
                    IpAddr::V6(v6) => self.resolver.ipv6(&name).await.map(|a| a.contains(&v6)),
                };
                if forward.unwrap_or(false) {
                    confirmed.push(name);
                }
            }
            Ok::<_, AuthError>(confirmed)
        };
        match tokio::time::timeout(self.config.timeout, lookup).await {
            Ok(Ok(names)) => names,
            Ok(Err(error)) => {
                debug!(%error, "iprev lookup failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// The `pct=` of a DMARC record (RFC 7489 §6.3: 0..=100, default 100; an
/// invalid value is ignored), or `None` when `record` is not a DMARC record.
fn dmarc_record_pct(record: &str) -> Option<u8> {
    let mut tags = record.split(';').map(|t| {
        let (k, v) = t.split_once('=').unwrap_or((t, ""));
        (k.trim(), v.trim())
    });
    match tags.next() {
        Some(("v", "DMARC1")) => {}
        _ => return None,
    }
    Some(
        tags.find(|(k, _)| k.eq_ignore_ascii_case("pct"))
            .and_then(|(_, v)| v.parse::<u8>().ok())
            .filter(|p| *p <= 100)
            .unwrap_or(100),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_parsing() {
        for (record, pct) in [
            ("v=DMARC1; p=reject", Some(100)),
            ("v=DMARC1; p=reject; pct=0", Some(0)),
            ("v = DMARC1 ; PCT = 25 ; p=none", Some(25)),
            ("v=DMARC1; pct=101", Some(100)),
            ("v=DMARC1; pct=abc", Some(100)),
            ("v=spf1 -all", None),
            ("", None),
        ] {
            assert_eq!(dmarc_record_pct(record), pct, "{record}");
        }
    }
}
