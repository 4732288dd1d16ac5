//! Where sessions write the data of large messages while it arrives, and
//! the memory budget for reading such a message back whole.
//!
//! A session opens a [`Spool`] (under a fresh queue id) once a message
//! outgrows `[limits] spool_threshold`; the driver commits it with the
//! message's record. The verifier (mail-auth) and the DKIM signer need the
//! message as one slice, so a spooled message is read back for them, but
//! only within [`ReadBudget`]: however many large messages arrive at once,
//! at most that many octets of them are in memory together.

use portcullis_queue::{Queue, QueueError, Spool};
use portcullis_types::{Clock, QueueId};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Draws queue ids and opens spools. Cheap to clone.
#[derive(Clone)]
pub struct Spooler {
    queue: Queue,
    clock: Arc<dyn Clock>,
    salt: u32,
}

impl std::fmt::Debug for Spooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooler").finish_non_exhaustive()
    }
}

/// Ids drawn for a spool before giving up (an id is taken only by a
/// message of the same millisecond and sequence number).
const ID_TRIES: usize = 8;

impl Spooler {
    /// A spooler writing into `queue`; ids are made from `clock` and
    /// `salt` (random per process).
    pub fn new(queue: Queue, clock: Arc<dyn Clock>, salt: u32) -> Spooler {
        Spooler { queue, clock, salt }
    }

    /// A fresh queue id for a message arriving now.
    pub fn new_id(&self) -> QueueId {
        QueueId::generate(self.clock.unix_millis(), self.salt)
    }

    /// Starts spooling a message under a fresh id (another is drawn when
    /// one is taken).
    pub fn open(&self) -> Result<Spool, QueueError> {
        let mut tries = 0;
        loop {
            match self.queue.spool(self.new_id()) {
                Err(QueueError::Exists(_)) if tries < ID_TRIES => tries += 1,
                other => return other,
            }
        }
    }
}

/// A budget of octets for messages read back whole from their spool (a
/// semaphore counted in KiB). A message larger than the whole budget waits
/// for all of it, so it is alone, never refused.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl ReadBudget {
    /// A budget of `octets` (at least 1 KiB).
    pub fn new(octets: u64) -> ReadBudget {
        let total_kib = u32::try_from(octets.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        ReadBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Waits until `octets` fit in the budget; they are counted until the
    /// permit is dropped.
    pub async fn acquire(&self, octets: u64) -> Option<OwnedSemaphorePermit> {
        let want = u32::try_from(octets.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        self.kib.clone().acquire_many_owned(want).await.ok()
    }

    /// Octets free now (for tests and metrics).
    pub fn available(&self) -> u64 {
        self.kib.available_permits() as u64 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two messages that together exceed the budget are never in memory at
    /// the same time; one larger than the whole budget still gets in.
    #[tokio::test]
    async fn budget_admits_what_fits_and_oversized_alone() {
        let budget = ReadBudget::new(10 * 1024 * 1024);
        let a = budget.acquire(6 * 1024 * 1024).await.unwrap();
        assert_eq!(budget.available(), 4 * 1024 * 1024);
        let b = budget.clone();
        let waiting = tokio::spawn(async move { b.acquire(6 * 1024 * 1024).await.is_some() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap());
        let huge = budget.acquire(50 * 1024 * 1024).await.unwrap();
        assert_eq!(budget.available(), 0);
        drop(huge);
        assert_eq!(budget.available(), 10 * 1024 * 1024);
    }
}
