//! The on-disk store: sled, its named trees, and durable commit.
//!
//! Promise (DESIGN.md): a message is acknowledged only after it is on disk.
//! [`Store::commit`] is that point: it returns once everything written before
//! the call has been fsynced. Concurrent callers share one fsync (group
//! commit), so durability costs one disk flush per batch, not per message.
//!
//! Threat model: the disk is ours, but it can be full, slow or fail; every
//! error is returned, none is unwrapped. sled takes an exclusive lock on its
//! directory, so only the running server opens the store; the CLI reaches it
//! through the admin socket.
//!
//! Note on sled 0.34: any page (a node or a value) larger than a quarter of
//! a segment is written as a separate blob file that its `flush` does not
//! fsync. So segments are 8 MiB (blob threshold 2 MiB), and callers keep
//! each value at most [`MAX_VALUE`] (the queue splits bodies into chunks):
//! a leaf node holds at most 16 entries before it splits, so even a whole
//! node of chunks stays under the threshold and every byte lives in the log
//! that `flush` syncs. A test checks that no blob file is ever written.

#![forbid(unsafe_code)]

mod commit;
mod metrics;

use std::path::{Path, PathBuf};

pub use sled::Tree;

/// The largest value a caller should write in one key (bytes). Larger
/// values would become sled blobs, which are not covered by `flush`.
pub const MAX_VALUE: usize = 64 * 1024;

/// sled's segment size: a quarter of it is the blob threshold.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// Errors from the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store directory could not be opened (permissions, lock held by
    /// another process, corruption).
    #[error("cannot open store at {}: {reason}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// What sled said.
        reason: String,
    },
    /// A read or write failed.
    #[error("store I/O error: {0}")]
    Io(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The committer task is gone (the server is shutting down).
    #[error("store is closed")]
    Closed,
    /// A caller tried to write a value larger than [`MAX_VALUE`]: it would
    /// become a sled blob file that `flush` does not fsync. Nothing was
    /// written.
    #[error("refusing to write {len} octets as one value in {tree} (at most {max})")]
    ValueTooLarge {
        /// The tree.
        tree: &'static str,
        /// The size of the value.
        len: usize,
        /// The limit ([`MAX_VALUE`]).
        max: usize,
    },
}

/// Checks, before a write, that a value of `len` octets stays within
/// [`MAX_VALUE`] (so sled keeps it in the log that `flush` syncs, never in
/// an unsynced blob file). Every writer of values whose size depends on
/// input calls it on the code path that writes.
pub fn check_value_size(tree: TreeName, len: usize) -> Result<(), StoreError> {
    if len > MAX_VALUE {
        return Err(StoreError::ValueTooLarge {
            tree: tree.as_str(),
            len,
            max: MAX_VALUE,
        });
    }
    Ok(())
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// The named trees. Keeping the names here (not as strings scattered over
/// crates) is what lets a second backend replace this one tree by tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeName {
    /// Queue id → queue record (envelope and delivery state).
    QueueRecords,
    /// Queue id ‖ chunk number → message bytes.
    QueueBodies,
    /// Queue id ‖ generation ‖ chunk number → part of a queue record too
    /// large for one value (the record's entry in [`TreeName::QueueRecords`]
    /// then names the generation).
    QueueRecordChunks,
    /// Domain → cached MTA-STS policy (JSON, RFC 8461 §5.1).
    MtaStsPolicies,
    /// Domain → operator pin of an MTA-STS policy (JSON).
    MtaStsPins,
    /// TLS-RPT daily aggregates (RFC 8460 §4): UTC day ‖ policy domain ‖
    /// policy hash → session counts (JSON).
    TlsRptResults,
    /// TLS-RPT sending state (RFC 8460 §5): per UTC day the random send
    /// delay, per (day, policy domain) the report's destinations, attempts
    /// and whether it went out (JSON).
    TlsRptSent,
    /// TLS reports other providers sent about our domains (RFC 8460, the
    /// receiving side): `r` ‖ report id → the stored report, `t` ‖ 8-byte
    /// big-endian receipt time ‖ id → its summary (the time order that
    /// listing, expiry and eviction walk), `c` ‖ labels → failure counter,
    /// `o` ‖ organisation → a reporter with a metrics label of its own.
    TlsRptReceived,
    /// The screen's greylist (issue 14): triplet, verified-domain and
    /// domain-trust keys → 8-byte big-endian expiry (Unix seconds) ‖ the
    /// greylister's entry. Expiring; written without fsync (a lost entry
    /// costs a client one more retry, never a message).
    ScreenGreylist,
    /// The screen's cached recipient probe answers: recipient → 8-byte
    /// big-endian expiry (Unix seconds) ‖ the verifier's answer. Expiring.
    ScreenRecipients,
    /// DMARC aggregates (RFC 7489 §7.2): per (UTC day, policy domain) a
    /// header (the published policy, row and message counts) and its rows
    /// (the row's facts → message count). Written without fsync (a lost
    /// count is one message missing from a report, never a message).
    DmarcAggregate,
    /// DMARC report sending state: per UTC day the random send delay, per
    /// (day, policy domain) whether its report went out (JSON).
    DmarcSent,
}

impl TreeName {
    /// The sled tree name.
    pub fn as_str(self) -> &'static str {
        match self {
            TreeName::QueueRecords => "queue.records",
            TreeName::QueueBodies => "queue.bodies",
            TreeName::QueueRecordChunks => "queue.record_chunks",
            TreeName::MtaStsPolicies => "mta_sts.policies",
            TreeName::MtaStsPins => "mta_sts.pins",
            TreeName::TlsRptResults => "tlsrpt.results",
            TreeName::TlsRptSent => "tlsrpt.sent",
            TreeName::TlsRptReceived => "tlsrpt.received",
            TreeName::ScreenGreylist => "screen.greylist",
            TreeName::ScreenRecipients => "screen.recipients",
            TreeName::DmarcAggregate => "dmarc.aggregate",
            TreeName::DmarcSent => "dmarc.sent",
        }
    }
}

/// An open store. Cheap to clone; all clones share one database and one
/// group committer.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    committer: commit::Committer,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Must be called within a
    /// tokio runtime: it starts the group-commit task.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Page cache: 32 MiB, not sled's default 1 GiB; the queue reads
            // bodies once per delivery attempt. Measured (README,
            // Benchmark): this does not bound what a burst of writes keeps
            // in memory; sled holds the written values until their nodes
            // are paged out.
            .cache_capacity(32 * 1024 * 1024)
            // We fsync explicitly at acknowledgement points; sled's own timer
            // stays on as a backstop for everything else.
            .flush_every_ms(Some(1000))
            .segment_size(SEGMENT_SIZE)
            .open()
            .map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            committer: commit::Committer::start(db.clone()),
            db,
            path: dir.to_path_buf(),
        })
    }

    /// Opens the store in `dir` like [`Store::open`], waiting up to
    /// `patience` for earlier handles in this process to let go of sled's
    /// lock on the directory: a dropped store is released only once its
    /// committer task has ended, which a busy runtime may delay (tests
    /// that reopen a store in the same process).
    pub async fn open_when_released(
        dir: &Path,
        patience: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Store::open(dir) {
                Ok(store) => return Ok(store),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A named tree.
    pub fn tree(&self, name: TreeName) -> Result<Tree, StoreError> {
        Ok(self.db.open_tree(name.as_str())?)
    }

    /// Returns once everything written before this call is on disk. Calls
    /// that arrive while a flush is running share the next one.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.committer.commit().await
    }

    /// Flushes synchronously (shutdown path).
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// How many fsyncs the group committer has done (for metrics and tests
    /// of batching).
    pub fn commits_done(&self) -> u64 {
        self.committer.flushes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_makes_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let t = store.tree(TreeName::QueueRecords).unwrap();
            t.insert(b"k", b"v".to_vec()).unwrap();
            store.commit().await.unwrap();
        }
        // sled's lock is released once every handle is dropped.
        let store = Store::open_when_released(dir.path(), std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let t = store.tree(TreeName::QueueRecords).unwrap();
        assert_eq!(t.get(b"k").unwrap().unwrap().as_ref(), b"v");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.tree(TreeName::QueueBodies).unwrap();
        let before = store.commits_done();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let store = store.clone();
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.insert(i.to_be_bytes(), vec![0u8; 1024]).unwrap();
                store.commit().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = store.commits_done() - before;
        assert!(flushes >= 1);
        assert!(
            flushes < 200,
            "200 concurrent commits took {flushes} flushes: no grouping"
        );
    }

    /// Regression test: with sled's default 512 KiB segments, 100 KiB
    /// messages were written as blob files that `flush` never fsyncs, so a
    /// 250 could precede durability.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_values_never_become_unsynced_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.tree(TreeName::QueueBodies).unwrap();
        for i in 0u32..200 {
            t.insert(i.to_be_bytes(), vec![i as u8; MAX_VALUE]).unwrap();
            store.commit().await.unwrap();
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled wrote blob files");
    }

    #[test]
    fn value_size_check_refuses_only_values_over_the_limit() {
        assert!(check_value_size(TreeName::QueueRecords, MAX_VALUE).is_ok());
        match check_value_size(TreeName::QueueRecords, MAX_VALUE + 1) {
            Err(StoreError::ValueTooLarge { tree, len, max }) => {
                assert_eq!(
                    (tree, len, max),
                    ("queue.records", MAX_VALUE + 1, MAX_VALUE)
                );
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn second_open_of_a_locked_store_is_a_clear_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _guard = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Open { path, .. }) => assert_eq!(path, dir.path()),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("opened a locked store twice"),
        }
    }
}
