//! The TLS families of the `/metrics` page, drawn by the crate that counts
//! them: outbound sessions by result (and downgrade alerts), and the
//! reports sent.

use crate::LogTlsResults;
use portcullis_metrics::MetricsWriter;
use std::collections::BTreeMap;
use std::sync::Mutex;

impl LogTlsResults {
    /// Appends the outbound TLS session families to `w`: the downgrade
    /// alerts and the sessions by policy domain and result.
    pub fn render(&self, w: &mut MetricsWriter) {
        for (d, n) in self.downgrades() {
            w.counter(
                "portcullis_tls_policy_failures_total",
                "Sessions that failed TLS where a policy expects it (a downgrade alert), by policy domain, policy type (sts, tlsa: DANE) and mode (enforce, testing).",
                &[("domain", &d.domain), ("policy", d.policy), ("mode", d.mode)],
                n,
            );
        }
        for (domain, result, n) in self.counts() {
            w.counter(
                "portcullis_tls_sessions_total",
                "Outbound sessions by policy domain and TLS result.",
                &[("domain", &domain), ("result", &result)],
                n,
            );
        }
    }
}

/// Reports sent, by transport and outcome.
#[derive(Debug, Default)]
pub struct ReportMetrics(Mutex<BTreeMap<(String, String), u64>>);

impl ReportMetrics {
    /// Counts one report sent (or not) over `transport` with `outcome`.
    pub fn count(&self, transport: &str, outcome: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((transport.to_string(), outcome.to_string()))
            .or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(String, String, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((t, o), n)| (t.clone(), o.clone(), *n))
            .collect()
    }

    /// Appends `portcullis_tlsrpt_reports_total` to `w`.
    pub fn render(&self, w: &mut MetricsWriter) {
        for (transport, outcome, n) in self.snapshot() {
            w.counter(
                "portcullis_tlsrpt_reports_total",
                "TLS-RPT reports by transport and outcome.",
                &[("transport", &transport), ("outcome", &outcome)],
                n,
            );
        }
    }
}
