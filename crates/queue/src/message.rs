//! A queued message's octets as delivery reads them: never the whole of a
//! large message in memory.
//!
//! A [`MessageData`] holds the part of the message kept in the store (our
//! trace headers and the header section, or all of a small message) in
//! memory, and an open handle on the message's file for the rest (see
//! `files`). Delivery reads it in blocks ([`MessageData::blocks`]), so 50
//! concurrent deliveries of 25 MiB messages hold 50 blocks, not 1.2 GiB.
//! Cloning shares both parts.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The octets of one queued message (trace headers included, CRLF line
/// ends as stored, not dot-stuffed). Cheap to clone; the default is the
/// empty message.
#[derive(Debug, Clone, Default)]
pub struct MessageData {
    /// The start of the message, in memory: always at least its header
    /// section (a spooled message's file holds only what follows it).
    head: Arc<[u8]>,
    /// The rest, in the message's file.
    tail: Option<Tail>,
}

#[derive(Debug, Clone)]
struct Tail {
    file: Arc<File>,
    len: u64,
}

impl From<Vec<u8>> for MessageData {
    fn from(bytes: Vec<u8>) -> MessageData {
        MessageData {
            head: bytes.into(),
            tail: None,
        }
    }
}

impl From<&[u8]> for MessageData {
    fn from(bytes: &[u8]) -> MessageData {
        MessageData {
            head: bytes.into(),
            tail: None,
        }
    }
}

impl MessageData {
    /// `head` followed by the first `len` octets of `file`.
    pub(crate) fn with_file(head: Vec<u8>, file: File, len: u64) -> MessageData {
        MessageData {
            head: head.into(),
            tail: Some(Tail {
                file: Arc::new(file),
                len,
            }),
        }
    }

    /// Octets in the message.
    pub fn len(&self) -> u64 {
        self.head.len() as u64 + self.tail.as_ref().map_or(0, |t| t.len)
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part held in memory: the whole message when it is small, else
    /// at least its header section (what a check of the headers needs).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Reads the message from the start in blocks of at most `size`
    /// octets.
    pub fn blocks(&self, size: usize) -> Blocks<'_> {
        Blocks {
            data: self,
            pos: 0,
            size: size.max(1),
            buf: Vec::new(),
        }
    }

    /// The whole message in one buffer. Only for what is known to be small
    /// (or tests): a large message is read with [`MessageData::blocks`].
    pub async fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        let mut blocks = self.blocks(256 * 1024);
        while let Some(block) = blocks.next().await? {
            out.extend_from_slice(&block);
        }
        Ok(out)
    }

    /// [`MessageData::to_vec`] on the calling thread (for synchronous
    /// callers: the admin side, tests).
    pub(crate) fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = self.head.to_vec();
        if let Some(tail) = &self.tail {
            let start = out.len();
            let len = usize::try_from(tail.len).map_err(io::Error::other)?;
            out.resize(start + len, 0);
            tail.file.read_exact_at(&mut out[start..], 0)?;
        }
        Ok(out)
    }

    /// What a notification may return of the message: all of it when it
    /// is at most `max` octets, else the part in memory (which holds the
    /// header section). Never reads more than `max` octets from the file.
    pub async fn returnable(&self, max: usize) -> io::Result<Cow<'_, [u8]>> {
        if self.tail.is_none() || self.len() > max as u64 {
            return Ok(Cow::Borrowed(&self.head));
        }
        self.to_vec().await.map(Cow::Owned)
    }
}

/// The blocks of a [`MessageData`], in order; see [`Blocks::next`].
#[derive(Debug)]
pub struct Blocks<'a> {
    data: &'a MessageData,
    pos: u64,
    size: usize,
    buf: Vec<u8>,
}

impl Blocks<'_> {
    /// The next block (at most the size asked for), `None` at the end. A
    /// block of the file is read on the blocking pool (a slow disk never
    /// stalls the runtime); an error means the message cannot be sent
    /// whole, so nothing may be sent as its end.
    pub async fn next(&mut self) -> io::Result<Option<Cow<'_, [u8]>>> {
        let head_len = self.data.head.len() as u64;
        if self.pos < head_len {
            let start = self.pos as usize;
            let end = (start + self.size).min(self.data.head.len());
            self.pos = end as u64;
            return Ok(Some(Cow::Borrowed(&self.data.head[start..end])));
        }
        let Some(tail) = &self.data.tail else {
            return Ok(None);
        };
        let offset = self.pos - head_len;
        if offset >= tail.len {
            return Ok(None);
        }
        let n = (tail.len - offset).min(self.size as u64) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(n, 0);
        let file = tail.file.clone();
        let (buf, read) = tokio::task::spawn_blocking(move || {
            let read = file.read_exact_at(&mut buf, offset);
            (buf, read)
        })
        .await
        .map_err(io::Error::other)?;
        self.buf = buf;
        read.map_err(|e| io::Error::new(e.kind(), format!("reading the message file: {e}")))?;
        self.pos += n as u64;
        Ok(Some(Cow::Borrowed(&self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_file(head: &[u8], rest: &[u8]) -> (tempfile::TempDir, MessageData) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(rest)
            .unwrap();
        let file = File::open(&path).unwrap();
        let data = MessageData::with_file(head.to_vec(), file, rest.len() as u64);
        (dir, data)
    }

    /// Blocks of every size put the message together byte for byte, and
    /// none is larger than asked; a block never spans head and file.
    #[tokio::test]
    async fn blocks_cover_head_then_file() {
        let head: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let rest: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        let (_dir, data) = with_file(&head, &rest);
        let mut want = head.clone();
        want.extend_from_slice(&rest);
        assert_eq!(data.len(), want.len() as u64);
        for size in [1, 7, 999, 1000, 1001, 4096, 1 << 20] {
            let mut got = Vec::new();
            let mut blocks = data.blocks(size);
            while let Some(b) = blocks.next().await.unwrap() {
                assert!(b.len() <= size && !b.is_empty());
                got.extend_from_slice(&b);
            }
            assert_eq!(got, want, "block size {size}");
        }
        assert_eq!(data.to_vec().await.unwrap(), want);
    }

    /// A file shorter than the record says is an error, never a short
    /// message.
    #[tokio::test]
    async fn short_file_is_an_error() {
        let (_dir, data) = with_file(b"H: v\r\n\r\n", b"body\r\n");
        let cut = MessageData {
            tail: data.tail.clone().map(|t| Tail { len: 100, ..t }),
            ..data
        };
        let mut blocks = cut.blocks(64);
        assert!(blocks.next().await.unwrap().is_some());
        assert!(blocks.next().await.is_err());
    }

    /// A notification gets the whole of a small message, and only the
    /// part in memory of a large one.
    #[tokio::test]
    async fn returnable_is_whole_only_within_the_limit() {
        let (_dir, data) = with_file(b"H: v\r\n\r\n", b"body\r\n");
        assert_eq!(
            &*data.returnable(14).await.unwrap(),
            b"H: v\r\n\r\nbody\r\n"
        );
        assert_eq!(&*data.returnable(13).await.unwrap(), b"H: v\r\n\r\n");
        let small = MessageData::from(b"x\r\n".to_vec());
        assert_eq!(&*small.returnable(1).await.unwrap(), b"x\r\n");
    }
}
