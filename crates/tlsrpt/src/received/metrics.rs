//! The received-report families of the `/metrics` page: failed sessions
//! other providers reported about our domains (restored from the store at
//! start, so a restart does not reset an alert's counter), and the
//! reports taken (counted from the start of the process).

use portcullis_metrics::MetricsWriter;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// (policy domain, result type, reporter label).
pub(super) type FailureLabels = (String, String, String);

/// The counters behind the two families.
#[derive(Debug, Default)]
pub(super) struct ReceivedMetrics {
    failures: Mutex<BTreeMap<FailureLabels, u64>>,
    reports: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ReceivedMetrics {
    /// Sets a failure counter to its stored value (at start).
    pub(super) fn restore(&self, labels: FailureLabels, n: u64) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(labels, n);
    }

    /// Adds `n` failed sessions under `labels`.
    pub(super) fn add_failures(&self, labels: FailureLabels, n: u64) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let v = m.entry(labels).or_insert(0);
        *v = v.saturating_add(n);
    }

    /// Counts one report that came by `channel` with `outcome` (`stored`,
    /// `duplicate`, `invalid`, `error`).
    pub(super) fn report(&self, channel: &'static str, outcome: &'static str) {
        let mut m = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((channel, outcome)).or_insert(0) += 1;
    }

    /// The failure counter of `labels` (0 when never counted).
    pub(super) fn failures(&self, labels: &FailureLabels) -> u64 {
        let m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.get(labels).copied().unwrap_or(0)
    }

    /// Appends both families to `w`.
    pub(super) fn render(&self, w: &mut MetricsWriter) {
        let failures: Vec<(FailureLabels, u64)> = {
            let m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        for ((domain, result_type, reporter), n) in failures {
            w.counter(
                "portcullis_tlsrpt_received_failures_total",
                "Failed TLS sessions to our domains, as other providers reported them (RFC 8460), by policy domain, result type and reporting organisation (the first 50 organisations by name, the rest as \"other\").",
                &[
                    ("domain", &domain),
                    ("result_type", &result_type),
                    ("reporter", &reporter),
                ],
                n,
            );
        }
        let reports: Vec<((&str, &str), u64)> = {
            let m = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (*k, *v)).collect()
        };
        for ((channel, outcome), n) in reports {
            w.counter(
                "portcullis_tlsrpt_received_reports_total",
                "TLS reports received about our domains since the start, by channel (https, mail) and outcome (stored, duplicate, invalid, error).",
                &[("channel", channel), ("outcome", outcome)],
                n,
            );
        }
    }
}
