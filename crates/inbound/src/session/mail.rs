//! MAIL FROM (RFC 5321 §4.1.1.2) with the parameters we advertise: SIZE
//! (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID (RFC 3461),
//! REQUIRETLS (RFC 8689, on TLS sessions only).

use super::{Event, SenderCheck, Session, State, Transaction, reply};
use portcullis_config::Role;
use portcullis_types::{BodyType, DsnRet, ReversePath};
use smtp_proto::{
    MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_CONPERM,
    MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom,
};
use std::borrow::Cow;
use std::time::Instant;

impl Session {
    /// MAIL FROM: refused, answered 250, or (SPF to check, a message rate
    /// to count) handed to the driver as [`Event::CheckSender`].
    pub(super) fn mail(
        &mut self,
        from: MailFrom<Cow<'_, str>>,
        out: &mut Vec<u8>,
    ) -> Option<Event> {
        if self.mail_out_of_order(out) || self.mail_parameters_refused(&from, out) {
            return None;
        }
        let sender = match ReversePath::parse(&from.address) {
            Ok(s) => s,
            Err(e) => {
                self.stats.syntax_errors += 1;
                self.error(out, 501, (5, 1, 7), format_args!("Bad sender address: {e}"));
                return None;
            }
        };
        if self.sender_refused(&sender, out) {
            return None;
        }
        let body_type = if from.flags & MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        let ret = if from.flags & MAIL_RET_FULL != 0 {
            Some(DsnRet::Full)
        } else if from.flags & MAIL_RET_HDRS != 0 {
            Some(DsnRet::Headers)
        } else {
            None
        };
        let check = SenderCheck {
            sender: sender.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            client_ip: self.peer,
            // RFC 7208 §2.4: check at MAIL FROM, so that a failing sender is
            // refused before any data; and for the screen, whose greylisting
            // keys on the domain SPF passed for.
            spf: self.verifies() && (self.cfg.verify.spf_at_mail || self.cfg.screen.spf),
            count_message: self.cfg.screen.messages && self.screened(),
        };
        self.tx = Some(Transaction {
            sender,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            require_tls: from.flags & MAIL_REQUIRETLS != 0,
            body_type,
            ret,
            envid: from.env_id.map(Cow::into_owned),
            recipients: Vec::new(),
            bdat_octets: 0,
            spf_pass: None,
        });
        if check.spf || check.count_message {
            // The driver runs the checks and answers through
            // `sender_checked`; nothing is read meanwhile.
            self.state = State::CheckingSender;
            return Some(Event::CheckSender(Box::new(check)));
        }
        reply(out, 250, (2, 1, 0), "Sender OK");
        None
    }

    /// True when the screen's rates and lists apply to this client: not
    /// in a trusted network, not authenticated.
    pub(super) fn screened(&self) -> bool {
        !self.trusted && self.auth_user.is_none()
    }

    /// Refuses MAIL where it may not come (before EHLO, inside a
    /// transaction, before TLS or AUTH on the submission ports); true when
    /// it did.
    fn mail_out_of_order(&mut self, out: &mut Vec<u8>) -> bool {
        if self.helo.is_none() {
            self.error(out, 503, (5, 5, 1), "Send EHLO/HELO first");
        } else if self.tx.is_some() {
            self.error(out, 503, (5, 5, 1), "Nested MAIL command");
        } else if self.cfg.role == Role::Submission && self.tls.is_none() {
            // RFC 6409 §4 / RFC 8314: submission needs TLS before any mail.
            self.error(out, 530, (5, 7, 0), "Must issue a STARTTLS command first");
        } else if self.cfg.role != Role::Smtp && self.auth_user.is_none() && !self.trusted {
            // RFC 6409 §4.3 / RFC 4954 §6: the submission ports are for our
            // users; mail from anyone else (outside trusted networks) goes to
            // port 25, where it is verified.
            self.error(out, 530, (5, 7, 0), "Authentication required");
        } else {
            return false;
        }
        true
    }

    /// Refuses MAIL parameters we did not advertise or cannot honour
    /// (SIZE over the limit, a bad ENVID, a non-ASCII address without
    /// SMTPUTF8); true when it did.
    fn mail_parameters_refused(
        &mut self,
        from: &MailFrom<Cow<'_, str>>,
        out: &mut Vec<u8>,
    ) -> bool {
        // Parameters we did not advertise are refused, not ignored.
        let unoffered = from.flags
            & (MAIL_BODY_BINARYMIME | MAIL_CONPERM | MAIL_BY_NOTIFY | MAIL_BY_RETURN)
            != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.auth.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0;
        if unoffered {
            self.error(out, 555, (5, 5, 4), "Unsupported MAIL parameter");
        } else if !self.esmtp && (from.flags != 0 || from.size != 0 || from.env_id.is_some()) {
            self.error(out, 555, (5, 5, 4), "MAIL parameters need EHLO");
        } else if from.flags & MAIL_REQUIRETLS != 0 && self.tls.is_none() {
            // RFC 8689 §4.1: REQUIRETLS is advertised only over TLS; asked
            // for in clear, the message would already have travelled
            // without it.
            self.error(out, 530, (5, 7, 10), "REQUIRETLS needs a TLS session");
        } else if from
            .env_id
            .as_deref()
            .is_some_and(|e| !super::rcpt::dsn_text_ok(e))
        {
            self.stats.syntax_errors += 1;
            self.error(out, 501, (5, 5, 4), "Bad ENVID parameter syntax");
        } else if from.size as u64 > self.cfg.limits.max_message_size {
            // RFC 1870 §6.1.
            self.stats.too_big += 1;
            self.error(
                out,
                552,
                (5, 3, 4),
                "Message size exceeds fixed maximum message size",
            );
        } else if from.flags & MAIL_SMTPUTF8 == 0 && !from.address.is_ascii() {
            // RFC 6531 §3.7.4.
            self.error(out, 553, (5, 6, 7), "Non-ASCII address requires SMTPUTF8");
        } else {
            return false;
        }
        true
    }

    /// Refuses a sender the authenticated user may not use now: one they
    /// do not own, or over their hourly limit; true when it did.
    fn sender_refused(&mut self, sender: &ReversePath, out: &mut Vec<u8>) -> bool {
        // An authenticated user sends only as an address they own
        // (`[submission] senders`, by default user@<accepted domain>).
        if let (Some(user), Some(address)) = (self.auth_user.clone(), sender.address())
            && !self
                .cfg
                .submission
                .may_send_as(&user, address, &self.cfg.relay)
        {
            tracing::info!(user = %user, from = %address, "sender not owned by the authenticated user");
            let text = format!("<{address}>: Sender address not owned by user {user}");
            self.error(out, 553, (5, 7, 1), text);
            return true;
        }
        // Per-user hourly limit (`[submission] messages_per_hour`): 452, so
        // the client keeps the message and tries later.
        if let Some(user) = &self.auth_user {
            let per_hour = self.cfg.submission.limits_for(user).messages_per_hour;
            if let Err(wait) = self.cfg.rate.check(user, per_hour, Instant::now()) {
                self.stats.user_rate_limited += 1;
                tracing::warn!(user = %user, per_hour, retry_after_secs = wait.as_secs(), "sending rate limit reached");
                reply(
                    out,
                    452,
                    (4, 7, 1),
                    format_args!(
                        "Sending limit of {per_hour} messages per hour reached for {user}; try again in {}",
                        super::auth::minutes(wait)
                    ),
                );
                return true;
            }
        }
        false
    }
}
