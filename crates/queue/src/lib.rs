//! The durable delivery queue.
//!
//! This crate decides *when* mail is delivered; it never opens a network
//! connection (the `delivery` crate implements [`Deliver`] and the binary
//! injects it). [`Queue::enqueue`] writes the message and its envelope to
//! the store and returns only once they are fsynced (RFC 5321 §6.1: once we
//! say 250, the message is our responsibility; DESIGN.md: kill -9 loses
//! nothing acknowledged). The [`scheduler`] runs attempts, records each one
//! (and the next retry time) durably *before* connecting, keeps delivered
//! recipients from ever being delivered again, and bounces with RFC 3464
//! DSNs ([`dsn`]) on permanent failure or expiry.
//!
//! Layout: `queue.records` maps the 8-byte queue id to a JSON
//! [`QueueRecord`] (or, for a record larger than one value, a pointer to its
//! chunks in `queue.record_chunks`: see `stored`); `queue.bodies` maps id ‖
//! chunk number to at most [`portcullis_store::MAX_VALUE`] bytes of the
//! message, consecutive chunk numbers from 0. A large message written
//! while it arrived ([`Spool`]) keeps only its start there (our trace
//! headers and its header section); the rest is in its own file in the
//! store's `bodies/` directory (see `files`), which the record names with
//! its length. The record is written last, so a record always has its
//! whole body; a body without a record (a crash mid-write or mid-arrival,
//! before any 250) is swept at open. Delivery reads a message as
//! [`MessageData`]: the start in memory, the file block by block.
//!
//! Concurrency: a delivery attempt can take minutes, and the operator can
//! retry or delete a message meanwhile. So no change of a record is ever a
//! blind write of a copy read earlier: every change goes through
//! [`Queue::modify`], which re-reads the record, applies a small pure edit
//! and writes it back only if the record is still the one it read (sled
//! compare-and-swap), all under the queue's one writer lock, which also
//! keeps the due-index equal to the store. A change to a message that was
//! deleted meanwhile finds no record and writes nothing, so a deleted
//! message never comes back. Deletion removes the record first and the
//! body after, and [`Queue::message`] checks the record again after reading
//! the body, so no reader ever takes a half-removed body for a message.

#![forbid(unsafe_code)]

mod bounds;
mod deliver;
pub mod dsn;
mod files;
mod local;
mod message;
mod metrics;
mod record;
pub mod schedule;
pub mod scheduler;
mod spool;
mod stored;

pub use bounds::{OUTCOMES_LIMIT, RECORD_LIMIT, REPLY_LIMIT, cap_outcomes, truncate_text};
pub use deliver::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
pub use local::{LocalMessage, LocalSigner};
pub use message::{Blocks, MessageData};
pub use record::{
    Attempt, HISTORY_FIRST, HISTORY_LAST, HISTORY_LIMIT, QueueRecord, RecipientState,
    RecipientStatus,
};
pub use scheduler::{QueueMetrics, SchedulerSettings};
pub use spool::Spool;

use portcullis_store::{MAX_VALUE, Store, StoreError, Tree, TreeName, check_value_size};
use portcullis_types::{Envelope, QueueId};
use schedule::DueIndex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stored::Records;
use tokio::sync::Notify;

/// Errors of the queue.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No message with that id.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// A message with that id is already queued: nothing was written (the
    /// caller picks another id).
    #[error("a message {0} is already in the queue")]
    Exists(QueueId),
    /// The record exists but its body is missing or incomplete in the store
    /// (an inconsistency for the operator): the message must not be sent.
    #[error(
        "message {id}: the body is missing from the store ({found} of {expected} octets found)"
    )]
    BodyMissing {
        /// The message.
        id: QueueId,
        /// Octets found.
        found: u64,
        /// Octets the record says it has (0 when the record predates that).
        expected: u64,
    },
    /// The record would be larger than [`RECORD_LIMIT`] even trimmed.
    #[error("message {id}: its queue record would be {len} octets, more than {max}")]
    RecordTooLarge {
        /// The message.
        id: QueueId,
        /// Encoded size after trimming.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Conditional writes of one record that lose to another writer before
/// giving up (they cannot lose under the writer lock; this bounds the loop
/// should anything ever write around it).
const SWAP_TRIES: usize = 64;

/// What an edit passed to [`Queue::modify`] does with the record it was
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Nothing to write.
    Keep,
    /// Write the changed record.
    Write,
    /// Remove the message (record, then body).
    Remove,
}

/// The queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    records: Records,
    bodies: Tree,
    files: files::BodyFiles,
    size: Arc<AtomicU64>,
    state: Arc<Mutex<State>>,
    kick: Arc<Notify>,
    /// Signs DSNs ([`Queue::enqueue_local`]); `None`: unsigned.
    local_signer: Arc<std::sync::RwLock<Option<Arc<dyn LocalSigner>>>>,
}

/// What the writer lock guards: the in-memory due-index (rebuilt from the
/// records at open) and the ids being enqueued. Every write of a record
/// happens with it held, so the index always matches the store.
#[derive(Default)]
struct State {
    by_due: DueIndex,
    due_of: HashMap<QueueId, u64>,
    /// Ids whose body is being written by [`Queue::enqueue_parts`]: taken,
    /// though no record exists yet.
    reserved: HashSet<QueueId>,
}

impl State {
    fn set(&mut self, id: QueueId, due: Option<u64>) {
        if let Some(old) = self.due_of.remove(&id) {
            self.by_due.remove(&(old, id));
        }
        if let Some(due) = due {
            self.by_due.insert((due, id));
            self.due_of.insert(id, due);
        }
    }

    fn reindex(&mut self, record: &QueueRecord) {
        let due = (!record.is_finished()).then_some(record.next_attempt);
        self.set(record.envelope.id, due);
    }
}

impl Queue {
    /// Signs the DSNs queued from now on with `signer` (`None`: unsigned);
    /// every clone of this queue shares it. Set at the start and at each
    /// reload, with the keys in force.
    pub fn set_local_signer(&self, signer: Option<Arc<dyn LocalSigner>>) {
        let mut slot = self.local_signer.write().unwrap_or_else(|p| p.into_inner());
        *slot = signer;
    }

    fn local_signer(&self) -> Option<Arc<dyn LocalSigner>> {
        self.local_signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the queue in `store` (message files in its `bodies/`
    /// directory), sweeping bodies and files whose record was never
    /// written (those messages were never acknowledged) and record chunks
    /// no record points at.
    pub fn open(store: &Store) -> Result<Queue, QueueError> {
        let records = Records::new(
            store.tree(TreeName::QueueRecords)?,
            store.tree(TreeName::QueueRecordChunks)?,
        );
        let bodies = store.tree(TreeName::QueueBodies)?;
        let queue = Queue {
            store: store.clone(),
            size: Arc::new(AtomicU64::new(records.heads.len() as u64)),
            records,
            bodies,
            files: files::BodyFiles::open(store.path().join(files::DIR_NAME))?,
            state: Arc::new(Mutex::new(State::default())),
            kick: Arc::new(Notify::new()),
            local_signer: Arc::default(),
        };
        {
            let mut state = queue.lock();
            for record in queue.list()? {
                state.reindex(&record);
            }
        }
        let heads = queue.records.heads.clone();
        let swept = queue.sweep_orphans()?
            + queue.records.sweep()?
            + queue.files.sweep(|id| {
                Ok(heads
                    .contains_key(id.to_bytes())
                    .map_err(StoreError::from)?)
            })?;
        if swept > 0 {
            tracing::warn!(
                swept,
                "removed message bodies or record chunks without a queue record (never acknowledged)"
            );
            queue.store.flush_now()?;
        }
        Ok(queue)
    }

    fn sweep_orphans(&self) -> Result<usize, QueueError> {
        let mut swept = 0;
        let mut last: Option<[u8; 8]> = None;
        for item in self.bodies.iter().keys() {
            let key = item.map_err(StoreError::from)?;
            let Some(id) = key.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
                self.bodies.remove(&key).map_err(StoreError::from)?;
                continue;
            };
            let orphan = if last == Some(id) {
                true
            } else {
                !self
                    .records
                    .heads
                    .contains_key(id)
                    .map_err(StoreError::from)?
            };
            if orphan {
                last = Some(id);
                self.bodies.remove(&key).map_err(StoreError::from)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Stores a message durably. Returns after the fsync that covers it;
    /// only then may the caller say 250. Refuses ([`QueueError::Exists`])
    /// an id that is already queued, without touching that message.
    pub async fn enqueue(&self, envelope: Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.enqueue_parts(envelope, &[message]).await
    }

    /// Like [`Queue::enqueue`], for a message given as consecutive parts
    /// (our trace headers, then the data as received) so the caller need not
    /// copy them into one buffer.
    pub async fn enqueue_parts(
        &self,
        envelope: Envelope,
        parts: &[&[u8]],
    ) -> Result<(), QueueError> {
        let id = envelope.id;
        self.reserve(id)?;
        let result = self.write_new(envelope, parts, None).await;
        self.release(id, result.as_ref().ok());
        let _ = result?;
        self.kick.notify_one();
        Ok(())
    }

    /// Check-and-reserve: the body chunks of an existing message share its
    /// key prefix, so an id in use (queued, or being written by
    /// [`Queue::enqueue_parts`] or a [`Spool`]) is refused before any write.
    fn reserve(&self, id: QueueId) -> Result<(), QueueError> {
        let mut state = self.lock();
        let taken = state.reserved.contains(&id)
            || self
                .records
                .heads
                .contains_key(id.to_bytes())
                .map_err(StoreError::from)?;
        if taken {
            return Err(QueueError::Exists(id));
        }
        state.reserved.insert(id);
        Ok(())
    }

    /// Ends a reservation; with the record written, indexes it.
    fn release(&self, id: QueueId, written: Option<&QueueRecord>) {
        let mut state = self.lock();
        state.reserved.remove(&id);
        if let Some(record) = written {
            state.reindex(record);
        }
    }

    /// Body chunks of `parts`, then the record (check-and-insert) whose
    /// body is those octets followed, when `file` is given, by that many
    /// octets already durable in the message's file (a [`Spool`]), then
    /// the fsync.
    async fn write_new(
        &self,
        envelope: Envelope,
        parts: &[&[u8]],
        file: Option<u64>,
    ) -> Result<QueueRecord, QueueError> {
        let id = envelope.id;
        let key = id.to_bytes();
        let mut n: u32 = 0;
        let mut len: u64 = 0;
        let written: Result<(), QueueError> = (|| {
            for part in parts {
                for chunk in part.chunks(MAX_VALUE) {
                    check_value_size(TreeName::QueueBodies, chunk.len())?;
                    self.bodies
                        .insert(body_key(key, n), chunk)
                        .map_err(StoreError::from)?;
                    n += 1;
                    len += chunk.len() as u64;
                }
            }
            Ok(())
        })();
        let inserted = written.and_then(|()| {
            let mut record = QueueRecord::new(envelope);
            record.body_len = Some(len + file.unwrap_or(0));
            record.body_file = file;
            let json = encode_record(id, &mut record)?;
            if !self.records.swap(key, None, &json)? {
                return Err(QueueError::Exists(id));
            }
            Ok(record)
        });
        let record = match inserted {
            Ok(record) => record,
            Err(e) => {
                // Nothing was acknowledged: take back the chunks written.
                for i in 0..n {
                    let _ = self.bodies.remove(body_key(key, i));
                }
                return Err(e);
            }
        };
        self.size.fetch_add(1, Ordering::Relaxed);
        self.store.commit().await?;
        Ok(record)
    }

    /// Enqueues a message the server made itself (a bounce, a report) under
    /// a fresh id from `next_id`: an id already in use is never overwritten,
    /// another is drawn (a few times, then the error). Returns the id used.
    pub async fn enqueue_fresh(
        &self,
        mut envelope: Envelope,
        message: &[u8],
        mut next_id: impl FnMut() -> QueueId,
    ) -> Result<QueueId, QueueError> {
        let mut tries = 0;
        loop {
            envelope.id = next_id();
            match self.enqueue(envelope.clone(), message).await {
                Ok(()) => return Ok(envelope.id),
                Err(QueueError::Exists(id)) if tries < 8 => {
                    tracing::warn!(queue_id = %id, "queue id already in use; drawing another");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the record of `id` with `edit`, conditionally: under the
    /// writer lock, the record is read, `edit` is applied to it, and the
    /// result is written only if the stored record is still the one read
    /// (compare-and-swap; on a conflict, read and apply again, so `edit`
    /// must be a pure function of the record). The due-index follows.
    /// Returns the record as edited and what was done, after the fsync;
    /// `None` when the message is not (or no longer) in the queue: nothing
    /// is written then.
    pub async fn modify(
        &self,
        id: QueueId,
        edit: impl FnMut(&mut QueueRecord) -> Edit,
    ) -> Result<Option<(QueueRecord, Edit)>, QueueError> {
        let done = self.apply(id, edit)?;
        if matches!(done, Some((_, Edit::Write | Edit::Remove))) {
            self.store.commit().await?;
        }
        Ok(done)
    }

    /// [`Queue::modify`] without the fsync (for batches).
    fn apply(
        &self,
        id: QueueId,
        mut edit: impl FnMut(&mut QueueRecord) -> Edit,
    ) -> Result<Option<(QueueRecord, Edit)>, QueueError> {
        let key = id.to_bytes();
        let mut state = self.lock();
        for _ in 0..SWAP_TRIES {
            let Some((head, mut record)) = self.records.read(key)? else {
                return Ok(None);
            };
            match edit(&mut record) {
                Edit::Keep => return Ok(Some((record, Edit::Keep))),
                Edit::Write => {
                    let json = encode_record(id, &mut record)?;
                    if self.records.swap(key, Some(&head), &json)? {
                        state.reindex(&record);
                        return Ok(Some((record, Edit::Write)));
                    }
                }
                Edit::Remove => {
                    // The record goes first: from here on no reader finds
                    // the message, and `message` re-checks the record after
                    // reading the body, so a half-removed body is never
                    // taken for the message.
                    if self.records.remove(key, &head)? {
                        state.set(id, None);
                        self.size.fetch_sub(1, Ordering::Relaxed);
                        for item in self.bodies.scan_prefix(key).keys() {
                            let k = item.map_err(StoreError::from)?;
                            self.bodies.remove(k).map_err(StoreError::from)?;
                        }
                        // A file left by a failure here is swept at the
                        // next open (its record is gone).
                        if let Err(e) = self.files.remove(id) {
                            tracing::error!(queue_id = %id, error = %e, "could not remove the message file");
                        }
                        return Ok(Some((record, Edit::Remove)));
                    }
                }
            }
            // Someone wrote the record between our read and our swap (a
            // writer outside the lock): read it again and re-apply.
        }
        Err(QueueError::Store(StoreError::Io(format!(
            "queue record {id} kept changing under a conditional write"
        ))))
    }

    /// Runs `f` over the due-index (for the scheduler's pure functions).
    pub fn with_index<T>(&self, f: impl FnOnce(&DueIndex) -> T) -> T {
        f(&self.lock().by_due)
    }

    /// Wakes the scheduler (new mail, a retry request).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Resolves when someone kicked the scheduler.
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Makes one message (or, with `None`, every message) with pending
    /// recipients due at `now`. Only `next_attempt` of the record as it is
    /// now is changed: delivery outcomes written meanwhile by an attempt
    /// are never overwritten. Returns how many messages are now due.
    pub async fn retry_now(&self, id: Option<QueueId>, now: u64) -> Result<usize, QueueError> {
        let targets: Vec<QueueId> = match id {
            Some(id) => vec![id],
            None => self.list()?.into_iter().map(|r| r.envelope.id).collect(),
        };
        let mut due = 0;
        let mut wrote = false;
        for target in targets {
            let done = self.apply(target, |record| {
                if record.is_finished() || record.next_attempt <= now {
                    return Edit::Keep;
                }
                record.next_attempt = now;
                Edit::Write
            })?;
            match done {
                None if id.is_some() => return Err(QueueError::NotFound(target)),
                None => {}
                Some((record, edit)) => {
                    wrote |= edit == Edit::Write;
                    if !record.is_finished() {
                        due += 1;
                    }
                }
            }
        }
        // One commit for the whole batch: `retry --all` on a large backlog
        // must not cost an fsync per message.
        if wrote {
            self.store.commit().await?;
        }
        self.kick();
        Ok(due)
    }

    /// Arrival time (unix milliseconds) of the oldest message: queue ids
    /// sort by arrival, so it is the first key.
    pub fn oldest_millis(&self) -> Option<u64> {
        let (key, _) = self.records.heads.first().ok()??;
        let bytes: [u8; 8] = key.as_ref().try_into().ok()?;
        Some(QueueId::from_bytes(bytes).unix_millis())
    }

    /// Number of messages in the queue.
    pub fn len(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// True when the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All queue records, oldest first.
    pub fn list(&self) -> Result<Vec<QueueRecord>, QueueError> {
        let mut out = Vec::new();
        for item in self.records.heads.iter() {
            let (key, head) = item.map_err(StoreError::from)?;
            let Ok(id) = <[u8; 8]>::try_from(key.as_ref()) else {
                continue;
            };
            match self.records.decode(id, &head)? {
                Some(record) => out.push(record),
                // Replaced while we read it: read it again (or it is gone).
                None => out.extend(self.records.read(id)?.map(|(_, r)| r)),
            }
        }
        Ok(out)
    }

    /// One record.
    pub fn get(&self, id: QueueId) -> Result<QueueRecord, QueueError> {
        self.records
            .read(id.to_bytes())?
            .map(|(_, r)| r)
            .ok_or(QueueError::NotFound(id))
    }

    /// The stored message bytes (with our trace headers), whole: for
    /// what is small or tests; delivery reads [`Queue::message_data`].
    /// Errors as [`Queue::message_data`].
    pub fn message(&self, id: QueueId) -> Result<Vec<u8>, QueueError> {
        self.message_data(id)?.read_all().map_err(|e| {
            QueueError::Store(StoreError::Io(format!(
                "reading the file of message {id}: {e}"
            )))
        })
    }

    /// The stored message (with our trace headers) for sending: its start
    /// in memory, the rest (a large message's file) read block by block.
    /// [`QueueError::NotFound`] when there is no record (also when it was
    /// deleted while the body was read); [`QueueError::BodyMissing`] when
    /// the record exists but its body is missing, empty, has a gap, or is
    /// shorter or longer than the record says: such a message must never
    /// be sent.
    pub fn message_data(&self, id: QueueId) -> Result<MessageData, QueueError> {
        let key = id.to_bytes();
        let record = self.get(id)?;
        let mut head = Vec::new();
        // Chunks are numbered consecutively from 0 (records written before
        // message files kept a large body's chunks from just below 2^20 on:
        // the first number is free, the rest must follow it), and the
        // length must be the recorded one (a record from before `body_len`
        // was recorded starts at 0).
        let mut next: Option<u32> = record.body_len.is_none().then_some(0);
        let mut gap = false;
        for item in self.bodies.scan_prefix(key) {
            let (k, v) = item.map_err(StoreError::from)?;
            let n = k
                .get(8..12)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes);
            gap |= n.is_none() || next.is_some_and(|want| n != Some(want));
            next = n.map(|n| n.wrapping_add(1));
            head.extend_from_slice(&v);
        }
        // Opened before the record is checked again: an open file stays
        // whole even if the message is removed from now on.
        let file = match record.body_file {
            Some(_) => self.files.open_read(id)?,
            None => None,
        };
        // Deletion removes the record before the body: if the record is
        // still there now, nothing of the body was removed before we read it.
        if !self
            .records
            .heads
            .contains_key(key)
            .map_err(StoreError::from)?
        {
            return Err(QueueError::NotFound(id));
        }
        let file_len = match &file {
            Some(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            None => 0,
        };
        let found = head.len() as u64 + file_len;
        let expected = record.body_len.unwrap_or(0);
        let file_short = record.body_file.is_some_and(|want| want != file_len);
        if found == 0 || gap || file_short || record.body_len.is_some_and(|l| l != found) {
            return Err(QueueError::BodyMissing {
                id,
                found,
                expected,
            });
        }
        Ok(match (file, record.body_file) {
            (Some(file), Some(len)) => MessageData::with_file(head, file, len),
            _ => MessageData::from(head),
        })
    }

    /// Removes a message and its body, durably (the record first; see
    /// [`Queue::modify`]).
    pub async fn remove(&self, id: QueueId) -> Result<(), QueueError> {
        match self.modify(id, |_| Edit::Remove).await? {
            Some(_) => Ok(()),
            None => Err(QueueError::NotFound(id)),
        }
    }
}

/// The record of `id` encoded for the store, trimmed to [`RECORD_LIMIT`].
fn encode_record(id: QueueId, record: &mut QueueRecord) -> Result<Vec<u8>, QueueError> {
    bounds::encode_within_limit(record).map_err(|len| QueueError::RecordTooLarge {
        id,
        len,
        max: RECORD_LIMIT,
    })
}

fn body_key(id: [u8; 8], chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id);
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_races;
