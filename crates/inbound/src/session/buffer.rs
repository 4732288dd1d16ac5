//! The data of the message being received, as it arrives: bounded memory
//! whatever its size.
//!
//! Up to `[limits] spool_threshold` octets a message stays in memory. Past
//! that, once its header section is complete, everything after the header
//! section is appended to a [`Spool`] (written to the store as it arrives,
//! fsynced only by the commit before the 250) and only the header section
//! stays here: it is what the driver needs in memory (forged results
//! removed, the hop count, the Received header, the From domain for DKIM
//! signing). A header section larger than `[limits] max_header_size` is
//! refused, as Exim's `header_maxsize` and Exchange Online's header limit
//! do; RFC 5322 sets no limit of its own.
//!
//! Bare CR and bare LF (RFC 5321 §2.3.8) are found, or normalised, piece by
//! piece with the one octet of state a boundary needs
//! ([`NewlineFilter`]), so a CRLF split between two reads is a line ending
//! and nothing depends on how the client's bytes were split.
//!
//! What is refused is known as soon as it happens (too big, bare newline,
//! header section too big, the store failing): from then on nothing more is
//! kept and any spooled data is removed, but the reply waits for the end of
//! the data so that message content is never read as commands.
//!
//! Memory held at any time: at most `spool_threshold` (or the header
//! section, up to `max_header_size`) plus one read plus one store chunk (64
//! KiB), measured as allocated capacity ([`MessageBuffer::held`]).

use super::config::SessionConfig;
use crate::body::NewlineFilter;
use crate::spooler::Spooler;
use portcullis_config::BareNewline;
use portcullis_queue::{QueueError, Spool};

/// Why a message is refused while (or right after) it arrives.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Larger than `[limits] max_message_size` (as stored: normalising
    /// bare newlines can grow it).
    TooBig,
    /// A bare CR or LF under `bare_newline = "reject"`.
    BareNewline,
    /// A header section larger than `[limits] max_header_size`.
    HeaderTooBig,
    /// The store failed while the data was written to it (logged here:
    /// the reply, 451, cannot say why).
    Unstored,
}

/// The message being received.
#[derive(Debug, Default)]
pub(super) struct MessageBuffer {
    /// All of the message while it is small; once spooling, exactly its
    /// header section (with the empty line that ends it).
    head: Vec<u8>,
    /// Where the header section ends in `head`, once seen.
    header_end: Option<usize>,
    /// How far `head` was searched for the end of the header section.
    searched: usize,
    /// The rest of a large message, in the store.
    spool: Option<Spool>,
    newline: NewlineFilter,
    /// Where the receiver puts the content of one read (dot-unstuffed):
    /// [`MessageBuffer::absorb`] takes it from here.
    pub(super) incoming: Vec<u8>,
    /// Scratch for normalising one read.
    fixed: Vec<u8>,
    /// Octets of the message so far (after normalising), kept or not.
    len: u64,
    /// What is wrong with the message, found so far. Once anything is,
    /// nothing more is kept, but the size and bare newlines are still
    /// followed, so the reply names the same reason however the client's
    /// bytes were split: too big, then bare newline, then header section,
    /// then the store.
    too_big: bool,
    bare: bool,
    header_too_big: bool,
    unstored: bool,
    /// The most memory held at once since the session started.
    peak: usize,
}

impl MessageBuffer {
    /// Forgets the message (removing any spooled data) and frees its
    /// memory; ready for the next one.
    pub(super) fn reset(&mut self) {
        let peak = self.peak;
        *self = MessageBuffer {
            peak,
            ..MessageBuffer::default()
        };
    }

    /// True once the message is too big: nothing about the rest of its
    /// data can change the reply, so it need not even be unstuffed.
    pub(super) fn discarding(&self) -> bool {
        self.too_big
    }

    fn keeping(&self) -> bool {
        !(self.too_big || self.bare || self.header_too_big || self.unstored)
    }

    /// Octets of memory held for the message now (allocated capacity).
    pub(super) fn held(&self) -> usize {
        self.head.capacity()
            + self.incoming.capacity()
            + self.fixed.capacity()
            + self.spool.as_ref().map_or(0, Spool::held)
    }

    /// The most memory held at once since the session started.
    pub(super) fn peak(&self) -> usize {
        self.peak
    }

    /// Makes room in `incoming` for the content of `n` input octets (the
    /// end-of-data scanner may add one held-back CR), exactly, so the
    /// buffer never holds more than one read's worth.
    pub(super) fn reserve_incoming(&mut self, n: usize) {
        self.incoming.reserve_exact(n + 1);
    }

    /// Takes the content in `incoming`: checks it, and keeps it in memory
    /// or writes it to the spool (opened from `spooler` when the message
    /// outgrows `[limits] spool_threshold`).
    pub(super) fn absorb(&mut self, cfg: &SessionConfig, spooler: Option<&Spooler>) {
        let incoming = std::mem::take(&mut self.incoming);
        if !incoming.is_empty() && !self.too_big {
            let mut fixed = std::mem::take(&mut self.fixed);
            let piece = match cfg.bare_newline {
                BareNewline::Reject => {
                    // RFC 5321 §2.3.8: CR and LF only as CRLF.
                    if !self.bare && self.newline.find_bare(&incoming) {
                        self.bare = true;
                    }
                    &incoming[..]
                }
                BareNewline::Normalize => {
                    fixed.clear();
                    fixed.reserve_exact(incoming.len() * 2);
                    self.newline.normalize(&incoming, &mut fixed);
                    &fixed[..]
                }
            };
            self.len += piece.len() as u64;
            if self.len > cfg.limits.max_message_size {
                // RFC 1870 §6.2; the stored copy counts, not only what was
                // sent (normalising grows it).
                self.too_big = true;
            } else if self.keeping() {
                self.keep(piece, cfg, spooler);
            }
            self.fixed = fixed;
            self.peak = self.peak.max(self.held() + incoming.capacity());
            if !self.keeping() {
                self.drop_kept();
            }
        }
        self.incoming = incoming;
        self.incoming.clear();
    }

    /// Keeps `piece`, in memory or in the spool; sets what went wrong.
    fn keep(&mut self, piece: &[u8], cfg: &SessionConfig, spooler: Option<&Spooler>) {
        let limits = &cfg.limits;
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.write(piece) {
                self.unstored(e);
            }
            return;
        }
        self.grow(
            piece.len(),
            limits.spool_threshold.max(limits.max_header_size),
        );
        self.head.extend_from_slice(piece);
        self.find_header_end();
        if self.header_end.unwrap_or(self.head.len()) > limits.max_header_size {
            self.header_too_big = true;
            return;
        }
        if let (Some(end), Some(spooler)) = (self.header_end, spooler)
            && self.head.len() > limits.spool_threshold
        {
            let spooled = spooler.open().and_then(|mut spool| {
                spool.write(&self.head[end..])?;
                Ok(spool)
            });
            match spooled {
                Ok(spool) => {
                    self.head.truncate(end);
                    self.head.shrink_to_fit();
                    self.spool = Some(spool);
                }
                Err(e) => self.unstored(e),
            }
        }
    }

    fn unstored(&mut self, e: QueueError) {
        tracing::error!(error = %e, "could not write message data to the store; answering 451");
        self.unstored = true;
    }

    /// Frees what was kept (and removes what was spooled): the message is
    /// refused.
    fn drop_kept(&mut self) {
        self.head = Vec::new();
        self.header_end = None;
        self.searched = 0;
        self.spool = None;
        self.fixed = Vec::new();
    }

    /// Grows `head` for `n` more octets: doubling, but never past `limit`
    /// unless the octets themselves need it, so the capacity stays within
    /// the limit plus one read.
    fn grow(&mut self, n: usize, limit: usize) {
        let need = self.head.len() + n;
        if need > self.head.capacity() {
            let target = need.max((self.head.capacity() * 2).min(limit));
            self.head.reserve_exact(target - self.head.len());
        }
    }

    /// Looks for the empty line that ends the header section (RFC 5322
    /// §2.1) in what was added to `head`. Bare newlines are refused or
    /// normalised before this, so lines end in CRLF.
    fn find_header_end(&mut self) {
        if self.header_end.is_some() {
            return;
        }
        if self.head.starts_with(b"\r\n") {
            self.header_end = Some(2);
        } else {
            let from = self.searched.saturating_sub(3);
            self.header_end =
                memchr::memmem::find(&self.head[from..], b"\r\n\r\n").map(|i| from + i + 4);
        }
        self.searched = self.head.len();
    }

    /// The data is complete: the message (all of it, or its header section
    /// and the spool holding the rest), or why it is refused. Either way
    /// the buffer is ready for the next message.
    pub(super) fn finish(
        &mut self,
        bare: BareNewline,
    ) -> Result<(Vec<u8>, Option<Spool>), Refusal> {
        // A CR that ends the data (BDAT can end anywhere) is bare.
        let bare = self.bare || (bare == BareNewline::Reject && self.newline.ends_bare());
        let done = if self.too_big {
            Err(Refusal::TooBig)
        } else if bare {
            Err(Refusal::BareNewline)
        } else if self.header_too_big {
            Err(Refusal::HeaderTooBig)
        } else if self.unstored {
            Err(Refusal::Unstored)
        } else {
            Ok((std::mem::take(&mut self.head), self.spool.take()))
        };
        self.reset();
        done
    }
}
