//! [`Deliverer`]: the `Deliver` implementation. A pipeline of small steps
//! (STYLE 6): group recipients by domain → plan the route → for each host
//! and address: connect → one SMTP session (TLS as decided) → per-recipient
//! results. Timing of retries is the queue's business, not ours.
//!
//! Two facts decide what delivery may do, and both are recorded, never
//! sniffed: the MTA-STS policy (from the policy engine; a policy store that
//! cannot be read defers, it never means "no policy") and the message's
//! origin (from its envelope; only our own TLS reports get the RFC 8460
//! §5.3 exemption). MX hosts that are this server itself are never
//! contacted ([`SelfAddresses`]).

use crate::client::{
    RcptSpec, SessionError, SessionReport, Stage, Timeouts, TlsDecision, TlsOutcome, Transaction,
    deliver_session,
};
use crate::connect::Connector;
use crate::destinations::{Destinations, LiveDestinations};
use crate::loops::SelfAddresses;
use crate::metrics::DeliveryMetrics;
use crate::plan::{Hop, PlanError, plan};
use portcullis_config::Route;
use portcullis_dns::Resolver;
use portcullis_policy::{Mode, PolicyEngine, PolicyLookup};
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_tls::ClientTls;
use portcullis_tls::TlsResultType;
use portcullis_tlsrpt::{LogTlsResults, TlsResultSink, TlsSessionResult};
use portcullis_types::Domain;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

/// Everything delivery needs, injected by the binary.
pub struct Deliverer<R, C> {
    resolver: R,
    connector: C,
    /// `[routes]` and accepted domains, replaced by a reload.
    destinations: LiveDestinations,
    port: u16,
    hostname: String,
    tls: ClientTls,
    timeouts: Timeouts,
    per_domain: usize,
    domains: Mutex<HashMap<Domain, Arc<Semaphore>>>,
    metrics: Arc<DeliveryMetrics>,
    policy: Option<Arc<PolicyEngine<R>>>,
    reporter: Arc<dyn TlsResultSink>,
    myself: SelfAddresses,
}

/// How TLS is decided for the sessions of one delivery.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TlsPolicy {
    /// No MTA-STS policy (or a route): opportunistic, clear text allowed.
    Opportunistic,
    /// MTA-STS `testing`: as opportunistic, but failures are reported.
    Testing,
    /// MTA-STS `enforce`: PKIX-valid TLS 1.2+ with a listed MX or nothing.
    Enforce,
}

/// What one session means for the recipients it carried.
enum Step {
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

impl<R: Resolver, C: Connector> Deliverer<R, C> {
    /// A deliverer. `per_domain` caps concurrent sessions per destination domain.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        resolver: R,
        connector: C,
        routes: Vec<Route>,
        accepted: Vec<Domain>,
        port: u16,
        hostname: String,
        tls: ClientTls,
        timeouts: Timeouts,
        per_domain: usize,
        metrics: Arc<DeliveryMetrics>,
    ) -> Self {
        Deliverer {
            resolver,
            connector,
            destinations: LiveDestinations::new(Destinations { routes, accepted }),
            port,
            hostname,
            tls,
            timeouts,
            per_domain: per_domain.max(1),
            domains: Mutex::new(HashMap::new()),
            metrics,
            policy: None,
            reporter: Arc::new(LogTlsResults::default()),
            myself: SelfAddresses::default(),
        }
    }

    /// Never connects to `myself` (our own listeners) for an MX found in
    /// DNS: such a recipient fails with 5.4.6 "loops back to myself" when
    /// no other host is left. Without it, nothing counts as ourselves.
    pub fn with_self_addresses(mut self, myself: SelfAddresses) -> Self {
        self.myself = myself;
        self
    }

    /// Applies MTA-STS (RFC 8461) from `engine` to MX deliveries.
    pub fn with_policy(mut self, engine: Arc<PolicyEngine<R>>) -> Self {
        self.policy = Some(engine);
        self
    }

    /// Hands every TLS outcome to `reporter` (TLS-RPT).
    pub fn with_reporter(mut self, reporter: Arc<dyn TlsResultSink>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The routes and accepted domains it delivers by: setting new ones
    /// on this handle (a reload) applies to deliveries started after.
    pub fn destinations(&self) -> &LiveDestinations {
        &self.destinations
    }

    fn domain_permit(&self, domain: &Domain) -> Arc<Semaphore> {
        let mut map = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(domain.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_domain)))
            .clone()
    }

    async fn deliver_domain(
        &self,
        job: &DeliveryJob,
        domain: &Domain,
        idxs: &[usize],
    ) -> Vec<RecipientResult> {
        let dest = self.destinations.get();
        if dest.accepted.contains(domain) && crate::plan::route_for(&dest.routes, domain).is_none()
        {
            // Our own domain's MX points back at us: looking it up would
            // loop. Mail for it waits for a route to the internal store.
            let reason = format!(
                "no [routes] entry for accepted domain {domain}: add one naming the internal mail store"
            );
            return all(idxs, |_| RecipientOutcome::Deferred {
                remote_mta: None,
                reason: reason.clone(),
            });
        }
        let semaphore = self.domain_permit(domain);
        let _permit = semaphore.acquire_owned().await.ok();
        let routed = crate::plan::route_for(&dest.routes, domain).is_some();
        // RFC 8461 applies to MX delivery; a configured route is the
        // operator's own hop.
        let lookup = match (&self.policy, routed) {
            (Some(engine), false) => Some(engine.policy_for(domain).await),
            _ => None,
        };
        if let Some(reason) = lookup.as_ref().and_then(PolicyLookup::unavailable) {
            // Unknown is not "none": the unreadable entry may be an
            // enforce policy (RFC 8461 §10.2), so wait for it.
            self.metrics.policy_deferral("policy_unavailable");
            warn!(policy_domain = %domain, %reason, "MTA-STS policy unavailable; delivery deferred");
            return all(idxs, |_| RecipientOutcome::Deferred {
                remote_mta: None,
                reason: reason.clone(),
            });
        }
        let tls_policy = match lookup.as_ref().and_then(PolicyLookup::mode) {
            // RFC 8460 §5.3: reports are delivered despite TLS failures (a
            // broken TLS setup is what they are about). Only our own
            // reports, as recorded when we made them: anyone can write
            // report-like headers (STYLE 8a).
            Some(Mode::Enforce) if job.envelope.origin.is_tls_report() => {
                info!(policy_domain = %domain, "TLS report: delivered without MTA-STS enforcement (RFC 8460 §5.3)");
                TlsPolicy::Testing
            }
            Some(Mode::Enforce) => TlsPolicy::Enforce,
            Some(Mode::Testing) => TlsPolicy::Testing,
            _ => TlsPolicy::Opportunistic,
        };
        self.metrics.policy_mode(match tls_policy {
            TlsPolicy::Enforce => "enforce",
            TlsPolicy::Testing => "testing",
            TlsPolicy::Opportunistic => "none",
        });
        let planned = match plan(&self.resolver, &dest.routes, self.port, domain).await {
            // A configured route is the operator's own choice of hop.
            Ok(h) if routed => Ok(h),
            Ok(h) => self.without_myself(domain, h),
            Err(e) => Err(e),
        };
        let hops = match planned {
            Ok(h) => h,
            Err(PlanError::Permanent { status, reason }) => {
                return all(idxs, |_| RecipientOutcome::Failed {
                    remote_mta: None,
                    status,
                    reason: reason.clone(),
                });
            }
            Err(e) => {
                let reason = e.to_string();
                return all(idxs, |_| RecipientOutcome::Deferred {
                    remote_mta: None,
                    reason: reason.clone(),
                });
            }
        };
        let hops: Vec<_> = match (tls_policy, lookup.as_ref().and_then(PolicyLookup::policy)) {
            (TlsPolicy::Enforce, Some(policy)) => {
                let (allowed, skipped): (Vec<_>, Vec<_>) =
                    hops.into_iter().partition(|h| policy.matches_mx(&h.name));
                for h in &skipped {
                    // RFC 8461 §5: only MX hosts the policy lists are candidates.
                    warn!(mx = %h.name, policy_domain = %domain, "MTA-STS: MX not listed in the enforced policy; not contacted");
                }
                if allowed.is_empty() {
                    let reason = format!(
                        "MTA-STS: no MX host of {domain} matches the enforced policy (mx: {})",
                        policy
                            .mx
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.metrics.policy_deferral("mx_mismatch");
                    if let (Some(lookup), Some(h)) = (&lookup, skipped.first()) {
                        self.report(
                            lookup,
                            domain,
                            &h.name,
                            h.addrs.first().copied(),
                            None,
                            None,
                            Some(TlsResultType::ValidationFailure),
                            &reason,
                            job,
                        );
                    }
                    return all(idxs, |_| RecipientOutcome::Deferred {
                        remote_mta: None,
                        reason: reason.clone(),
                    });
                }
                allowed
            }
            _ => hops,
        };
        let mut last_error = format!("no mail host of {domain} could be reached");
        for hop in &hops {
            if let Some(e) = &hop.error {
                last_error = e.clone();
            }
            for addr in &hop.addrs {
                let target = SocketAddr::new(*addr, hop.port);
                let mx = format!("{}[{}]", hop.name, addr);
                let mut in_clear = false;
                loop {
                    // A fresh opportunistic configuration per connection: its
                    // record says whether this peer's certificate verified.
                    let decision = match (tls_policy, in_clear) {
                        (TlsPolicy::Enforce, _) => match self.tls.pkix_config() {
                            Ok(config) => TlsDecision::Required { config },
                            Err(e) => {
                                last_error = format!("MTA-STS: trust anchors unusable: {e}");
                                break;
                            }
                        },
                        (_, true) => TlsDecision::Disabled,
                        (_, false) => self.opportunistic(),
                    };
                    let stream = match self.connector.connect(target).await {
                        Ok(s) => s,
                        Err(e) => {
                            self.metrics.attempt(&hop.name, "connect_failed");
                            debug!(%mx, error = %e, "connect failed");
                            last_error = format!("{mx}: connect: {e}");
                            break;
                        }
                    };
                    let local_ip = stream.local_addr().ok().map(|a| a.ip());
                    let report = self.session(stream, &hop.name, decision, job, idxs).await;
                    if let Some(lookup) = lookup.as_ref().filter(|_| !in_clear) {
                        let failure = tls_failure(&report.tls);
                        let detail = match &report.result {
                            Err(e) => e.to_string(),
                            Ok(_) => format!("{:?}", report.tls),
                        };
                        self.report(
                            lookup,
                            domain,
                            &hop.name,
                            Some(*addr),
                            local_ip,
                            report.peer_name.clone(),
                            failure,
                            &detail,
                            job,
                        );
                    }
                    match self.interpret(&mx, report, idxs) {
                        Step::Done(results) => {
                            self.metrics.attempt(&hop.name, "session");
                            return results;
                        }
                        Step::NextHost(e) => {
                            self.metrics.attempt(&hop.name, "next_host");
                            last_error = e;
                            break;
                        }
                        Step::RetryWithoutTls(e) => {
                            self.metrics.attempt(&hop.name, "tls_failed");
                            if tls_policy == TlsPolicy::Enforce {
                                // RFC 8461 §5: never a plaintext or unverified retry.
                                self.metrics.policy_deferral("tls");
                                warn!(%mx, error = %e, "MTA-STS enforce: TLS failed; trying the next MX, never in clear");
                                last_error = format!("MTA-STS: {e}");
                                break;
                            }
                            if in_clear {
                                last_error = e;
                                break;
                            }
                            warn!(%mx, error = %e, "STARTTLS failed; no policy requires TLS, retrying without it");
                            in_clear = true;
                        }
                    }
                }
            }
        }
        all(idxs, |_| RecipientOutcome::Deferred {
            remote_mta: None,
            reason: last_error.clone(),
        })
    }

    /// Removes the addresses that are this server from MX `hops`; fails
    /// when nothing else is left (RFC 5321 §5.1: never deliver to
    /// ourselves). Permanently, 5.4.6 as Postfix words it, unless a host
    /// whose addresses are unknown (a temporary DNS failure) may still turn
    /// out to be someone else.
    fn without_myself(&self, domain: &Domain, mut hops: Vec<Hop>) -> Result<Vec<Hop>, PlanError> {
        let mut looped = false;
        for hop in &mut hops {
            let (name, port) = (&hop.name, hop.port);
            let before = hop.addrs.len();
            hop.addrs.retain(|addr| {
                let target = SocketAddr::new(*addr, port);
                let me = self.myself.is_self(target);
                if me {
                    warn!(%domain, mx = %name, %target, "MX host is this server itself; not contacted");
                }
                !me
            });
            if hop.addrs.len() < before {
                self.metrics.attempt(&hop.name, "loops_to_self");
                looped = true;
            }
        }
        if !looped || hops.iter().any(|h| !h.addrs.is_empty()) {
            return Ok(hops);
        }
        let reason = format!("mail for {domain} loops back to myself");
        if hops.iter().any(|h| h.temporary) {
            let others: Vec<&str> = hops
                .iter()
                .filter(|h| h.temporary)
                .filter_map(|h| h.error.as_deref())
                .collect();
            return Err(PlanError::Temporary {
                reason: format!("{reason}; other MX hosts unresolved: {}", others.join("; ")),
            });
        }
        Err(PlanError::Permanent {
            status: (5, 4, 6),
            reason,
        })
    }

    /// Hands one session's TLS outcome to the TLS-RPT recorder.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        lookup: &PolicyLookup,
        domain: &Domain,
        mx_host: &str,
        ip: Option<std::net::IpAddr>,
        sending_ip: Option<std::net::IpAddr>,
        helo: Option<String>,
        failure: Option<TlsResultType>,
        detail: &str,
        job: &DeliveryJob,
    ) {
        let policy = lookup.report(domain);
        // A failed policy fetch is a result of its own (RFC 8460 §4.3.2).
        let failure = policy.failure.or(failure);
        let Some(receiving_ip) = ip else { return };
        self.reporter.record(TlsSessionResult {
            policy,
            sending_ip,
            mx_host: mx_host.to_string(),
            receiving_ip,
            receiving_helo: helo,
            failure,
            detail: detail.chars().take(200).collect(),
            is_report: job.envelope.origin.is_tls_report(),
        });
    }

    fn opportunistic(&self) -> TlsDecision {
        let (config, record) = self.tls.opportunistic_config();
        TlsDecision::Opportunistic { config, record }
    }

    async fn session(
        &self,
        stream: tokio::net::TcpStream,
        server_name: &str,
        decision: TlsDecision,
        job: &DeliveryJob,
        idxs: &[usize],
    ) -> SessionReport {
        let env = &job.envelope;
        let mail_from = env.sender.to_string();
        let rcpt_text: Vec<String> = idxs
            .iter()
            .map(|&i| env.recipients[i].address.to_string())
            .collect();
        let recipients = idxs
            .iter()
            .zip(&rcpt_text)
            .map(|(&i, text)| RcptSpec {
                address: text.as_str(),
                notify: env.recipients[i].notify,
                orcpt: env.recipients[i].orcpt.as_deref(),
            })
            .collect();
        let tx = Transaction {
            mail_from: &mail_from,
            recipients,
            message: job.message.clone(),
            body: env.body,
            smtputf8: env.smtputf8,
            ret: env.ret,
            envid: env.envid.as_deref(),
        };
        deliver_session(
            stream,
            server_name,
            &self.hostname,
            decision,
            &tx,
            &self.timeouts,
        )
        .await
    }

    /// Maps a session's report onto the recipients (RFC 5321 §4.2.5, §6).
    fn interpret(&self, mx: &str, report: SessionReport, idxs: &[usize]) -> Step {
        let tx = match report.result {
            Ok(tx) => tx,
            Err(e) => {
                let text = format!("{mx}: {e}");
                return match &e {
                    // Also the two ways a peer fails a TLS requirement
                    // (only an enforced policy requires TLS): reported as
                    // an MTA-STS refusal, never retried in clear.
                    SessionError::Tls { .. }
                    | SessionError::StartTlsRequired
                    | SessionError::StartTls(_) => Step::RetryWithoutTls(text),
                    e if e.is_permanent() => {
                        let status = permanent_status(e);
                        Step::Done(all(idxs, |_| RecipientOutcome::Failed {
                            remote_mta: Some(mx.to_string()),
                            status,
                            reason: text.clone(),
                        }))
                    }
                    // Once the data went out, another host could deliver a
                    // second copy: defer instead of moving on.
                    SessionError::Timeout {
                        stage: Stage::DataEnd,
                    }
                    | SessionError::Io {
                        stage: Stage::DataEnd,
                        ..
                    } => Step::Done(all(idxs, |_| RecipientOutcome::Deferred {
                        remote_mta: Some(mx.to_string()),
                        reason: text.clone(),
                    })),
                    SessionError::Mail(reply) if reply.is_transient() => {
                        Step::Done(all(idxs, |_| RecipientOutcome::Deferred {
                            remote_mta: Some(mx.to_string()),
                            reason: text.clone(),
                        }))
                    }
                    _ => Step::NextHost(text),
                };
            }
        };
        let data = tx.data.as_ref();
        let results = idxs
            .iter()
            .zip(&tx.rcpts)
            .map(|(&index, rcpt)| {
                let remote_mta = mx.to_string();
                let outcome = if rcpt.is_permanent() {
                    RecipientOutcome::Failed {
                        remote_mta: Some(remote_mta),
                        status: status_of(rcpt, (5, 0, 0)),
                        reason: rcpt.to_string(),
                    }
                } else if !rcpt.is_positive() {
                    RecipientOutcome::Deferred {
                        remote_mta: Some(remote_mta),
                        reason: rcpt.to_string(),
                    }
                } else {
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
                };
                RecipientResult { index, outcome }
            })
            .collect();
        info!(%mx, tls = ?report.tls, "session finished");
        Step::Done(results)
    }
}

fn status_of(reply: &portcullis_types::Reply, default: (u8, u16, u16)) -> (u8, u16, u16) {
    reply.enhanced.unwrap_or(default)
}

fn permanent_status(e: &SessionError) -> (u8, u16, u16) {
    let (class, subject, detail) = e.status();
    // A permanent error always bounces with a 5.x.x status.
    (5.max(class), subject, detail)
}

fn all(idxs: &[usize], f: impl Fn(usize) -> RecipientOutcome) -> Vec<RecipientResult> {
    idxs.iter()
        .map(|&index| RecipientResult {
            index,
            outcome: f(index),
        })
        .collect()
}

impl<R: Resolver, C: Connector> Deliver for Deliverer<R, C> {
    async fn deliver(&self, job: DeliveryJob) -> Vec<RecipientResult> {
        // One session per destination domain (RFC 5321 §3.3: recipients of
        // one domain share a transaction).
        let mut by_domain: BTreeMap<Domain, Vec<usize>> = BTreeMap::new();
        for &i in &job.pending {
            if let Some(r) = job.envelope.recipients.get(i) {
                by_domain
                    .entry(r.address.domain.clone())
                    .or_default()
                    .push(i);
            }
        }
        let mut results = Vec::with_capacity(job.pending.len());
        for (domain, idxs) in &by_domain {
            let r = self.deliver_domain(&job, domain, idxs).await;
            for res in &r {
                self.metrics.outcome(&res.outcome);
            }
            results.extend(r);
        }
        results
    }
}

/// The RFC 8460 result type of a session's TLS, `None` for a good session.
fn tls_failure(tls: &TlsOutcome) -> Option<TlsResultType> {
    match tls {
        TlsOutcome::Established { verified: true, .. } => None,
        TlsOutcome::Established { failure, .. } => {
            Some(failure.unwrap_or(TlsResultType::ValidationFailure))
        }
        other => other.failure(),
    }
}
