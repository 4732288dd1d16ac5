//! AUTH failures and lockouts in the cluster's database (table
//! `auth_failures`, migration 5): each node pushes its failures per
//! address and user in the window and its lockouts, and pulls the other
//! nodes' sums, which its guard counts with its own. Times are written on
//! the database's clock (now() plus what the node has left), so nodes'
//! clocks need not agree. Run by the periodic exchange
//! ([`crate::limits::LimitsExchange`]), never by an AUTH command.
//!
//! Bounds: user names longer than [`MAX_KEY`] are not shared (the node
//! still counts them); a pull returns at most `limit` keys; a node keeps
//! at most [`MAX_ROWS`] rows (past it, its rows without a lockout that end
//! soonest go); expired rows are swept in batches.

use crate::{Cluster, ClusterError};
use portcullis_submission::lockout::{Scope, SharedCount, SharedKey};
use std::time::Duration;

/// The longest key shared: far above a user name, so that a client's
/// made-up names cannot make big rows.
pub const MAX_KEY: usize = 512;

/// Rows one node keeps at most: the bound of its guard's memory.
pub const MAX_ROWS: i64 = 100_000;

/// Rows one sweep statement deletes at most.
const SWEEP_BATCH: i64 = 10_000;

/// The failures and lockouts in `cluster`'s database.
#[derive(Clone)]
pub struct PgLockouts {
    cluster: Cluster,
}

impl PgLockouts {
    /// The table in `cluster`'s database; each statement bounded by the
    /// cluster's timeout.
    pub fn new(cluster: Cluster) -> PgLockouts {
        PgLockouts { cluster }
    }

    /// Writes this node's state of each key in `counts`: a key with
    /// failures or a lockout is written (replaced), one with neither is
    /// removed. Then, when the node holds more than [`MAX_ROWS`] rows,
    /// its unlocked rows that end soonest are removed.
    pub async fn push(&self, counts: &[SharedCount]) -> Result<(), ClusterError> {
        let counts: Vec<&SharedCount> = counts
            .iter()
            .filter(|c| c.key.key.len() <= MAX_KEY)
            .collect();
        if counts.is_empty() {
            return Ok(());
        }
        let (live, gone): (Vec<&SharedCount>, Vec<&SharedCount>) = counts
            .into_iter()
            .partition(|c| c.failures > 0 || c.locked_for.is_some());
        let node = self.cluster.node();
        let client = self.cluster.client().await?;
        if !live.is_empty() {
            let scopes: Vec<i16> = live.iter().map(|c| scope_id(c.key.scope)).collect();
            let keys: Vec<Vec<u8>> = live.iter().map(|c| c.key.key.clone()).collect();
            let failures: Vec<i32> = live
                .iter()
                .map(|c| i32::try_from(c.failures).unwrap_or(i32::MAX))
                .collect();
            let counts_ms: Vec<i64> = live.iter().map(|c| millis(c.counts_for)).collect();
            // -1: no lockout (NULL after NULLIF).
            let locked_ms: Vec<i64> = live
                .iter()
                .map(|c| c.locked_for.map_or(-1, millis))
                .collect();
            self.cluster
                .bounded(client.execute(
                    "INSERT INTO auth_failures (node, scope, key, failures, counts_until, locked_until) \
                     SELECT $1, s, k, f, now() + c * interval '1 millisecond', \
                            now() + NULLIF(l, -1) * interval '1 millisecond' \
                     FROM unnest($2::smallint[], $3::bytea[], $4::int[], $5::bigint[], $6::bigint[]) \
                          AS t(s, k, f, c, l) \
                     ON CONFLICT (node, scope, key) DO UPDATE SET failures = EXCLUDED.failures, \
                     counts_until = EXCLUDED.counts_until, locked_until = EXCLUDED.locked_until",
                    &[&node, &scopes, &keys, &failures, &counts_ms, &locked_ms],
                ))
                .await?;
        }
        if !gone.is_empty() {
            let scopes: Vec<i16> = gone.iter().map(|c| scope_id(c.key.scope)).collect();
            let keys: Vec<Vec<u8>> = gone.iter().map(|c| c.key.key.clone()).collect();
            self.cluster
                .bounded(client.execute(
                    "DELETE FROM auth_failures WHERE node = $1 AND (scope, key) IN \
                     (SELECT * FROM unnest($2::smallint[], $3::bytea[]))",
                    &[&node, &scopes, &keys],
                ))
                .await?;
        }
        let held: i64 = self
            .cluster
            .bounded(client.query_one(
                "SELECT count(*) FROM auth_failures WHERE node = $1",
                &[&node],
            ))
            .await?
            .try_get(0)
            .map_err(|e| self.cluster.statement_failed(&e))?;
        if held > MAX_ROWS {
            self.cluster
                .bounded(client.execute(
                    "DELETE FROM auth_failures WHERE (node, scope, key) IN \
                     (SELECT node, scope, key FROM auth_failures \
                      WHERE node = $1 AND locked_until IS NULL \
                      ORDER BY counts_until LIMIT $2)",
                    &[&node, &(held - MAX_ROWS)],
                ))
                .await?;
        }
        Ok(())
    }

    /// The other nodes' live state summed per key: their failures still in
    /// their windows, how long the last of them counts, and the longest
    /// lockout; at most `limit` keys.
    pub async fn pull(&self, limit: usize) -> Result<Vec<SharedCount>, ClusterError> {
        let client = self.cluster.client().await?;
        let node = self.cluster.node();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .cluster
            .bounded(client.query(
                "SELECT scope, key, \
                 COALESCE(sum(failures) FILTER (WHERE counts_until > now()), 0)::bigint, \
                 GREATEST((EXTRACT(EPOCH FROM (max(counts_until) - now())) * 1000)::bigint, 0), \
                 (EXTRACT(EPOCH FROM (max(locked_until) - now())) * 1000)::bigint \
                 FROM auth_failures WHERE node <> $1 \
                 AND (counts_until > now() OR locked_until > now()) \
                 GROUP BY scope, key LIMIT $2",
                &[&node, &limit],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> Result<Option<SharedCount>, tokio_postgres::Error> {
                let scope: i16 = row.try_get(0)?;
                let key: Vec<u8> = row.try_get(1)?;
                let failures: i64 = row.try_get(2)?;
                let counts_ms: i64 = row.try_get(3)?;
                let locked_ms: Option<i64> = row.try_get(4)?;
                let Some(scope) = scope_of(scope) else {
                    return Ok(None);
                };
                Ok(Some(SharedCount {
                    key: SharedKey { scope, key },
                    failures: u32::try_from(failures.max(0)).unwrap_or(u32::MAX),
                    counts_for: from_millis(counts_ms),
                    locked_for: locked_ms.filter(|ms| *ms > 0).map(from_millis),
                }))
            };
            match read() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(e) => return Err(self.cluster.statement_failed(&e)),
            }
        }
        Ok(out)
    }

    /// Removes rows whose failures and lockout have both ended (every
    /// node's), one batch; how many.
    pub async fn sweep(&self) -> Result<u64, ClusterError> {
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "DELETE FROM auth_failures WHERE (node, scope, key) IN \
                 (SELECT node, scope, key FROM auth_failures WHERE counts_until <= now() \
                  AND (locked_until IS NULL OR locked_until <= now()) \
                  LIMIT $1 FOR UPDATE SKIP LOCKED)",
                &[&SWEEP_BATCH],
            ))
            .await
    }
}

/// The `scope` column of `scope`: fixed numbers.
fn scope_id(scope: Scope) -> i16 {
    match scope {
        Scope::Ip => 1,
        Scope::User => 2,
    }
}

/// The scope of a `scope` column; `None` for a number no version wrote.
fn scope_of(id: i16) -> Option<Scope> {
    match id {
        1 => Some(Scope::Ip),
        2 => Some(Scope::User),
        _ => None,
    }
}

/// `d` in milliseconds (saturating).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds read back (negative: none left).
fn from_millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_fixed_numbers() {
        for scope in [Scope::Ip, Scope::User] {
            assert_eq!(scope_of(scope_id(scope)), Some(scope));
        }
        assert_eq!(scope_of(7), None);
        assert_eq!(from_millis(-5), Duration::ZERO);
    }
}
