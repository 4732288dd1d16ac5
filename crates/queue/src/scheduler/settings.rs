//! What the scheduler works with: its settings, its counters, and the
//! context its steps share.

use crate::Queue;
use portcullis_types::Clock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// How the scheduler retries and gives up.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Our host name (Reporting-MTA and MAILER-DAEMON of DSNs).
    pub hostname: String,
    /// Waits between attempts; the last repeats.
    pub retry: Vec<Duration>,
    /// After this long a message bounces.
    pub max_age: Duration,
    /// One delay DSN after this long.
    pub delay_warning: Duration,
    /// Messages in delivery at once.
    pub max_concurrent: usize,
}

/// Counters of the scheduler, rendered into the metrics page by
/// [`Queue::render_metrics`](crate::Queue::render_metrics).
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// Recipients delivered.
    pub delivered: AtomicU64,
    /// Recipient attempts deferred.
    pub deferred: AtomicU64,
    /// Recipients failed permanently (including expiry).
    pub failed: AtomicU64,
    /// DSNs queued (failure, delay).
    pub dsns: AtomicU64,
    /// Delivery attempts started.
    pub attempts: AtomicU64,
}

/// The parts every step of an attempt (and a deletion) works with.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The queue the message is in.
    pub queue: &'a Queue,
    /// Retry, expiry and DSN settings.
    pub settings: &'a SchedulerSettings,
    /// Wall-clock time.
    pub clock: &'a dyn Clock,
    /// Where outcomes are counted.
    pub metrics: &'a QueueMetrics,
}
