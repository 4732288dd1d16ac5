//! The screen's durable, expiring state behind a narrow interface: the
//! greylist entries and the cached probe answers. One implementation on the
//! server's sled store ([`SledScreenStore`]); a shared backend (cluster
//! mode) implements the same trait.

use crate::BoxFuture;

/// Which kind of state an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Greylist entries (triplets, verified-domain pairs, domain trust).
    Greylist,
    /// Cached answers of recipient probes.
    Recipients,
}

/// One stored entry: its value and when it stops counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The caller's bytes.
    pub value: Vec<u8>,
    /// Unix seconds after which the entry is gone (readers ignore it, a
    /// sweep removes it).
    pub expires: u64,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("screen state: {0}")]
pub struct StateError(pub String);

/// The screen's state store. Keys are the caller's bytes; an expired entry
/// is never returned by [`ScreenStore::get`] or [`ScreenStore::scan_prefix`]
/// (`now` is the caller's clock, in Unix seconds).
pub trait ScreenStore: Send + Sync + 'static {
    /// The entry under `key`, unless absent or expired at `now`.
    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>>;
    /// Writes (replaces) the entry under `key`.
    fn put<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>>;
    /// Every live entry whose key starts with `prefix`, in key order, at
    /// most `limit` of them.
    fn scan_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(Vec<u8>, Stored)>, StateError>>;
    /// Removes every entry whose key starts with `prefix`; how many.
    fn remove_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>>;
    /// Removes every entry expired at `now`; how many.
    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, StateError>>;
}

/// [`ScreenStore`] on the server's sled store (trees `screen.greylist` and
/// `screen.recipients`). Writes are not fsynced one by one: losing the
/// last seconds of greylist state in a crash costs a client one more
/// retry, never a message.
#[derive(Clone)]
pub struct SledScreenStore {
    // Filled in by the implementation.
}

// PLACEHOLDER (branch wt-inbound, so the binary can be wired): the core
// branch's `SledScreenStore` replaces this block; the binary calls
// `SledScreenStore::open(&store)`.
impl SledScreenStore {
    /// The screen's trees in the server's `store`.
    pub fn open(store: &portcullis_store::Store) -> Result<SledScreenStore, StateError> {
        let _ = store;
        Ok(SledScreenStore {})
    }
}

impl ScreenStore for SledScreenStore {
    fn get<'a>(
        &'a self,
        _table: Table,
        _key: &'a [u8],
        _now: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>> {
        Box::pin(async { Ok(None) })
    }
    fn put<'a>(
        &'a self,
        _table: Table,
        _key: &'a [u8],
        _entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async { Ok(()) })
    }
    fn scan_prefix<'a>(
        &'a self,
        _table: Table,
        _prefix: &'a [u8],
        _now: u64,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(Vec<u8>, Stored)>, StateError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn remove_prefix<'a>(
        &'a self,
        _table: Table,
        _prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async { Ok(0) })
    }
    fn sweep(&self, _now: u64) -> BoxFuture<'_, Result<u64, StateError>> {
        Box::pin(async { Ok(0) })
    }
}
