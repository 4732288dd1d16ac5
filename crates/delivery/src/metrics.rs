//! Delivery counters: outcomes, and attempts by MX host, rendered here
//! into the server's metrics page.

use portcullis_metrics::MetricsWriter;
use portcullis_queue::RecipientOutcome;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The delivery counters; [`DeliveryMetrics::render`] draws them.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    delivered: AtomicU64,
    deferred: AtomicU64,
    failed: AtomicU64,
    by_mx: Mutex<BTreeMap<(String, &'static str), u64>>,
    by_mode: Mutex<BTreeMap<&'static str, u64>>,
    policy_deferrals: Mutex<BTreeMap<&'static str, u64>>,
}

impl DeliveryMetrics {
    /// Counts one recipient outcome.
    pub fn outcome(&self, o: &RecipientOutcome) {
        let c = match o {
            RecipientOutcome::Delivered { .. } => &self.delivered,
            RecipientOutcome::Deferred { .. } => &self.deferred,
            RecipientOutcome::Failed { .. } => &self.failed,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Counts one attempt at an MX host (bounded: at most 1,000 hosts are
    /// tracked, the rest count under "other").
    pub fn attempt(&self, mx: &str, result: &'static str) {
        let mut m = self.by_mx.lock().unwrap_or_else(|p| p.into_inner());
        let host = if m.len() < 1000 || m.contains_key(&(mx.to_string(), result)) {
            mx.to_string()
        } else {
            "other".to_string()
        };
        *m.entry((host, result)).or_insert(0) += 1;
    }

    /// Counts one delivery (per domain) by the MTA-STS mode that applied.
    pub fn policy_mode(&self, mode: &'static str) {
        *self
            .by_mode
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(mode)
            .or_insert(0) += 1;
    }

    /// Counts one host skipped or deferral caused by a policy, by reason.
    pub fn policy_deferral(&self, reason: &'static str) {
        *self
            .policy_deferrals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// Deliveries by policy mode.
    fn modes(&self) -> Vec<(&'static str, u64)> {
        self.by_mode
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Policy-caused deferrals by reason.
    fn deferrals(&self) -> Vec<(&'static str, u64)> {
        self.policy_deferrals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// (delivered, deferred, failed) recipient counts.
    fn outcomes(&self) -> (u64, u64, u64) {
        (
            self.delivered.load(Relaxed),
            self.deferred.load(Relaxed),
            self.failed.load(Relaxed),
        )
    }

    /// Attempts by (MX host, result).
    fn attempts(&self) -> Vec<(String, &'static str, u64)> {
        let m = self.by_mx.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|((h, r), n)| (h.clone(), *r, *n)).collect()
    }

    /// Appends the delivery families to `w`: recipient outcomes, attempts
    /// by MX host, deliveries by MTA-STS mode, policy deferrals.
    pub fn render(&self, w: &mut MetricsWriter) {
        let (delivered, deferred, failed) = self.outcomes();
        for (outcome, n) in [
            ("delivered", delivered),
            ("deferred", deferred),
            ("failed", failed),
        ] {
            w.counter(
                "portcullis_deliveries_total",
                "Recipient delivery outcomes.",
                &[("outcome", outcome)],
                n,
            );
        }
        for (mx, result, n) in self.attempts() {
            w.counter(
                "portcullis_delivery_attempts_by_mx_total",
                "Attempts at MX hosts by host and result (loops_to_self: not contacted, it is this server).",
                &[("mx", &mx), ("result", result)],
                n,
            );
        }
        for (mode, n) in self.modes() {
            w.counter(
                "portcullis_deliveries_by_policy_mode_total",
                "Deliveries to a domain, by the MTA-STS mode that applied.",
                &[("mode", mode)],
                n,
            );
        }
        for (reason, n) in self.deferrals() {
            w.counter(
                "portcullis_policy_deferrals_total",
                "Hosts or deliveries refused because of an MTA-STS policy, by reason.",
                &[("reason", reason)],
                n,
            );
        }
    }
}
