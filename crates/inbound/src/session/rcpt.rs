//! RCPT TO (RFC 5321 §4.1.1.3): anti-relay, the recipient limit and the DSN
//! parameters NOTIFY and ORCPT (RFC 3461 §4.1, §4.2); then, when the
//! screen checks recipients, its decision through the driver
//! ([`Event::CheckRecipient`], [`Session::recipient_checked`]).

use super::{Event, RecipientCheck, Session, State, reply};
use portcullis_types::{Address, Notify, Recipient, Reply};
use smtp_proto::{
    RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};
use std::borrow::Cow;

impl Session {
    /// RCPT TO: refused, added with 250, or (the screen checks
    /// recipients) handed to the driver as [`Event::CheckRecipient`].
    pub(super) fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>, out: &mut Vec<u8>) -> Option<Event> {
        if self.rcpt_refused(&to, out) {
            return None;
        }
        let address = self.recipient_address(&to.address, out)?;
        let recipient = Recipient {
            address,
            notify: notify(to.flags),
            orcpt: to.orcpt.map(|o| format!("rfc822;{o}")),
        };
        let tx = self.tx.as_ref()?;
        if self.cfg.screen.recipients {
            // Facts the session recorded, never the message's bytes.
            let check = RecipientCheck {
                client_ip: self.peer,
                trusted: self.trusted,
                authenticated: self.auth_user.clone(),
                sender: tx.sender.clone(),
                spf_pass: tx.spf_pass.clone(),
                recipient: recipient.address.clone(),
            };
            self.state = State::CheckingRecipient(Box::new(recipient));
            return Some(Event::CheckRecipient(Box::new(check)));
        }
        self.add_recipient(recipient, out);
        None
    }

    fn add_recipient(&mut self, recipient: Recipient, out: &mut Vec<u8>) {
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(recipient);
        }
        reply(out, 250, (2, 1, 5), "Recipient OK");
    }

    /// The screen decided the recipient of the last
    /// [`Event::CheckRecipient`]: `None` adds it (250), else `refusal` is
    /// the answer (550 5.1.1 unknown user, 554 5.7.1 listed client, 451
    /// rates, greylisting, verification for now), counted in
    /// [`Stats::screen_refused`](super::Stats::screen_refused); a
    /// permanent refusal counts towards `[limits] max_errors` (a
    /// dictionary attack ends there), every refusal towards
    /// `max_junk_commands`. Does nothing unless a recipient is waiting.
    pub fn recipient_checked(&mut self, refusal: Option<&Reply>, out: &mut Vec<u8>) {
        let recipient = match std::mem::replace(&mut self.state, State::Command) {
            State::CheckingRecipient(r) => r,
            other => {
                self.state = other;
                return;
            }
        };
        match refusal {
            None => self.add_recipient(*recipient, out),
            Some(r) => {
                self.stats.screen_refused += 1;
                r.write_to(out);
                if r.is_permanent() {
                    self.count_error(out);
                }
                self.count_junk(out);
            }
        }
    }

    /// Refuses RCPT out of order, with parameters we did not advertise or
    /// cannot take, over the recipient limits, or with a non-ASCII
    /// address without SMTPUTF8; true when it did.
    fn rcpt_refused(&mut self, to: &RcptTo<Cow<'_, str>>, out: &mut Vec<u8>) -> bool {
        let Some(tx) = self.tx.as_ref() else {
            self.error(out, 503, (5, 5, 1), "Need MAIL command first");
            return true;
        };
        let smtputf8 = tx.smtputf8;
        let count = tx.recipients.len();
        if to.flags & (RCPT_CONNEG | RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || to.rrvs != 0 {
            self.error(out, 555, (5, 5, 4), "Unsupported RCPT parameter");
        } else if !self.esmtp && (to.flags != 0 || to.orcpt.is_some()) {
            self.error(out, 555, (5, 5, 4), "RCPT parameters need EHLO");
        } else if to.orcpt.as_deref().is_some_and(|o| !dsn_text_ok(o)) {
            self.stats.syntax_errors += 1;
            self.error(out, 501, (5, 5, 4), "Bad ORCPT parameter syntax");
        } else if count >= self.cfg.limits.max_recipients as usize {
            // RFC 5321 §4.5.3.1.10: 452 and the client sends the rest later.
            self.stats.too_many_recipients += 1;
            reply(out, 452, (4, 5, 3), "Too many recipients");
        } else if !self.user_recipients_full(count, out) {
            if smtputf8 || to.address.is_ascii() {
                return false;
            }
            self.error(out, 553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8");
        }
        true
    }

    /// Refuses a recipient past the authenticated user's per-message
    /// limit, `count` being taken already; true when it did.
    fn user_recipients_full(&mut self, count: usize, out: &mut Vec<u8>) -> bool {
        let Some(user) = &self.auth_user else {
            return false;
        };
        let per_message = self.cfg.submission.limits_for(user).recipients_per_message;
        if per_message == 0 || count < per_message as usize {
            return false;
        }
        // 452: the client sends the rest in another transaction.
        self.stats.user_recipient_limited += 1;
        tracing::info!(user = %user, per_message, "recipient limit of the user reached");
        reply(
            out,
            452,
            (4, 7, 1),
            format_args!("Too many recipients: {user} may send to {per_message} per message"),
        );
        true
    }

    /// The recipient's address, if it is well formed and we may take mail
    /// for it (anti-relay); otherwise the refusal is written.
    fn recipient_address(&mut self, given: &str, out: &mut Vec<u8>) -> Option<Address> {
        // smtp-proto returns "" for the bare <Postmaster> of RFC 5321 §4.5.1,
        // which is ours by definition.
        let parsed = if given.is_empty() {
            match self.cfg.relay.accepted_domains.first() {
                Some(d) => Ok(Address {
                    local: "postmaster".into(),
                    domain: d.clone(),
                }),
                None => {
                    self.error(out, 550, (5, 1, 1), "No postmaster here");
                    return None;
                }
            }
        } else {
            Address::parse(given)
        };
        let address = match parsed {
            Ok(a) => a,
            Err(e) => {
                self.stats.syntax_errors += 1;
                let text = format!("Bad recipient address: {e}");
                self.error(out, 501, (5, 1, 3), text);
                return None;
            }
        };
        // Anti-relay: the domain (not any %-hack or source route, which the
        // address keeps as local part or drops) decides.
        // An authenticated user may relay to any domain.
        let may_relay = self.trusted || self.auth_user.is_some();
        if !may_relay && !self.cfg.relay.accepts(&address.domain) {
            self.stats.relay_denied += 1;
            tracing::info!(rcpt = %address, "relay access denied");
            let text = format!("<{address}>: Relay access denied");
            self.error(out, 554, (5, 7, 1), text);
            return None;
        }
        Some(address)
    }
}

/// The NOTIFY parameter (RFC 3461 §4.1) from smtp-proto's flags.
fn notify(flags: u64) -> Notify {
    Notify {
        success: flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: flags & RCPT_NOTIFY_FAILURE != 0,
        delay: flags & RCPT_NOTIFY_DELAY != 0,
        never: flags & RCPT_NOTIFY_NEVER != 0,
        explicit: flags
            & (RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER)
            != 0,
    }
}

/// True when a decoded ENVID or ORCPT address is printable US-ASCII, as
/// RFC 3461 §4.2 (an `rfc822` ORCPT, the only type smtp-proto accepts) and
/// §4.4 (ENVID) require. Anything else is refused (501 5.5.4, as Postfix
/// does): smtp-proto decodes xtext `+HH` to the character U+00HH rather
/// than to the octet, so `caf+C3+A9` would be stored as `cafÃ©` and relayed
/// (xtext of its UTF-8) as other octets than the client sent; control
/// characters have no place in either.
pub(super) fn dsn_text_ok(text: &str) -> bool {
    text.bytes().all(|b| (b' '..=b'~').contains(&b))
}
