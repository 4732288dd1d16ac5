//! The outbound decision: one pure function from [`Facts`] to a
//! [`DeliveryPlan`]. Delivery executes the plan; `policy explain` prints
//! it. The steps, in order (the first that concludes decides):
//!
//! 1. one of our own domains without a route defers (its MX is us);
//! 2. an unreadable policy store defers (RFC 8461 §10.2: unknown is not
//!    "none");
//! 3. the hosts: the route's next hop (PKIX-valid TLS for its `tls_name`
//!    with `tls = "verify"`, else opportunistic), or the MX hosts by preference, or
//!    the domain itself (implicit MX); a null MX (RFC 7505) or NXDOMAIN
//!    fails, a temporary MX failure defers;
//! 4. no host with an address: fail for an implicit MX whose lookups all
//!    said "nothing there" (RFC 5321 §5.1), else defer;
//! 5. addresses that are this server are dropped from MX hosts; when none
//!    is left, fail with 5.4.6 (or defer while a host is unresolved);
//! 6. MTA-STS: under `enforce` only listed hosts are contacted, each only
//!    over PKIX-valid TLS for its name; every other case is opportunistic
//!    TLS;
//! 7. DANE (RFC 7672), per MX host, over MTA-STS (RFC 8461 §2): a host with
//!    usable TLSA records (secure MX RRset, addresses and TLSA RRset) must
//!    show TLS its records authenticate, listed by a policy or not; a host
//!    whose TLSA lookup failed or was bogus is not contacted; unusable
//!    records leave the host to step 6 (§2.2), unless the domain is in
//!    `[delivery] dane_only`: then every host without usable DANE is
//!    skipped. Not for a route, and not for a message whose enforcement
//!    is waived (our TLS reports, `TLS-Required: No`): DANE is then as
//!    MTA-STS `testing`;
//! 8. no host left to contact defers (TLSA lookups failed, no host with
//!    DANE for a `dane_only` domain, or no MX host matches an enforced
//!    policy).

use super::facts::{Dane, Facts, HostSource, NoHosts};
use super::outcome::{
    Contact, DeferCause, DeliveryPlan, Outcome, PlannedHost, PolicyMatch, Rule, SkipReason,
    StsRule, TlsRequirement,
};
use portcullis_config::RouteTls;
use portcullis_policy::{Mode, MxPattern, PolicyLookup, PolicySource};
use portcullis_tls::DaneAuthority;
use std::net::{IpAddr, SocketAddr};

/// Decides where and how mail for `facts.domain` goes.
pub fn decide(facts: &Facts<'_>) -> DeliveryPlan {
    let sts = sts_rule(facts);
    if let Some(outcome) = before_dns(facts, sts) {
        return DeliveryPlan {
            sts,
            hosts: Vec::new(),
            outcome,
        };
    }
    let mut hosts = match hosts(facts) {
        Ok(hosts) => hosts,
        Err(outcome) => {
            return DeliveryPlan {
                sts,
                hosts: Vec::new(),
                outcome,
            };
        }
    };
    let outcome = no_address(facts, &hosts)
        .or_else(|| drop_myself(facts, &mut hosts))
        .or_else(|| {
            apply_policy(facts, sts, &mut hosts);
            apply_dane(facts.dane_only, facts.policy_waived, &mut hosts);
            none_left(facts, sts, &hosts)
        })
        .unwrap_or(Outcome::Try);
    DeliveryPlan {
        sts,
        hosts,
        outcome,
    }
}

/// True when delivery should ask the MTA-STS engine: for MX delivery that
/// gets that far (RFC 8461 applies to MX hosts; a route is the operator's
/// own hop).
pub fn consults_policy(facts: &Facts<'_>) -> bool {
    facts.route.is_none() && before_dns(facts, StsRule::NotApplied).is_none()
}

/// True when the decision needs DNS (it is not already made without it).
pub fn consults_dns(facts: &Facts<'_>) -> bool {
    before_dns(facts, sts_rule(facts)).is_none()
}

/// How MTA-STS applies, from the lookup (not for a route).
fn sts_rule(facts: &Facts<'_>) -> StsRule {
    let Some(lookup) = facts.sts.as_ref().filter(|_| facts.route.is_none()) else {
        return StsRule::NotApplied;
    };
    if lookup.unavailable().is_some() {
        return StsRule::Unavailable;
    }
    match lookup.mode() {
        // RFC 8460 §5.3: reports are delivered despite TLS failures (a
        // broken TLS setup is what they are about); RFC 8689 §5: so is a
        // `TLS-Required: No` message its sender was allowed to mark. Only
        // from the origin and client recorded when the message was made
        // (STYLE 8a), never from its content.
        Some(Mode::Enforce) if facts.policy_waived => StsRule::ReportExempt,
        Some(Mode::Enforce) => StsRule::Enforce,
        Some(Mode::Testing) => StsRule::Testing,
        _ => StsRule::NoPolicy,
    }
}

/// Steps 1 and 2: what is decided before DNS is asked.
fn before_dns(facts: &Facts<'_>, sts: StsRule) -> Option<Outcome> {
    let domain = facts.domain;
    if facts.own_domain && facts.route.is_none() {
        // Our own domain's MX points back at us: looking it up would loop.
        // Mail for it waits for a route to the internal store.
        return Some(Outcome::Defer {
            cause: DeferCause::OwnDomainWithoutRoute,
            reason: format!(
                "no [routes] entry for accepted domain {domain}: add one naming the internal mail store"
            ),
        });
    }
    if sts == StsRule::Unavailable {
        let reason = facts
            .sts
            .as_ref()
            .and_then(|l| l.unavailable())
            .unwrap_or_default();
        return Some(Outcome::Defer {
            cause: DeferCause::PolicyUnavailable,
            reason,
        });
    }
    None
}

/// Step 3: the hosts, in order, each with its addresses.
fn hosts(facts: &Facts<'_>) -> Result<Vec<PlannedHost>, Outcome> {
    let domain = facts.domain;
    if let Some(route) = facts.route.as_ref() {
        let name = &route.next_hop.host;
        let mut host = planned(facts, name, route.next_hop.port, HostSource::Route);
        if let Ok(ip) = name.parse::<IpAddr>() {
            (host.addrs, host.error, host.temporary) = (vec![ip], None, false);
        }
        // An authenticated route: PKIX-valid TLS for its name, never clear.
        if let RouteTls::Verify { name } = &route.tls {
            host.contact = Contact::Try(TlsRequirement::PkixFor(name.clone()));
        }
        return Ok(vec![host]);
    }
    let fail = |status, reason| Err(Outcome::Fail { status, reason });
    let defer = |reason| {
        Err(Outcome::Defer {
            cause: DeferCause::Dns,
            reason,
        })
    };
    match facts.mx.hosts(domain) {
        Ok(names) => Ok(names
            .into_iter()
            .map(|(name, source)| planned(facts, &name, facts.port, source))
            .collect()),
        // RFC 7505 §3: 556 5.1.10.
        Err(NoHosts::NullMx) => fail(
            (5, 1, 10),
            format!("{domain} does not accept mail (null MX, RFC 7505)"),
        ),
        Err(NoHosts::NxDomain) => fail(
            (5, 1, 2),
            format!("{domain}: domain does not exist (NXDOMAIN)"),
        ),
        Err(NoHosts::Failed(e)) => defer(format!("MX lookup for {domain} failed: {e}")),
        Err(NoHosts::NotAsked) => defer(format!("MX records of {domain} were not looked up")),
    }
}

/// A host with the addresses looked up for it, not yet judged.
fn planned(facts: &Facts<'_>, name: &str, port: u16, source: HostSource) -> PlannedHost {
    let found = facts.addresses_of(name);
    PlannedHost {
        name: name.to_owned(),
        port,
        source,
        addrs: found.addrs,
        myself: Vec::new(),
        error: found.error,
        temporary: found.temporary,
        policy: PolicyMatch::NoPolicy,
        dane: facts.dane_of(name),
        rule: match source {
            HostSource::Route => Rule::Route,
            _ => Rule::None,
        },
        contact: Contact::Try(TlsRequirement::Opportunistic),
    }
}

/// Step 4: fails when no host has an address.
fn no_address(facts: &Facts<'_>, hosts: &[PlannedHost]) -> Option<Outcome> {
    if hosts.iter().any(|h| !h.addrs.is_empty()) {
        return None;
    }
    let domain = facts.domain;
    let implicit = facts.route.is_none() && hosts.len() == 1 && hosts[0].name == domain.as_str();
    if implicit && hosts.iter().all(|h| !h.temporary) {
        // RFC 5321 §5.1: no MX and no address: nowhere to deliver.
        return Some(Outcome::Fail {
            status: (5, 4, 4),
            reason: format!("{domain} has no MX and no address records"),
        });
    }
    let reasons: Vec<&str> = hosts.iter().filter_map(|h| h.error.as_deref()).collect();
    Some(Outcome::Defer {
        cause: DeferCause::Dns,
        reason: format!(
            "no address for any mail host of {domain}: {}",
            reasons.join("; ")
        ),
    })
}

/// Step 5: removes the addresses that are this server from MX hosts; fails
/// when nothing else is left (RFC 5321 §5.1: never deliver to ourselves).
/// Permanently, 5.4.6 as Postfix words it, unless a host whose addresses
/// are unknown (a temporary DNS failure) may still turn out to be someone
/// else. A configured route is the operator's own choice of hop.
fn drop_myself(facts: &Facts<'_>, hosts: &mut [PlannedHost]) -> Option<Outcome> {
    if facts.route.is_some() {
        return None;
    }
    for host in hosts.iter_mut() {
        let port = host.port;
        let (mine, others) = host
            .addrs
            .iter()
            .partition(|ip| facts.ours.contains(&SocketAddr::new(**ip, port)));
        (host.myself, host.addrs) = (mine, others);
    }
    let looped = hosts.iter().any(|h| !h.myself.is_empty());
    if !looped || hosts.iter().any(|h| !h.addrs.is_empty()) {
        return None;
    }
    let reason = format!("mail for {} loops back to myself", facts.domain);
    if hosts.iter().any(|h| h.temporary) {
        let others: Vec<&str> = hosts
            .iter()
            .filter(|h| h.temporary)
            .filter_map(|h| h.error.as_deref())
            .collect();
        return Some(Outcome::Defer {
            cause: DeferCause::LoopsToSelf,
            reason: format!("{reason}; other MX hosts unresolved: {}", others.join("; ")),
        });
    }
    Some(Outcome::Fail {
        status: (5, 4, 6),
        reason,
    })
}

/// Step 6: each host against the policy's `mx` patterns (RFC 8461 §4.1),
/// and the TLS it must show. Under `enforce` only listed hosts are
/// candidates (§5).
fn apply_policy(facts: &Facts<'_>, sts: StsRule, hosts: &mut [PlannedHost]) {
    let patterns: &[MxPattern] = match (sts, facts.sts.as_ref().and_then(|l| l.policy())) {
        (StsRule::Enforce | StsRule::Testing | StsRule::ReportExempt, Some(p)) => &p.mx,
        _ => return,
    };
    let rule = match facts.sts.as_ref() {
        Some(PolicyLookup::Policy {
            source: PolicySource::Pinned { .. },
            ..
        }) => Rule::Pin,
        _ => Rule::MtaSts,
    };
    for host in hosts.iter_mut() {
        let listed = patterns.iter().find(|p| p.matches(&host.name));
        host.policy = match listed {
            Some(p) => PolicyMatch::Listed(p.to_string()),
            None => PolicyMatch::NotListed,
        };
        host.rule = rule;
        host.contact = match (sts, listed) {
            (StsRule::Enforce, Some(_)) => Contact::Try(TlsRequirement::PkixFor(host.name.clone())),
            (StsRule::Enforce, None) => Contact::Skip(SkipReason::NotInEnforcedPolicy),
            _ => Contact::Try(TlsRequirement::Opportunistic),
        };
    }
}

/// Step 7: DANE governs the MX hosts it has a say on (RFC 7672 §2.2),
/// whatever MTA-STS said of them (RFC 8461 §2); with `dane_only` the
/// hosts it has no say on are skipped.
fn apply_dane(dane_only: bool, waived: bool, hosts: &mut [PlannedHost]) {
    // A route is the operator's own hop: no DANE for it.
    for host in hosts.iter_mut().filter(|h| h.source != HostSource::Route) {
        match &host.dane {
            // The recipient's DANE records are waived for our own TLS
            // reports (RFC 8460 §5.3) and for `TLS-Required: No` from a
            // sender allowed to say it (RFC 8689 §5), as MTA-STS is: the
            // host stays as step 6 left it (opportunistic). `dane_only` is
            // the operator's own rule, not the recipient's, and stays.
            Dane::Usable(_) | Dane::Failed { .. } if waived => {}
            Dane::Usable(records) => {
                // §3.2.2: the MX host name (also the SNI); for an implicit
                // MX it is the recipient domain itself.
                let names = vec![host.name.clone()];
                let authority = DaneAuthority {
                    records: records.clone(),
                    names,
                };
                host.contact = Contact::Try(TlsRequirement::Dane { authority });
                host.rule = Rule::Dane;
            }
            Dane::Failed { .. } => {
                host.contact = Contact::Skip(SkipReason::TlsaLookupFailed);
                host.rule = Rule::Dane;
            }
            Dane::NotChecked | Dane::Insecure | Dane::NoRecords | Dane::Unusable(_)
                if dane_only =>
            {
                host.contact = Contact::Skip(SkipReason::DaneRequired);
                host.rule = Rule::Dane;
            }
            Dane::NotChecked | Dane::Insecure | Dane::NoRecords | Dane::Unusable(_) => {}
        }
    }
}

/// Step 8: defers when no host is left to contact: waiting for TLSA
/// lookups (RFC 7672 §2.2), or no MX host matches an enforced policy.
fn none_left(facts: &Facts<'_>, sts: StsRule, hosts: &[PlannedHost]) -> Option<Outcome> {
    if hosts.iter().any(|h| matches!(h.contact, Contact::Try(_))) {
        return None;
    }
    let tlsa_errors: Vec<&str> = hosts
        .iter()
        .filter_map(|h| match &h.dane {
            Dane::Failed { error, .. } => Some(error.as_str()),
            _ => None,
        })
        .collect();
    if !tlsa_errors.is_empty() {
        return Some(Outcome::Defer {
            cause: DeferCause::DaneLookup,
            reason: format!(
                "DANE: TLSA lookup failed for the MX hosts of {}: {}",
                facts.domain,
                tlsa_errors.join("; ")
            ),
        });
    }
    let dane_required: Vec<String> = hosts
        .iter()
        .filter(|h| h.contact == Contact::Skip(SkipReason::DaneRequired))
        .map(|h| format!("{}: {}", h.name, h.dane.summary()))
        .collect();
    if !dane_required.is_empty() {
        return Some(Outcome::Defer {
            cause: DeferCause::DaneRequired,
            reason: format!(
                "DANE required for {} ([delivery] dane_only) but no MX host has usable TLSA records: {}",
                facts.domain,
                dane_required.join(", ")
            ),
        });
    }
    if sts != StsRule::Enforce {
        return None;
    }
    let patterns = facts.sts.as_ref().and_then(|l| l.policy()).map(|p| &p.mx);
    let listed: Vec<String> = patterns
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    Some(Outcome::Defer {
        cause: DeferCause::PolicyMismatch,
        reason: format!(
            "MTA-STS: no MX host of {} matches the enforced policy (mx: {})",
            facts.domain,
            listed.join(", ")
        ),
    })
}
