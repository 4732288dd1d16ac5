//! The MTA-STS families of the `/metrics` page, drawn by the engine that
//! counts them.

use crate::PolicyEngine;
use portcullis_dns::Resolver;
use portcullis_metrics::MetricsWriter;

impl<R: Resolver> PolicyEngine<R> {
    /// Appends the MTA-STS families to `w`: fetches by outcome and the
    /// policies cached.
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        for (outcome, n) in self.fetch_counts() {
            w.counter(
                "portcullis_mta_sts_fetches_total",
                "MTA-STS policy fetches by outcome (ok or the TLS-RPT result type).",
                &[("outcome", outcome)],
                n,
            );
        }
        let cached = self.cache().cached_len();
        w.gauge(
            "portcullis_mta_sts_policies_cached",
            "MTA-STS policies in the cache.",
            &[],
            cached,
        );
    }
}
