//! Message data written while it arrives, before the 250.
//!
//! A large message is not held in memory until the end of its data: the
//! inbound session appends everything after the header section to a
//! [`Spool`], which writes it to the message's own file (see `files`) in
//! blocks of [`MAX_VALUE`] octets, without an fsync. [`Spool::commit`] then
//! makes the file durable (fsync of the file and of its directory entry),
//! writes what goes before those octets (our trace headers and the header
//! section) to the store, writes the record and waits for the store's
//! fsync: only then may the 250 be sent (RFC 5321 §6.1; DESIGN.md, durable
//! acceptance). The record adopts the file where it is; nothing is copied.
//!
//! A spool that is dropped without a commit (the message was refused, the
//! client went away, the server is stopping) removes its file. A crash
//! leaves a file without a record, which [`crate::Queue::open`] sweeps: no
//! record, no 250, nothing lost that was acknowledged.
//!
//! The writes are plain `write(2)` calls into the page cache from the
//! session's task: the kernel's dirty-page throttling, not our memory,
//! absorbs a flood of large messages.

use crate::{Queue, QueueError};
use portcullis_store::{MAX_VALUE, StoreError};
use portcullis_types::{Envelope, QueueId};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

/// The data of one message being received, written to its file as it
/// arrives. Holds at most one partial block ([`MAX_VALUE`] octets) in
/// memory. Dropping it without [`Spool::commit`] removes what it wrote.
pub struct Spool {
    queue: Queue,
    id: QueueId,
    file: File,
    /// Blocks written so far.
    blocks: u32,
    /// Octets appended so far (written or pending).
    len: u64,
    /// The partial block not yet written; its capacity never exceeds
    /// [`MAX_VALUE`].
    pending: Vec<u8>,
    /// Set once the record adopted the file (nothing to remove), or when
    /// removing it failed (the id stays reserved: never reused).
    settled: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("id", &self.id)
            .field("blocks", &self.blocks)
            .field("len", &self.len)
            .finish()
    }
}

impl Queue {
    /// Starts spooling the data of a message that will be queued as `id`.
    /// The id is reserved until the spool is committed or dropped:
    /// [`QueueError::Exists`] when it is already in use (the caller draws
    /// another).
    pub fn spool(&self, id: QueueId) -> Result<Spool, QueueError> {
        self.reserve(id)?;
        let file = match self.files.create(id) {
            Ok(file) => file,
            Err(e) => {
                self.release(id, None);
                return Err(e);
            }
        };
        Ok(Spool {
            queue: self.clone(),
            id,
            file,
            blocks: 0,
            len: 0,
            pending: Vec::new(),
            settled: false,
        })
    }
}

fn write_error(id: QueueId, e: std::io::Error) -> QueueError {
    QueueError::Store(StoreError::Io(format!(
        "writing the file of message {id}: {e}"
    )))
}

impl Spool {
    /// The queue id the message will have.
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Octets appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Octets of memory the spool holds (its partial block's buffer): at
    /// most [`MAX_VALUE`].
    pub fn held(&self) -> usize {
        self.pending.capacity()
    }

    /// Blocks written to the file so far.
    pub fn blocks_written(&self) -> u32 {
        self.blocks
    }

    /// Appends `data`, writing every full block to the file (not synced:
    /// the commit's fsync covers it).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), QueueError> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= MAX_VALUE {
                // A whole block straight from the caller: no copy.
                let (block, rest) = data.split_at(MAX_VALUE);
                self.put(block)?;
                data = rest;
                continue;
            }
            if self.pending.capacity() == 0 {
                self.pending = Vec::with_capacity(MAX_VALUE);
            }
            let take = (MAX_VALUE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == MAX_VALUE {
                let block = std::mem::take(&mut self.pending);
                let put = self.put(&block);
                // Keep the allocation for the next block.
                self.pending = block;
                self.pending.clear();
                put?;
            }
        }
        Ok(())
    }

    /// Writes the partial block, if any, and frees its buffer.
    fn flush(&mut self) -> Result<(), QueueError> {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.put(&block)?;
        }
        self.pending = Vec::new();
        Ok(())
    }

    fn put(&mut self, block: &[u8]) -> Result<(), QueueError> {
        self.file
            .write_all(block)
            .map_err(|e| write_error(self.id, e))?;
        self.blocks += 1;
        Ok(())
    }

    /// Appends every spooled octet to `out` (for the verifier and the DKIM
    /// signer, which need the message in one piece). The partial block is
    /// written first, so the spool holds no memory afterwards.
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> Result<(), QueueError> {
        self.flush()?;
        let start = out.len();
        let len = usize::try_from(self.len).map_err(|_| self.missing(0))?;
        out.resize(start + len, 0);
        self.file.read_exact_at(&mut out[start..], 0).map_err(|e| {
            out.truncate(start);
            QueueError::Store(StoreError::Io(format!(
                "reading back the file of message {}: {e}",
                self.id
            )))
        })
    }

    fn missing(&self, found: u64) -> QueueError {
        QueueError::BodyMissing {
            id: self.id,
            found,
            expected: self.len,
        }
    }

    /// Queues the message: `prefix` (our headers, then the header section
    /// and whatever else preceded the spooled octets) goes in front of the
    /// spooled data, then the record of `envelope` (whose id must be this
    /// spool's) is written and fsynced, the file having been fsynced
    /// first. Returns after the fsync; only then may the caller say 250.
    /// On an error nothing is queued and the file is removed.
    pub async fn commit(mut self, envelope: Envelope, prefix: &[&[u8]]) -> Result<(), QueueError> {
        if envelope.id != self.id {
            return Err(QueueError::Store(StoreError::Io(format!(
                "spool {} committed as message {}",
                self.id, envelope.id
            ))));
        }
        self.flush()?;
        self.sync().await?;
        let queue = self.queue.clone();
        let result = queue.write_new(envelope, prefix, Some(self.len)).await;
        match &result {
            Ok(record) => {
                self.settled = true;
                queue.release(self.id, Some(record));
                queue.kick.notify_one();
            }
            Err(_) => {
                // A failed fsync comes after the record was written: the
                // record owns the file now (it is indexed at the next
                // open, as after any failed commit), so it must stay.
                let key = self.id.to_bytes();
                if queue.records.heads.contains_key(key).unwrap_or(true) {
                    self.settled = true;
                    queue.release(self.id, None);
                }
            }
        }
        result.map(|_| ())
    }

    /// Makes the file and its name durable, on the blocking pool.
    async fn sync(&self) -> Result<(), QueueError> {
        let file = self.file.try_clone().map_err(|e| write_error(self.id, e))?;
        let files = self.queue.files.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            files.sync_dir()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| write_error(self.id, e))
    }

    /// Removes the file (the message was not queued).
    fn discard(&mut self) -> Result<(), QueueError> {
        self.queue.files.remove(self.id)
    }
}

#[cfg(test)]
impl Spool {
    /// What kill -9 does to a spool: it goes away without cleaning up.
    fn crash(mut self) {
        self.settled = true;
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        match self.discard() {
            Ok(()) => self.queue.release(self.id, None),
            Err(e) => {
                // The id stays reserved, so no later message can adopt
                // these chunks; the sweep at the next open removes them.
                tracing::error!(queue_id = %self.id, error = %e, "could not remove the spooled data of a message that was not queued");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::envelope;
    use portcullis_store::Store;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    use portcullis_store::TreeName;

    fn chunk_count(store: &Store, id: QueueId) -> usize {
        let bodies = store.tree(TreeName::QueueBodies).unwrap();
        bodies.scan_prefix(id.to_bytes()).count()
    }

    /// The length of the message file of `id`, if there is one.
    fn file_len(store: &Store, id: QueueId) -> Option<u64> {
        let path = store
            .path()
            .join(crate::files::DIR_NAME)
            .join(id.to_string());
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    /// The committed message is the prefix then the spooled octets, byte
    /// for byte, whatever the sizes of the writes and of the prefix parts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_spool_is_prefix_then_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let body = data(3 * MAX_VALUE + 1234);
        let big_header = data(MAX_VALUE + 7);
        let mut ids = Vec::new();
        for (n, writes, prefix) in [
            (
                1u64,
                vec![body.len()],
                vec![&b"Received: x\r\n"[..], b"H: v\r\n\r\n"],
            ),
            (
                2,
                vec![1, 5, MAX_VALUE, 17, usize::MAX],
                vec![&big_header[..], b""],
            ),
            (3, vec![usize::MAX], vec![]),
        ] {
            let e = envelope(n);
            ids.push(e.id);
            let mut spool = q.spool(e.id).unwrap();
            let mut rest = &body[..];
            for w in writes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (a, b) = rest.split_at((*w).min(rest.len()));
                spool.write(a).unwrap();
                assert!(spool.held() <= MAX_VALUE, "{}", spool.held());
                rest = b;
            }
            assert_eq!(spool.len(), body.len() as u64);
            let mut read = Vec::new();
            spool.read_into(&mut read).unwrap();
            assert_eq!(read, body, "read back before the commit");
            spool.commit(e.clone(), &prefix).await.unwrap();
            let mut want = prefix.concat();
            want.extend_from_slice(&body);
            assert_eq!(q.message(e.id).unwrap(), want, "message {n}");
            assert_eq!(q.get(e.id).unwrap().body_len, Some(want.len() as u64));
        }
        assert_eq!(q.len(), 3);
        // The spooled octets are in the file, never in the store: the
        // store holds only the prefix (two chunks for the big header).
        assert_eq!(file_len(&store, ids[1]), Some(body.len() as u64));
        assert_eq!(chunk_count(&store, ids[1]), 2);
        assert_eq!(chunk_count(&store, ids[2]), 0);
        // Removal takes the prefix chunks and the file.
        q.remove(ids[1]).await.unwrap();
        assert_eq!(chunk_count(&store, ids[1]), 0);
        assert_eq!(file_len(&store, ids[1]), None);
    }

    /// A refused or abandoned message leaves no file behind, and its id is
    /// free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_spool_leaves_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let e = envelope(1);
        let mut spool = q.spool(e.id).unwrap();
        spool.write(&data(5 * MAX_VALUE + 3)).unwrap();
        assert_eq!(spool.blocks_written(), 5);
        assert_eq!(file_len(&store, e.id), Some(5 * MAX_VALUE as u64));
        assert_eq!(chunk_count(&store, e.id), 0);
        // While spooling, the id is taken.
        assert!(matches!(
            q.enqueue(e.clone(), b"x\r\n").await,
            Err(QueueError::Exists(_))
        ));
        assert!(matches!(q.spool(e.id), Err(QueueError::Exists(_))));
        drop(spool);
        assert_eq!(file_len(&store, e.id), None);
        assert_eq!(q.len(), 0);
        q.enqueue(e.clone(), b"x\r\n").await.unwrap();
        assert_eq!(q.message(e.id).unwrap(), b"x\r\n");
    }

    /// A commit under the wrong id queues nothing and leaves no file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_under_another_id_is_refused_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let (one, two) = (envelope(1), envelope(2));
        let mut spool = q.spool(one.id).unwrap();
        spool.write(&data(2 * MAX_VALUE)).unwrap();
        assert_eq!(file_len(&store, one.id), Some(2 * MAX_VALUE as u64));
        assert!(spool.commit(two.clone(), &[b"h\r\n"]).await.is_err());
        assert_eq!(file_len(&store, one.id), None);
        assert_eq!(chunk_count(&store, two.id), 0);
        assert_eq!(q.len(), 0);
    }

    /// A crash while spooling (the spool never dropped, as after kill -9)
    /// leaves a file without a record: swept at the next open, while the
    /// file of a queued message stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_of_a_crashed_spool_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let e = envelope(1);
        let queued = envelope(2);
        {
            let store = Store::open(dir.path()).unwrap();
            let q = Queue::open(&store).unwrap();
            let mut kept = q.spool(queued.id).unwrap();
            kept.write(&data(MAX_VALUE + 1)).unwrap();
            kept.commit(queued.clone(), &[b"H: v\r\n\r\n"])
                .await
                .unwrap();
            let mut spool = q.spool(e.id).unwrap();
            spool.write(&data(3 * MAX_VALUE)).unwrap();
            spool.crash();
            store.flush_now().unwrap();
        }
        let store = Store::open_when_released(dir.path(), std::time::Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(file_len(&store, e.id), Some(3 * MAX_VALUE as u64));
        // Not a queue id: not ours, removed as well.
        let stray = store.path().join(crate::files::DIR_NAME).join("x.tmp");
        std::fs::write(&stray, b"x").unwrap();
        let q = Queue::open(&store).unwrap();
        assert_eq!(file_len(&store, e.id), None);
        assert!(!stray.exists());
        assert_eq!(q.len(), 1);
        let mut want = b"H: v\r\n\r\n".to_vec();
        want.extend_from_slice(&data(MAX_VALUE + 1));
        assert_eq!(q.message(queued.id).unwrap(), want);
    }

    /// A spooled message is read for delivery block by block from its
    /// file; a reader that has the message keeps reading it whole even if
    /// the message is deleted meanwhile; a file cut short (or gone) makes
    /// the message "body missing", never a shorter message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn message_data_reads_the_file_and_refuses_a_cut_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let body = data(4 * MAX_VALUE + 99);
        let head = b"Received: x\r\nH: v\r\n\r\n";
        let mut want = head.to_vec();
        want.extend_from_slice(&body);
        let (one, two) = (envelope(1), envelope(2));
        for e in [&one, &two] {
            let mut spool = q.spool(e.id).unwrap();
            spool.write(&body).unwrap();
            spool.commit(e.clone(), &[head]).await.unwrap();
        }
        let m = q.message_data(one.id).unwrap();
        assert_eq!(m.len(), want.len() as u64);
        assert_eq!(m.head(), head);
        q.remove(one.id).await.unwrap();
        assert_eq!(m.to_vec().await.unwrap(), want, "read after the delete");
        assert!(matches!(
            q.message_data(one.id),
            Err(QueueError::NotFound(_))
        ));

        let path = store
            .path()
            .join(crate::files::DIR_NAME)
            .join(two.id.to_string());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(body.len() as u64 - 1).unwrap();
        assert!(matches!(
            q.message_data(two.id),
            Err(QueueError::BodyMissing { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            q.message_data(two.id),
            Err(QueueError::BodyMissing { found, .. }) if found == head.len() as u64
        ));
    }
}
