//! DNS block and allow lists (RFC 5782): the query name (`4.3.2.1.zone`,
//! IPv6 in nibbles), the lookups of one client in every zone at once, the
//! score, and a cache that keeps each answer for its TTL.
//!
//! SKELETON: being filled in.

use portcullis_types::Domain;
use std::net::Ipv4Addr;

/// A client's standing on the configured lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListsVerdict {
    /// The sum of the weights of the lists it is on.
    pub score: i32,
    /// The lists it is on.
    pub hits: Vec<ListHit>,
    /// Lists whose lookup failed (timeout, SERVFAIL): they score nothing.
    pub failed: Vec<Domain>,
}

/// One list a client is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListHit {
    /// The zone.
    pub zone: Domain,
    /// Its weight (negative: an allow list).
    pub weight: i32,
    /// The A records the list answered (`127.0.0.2`, ...).
    pub answers: Vec<Ipv4Addr>,
}

impl ListsVerdict {
    /// True when the client is on an allow list (never greylisted).
    pub fn allowlisted(&self) -> bool {
        self.hits.iter().any(|h| h.weight < 0)
    }

    /// The block list to name in the refusal when the score reaches
    /// `threshold` (the listed zone with the largest weight).
    pub fn blocked_by(&self, threshold: i32) -> Option<&Domain> {
        if self.score < threshold {
            return None;
        }
        self.hits
            .iter()
            .filter(|h| h.weight > 0)
            .max_by_key(|h| h.weight)
            .map(|h| &h.zone)
    }
}
