//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030): receiving the message.
//!
//! DATA ends only at `<CRLF>.<CRLF>` (our own scanner, [`super::dot`]);
//! BDAT chunks are counted, never scanned for terminators. Whatever is wrong with a
//! message, its bytes are always consumed to their declared end before we
//! answer, so that message content is never read as commands. The content
//! goes to a [`MessageBuffer`](super::buffer::MessageBuffer), which holds
//! a large message's header section only and writes the rest to the store
//! as it arrives.

use super::arrival::Arrival;
use super::buffer::Refusal;
use super::dot::DotScanner;
use super::{Event, IncomingMessage, Rejection, Session, State, reply};
use crate::hops;
use portcullis_types::Origin;
use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};

impl Session {
    pub(super) fn data(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        match &self.tx {
            None => self.error(out, 503, (5, 5, 1), "Need MAIL command first"),
            Some(tx) if tx.recipients.is_empty() => {
                self.error(out, 554, (5, 5, 1), "No valid recipients")
            }
            Some(tx) if tx.bdat_octets > 0 => {
                self.error(out, 503, (5, 5, 1), "DATA not allowed after BDAT")
            }
            Some(_) => {
                self.body.reset();
                self.state = State::Data(DotScanner::new());
                reply(out, 354, (2, 0, 0), "End data with <CR><LF>.<CR><LF>");
            }
        }
        self.closed_event()
    }

    pub(super) fn bdat(&mut self, size: usize, last: bool, out: &mut Vec<u8>) -> Option<Event> {
        let max = self.cfg.limits.max_message_size;
        let rejection = match &self.tx {
            Some(tx) if !tx.recipients.is_empty() => {
                if tx.bdat_octets.saturating_add(size as u64) > max {
                    Some(Rejection::TooBig)
                } else {
                    None
                }
            }
            _ => Some(Rejection::NoTransaction),
        };
        match rejection {
            Some(r) => self.state = State::BdatDiscard(DummyDataReceiver::new_bdat(size), r),
            None => {
                if self.tx.as_ref().is_some_and(|t| t.bdat_octets == 0) {
                    self.body.reset();
                }
                if let Some(tx) = self.tx.as_mut() {
                    tx.bdat_octets += size as u64;
                }
                self.state = State::Bdat {
                    rcv: BdatReceiver::new(size, last),
                    last,
                };
            }
        }
        // A zero-length chunk is complete at once.
        if size == 0 {
            return self.data_step(out);
        }
        None
    }

    /// Feeds buffered input to the data receiver; returns an event when the
    /// data (or chunk) is complete.
    pub(super) fn data_step(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let input = &self.input[self.pos..];
        let state = std::mem::replace(&mut self.state, State::Command);
        let (next, consumed, done) = match state {
            State::Data(mut scanner) => {
                let s = if self.body.discarding() {
                    // Too big: read to the end without looking.
                    scanner.scan(input, None)
                } else {
                    self.body.reserve_incoming(input.len());
                    scanner.scan(input, Some(&mut self.body.incoming))
                };
                (State::Data(scanner), s.consumed, s.done)
            }
            State::Bdat { mut rcv, last } => {
                let mut iter = input.iter();
                self.body.reserve_incoming(input.len());
                let done = rcv.ingest(&mut iter, &mut self.body.incoming);
                let consumed = input.len() - iter.len();
                (State::Bdat { rcv, last }, consumed, done)
            }
            State::BdatDiscard(mut rcv, why) => {
                let mut iter = input.iter();
                let done = rcv.ingest(&mut iter);
                let consumed = input.len() - iter.len();
                (State::BdatDiscard(rcv, why), consumed, done)
            }
            other => (other, 0, false),
        };
        self.pos += consumed;
        self.body.absorb(&self.cfg, self.spooler.as_ref());
        if !done {
            self.state = next;
            return None;
        }
        match next {
            State::Data(_) | State::Bdat { last: true, .. } => self.complete(out),
            State::Bdat {
                rcv: _,
                last: false,
            } => {
                self.state = State::Command;
                let octets = self.tx.as_ref().map(|t| t.bdat_octets).unwrap_or(0);
                reply(
                    out,
                    250,
                    (2, 0, 0),
                    format_args!("{octets} octets received"),
                );
                None
            }
            State::BdatDiscard(_, Rejection::TooBig) => self.reject_too_big(out),
            State::BdatDiscard(_, Rejection::NoTransaction) => {
                self.state = State::Command;
                self.error(out, 503, (5, 5, 1), "No valid transaction for BDAT");
                self.closed_event()
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    fn reject_too_big(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        self.state = State::Command;
        self.tx = None;
        self.body.reset();
        self.stats.too_big += 1;
        self.refusals.push("message_too_big");
        // RFC 5321 §4.5.3.1.10 / RFC 1870 §6.2.
        self.error(
            out,
            552,
            (5, 3, 4),
            "Message size exceeds fixed maximum message size",
        );
        self.closed_event()
    }

    /// Answers a message refused while it arrived, now that its data has
    /// been read to the end.
    fn refuse(&mut self, refusal: Refusal, out: &mut Vec<u8>) -> Option<Event> {
        self.state = State::Command;
        self.tx = None;
        match refusal {
            Refusal::TooBig => self.reject_too_big(out),
            Refusal::BareNewline => {
                self.stats.bare_newline += 1;
                self.refusals.push("bare_newline");
                // RFC 5321 §2.3.8: CR and LF only as CRLF.
                self.error(
                    out,
                    550,
                    (5, 5, 2),
                    "Message contains bare CR or LF, which RFC 5321 forbids",
                );
                self.closed_event()
            }
            Refusal::HeaderTooBig => {
                self.stats.too_big += 1;
                self.refusals.push("header_too_big");
                // RFC 3463: 5.3.4, too big for the system.
                self.error(
                    out,
                    552,
                    (5, 3, 4),
                    "Message header section exceeds fixed maximum size",
                );
                self.closed_event()
            }
            Refusal::Unstored => {
                // Our failure, not the client's: not counted as its error.
                self.refusals.push("spool_failed");
                reply(
                    out,
                    451,
                    (4, 3, 0),
                    "Local error in processing, try again later",
                );
                None
            }
        }
    }

    /// The message is complete: check it and hand it to the driver.
    fn complete(&mut self, out: &mut Vec<u8>) -> Option<Event> {
        let (data, spooled) = match self.body.finish(self.cfg.bare_newline) {
            Ok(message) => message,
            Err(refusal) => return self.refuse(refusal, out),
        };
        // The header section is always in `data`.
        if hops::too_many_received(&data, self.cfg.limits.max_received_headers) {
            self.state = State::Command;
            self.tx = None;
            self.stats.too_many_hops += 1;
            self.refusals.push("mail_loop");
            // RFC 5321 §6.3: too many Received fields is a mail loop; RFC
            // 3463: 5.4.6 routing loop detected. Not the client's protocol
            // error, so it does not count towards `max_errors`.
            reply(out, 554, (5, 4, 6), "Too many hops");
            return None;
        }
        let Some(tx) = self.tx.take() else {
            self.state = State::Command;
            self.error(out, 503, (5, 5, 1), "No valid transaction");
            return self.closed_event();
        };
        self.state = State::Storing;
        Some(Event::Message(Box::new(IncomingMessage {
            sender: tx.sender,
            recipients: tx.recipients,
            ret: tx.ret,
            envid: tx.envid,
            body_type: tx.body_type,
            smtputf8: tx.smtputf8,
            require_tls: tx.require_tls,
            arrival: self.arrival(),
            data,
            spooled,
            verify: self.verifies(),
        })))
    }

    /// The record of the message ending now.
    pub(super) fn arrival(&self) -> Arrival {
        Arrival {
            client_ip: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            esmtp: self.esmtp,
            tls: self.tls.clone(),
            authenticated: self.auth_user.clone(),
            trusted: self.trusted,
            may_waive_tls: self
                .cfg
                .tls_required_no
                .allows(self.auth_user.is_some(), self.trusted),
            // Recorded where it is known, never guessed later (STYLE 8a).
            origin: if self.auth_user.is_some() {
                Origin::Submission
            } else {
                Origin::Relay
            },
        }
    }
}
