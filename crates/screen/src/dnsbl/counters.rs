//! Counts of DNS list lookups by zone and outcome, and their metric
//! families.

use portcullis_metrics::MetricsWriter;
use portcullis_types::Domain;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// How one zone's lookup for one client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The list answered inside 127.0.0.0/8.
    Listed,
    /// NXDOMAIN (or no A records).
    NotListed,
    /// Timeout, SERVFAIL, another temporary failure, or a list error code
    /// (127.255.255.0/24).
    Failed,
    /// Only answers outside 127.0.0.0/8: ignored (not listed).
    Ignored,
    /// Answered from the cache, no query sent.
    Cached,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Listed,
        Outcome::NotListed,
        Outcome::Failed,
        Outcome::Ignored,
        Outcome::Cached,
    ];

    /// The `outcome` label.
    fn label(self) -> &'static str {
        match self {
            Outcome::Listed => "listed",
            Outcome::NotListed => "not_listed",
            Outcome::Failed => "failed",
            Outcome::Ignored => "ignored",
            Outcome::Cached => "cached",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters, per configured zone (so as many as the configuration
/// ever named, never more).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    by_zone: Mutex<BTreeMap<Domain, [u64; 5]>>,
}

impl Counters {
    /// Counts one lookup of `zone`.
    pub(crate) fn count(&self, zone: &Domain, outcome: Outcome) {
        let mut by_zone = self.by_zone.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = by_zone.get_mut(zone) {
            counts[outcome.index()] += 1;
        } else {
            let mut counts = [0; 5];
            counts[outcome.index()] = 1;
            by_zone.insert(zone.clone(), counts);
        }
    }

    /// `portcullis_dnsbl_lookups_total{zone,outcome}` for every zone seen
    /// (every outcome, zeros included, so rates can be computed from the
    /// first scrape) and the cache's size.
    pub(crate) fn render(&self, cached_entries: usize, w: &mut MetricsWriter) {
        let by_zone = self.by_zone.lock().unwrap_or_else(PoisonError::into_inner);
        for (zone, counts) in by_zone.iter() {
            for outcome in Outcome::ALL {
                w.counter(
                    "portcullis_dnsbl_lookups_total",
                    "DNS list lookups of clients by zone and outcome (listed, not_listed, \
                     failed: timeout/SERVFAIL/list error, ignored: answer outside 127.0.0.0/8, \
                     cached: answered from the cache)",
                    &[("zone", zone.as_str()), ("outcome", outcome.label())],
                    counts[outcome.index()],
                );
            }
        }
        w.gauge(
            "portcullis_dnsbl_cache_entries",
            "DNS list answers cached (per client and zone)",
            &[],
            cached_entries,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_outcome_of_every_zone_seen() {
        let c = Counters::default();
        let bl = Domain::parse("bl.test").unwrap();
        c.count(&bl, Outcome::Listed);
        c.count(&bl, Outcome::Listed);
        c.count(&bl, Outcome::Cached);
        let mut w = MetricsWriter::new();
        c.render(7, &mut w);
        let page = w.finish();
        assert!(
            page.contains(r#"portcullis_dnsbl_lookups_total{zone="bl.test",outcome="listed"} 2"#),
            "{page}"
        );
        assert!(page.contains(r#"{zone="bl.test",outcome="cached"} 1"#));
        assert!(page.contains(r#"{zone="bl.test",outcome="failed"} 0"#));
        assert!(page.contains("portcullis_dnsbl_cache_entries 7"));
    }
}
