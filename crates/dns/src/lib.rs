//! Name lookups for Portcullis: the [`Resolver`] trait every lookup of the
//! server goes through (MX, A, AAAA, TXT, PTR), its production
//! implementation on hickory-resolver ([`HickoryResolver`], built from the
//! `[dns]` section) and an in-memory implementation for unit tests
//! elsewhere ([`MemoryResolver`]).
//!
//! Specifications: RFC 1035 (the record types, NXDOMAIN versus an empty
//! NOERROR answer, `<character-string>`s in TXT), RFC 5321 §5.1 (MX lookup,
//! the implicit MX when a domain has address records but no MX — decided by
//! the caller, which is why "no MX records" must be reported as such) and
//! RFC 7505 (the null MX, `0 .`, which we report as an [`Mx`] with an empty
//! `exchange`). RFC 2308 §5 for the negative TTL [`Resolver::ipv4_ttl`]
//! reports.
//!
//! Threat model: an on-path attacker (or a flaky upstream) can make a lookup
//! fail, but must never be able to make a *failure* look like an
//! *answer*. A temporary failure (timeout, SERVFAIL, REFUSED, I/O error,
//! malformed response) reported as "no record" would let an attacker turn an
//! MX lookup into an implicit-MX delivery to the wrong host or make an
//! MTA-STS or TLS-RPT record vanish, i.e. downgrade the transport security.
//! So [`DnsError`] keeps [`DnsError::NxDomain`], [`DnsError::NoRecords`] and
//! [`DnsError::Temporary`] apart, anything that is not positively "does not
//! exist" or "exists without that type" is classified as temporary, and an
//! `Ok` result always holds at least one record.

#![forbid(unsafe_code)]

mod ad_query;
mod dnssec;
mod hickory;
mod memory;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

pub use dnssec::{DnssecHealth, DnssecMode, DnssecSettings, check_trust_anchors};
pub use hickory::HickoryResolver;
pub use memory::{MEMORY_TTL, MemoryResolver};
pub use portcullis_types::{DnsSecurity, Tlsa};

/// Typed DNS errors that keep the spec's distinctions (STYLE 12).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (RCODE NXDOMAIN, RFC 1035 §4.1.1).
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain {
        /// The name that was looked up.
        name: String,
    },
    /// The name exists but has no records of the asked type (NOERROR with an
    /// empty answer, sometimes called NODATA).
    #[error("{name}: no {rtype} records")]
    NoRecords {
        /// The name that was looked up.
        name: String,
        /// The record type that was asked for (`"MX"`, `"A"`, …).
        rtype: &'static str,
    },
    /// The lookup failed for now: timeout, SERVFAIL, REFUSED, an I/O error or
    /// anything else that does not say whether the record exists. Must be
    /// retried later, never treated as "no record".
    #[error("{name}: temporary DNS failure: {reason}")]
    Temporary {
        /// The name that was looked up.
        name: String,
        /// What went wrong, for logs and DSNs.
        reason: String,
    },
    /// The name is not a valid domain name and was never sent.
    #[error("{name:?}: invalid domain name")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// DNSSEC validation failed (RFC 4035 §5.5: bogus): the answer cannot
    /// be trusted, so it is a temporary failure, never "no record".
    #[error("{name}: DNSSEC validation failed (bogus): {reason}")]
    Bogus {
        /// The name that was looked up.
        name: String,
        /// Why, for logs and TLS-RPT.
        reason: String,
    },
}

impl DnsError {
    /// True for failures that may go away when retried (the message stays
    /// queued; policies stay cached).
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. } | DnsError::Bogus { .. })
    }

    /// True when DNS positively said there is nothing: NXDOMAIN or no records
    /// of the asked type.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DnsError::NxDomain { .. } | DnsError::NoRecords { .. })
    }

    /// The name the failed lookup was for.
    pub fn name(&self) -> &str {
        match self {
            DnsError::NxDomain { name }
            | DnsError::NoRecords { name, .. }
            | DnsError::Temporary { name, .. }
            | DnsError::InvalidName { name }
            | DnsError::Bogus { name, .. } => name,
        }
    }
}

/// The failure of a lookup that reports how long its answer may be cached
/// ([`Resolver::ipv4_ttl`]): the typed error, and for a negative answer
/// (NXDOMAIN, no records) how long the zone said "nothing there" may be
/// cached (RFC 2308 §5: the SOA's minimum, bounded by the SOA record's own
/// TTL), when the answer carried an SOA. A temporary failure never has one:
/// it must not be cached as an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{error}")]
pub struct TtlError {
    /// What went wrong, with the same distinctions as every other lookup.
    pub error: DnsError,
    /// How long the negative answer may be cached; `None` when DNS did not
    /// say (no SOA) or the error is not a negative answer.
    pub negative_ttl: Option<Duration>,
}

impl From<DnsError> for TtlError {
    /// A failure without a negative TTL.
    fn from(error: DnsError) -> TtlError {
        TtlError {
            error,
            negative_ttl: None,
        }
    }
}

/// One MX record (RFC 1035 §3.3.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mx {
    /// Lower values are preferred (RFC 5321 §5.1).
    pub preference: u16,
    /// The mail exchanger, lowercase ASCII (A-labels), without the trailing
    /// dot; `""` for the null MX `.` (RFC 7505).
    pub exchange: String,
}

impl Mx {
    /// True for the null MX (RFC 7505 §3: exchange `.`): the domain accepts
    /// no mail.
    pub fn is_null(&self) -> bool {
        self.exchange.is_empty()
    }
}

/// An answer with its DNSSEC status (RFC 4035 §4.3): `Secure` only when
/// validation is on (`[dns] dnssec`) and the answer validated; a bogus
/// answer is [`DnsError::Bogus`], never a `Secured`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secured<T> {
    /// The records.
    pub value: T,
    /// Secure or insecure.
    pub security: DnsSecurity,
}

impl<T> Secured<T> {
    /// `value`, insecure (what a resolver without DNSSEC answers).
    pub fn insecure(value: T) -> Secured<T> {
        Secured {
            value,
            security: DnsSecurity::Insecure,
        }
    }
}

/// The resolver every name lookup of the server goes through.
///
/// Every method returns `Ok` only with at least one record; "nothing there"
/// is [`DnsError::NxDomain`] or [`DnsError::NoRecords`], and anything else
/// that went wrong is [`DnsError::Temporary`]. Names are absolute (no search
/// domains); a trailing dot is optional and case does not matter.
///
/// The methods return `impl Future + Send`, so the trait is used through
/// generics (`R: Resolver`), not `dyn Resolver`; share one with `Arc<R>`,
/// which implements the trait too.
pub trait Resolver: Send + Sync + 'static {
    /// MX records of `name`, sorted by preference (stable: equal preferences
    /// keep the order received; RFC 5321 §5.1 randomisation among them is
    /// the caller's job). A null MX is reported as such, not as an error.
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<Mx>, DnsError>> + Send;
    /// IPv4 addresses (A records) of `name`, CNAMEs followed.
    fn ipv4(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv4Addr>, DnsError>> + Send;
    /// IPv4 addresses of `name` as [`Resolver::ipv4`] gives them, with how
    /// long they may be cached: the smallest TTL of the answer's records
    /// (the CNAMEs followed included; what is left of it when the answer
    /// came from a cache). A negative answer carries its negative TTL when
    /// DNS gave one ([`TtlError`]). For answers a caller keeps itself, such
    /// as DNS list (RFC 5782) results.
    fn ipv4_ttl(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(Vec<Ipv4Addr>, Duration), TtlError>> + Send;
    /// IPv6 addresses (AAAA records) of `name`, CNAMEs followed.
    fn ipv6(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv6Addr>, DnsError>> + Send;
    /// TXT records of `name`: one string per record, its
    /// `<character-string>`s concatenated (as SPF, DKIM, MTA-STS and TLS-RPT
    /// require).
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, DnsError>> + Send;
    /// PTR names of `ip` (looked up under `in-addr.arpa` / `ip6.arpa`),
    /// lowercase, without the trailing dot.
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Result<Vec<String>, DnsError>> + Send;

    /// MX records of `name` with their DNSSEC status (DANE needs a secure
    /// MX RRset, RFC 7672 §2.2.1). Default: [`Resolver::mx`], insecure.
    fn mx_secured(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<Mx>>, DnsError>> + Send {
        let lookup = self.mx(name);
        async move { lookup.await.map(Secured::insecure) }
    }

    /// The addresses (A and AAAA) of `name` with their DNSSEC status:
    /// secure only when every RRset that answered is secure (RFC 7672
    /// §2.2.2: TLSA is looked up only for a host whose addresses are
    /// secure). Default: [`Resolver::ipv4`] and [`Resolver::ipv6`],
    /// insecure.
    fn addresses_secured(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<IpAddr>>, DnsError>> + Send {
        let v4 = self.ipv4(name);
        let v6 = self.ipv6(name);
        async move {
            let (v4, v6) = (v4.await, v6.await);
            let mut addrs: Vec<IpAddr> = Vec::new();
            let mut first_error = None;
            for found in [
                v4.map(|a| a.into_iter().map(IpAddr::V4).collect::<Vec<_>>()),
                v6.map(|a| a.into_iter().map(IpAddr::V6).collect()),
            ] {
                match found {
                    Ok(a) => addrs.extend(a),
                    Err(e) => {
                        if first_error.is_none() || e.is_temporary() {
                            first_error = Some(e);
                        }
                    }
                }
            }
            match first_error {
                Some(e) if e.is_temporary() || addrs.is_empty() => Err(e),
                _ => Ok(Secured::insecure(addrs)),
            }
        }
    }

    /// TLSA records of `name` (`_25._tcp.<host>`, RFC 7672 §2.2.2) with
    /// their DNSSEC status; only secure records may be used for DANE.
    /// Default: no records.
    fn tlsa(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<Tlsa>>, DnsError>> + Send {
        let name = name.to_owned();
        async move {
            Err(DnsError::NoRecords {
                name,
                rtype: "TLSA",
            })
        }
    }
}

impl<R: Resolver> Resolver for Arc<R> {
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<Mx>, DnsError>> + Send {
        (**self).mx(name)
    }
    fn ipv4(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv4Addr>, DnsError>> + Send {
        (**self).ipv4(name)
    }
    fn ipv4_ttl(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<(Vec<Ipv4Addr>, Duration), TtlError>> + Send {
        (**self).ipv4_ttl(name)
    }
    fn ipv6(&self, name: &str) -> impl Future<Output = Result<Vec<Ipv6Addr>, DnsError>> + Send {
        (**self).ipv6(name)
    }
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, DnsError>> + Send {
        (**self).txt(name)
    }
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Result<Vec<String>, DnsError>> + Send {
        (**self).ptr(ip)
    }
    fn mx_secured(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<Mx>>, DnsError>> + Send {
        (**self).mx_secured(name)
    }
    fn addresses_secured(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<IpAddr>>, DnsError>> + Send {
        (**self).addresses_secured(name)
    }
    fn tlsa(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Secured<Vec<Tlsa>>, DnsError>> + Send {
        (**self).tlsa(name)
    }
}

/// Parses `name` as an absolute domain name (U-labels are converted to
/// A-labels; `_` labels are allowed for `_mta-sts` and friends).
fn parse_name(name: &str) -> Result<hickory_resolver::proto::rr::Name, DnsError> {
    let invalid = || DnsError::InvalidName {
        name: name.to_owned(),
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.contains("..") {
        return Err(invalid());
    }
    let mut parsed =
        hickory_resolver::proto::rr::Name::from_utf8(trimmed).map_err(|_| invalid())?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

/// The canonical text form of a name: lowercase ASCII, no trailing dot, `""`
/// for the root.
fn name_to_string(name: &hickory_resolver::proto::rr::Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// Canonical key for a name given as text: parsed like a lookup would, so
/// `Example.COM.`, `example.com` and U-label forms compare equal.
fn canonical(name: &str) -> Result<String, DnsError> {
    if name == "." || name.is_empty() {
        // The root, e.g. the exchange of a null MX.
        return Ok(String::new());
    }
    parse_name(name).map(|n| name_to_string(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_helpers() {
        let nx = DnsError::NxDomain { name: "a".into() };
        let none = DnsError::NoRecords {
            name: "a".into(),
            rtype: "MX",
        };
        let temp = DnsError::Temporary {
            name: "a".into(),
            reason: "timeout".into(),
        };
        let invalid = DnsError::InvalidName {
            name: "a..b".into(),
        };
        assert!(nx.is_not_found() && !nx.is_temporary());
        assert!(none.is_not_found() && !none.is_temporary());
        assert!(temp.is_temporary() && !temp.is_not_found());
        assert!(!invalid.is_temporary() && !invalid.is_not_found());
        assert_eq!(temp.name(), "a");
    }

    #[test]
    fn names_are_canonicalised() {
        assert_eq!(canonical("Example.COM.").unwrap(), "example.com");
        assert_eq!(canonical("example.com").unwrap(), "example.com");
        assert_eq!(
            canonical("_mta-sts.example.com").unwrap(),
            "_mta-sts.example.com"
        );
        assert_eq!(
            canonical("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(canonical(".").unwrap(), "");
        assert!(matches!(
            canonical("a..b"),
            Err(DnsError::InvalidName { .. })
        ));
        assert!(matches!(
            canonical(&"a".repeat(64)),
            Err(DnsError::InvalidName { .. })
        ));
    }

    #[test]
    fn null_mx() {
        let mx = Mx {
            preference: 0,
            exchange: String::new(),
        };
        assert!(mx.is_null());
    }
}
