//! How a queue record lives in the store, and the conditional write that
//! every change of a record goes through.
//!
//! `queue.records` maps the 8-byte queue id to the record's *head*: the
//! record's JSON itself when it fits in one value ([`MAX_VALUE`]), or else
//! a 17-octet pointer (tag `0x01`, generation, chunk count, length) to the
//! JSON cut into [`MAX_VALUE`] pieces in `queue.record_chunks` under id ‖
//! generation ‖ chunk number. No value ever exceeds [`MAX_VALUE`], so sled
//! never writes one as a blob file that `flush` would not fsync (see
//! `portcullis_store`), whatever the number of recipients.
//!
//! A write is a compare-and-swap of the head against the head the writer
//! read: the chunks of a new generation are written first, the head swap is
//! the single atomic step readers and a crash see, and the old generation's
//! chunks go after. A reader that meets a head whose chunks have just been
//! replaced reads the head again.

use crate::QueueRecord;
use portcullis_store::{MAX_VALUE, StoreError, Tree, TreeName, check_value_size};

/// First octet of a pointer head; a JSON record starts with `{`.
const POINTER_TAG: u8 = 0x01;

/// Reads of a record that keeps changing under the reader before giving up.
const READ_TRIES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pointer {
    generation: u32,
    chunks: u32,
    len: u64,
}

impl Pointer {
    fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(POINTER_TAG);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.chunks.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }

    fn decode(head: &[u8]) -> Option<Pointer> {
        if head.len() != 17 || head[0] != POINTER_TAG {
            return None;
        }
        Some(Pointer {
            generation: u32::from_be_bytes(head[1..5].try_into().ok()?),
            chunks: u32::from_be_bytes(head[5..9].try_into().ok()?),
            len: u64::from_be_bytes(head[9..17].try_into().ok()?),
        })
    }
}

fn chunk_prefix(id: [u8; 8], generation: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&id);
    k[8..].copy_from_slice(&generation.to_be_bytes());
    k
}

fn chunk_key(id: [u8; 8], generation: u32, n: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..12].copy_from_slice(&chunk_prefix(id, generation));
    k[12..].copy_from_slice(&n.to_be_bytes());
    k
}

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: "queue.records",
        reason: reason.into(),
    }
}

/// The two trees that hold queue records.
#[derive(Clone)]
pub(crate) struct Records {
    pub(crate) heads: Tree,
    chunks: Tree,
}

impl Records {
    pub(crate) fn new(heads: Tree, chunks: Tree) -> Records {
        Records { heads, chunks }
    }

    /// The record of `id` and the head it was read from (for the
    /// conditional write); `None` when there is no record.
    pub(crate) fn read(&self, id: [u8; 8]) -> Result<Option<(Vec<u8>, QueueRecord)>, StoreError> {
        for _ in 0..READ_TRIES {
            let Some(head) = self.heads.get(id)? else {
                return Ok(None);
            };
            if let Some(record) = self.decode(id, &head)? {
                return Ok(Some((head.to_vec(), record)));
            }
            if self.heads.get(id)?.as_deref() == Some(&head[..]) {
                return Err(corrupt(format!(
                    "record {} points at chunks that are missing",
                    u64::from_be_bytes(id)
                )));
            }
        }
        Err(StoreError::Io(
            "a queue record kept changing while it was read".into(),
        ))
    }

    /// Decodes a head read from `queue.records`; `Ok(None)` when it points
    /// at chunks that are no longer all there (replaced since: read again).
    pub(crate) fn decode(
        &self,
        id: [u8; 8],
        head: &[u8],
    ) -> Result<Option<QueueRecord>, StoreError> {
        let Some(p) = Pointer::decode(head) else {
            return QueueRecord::decode(head).map(Some);
        };
        let mut json = Vec::new();
        let mut next = 0u32;
        for item in self.chunks.scan_prefix(chunk_prefix(id, p.generation)) {
            let (key, value) = item?;
            if key.get(12..16) != Some(&next.to_be_bytes()[..]) {
                return Ok(None);
            }
            next += 1;
            json.extend_from_slice(&value);
        }
        if next != p.chunks || json.len() as u64 != p.len {
            return Ok(None);
        }
        QueueRecord::decode(&json).map(Some)
    }

    /// Writes `json` as the record of `id` if the stored head is still
    /// `old` (`None`: only if there is no record). Returns false, having
    /// changed nothing a reader can see, when the head was something else.
    pub(crate) fn swap(
        &self,
        id: [u8; 8],
        old: Option<&[u8]>,
        json: &[u8],
    ) -> Result<bool, StoreError> {
        let old_pointer = old.and_then(Pointer::decode);
        let (head, written) = if json.len() <= MAX_VALUE {
            (json.to_vec(), None)
        } else {
            let mut generation = rand::random::<u32>();
            if old_pointer.map(|p| p.generation) == Some(generation) {
                generation = generation.wrapping_add(1);
            }
            // Leftovers of a write that failed half-way would be read as
            // part of this generation.
            self.remove_chunks(id, generation)?;
            let mut n = 0u32;
            for piece in json.chunks(MAX_VALUE) {
                check_value_size(TreeName::QueueRecordChunks, piece.len())?;
                self.chunks.insert(chunk_key(id, generation, n), piece)?;
                n += 1;
            }
            let pointer = Pointer {
                generation,
                chunks: n,
                len: json.len() as u64,
            };
            (pointer.encode(), Some(generation))
        };
        check_value_size(TreeName::QueueRecords, head.len())?;
        match self.heads.compare_and_swap(id, old, Some(head))? {
            Ok(()) => {
                if let Some(p) = old_pointer {
                    self.remove_chunks(id, p.generation)?;
                }
                Ok(true)
            }
            Err(_) => {
                if let Some(generation) = written {
                    self.remove_chunks(id, generation)?;
                }
                Ok(false)
            }
        }
    }

    /// Removes the record of `id` if its head is still `old`; false when
    /// it was something else (nothing removed).
    pub(crate) fn remove(&self, id: [u8; 8], old: &[u8]) -> Result<bool, StoreError> {
        match self
            .heads
            .compare_and_swap(id, Some(old), None::<Vec<u8>>)?
        {
            Ok(()) => {
                if let Some(p) = Pointer::decode(old) {
                    self.remove_chunks(id, p.generation)?;
                }
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    fn remove_chunks(&self, id: [u8; 8], generation: u32) -> Result<(), StoreError> {
        for key in self.chunks.scan_prefix(chunk_prefix(id, generation)).keys() {
            self.chunks.remove(key?)?;
        }
        Ok(())
    }

    /// Removes chunks no head points at (a crash between writing chunks and
    /// swapping the head, or before removing the old generation).
    pub(crate) fn sweep(&self) -> Result<usize, StoreError> {
        let mut swept = 0;
        for key in self.chunks.iter().keys() {
            let key = key?;
            let live = match (
                key.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()),
                key.get(8..12).and_then(|s| <[u8; 4]>::try_from(s).ok()),
            ) {
                (Some(id), Some(generation)) if key.len() == 16 => self
                    .heads
                    .get(id)?
                    .and_then(|h| Pointer::decode(&h))
                    .is_some_and(|p| p.generation == u32::from_be_bytes(generation)),
                _ => false,
            };
            if !live {
                self.chunks.remove(key)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Every value in the two trees, for tests of the size bound.
    #[cfg(test)]
    pub(crate) fn largest_value(&self) -> usize {
        self.heads
            .iter()
            .values()
            .chain(self.chunks.iter().values())
            .map(|v| v.map(|v| v.len()).unwrap_or(0))
            .max()
            .unwrap_or(0)
    }
}
