//! `policy explain`: the plan delivery would make for a domain now. The
//! same facts (gathered by the deliverer's own [`Planner`]) go through the
//! same pure decision ([`decide`]); this module only adds the policy in
//! force and notes on what applies.
//!
//! [`Planner`]: portcullis_delivery::Planner

use super::policy::{cache_entry, pin_entry, store_err};
use super::refused::{Refused, parse_domain};
use crate::state::PolicyAccess;
use portcullis_admin::{ExplainHost, ExplainPlan, PolicyEntry, PolicyExplain};
use portcullis_config::RouteTls;
use portcullis_delivery::plan::{
    Contact, Dane, DeferCause, DeliveryPlan, HostSource, Outcome, PlannedHost, PolicyMatch,
    SkipReason, StsRule, consults_policy, decide,
};
use portcullis_policy::{Mode, NoPolicy, PolicyLookup, PolicySource};
use portcullis_tls::TlsResultType;
use portcullis_types::Domain;
use std::sync::Arc;

impl PolicyAccess {
    /// The policy, the hosts in the order delivery tries them, the plan
    /// and notes on what applies.
    pub(super) async fn explain(&self, domain: &str) -> Result<PolicyExplain, Refused> {
        let d = parse_domain(domain)?;
        let (policy, lookup) = self.policy_in_force(&d).await?;
        let mut facts = self.planner.facts(&d, false);
        if consults_policy(&facts) {
            facts.sts = Some(lookup.clone());
        }
        self.planner.look_up_dns(&mut facts).await;
        let plan = decide(&facts);
        let mut notes: Vec<String> = policy
            .is_none()
            .then(|| lookup_note(&d, &lookup))
            .into_iter()
            .collect();
        if let Some(r) = facts.route {
            let tls = match &r.tls {
                RouteTls::Opportunistic => "opportunistic TLS".to_owned(),
                RouteTls::Verify { name } => format!(
                    "tls = verify: STARTTLS mandatory with a PKIX-valid certificate for {name}, never in clear (authenticated TLS for REQUIRETLS)"
                ),
            };
            notes.push(format!(
                "{d} is routed by [routes] to {}:{}: MTA-STS and DANE do not apply to a configured route; {tls}",
                r.next_hop.host, r.next_hop.port
            ));
        }
        notes.extend(outcome_note(&plan));
        notes.extend(plan.hosts.iter().filter_map(dane_note));
        notes.extend(mode_note(&d, &plan, facts.sts.as_ref()));
        Ok(PolicyExplain {
            domain: d.to_string(),
            policy,
            mx_hosts: plan.hosts.iter().map(explain_host).collect(),
            note: notes.join("\n"),
            plan: explain_plan(&plan),
        })
    }

    /// The policy in force, without fetching when something is cached, as
    /// shown and as delivery's decision takes it.
    async fn policy_in_force(
        &self,
        d: &Domain,
    ) -> Result<(Option<PolicyEntry>, PolicyLookup), Refused> {
        let now = self.now();
        if let Some(pin) = self.active_pin(d, now).await? {
            let lookup = PolicyLookup::Policy {
                policy: Arc::new(pin.to_cached()),
                source: PolicySource::Pinned {
                    reason: pin.reason.clone(),
                    source: pin.source.clone(),
                },
            };
            return Ok((Some(pin_entry(&pin, now)), lookup));
        }
        if let Some(c) = self.engine.get(d).await.map_err(store_err)?
            && !c.is_expired(now)
        {
            let entry = cache_entry(&c, now, false);
            let lookup = PolicyLookup::Policy {
                policy: Arc::new(c),
                source: PolicySource::Cache,
            };
            return Ok((Some(entry), lookup));
        }
        let lookup = self.engine.policy_for(d).await;
        let entry = lookup.policy().map(|p| cache_entry(p, now, false));
        Ok((entry, lookup))
    }
}

/// Why no policy is in force.
fn lookup_note(d: &Domain, lookup: &PolicyLookup) -> String {
    match lookup {
        PolicyLookup::FetchFailed { error, .. } => format!(
            "{d} publishes an MTA-STS record but its policy cannot be fetched ({}: {error}): delivery proceeds as without a policy",
            TlsResultType::from(error)
        ),
        PolicyLookup::None(NoPolicy::NoRecord(reason)) => {
            format!("no MTA-STS policy ({reason}): opportunistic TLS")
        }
        PolicyLookup::None(NoPolicy::DnsTemporary(e)) => format!(
            "the MTA-STS record could not be looked up ({e}) and nothing is cached: opportunistic TLS for now"
        ),
        // Unknown is not "none": delivery defers.
        lookup @ PolicyLookup::Unavailable { .. } => format!(
            "{}: delivery is deferred",
            lookup.unavailable().unwrap_or_default()
        ),
        other => format!("no MTA-STS policy ({other:?}): opportunistic TLS"),
    }
}

/// Why no host is tried now, if none is.
fn outcome_note(plan: &DeliveryPlan) -> Option<String> {
    match &plan.outcome {
        Outcome::Try => None,
        // Said by the policy note and the mode note.
        Outcome::Defer {
            cause: DeferCause::PolicyUnavailable | DeferCause::PolicyMismatch,
            ..
        } => None,
        Outcome::Defer { reason, .. } => Some(format!("no mail host to try now: {reason}")),
        Outcome::Fail {
            status: (class, subject, detail),
            reason,
        } => Some(format!(
            "no mail host to try now: {reason} (bounces with {class}.{subject}.{detail})"
        )),
    }
}

/// What the policy's mode means for delivery.
fn mode_note(d: &Domain, plan: &DeliveryPlan, lookup: Option<&PolicyLookup>) -> Option<String> {
    let mismatch = matches!(
        plan.outcome,
        Outcome::Defer {
            cause: DeferCause::PolicyMismatch,
            ..
        }
    );
    Some(match plan.sts {
        StsRule::Enforce if mismatch => format!(
            "enforce: no MX host of {d} matches the policy, so deliveries are deferred (never sent elsewhere or in clear)"
        ),
        StsRule::Enforce => "enforce: only allowed hosts are contacted, each only over PKIX-valid TLS 1.2+ for its name; any other outcome defers the delivery, never a retry in clear".into(),
        StsRule::Testing => "testing: delivery is opportunistic; what enforce would refuse (hosts not allowed, TLS failures) is recorded for TLS-RPT".into(),
        StsRule::NoPolicy if lookup.and_then(PolicyLookup::mode) == Some(Mode::None) => {
            "mode none: the domain has withdrawn its policy; opportunistic TLS".into()
        }
        _ => return None,
    })
}

/// What DANE means for one host, when it has a say (RFC 7672 §2.2).
fn dane_note(h: &PlannedHost) -> Option<String> {
    let name = &h.name;
    if h.contact == Contact::Skip(SkipReason::DaneRequired) {
        return Some(format!(
            "{name}: DANE required by [delivery] dane_only, but the host has none usable ({}); not contacted, recorded for TLS-RPT as dane-required",
            h.dane.summary()
        ));
    }
    Some(match &h.dane {
        Dane::Usable(_) => format!(
            "{name}: DANE: usable TLSA records; STARTTLS is mandatory and the certificate must match a record (MTA-STS does not apply to this host)"
        ),
        Dane::Unusable(_) => format!(
            "{name}: DANE: TLSA records published but none usable for SMTP; delivered as without DANE, recorded for TLS-RPT as tlsa-invalid"
        ),
        Dane::Failed { error, .. } => format!(
            "{name}: DANE: the TLSA lookup failed ({error}); the host is not contacted until it answers, never in clear"
        ),
        Dane::NotChecked | Dane::Insecure | Dane::NoRecords => return None,
    })
}

/// One host of the plan as the admin answer shows it.
fn explain_host(h: &PlannedHost) -> ExplainHost {
    let (source, preference) = match h.source {
        HostSource::Route => ("route", None),
        HostSource::Mx { preference } => ("mx", Some(preference)),
        HostSource::ImplicitMx => ("implicit mx", None),
    };
    ExplainHost {
        name: h.name.clone(),
        preference,
        port: h.port,
        addrs: h.addrs.iter().map(ToString::to_string).collect(),
        error: h.error.clone(),
        allowed_by_policy: h.policy != PolicyMatch::NotListed,
        tls_required: match &h.contact {
            Contact::Try(tls) => tls.to_string(),
            Contact::Skip(_) => "not contacted".into(),
        },
        source: source.into(),
        matched_pattern: match &h.policy {
            PolicyMatch::Listed(pattern) => Some(pattern.clone()),
            _ => None,
        },
        contacted: matches!(h.contact, Contact::Try(_)),
        myself: h.myself.iter().map(ToString::to_string).collect(),
        rule: h.rule.label().into(),
        dnssec: h.dane.dnssec().into(),
        tlsa: h
            .dane
            .records()
            .iter()
            .map(|r| match r.usable() {
                true => r.to_string(),
                false => format!("{r} (unusable)"),
            })
            .collect(),
    }
}

/// The plan's decision for the domain as the admin answer shows it.
fn explain_plan(plan: &DeliveryPlan) -> ExplainPlan {
    let (decision, status, reason) = match &plan.outcome {
        Outcome::Try => ("try", None, None),
        Outcome::Defer { reason, .. } => ("defer", None, Some(reason.clone())),
        Outcome::Fail {
            status: (class, subject, detail),
            reason,
        } => (
            "fail",
            Some(format!("{class}.{subject}.{detail}")),
            Some(reason.clone()),
        ),
    };
    let mta_sts = match plan.sts {
        StsRule::NotApplied => "not applied",
        StsRule::NoPolicy => "none",
        StsRule::Testing => "testing",
        StsRule::Enforce => "enforce",
        StsRule::ReportExempt => "waived for a TLS report",
        StsRule::Unavailable => "unavailable",
    };
    ExplainPlan {
        decision: decision.into(),
        status,
        reason,
        mta_sts: mta_sts.into(),
    }
}
