//! Message data written to the store while it arrives, before the 250.
//!
//! A large message is not held in memory until the end of its data: the
//! inbound session appends everything after the header section to a
//! [`Spool`], which writes it in [`MAX_VALUE`] chunks under the message's
//! queue id in `queue.bodies`, numbered from [`SPOOL_BASE`] on, without an
//! fsync. [`Spool::commit`] then writes what goes before those octets (our
//! trace headers and the header section) as the chunks just below
//! [`SPOOL_BASE`], so the whole body is one consecutive run of chunk
//! numbers, writes the record and waits for the one fsync that covers all
//! of it: only then may the 250 be sent (RFC 5321 §6.1; DESIGN.md, durable
//! acceptance). The record adopts the chunks where they are; nothing is
//! copied.
//!
//! A spool that is dropped without a commit (the message was refused, the
//! client went away, the server is stopping) removes its chunks. A crash
//! leaves chunks without a record, which [`crate::Queue::open`] sweeps: no
//! record, no 250, nothing lost that was acknowledged.

use crate::{Queue, QueueError, body_key};
use portcullis_store::{MAX_VALUE, StoreError, TreeName, check_value_size};
use portcullis_types::{Envelope, QueueId};

/// The chunk number of a spooled message's first spooled octets. The
/// prefix written at commit (at most `SPOOL_BASE` chunks, i.e. 64 GiB)
/// takes the numbers just below it.
pub const SPOOL_BASE: u32 = 1 << 20;

/// The data of one message being received, written to the store as it
/// arrives. Holds at most one partial chunk ([`MAX_VALUE`] octets) in
/// memory. Dropping it without [`Spool::commit`] removes what it wrote.
pub struct Spool {
    queue: Queue,
    id: QueueId,
    /// Chunks written so far (numbered from [`SPOOL_BASE`]).
    chunks: u32,
    /// Octets appended so far (written or pending).
    len: u64,
    /// The partial chunk not yet written; its capacity never exceeds
    /// [`MAX_VALUE`].
    pending: Vec<u8>,
    /// Set once the record adopted the chunks (nothing to remove), or when
    /// removing them failed (the id stays reserved: never reused).
    settled: bool,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("id", &self.id)
            .field("chunks", &self.chunks)
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
        Ok(Spool {
            queue: self.clone(),
            id,
            chunks: 0,
            len: 0,
            pending: Vec::new(),
            settled: false,
        })
    }
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

    /// Octets of memory the spool holds (its partial chunk's buffer): at
    /// most [`MAX_VALUE`].
    pub fn held(&self) -> usize {
        self.pending.capacity()
    }

    /// Chunks written to the store so far.
    pub fn chunks_written(&self) -> u32 {
        self.chunks
    }

    /// Appends `data`, writing every full chunk to the store (not synced:
    /// the commit's fsync covers it).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), QueueError> {
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= MAX_VALUE {
                // A whole chunk straight from the caller: no copy.
                let (chunk, rest) = data.split_at(MAX_VALUE);
                self.put(chunk)?;
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
                let chunk = std::mem::take(&mut self.pending);
                let put = self.put(&chunk);
                // Keep the allocation for the next chunk.
                self.pending = chunk;
                self.pending.clear();
                put?;
            }
        }
        Ok(())
    }

    /// Writes the partial chunk, if any.
    fn flush(&mut self) -> Result<(), QueueError> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.put(&chunk)?;
        }
        self.pending = Vec::new();
        Ok(())
    }

    fn put(&mut self, chunk: &[u8]) -> Result<(), QueueError> {
        check_value_size(TreeName::QueueBodies, chunk.len())?;
        let n = SPOOL_BASE
            .checked_add(self.chunks)
            .ok_or_else(|| StoreError::Io("message too large for the spool".into()))?;
        self.queue
            .bodies
            .insert(body_key(self.id.to_bytes(), n), chunk)
            .map_err(StoreError::from)?;
        self.chunks += 1;
        Ok(())
    }

    /// Appends every spooled octet to `out` (for the verifier and the DKIM
    /// signer, which need the message in one piece). The partial chunk is
    /// written first, so the spool holds no memory afterwards.
    pub fn read_into(&mut self, out: &mut Vec<u8>) -> Result<(), QueueError> {
        self.flush()?;
        let key = self.id.to_bytes();
        let start = body_key(key, SPOOL_BASE);
        let mut next = SPOOL_BASE;
        for item in self.queue.bodies.range(start..) {
            let (k, v) = item.map_err(StoreError::from)?;
            if k.get(..8) != Some(&key[..]) {
                break;
            }
            if k.get(8..12) != Some(&next.to_be_bytes()[..]) {
                return Err(self.missing(out.len() as u64));
            }
            next += 1;
            out.extend_from_slice(&v);
        }
        if next - SPOOL_BASE != self.chunks {
            return Err(self.missing(out.len() as u64));
        }
        Ok(())
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
    /// spool's) is written and fsynced. Returns after the fsync; only then
    /// may the caller say 250. On an error nothing is queued and the
    /// chunks are removed.
    pub async fn commit(mut self, envelope: Envelope, prefix: &[&[u8]]) -> Result<(), QueueError> {
        if envelope.id != self.id {
            return Err(QueueError::Store(StoreError::Io(format!(
                "spool {} committed as message {}",
                self.id, envelope.id
            ))));
        }
        self.flush()?;
        let prefix_len: usize = prefix.iter().map(|p| p.len()).sum();
        let prefix_chunks: usize = prefix.iter().map(|p| p.len().div_ceil(MAX_VALUE)).sum();
        let Some(first) = u32::try_from(prefix_chunks)
            .ok()
            .and_then(|k| SPOOL_BASE.checked_sub(k))
        else {
            return Err(QueueError::Store(StoreError::Io(format!(
                "message {}: {prefix_len} octets before the spooled data is too much",
                self.id
            ))));
        };
        let queue = self.queue.clone();
        let result = queue.write_new(envelope, prefix, first, self.len).await;
        match &result {
            Ok(record) => {
                self.settled = true;
                queue.release(self.id, Some(record));
                queue.kick.notify_one();
            }
            Err(_) => {
                // A failed fsync comes after the record was written: the
                // record owns the chunks now (it is indexed at the next
                // open, as after any failed commit), so they must stay.
                let key = self.id.to_bytes();
                if queue.records.heads.contains_key(key).unwrap_or(true) {
                    self.settled = true;
                    queue.release(self.id, None);
                }
            }
        }
        result.map(|_| ())
    }

    /// Removes the chunks written so far (the message was not queued).
    fn discard(&mut self) -> Result<(), StoreError> {
        let key = self.id.to_bytes();
        for i in 0..self.chunks {
            self.queue.bodies.remove(body_key(key, SPOOL_BASE + i))?;
        }
        Ok(())
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

    fn chunk_count(store: &Store, id: QueueId) -> usize {
        let bodies = store.tree(TreeName::QueueBodies).unwrap();
        bodies.scan_prefix(id.to_bytes()).count()
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
        // Removal takes every chunk, below and above SPOOL_BASE.
        assert!(chunk_count(&store, ids[1]) > 4);
        q.remove(ids[1]).await.unwrap();
        assert_eq!(chunk_count(&store, ids[1]), 0);
    }

    /// A refused or abandoned message leaves no chunk behind, and its id is
    /// free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_spool_leaves_no_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let e = envelope(1);
        let mut spool = q.spool(e.id).unwrap();
        spool.write(&data(5 * MAX_VALUE + 3)).unwrap();
        assert_eq!(spool.chunks_written(), 5);
        assert_eq!(chunk_count(&store, e.id), 5);
        // While spooling, the id is taken.
        assert!(matches!(
            q.enqueue(e.clone(), b"x\r\n").await,
            Err(QueueError::Exists(_))
        ));
        assert!(matches!(q.spool(e.id), Err(QueueError::Exists(_))));
        drop(spool);
        assert_eq!(chunk_count(&store, e.id), 0);
        assert_eq!(q.len(), 0);
        q.enqueue(e.clone(), b"x\r\n").await.unwrap();
        assert_eq!(q.message(e.id).unwrap(), b"x\r\n");
    }

    /// A commit that loses to an existing record queues nothing and leaves
    /// no spooled chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_under_another_id_is_refused_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        let (one, two) = (envelope(1), envelope(2));
        let mut spool = q.spool(one.id).unwrap();
        spool.write(&data(2 * MAX_VALUE)).unwrap();
        assert_eq!(chunk_count(&store, one.id), 2);
        assert!(spool.commit(two.clone(), &[b"h\r\n"]).await.is_err());
        assert_eq!(chunk_count(&store, one.id), 0);
        assert_eq!(chunk_count(&store, two.id), 0);
        assert_eq!(q.len(), 0);
    }

    /// A crash while spooling (the spool never dropped, as after kill -9)
    /// leaves chunks without a record: swept at the next open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_of_a_crashed_spool_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let e = envelope(1);
        {
            let store = Store::open(dir.path()).unwrap();
            let q = Queue::open(&store).unwrap();
            let mut spool = q.spool(e.id).unwrap();
            spool.write(&data(3 * MAX_VALUE)).unwrap();
            spool.crash();
            store.flush_now().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(chunk_count(&store, e.id), 3);
        let q = Queue::open(&store).unwrap();
        assert_eq!(chunk_count(&store, e.id), 0);
        assert_eq!(q.len(), 0);
    }
}
