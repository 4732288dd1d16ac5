//! DNSSEC settings of the [`crate::HickoryResolver`] (`[dns] dnssec`,
//! `[dns] trust_anchors`) and how the security of an answer is judged.

use std::path::PathBuf;
use std::sync::Arc;

use hickory_resolver::lookup::Lookup;
use hickory_resolver::proto::dnssec::{DnssecSummary, TrustAnchors};
use hickory_resolver::proto::rr::RecordType;

use std::net::IpAddr;

use crate::{DnsError, DnsSecurity, Secured};

/// How answers are made secure (`[dns] dnssec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnssecMode {
    /// No validation: every answer is insecure (no DANE).
    Off,
    /// Validate every answer from the trust anchors (RFC 4035 §5): secure,
    /// insecure, or bogus (a temporary failure).
    #[default]
    Validate,
    /// Believe the AD bit of the configured resolvers (only safe when they
    /// are on loopback, which `config check` insists on).
    TrustAd,
}

/// The DNSSEC settings a [`crate::HickoryResolver`] is built with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnssecSettings {
    /// The mode.
    pub mode: DnssecMode,
    /// Files of DNSKEY records (presentation format) trusted in addition
    /// to the root's keys, with `Validate`.
    pub trust_anchors: Vec<PathBuf>,
}

impl DnssecSettings {
    /// No DNSSEC: every answer insecure.
    pub fn off() -> DnssecSettings {
        DnssecSettings {
            mode: DnssecMode::Off,
            trust_anchors: Vec::new(),
        }
    }
}

/// What the start-up self-check of `[dns] dnssec = "validate"` found
/// ([`crate::HickoryResolver::dnssec_self_check`]): whether answers that
/// come through the configured nameservers can be validated at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnssecHealth {
    /// Not `validate`: nothing to check.
    NotValidating,
    /// The root zone's DNSKEY RRset validated: DNSSEC records come through.
    Secure,
    /// The root zone's keys came back without proof either way: a resolver
    /// on the way answers but strips what validation needs.
    Insecure,
    /// The root zone's keys failed validation: every lookup through these
    /// nameservers will too (SPF, DMARC, MX, TLSA alike), and mail waits.
    Bogus(String),
    /// The check could not be made (no answer, SERVFAIL): says nothing.
    Unknown(String),
}

/// Reads and parses the trust anchor files of `[dns] trust_anchors` as the
/// resolver will (for `config check`): the error names the file.
pub fn check_trust_anchors(paths: &[PathBuf]) -> Result<(), String> {
    trust_anchors(paths).map(|_| ())
}

/// The root's keys hickory ships with, plus the DNSKEYs of every file of
/// `paths`. Fails when a file cannot be read or parsed (a configuration
/// error: the server must not run with fewer anchors than it was told).
pub(crate) fn trust_anchors(paths: &[PathBuf]) -> Result<Arc<TrustAnchors>, String> {
    let mut text = String::new();
    for path in paths {
        let file = std::fs::read_to_string(path)
            .map_err(|e| format!("trust anchor {}: {e}", path.display()))?;
        text.push_str(&file);
        text.push('\n');
    }
    let mut anchors: TrustAnchors = text
        .parse()
        .map_err(|e| format!("trust anchors {paths:?}: {e}"))?;
    let root = TrustAnchors::default();
    for key in (0..root.len()).filter_map(|i| root.get(i)) {
        anchors.insert(key);
    }
    Ok(Arc::new(anchors))
}

/// The security of `lookup`'s answer under `mode`: with `Validate`, secure
/// only when every record of the answer (RRSIGs aside) was proven secure; a
/// bogus one makes the lookup fail ([`DnsError::Bogus`]), never a
/// "no records". With `TrustAd`, secure when the resolver set AD.
pub(crate) fn judge(
    mode: DnssecMode,
    name: &str,
    lookup: &Lookup,
) -> Result<DnsSecurity, DnsError> {
    match mode {
        DnssecMode::Off => Ok(DnsSecurity::Insecure),
        DnssecMode::TrustAd if lookup.message().metadata.authentic_data => Ok(DnsSecurity::Secure),
        DnssecMode::TrustAd => Ok(DnsSecurity::Insecure),
        DnssecMode::Validate => {
            let records = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG);
            match DnssecSummary::from_records(records) {
                DnssecSummary::Secure => Ok(DnsSecurity::Secure),
                DnssecSummary::Insecure => Ok(DnsSecurity::Insecure),
                DnssecSummary::Bogus => Err(DnsError::Bogus {
                    name: name.to_owned(),
                    reason: "an answer record failed validation".to_owned(),
                }),
            }
        }
    }
}

/// The weaker of two statuses: an answer made of several RRsets is secure
/// only when all of them are.
pub(crate) fn weaker(a: DnsSecurity, b: DnsSecurity) -> DnsSecurity {
    if a == DnsSecurity::Secure && b == DnsSecurity::Secure {
        DnsSecurity::Secure
    } else {
        DnsSecurity::Insecure
    }
}

/// The addresses of a host from its A and AAAA answers: a temporary
/// failure (bogus included) of either fails the whole (a half answer could
/// hide the secure or the insecure half); otherwise what was found, secure
/// only when every RRset that answered is secure (RFC 7672 §2.2.2).
pub(crate) fn merge_addresses(
    v4: Result<Secured<Vec<IpAddr>>, DnsError>,
    v6: Result<Secured<Vec<IpAddr>>, DnsError>,
) -> Result<Secured<Vec<IpAddr>>, DnsError> {
    let mut value = Vec::new();
    let mut security = None;
    let mut not_found = None;
    for found in [v4, v6] {
        match found {
            Ok(found) => {
                value.extend(found.value);
                security = Some(security.map_or(found.security, |s| weaker(s, found.security)));
            }
            Err(e) if e.is_temporary() => return Err(e),
            Err(e) => not_found = not_found.or(Some(e)),
        }
    }
    match (security, not_found) {
        (Some(security), _) => Ok(Secured { value, security }),
        (None, Some(e)) => Err(e),
        (None, None) => Err(DnsError::Temporary {
            name: String::new(),
            reason: "no address lookup ran".to_owned(),
        }),
    }
}
