//! The screen's state (greylist entries, cached recipient-probe answers)
//! in the cluster's database: [`PgScreenStore`] implements the screen's
//! [`ScreenStore`] over [`Cluster::client`], so a greylist pass recorded
//! by one node is seen by every node.
//!
//! One table, `screen_entries (tbl, key, value, expires_at)` (migration 2):
//! writes are upserts, expiry is checked in SQL (an entry is live while
//! `now < expires_at`, as in the sled store), prefix scans are bytea range
//! conditions on the primary key, and the sweep deletes expired rows in
//! bounded batches through the expiry index.
//!
//! Threat model: keys and values come from what SMTP clients send, so
//! both are bounded here (an over-long key would otherwise fail in the
//! btree index, an over-long value fill the disk), and each table holds at
//! most its capacity of rows: a client making up senders and recipients
//! fills at most that much of the database. The count is kept by triggers
//! in `screen_counts` (no `count(*)` per write).

use crate::{Cluster, ClusterError};
use portcullis_screen::BoxFuture;
use portcullis_screen::state::{DEFAULT_CAPACITY, Entries, ScreenStore, StateError, Stored, Table};
use std::time::Duration;

/// The longest key stored: far above the screen's keys (an address pair
/// and a network prefix), below PostgreSQL's btree limit for one index
/// entry (about 2.7 kB), which would otherwise fail the write.
pub const MAX_KEY: usize = 2048;

/// The longest value stored: what the sled store takes too (its 64 KiB
/// value limit less the 8-byte expiry it prefixes), so an entry the
/// database takes is never refused by the local store a node falls back
/// to.
pub const MAX_VALUE: usize = 64 * 1024 - 8;

/// Rows one statement of a sweep or a removal deletes at most: each batch
/// is a short transaction, so it never holds many row locks for long and
/// stays within the operation timeout.
const BATCH: i64 = 1000;

/// Why the shared state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PgStateError {
    /// The table is at its capacity and the key is new: not recorded.
    #[error("screen state: {0}")]
    Refused(String),
    /// The database could not answer (unreachable, timed out, a statement
    /// failed): callers in cluster mode fall back to the local store.
    #[error("screen state: {0}")]
    Database(#[from] ClusterError),
}

impl From<PgStateError> for StateError {
    fn from(e: PgStateError) -> StateError {
        StateError(e.to_string())
    }
}

/// [`ScreenStore`] in the cluster's PostgreSQL database (table
/// `screen_entries`). Cheap to clone; every operation takes a pooled
/// connection from [`Cluster::client`] and gives up after the operation
/// timeout (each batch of a sweep or a removal on its own).
#[derive(Clone)]
pub struct PgScreenStore {
    cluster: Cluster,
    capacity: u64,
    timeout: Duration,
}

impl PgScreenStore {
    /// The screen's state in `cluster`'s database, each table holding at
    /// most [`DEFAULT_CAPACITY`] entries, each round trip (connection
    /// included) given at most the cluster's timeout (`[cluster] timeout`).
    pub fn new(cluster: Cluster) -> PgScreenStore {
        let timeout = cluster.timeout();
        PgScreenStore {
            cluster,
            capacity: DEFAULT_CAPACITY,
            timeout,
        }
    }

    /// The same store, each table holding at most `capacity` entries.
    pub fn with_capacity(mut self, capacity: u64) -> PgScreenStore {
        self.capacity = capacity;
        self
    }

    /// The rows `table` holds now (expired ones until a sweep removes
    /// them), as the triggers count them.
    pub async fn len(&self, table: Table) -> Result<u64, PgStateError> {
        let row = self
            .round_trip(async {
                let client = self.cluster.client().await?;
                client
                    .query_opt(
                        "SELECT entries FROM screen_counts WHERE tbl = $1",
                        &[&table_id(table)],
                    )
                    .await
                    .map_err(|e| self.cluster.statement_failed(&e))
            })
            .await?;
        Ok(row
            .map(|r| {
                r.try_get::<_, i64>(0)
                    .map_err(|e| self.cluster.statement_failed(&e))
            })
            .transpose()?
            .map_or(0, from_db))
    }

    /// The entry under `key`, unless absent or expired at `now`.
    pub async fn get_entry(
        &self,
        table: Table,
        key: &[u8],
        now: u64,
    ) -> Result<Option<Stored>, PgStateError> {
        let row = self
            .round_trip(async {
                let client = self.cluster.client().await?;
                let stmt = client
                    .prepare_cached(
                        "SELECT value, expires_at FROM screen_entries \
                         WHERE tbl = $1 AND key = $2 AND expires_at > $3",
                    )
                    .await
                    .map_err(|e| self.cluster.statement_failed(&e))?;
                client
                    .query_opt(&stmt, &[&table_id(table), &key, &to_db(now)])
                    .await
                    .map_err(|e| self.cluster.statement_failed(&e))
            })
            .await?;
        row.map(|r| stored(&self.cluster, &r, 0)).transpose()
    }

    /// Writes (replaces) the entry under `key`; a new key is refused when
    /// the table is at its capacity, an over-long key or value always.
    pub async fn put_entry(
        &self,
        table: Table,
        key: &[u8],
        entry: Stored,
    ) -> Result<(), PgStateError> {
        if key.len() > MAX_KEY || entry.value.len() > MAX_VALUE {
            return Err(PgStateError::Refused(format!(
                "entry too large for {} ({} octets of key, {} of value; at most {MAX_KEY} and {MAX_VALUE})",
                table_name(table),
                key.len(),
                entry.value.len()
            )));
        }
        // One statement: the row is written when its key exists already
        // or the table is below its capacity. Two new keys racing past the
        // last free place may both land (read committed): the capacity is
        // a bound off by at most the writers at once, as in the sled store.
        let written = self
            .round_trip(async {
                let client = self.cluster.client().await?;
                let stmt = client
                    .prepare_cached(
                        "INSERT INTO screen_entries (tbl, key, value, expires_at) \
                         SELECT $1::smallint, $2::bytea, $3::bytea, $4::bigint \
                         WHERE EXISTS (SELECT 1 FROM screen_entries WHERE tbl = $1 AND key = $2) \
                            OR (SELECT entries FROM screen_counts WHERE tbl = $1) < $5::bigint \
                         ON CONFLICT (tbl, key) DO UPDATE \
                         SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                    )
                    .await
                    .map_err(|e| self.cluster.statement_failed(&e))?;
                client
                    .execute(
                        &stmt,
                        &[
                            &table_id(table),
                            &key,
                            &entry.value,
                            &to_db(entry.expires),
                            &to_db(self.capacity),
                        ],
                    )
                    .await
                    .map_err(|e| self.cluster.statement_failed(&e))
            })
            .await?;
        if written == 0 {
            return Err(PgStateError::Refused(format!(
                "{} is full ({} entries); not recorded",
                table_name(table),
                self.capacity
            )));
        }
        Ok(())
    }

    /// Every live entry whose key starts with `prefix`, in key (byte)
    /// order, at most `limit` of them.
    pub async fn scan_entries(
        &self,
        table: Table,
        prefix: &[u8],
        now: u64,
        limit: usize,
    ) -> Result<Entries, PgStateError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let upper = successor(prefix);
        let rows = self
            .round_trip(async {
                let client = self.cluster.client().await?;
                // bytea compares byte by byte (memcmp), the sled order.
                let rows = match &upper {
                    Some(upper) => {
                        let stmt = client
                            .prepare_cached(
                                "SELECT key, value, expires_at FROM screen_entries \
                                 WHERE tbl = $1 AND key >= $2 AND key < $3 AND expires_at > $4 \
                                 ORDER BY key LIMIT $5",
                            )
                            .await
                            .map_err(|e| self.cluster.statement_failed(&e))?;
                        client
                            .query(
                                &stmt,
                                &[&table_id(table), &prefix, upper, &to_db(now), &limit],
                            )
                            .await
                    }
                    None => {
                        let stmt = client
                            .prepare_cached(
                                "SELECT key, value, expires_at FROM screen_entries \
                                 WHERE tbl = $1 AND key >= $2 AND expires_at > $3 \
                                 ORDER BY key LIMIT $4",
                            )
                            .await
                            .map_err(|e| self.cluster.statement_failed(&e))?;
                        client
                            .query(&stmt, &[&table_id(table), &prefix, &to_db(now), &limit])
                            .await
                    }
                };
                rows.map_err(|e| self.cluster.statement_failed(&e))
            })
            .await?;
        rows.iter()
            .map(|r| {
                let key: Vec<u8> = r
                    .try_get(0)
                    .map_err(|e| self.cluster.statement_failed(&e))?;
                Ok((key, stored(&self.cluster, r, 1)?))
            })
            .collect()
    }

    /// Removes every entry whose key starts with `prefix`, in batches;
    /// how many.
    pub async fn remove_entries(&self, table: Table, prefix: &[u8]) -> Result<u64, PgStateError> {
        let id = table_id(table);
        let cluster = &self.cluster;
        // No SKIP LOCKED here: a row being written at this moment is
        // waited for and removed, as the operator asked.
        match successor(prefix) {
            Some(upper) => {
                let upper = &upper;
                self.batched(
                    "DELETE FROM screen_entries WHERE tbl = $1 AND key IN \
                     (SELECT key FROM screen_entries WHERE tbl = $1 AND key >= $2 AND key < $3 \
                      ORDER BY key LIMIT $4)",
                    move |stmt, client| async move {
                        client
                            .execute(&stmt, &[&id, &prefix, upper, &BATCH])
                            .await
                            .map_err(|e| cluster.statement_failed(&e))
                    },
                )
                .await
            }
            None => {
                self.batched(
                    "DELETE FROM screen_entries WHERE tbl = $1 AND key IN \
                     (SELECT key FROM screen_entries WHERE tbl = $1 AND key >= $2 \
                      ORDER BY key LIMIT $3)",
                    move |stmt, client| async move {
                        client
                            .execute(&stmt, &[&id, &prefix, &BATCH])
                            .await
                            .map_err(|e| cluster.statement_failed(&e))
                    },
                )
                .await
            }
        }
    }

    /// Removes every entry (of both tables) expired at `now`, in batches;
    /// how many. Rows another node is deleting at the same moment are
    /// skipped, not waited for.
    pub async fn sweep_entries(&self, now: u64) -> Result<u64, PgStateError> {
        let now = to_db(now);
        let cluster = &self.cluster;
        self.batched(
            "DELETE FROM screen_entries WHERE (tbl, key) IN \
             (SELECT tbl, key FROM screen_entries WHERE expires_at <= $1 \
              LIMIT $2 FOR UPDATE SKIP LOCKED)",
            move |stmt, client| async move {
                client
                    .execute(&stmt, &[&now, &BATCH])
                    .await
                    .map_err(|e| cluster.statement_failed(&e))
            },
        )
        .await
    }

    /// Runs the deleting statement `sql` (through `run`) until a batch
    /// deletes fewer than [`BATCH`] rows, each batch its own round trip;
    /// how many in all. The batches are bounded too: at most what the
    /// tables can hold, so rows added as fast as they are removed cannot
    /// keep it going for ever.
    async fn batched<F, Fut>(&self, sql: &'static str, run: F) -> Result<u64, PgStateError>
    where
        F: Fn(tokio_postgres::Statement, deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = Result<u64, ClusterError>>,
    {
        let most = (self.capacity.saturating_mul(2) / BATCH as u64).saturating_add(2);
        let mut removed = 0;
        for _ in 0..most {
            let gone = self
                .round_trip(async {
                    let client = self.cluster.client().await?;
                    let stmt = client
                        .prepare_cached(sql)
                        .await
                        .map_err(|e| self.cluster.statement_failed(&e))?;
                    run(stmt, client).await
                })
                .await?;
            removed += gone;
            if gone < BATCH as u64 {
                break;
            }
        }
        Ok(removed)
    }

    /// `op` within the timeout; a timeout is an unreachable database (the
    /// caller falls back, as for a refused connection).
    async fn round_trip<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, PgStateError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PgStateError::Database(ClusterError::Unreachable(format!(
                "no answer within {:?}",
                self.timeout
            )))),
        }
    }
}

impl ScreenStore for PgScreenStore {
    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>> {
        Box::pin(async move { Ok(self.get_entry(table, key, now).await?) })
    }

    fn put<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move { Ok(self.put_entry(table, key, entry).await?) })
    }

    fn scan_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Entries, StateError>> {
        Box::pin(async move { Ok(self.scan_entries(table, prefix, now, limit).await?) })
    }

    fn remove_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move { Ok(self.remove_entries(table, prefix).await?) })
    }

    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, StateError>> {
        Box::pin(async move { Ok(self.sweep_entries(now).await?) })
    }
}

/// The `tbl` column of `table`: fixed numbers, never the enum's order
/// (a new variant must not renumber stored rows).
fn table_id(table: Table) -> i16 {
    match table {
        Table::Greylist => 1,
        Table::Recipients => 2,
    }
}

/// `table` as logs and errors name it.
fn table_name(table: Table) -> &'static str {
    match table {
        Table::Greylist => "screen_entries (greylist)",
        Table::Recipients => "screen_entries (recipients)",
    }
}

/// The smallest byte string above every string starting with `prefix`:
/// the prefix with trailing 0xFF octets dropped and its last octet
/// incremented; `None` when there is none (empty or all 0xFF: no upper
/// bound).
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// Unix seconds (or a count) as a bigint: values past `i64::MAX` (an
/// entry that never expires) saturate.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A bigint read back as Unix seconds (a negative one is long past).
fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The `value, expires_at` columns of `row` from column `at` on.
fn stored(cluster: &Cluster, row: &tokio_postgres::Row, at: usize) -> Result<Stored, PgStateError> {
    let value: Vec<u8> = row.try_get(at).map_err(|e| cluster.statement_failed(&e))?;
    let expires: i64 = row
        .try_get(at + 1)
        .map_err(|e| cluster.statement_failed(&e))?;
    Ok(Stored {
        value,
        expires: from_db(expires),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[b'a', 0xFF, 0xFF]), Some(b"b".to_vec()));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
        assert_eq!(successor(b""), None);
        // Every key with the prefix is below it; the first key after all
        // of them is not.
        let prefix = [0x10, 0xFF];
        let upper = successor(&prefix).unwrap();
        assert!([0x10, 0xFF, 0xFF, 0xFF].as_slice() < upper.as_slice());
        assert!([0x11].as_slice() >= upper.as_slice());
    }

    #[test]
    fn numbers_saturate_into_bigint_and_back() {
        assert_eq!(to_db(u64::MAX), i64::MAX);
        assert_eq!(to_db(42), 42);
        assert_eq!(from_db(-1), 0);
        assert_eq!(from_db(42), 42);
    }

    #[test]
    fn table_ids_are_fixed() {
        assert_eq!(table_id(Table::Greylist), 1);
        assert_eq!(table_id(Table::Recipients), 2);
    }
}
