//! The database's health as this node last saw it (every `client()` and
//! statement outcome updates it), and the fall-backs the stores report:
//! counted per store and logged at most once a minute per store, so a
//! database outage is visible without flooding the log.

use crate::ClusterError;
use portcullis_metrics::MetricsWriter;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often one store's fall-back is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Up/down, the last error, and the fall-backs per store.
#[derive(Default)]
pub(crate) struct Health {
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    fallbacks: Mutex<BTreeMap<&'static str, Fallbacks>>,
}

#[derive(Default)]
struct Fallbacks {
    count: u64,
    last_warned: Option<Instant>,
}

impl Health {
    /// The database answered.
    pub(crate) fn reached(&self) {
        let was = self.up.swap(true, Ordering::Relaxed);
        if !was {
            tracing::info!("cluster database reachable");
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }

    /// The database could not be reached (or refused us).
    pub(crate) fn unreachable(&self, error: &ClusterError) {
        let was = self.up.swap(false, Ordering::Relaxed);
        let text = error.to_string();
        if let Ok(mut last) = self.last_error.lock() {
            // The first failure and a changed reason are worth a line;
            // the same failure again is not.
            if was || last.as_deref() != Some(text.as_str()) {
                tracing::warn!(error = %text, "cluster database unreachable");
            }
            *last = Some(text);
        }
    }

    /// Whether the last outcome reached the database.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The last error, when the database was not reached.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// One fall-back to local state by `store`.
    pub(crate) fn fell_back(&self, store: &'static str, error: &ClusterError) {
        let Ok(mut all) = self.fallbacks.lock() else {
            return;
        };
        let entry = all.entry(store).or_default();
        entry.count += 1;
        let now = Instant::now();
        if entry
            .last_warned
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            entry.last_warned = Some(now);
            tracing::warn!(
                store,
                error = %error,
                fallbacks = entry.count,
                "cluster database not used: falling back to this node's local state"
            );
        }
    }

    /// `portcullis_cluster_database_up` and
    /// `portcullis_cluster_fallbacks_total{store}`.
    pub(crate) fn render(&self, w: &mut MetricsWriter) {
        w.gauge(
            "portcullis_cluster_database_up",
            "1 when the last use of the cluster database reached it, else 0.",
            &[],
            u8::from(self.is_up()),
        );
        if let Ok(all) = self.fallbacks.lock() {
            for (store, f) in all.iter() {
                w.counter(
                    "portcullis_cluster_fallbacks_total",
                    "Times a shared store fell back to this node's local state because the cluster database was not usable, by store.",
                    &[("store", store)],
                    f.count,
                );
            }
        }
    }
}
