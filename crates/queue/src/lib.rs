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
//! [`QueueRecord`]; `queue.bodies` maps id ‖ chunk number to at most
//! [`portcullis_store::MAX_VALUE`] bytes of the message. The record is
//! written last, so a record always has its whole body; a body without a
//! record (a crash mid-write, before any 250) is swept at open.

#![forbid(unsafe_code)]

mod deliver;
pub mod dsn;
mod record;
pub mod schedule;
pub mod scheduler;

pub use deliver::{Deliver, DeliveryJob, RecipientOutcome, RecipientResult};
pub use record::{Attempt, HISTORY_LIMIT, QueueRecord, RecipientState, RecipientStatus};
pub use scheduler::{QueueMetrics, SchedulerSettings};

use portcullis_store::{MAX_VALUE, Store, StoreError, Tree, TreeName};
use portcullis_types::{Envelope, QueueId};
use schedule::DueIndex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// The queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    records: Tree,
    bodies: Tree,
    size: Arc<AtomicU64>,
    index: Arc<Mutex<Index>>,
    kick: Arc<Notify>,
}

/// The in-memory due-index, rebuilt from the records at open.
#[derive(Default)]
struct Index {
    by_due: DueIndex,
    due_of: HashMap<QueueId, u64>,
}

impl Index {
    fn set(&mut self, id: QueueId, due: Option<u64>) {
        if let Some(old) = self.due_of.remove(&id) {
            self.by_due.remove(&(old, id));
        }
        if let Some(due) = due {
            self.by_due.insert((due, id));
            self.due_of.insert(id, due);
        }
    }
}

impl Queue {
    /// Opens the queue in `store`, sweeping bodies whose record was never
    /// written (those messages were never acknowledged).
    pub fn open(store: &Store) -> Result<Queue, QueueError> {
        let records = store.tree(TreeName::QueueRecords)?;
        let bodies = store.tree(TreeName::QueueBodies)?;
        let queue = Queue {
            store: store.clone(),
            size: Arc::new(AtomicU64::new(records.len() as u64)),
            records,
            bodies,
            index: Arc::new(Mutex::new(Index::default())),
            kick: Arc::new(Notify::new()),
        };
        for record in queue.list()? {
            queue.reindex(&record);
        }
        let swept = queue.sweep_orphans()?;
        if swept > 0 {
            tracing::warn!(
                swept,
                "removed message bodies without a queue record (never acknowledged)"
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
                !self.records.contains_key(id).map_err(StoreError::from)?
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
    /// only then may the caller say 250.
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
        let key = id.to_bytes();
        let mut n: u32 = 0;
        for part in parts {
            for chunk in part.chunks(MAX_VALUE) {
                self.bodies
                    .insert(body_key(key, n), chunk)
                    .map_err(StoreError::from)?;
                n += 1;
            }
        }
        let record = QueueRecord::new(envelope);
        self.records
            .insert(key, record.encode())
            .map_err(StoreError::from)?;
        self.store.commit().await?;
        self.size.fetch_add(1, Ordering::Relaxed);
        self.reindex(&record);
        self.kick.notify_one();
        Ok(())
    }

    fn reindex(&self, record: &QueueRecord) {
        let due = (!record.is_finished()).then_some(record.next_attempt);
        self.index_lock().set(record.envelope.id, due);
    }

    fn index_lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a changed record durably and updates the due-index.
    pub async fn update(&self, record: &QueueRecord) -> Result<(), QueueError> {
        self.records
            .insert(record.envelope.id.to_bytes(), record.encode())
            .map_err(StoreError::from)?;
        self.store.commit().await?;
        self.reindex(record);
        Ok(())
    }

    /// Runs `f` over the due-index (for the scheduler's pure functions).
    pub fn with_index<T>(&self, f: impl FnOnce(&DueIndex) -> T) -> T {
        f(&self.index_lock().by_due)
    }

    /// Wakes the scheduler (new mail, a retry request).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Resolves when someone kicked the scheduler.
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Makes one message (or, with `None`, every message) due at `now`.
    /// Returns how many were affected.
    pub async fn retry_now(&self, id: Option<QueueId>, now: u64) -> Result<usize, QueueError> {
        let targets = match id {
            Some(id) => vec![self.get(id)?],
            None => self.list()?,
        };
        // One commit for the whole batch: `retry --all` on a large backlog
        // must not cost an fsync per message.
        let mut changed = Vec::new();
        for mut record in targets.into_iter().filter(|r| !r.is_finished()) {
            record.next_attempt = now;
            self.records
                .insert(record.envelope.id.to_bytes(), record.encode())
                .map_err(StoreError::from)?;
            changed.push(record);
        }
        self.store.commit().await?;
        for record in &changed {
            self.reindex(record);
        }
        self.kick();
        Ok(changed.len())
    }

    /// Arrival time (unix milliseconds) of the oldest message: queue ids
    /// sort by arrival, so it is the first key.
    pub fn oldest_millis(&self) -> Option<u64> {
        let (key, _) = self.records.first().ok()??;
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
        self.records
            .iter()
            .values()
            .map(|v| {
                let v = v.map_err(StoreError::from)?;
                Ok(QueueRecord::decode(&v)?)
            })
            .collect()
    }

    /// One record.
    pub fn get(&self, id: QueueId) -> Result<QueueRecord, QueueError> {
        let v = self
            .records
            .get(id.to_bytes())
            .map_err(StoreError::from)?
            .ok_or(QueueError::NotFound(id))?;
        Ok(QueueRecord::decode(&v)?)
    }

    /// The stored message bytes (with our trace headers).
    pub fn message(&self, id: QueueId) -> Result<Vec<u8>, QueueError> {
        let mut out = Vec::new();
        for item in self.bodies.scan_prefix(id.to_bytes()) {
            let (_, v) = item.map_err(StoreError::from)?;
            out.extend_from_slice(&v);
        }
        if out.is_empty()
            && !self
                .records
                .contains_key(id.to_bytes())
                .map_err(StoreError::from)?
        {
            return Err(QueueError::NotFound(id));
        }
        Ok(out)
    }

    /// Removes a message and its body, durably.
    pub async fn remove(&self, id: QueueId) -> Result<(), QueueError> {
        let existed = self
            .records
            .remove(id.to_bytes())
            .map_err(StoreError::from)?
            .is_some();
        for item in self.bodies.scan_prefix(id.to_bytes()).keys() {
            let k = item.map_err(StoreError::from)?;
            self.bodies.remove(k).map_err(StoreError::from)?;
        }
        self.store.commit().await?;
        self.index_lock().set(id, None);
        if !existed {
            return Err(QueueError::NotFound(id));
        }
        self.size.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

fn body_key(id: [u8; 8], chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id);
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

#[cfg(test)]
mod tests;
