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

/// How long after the database failed to answer the store goes straight
/// to the local state without trying it: a database that swallows packets
/// would otherwise cost every RCPT the whole timeout.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

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
    resting_until: Mutex<Option<Instant>>,
    retry_after: Duration,
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
            resting_until: Mutex::new(None),
            retry_after: RETRY_AFTER,
        }
    }

    /// The same store, resting `retry_after` (instead of [`RETRY_AFTER`])
    /// after a failure before trying the database again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> SharedScreenStore {
        self.retry_after = retry_after;
        self
    }

    /// True while the store answers locally without trying the database.
    fn resting(&self) -> bool {
        let mut until = self
            .resting_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// The database failed with `error`: count it, rest a while.
    fn failed(&self, error: &ClusterError) {
        self.cluster.fell_back(STORE, error);
        let mut until = self
            .resting_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *until = Some(Instant::now() + self.retry_after);
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
        Box::pin(self.either(
            self.shared.get_entry(table, key, now),
            self.local.get(table, key, now),
        ))
    }

    fn put<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
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
