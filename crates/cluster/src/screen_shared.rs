//! The screen's state in cluster mode: [`SharedScreenStore`] answers from
//! the cluster's database ([`PgScreenStore`]) and, when the database
//! cannot answer, from the node's own store (the sled one a single node
//! uses), so acceptance never waits on a dead database longer than the
//! operation timeout and greylisting keeps running.
//!
//! What is and is not reconciled when the database returns: nothing is
//! copied either way. Entries written locally during an outage stay in
//! the local store and are not consulted while the database answers; the
//! shared entries the outage hid count again. The cost is in the safe
//! direction only: a sender greylisted locally during the outage may be
//! greylisted once more afterwards, and a recipient answer cached locally
//! is probed once more; nothing that protects is relaxed. An operator's
//! clear removes the key from both, so an entry cleared does not come
//! back in a later outage.
//!
//! Recipient answers are also kept in memory for at most [`NEAR_AGE`]
//! ([`NearCache`]): the same recipient is asked at every RCPT, and one
//! database round trip per recipient would put the database on the
//! per-message path (measured: the relay rate fell by a third on one
//! machine). The cost is bounded staleness: an answer another node's
//! `screen clear` removed may still be used here for up to [`NEAR_AGE`],
//! never past the entry's own expiry. Greylist entries change with each
//! retry and are always read from the database.

use crate::rest::Rest;
use crate::screen::{PgScreenStore, PgStateError};
use crate::{Cluster, ClusterError};
use portcullis_screen::BoxFuture;
use portcullis_screen::state::{Entries, ScreenStore, StateError, Stored, Table};
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::debug;

/// The name the fall-backs are counted under
/// (`portcullis_cluster_fallbacks_total{store="screen"}`).
const STORE: &str = "screen";

pub use crate::rest::RETRY_AFTER;

/// How long a recipient answer read from the database is used from memory
/// before the database is asked again.
pub const NEAR_AGE: Duration = Duration::from_secs(30);

/// Recipient answers kept in memory at most: a bound on what clients that
/// make up recipients can make this node hold (each entry is one key and
/// one small value).
pub const NEAR_CAPACITY: usize = 16_384;

/// The in-memory recipient answers: key → (entry, when read). Bounded by
/// [`NEAR_CAPACITY`]; full, it drops what is stale, and if that is not
/// enough, everything (a refill costs one round trip per recipient).
#[derive(Default)]
pub struct NearCache {
    entries: Mutex<std::collections::HashMap<Vec<u8>, (Stored, Instant)>>,
}

impl NearCache {
    /// The entry under `key` if it was read less than [`NEAR_AGE`] ago and
    /// is live at `now` (Unix seconds).
    fn get(&self, key: &[u8], now: u64) -> Option<Stored> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(entry, at)| at.elapsed() < NEAR_AGE && now < entry.expires)
            .map(|(entry, _)| entry.clone())
    }

    /// Keeps `entry` under `key` from now.
    fn put(&self, key: &[u8], entry: Stored) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= NEAR_CAPACITY && !map.contains_key(key) {
            map.retain(|_, (_, at)| at.elapsed() < NEAR_AGE);
            if map.len() >= NEAR_CAPACITY {
                map.clear();
            }
        }
        map.insert(key.to_vec(), (entry, Instant::now()));
    }

    /// Forgets every key starting with `prefix`.
    fn remove_prefix(&self, prefix: &[u8]) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| !k.starts_with(prefix));
    }
}

/// [`ScreenStore`] of a node in a cluster: the shared database first, the
/// node's `local` store when it cannot answer (unreachable, timed out, a
/// statement failed). A write the database refuses because its table is
/// full or the entry too large is not retried locally: the bound is the
/// cluster's, and the screen goes on without the state as it always does.
pub struct SharedScreenStore {
    shared: PgScreenStore,
    local: Arc<dyn ScreenStore>,
    cluster: Cluster,
    /// Until when the database is not tried (after a failure).
    rest: Rest,
    /// Recipient answers read recently (never greylist entries).
    near: NearCache,
}

impl SharedScreenStore {
    /// The state in `shared` (the cluster's database), falling back to
    /// `local`; fall-backs are counted on `cluster`.
    pub fn new(
        shared: PgScreenStore,
        local: Arc<dyn ScreenStore>,
        cluster: Cluster,
    ) -> SharedScreenStore {
        SharedScreenStore {
            shared,
            local,
            cluster,
            rest: Rest::new(STORE),
            near: NearCache::default(),
        }
    }

    /// The same store, resting `retry_after` (instead of [`RETRY_AFTER`])
    /// after a failure before trying the database again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> SharedScreenStore {
        self.rest = self.rest.with_after(retry_after);
        self
    }

    /// True while the store answers locally without trying the database.
    fn resting(&self) -> bool {
        self.rest.resting()
    }

    /// The database failed with `error`: count it, rest a while.
    fn failed(&self, error: &ClusterError) {
        self.rest.failed(&self.cluster, error);
    }

    /// `shared`'s answer, or `local`'s when the database cannot give one.
    /// Neither future runs unless its answer is wanted.
    async fn either<T>(
        &self,
        shared: impl Future<Output = Result<T, PgStateError>>,
        local: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        if self.resting() {
            self.cluster.fell_back(
                STORE,
                &ClusterError::Unreachable("failed recently; answering locally".into()),
            );
            return local.await;
        }
        match shared.await {
            Ok(answer) => Ok(answer),
            Err(PgStateError::Refused(why)) => Err(StateError(why)),
            Err(PgStateError::Database(e)) => {
                self.failed(&e);
                local.await
            }
        }
    }
}

impl ScreenStore for SharedScreenStore {
    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>> {
        Box::pin(async move {
            let near = table == Table::Recipients;
            if near && let Some(entry) = self.near.get(key, now) {
                return Ok(Some(entry));
            }
            let found = self
                .either(
                    self.shared.get_entry(table, key, now),
                    self.local.get(table, key, now),
                )
                .await?;
            if near && let Some(entry) = &found {
                self.near.put(key, entry.clone());
            }
            Ok(found)
        })
    }

    fn put<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            if table == Table::Recipients {
                self.near.put(key, entry.clone());
            }
            self.either(
                self.shared.put_entry(table, key, entry.clone()),
                self.local.put(table, key, entry),
            )
            .await
        })
    }

    fn scan_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Entries, StateError>> {
        Box::pin(self.either(
            self.shared.scan_entries(table, prefix, now, limit),
            self.local.scan_prefix(table, prefix, now, limit),
        ))
    }

    fn remove_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            // Both: an entry written locally during an outage must not
            // come back in the next one after the operator cleared it.
            if table == Table::Recipients {
                self.near.remove_prefix(prefix);
            }
            let local = self.local.remove_prefix(table, prefix).await;
            if self.resting() {
                return local;
            }
            match self.shared.remove_entries(table, prefix).await {
                Ok(n) => Ok(n),
                Err(PgStateError::Refused(why)) => Err(StateError(why)),
                Err(PgStateError::Database(e)) => {
                    self.failed(&e);
                    local
                }
            }
        })
    }

    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, StateError>> {
        Box::pin(async move {
            // The local store is swept whatever the database does: it
            // holds what outages wrote, and must stay small.
            let local = self.local.sweep(now).await?;
            if self.resting() {
                return Ok(local);
            }
            match self.shared.sweep_entries(now).await {
                Ok(n) => Ok(local + n),
                Err(e) => {
                    // Not a fall-back (nothing was asked of the state):
                    // the next sweep, on this node or another, does it.
                    debug!(error = %e, "shared screen state not swept");
                    Ok(local)
                }
            }
        })
    }
}
