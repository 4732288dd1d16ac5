//! The inputs of the outbound decision: everything [`decide`] looks at,
//! gathered beforehand (by [`Planner`] for delivery and for `policy
//! explain`), so the decision itself is pure and can be tested as a table.
//!
//! [`decide`]: super::decide::decide
//! [`Planner`]: super::gather::Planner

use portcullis_config::Route;
use portcullis_dns::{DnsError, Mx};
use portcullis_policy::PolicyLookup;
use portcullis_types::{Domain, Tlsa};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// What the decision knows about one recipient domain.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The recipient domain.
    pub domain: &'a Domain,
    /// True when the domain is one of our `accepted_domains`: its MX points
    /// back at us, so only a route can carry its mail.
    pub own_domain: bool,
    /// The configured route for the domain, if any (it wins over MX).
    pub route: Option<Route>,
    /// The port MX hosts are contacted on (`[delivery] port`).
    pub port: u16,
    /// The MTA-STS lookup; `None` when it was not consulted (a route, or
    /// delivery without MTA-STS), which applies no policy.
    pub sts: Option<PolicyLookup>,
    /// DANE (RFC 7672) by mail host name; a host not in it was not checked
    /// (a route, or a domain settled before DNS).
    pub dane: BTreeMap<String, Dane>,
    /// True when the domain is in `[delivery] dane_only`: an MX host
    /// without usable DANE is never contacted.
    pub dane_only: bool,
    /// True when the recipient's TLS policy is waived for the message: our
    /// own TLS reports (the envelope's recorded origin, RFC 8460 §5.3) and
    /// `TLS-Required: No` from a sender allowed to say it (RFC 8689 §5).
    /// An `enforce` policy and usable DANE records are then opportunistic.
    pub policy_waived: bool,
    /// The MX answer for the domain ([`MxAnswer::NotAsked`] for a route).
    pub mx: MxAnswer,
    /// The addresses of every host name the decision may need (the route's
    /// host, or the MX hosts), by name.
    pub addresses: BTreeMap<String, HostAddresses>,
    /// Targets (address, port) that are this server's own listeners.
    pub ours: BTreeSet<SocketAddr>,
}

impl Facts<'_> {
    /// The addresses looked up for `name`, or an entry saying it was not.
    pub fn addresses_of(&self, name: &str) -> HostAddresses {
        self.addresses
            .get(name)
            .cloned()
            .unwrap_or_else(|| HostAddresses {
                addrs: Vec::new(),
                error: Some(format!("{name}: addresses not looked up")),
                temporary: true,
            })
    }
}

impl Facts<'_> {
    /// What DANE says for the host `name` ([`Dane::NotChecked`] when it
    /// was not looked up).
    pub fn dane_of(&self, name: &str) -> Dane {
        self.dane.get(name).cloned().unwrap_or_default()
    }
}

/// DANE (RFC 7672) for one mail host, as the gatherer found it: only a
/// DNSSEC-secure chain (MX RRset, the host's addresses, its TLSA RRset)
/// gives DANE a say (§2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dane {
    /// Not looked up (a route: the operator's own hop).
    #[default]
    NotChecked,
    /// The MX RRset or the host's addresses are not DNSSEC-secure (or
    /// their lookup failed: the addresses' own error decides): no DANE.
    Insecure,
    /// Secure up to the host, and no TLSA records (or an insecure TLSA
    /// answer): no DANE.
    NoRecords,
    /// A secure TLSA RRset with at least one usable record: DANE governs
    /// the host (§2.2). All the records, unusable ones included.
    Usable(Vec<Tlsa>),
    /// A secure TLSA RRset without a usable record: as without DANE
    /// (§2.2: opportunistic, or what MTA-STS says).
    Unusable(Vec<Tlsa>),
    /// The TLSA lookup failed for now or was bogus: the host is not
    /// contacted, neither in clear nor under MTA-STS (§2.2); the error.
    Failed {
        /// What went wrong, for the queue and the logs.
        error: String,
        /// True when DNSSEC validation failed (TLS-RPT `dnssec-invalid`).
        bogus: bool,
    },
}

impl Dane {
    /// The DNSSEC status as `policy explain` prints it.
    pub fn dnssec(&self) -> &'static str {
        match self {
            Dane::NotChecked => "not checked",
            Dane::Insecure => "insecure",
            Dane::Failed { bogus: true, .. } => "bogus",
            Dane::Failed { .. } => "TLSA lookup failed",
            Dane::NoRecords | Dane::Usable(_) | Dane::Unusable(_) => "secure",
        }
    }

    /// What DANE found, in a few words (for deferral reasons and logs).
    pub fn summary(&self) -> &'static str {
        match self {
            Dane::NotChecked => "DANE not checked",
            Dane::Insecure => "MX or addresses not DNSSEC-secure",
            Dane::NoRecords => "no TLSA records",
            Dane::Usable(_) => "usable TLSA records",
            Dane::Unusable(_) => "no usable TLSA record",
            Dane::Failed { bogus: true, .. } => "bogus TLSA answer",
            Dane::Failed { .. } => "TLSA lookup failed",
        }
    }

    /// The TLSA records found (empty without a secure RRset).
    pub fn records(&self) -> &[Tlsa] {
        match self {
            Dane::Usable(r) | Dane::Unusable(r) => r,
            _ => &[],
        }
    }
}

/// The MX answer for the recipient domain, kept as DNS distinguishes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MxAnswer {
    /// Not looked up: a route applies, or the decision needs no DNS.
    #[default]
    NotAsked,
    /// The records (a null MX included). Equal preferences are tried in
    /// this order: the gatherer shuffles them (RFC 5321 §5.1: spread the
    /// load), the decision keeps their order.
    Records(Vec<Mx>),
    /// The domain exists and has no MX records: it is its own mail host
    /// (implicit MX, RFC 5321 §5.1).
    NoRecords,
    /// The domain does not exist (NXDOMAIN).
    NxDomain,
    /// The lookup failed for now (SERVFAIL, timeout, ...): the error.
    Failed(String),
}

impl From<Result<Vec<Mx>, DnsError>> for MxAnswer {
    fn from(answer: Result<Vec<Mx>, DnsError>) -> MxAnswer {
        match answer {
            Ok(records) => MxAnswer::Records(records),
            Err(DnsError::NoRecords { .. }) => MxAnswer::NoRecords,
            Err(DnsError::NxDomain { .. }) => MxAnswer::NxDomain,
            Err(e) => MxAnswer::Failed(e.to_string()),
        }
    }
}

/// Why an MX answer names no host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoHosts {
    /// A null MX (RFC 7505): the domain accepts no mail.
    NullMx,
    /// NXDOMAIN.
    NxDomain,
    /// A temporary failure, with its error.
    Failed(String),
    /// The MX records were not looked up.
    NotAsked,
}

/// Where a host in the plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSource {
    /// The configured route's next hop.
    Route,
    /// An MX record, with its preference.
    Mx {
        /// Lower is tried first.
        preference: u16,
    },
    /// No MX records: the domain itself (implicit MX).
    ImplicitMx,
}

impl MxAnswer {
    /// The mail hosts this answer names, by preference (ties keep their
    /// order), or why there are none.
    pub fn hosts(&self, domain: &Domain) -> Result<Vec<(String, HostSource)>, NoHosts> {
        match self {
            // RFC 7505 §3: a null MX means no mail.
            MxAnswer::Records(mx) if mx.iter().any(|m| m.is_null() || m.exchange == ".") => {
                Err(NoHosts::NullMx)
            }
            MxAnswer::Records(mx) => {
                let mut sorted = mx.clone();
                sorted.sort_by_key(|m| m.preference);
                Ok(sorted
                    .into_iter()
                    .map(|m| {
                        let source = HostSource::Mx {
                            preference: m.preference,
                        };
                        (m.exchange, source)
                    })
                    .collect())
            }
            MxAnswer::NoRecords => Ok(vec![(domain.as_str().to_owned(), HostSource::ImplicitMx)]),
            MxAnswer::NxDomain => Err(NoHosts::NxDomain),
            MxAnswer::Failed(e) => Err(NoHosts::Failed(e.clone())),
            MxAnswer::NotAsked => Err(NoHosts::NotAsked),
        }
    }
}

/// The addresses of one host name, IPv6 first, then IPv4.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAddresses {
    /// The addresses; empty when resolution failed.
    pub addrs: Vec<IpAddr>,
    /// Why `addrs` is empty, if it is.
    pub error: Option<String>,
    /// True when a temporary DNS failure left `addrs` empty.
    pub temporary: bool,
}

/// The route for `domain`: exact entries win over `.parent` entries.
pub fn route_for<'a>(routes: &'a [Route], domain: &Domain) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| &r.domain == domain || (r.include_subdomains && domain.is_within(&r.domain)))
        .max_by_key(|r| (&r.domain == domain, r.domain.as_str().len()))
}
