//! DMARC aggregate reports in cluster mode: [`ClusterDmarc`] implements the
//! dmarc crate's [`ReportSource`] and [`SendStates`] over the shared
//! report tables (migration 3, [`crate::reports`]), so the same sender
//! sends one report per (day, From domain) for the whole cluster.
//!
//! - Counting stays in the node's sled store (the accept path never waits
//!   on the database). [`ClusterDmarc::sync`] (every `[cluster]
//!   sync_interval`, and before each send pass) pushes this node's totals:
//!   a row `h` per (day, domain) with the policy published and the
//!   messages, and a row per report row, keyed `r` and the SHA-256 of its
//!   facts (JSON, up to a few kB: longer than a key may be), its value the
//!   facts and the count. A value is the node's whole total, so a push repeated or
//!   delayed by an outage counts nothing twice and loses nothing counted
//!   meanwhile. Only rows changed since the last successful push are
//!   written (every row every [`FULL_PUSH_EVERY`]).
//! - The sender reads every node's rows and sums them, claims the report
//!   (one holder, under a lease renewed while it queues), writes its send
//!   state into the claim, and marks it done. A node that dies midway
//!   stops renewing; another takes the report over with the state written
//!   (the same report id, the destinations left).
//! - A node that cannot reach the database sends nothing (a report with
//!   one node's rows would be wrong) and counts `fell_back("dmarc")`.
//! - Each node forgets its local aggregates of a report once the claim is
//!   done (at its next sync).

use crate::reports::{ClaimState, CountRow, NodeCount, ReportClaims, ReportCounts, ReportKind};
use crate::{Cluster, ClusterError};
use portcullis_dmarc::{
    BoxFuture, Day, DmarcError, DmarcRecorder, PendingReport, Published, ReportSource, RowFacts,
    SendState, SendStates, Taken,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// The name fall-backs are counted under
/// (`portcullis_cluster_fallbacks_total{store="dmarc"}`).
const STORE: &str = "dmarc";

/// How long a node holds a report it sends before another may take it
/// over, renewed before each destination is queued: long enough for the
/// destination checks (DNS) of one report, short enough that a crashed
/// node's reports go out the same hour.
pub const LEASE: Duration = Duration::from_secs(5 * 60);

/// Days the shared counts and claims are kept (the sender's own state is
/// kept as long).
pub const RETENTION_DAYS: i64 = 14;

/// The most rows one report of the cluster carries: each node stores at
/// most its own cap per (day, domain); what several nodes saw differently
/// is bounded here too.
pub const MAX_REPORT_ROWS: usize = 10_000;

/// The most (day, domain) headers read for one pass or `dmarc list`.
const MAX_HEADERS: i64 = 100_000;

/// How often a sync writes every row, changed or not: the database may
/// have lost rows (restored from a backup, emptied by hand) that the
/// record of what was pushed says are there.
pub const FULL_PUSH_EVERY: Duration = Duration::from_secs(30 * 60);

/// The key of a (day, domain)'s header row.
const HEADER_KEY: &str = "h";

/// What a node pushes for one report row: its facts and its count.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RowValue {
    row: RowFacts,
    count: u64,
}

/// The key of a report row: `r` and the SHA-256 (hex) of its facts'
/// JSON, the same on every node for the same facts (a collision would
/// need SHA-256 broken).
fn row_key(facts_json: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, facts_json);
    let mut key = String::with_capacity(65);
    key.push('r');
    for b in digest.as_ref() {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// What a node pushes as its header of a (day, domain).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeaderValue {
    published: Published,
    messages: u64,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synced {
    /// Rows written (changed since the last push).
    pub pushed: usize,
    /// Local (day, domain) aggregates forgotten because their report is
    /// done.
    pub finished: usize,
}

/// A cluster's DMARC reports, as one node sees them. Share it with `Arc`.
pub struct ClusterDmarc {
    cluster: Cluster,
    counts: ReportCounts,
    claims: ReportClaims,
    recorder: DmarcRecorder,
    lease: Duration,
    /// What the last successful pushes wrote, by (day, domain, key): only
    /// changes are written again.
    pushed: Mutex<HashMap<(String, String, String), Vec<u8>>>,
    /// When every row was last written.
    full_push: Mutex<Option<Instant>>,
    /// Serialises syncs (the task's and a send pass's).
    sync: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ClusterDmarc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDmarc")
            .field("node", &self.cluster.node())
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl ClusterDmarc {
    /// The reports of `cluster`, this node counting in `recorder`.
    pub fn new(cluster: Cluster, recorder: DmarcRecorder) -> ClusterDmarc {
        ClusterDmarc {
            counts: ReportCounts::new(cluster.clone(), ReportKind::Dmarc),
            claims: ReportClaims::new(cluster.clone(), ReportKind::Dmarc),
            cluster,
            recorder,
            lease: LEASE,
            pushed: Mutex::new(HashMap::new()),
            full_push: Mutex::new(None),
            sync: tokio::sync::Mutex::new(()),
        }
    }

    /// The same, holding a report for `lease` (instead of [`LEASE`]).
    pub fn with_lease(mut self, lease: Duration) -> ClusterDmarc {
        self.lease = lease;
        self
    }

    /// How often [`ClusterDmarc::sync`] should run: the cluster's
    /// `sync_interval`.
    pub fn sync_interval(&self) -> Duration {
        self.cluster.sync_interval()
    }

    /// Counts a database failure as a fall-back and makes it the
    /// sender's error.
    fn failed(&self, e: ClusterError) -> DmarcError {
        self.cluster.fell_back(STORE, &e);
        DmarcError::Shared(e.to_string())
    }

    /// Pushes this node's counts changed since the last push, forgets the
    /// local aggregates of reports done, and prunes the shared rows of
    /// days past [`RETENTION_DAYS`]. A failure (counted as a fall-back)
    /// leaves everything local for the next sync.
    pub async fn sync(&self, now: SystemTime) -> Result<Synced, DmarcError> {
        let _one = self.sync.lock().await;
        let pending = self.recorder.pending()?;
        let mut rows = Vec::new();
        for p in &pending {
            let day = p.day.to_string();
            let header = HeaderValue {
                published: p.published.clone(),
                messages: p.messages,
            };
            rows.push(CountRow {
                day: day.clone(),
                domain: p.domain.clone(),
                key: HEADER_KEY.to_owned(),
                value: serde_json::to_vec(&header).map_err(|e| DmarcError::Build(e.to_string()))?,
            });
            for (row, count) in self.recorder.rows(p.day, &p.domain)? {
                let facts =
                    serde_json::to_vec(&row).map_err(|e| DmarcError::Build(e.to_string()))?;
                let value = serde_json::to_vec(&RowValue { row, count })
                    .map_err(|e| DmarcError::Build(e.to_string()))?;
                rows.push(CountRow {
                    day: day.clone(),
                    domain: p.domain.clone(),
                    key: row_key(&facts),
                    value,
                });
            }
        }
        let full = {
            let mut last = self.full_push.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= FULL_PUSH_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if full {
            self.pushed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        let changed: Vec<CountRow> = {
            let pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            rows.iter()
                .filter(|r| {
                    pushed.get(&(r.day.clone(), r.domain.clone(), r.key.clone())) != Some(&r.value)
                })
                .cloned()
                .collect()
        };
        if !changed.is_empty() {
            let skipped = self
                .counts
                .push(&changed)
                .await
                .map_err(|e| self.failed(e))?;
            if skipped > 0 {
                warn!(
                    skipped,
                    "DMARC counts over the shared table's limits not shared"
                );
            }
        }
        {
            // What is no longer local is forgotten here too (bounded like
            // the local aggregates).
            let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            pushed.clear();
            for r in rows {
                pushed.insert((r.day, r.domain, r.key), r.value);
            }
        }
        let today = Day::of(now);
        let mut finished = 0;
        if let Some(oldest) = pending.iter().map(|p| p.day).min() {
            let done = self.done_since(oldest).await.map_err(|e| self.failed(e))?;
            for p in pending.iter().filter(|p| p.day < today) {
                if done.contains(&(p.day.to_string(), p.domain.clone())) {
                    self.recorder.remove(p.day, &p.domain)?;
                    finished += 1;
                }
            }
        }
        let oldest_kept = Day::from_days_since_epoch(today.days_since_epoch() - RETENTION_DAYS);
        self.counts
            .prune_before(&oldest_kept.to_string())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Synced {
            pushed: changed.len(),
            finished,
        })
    }

    /// The (day, domain) of the done reports of days from `oldest`.
    async fn done_since(&self, oldest: Day) -> Result<HashSet<(String, String)>, ClusterError> {
        let client = self.cluster.client().await?;
        let rows = self
            .cluster
            .bounded(client.query(
                "SELECT day, domain FROM report_claims
                 WHERE kind = $1 AND state = 'done' AND day >= $2 LIMIT $3",
                &[
                    &ReportKind::Dmarc.as_str(),
                    &oldest.to_string(),
                    &MAX_HEADERS,
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.cluster.statement_failed(&e))
    }

    /// Every (day, domain) some node has counts for whose report is not
    /// done, the nodes' headers summed.
    async fn summed_pending(&self) -> Result<Vec<PendingReport>, ClusterError> {
        let client = self.cluster.client().await?;
        let kind = ReportKind::Dmarc.as_str();
        let headers = self
            .cluster
            .bounded(client.query(
                "SELECT c.day, c.domain, c.value FROM report_counts c
                 WHERE c.kind = $1 AND c.key = $2
                   AND NOT EXISTS (SELECT 1 FROM report_claims d
                                   WHERE d.kind = c.kind AND d.day = c.day
                                     AND d.domain = c.domain AND d.state = 'done')
                 ORDER BY c.day, c.domain, c.node LIMIT $3",
                &[&kind, &HEADER_KEY, &MAX_HEADERS],
            ))
            .await?;
        let distinct = self
            .cluster
            .bounded(client.query(
                "SELECT day, domain, count(DISTINCT key)::bigint FROM report_counts
                 WHERE kind = $1 AND key <> $2 GROUP BY day, domain",
                &[&kind, &HEADER_KEY],
            ))
            .await?;
        let read = || -> Result<Vec<PendingReport>, tokio_postgres::Error> {
            let mut rows_of: HashMap<(String, String), i64> = HashMap::new();
            for r in &distinct {
                rows_of.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
            }
            let mut out: BTreeMap<(String, String), PendingReport> = BTreeMap::new();
            for r in &headers {
                let day: String = r.try_get(0)?;
                let domain: String = r.try_get(1)?;
                let value: Vec<u8> = r.try_get(2)?;
                let (Ok(d), Ok(h)) = (
                    day.parse::<Day>(),
                    serde_json::from_slice::<HeaderValue>(&value),
                ) else {
                    warn!(%day, %domain, "unreadable DMARC header in the cluster's counts: skipped");
                    continue;
                };
                let rows = rows_of
                    .get(&(day.clone(), domain.clone()))
                    .copied()
                    .unwrap_or(0);
                let entry = out
                    .entry((day, domain.clone()))
                    .or_insert_with(|| PendingReport {
                        day: d,
                        domain,
                        // The first node's, in node order: every node saw
                        // the record the From domain published that day.
                        published: h.published,
                        rows: u32::try_from(rows).unwrap_or(u32::MAX),
                        messages: 0,
                    });
                entry.messages = entry.messages.saturating_add(h.messages);
            }
            Ok(out.into_values().collect())
        };
        read().map_err(|e| self.cluster.statement_failed(&e))
    }
}

/// Sums every node's rows of a report: the count of each row (the same
/// facts, the same key on every node) over the nodes, at most
/// [`MAX_REPORT_ROWS`] rows, ordered by the facts.
pub fn merge_rows(counts: &[NodeCount]) -> Vec<(RowFacts, u64)> {
    let mut sum: HashMap<&str, (RowFacts, u64)> = HashMap::new();
    for c in counts {
        if c.key == HEADER_KEY {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<RowValue>(&c.value) else {
            warn!(node = %c.node, "unreadable DMARC row in the cluster's counts: skipped");
            continue;
        };
        if !sum.contains_key(c.key.as_str()) && sum.len() >= MAX_REPORT_ROWS {
            continue;
        }
        let total = sum.entry(c.key.as_str()).or_insert((v.row, 0));
        total.1 = total.1.saturating_add(v.count);
    }
    let mut rows: Vec<(RowFacts, u64)> = sum.into_values().collect();
    rows.sort();
    rows
}

impl ReportSource for ClusterDmarc {
    fn pending(&self) -> BoxFuture<'_, Result<Vec<PendingReport>, DmarcError>> {
        Box::pin(async move {
            // This node's latest counts first: `dmarc send` right after
            // mail arrived includes it.
            self.sync(SystemTime::now()).await?;
            self.summed_pending().await.map_err(|e| self.failed(e))
        })
    }

    fn rows<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RowFacts, u64)>, DmarcError>> {
        Box::pin(async move {
            let counts = self
                .counts
                .rows(&day.to_string(), domain)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(merge_rows(&counts))
        })
    }

    fn finish<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<(), DmarcError>> {
        Box::pin(async move { self.recorder.remove(day, domain) })
    }

    fn settle(&self) -> Duration {
        // Every live node has synced twice since midnight.
        self.cluster.sync_interval().saturating_mul(2)
    }
}

impl SendStates for ClusterDmarc {
    fn take<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<Taken, DmarcError>> {
        Box::pin(async move {
            let claim = self
                .claims
                .claim(&day.to_string(), domain, self.lease)
                .await
                .map_err(|e| self.failed(e))?;
            let Some(claim) = claim else {
                return Ok(Taken::Elsewhere);
            };
            if let Some(from) = &claim.taken_from {
                info!(%day, %domain, from = %from, "DMARC report taken over from a node whose lease lapsed");
            }
            let state = match claim.record {
                Some(bytes) => Some(SendState::from_bytes(&bytes)?),
                None => None,
            };
            Ok(Taken::Yours(state))
        })
    }

    fn renew<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<bool, DmarcError>> {
        Box::pin(async move {
            self.claims
                .renew(&day.to_string(), domain, self.lease)
                .await
                .map_err(|e| self.failed(e))
        })
    }

    fn save<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
        state: &'a SendState,
        decided: bool,
    ) -> BoxFuture<'a, Result<bool, DmarcError>> {
        Box::pin(async move {
            let claim = if decided {
                ClaimState::Done
            } else {
                ClaimState::Pending
            };
            self.claims
                .save(&day.to_string(), domain, &state.to_bytes(), claim)
                .await
                .map_err(|e| self.failed(e))
        })
    }
}
