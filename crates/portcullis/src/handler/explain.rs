//! `policy explain`: the mail hosts of a domain as DNS (or a route) gives
//! them now, and what the policy in force demands of each.

use super::policy::{cache_entry, pin_entry, store_err};
use super::refused::{Refused, parse_domain};
use crate::state::PolicyAccess;
use portcullis_admin::{ExplainHost, PolicyEntry, PolicyExplain};
use portcullis_config::Route;
use portcullis_dns::Resolver;
use portcullis_policy::{Mode, MxPattern, NoPolicy, PolicyLookup};
use portcullis_tls::TlsResultType;
use portcullis_types::Domain;
use std::collections::HashMap;

impl PolicyAccess {
    /// The policy, the hosts in the order delivery tries them, and notes on
    /// what applies.
    pub(super) async fn explain(&self, domain: &str) -> Result<PolicyExplain, Refused> {
        let d = parse_domain(domain)?;
        let mut notes: Vec<String> = Vec::new();
        let policy = self.policy_in_force(&d, &mut notes).await?;
        let destinations = self.destinations.get();
        let route = portcullis_delivery::plan::route_for(&destinations.routes, &d);
        let mode = match (&policy, route) {
            (Some(p), None) => p.mode.parse::<Mode>().ok(),
            _ => None,
        };
        if let Some(r) = route {
            notes.push(format!(
                "{d} is routed by [routes] to {}:{}: MTA-STS does not apply to a configured route; opportunistic TLS",
                r.next_hop.host, r.next_hop.port
            ));
        }
        let patterns: Vec<MxPattern> = policy
            .as_ref()
            .map(|p| {
                p.mx.iter()
                    .filter_map(|m| MxPattern::parse(m).ok())
                    .collect()
            })
            .unwrap_or_default();
        let mx_hosts = self.hosts(&d, route, mode, &patterns, &mut notes).await;
        mode_note(&d, mode, &mx_hosts, &mut notes);
        Ok(PolicyExplain {
            domain: d.to_string(),
            policy,
            mx_hosts,
            note: notes.join("\n"),
        })
    }

    /// The policy in force, without fetching when something is cached; a
    /// note says why there is none.
    async fn policy_in_force(
        &self,
        d: &Domain,
        notes: &mut Vec<String>,
    ) -> Result<Option<PolicyEntry>, Refused> {
        let now = self.now();
        if let Some(pin) = self.active_pin(d, now)? {
            return Ok(Some(pin_entry(&pin, now)));
        }
        if let Some(c) = self.engine.get(d).map_err(store_err)?
            && !c.is_expired(now)
        {
            return Ok(Some(cache_entry(&c, now, false)));
        }
        let note = match self.engine.policy_for(d).await {
            PolicyLookup::Policy { policy, .. } => {
                return Ok(Some(cache_entry(&policy, now, false)));
            }
            PolicyLookup::FetchFailed { error, .. } => format!(
                "{d} publishes an MTA-STS record but its policy cannot be fetched ({}: {error}): delivery proceeds as without a policy",
                TlsResultType::from(&error)
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
        };
        notes.push(note);
        Ok(None)
    }

    /// The hosts delivery would try, each with whether the policy allows
    /// it and the TLS it must show.
    async fn hosts(
        &self,
        d: &Domain,
        route: Option<&Route>,
        mode: Option<Mode>,
        patterns: &[MxPattern],
        notes: &mut Vec<String>,
    ) -> Vec<ExplainHost> {
        let allowed = |host: &str| patterns.iter().any(|p| p.matches(host));
        let mut preferences: HashMap<String, u16> = HashMap::new();
        if route.is_none()
            && let Ok(mx) = self.resolver.mx(d.as_str()).await
        {
            for m in mx {
                preferences.entry(m.exchange).or_insert(m.preference);
            }
        }
        let hops = match portcullis_delivery::plan::plan(
            &self.resolver,
            &self.destinations.get().routes,
            self.delivery_port,
            d,
        )
        .await
        {
            Ok(hops) => hops,
            Err(e) => {
                notes.push(format!("no mail host to try now: {e}"));
                return Vec::new();
            }
        };
        hops.into_iter()
            .map(|hop| {
                let (allowed_by_policy, tls_required) = match mode {
                    Some(Mode::Enforce) if allowed(&hop.name) => {
                        (true, format!("PKIX-valid TLS 1.2+ for {}", hop.name))
                    }
                    Some(Mode::Enforce) => (false, "not contacted".to_owned()),
                    Some(Mode::Testing) => (allowed(&hop.name), "opportunistic".to_owned()),
                    _ => (true, "opportunistic".to_owned()),
                };
                ExplainHost {
                    preference: preferences.get(&hop.name).copied(),
                    port: hop.port,
                    addrs: hop.addrs.iter().map(ToString::to_string).collect(),
                    error: hop.error.clone(),
                    allowed_by_policy,
                    tls_required,
                    name: hop.name,
                }
            })
            .collect()
    }
}

/// What the mode means for delivery, as a note.
fn mode_note(d: &Domain, mode: Option<Mode>, hosts: &[ExplainHost], notes: &mut Vec<String>) {
    match mode {
        Some(Mode::Enforce) if !hosts.is_empty() && hosts.iter().all(|h| !h.allowed_by_policy) => {
            notes.push(format!(
                "enforce: no MX host of {d} matches the policy, so deliveries are deferred (never sent elsewhere or in clear)"
            ));
        }
        Some(Mode::Enforce) => notes.push(
            "enforce: only allowed hosts are contacted, each only over PKIX-valid TLS 1.2+ for its name; any other outcome defers the delivery, never a retry in clear".into(),
        ),
        Some(Mode::Testing) => notes.push(
            "testing: delivery is opportunistic; what enforce would refuse (hosts not allowed, TLS failures) is recorded for TLS-RPT".into(),
        ),
        Some(Mode::None) => notes.push(
            "mode none: the domain has withdrawn its policy; opportunistic TLS".into(),
        ),
        None => {}
    }
}
