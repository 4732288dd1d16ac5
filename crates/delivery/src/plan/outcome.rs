//! The output of the outbound decision: a [`DeliveryPlan`] names every host
//! considered, in the order delivery tries them, each with the TLS it must
//! show and why it is there; and what happens for the domain as a whole
//! (try the hosts, defer, or fail).

use super::facts::{Dane, HostSource};
use portcullis_tls::DaneAuthority;
use std::net::IpAddr;

/// What delivery does for one recipient domain, decided before any
/// connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlan {
    /// How MTA-STS applies.
    pub sts: StsRule,
    /// Every host considered, in the order they are tried; hosts the
    /// policy excludes are kept (with [`Contact::Skip`]) so that an
    /// operator sees why.
    pub hosts: Vec<PlannedHost>,
    /// Try the hosts, or defer or fail without connecting.
    pub outcome: Outcome,
}

impl DeliveryPlan {
    /// The hosts to connect to, in order, with the TLS each must show.
    pub fn candidates(&self) -> impl Iterator<Item = (&PlannedHost, &TlsRequirement)> {
        self.hosts.iter().filter_map(|h| match &h.contact {
            Contact::Try(tls) => Some((h, tls)),
            Contact::Skip(_) => None,
        })
    }
}

/// How MTA-STS (RFC 8461) applies to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsRule {
    /// Not consulted: a configured route (the operator's own hop), a
    /// domain of ours, or delivery without MTA-STS.
    NotApplied,
    /// No policy in force (none published, the fetch failed with nothing
    /// cached, or mode `none`): opportunistic TLS.
    NoPolicy,
    /// Mode `testing`: opportunistic, failures reported.
    Testing,
    /// Mode `enforce`: listed MX hosts only, PKIX-valid TLS 1.2+ only.
    Enforce,
    /// Mode `enforce` waived for our own TLS report (RFC 8460 §5.3) or an
    /// allowed `TLS-Required: No` message (RFC 8689 §5): as `testing`.
    ReportExempt,
    /// The policy store cannot be read: whether a policy is in force is
    /// unknown, so delivery defers.
    Unavailable,
}

impl StsRule {
    /// The mode as counted in metrics (`none`, `testing`, `enforce`).
    pub fn label(self) -> &'static str {
        match self {
            StsRule::NotApplied | StsRule::NoPolicy => "none",
            StsRule::Testing | StsRule::ReportExempt => "testing",
            StsRule::Enforce => "enforce",
            StsRule::Unavailable => "unavailable",
        }
    }
}

/// One host of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedHost {
    /// The MX (or route) host name, or an IP literal for an IP route.
    pub name: String,
    /// TCP port.
    pub port: u16,
    /// Why the host is in the plan.
    pub source: HostSource,
    /// Addresses to try, IPv6 then IPv4, without this server's own.
    pub addrs: Vec<IpAddr>,
    /// Addresses left out because they are this server (never contacted).
    pub myself: Vec<IpAddr>,
    /// Why the host has no address, if it has none from DNS.
    pub error: Option<String>,
    /// True when a temporary DNS failure left it without addresses.
    pub temporary: bool,
    /// How the host stands against the MTA-STS policy.
    pub policy: PolicyMatch,
    /// What DANE found for the host (its DNSSEC status and TLSA records).
    pub dane: Dane,
    /// The rule that governs the host's TLS.
    pub rule: Rule,
    /// Whether it is contacted, and how.
    pub contact: Contact,
}

/// The rule that governs a host's TLS (`policy explain` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A configured route: the operator's own hop, opportunistic TLS or,
    /// with `tls = "verify"`, PKIX-valid TLS for its `tls_name`.
    Route,
    /// DANE (RFC 7672): usable TLSA records, or a failed TLSA lookup that
    /// keeps the host from being contacted, or `[delivery] dane_only`
    /// keeping out a host without usable DANE.
    Dane,
    /// A published MTA-STS policy (`testing` or `enforce`).
    MtaSts,
    /// An operator's pinned MTA-STS policy.
    Pin,
    /// Nothing: opportunistic TLS.
    None,
}

impl Rule {
    /// The rule as `policy explain` names it.
    pub fn label(self) -> &'static str {
        match self {
            Rule::Route => "route",
            Rule::Dane => "DANE",
            Rule::MtaSts => "MTA-STS",
            Rule::Pin => "pin",
            Rule::None => "none",
        }
    }
}

/// A host against the `mx` patterns of the policy in force (RFC 8461 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyMatch {
    /// No `testing` or `enforce` policy applies.
    NoPolicy,
    /// Matched by this pattern (as written, e.g. `*.example.test`).
    Listed(String),
    /// Matched by no pattern.
    NotListed,
}

/// Whether a host is contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// Contact it, demanding this TLS.
    Try(TlsRequirement),
    /// Never contact it.
    Skip(SkipReason),
}

/// Why a host is not contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// An `enforce` policy does not list it (RFC 8461 §5).
    NotInEnforcedPolicy,
    /// Its TLSA lookup failed for now or was bogus (RFC 7672 §2.2): it
    /// waits, never contacted in clear or under MTA-STS instead.
    TlsaLookupFailed,
    /// The domain is in `[delivery] dane_only` and the host has no usable
    /// DANE (insecure, no TLSA records, none usable): TLS-RPT
    /// `dane-required`.
    DaneRequired,
}

/// The TLS a host must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRequirement {
    /// STARTTLS when offered, any certificate; a failed handshake is retried
    /// in clear.
    Opportunistic,
    /// PKIX-valid TLS 1.2+ for this name, or no delivery to the host; never
    /// a retry in clear (MTA-STS `enforce`, or a route with `tls =
    /// "verify"`: the name is then its `tls_name`, also the SNI).
    PkixFor(String),
    /// STARTTLS mandatory, the server authenticated by its TLSA records
    /// (RFC 7672 §3), never a retry in clear; SNI is the MX host name.
    Dane {
        /// The records and the names a DANE-TA chain must carry.
        authority: DaneAuthority,
    },
}

impl TlsRequirement {
    /// True when a TLS failure must not fall back to clear text.
    pub fn is_required(&self) -> bool {
        matches!(
            self,
            TlsRequirement::PkixFor(_) | TlsRequirement::Dane { .. }
        )
    }
}

impl std::fmt::Display for TlsRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsRequirement::Opportunistic => f.write_str("opportunistic"),
            TlsRequirement::PkixFor(name) => write!(f, "PKIX-valid TLS 1.2+ for {name}"),
            TlsRequirement::Dane { authority } => {
                let usable = authority.records.iter().filter(|r| r.usable()).count();
                write!(
                    f,
                    "DANE: TLS 1.2+ authenticated by {usable} usable TLSA record(s) for {}",
                    authority.names.join(", ")
                )
            }
        }
    }
}

/// What happens to the recipients of the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connect to [`DeliveryPlan::candidates`] in order.
    Try,
    /// Try again later, without connecting now.
    Defer {
        /// Why, in terms of the decision.
        cause: DeferCause,
        /// Why, for the queue, the logs and the DSN.
        reason: String,
    },
    /// The domain cannot receive this mail: bounce.
    Fail {
        /// RFC 3463 status.
        status: (u8, u16, u16),
        /// For the DSN.
        reason: String,
    },
}

/// The kinds of deferral the decision makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferCause {
    /// One of our own domains has no route: its MX would loop back to us.
    OwnDomainWithoutRoute,
    /// The MTA-STS policy store cannot be read (RFC 8461 §10.2: unknown is
    /// not "none").
    PolicyUnavailable,
    /// DNS failed for now (MX lookup, or no host has an address).
    Dns,
    /// Every address is this server, and some host is still unresolved.
    LoopsToSelf,
    /// No MX host matches the enforced policy.
    PolicyMismatch,
    /// Every host left is waiting for its TLSA lookup (RFC 7672 §2.2).
    DaneLookup,
    /// `[delivery] dane_only` and no MX host has usable DANE.
    DaneRequired,
}
