//! Gathering the facts of a decision: the route, the MX records and the
//! addresses of each mail host (RFC 5321 §5.1), as DNS distinguishes them.
//! A temporary DNS failure is never mistaken for "no such record": that
//! would bounce mail a DNS hiccup could save. Only what the decision needs
//! is looked up: nothing for a domain it settles before DNS.

use super::decide::consults_dns;
use super::facts::{Dane, Facts, HostAddresses, HostSource, MxAnswer, route_for};
use crate::destinations::LiveDestinations;
use crate::loops::SelfAddresses;
use portcullis_dns::{DnsError, DnsSecurity, Resolver, Tlsa};
use portcullis_types::Domain;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// Where mail goes: the resolver, `[routes]`, our own domains and
/// listeners, and the port MX hosts are contacted on. Shared by delivery
/// and `policy explain`, so both see the same facts.
#[derive(Debug, Clone)]
pub struct Planner<R> {
    /// Every name lookup goes through it (`[dns]`).
    pub resolver: R,
    /// `[routes]` (next hops that win over MX) and `[relay]
    /// accepted_domains` (mail for these needs a route) in force: a reload
    /// sets new ones on this handle, and each domain's delivery reads them
    /// once.
    pub destinations: LiveDestinations,
    /// `[delivery] port`: the port MX hosts are contacted on.
    pub port: u16,
    /// Our own listeners: an MX address among them is never contacted.
    pub myself: SelfAddresses,
}

impl<R: Resolver> Planner<R> {
    /// The facts known without any lookup: the route, whether the domain is
    /// ours, and whether the recipient's TLS policy is waived for the
    /// message (our own TLS report, or an allowed `TLS-Required: No`).
    pub fn facts<'a>(&'a self, domain: &'a Domain, policy_waived: bool) -> Facts<'a> {
        let destinations = self.destinations.get();
        Facts {
            domain,
            own_domain: destinations.accepted.contains(domain),
            route: route_for(&destinations.routes, domain).cloned(),
            dane_only: destinations.dane_only.contains(domain),
            port: self.port,
            sts: None,
            dane: BTreeMap::new(),
            policy_waived,
            mx: MxAnswer::NotAsked,
            addresses: BTreeMap::new(),
            ours: BTreeSet::new(),
        }
    }

    /// Looks up what the decision needs from DNS: the route's host, or the
    /// MX records and every mail host's addresses (noting those that are
    /// this server). Nothing when the decision is made without DNS.
    pub async fn look_up_dns(&self, facts: &mut Facts<'_>) {
        if !consults_dns(facts) {
            return;
        }
        if let Some(route) = facts.route.as_ref() {
            let host = &route.next_hop.host;
            if host.parse::<IpAddr>().is_err() {
                let found = resolve(&self.resolver, host).await;
                facts.addresses.insert(host.clone(), found);
            }
            return;
        }
        let (answer, mx_security) = match self.resolver.mx_secured(facts.domain.as_str()).await {
            Ok(found) => (Ok(found.value), Some(found.security)),
            Err(e) => (Err(e), None),
        };
        let mut answer = MxAnswer::from(answer);
        if let MxAnswer::Records(mx) = &mut answer {
            // RFC 5321 §5.1: spread the load over equal preferences; the
            // decision sorts by preference and keeps this order for ties.
            mx.shuffle(&mut rand::rng());
        }
        for (name, source) in answer.hosts(facts.domain).unwrap_or_default() {
            if facts.addresses.contains_key(&name) {
                continue;
            }
            // RFC 7672 §2.2.1: DANE needs a secure MX RRset. For an
            // implicit MX the MX denial is not itself marked secure, but
            // it came from the zone whose addresses must then validate.
            let chain_secure = match source {
                HostSource::ImplicitMx => true,
                _ => mx_security == Some(DnsSecurity::Secure),
            };
            let (dane, found) = if chain_secure {
                dane_of_host(&self.resolver, &name, self.port).await
            } else {
                (Dane::Insecure, resolve(&self.resolver, &name).await)
            };
            facts.dane.insert(name.clone(), dane);
            for ip in &found.addrs {
                let target = SocketAddr::new(*ip, self.port);
                if self.myself.is_self(target) {
                    facts.ours.insert(target);
                }
            }
            facts.addresses.insert(name, found);
        }
        facts.mx = answer;
    }
}

/// The addresses of `name`, IPv6 then IPv4; an error only when there are
/// none, temporary when a lookup failed for now.
async fn resolve<R: Resolver>(resolver: &R, name: &str) -> HostAddresses {
    let v6 = resolver.ipv6(name).await;
    let v4 = resolver.ipv4(name).await;
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut errors = Vec::new();
    let mut temporary = false;
    match v6 {
        Ok(list) => addrs.extend(list.into_iter().map(IpAddr::V6)),
        Err(e) => {
            temporary |= e.is_temporary();
            errors.push(e.to_string());
        }
    }
    match v4 {
        Ok(list) => addrs.extend(list.into_iter().map(IpAddr::V4)),
        Err(e) => {
            temporary |= e.is_temporary();
            errors.push(e.to_string());
        }
    }
    let error = addrs
        .is_empty()
        .then(|| format!("{name}: {}", errors.join(", ")));
    let temporary = temporary && error.is_some();
    HostAddresses {
        addrs,
        error,
        temporary,
    }
}

/// DANE for a host whose MX RRset is secure (RFC 7672 §2.2), and the
/// host's addresses: one secured address lookup gives both, so the
/// addresses connected to are the ones whose security decided DANE (a
/// second, plain lookup could answer where the secured one failed and let
/// the host go without DANE). Secure addresses: its TLSA RRset at
/// `_<port>._tcp.<host>` decides, and a failed or bogus TLSA lookup is
/// never read as "no records" (that would let an attacker strip DANE).
/// A failed address lookup fails the host by its own error.
async fn dane_of_host<R: Resolver>(resolver: &R, name: &str, port: u16) -> (Dane, HostAddresses) {
    let found = match resolver.addresses_secured(name).await {
        Ok(found) => found,
        Err(e) => {
            let failed = HostAddresses {
                addrs: Vec::new(),
                error: Some(format!("{name}: {e}")),
                temporary: e.is_temporary(),
            };
            return (Dane::Insecure, failed);
        }
    };
    let mut addrs = found.value;
    // IPv6 first, as `resolve` orders them.
    addrs.sort_by_key(IpAddr::is_ipv4);
    let addresses = HostAddresses {
        addrs,
        error: None,
        temporary: false,
    };
    if found.security != DnsSecurity::Secure {
        return (Dane::Insecure, addresses);
    }
    let dane = tlsa_of(resolver.tlsa(&format!("_{port}._tcp.{name}")).await);
    (dane, addresses)
}

/// What a TLSA answer means for DANE.
fn tlsa_of(answer: Result<portcullis_dns::Secured<Vec<Tlsa>>, DnsError>) -> Dane {
    match answer {
        Ok(found) if found.security != DnsSecurity::Secure => Dane::NoRecords,
        Ok(found) if found.value.iter().any(Tlsa::usable) => Dane::Usable(found.value),
        Ok(found) => Dane::Unusable(found.value),
        Err(e) if e.is_not_found() => Dane::NoRecords,
        Err(e) => Dane::Failed {
            bogus: matches!(e, DnsError::Bogus { .. }),
            error: e.to_string(),
        },
    }
}
