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

/// The lookups of clients in the lists, with the cache shared by every
/// session (and kept across reloads: the lists to look up are passed per
/// call). Counts lookups by zone and outcome.
pub struct DnsLists {
    _todo: (),
}

impl DnsLists {
    /// Lookups through `dns` (absent: nothing is looked up, every verdict
    /// is empty), cache expiry on `clock`.
    pub fn new(
        dns: Option<std::sync::Arc<dyn crate::ScreenDns>>,
        clock: std::sync::Arc<dyn portcullis_types::Clock>,
    ) -> DnsLists {
        let _ = (dns, clock);
        DnsLists { _todo: () }
    }

    /// `ip`'s verdict on `lists`, every zone looked up at once (answers
    /// cached for their TTL; a failure scores nothing and is logged).
    pub async fn verdict(
        &self,
        lists: &[portcullis_config::Dnsbl],
        ip: std::net::IpAddr,
    ) -> ListsVerdict {
        let _ = (lists, ip);
        ListsVerdict::default()
    }

    /// Forgets the cached answers for `ip`; how many.
    pub fn forget(&self, ip: std::net::IpAddr) -> u64 {
        let _ = ip;
        0
    }

    /// `portcullis_dnsbl_lookups_total{zone,outcome}` and friends.
    pub fn render_metrics(&self, w: &mut portcullis_metrics::MetricsWriter) {
        let _ = w;
    }
}
