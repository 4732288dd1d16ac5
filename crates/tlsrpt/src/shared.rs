//! TLS-RPT across the nodes of a cluster: the narrow interface
//! ([`SharedReports`]) a shared store implements (the cluster's PostgreSQL
//! database, in `portcullis-cluster`), the sum of every node's counts
//! ([`merge`]), and the push of this node's counts ([`CountSync`]).
//!
//! Counting stays local: every session is counted in the node's sled
//! store, never in the database (the delivery path never waits on it).
//! [`CountSync`] writes the node's whole totals to the shared store every
//! `[cluster] sync_interval` and before a report is built; a total
//! replaces the node's earlier one, so a repeated push counts nothing
//! twice, and what was counted while the database was down is still in
//! sled and goes with the next successful push (that is the buffer).
//!
//! The send state of a report lives in the shared store's claim of it
//! (one node holds a report under a lease); see
//! [`ReportSender`](crate::ReportSender) for the sending rules.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{DayAggregate, TlsRptError, TlsRptRecorder};

/// A boxed future, so that [`SharedReports`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The shared store could not answer (unreachable, timed out, a statement
/// failed): the caller sends nothing and keeps its counts locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SharedError(pub String);

/// One of this node's totals as pushed: (day, policy domain, policy hash)
/// and the [`DayAggregate`] JSON as the recorder stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// The policy's hash ([`AggregatePolicy::hash_hex`](crate::AggregatePolicy::hash_hex)).
    pub key: String,
    /// The node's whole total, JSON.
    pub value: Vec<u8>,
}

/// A report this node holds now, as [`SharedReports::claim`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedClaim {
    /// The send state written last (a JSON [`SentRecord`](crate::SentRecord)),
    /// by this node or by the node it took the report over from.
    pub record: Option<Vec<u8>>,
    /// The node that held it before (a takeover after its lease lapsed).
    pub taken_from: Option<String>,
}

/// Where the counts of every node and the send state of every report live
/// in cluster mode. Implemented over PostgreSQL by `portcullis-cluster`;
/// every method is bounded by the store's own timeout, and an
/// implementation counts its failures (the node's fall-back metric).
pub trait SharedReports: Send + Sync + 'static {
    /// Writes this node's totals, each replacing the node's earlier total
    /// of the same (day, domain, key).
    fn push<'a>(&'a self, rows: &'a [SharedCount]) -> BoxFuture<'a, Result<(), SharedError>>;

    /// Every (day, policy domain) some node has counts for.
    fn days(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SharedError>>;

    /// Every node's totals of (`day`, `domain`) (values as pushed).
    fn counts<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SharedError>>;

    /// Takes the report (`day`, `domain`) for this node for `lease`: when
    /// nobody holds it, this node does, or the holder's lease lapsed.
    /// `None`: another node holds it, or it is done.
    fn claim<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<SharedClaim>, SharedError>>;

    /// Extends this node's lease; false when it no longer holds the report.
    fn renew<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedError>>;

    /// Writes the send state while this node holds the report (`done`:
    /// finished, never claimed again); false when it does not hold it.
    fn save<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        record: &'a [u8],
        done: bool,
    ) -> BoxFuture<'a, Result<bool, SharedError>>;

    /// Lets the report go now (another node may claim it at once).
    fn release<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(), SharedError>>;

    /// The send state of the report as it stands, whoever holds it.
    fn state<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedError>>;

    /// Deletes counts and claims of days before `day`.
    fn prune_before<'a>(&'a self, day: &'a str) -> BoxFuture<'a, Result<(), SharedError>>;
}

/// The sum of every node's totals of one (day, domain): one aggregate per
/// policy, successes added, failure rows added row by row (capped as a
/// node's own are). A value that does not decode is skipped with a
/// warning: one node's bad row must not stop the report.
pub fn merge(values: &[Vec<u8>]) -> Vec<DayAggregate> {
    let mut by_policy: BTreeMap<String, DayAggregate> = BTreeMap::new();
    for v in values {
        let agg: DayAggregate = match serde_json::from_slice(v) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "TLS-RPT: a node's shared count does not decode; skipped");
                continue;
            }
        };
        let sum = by_policy
            .entry(agg.policy.hash_hex())
            .or_insert_with(|| DayAggregate {
                successful: 0,
                failures: BTreeMap::new(),
                ..agg.clone()
            });
        sum.successful = sum.successful.saturating_add(agg.successful);
        for (key, n) in agg.failures {
            sum.add_failure(key, n);
        }
    }
    by_policy.into_values().collect()
}

/// Pushes this node's counts to the shared store. Remembers what the
/// store has (a hash per total) so that a push sends only totals changed
/// since the last successful one; after a failure nothing is remembered,
/// so the next push sends them all.
pub struct CountSync {
    recorder: TlsRptRecorder,
    shared: Arc<dyn SharedReports>,
    pushed: Mutex<HashMap<Vec<u8>, u64>>,
}

impl std::fmt::Debug for CountSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountSync").finish_non_exhaustive()
    }
}

fn hash_of(v: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl CountSync {
    /// Pushes `recorder`'s counts to `shared`.
    pub fn new(recorder: TlsRptRecorder, shared: Arc<dyn SharedReports>) -> CountSync {
        CountSync {
            recorder,
            shared,
            pushed: Mutex::new(HashMap::new()),
        }
    }

    /// The shared store counts are pushed to.
    pub fn shared(&self) -> &Arc<dyn SharedReports> {
        &self.shared
    }

    /// The recorder counts are read from.
    pub fn recorder(&self) -> &TlsRptRecorder {
        &self.recorder
    }

    /// Pushes every total that changed since the last successful push
    /// (days within [`DEFAULT_RETENTION_DAYS`](crate::DEFAULT_RETENTION_DAYS));
    /// how many were pushed. An error of the local store or of the shared
    /// one: nothing is marked pushed.
    pub async fn push(&self) -> Result<usize, TlsRptError> {
        let mut rows = Vec::new();
        let mut hashes = Vec::new();
        {
            let pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            // Days the senders prune are not pushed back into the table.
            let today = crate::Day::of(self.recorder.clock().now());
            let oldest = crate::Day::from_days_since_epoch(
                today.days_since_epoch() - crate::DEFAULT_RETENTION_DAYS,
            );
            for (key, day, domain, policy, value) in self.recorder.entries()? {
                if day < oldest {
                    continue;
                }
                let h = hash_of(&value);
                if pushed.get(&key) == Some(&h) {
                    continue;
                }
                hashes.push((key, h));
                rows.push(SharedCount {
                    day: day.to_string(),
                    domain,
                    key: policy,
                    value,
                });
            }
        }
        if rows.is_empty() {
            return Ok(0);
        }
        self.shared
            .push(&rows)
            .await
            .map_err(|e| TlsRptError::Shared(e.0))?;
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        for (k, h) in hashes {
            pushed.insert(k, h);
        }
        Ok(rows.len())
    }

    /// Forgets what was pushed of days before `day` (they were pruned).
    pub fn forget_before(&self, day: crate::Day) {
        let prefix = crate::recorder::day_prefix(day);
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        pushed.retain(|k, _| k.as_slice() >= prefix.as_slice());
    }
}

/// Pushes this node's counts every `every` until `shutdown` (a push at
/// start too). A failure is logged at debug level: the shared store's
/// implementation has counted and warned, and the counts wait in sled.
pub async fn run_sync(sync: Arc<CountSync>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match sync.push().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pushed = n, "TLS-RPT: counts pushed to the cluster"),
            Err(e) => {
                tracing::debug!(error = %e, "TLS-RPT: counts not pushed; kept locally for the next sync")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AggregatePolicy, Day, FailureKey};

    fn agg(successful: u64, failures: &[(&str, u64)], policy_line: &str) -> Vec<u8> {
        let mut a = DayAggregate::new(
            Day::from_days_since_epoch(20_000),
            AggregatePolicy {
                policy_type: "sts".into(),
                policy_domain: "example.test".into(),
                policy_string: vec![policy_line.into()],
                mx_host: vec![],
            },
        );
        a.successful = successful;
        for (t, n) in failures {
            a.add_failure(
                FailureKey {
                    result_type: (*t).into(),
                    sending_mta_ip: None,
                    receiving_mx_hostname: Some("mx.example.test".into()),
                    receiving_mx_helo: None,
                    receiving_ip: None,
                    additional_information: None,
                    failure_reason_code: None,
                },
                *n,
            );
        }
        serde_json::to_vec(&a).unwrap()
    }

    #[test]
    fn totals_are_summed_per_policy_and_failure_row() {
        let merged = merge(&[
            agg(3, &[("certificate-expired", 2)], "mode: enforce"),
            agg(
                4,
                &[("certificate-expired", 1), ("starttls-not-supported", 5)],
                "mode: enforce",
            ),
            agg(7, &[], "mode: testing"),
            b"not json".to_vec(),
        ]);
        assert_eq!(merged.len(), 2);
        let enforce = merged
            .iter()
            .find(|a| a.policy.policy_string == ["mode: enforce"])
            .unwrap();
        assert_eq!(enforce.successful, 7);
        assert_eq!(enforce.failed(), 8);
        assert_eq!(enforce.failures.len(), 2);
        let testing = merged
            .iter()
            .find(|a| a.policy.policy_string == ["mode: testing"])
            .unwrap();
        assert_eq!((testing.successful, testing.failed()), (7, 0));
    }
}
