//! The queue's part of the metrics page: its size and age now, and the
//! scheduler's counters.

use crate::{Queue, QueueMetrics};
use portcullis_metrics::MetricsWriter;
use std::sync::atomic::Ordering::Relaxed;

impl Queue {
    /// Appends the queue families to `w`: messages queued, the age of the
    /// oldest one at `now_secs` (Unix seconds; 0 when the queue is empty),
    /// and the attempts and DSNs that `counters` has seen.
    pub fn render_metrics(&self, counters: &QueueMetrics, now_secs: u64, w: &mut MetricsWriter) {
        w.gauge(
            "portcullis_queue_messages",
            "Messages in the queue.",
            &[],
            self.len(),
        );
        let oldest = self
            .oldest_millis()
            .map(|ms| (now_secs * 1000).saturating_sub(ms) / 1000)
            .unwrap_or(0);
        w.gauge(
            "portcullis_queue_oldest_message_age_seconds",
            "Age of the oldest queued message.",
            &[],
            oldest,
        );
        // Plain counters, without labels.
        for (name, help, value) in [
            (
                "portcullis_delivery_attempts_total",
                "Message delivery attempts started.",
                &counters.attempts,
            ),
            (
                "portcullis_dsns_total",
                "Delivery status notifications queued.",
                &counters.dsns,
            ),
        ] {
            w.counter(name, help, &[], value.load(Relaxed));
        }
    }
}
