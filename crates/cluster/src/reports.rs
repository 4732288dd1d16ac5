//! The daily reports the nodes of a cluster make together (TLS-RPT,
//! DMARC aggregates), in two tables of migration 3:
//!
//! - **Counts** ([`ReportCounts`], table `report_counts`): each node keeps
//!   counting in its own sled store (the database is never on the path of
//!   a session) and, every `[cluster] sync_interval`, writes its totals so
//!   far per (kind, day, domain, key). A value is the node's whole count,
//!   never a delta: a sync repeated after a crash counts nothing twice, and
//!   what a node counted while the database was down arrives with its next
//!   successful sync. The sender reads every node's rows and sums them.
//! - **Claims** ([`ReportClaims`], table `report_claims`): one row per
//!   report; the node holding it while its lease runs is the only one
//!   sending it, keeps the lease alive while it works, and writes its send
//!   state into the row. A node that dies mid-send stops renewing; once
//!   the lease lapses another node takes the report over, with the state
//!   the first one wrote (the same report id, so a receiver that saw part
//!   of the first attempt drops the second copy by id). A report marked
//!   done is never claimed again.
//!
//! Everything here is bounded by the cluster's timeout; an error is a
//! [`ClusterError`], and a caller that cannot reach the database sends
//! nothing (a report with one node's counts would be a wrong report).

use crate::{Cluster, ClusterError};
use std::time::Duration;

/// What is counted: the report kind, a column of both tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// TLS-RPT (RFC 8460) aggregates.
    TlsRpt,
    /// DMARC (RFC 7489 §7.2) aggregates.
    Dmarc,
}

impl ReportKind {
    /// The value of the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::TlsRpt => "tlsrpt",
            ReportKind::Dmarc => "dmarc",
        }
    }
}

/// One count of this node: (day, domain, key) and the kind's encoding of
/// the node's total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The report's domain (policy domain, From domain).
    pub domain: String,
    /// What the kind aggregates by within the day and domain.
    pub key: String,
    /// The node's total, in the kind's own encoding (JSON).
    pub value: Vec<u8>,
}

/// One node's count of a (day, domain), as [`ReportCounts::rows`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCount {
    /// The node that counted.
    pub node: String,
    /// What the kind aggregates by.
    pub key: String,
    /// The node's total.
    pub value: Vec<u8>,
}

/// The longest domain, key or value accepted: counts are made from what
/// remote hosts and senders choose, so the table's rows are bounded like
/// the local stores' (a value is one sled value at most).
pub const MAX_VALUE: usize = 64 * 1024 - 8;
/// The longest domain or key accepted.
pub const MAX_KEY: usize = 1024;

/// The nodes' counts of one kind. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReportCounts {
    cluster: Cluster,
    kind: ReportKind,
}

impl ReportCounts {
    /// The counts of `kind` in `cluster`'s database.
    pub fn new(cluster: Cluster, kind: ReportKind) -> ReportCounts {
        ReportCounts { cluster, kind }
    }

    /// Writes this node's totals `rows` (each replacing the node's earlier
    /// value of its (day, domain, key)), in one transaction. Rows with an
    /// over-long domain, key or value are skipped (counted in the result)
    /// rather than failing the rest.
    pub async fn push(&self, rows: &[CountRow]) -> Result<usize, ClusterError> {
        let node = self.cluster.node().to_owned();
        let kind = self.kind.as_str();
        let mut skipped = 0;
        let fitting: Vec<&CountRow> = rows
            .iter()
            .filter(|r| {
                let fits = r.domain.len() <= MAX_KEY
                    && r.key.len() <= MAX_KEY
                    && r.day.len() <= 10
                    && r.value.len() <= MAX_VALUE;
                if !fits {
                    skipped += 1;
                }
                fits
            })
            .collect();
        let mut client = self.cluster.client().await?;
        let run = async {
            let tx = client.transaction().await?;
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO report_counts (kind, day, domain, node, key, value, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, now())
                     ON CONFLICT (kind, day, domain, node, key)
                     DO UPDATE SET value = EXCLUDED.value, updated_at = now()
                     WHERE report_counts.value IS DISTINCT FROM EXCLUDED.value",
                )
                .await?;
            for r in &fitting {
                tx.execute(&stmt, &[&kind, &r.day, &r.domain, &node, &r.key, &r.value])
                    .await?;
            }
            tx.commit().await
        };
        // A long push is many statements: give it the timeout per hundred
        // rows, so a big day still syncs while a hung database still ends.
        let per = u32::try_from(fitting.len() / 100 + 1).unwrap_or(u32::MAX);
        let limit = self.cluster.timeout().saturating_mul(per);
        self.cluster.bounded_for(limit, run).await?;
        Ok(skipped)
    }

    /// Every (day, domain) some node has counts for, oldest day first.
    pub async fn days(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let client = self.cluster.client().await?;
        let rows = self
            .cluster
            .bounded(client.query(
                "SELECT DISTINCT day, domain FROM report_counts WHERE kind = $1
                 ORDER BY day, domain",
                &[&self.kind.as_str()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.cluster.statement_failed(&e))
    }

    /// Every node's counts of (`day`, `domain`), by node and key.
    pub async fn rows(&self, day: &str, domain: &str) -> Result<Vec<NodeCount>, ClusterError> {
        let client = self.cluster.client().await?;
        let rows = self
            .cluster
            .bounded(client.query(
                "SELECT node, key, value FROM report_counts
                 WHERE kind = $1 AND day = $2 AND domain = $3 ORDER BY node, key",
                &[&self.kind.as_str(), &day, &domain],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeCount {
                    node: r.try_get(0)?,
                    key: r.try_get(1)?,
                    value: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.cluster.statement_failed(&e))
    }

    /// Deletes the counts and claims of days before `day`; how many count
    /// rows went.
    pub async fn prune_before(&self, day: &str) -> Result<u64, ClusterError> {
        let client = self.cluster.client().await?;
        let kind = self.kind.as_str();
        let n = self
            .cluster
            .bounded(client.execute(
                "DELETE FROM report_counts WHERE kind = $1 AND day < $2",
                &[&kind, &day],
            ))
            .await?;
        self.cluster
            .bounded(client.execute(
                "DELETE FROM report_claims WHERE kind = $1 AND day < $2",
                &[&kind, &day],
            ))
            .await?;
        Ok(n)
    }
}

/// The state of a report's claim row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Not yet sent to every destination.
    Pending,
    /// Finished (sent, given up, or nothing to send): never claimed again.
    Done,
}

impl ClaimState {
    fn as_str(self) -> &'static str {
        match self {
            ClaimState::Pending => "pending",
            ClaimState::Done => "done",
        }
    }

    fn parse(s: &str) -> ClaimState {
        if s == "done" {
            ClaimState::Done
        } else {
            ClaimState::Pending
        }
    }
}

/// A report this node holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The send state the kind wrote last (by this node or, taken over,
    /// by the node before it); `None` for a report nobody started.
    pub record: Option<Vec<u8>>,
    /// The node that held it before, when this node took it over from
    /// another whose lease had lapsed.
    pub taken_from: Option<String>,
}

/// A report's claim row as it stands (for `list`/`show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    /// Pending or done.
    pub state: ClaimState,
    /// The node holding it (or that held it last).
    pub holder: String,
    /// Seconds until the holder's lease lapses (0: lapsed).
    pub lease_secs_left: u64,
    /// The kind's send state.
    pub record: Option<Vec<u8>>,
}

/// Who sends which report. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReportClaims {
    cluster: Cluster,
    kind: ReportKind,
}

impl ReportClaims {
    /// The claims of `kind` in `cluster`'s database.
    pub fn new(cluster: Cluster, kind: ReportKind) -> ReportClaims {
        ReportClaims { cluster, kind }
    }

    /// Takes (`day`, `domain`) for this node for `lease`: when nobody holds
    /// it, when this node already does, or when the holder's lease has
    /// lapsed (the database's clock decides). `None`: another node holds
    /// it, or it is done.
    pub async fn claim(
        &self,
        day: &str,
        domain: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, ClusterError> {
        let client = self.cluster.client().await?;
        let node = self.cluster.node();
        let secs = lease_secs(lease);
        // One statement, so two nodes claiming at once cannot both win: the
        // insert or the conditional update takes the row lock, and the
        // loser's WHERE no longer holds. The old holder comes back through
        // the sub-select of the row as it was before the update.
        let row = self
            .cluster
            .bounded(client.query_opt(
                "WITH old AS (
                     SELECT holder FROM report_claims
                     WHERE kind = $1 AND day = $2 AND domain = $3
                 )
                 INSERT INTO report_claims (kind, day, domain, state, holder, lease_until)
                 VALUES ($1, $2, $3, 'pending', $4, now() + make_interval(secs => $5))
                 ON CONFLICT (kind, day, domain) DO UPDATE
                     SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until
                     WHERE report_claims.state = 'pending'
                       AND (report_claims.holder = EXCLUDED.holder
                            OR report_claims.lease_until < now())
                 RETURNING record, (SELECT holder FROM old)",
                &[&self.kind.as_str(), &day, &domain, &node, &secs],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record: Option<Vec<u8>> = row
            .try_get(0)
            .map_err(|e| self.cluster.statement_failed(&e))?;
        let old: Option<String> = row
            .try_get(1)
            .map_err(|e| self.cluster.statement_failed(&e))?;
        Ok(Some(Claim {
            record,
            taken_from: old.filter(|o| o != node),
        }))
    }

    /// Extends this node's lease on (`day`, `domain`) by `lease` from now;
    /// false when this node no longer holds it (taken over after a lapse):
    /// the caller must stop sending.
    pub async fn renew(
        &self,
        day: &str,
        domain: &str,
        lease: Duration,
    ) -> Result<bool, ClusterError> {
        let client = self.cluster.client().await?;
        let n = self
            .cluster
            .bounded(client.execute(
                "UPDATE report_claims SET lease_until = now() + make_interval(secs => $5)
                 WHERE kind = $1 AND day = $2 AND domain = $3 AND holder = $4
                   AND state = 'pending'",
                &[
                    &self.kind.as_str(),
                    &day,
                    &domain,
                    &self.cluster.node(),
                    &lease_secs(lease),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    /// Writes the send state `record` and `state` of (`day`, `domain`),
    /// only while this node holds it; false when it does not (nothing
    /// written). Marking it [`ClaimState::Done`] ends it for every node.
    pub async fn save(
        &self,
        day: &str,
        domain: &str,
        record: &[u8],
        state: ClaimState,
    ) -> Result<bool, ClusterError> {
        if record.len() > MAX_VALUE {
            return Err(ClusterError::Query(format!(
                "report state of {} octets is over the limit of {MAX_VALUE}",
                record.len()
            )));
        }
        let client = self.cluster.client().await?;
        let n = self
            .cluster
            .bounded(client.execute(
                "UPDATE report_claims SET record = $5, state = $6
                 WHERE kind = $1 AND day = $2 AND domain = $3 AND holder = $4",
                &[
                    &self.kind.as_str(),
                    &day,
                    &domain,
                    &self.cluster.node(),
                    &record,
                    &state.as_str(),
                ],
            ))
            .await?;
        Ok(n == 1)
    }

    /// Lets (`day`, `domain`) go at once (the lease ends now), when this
    /// node holds it: another node may take it at its next pass.
    pub async fn release(&self, day: &str, domain: &str) -> Result<(), ClusterError> {
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "UPDATE report_claims SET lease_until = now()
                 WHERE kind = $1 AND day = $2 AND domain = $3 AND holder = $4",
                &[&self.kind.as_str(), &day, &domain, &self.cluster.node()],
            ))
            .await?;
        Ok(())
    }

    /// The claim row of (`day`, `domain`), if any.
    pub async fn get(&self, day: &str, domain: &str) -> Result<Option<ClaimRow>, ClusterError> {
        let client = self.cluster.client().await?;
        let row = self
            .cluster
            .bounded(client.query_opt(
                "SELECT state, holder,
                        GREATEST(0, ceil(EXTRACT(EPOCH FROM lease_until - now())))::bigint,
                        record
                 FROM report_claims WHERE kind = $1 AND day = $2 AND domain = $3",
                &[&self.kind.as_str(), &day, &domain],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = || -> Result<ClaimRow, tokio_postgres::Error> {
            let state: String = row.try_get(0)?;
            let left: i64 = row.try_get(2)?;
            Ok(ClaimRow {
                state: ClaimState::parse(&state),
                holder: row.try_get(1)?,
                lease_secs_left: u64::try_from(left).unwrap_or(0),
                record: row.try_get(3)?,
            })
        };
        read()
            .map(Some)
            .map_err(|e| self.cluster.statement_failed(&e))
    }
}

/// A lease in seconds for `make_interval` (at least one millisecond, so a
/// zero lease is not "forever ago" by rounding).
fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64().max(0.001)
}
