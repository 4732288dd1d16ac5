//! `[dns]`: how the server resolves names (every lookup goes through it),
//! and whether it trusts DNSSEC (`dnssec`, `trust_anchors`).

use crate::check::Checker;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `[dns]`: how the server resolves names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// `nameservers`: `ip:port` list; empty means the system configuration.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// `timeout`: per query, default `"5s"`.
    pub timeout: Option<String>,
    /// `dnssec`: `"off"`, `"validate"` (default) or `"trust-ad"`.
    pub dnssec: Option<String>,
    /// `trust_anchors`: files of DNSKEY records trusted besides the root's.
    #[serde(default)]
    pub trust_anchors: Vec<String>,
}

/// How DNS answers are made secure (`[dns] dnssec`); only secure answers
/// enable DANE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dnssec {
    /// No validation: every answer is insecure.
    Off,
    /// The server validates every answer from the root's keys and
    /// `trust_anchors` (RFC 4035 §5).
    #[default]
    Validate,
    /// The AD bit of the nameservers is believed; refused unless every
    /// nameserver is on loopback (the bit crosses no network then).
    TrustAd,
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dns {
    /// Explicit nameservers; empty: the system configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// DNSSEC mode.
    pub dnssec: Dnssec,
    /// Extra trust anchor files (DNSKEY records, presentation format).
    pub trust_anchors: Vec<PathBuf>,
}

impl Default for Dns {
    /// The system's resolvers, 5 seconds a query, validating.
    fn default() -> Dns {
        Dns {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            dnssec: Dnssec::default(),
            trust_anchors: Vec::new(),
        }
    }
}

/// `[dns]`: a nameserver is `ip:port`, or a bare IP meaning port 53.
pub(crate) fn build(f: &DnsFile, c: &mut Checker) -> Dns {
    let nameservers: Vec<SocketAddr> = f
        .nameservers
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
                .ok()
                .or_else(|| c.socket_addr(&format!("dns.nameservers[{i}]"), n))
        })
        .collect();
    let dnssec = dnssec(f, &nameservers, c);
    Dns {
        timeout: c.duration("dns.timeout", &f.timeout, Dns::default().timeout),
        nameservers,
        dnssec,
        trust_anchors: f.trust_anchors.iter().map(PathBuf::from).collect(),
    }
}

/// `dns.dnssec`; `trust-ad` only with nameservers that are all on
/// loopback: an AD bit from across a network could be forged by anyone on
/// the path, and the system configuration cannot be checked.
fn dnssec(f: &DnsFile, nameservers: &[SocketAddr], c: &mut Checker) -> Dnssec {
    let mode = match f.dnssec.as_deref() {
        None | Some("validate") => Dnssec::Validate,
        Some("off") => Dnssec::Off,
        Some("trust-ad") => Dnssec::TrustAd,
        Some(other) => {
            c.fail(
                "dns.dnssec",
                format!("{other:?} is not \"off\", \"validate\" or \"trust-ad\""),
            );
            Dnssec::Validate
        }
    };
    let all_loopback = !nameservers.is_empty() && nameservers.iter().all(|n| n.ip().is_loopback());
    if mode == Dnssec::TrustAd && !all_loopback {
        c.fail(
            "dns.dnssec",
            "\"trust-ad\" needs every dns.nameservers entry on loopback",
        );
    }
    mode
}
