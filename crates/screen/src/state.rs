//! The screen's durable, expiring state behind a narrow interface: the
//! greylist entries and the cached probe answers. One implementation on the
//! server's sled store ([`SledScreenStore`]); a shared backend (cluster
//! mode) implements the same trait.

use crate::BoxFuture;
use portcullis_store::{Store, StoreError, TreeName};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Entries with their keys, in key order (what [`ScreenStore::scan_prefix`]
/// returns).
pub type Entries = Vec<(Vec<u8>, Stored)>;

/// How many entries one table holds at most by default: a client that
/// makes up senders and recipients (each a new greylist triplet or a
/// cached "user unknown") fills at most this much of the disk, about
/// 100-200 MB, whatever it sends.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;

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
    /// Writes (replaces) the entry under `key`. A new key is refused
    /// (an error) when the table is at its capacity: callers then go on
    /// without the state (the screen lets the mail through).
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
    ) -> BoxFuture<'a, Result<Entries, StateError>>;
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
///
/// Each value is stored as its 8-byte big-endian expiry (Unix seconds)
/// followed by the caller's bytes. An entry is live while `now < expires`.
/// A value too short to hold the expiry is corrupt: reads report it, a
/// sweep removes it.
///
/// Each table holds at most its capacity of entries ([`DEFAULT_CAPACITY`]
/// unless [`SledScreenStore::with_capacity`]): the count is taken at open,
/// kept as keys come and go, and a new key past it is refused.
#[derive(Clone)]
pub struct SledScreenStore {
    greylist: portcullis_store::Tree,
    recipients: portcullis_store::Tree,
    counts: Arc<[AtomicU64; 2]>,
    capacity: u64,
}

/// The length of the expiry that heads every stored value.
const EXPIRY_LEN: usize = 8;

impl SledScreenStore {
    /// The screen's state in `store`'s trees `screen.greylist` and
    /// `screen.recipients` (opened, created if absent).
    pub fn new(store: &Store) -> Result<SledScreenStore, StoreError> {
        let greylist = store.tree(TreeName::ScreenGreylist)?;
        let recipients = store.tree(TreeName::ScreenRecipients)?;
        // One walk of each tree at open (sled's `len` counts).
        let counts = [greylist.len() as u64, recipients.len() as u64].map(AtomicU64::new);
        Ok(SledScreenStore {
            greylist,
            recipients,
            counts: Arc::new(counts),
            capacity: DEFAULT_CAPACITY,
        })
    }

    /// The same store, each table holding at most `capacity` entries.
    pub fn with_capacity(mut self, capacity: u64) -> SledScreenStore {
        self.capacity = capacity;
        self
    }

    /// The entries `table` holds now (expired ones until a sweep removes
    /// them).
    pub fn len(&self, table: Table) -> u64 {
        self.count(table).load(Ordering::Relaxed)
    }

    /// True when `table` holds nothing.
    pub fn is_empty(&self, table: Table) -> bool {
        self.len(table) == 0
    }

    fn tree(&self, table: Table) -> (&portcullis_store::Tree, TreeName) {
        match table {
            Table::Greylist => (&self.greylist, TreeName::ScreenGreylist),
            Table::Recipients => (&self.recipients, TreeName::ScreenRecipients),
        }
    }

    fn count(&self, table: Table) -> &AtomicU64 {
        &self.counts[table as usize]
    }

    /// Refuses a new key of `table` at its capacity (an existing key may
    /// always be rewritten). A race between two new keys may pass the
    /// capacity by the number of concurrent writers: a bound, not a count.
    fn admit(
        &self,
        table: Table,
        tree: &portcullis_store::Tree,
        key: &[u8],
    ) -> Result<(), StateError> {
        if self.len(table) < self.capacity || tree.contains_key(key).map_err(io)? {
            return Ok(());
        }
        Err(StateError(format!(
            "{} is full ({} entries); not recorded",
            self.tree(table).1.as_str(),
            self.capacity
        )))
    }
}

/// `expires ‖ value`, refused when over the store's value limit (a sled
/// blob would escape `flush`).
fn encode(tree: TreeName, entry: &Stored) -> Result<Vec<u8>, StateError> {
    let len = EXPIRY_LEN + entry.value.len();
    portcullis_store::check_value_size(tree, len).map_err(|e| StateError(e.to_string()))?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&entry.expires.to_be_bytes());
    out.extend_from_slice(&entry.value);
    Ok(out)
}

/// The expiry heading a stored value; `None` when the value is too short.
fn expiry_of(raw: &[u8]) -> Option<u64> {
    let head: [u8; EXPIRY_LEN] = raw.get(..EXPIRY_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// The entry in `raw`, `None` when expired at `now`.
fn decode(tree: TreeName, key: &[u8], raw: &[u8], now: u64) -> Result<Option<Stored>, StateError> {
    let expires = expiry_of(raw).ok_or_else(|| {
        StateError(format!(
            "corrupt entry in {}: {} octets under key {}",
            tree.as_str(),
            raw.len(),
            String::from_utf8_lossy(key)
        ))
    })?;
    if now >= expires {
        return Ok(None);
    }
    Ok(Some(Stored {
        value: raw[EXPIRY_LEN..].to_vec(),
        expires,
    }))
}

/// A store failure, as the screen reports it.
fn io(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

impl ScreenStore for SledScreenStore {
    fn get<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        now: u64,
    ) -> BoxFuture<'a, Result<Option<Stored>, StateError>> {
        Box::pin(async move {
            let (tree, name) = self.tree(table);
            match tree.get(key).map_err(io)? {
                Some(raw) => decode(name, key, &raw, now),
                None => Ok(None),
            }
        })
    }

    fn put<'a>(
        &'a self,
        table: Table,
        key: &'a [u8],
        entry: Stored,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let (tree, name) = self.tree(table);
            portcullis_store::check_value_size(name, key.len())
                .map_err(|e| StateError(e.to_string()))?;
            self.admit(table, tree, key)?;
            if tree
                .insert(key, encode(name, &entry)?)
                .map_err(io)?
                .is_none()
            {
                self.count(table).fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    fn scan_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
        now: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Entries, StateError>> {
        Box::pin(async move {
            let (tree, name) = self.tree(table);
            let mut out = Vec::new();
            for item in tree.scan_prefix(prefix) {
                if out.len() >= limit {
                    break;
                }
                let (key, raw) = item.map_err(io)?;
                if let Some(entry) = decode(name, &key, &raw, now)? {
                    out.push((key.to_vec(), entry));
                }
            }
            Ok(out)
        })
    }

    fn remove_prefix<'a>(
        &'a self,
        table: Table,
        prefix: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            let (tree, _) = self.tree(table);
            let mut removed = 0;
            for key in tree.scan_prefix(prefix).keys() {
                if tree.remove(key.map_err(io)?).map_err(io)?.is_some() {
                    removed += 1;
                }
            }
            self.forget(table, removed);
            Ok(removed)
        })
    }

    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, StateError>> {
        let this = self.clone();
        Box::pin(async move {
            // A whole-tree walk: off the runtime's worker threads.
            tokio::task::spawn_blocking(move || {
                let mut removed = 0;
                for table in [Table::Greylist, Table::Recipients] {
                    let gone = sweep_tree(this.tree(table).0, now)?;
                    this.forget(table, gone);
                    removed += gone;
                }
                Ok(removed)
            })
            .await
            .map_err(|e| StateError(format!("sweep task: {e}")))?
        })
    }
}

impl SledScreenStore {
    /// `n` entries of `table` are gone.
    fn forget(&self, table: Table, n: u64) {
        let count = self.count(table);
        let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(n))
        });
    }
}

/// Removes the entries of `tree` expired at `now`, and corrupt ones (which
/// no reader can use). An entry rewritten since it was read is kept: the
/// removal is a compare-and-swap on the value read.
fn sweep_tree(tree: &portcullis_store::Tree, now: u64) -> Result<u64, StateError> {
    let mut removed = 0;
    for item in tree.iter() {
        let (key, raw) = item.map_err(io)?;
        let dead = expiry_of(&raw).is_none_or(|expires| now >= expires);
        if dead
            && tree
                .compare_and_swap(&key, Some(&raw), None as Option<&[u8]>)
                .map_err(io)?
                .is_ok()
        {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8], expires: u64) -> Stored {
        Stored {
            value: value.to_vec(),
            expires,
        }
    }

    async fn open() -> (tempfile::TempDir, Store, SledScreenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let screen = SledScreenStore::new(&store).unwrap();
        (dir, store, screen)
    }

    #[tokio::test]
    async fn get_returns_a_live_entry_and_ignores_it_once_expired() {
        let (_dir, _store, s) = open().await;
        s.put(Table::Greylist, b"k", entry(b"v", 100))
            .await
            .unwrap();
        assert_eq!(
            s.get(Table::Greylist, b"k", 99).await.unwrap(),
            Some(entry(b"v", 100))
        );
        assert_eq!(s.get(Table::Greylist, b"k", 100).await.unwrap(), None);
        // The tables are apart: the same key in the other one is absent.
        assert_eq!(s.get(Table::Recipients, b"k", 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn scan_prefix_lists_live_entries_in_key_order_up_to_the_limit() {
        let (_dir, _store, s) = open().await;
        for (k, exp) in [
            (&b"a3"[..], 50),
            (b"a1", 50),
            (b"a2", 10),
            (b"a4", 50),
            (b"b1", 50),
        ] {
            s.put(Table::Greylist, k, entry(k, exp)).await.unwrap();
        }
        let keys = |v: Vec<(Vec<u8>, Stored)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let all = s.scan_prefix(Table::Greylist, b"a", 20, 100).await.unwrap();
        assert_eq!(
            keys(all),
            vec![b"a1".to_vec(), b"a3".to_vec(), b"a4".to_vec()]
        );
        let two = s.scan_prefix(Table::Greylist, b"a", 20, 2).await.unwrap();
        assert_eq!(keys(two), vec![b"a1".to_vec(), b"a3".to_vec()]);
    }

    #[tokio::test]
    async fn remove_prefix_removes_only_that_prefix() {
        let (_dir, _store, s) = open().await;
        for k in [&b"x1"[..], b"x2", b"y1"] {
            s.put(Table::Recipients, k, entry(b"", 50)).await.unwrap();
        }
        assert_eq!(s.remove_prefix(Table::Recipients, b"x").await.unwrap(), 2);
        assert_eq!(s.get(Table::Recipients, b"x1", 0).await.unwrap(), None);
        assert!(s.get(Table::Recipients, b"y1", 0).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn sweep_removes_expired_and_corrupt_entries_of_both_tables() {
        let (_dir, store, s) = open().await;
        s.put(Table::Greylist, b"old", entry(b"", 10))
            .await
            .unwrap();
        s.put(Table::Greylist, b"new", entry(b"", 30))
            .await
            .unwrap();
        s.put(Table::Recipients, b"old", entry(b"", 20))
            .await
            .unwrap();
        store
            .tree(TreeName::ScreenGreylist)
            .unwrap()
            .insert(b"short", &b"abc"[..])
            .unwrap();
        assert!(s.get(Table::Greylist, b"short", 0).await.is_err());
        assert_eq!(s.sweep(20).await.unwrap(), 3);
        assert!(s.get(Table::Greylist, b"new", 20).await.unwrap().is_some());
        assert_eq!(store.tree(TreeName::ScreenGreylist).unwrap().len(), 1);
        assert_eq!(store.tree(TreeName::ScreenRecipients).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn values_over_the_store_limit_are_refused() {
        let (_dir, _store, s) = open().await;
        let big = vec![0u8; portcullis_store::MAX_VALUE];
        assert!(s.put(Table::Greylist, b"k", entry(&big, 10)).await.is_err());
        assert_eq!(s.get(Table::Greylist, b"k", 0).await.unwrap(), None);
    }

    /// A table at its capacity refuses new keys but takes rewrites; a
    /// sweep or a removal makes room; the count survives a reopen. One
    /// table full leaves the other alone.
    #[tokio::test]
    async fn a_table_holds_at_most_its_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = SledScreenStore::new(&store).unwrap().with_capacity(3);
        for (k, expires) in [(b"a", 10), (b"b", 100), (b"c", 100)] {
            s.put(Table::Greylist, k, entry(b"v", expires))
                .await
                .unwrap();
        }
        let full = s.put(Table::Greylist, b"d", entry(b"v", 100)).await;
        assert!(full.unwrap_err().to_string().contains("full"));
        assert_eq!(s.get(Table::Greylist, b"d", 0).await.unwrap(), None);
        s.put(Table::Greylist, b"b", entry(b"w", 200))
            .await
            .unwrap();
        s.put(Table::Recipients, b"x", entry(b"v", 100))
            .await
            .unwrap();
        assert_eq!((s.len(Table::Greylist), s.len(Table::Recipients)), (3, 1));
        // "a" expires at 10: the sweep at 50 makes room for one.
        assert_eq!(s.sweep(50).await.unwrap(), 1);
        s.put(Table::Greylist, b"d", entry(b"v", 100))
            .await
            .unwrap();
        assert!(
            s.put(Table::Greylist, b"e", entry(b"v", 100))
                .await
                .is_err()
        );
        assert_eq!(s.remove_prefix(Table::Greylist, b"d").await.unwrap(), 1);
        s.put(Table::Greylist, b"e", entry(b"v", 100))
            .await
            .unwrap();
        drop(s);
        let again = SledScreenStore::new(&store).unwrap().with_capacity(3);
        assert_eq!(again.len(Table::Greylist), 3);
        assert!(
            again
                .put(Table::Greylist, b"f", entry(b"v", 100))
                .await
                .is_err()
        );
    }
}
