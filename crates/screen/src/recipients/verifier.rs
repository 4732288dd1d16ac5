//! [`RecipientVerifier`]: the file of the recipient's domain when it has
//! one, else (with `verify = "route"`) the cached answer of its route, else
//! one probe of the route, shared by every RCPT waiting for the same
//! address and cached for the next ones.

use super::files::RecipientFiles;
use super::list::fold_local;
use super::{Known, ProbeAnswer, RecipientProbe};
use crate::state::{ScreenStore, Stored, Table};
use portcullis_config::{RecipientVerify, Recipients};
use portcullis_metrics::MetricsWriter;
use portcullis_types::{Address, Clock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

/// Cached value of a probe's "exists".
const EXISTS: &[u8] = b"exists";
/// Cached value of a probe's "unknown user".
const UNKNOWN: &[u8] = b"unknown";

/// Where an answer came from (a label of the checks counter).
#[derive(Debug, Clone, Copy)]
enum Source {
    File = 0,
    Cache = 1,
    Probe = 2,
}

const SOURCES: [(Source, &str); 3] = [
    (Source::File, "file"),
    (Source::Cache, "cache"),
    (Source::Probe, "probe"),
];

const OUTCOMES: [&str; 4] = ["exists", "unknown", "unverified", "unreachable"];

fn outcome_index(known: &Known) -> usize {
    match known {
        Known::Exists => 0,
        Known::Unknown => 1,
        Known::Unverified => 2,
        Known::Unreachable(_) => 3,
    }
}

/// One probe in flight, shared by every check of the same address.
type Flight = Arc<OnceCell<ProbeAnswer>>;

/// One check waiting on a flight. The last one to leave, answered or
/// cancelled (its client gone), forgets the flight: a client that hangs
/// up mid-probe leaves nothing behind.
struct Boarded<'a> {
    verifier: &'a RecipientVerifier,
    key: &'a str,
    flight: Flight,
}

impl Drop for Boarded<'_> {
    fn drop(&mut self) {
        let mut flights = self.verifier.flights();
        // Under the lock no check can board: two references (the map's and
        // ours) mean nobody else waits on it.
        let ours = flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight));
        if ours && Arc::strong_count(&self.flight) <= 2 {
            flights.remove(self.key);
        }
    }
}

/// Answers "does this recipient exist?": from its domain's file, else
/// (with `verify = "route"`) from the cache or a probe of its route.
/// Shared across reloads; counts answers by source and outcome.
pub struct RecipientVerifier {
    store: Arc<dyn ScreenStore>,
    probe: Option<Arc<dyn RecipientProbe>>,
    clock: Arc<dyn Clock>,
    /// Probes in flight by cache key: at most one per address at once,
    /// and at most one entry per waiting RCPT (removed when it ends).
    flights: Mutex<HashMap<String, Flight>>,
    /// Checks by source and outcome.
    counts: [[AtomicU64; 4]; 3],
}

impl RecipientVerifier {
    /// A verifier caching probe answers in `store`, probing with `probe`
    /// (absent: `verify = "route"` verifies nothing), expiry on `clock`.
    pub fn new(
        store: Arc<dyn ScreenStore>,
        probe: Option<Arc<dyn RecipientProbe>>,
        clock: Arc<dyn Clock>,
    ) -> RecipientVerifier {
        RecipientVerifier {
            store,
            probe,
            clock,
            flights: Mutex::new(HashMap::new()),
            counts: Default::default(),
        }
    }

    /// Whether `recipient` exists under `settings` and `files`. A domain
    /// with a file is answered from it and never probed; a probe that
    /// cannot answer ([`Known::Unreachable`]) is never cached.
    pub async fn check(
        &self,
        settings: &Recipients,
        files: &RecipientFiles,
        recipient: &Address,
    ) -> Known {
        if let Some(listed) = files.lookup(recipient).await {
            let known = if listed {
                Known::Exists
            } else {
                Known::Unknown
            };
            return self.counted(Source::File, known);
        }
        let probe = match (&self.probe, settings.verify) {
            (Some(probe), RecipientVerify::Route) => probe,
            _ => return Known::Unverified,
        };
        let key = cache_key(recipient);
        if let Some(known) = self.cached(&key).await {
            return self.counted(Source::Cache, known);
        }
        let answer = self.probe_shared(probe, settings, &key, recipient).await;
        debug!(%recipient, answer = ?answer, "recipient probed");
        let known = match answer {
            ProbeAnswer::Exists => Known::Exists,
            ProbeAnswer::Unknown { .. } => Known::Unknown,
            ProbeAnswer::NoRoute => Known::Unverified,
            ProbeAnswer::Unreachable { reason } => Known::Unreachable(reason),
        };
        self.counted(Source::Probe, known)
    }

    /// The cached answer under `key`; a store that cannot be read is
    /// logged and answers nothing (the route is asked instead).
    async fn cached(&self, key: &str) -> Option<Known> {
        let now = self.clock.unix_secs();
        match self.store.get(Table::Recipients, key.as_bytes(), now).await {
            Ok(Some(stored)) if stored.value == EXISTS => Some(Known::Exists),
            Ok(Some(stored)) if stored.value == UNKNOWN => Some(Known::Unknown),
            Ok(_) => None,
            Err(e) => {
                warn!(recipient = key, error = %e, "cached recipient answer unreadable; probing");
                None
            }
        }
    }

    /// One probe of `recipient` for every concurrent check of it: the
    /// first check starts it, later ones wait for its answer (if the first
    /// one is cancelled, a waiting one takes over). The answer is cached
    /// by the check that made the probe.
    async fn probe_shared(
        &self,
        probe: &Arc<dyn RecipientProbe>,
        settings: &Recipients,
        key: &str,
        recipient: &Address,
    ) -> ProbeAnswer {
        let flight = {
            let mut flights = self.flights();
            Arc::clone(flights.entry(key.to_owned()).or_default())
        };
        let guard = Boarded {
            verifier: self,
            key,
            flight,
        };
        guard
            .flight
            .get_or_init(|| async {
                let answer = probe.probe(recipient).await;
                self.remember(settings, key, &answer).await;
                answer
            })
            .await
            .clone()
    }

    /// Caches a definite answer: "exists" for `cache_positive`, "unknown"
    /// for `cache_negative`; anything else is asked again next time.
    async fn remember(&self, settings: &Recipients, key: &str, answer: &ProbeAnswer) {
        let (value, ttl) = match answer {
            ProbeAnswer::Exists => (EXISTS, settings.cache_positive),
            ProbeAnswer::Unknown { .. } => (UNKNOWN, settings.cache_negative),
            ProbeAnswer::NoRoute | ProbeAnswer::Unreachable { .. } => return,
        };
        if ttl.is_zero() {
            return;
        }
        let entry = Stored {
            value: value.to_vec(),
            expires: self.clock.unix_secs().saturating_add(ttl.as_secs()),
        };
        let put = self.store.put(Table::Recipients, key.as_bytes(), entry);
        if let Err(e) = put.await {
            warn!(recipient = key, error = %e, "recipient answer not cached");
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many probes are in flight (distinct addresses).
    #[cfg(test)]
    pub(super) fn in_flight(&self) -> usize {
        self.flights().len()
    }

    fn counted(&self, source: Source, known: Known) -> Known {
        self.counts[source as usize][outcome_index(&known)].fetch_add(1, Relaxed);
        known
    }

    /// `portcullis_recipient_checks_total{source,outcome}`: every answer
    /// by where it came from (`file`, `cache`, `probe`) and what it was
    /// (`exists`, `unknown`, `unverified`: the probe found no route,
    /// `unreachable`).
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        for (source, source_label) in SOURCES {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.counts[source as usize][i].load(Relaxed);
                // Files and the cache only ever say exists or unknown.
                if i > 1 && !matches!(source, Source::Probe) {
                    continue;
                }
                w.counter(
                    "portcullis_recipient_checks_total",
                    "Recipient verification answers, by source (file, cache, probe) and outcome.",
                    &[("source", source_label), ("outcome", outcome)],
                    n,
                );
            }
        }
    }
}

/// The cache key of a recipient: its address with the local part folded
/// as the files compare it (case-insensitively) and the canonical domain.
fn cache_key(recipient: &Address) -> String {
    format!("{}@{}", fold_local(&recipient.local), recipient.domain)
}
