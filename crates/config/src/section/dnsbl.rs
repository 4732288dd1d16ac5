//! `[[dnsbl]]`: DNS block and allow lists (RFC 5782) the client's address
//! is looked up in, each with a weight.

use crate::check::Checker;
use portcullis_types::Domain;
use serde::Deserialize;

/// One `[[dnsbl]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblFile {
    /// `zone`: the list's DNS zone (e.g. `"zen.spamhaus.org"`).
    pub zone: Option<String>,
    /// `weight`: what a listing adds to the client's score (default 1);
    /// negative for an allow list (DNSWL): a listed client is never
    /// greylisted and its score goes down.
    pub weight: Option<i32>,
}

/// A DNS list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dnsbl {
    /// The zone queried (`<reversed address>.<zone>`).
    pub zone: Domain,
    /// Added to the score when the client is listed; negative: an allow
    /// list.
    pub weight: i32,
}

impl Dnsbl {
    /// True for an allow list (negative weight).
    pub fn is_allowlist(&self) -> bool {
        self.weight < 0
    }
}

/// `[[dnsbl]]`: every zone a domain name, named once, with a non-zero
/// weight.
pub(crate) fn build(f: &[DnsblFile], c: &mut Checker) -> Vec<Dnsbl> {
    let mut lists: Vec<Dnsbl> = Vec::new();
    for (i, entry) in f.iter().enumerate() {
        let Some(zone) = &entry.zone else {
            c.fail(
                format!("dnsbl[{i}].zone"),
                "missing: name the list's DNS zone",
            );
            continue;
        };
        let zone = match Domain::parse(zone) {
            Ok(z) => z,
            Err(e) => {
                c.fail(format!("dnsbl[{i}].zone"), e.to_string());
                continue;
            }
        };
        let weight = entry.weight.unwrap_or(1);
        if weight == 0 {
            c.fail(
                format!("dnsbl[{i}].weight"),
                "must not be zero (positive: a block list; negative: an allow list)",
            );
            continue;
        }
        if lists.iter().any(|l| l.zone == zone) {
            c.fail(
                format!("dnsbl[{i}].zone"),
                format!("{zone} is listed twice"),
            );
            continue;
        }
        lists.push(Dnsbl { zone, weight });
    }
    lists
}
