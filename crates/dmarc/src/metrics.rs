//! The DMARC report families of the `/metrics` page: messages counted or
//! left out (and why), and reports sent (and what happened to them).

use portcullis_metrics::MetricsWriter;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The counters of recording and sending. Share it with `Arc`.
#[derive(Debug, Default)]
pub struct DmarcMetrics {
    recorded: Mutex<BTreeMap<&'static str, u64>>,
    reports: Mutex<BTreeMap<String, u64>>,
}

impl DmarcMetrics {
    /// Counts one message: `counted`, or why it was not (`domain_cap`,
    /// `row_cap`, `report`, `store_error`).
    pub fn recorded(&self, outcome: &'static str) {
        let mut m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(outcome).or_insert(0) += 1;
    }

    /// Counts one report destination with its outcome (`sent`,
    /// `not_authorized`, `too_large`, `failed`, ...).
    pub fn report(&self, outcome: &str) {
        let mut m = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(outcome.to_owned()).or_insert(0) += 1;
    }

    /// Appends `portcullis_dmarc_messages_total` and
    /// `portcullis_dmarc_reports_total` to `w`.
    pub fn render(&self, w: &mut MetricsWriter) {
        let recorded: Vec<_> = {
            let m = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (*k, *v)).collect()
        };
        for (outcome, n) in recorded {
            w.counter(
                "portcullis_dmarc_messages_total",
                "Verified messages of domains that ask for DMARC aggregate reports, by outcome (counted, or why not).",
                &[("outcome", outcome)],
                n,
            );
        }
        let reports: Vec<_> = {
            let m = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        for (outcome, n) in reports {
            w.counter(
                "portcullis_dmarc_reports_total",
                "DMARC aggregate report destinations by outcome.",
                &[("outcome", &outcome)],
                n,
            );
        }
    }
}
