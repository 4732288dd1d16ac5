//! [`Deliverer`]: the `Deliver` implementation. A pipeline of small steps
//! (STYLE 6): group recipients by domain → gather the facts (route, MTA-STS
//! policy, MX, addresses) → decide the plan ([`crate::plan::decide`]) →
//! execute it ([`crate::execute`]: for each host and address, connect → one
//! SMTP session with the TLS the plan demands → per-recipient results).
//! Timing of retries is the queue's business, not ours.
//!
//! Two facts decide what delivery may do, and both are recorded, never
//! sniffed: the MTA-STS policy (from the policy engine; a policy store that
//! cannot be read defers, it never means "no policy") and the message's
//! origin (from its envelope; only our own TLS reports get the RFC 8460
//! §5.3 exemption). MX hosts that are this server itself are never
//! contacted ([`SelfAddresses`](crate::SelfAddresses)).

use crate::connect::Connector;
use crate::execute::{Execution, Observed};
use crate::plan::{
    Contact, Dane, DeferCause, DeliveryPlan, Facts, Outcome, Planner, SkipReason, StsRule,
    TlsRequirement, consults_policy, decide,
};
use crate::requiretls;
use crate::results::all;
use crate::settings::DelivererSettings;
use portcullis_dns::Resolver;
use portcullis_policy::PolicyEngine;
use portcullis_queue::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_tls::{DaneAuthority, TlsResultType};
use portcullis_tlsrpt::{LogTlsResults, TlsResultSink};
use portcullis_types::Domain;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

/// Everything delivery needs, injected by the binary.
pub struct Deliverer<R, C> {
    settings: DelivererSettings<R, C>,
    domains: Mutex<HashMap<Domain, Arc<Semaphore>>>,
    policy: Option<Arc<PolicyEngine<R>>>,
    reporter: Arc<dyn TlsResultSink>,
}

impl<R: Resolver, C: Connector> Deliverer<R, C> {
    /// A deliverer with `settings`, without MTA-STS (see
    /// [`with_policy`](Self::with_policy)) and logging TLS outcomes only
    /// (see [`with_reporter`](Self::with_reporter)).
    pub fn new(settings: DelivererSettings<R, C>) -> Self {
        Deliverer {
            settings,
            domains: Mutex::new(HashMap::new()),
            policy: None,
            reporter: Arc::new(LogTlsResults::default()),
        }
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

    /// What this deliverer plans with, for `policy explain` to show the
    /// same plan.
    pub fn planner(&self) -> &Planner<R> {
        &self.settings.planner
    }

    fn domain_permit(&self, domain: &Domain) -> Arc<Semaphore> {
        let per_domain = self.settings.per_domain.max(1);
        let mut map = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(domain.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(per_domain)))
            .clone()
    }

    /// One domain's recipients of `job`: gather, decide, execute.
    async fn deliver_domain(
        &self,
        job: &DeliveryJob,
        domain: &Domain,
        idxs: &[usize],
    ) -> Vec<RecipientResult> {
        let semaphore = self.domain_permit(domain);
        let _permit = semaphore.acquire_owned().await.ok();
        let facts = self.gather(job, domain).await;
        let plan = decide(&facts);
        self.observe(domain, &plan);
        if let Some(refused) = requiretls::refused(&job.envelope, domain, &plan, idxs) {
            return refused;
        }
        let run = Execution {
            settings: &self.settings,
            reporter: self.reporter.as_ref(),
            job,
            domain,
            idxs,
            lookup: facts.sts.as_ref(),
        };
        report_dane_failures(&run, &plan);
        match &plan.outcome {
            Outcome::Try => run.run(&plan).await,
            Outcome::Defer { cause, reason } => {
                if *cause == DeferCause::PolicyMismatch {
                    report_mismatch(&run, &plan, reason);
                }
                all(idxs, |_| RecipientOutcome::Deferred {
                    remote_mta: None,
                    reason: reason.clone(),
                })
            }
            Outcome::Fail { status, reason } => all(idxs, |_| RecipientOutcome::Failed {
                remote_mta: None,
                status: *status,
                reason: reason.clone(),
            }),
        }
    }

    /// The facts of the decision: the MTA-STS policy only for MX delivery
    /// that gets that far, DNS only when the decision needs it.
    async fn gather<'a>(&'a self, job: &DeliveryJob, domain: &'a Domain) -> Facts<'a> {
        let planner = &self.settings.planner;
        let mut facts = planner.facts(domain, requiretls::enforcement_waived(&job.envelope));
        if let Some(engine) = self.policy.as_ref().filter(|_| consults_policy(&facts)) {
            facts.sts = Some(engine.policy_for(domain).await);
        }
        planner.look_up_dns(&mut facts).await;
        facts
    }

    /// Logs and counts what the plan decided, before anything is contacted.
    fn observe(&self, domain: &Domain, plan: &DeliveryPlan) {
        let metrics = &self.settings.metrics;
        match &plan.outcome {
            Outcome::Defer {
                cause: DeferCause::OwnDomainWithoutRoute,
                ..
            } => return,
            Outcome::Defer {
                cause: DeferCause::PolicyUnavailable,
                reason,
            } => {
                // Unknown is not "none": the unreadable entry may be an
                // enforce policy (RFC 8461 §10.2), so wait for it.
                metrics.policy_deferral("policy_unavailable");
                warn!(policy_domain = %domain, %reason, "MTA-STS policy unavailable; delivery deferred");
                return;
            }
            _ => {}
        }
        if plan.sts == StsRule::ReportExempt {
            info!(policy_domain = %domain, "TLS report: delivered without MTA-STS enforcement (RFC 8460 §5.3)");
        }
        metrics.policy_mode(plan.sts.label());
        for host in &plan.hosts {
            for ip in &host.myself {
                let target = SocketAddr::new(*ip, host.port);
                warn!(%domain, mx = %host.name, %target, "MX host is this server itself; not contacted");
            }
            if !host.myself.is_empty() {
                metrics.attempt(&host.name, "loops_to_self");
            }
            match (&host.contact, &host.dane) {
                (Contact::Skip(SkipReason::NotInEnforcedPolicy), _) => {
                    // RFC 8461 §5: only MX hosts the policy lists are candidates.
                    warn!(mx = %host.name, policy_domain = %domain, "MTA-STS: MX not listed in the enforced policy; not contacted");
                }
                (Contact::Skip(SkipReason::TlsaLookupFailed), Dane::Failed { error, .. }) => {
                    // RFC 7672 §2.2: neither clear text nor MTA-STS instead.
                    metrics.policy_deferral("dane_lookup");
                    warn!(mx = %host.name, %domain, %error, "DANE: TLSA lookup failed; MX not contacted until it answers");
                }
                (Contact::Skip(SkipReason::DaneRequired), dane) => {
                    metrics.policy_deferral("dane_required");
                    warn!(mx = %host.name, %domain, dane = dane.summary(), "DANE required by [delivery] dane_only but the MX has no usable DANE; not contacted");
                }
                (Contact::Try(_), Dane::Unusable(records)) => {
                    // RFC 7672 §2.2: as without DANE; the owner hears of it.
                    info!(mx = %host.name, %domain, records = records.len(), "DANE: TLSA records published but none usable for SMTP; delivered as without DANE, recorded as tlsa-invalid");
                }
                (Contact::Try(TlsRequirement::Dane { authority }), _) => {
                    debug!(mx = %host.name, %domain, records = authority.records.len(), "DANE: MX must show TLS its TLSA records authenticate");
                }
                _ => {}
            }
        }
        if let Outcome::Defer {
            cause: DeferCause::PolicyMismatch,
            ..
        } = plan.outcome
        {
            metrics.policy_deferral("mx_mismatch");
        }
    }
}

/// No MX host matches the enforced policy: one TLS-RPT failure, for the
/// first host left out.
fn report_mismatch<R, C: Connector>(run: &Execution<'_, R, C>, plan: &DeliveryPlan, reason: &str) {
    let Some(host) = plan
        .hosts
        .iter()
        .find(|h| matches!(h.contact, Contact::Skip(_)))
    else {
        return;
    };
    run.report(Observed::host(
        &host.name,
        host.addrs.first().copied(),
        TlsResultType::ValidationFailure,
        reason,
    ));
}

/// What DANE found wrong with the plan's MX hosts, for TLS-RPT, each under
/// a `tlsa` policy whose policy-string is the host's records (RFC 8460
/// §4.3.2): a host left out because its TLSA lookup failed or was bogus is
/// `dnssec-invalid` (no valid records came from the resolver); a host left
/// out by `[delivery] dane_only` for want of usable DANE is
/// `dane-required`; a host whose secure TLSA RRset has no record usable for
/// SMTP (RFC 7672 §2.2: delivered as without DANE) is `tlsa-invalid`, so
/// the domain's owner learns that its records do nothing.
fn report_dane_failures<R, C: Connector>(run: &Execution<'_, R, C>, plan: &DeliveryPlan) {
    for host in &plan.hosts {
        let (failure, detail) = match (&host.contact, &host.dane) {
            (Contact::Skip(SkipReason::TlsaLookupFailed), Dane::Failed { error, .. }) => {
                (TlsResultType::DnssecInvalid, error.clone())
            }
            (Contact::Skip(SkipReason::DaneRequired), dane) => (
                TlsResultType::DaneRequired,
                format!(
                    "DANE required by the sender's policy: {}",
                    dane.summary()
                ),
            ),
            (Contact::Try(_), Dane::Unusable(_)) => (
                TlsResultType::TlsaInvalid,
                "no TLSA record usable for SMTP (PKIX-TA/PKIX-EE or unknown parameters, RFC 7672 §3.1.3)".to_owned(),
            ),
            _ => continue,
        };
        let authority = DaneAuthority {
            records: host.dane.records().to_vec(),
            names: vec![host.name.clone()],
        };
        let mut seen = Observed::host(&host.name, host.addrs.first().copied(), failure, &detail);
        seen.dane = Some(&authority);
        run.report(seen);
    }
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
                self.settings.metrics.outcome(&res.outcome);
            }
            results.extend(r);
        }
        results
    }
}
