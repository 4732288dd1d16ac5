//! Delivery status notifications: the bounce, the delay warning and the
//! success report, built as pure values.
//!
//! The message is a `multipart/report; report-type=delivery-status`
//! (RFC 6522) with three parts: a human explanation, the machine-readable
//! `message/delivery-status` (RFC 3464) and the returned message or its
//! header section, as the sender's `RET` asked (RFC 3461 §4.3). Whether a
//! notification may be sent at all follows RFC 3461: never to the null
//! reverse path, and only for recipients whose `NOTIFY` asks for the event
//! (absent `NOTIFY` means `FAILURE,DELAY`, §4.1). Status codes are RFC 3463;
//! the message carries `Auto-Submitted: auto-replied` (RFC 3834).
//!
//! Threat model: the remote reply, the ENVID, the ORCPT and the returned
//! message all come from strangers. Every text placed in a header field or
//! a delivery-status field has its control characters (CR and LF included)
//! folded into spaces, so nothing can start a field or a MIME part of its
//! own; the MIME boundary is random and checked against every part.
//!
//! The caller sends the result from the null reverse path (`MAIL FROM:<>`),
//! with `BODY=8BITMIME` when [`needs_8bit`] says so and `SMTPUTF8` when
//! [`Dsn::smtputf8`] is set.

use portcullis_types::date::rfc5322;
use portcullis_types::{Address, BodyType, DsnRet, Envelope, Notify, Recipient};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened to one recipient, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Permanent failure, or given up after `max_age`.
    Failed,
    /// Still being retried (the delay warning).
    Delayed,
    /// Delivered (reported only when the sender asked, NOTIFY=SUCCESS).
    Delivered,
}

impl Action {
    /// The `Action:` field value of RFC 3464 §2.3.3.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
        }
    }

    /// The status class that goes with the action when the caller's is
    /// unusable.
    fn default_class(self) -> u8 {
        match self {
            Action::Failed => 5,
            Action::Delayed => 4,
            Action::Delivered => 2,
        }
    }
}

/// One recipient's outcome, for the report.
#[derive(Debug, Clone)]
pub struct DsnRecipient<'a> {
    /// The envelope recipient (address, NOTIFY, ORCPT).
    pub recipient: &'a Recipient,
    /// What happened.
    pub action: Action,
    /// The RFC 3463 status, e.g. (5, 1, 1). A class that does not fit the
    /// action is replaced by the action's (failed 5, delayed 4, delivered
    /// 2); class 4 with `Failed` is kept (a message that expired after
    /// temporary failures, as other MTAs report it).
    pub status: (u8, u16, u16),
    /// The remote MTA that gave the reply, if any.
    pub remote_mta: Option<&'a str>,
    /// The remote reply whole (e.g. `550 5.1.1 <u@x>: no such user`), or a
    /// local reason. A text starting with a reply code is reported as
    /// `smtp;`, anything else as `X-Portcullis;`.
    pub diagnostic: Option<&'a str>,
    /// When delivery was last attempted.
    pub last_attempt: Option<SystemTime>,
    /// Until when delivery is retried (written for `Delayed` only).
    pub will_retry_until: Option<SystemTime>,
}

/// The most of the original message a DSN returns (octets): a message up
/// to this size is returned whole when RET=FULL (or RET absent) asks for
/// it; a larger one only by its header section, itself cut to this size.
/// So the server cannot be used to reflect large payloads at a forged
/// sender (RFC 3461 §4.3 lets the MTA return headers only; RFC 6522
/// `text/rfc822-headers` is the type for that).
pub const MAX_RETURNED: usize = 64 * 1024;

/// Everything needed to write one notification.
#[derive(Debug, Clone)]
pub struct DsnRequest<'a> {
    /// Our hostname.
    pub reporting_mta: &'a str,
    /// The envelope of the message reported on.
    pub envelope: &'a Envelope,
    /// The stored message, header section and body; when it is larger
    /// than `max_returned`, at least its header section.
    pub message: &'a [u8],
    /// The size of the whole stored message in octets.
    pub size: u64,
    /// The recipients to report on. Those whose NOTIFY does not ask for
    /// their action are left out.
    pub recipients: Vec<DsnRecipient<'a>>,
    /// The time of the report (its `Date:`).
    pub now: SystemTime,
    /// A message larger than this is returned as headers only, whatever
    /// RET asks, and the header section is cut to it ([`MAX_RETURNED`]).
    pub max_returned: usize,
}

/// A notification ready to be queued from the null reverse path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The recipient of the notification: the original sender.
    pub to: Address,
    /// The whole message, CRLF line ends, no line longer than 998 octets.
    pub message: Vec<u8>,
    /// The message has 8-bit parts: send it with `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The message needs `SMTPUTF8` (the sender's address is not ASCII, or
    /// the returned message is `message/global`).
    pub smtputf8: bool,
}

/// True when the notification must be sent with `BODY=8BITMIME` (and so can
/// only go to a peer that offers 8BITMIME).
pub fn needs_8bit(dsn: &Dsn) -> bool {
    dsn.eight_bit
}

/// True when `n` asks for a notification of `action` (RFC 3461 §4.1):
/// never with NOTIFY=NEVER; with NOTIFY absent, for failures and delays;
/// otherwise exactly for the keywords given. A NOTIFY without any keyword
/// (not a valid parameter) allows nothing; keywords recorded without the
/// `explicit` mark are honoured as given.
pub fn notify_allows(n: &Notify, action: Action) -> bool {
    if n.never {
        return false;
    }
    if !(n.explicit || n.success || n.failure || n.delay) {
        return matches!(action, Action::Failed | Action::Delayed);
    }
    match action {
        Action::Failed => n.failure,
        Action::Delayed => n.delay,
        Action::Delivered => n.success,
    }
}

/// Builds the notification, or `None` when none may be sent: the reverse
/// path is null (never bounce a bounce), or no recipient's NOTIFY asks for
/// its action.
pub fn build(req: &DsnRequest<'_>) -> Option<Dsn> {
    let to = req.envelope.sender.address()?.clone();
    let rcpts: Vec<&DsnRecipient<'_>> = req
        .recipients
        .iter()
        .filter(|r| notify_allows(&r.recipient.notify, r.action))
        .collect();
    if rcpts.is_empty() {
        return None;
    }
    let overall = if rcpts.iter().any(|r| r.action == Action::Failed) {
        Action::Failed
    } else if rcpts.iter().any(|r| r.action == Action::Delayed) {
        Action::Delayed
    } else {
        Action::Delivered
    };
    let mta = clean(req.reporting_mta);
    let returned = choose_returned(req, overall);

    // Part 3 first: its type decides whether the DSN needs SMTPUTF8.
    let (part3, returned_8bit, global) = returned_part(req, overall, &returned);
    let text = human_text(req, &mta, overall, &rcpts, &returned);
    let text_8bit = !text.is_ascii();
    let mut part1 = String::new();
    push_field(&mut part1, "Content-Description", "Notification");
    push_field(&mut part1, "Content-Type", "text/plain; charset=utf-8");
    if text_8bit {
        push_field(&mut part1, "Content-Transfer-Encoding", "8bit");
    }
    part1.push_str("\r\n");
    part1.push_str(strip_final_crlf_str(&text));

    let mut part2 = String::new();
    push_field(&mut part2, "Content-Description", "Delivery report");
    push_field(&mut part2, "Content-Type", "message/delivery-status");
    part2.push_str("\r\n");
    part2.push_str(strip_final_crlf_str(&delivery_status(req, &mta, &rcpts)));

    let parts: [&[u8]; 3] = [part1.as_bytes(), part2.as_bytes(), &part3];
    let boundary = pick_boundary(&parts);
    let eight_bit = text_8bit || returned_8bit;
    let head = report_head(req, &mta, &to, overall, &boundary, eight_bit);
    let mut message = head.into_bytes();
    for part in parts {
        message.extend_from_slice(b"\r\n--");
        message.extend_from_slice(boundary.as_bytes());
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(part);
    }
    message.extend_from_slice(b"\r\n--");
    message.extend_from_slice(boundary.as_bytes());
    message.extend_from_slice(b"--\r\n");

    Some(Dsn {
        smtputf8: to.needs_smtputf8() || global,
        to,
        message,
        eight_bit,
    })
}

/// Part 3: the returned message or its headers, typed as RFC 3462 and RFC
/// 6533 say; with whether it has 8-bit content and whether it is
/// `message/global` (which needs SMTPUTF8).
fn returned_part(
    req: &DsnRequest<'_>,
    overall: Action,
    returned: &Returned<'_>,
) -> (Vec<u8>, bool, bool) {
    let returned_bytes = returned.bytes();
    let returned_8bit = !returned_bytes.is_ascii()
        || (matches!(returned, Returned::Full(_)) && req.envelope.body == BodyType::EightBitMime);
    let global = req.envelope.smtputf8 && !header_section(req.message).is_ascii();
    let (returned_type, returned_desc) = match (returned, global) {
        (Returned::Full(_), false) => ("message/rfc822", "Undelivered Message"),
        (Returned::Full(_), true) => ("message/global", "Undelivered Message"),
        (Returned::Headers(..), false) => ("text/rfc822-headers", "Undelivered Message Headers"),
        (Returned::Headers(..), true) => ("message/global-headers", "Undelivered Message Headers"),
    };
    let returned_desc = match overall {
        Action::Failed => returned_desc.to_string(),
        Action::Delayed => returned_desc.replace("Undelivered", "Delayed"),
        Action::Delivered => returned_desc.replace("Undelivered", "Delivered"),
    };
    let mut part3 = String::new();
    push_field(&mut part3, "Content-Description", &returned_desc);
    push_field(&mut part3, "Content-Type", returned_type);
    if returned_8bit {
        push_field(&mut part3, "Content-Transfer-Encoding", "8bit");
    }
    part3.push_str("\r\n");
    let mut part3 = part3.into_bytes();
    part3.extend_from_slice(strip_final_crlf(returned_bytes));
    (part3, returned_8bit, global)
}

/// The notification's header section and MIME preamble.
fn report_head(
    req: &DsnRequest<'_>,
    mta: &str,
    to: &Address,
    overall: Action,
    boundary: &str,
    eight_bit: bool,
) -> String {
    let now_unix = portcullis_types::date::unix_secs(req.now);
    let subject = match overall {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        Action::Delivered => "Successful Mail Delivery Report",
    };
    let mut head = String::new();
    push_field(
        &mut head,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    push_field(&mut head, "To", &format!("<{to}>"));
    push_field(&mut head, "Subject", subject);
    push_field(&mut head, "Date", &rfc5322(req.now));
    push_field(
        &mut head,
        "Message-ID",
        &format!(
            "<{}.{now_unix}.{:016x}@{mta}>",
            req.envelope.id,
            random_u64()
        ),
    );
    push_field(&mut head, "Auto-Submitted", "auto-replied");
    push_field(&mut head, "MIME-Version", "1.0");
    push_field(
        &mut head,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if eight_bit {
        push_field(&mut head, "Content-Transfer-Encoding", "8bit");
    }
    head.push_str("\r\nThis is a MIME-encapsulated message.\r\n");
    head
}

/// What part 3 carries.
enum Returned<'m> {
    /// The whole message.
    Full(&'m [u8]),
    /// The header section only, and why.
    Headers(&'m [u8], HeadersWhy),
}

#[derive(Clone, Copy)]
enum HeadersWhy {
    /// RET=HDRS.
    Asked,
    /// RET=FULL or absent, and the message is over `max_returned`.
    TooLarge,
    /// BODY=BINARYMIME: the body cannot go in an 8bit part.
    Binary,
    /// REQUIRETLS (RFC 8689 §5): the notice travels without it, so the
    /// body that had to be protected stays out.
    RequireTls,
    /// Not a failure report: nothing is returned.
    NotFailed,
}

impl<'m> Returned<'m> {
    fn bytes(&self) -> &'m [u8] {
        match *self {
            Returned::Full(b) | Returned::Headers(b, _) => b,
        }
    }
}

/// RET=FULL asks for the message in a "failed" DSN (RFC 3461 §4.3); a
/// delay warning or success report carries the headers only, as is common
/// practice (the message is not lost, so there is nothing to give back).
/// Whatever RET says, no more than `max_returned` octets of the original
/// go back: a larger message is returned as (at most that many octets of)
/// its headers.
fn choose_returned<'m>(req: &DsnRequest<'m>, overall: Action) -> Returned<'m> {
    let headers = cap_lines(header_section(req.message), req.max_returned);
    if overall != Action::Failed {
        return Returned::Headers(headers, HeadersWhy::NotFailed);
    }
    if req.envelope.body == BodyType::BinaryMime {
        return Returned::Headers(headers, HeadersWhy::Binary);
    }
    if req.envelope.require_tls {
        return Returned::Headers(headers, HeadersWhy::RequireTls);
    }
    match req.envelope.ret {
        Some(DsnRet::Headers) => Returned::Headers(headers, HeadersWhy::Asked),
        Some(DsnRet::Full) | None
            if req.size > req.max_returned as u64 || req.message.len() as u64 != req.size =>
        {
            Returned::Headers(headers, HeadersWhy::TooLarge)
        }
        Some(DsnRet::Full) | None => Returned::Full(req.message),
    }
}

/// `block` cut after its last whole line (CRLF) within `max` octets.
fn cap_lines(block: &[u8], max: usize) -> &[u8] {
    if block.len() <= max {
        return block;
    }
    match block[..max].windows(2).rposition(|w| w == b"\r\n") {
        Some(i) => &block[..i + 2],
        None => &[],
    }
}

/// The header section with the CRLF of its last field, without the empty
/// line; the whole message when it has no body.
fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match find(message, b"\r\n\r\n") {
        Some(i) => &message[..i + 2],
        None => message,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The CRLF before a boundary delimiter belongs to the delimiter (RFC 2046
/// §5.1.1), so a part's own final CRLF is dropped to be supplied by it.
fn strip_final_crlf(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n").unwrap_or(b)
}

fn strip_final_crlf_str(s: &str) -> &str {
    s.strip_suffix("\r\n").unwrap_or(s)
}

/// Part 1: the explanation for a person.
fn human_text(
    req: &DsnRequest<'_>,
    mta: &str,
    overall: Action,
    rcpts: &[&DsnRecipient<'_>],
    returned: &Returned<'_>,
) -> String {
    let mut t = String::new();
    wrap(
        &mut t,
        "",
        "",
        &format!("This is the mail system at host {mta}."),
    );
    t.push_str("\r\n");
    let intro = match overall {
        Action::Failed => {
            "I'm sorry to have to inform you that your message could not be delivered to \
             one or more recipients."
        }
        Action::Delayed => {
            "This is a warning only; you do not need to resend your message. Delivery to \
             the recipients below has been delayed, and the mail system will keep trying."
        }
        Action::Delivered => {
            "Your message was successfully delivered to the recipients listed below."
        }
    };
    wrap(&mut t, "", "", intro);
    t.push_str("\r\n");
    for r in rcpts {
        recipient_text(&mut t, r);
    }
    wrap(&mut t, "", "", &returned_note(req, returned));
    t
}

/// One recipient of part 1: what happened, and what the remote host said.
fn recipient_text(t: &mut String, r: &DsnRecipient<'_>) {
    let (c, s, d) = status_of(r);
    let what = match r.action {
        Action::Failed => format!("delivery failed, status {c}.{s}.{d}."),
        Action::Delayed => match r.will_retry_until {
            Some(until) => format!(
                "delivery delayed, status {c}.{s}.{d}; still trying until {}.",
                rfc5322(until)
            ),
            None => format!("delivery delayed, status {c}.{s}.{d}; still trying."),
        },
        Action::Delivered => format!("delivered, status {c}.{s}.{d}."),
    };
    wrap(t, "", "    ", &format!("<{}>: {what}", r.recipient.address));
    if let Some(diag) = r.diagnostic {
        let diag = clean(diag);
        let line = match r.remote_mta {
            Some(host) => format!("host {} said: {diag}", clean(host)),
            None => diag,
        };
        wrap(t, "    ", "    ", &line);
    }
    t.push_str("\r\n");
}

/// The last paragraph of part 1: what part 3 carries, and why.
fn returned_note(req: &DsnRequest<'_>, returned: &Returned<'_>) -> String {
    let size = req.size;
    match returned {
        Returned::Full(_) => "The original message is attached.".to_string(),
        Returned::Headers(_, HeadersWhy::Asked) => {
            "Only the headers of the original message are attached, as the sender asked \
             (RET=HDRS)."
                .to_string()
        }
        Returned::Headers(_, HeadersWhy::TooLarge) => format!(
            "Only the headers of the original message are attached: the message is {size} \
             octets, more than the {} octets returned in full.",
            req.max_returned
        ),
        Returned::Headers(_, HeadersWhy::NotFailed) => {
            "The headers of your message are attached for reference.".to_string()
        }
        Returned::Headers(_, HeadersWhy::Binary) => {
            "Only the headers of the original message are attached: its body is binary \
             (BODY=BINARYMIME) and cannot be returned in a notification."
                .to_string()
        }
        Returned::Headers(_, HeadersWhy::RequireTls) => {
            "Only the headers of the original message are attached: it was sent with \
             REQUIRETLS, and this notice cannot promise the same protection (RFC 8689)."
                .to_string()
        }
    }
}

/// Part 2: the `message/delivery-status` fields (RFC 3464 §2.2, §2.3).
fn delivery_status(req: &DsnRequest<'_>, mta: &str, rcpts: &[&DsnRecipient<'_>]) -> String {
    let mut s = String::new();
    push_field(&mut s, "Reporting-MTA", &format!("dns; {mta}"));
    push_field(
        &mut s,
        "X-Portcullis-Queue-ID",
        &req.envelope.id.to_string(),
    );
    if let Some(envid) = &req.envelope.envid {
        push_field(&mut s, "Original-Envelope-Id", &clean(envid));
    }
    push_field(
        &mut s,
        "Arrival-Date",
        &rfc5322(UNIX_EPOCH + Duration::from_secs(req.envelope.received_at)),
    );
    for r in rcpts {
        s.push_str("\r\n");
        if let Some(orcpt) = &r.recipient.orcpt {
            push_field(&mut s, "Original-Recipient", &orcpt_value(orcpt));
        }
        push_field(
            &mut s,
            "Final-Recipient",
            &address_value(&r.recipient.address.to_string()),
        );
        push_field(&mut s, "Action", r.action.as_str());
        let (c, sub, d) = status_of(r);
        push_field(&mut s, "Status", &format!("{c}.{sub}.{d}"));
        if let Some(host) = r.remote_mta {
            push_field(&mut s, "Remote-MTA", &format!("dns; {}", clean(host)));
        }
        if let Some(diag) = r.diagnostic {
            let diag = clean(diag);
            let kind = if looks_like_smtp_reply(&diag) {
                "smtp"
            } else {
                "X-Portcullis"
            };
            push_field(&mut s, "Diagnostic-Code", &format!("{kind}; {diag}"));
        }
        if let Some(t) = r.last_attempt {
            push_field(&mut s, "Last-Attempt-Date", &rfc5322(t));
        }
        if r.action == Action::Delayed
            && let Some(t) = r.will_retry_until
        {
            push_field(&mut s, "Will-Retry-Until", &rfc5322(t));
        }
    }
    s
}

fn status_of(r: &DsnRecipient<'_>) -> (u8, u16, u16) {
    let (c, s, d) = r.status;
    let fits = match r.action {
        Action::Failed => c == 5 || c == 4,
        Action::Delayed => c == 4,
        Action::Delivered => c == 2,
    };
    if fits {
        (c, s, d)
    } else {
        (r.action.default_class(), s, d)
    }
}

/// `NNN` followed by a space, a hyphen or nothing, with a first digit 2..5.
fn looks_like_smtp_reply(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && (b'2'..=b'5').contains(&b[0])
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
}

/// An address as `rfc822; addr`, or for a non-ASCII address the 7-bit
/// `utf-8; ` form of RFC 6533 §3 (utf-8-addr-xtext).
fn address_value(addr: &str) -> String {
    if addr.is_ascii() && !addr.chars().any(|c| c.is_ascii_control()) {
        format!("rfc822; {addr}")
    } else {
        format!("utf-8; {}", utf8_addr_xtext(addr))
    }
}

/// ORCPT as stored (`addr-type;address`, xtext decoded).
fn orcpt_value(orcpt: &str) -> String {
    let (kind, addr) = match orcpt.split_once(';') {
        Some((k, a)) => (clean(k), a.trim()),
        None => (String::new(), orcpt.trim()),
    };
    let kind_ok = !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !addr.is_ascii() || addr.chars().any(|c| c.is_ascii_control()) {
        format!("utf-8; {}", utf8_addr_xtext(addr))
    } else if kind_ok {
        format!("{kind}; {addr}")
    } else {
        format!("rfc822; {addr}")
    }
}

/// RFC 6533 utf-8-addr-xtext: QCHAR as is, everything else `\x{HEX}`.
fn utf8_addr_xtext(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if ('!'..='~').contains(&c) && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", c as u32));
        }
    }
    out
}

/// Text from a stranger made safe for one header field or line: every run of
/// whitespace or control characters (CR and LF included) becomes one space,
/// other non-ASCII characters become `?`, and the ends are trimmed.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(if c.is_ascii() { c } else { '?' });
    }
    out
}

/// Line length we fold at, and the hard limit of RFC 5322 §2.1.1.
const SOFT: usize = 78;
const HARD: usize = 998;
/// Longest piece written before a forced break of a word without spaces.
const PIECE: usize = 900;

/// Appends `Name: value` CRLF, folded at spaces (a CRLF inserted before a
/// space, so unfolding gives back the value exactly) to keep lines within
/// 78 octets where possible. A run without spaces longer than the hard limit
/// is broken with an inserted space. `value` must not contain CR or LF.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let owned = format!(" {value}");
    let mut rest: &str = &owned;
    let mut used = name.len() + 1;
    loop {
        if used + rest.len() <= SOFT {
            out.push_str(rest);
            break;
        }
        // A fold point must leave something other than whitespace before it.
        let first = rest.find(|c| c != ' ').unwrap_or(rest.len());
        let spaces = rest
            .char_indices()
            .filter(|&(i, c)| c == ' ' && i > first)
            .map(|(i, _)| i);
        let soft_room = SOFT.saturating_sub(used);
        let hard_room = HARD.saturating_sub(used);
        let mut best = None;
        for i in spaces {
            if i <= soft_room || best.is_none() {
                best = Some(i);
            }
            if i > soft_room {
                break;
            }
        }
        match best {
            Some(i) if i <= hard_room => {
                out.push_str(&rest[..i]);
                out.push_str("\r\n");
                rest = &rest[i..];
                used = 0;
            }
            _ if used + rest.len() <= HARD => {
                out.push_str(rest);
                break;
            }
            _ => {
                let i = floor_char_boundary(rest, PIECE.min(hard_room).max(first + 1));
                out.push_str(&rest[..i]);
                out.push_str("\r\n ");
                rest = &rest[i..];
                used = 1;
            }
        }
    }
    out.push_str("\r\n");
}

/// Appends `text` as CRLF lines of at most 76 octets where words allow,
/// the first line starting with `first`, the others with `rest`. Words
/// longer than the hard limit are cut.
fn wrap(out: &mut String, first: &str, rest: &str, text: &str) {
    const WIDTH: usize = 76;
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word = word;
        while word.len() > PIECE {
            let i = floor_char_boundary(word, PIECE);
            if !empty {
                out.push_str(&line);
                out.push_str("\r\n");
                line = String::from(rest);
            }
            line.push_str(&word[..i]);
            out.push_str(&line);
            out.push_str("\r\n");
            line = String::from(rest);
            empty = true;
            word = &word[i..];
        }
        if !empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push_str("\r\n");
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        out.push_str(&line);
        out.push_str("\r\n");
    }
}

/// The largest char boundary at or below `i` (at least 1 char in).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    if i == 0 {
        s.char_indices().nth(1).map(|(j, _)| j).unwrap_or(s.len())
    } else {
        i
    }
}

/// A random boundary that occurs in none of the parts. `=_` cannot occur in
/// base64 or quoted-printable text, and the check covers everything else.
fn pick_boundary(parts: &[&[u8]]) -> String {
    loop {
        let b = format!("=_portcullis_{:016x}{:016x}", random_u64(), random_u64());
        if !parts.iter().any(|p| find(p, b.as_bytes()).is_some()) {
            return b;
        }
    }
}

/// 64 random bits for boundaries and Message-IDs.
fn random_u64() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_types::{QueueId, ReversePath};

    const NOW: u64 = 1_795_416_947;

    fn notify(spec: &str) -> Notify {
        if spec.is_empty() {
            return Notify::default();
        }
        let mut n = Notify {
            explicit: true,
            ..Notify::default()
        };
        for word in spec.split(',') {
            match word {
                "NEVER" => n.never = true,
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                other => panic!("bad NOTIFY keyword {other}"),
            }
        }
        n
    }

    /// One recipient row: address, NOTIFY ("" = absent), action, ORCPT,
    /// diagnostic.
    #[derive(Clone, Copy)]
    struct R {
        addr: &'static str,
        notify: &'static str,
        action: Action,
        orcpt: Option<&'static str>,
        diag: Option<&'static str>,
    }

    fn r(addr: &'static str, notify: &'static str, action: Action) -> R {
        R {
            addr,
            notify,
            action,
            orcpt: None,
            diag: Some("550 5.1.1 <u@x>: no such user"),
        }
    }

    /// What to check on a built DSN.
    enum Check {
        /// The top-level Subject.
        Subject(&'static str),
        /// The Content-Type of part 3 (parameters ignored).
        Part3(&'static str),
        /// An (unfolded) line of the delivery-status part.
        Status(&'static str),
        /// No field of the status part or of any header block has this name.
        NoField(&'static str),
        /// The human part contains this (after unwrapping).
        Text(&'static str),
        /// The whole message contains / lacks this.
        Has(&'static str),
        Lacks(&'static str),
        /// `needs_8bit`.
        EightBit(bool),
        /// `smtputf8`.
        Utf8(bool),
        /// The whole DSN is at most this many octets.
        AtMost(usize),
    }
    use Check::*;

    struct Case {
        name: &'static str,
        sender: &'static str,
        rcpts: Vec<R>,
        ret: Option<DsnRet>,
        envid: Option<&'static str>,
        body: BodyType,
        body_len: usize,
        max_returned: usize,
        require_tls: bool,
        expect: Option<Vec<Check>>,
    }

    fn case(name: &'static str, sender: &'static str, rcpts: Vec<R>) -> Case {
        Case {
            name,
            sender,
            rcpts,
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            body_len: 100,
            max_returned: MAX_RETURNED,
            require_tls: false,
            expect: None,
        }
    }

    fn message(body: BodyType, len: usize) -> Vec<u8> {
        let mut m = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: test\r\n\
                      Message-ID: <m1@example.test>\r\n\r\n"
            .to_vec();
        if body == BodyType::EightBitMime {
            m.extend_from_slice("Gr\u{fc}\u{df}e\r\n".as_bytes());
        }
        let start = m.len();
        while m.len() - start < len {
            m.extend_from_slice(b"BODY-MARKER line of the original message\r\n");
        }
        m
    }

    /// A structurally parsed DSN.
    struct Parsed {
        headers: Vec<(String, String)>,
        parts: Vec<(Vec<(String, String)>, String)>,
    }

    fn unfold_fields(block: &str) -> Vec<(String, String)> {
        let mut lines: Vec<String> = Vec::new();
        for line in block.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                lines.last_mut().expect("continuation first").push_str(line);
            } else if !line.is_empty() {
                lines.push(line.to_string());
            }
        }
        lines
            .iter()
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a field: {l:?}"));
                assert!(
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()),
                    "bad field name in {l:?}"
                );
                (n.to_string(), v.trim_start().to_string())
            })
            .collect()
    }

    fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks the wire form (CRLF only, lines ≤ 998) and splits the MIME
    /// structure by hand.
    #[track_caller]
    fn parse(msg: &[u8]) -> Parsed {
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            if b == b'\n' {
                assert!(i > 0 && msg[i - 1] == b'\r', "bare LF at {i}");
            }
        }
        assert!(msg.ends_with(b"\r\n"));
        for line in msg.split(|&b| b == b'\n') {
            assert!(line.len() <= 999, "line of {} octets", line.len());
        }
        let text = String::from_utf8_lossy(msg);
        let (head, body) = text.split_once("\r\n\r\n").expect("header/body split");
        let headers = unfold_fields(head);
        let ct = field(&headers, "Content-Type").expect("Content-Type");
        assert!(
            ct.starts_with("multipart/report;") && ct.contains("report-type=delivery-status"),
            "{ct}"
        );
        let boundary = ct
            .split("boundary=\"")
            .nth(1)
            .and_then(|b| b.split('"').next())
            .expect("boundary");
        assert!(!boundary.is_empty() && boundary.len() <= 70);
        let body = format!("\r\n{body}");
        let segments: Vec<&str> = body.split(&format!("\r\n--{boundary}")).collect();
        assert_eq!(segments.last(), Some(&"--\r\n"), "close delimiter last");
        let parts = segments[1..segments.len() - 1]
            .iter()
            .map(|seg| {
                let seg = seg.strip_prefix("\r\n").expect("CRLF after delimiter");
                let (h, content) = seg.split_once("\r\n\r\n").unwrap_or((seg, ""));
                let h = if seg.starts_with("\r\n") { "" } else { h };
                (unfold_fields(h), content.to_string())
            })
            .collect();
        Parsed { headers, parts }
    }

    fn content_type(fields: &[(String, String)]) -> String {
        field(fields, "Content-Type")
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_ascii_lowercase()
    }

    #[track_caller]
    fn run(c: &Case) {
        let recipients: Vec<Recipient> = c
            .rcpts
            .iter()
            .map(|r| Recipient {
                address: Address::parse(r.addr).unwrap(),
                notify: notify(r.notify),
                orcpt: r.orcpt.map(str::to_string),
            })
            .collect();
        let envelope = Envelope {
            id: QueueId::generate(NOW * 1000, 0),
            sender: ReversePath::parse(c.sender).unwrap(),
            recipients: recipients.clone(),
            ret: c.ret,
            envid: c.envid.map(str::to_string),
            body: c.body,
            smtputf8: !c.sender.is_ascii(),
            received_at: NOW - 3600,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "client.test".into(),
            tls: None,
            authenticated: None,
            size: 0,
            origin: Default::default(),
            require_tls: c.require_tls,
            tls_optional: false,
        };
        let msg = message(c.body, c.body_len);
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let req = DsnRequest {
            reporting_mta: "mx.portcullis.test",
            envelope: &envelope,
            message: &msg,
            size: msg.len() as u64,
            recipients: c
                .rcpts
                .iter()
                .zip(&recipients)
                .map(|(r, rcpt)| DsnRecipient {
                    recipient: rcpt,
                    action: r.action,
                    status: match r.action {
                        Action::Failed => (5, 1, 1),
                        Action::Delayed => (4, 4, 1),
                        Action::Delivered => (2, 0, 0),
                    },
                    remote_mta: Some("mx.remote.test"),
                    diagnostic: r.diag,
                    last_attempt: Some(now - Duration::from_secs(60)),
                    will_retry_until: Some(now + Duration::from_secs(86_400)),
                })
                .collect(),
            now,
            max_returned: c.max_returned,
        };
        let dsn = build(&req);
        let Some(checks) = &c.expect else {
            assert!(dsn.is_none(), "{}: expected no DSN", c.name);
            return;
        };
        let dsn = dsn.unwrap_or_else(|| panic!("{}: expected a DSN", c.name));
        assert_eq!(dsn.to.to_string(), c.sender, "{}", c.name);
        let p = parse(&dsn.message);
        let h = &p.headers;
        assert_eq!(p.parts.len(), 3, "{}: three parts", c.name);
        assert_eq!(
            field(h, "From"),
            Some("Mail Delivery System <MAILER-DAEMON@mx.portcullis.test>")
        );
        assert_eq!(field(h, "To"), Some(format!("<{}>", c.sender).as_str()));
        assert_eq!(field(h, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(field(h, "MIME-Version"), Some("1.0"));
        assert_eq!(field(h, "Date"), Some("Mon, 23 Nov 2026 06:55:47 +0000"));
        let mid = field(h, "Message-ID").expect("Message-ID");
        assert!(
            mid.starts_with(&format!("<{}.{NOW}.", envelope.id))
                && mid.ends_with("@mx.portcullis.test>"),
            "{mid}"
        );
        assert_eq!(content_type(&p.parts[0].0), "text/plain");
        assert_eq!(content_type(&p.parts[1].0), "message/delivery-status");
        let status: Vec<String> = unfold_fields(&p.parts[1].1)
            .into_iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        assert!(status.contains(&"Reporting-MTA: dns; mx.portcullis.test".to_string()));
        assert!(status.contains(&"Arrival-Date: Mon, 23 Nov 2026 05:55:47 +0000".to_string()));
        let text = p.parts[0]
            .1
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let whole = String::from_utf8_lossy(&dsn.message);
        for check in checks {
            match check {
                Subject(s) => assert_eq!(field(h, "Subject"), Some(*s), "{}", c.name),
                Part3(t) => assert_eq!(content_type(&p.parts[2].0), *t, "{}", c.name),
                Status(line) => assert!(
                    status.iter().any(|l| l == line),
                    "{}: no {line:?} in {status:#?}",
                    c.name
                ),
                NoField(name) => {
                    let prefix = format!("{}:", name.to_ascii_lowercase());
                    let mut blocks = vec![h.clone(), unfold_fields(&p.parts[1].1)];
                    blocks.extend(p.parts.iter().map(|(ph, _)| ph.clone()));
                    for b in blocks {
                        for (n, v) in b {
                            assert!(
                                !format!("{n}:").to_ascii_lowercase().starts_with(&prefix),
                                "{}: field {n}: {v}",
                                c.name
                            );
                        }
                    }
                }
                Text(s) => assert!(text.contains(s), "{}: {s:?} not in {text}", c.name),
                Has(s) => assert!(whole.contains(s), "{}: lacks {s:?}", c.name),
                Lacks(s) => assert!(!whole.contains(s), "{}: has {s:?}", c.name),
                EightBit(b) => assert_eq!(needs_8bit(&dsn), *b, "{}", c.name),
                Utf8(b) => assert_eq!(dsn.smtputf8, *b, "{}", c.name),
                AtMost(n) => assert!(
                    dsn.message.len() <= *n,
                    "{}: DSN of {} octets",
                    c.name,
                    dsn.message.len()
                ),
            }
        }
    }

    const A: &str = "a@example.test";
    use Action::{Delayed, Delivered, Failed};

    #[test]
    fn rfc_cases() {
        let cases = vec![
            // RFC 3461 §6.2 / RFC 5321 §4.5.5: never bounce a bounce.
            case("null sender", "", vec![r("b@example.test", "", Failed)]),
            case(
                "NOTIFY=NEVER",
                A,
                vec![r("b@example.test", "NEVER", Failed)],
            ),
            case(
                "explicit SUCCESS only, failure",
                A,
                vec![r("b@example.test", "SUCCESS", Failed)],
            ),
            case(
                "explicit FAILURE only, delay",
                A,
                vec![r("b@example.test", "FAILURE", Delayed)],
            ),
            case(
                "absent NOTIFY, delivered",
                A,
                vec![r("b@example.test", "", Delivered)],
            ),
            Case {
                expect: Some(vec![
                    Subject("Undelivered Mail Returned to Sender"),
                    Status("Final-Recipient: rfc822; b@example.test"),
                    Status("Action: failed"),
                    Status("Status: 5.1.1"),
                    Status("Remote-MTA: dns; mx.remote.test"),
                    Status("Diagnostic-Code: smtp; 550 5.1.1 <u@x>: no such user"),
                    Status("Last-Attempt-Date: Mon, 23 Nov 2026 06:54:47 +0000"),
                    Part3("message/rfc822"),
                    Has("BODY-MARKER"),
                    Text("<b@example.test>: delivery failed, status 5.1.1."),
                    Text("host mx.remote.test said: 550 5.1.1 <u@x>: no such user"),
                    Text("The original message is attached."),
                    Lacks("Will-Retry-Until"),
                    Lacks("Original-Recipient"),
                    Lacks("Original-Envelope-Id"),
                    EightBit(false),
                    Utf8(false),
                ]),
                ..case(
                    "absent NOTIFY, failure",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                expect: Some(vec![
                    Subject("Delayed Mail (still being retried)"),
                    Status("Action: delayed"),
                    Status("Status: 4.4.1"),
                    Status("Will-Retry-Until: Tue, 24 Nov 2026 06:55:47 +0000"),
                    Text("still trying until Tue, 24 Nov 2026 06:55:47 +0000"),
                    Text("do not need to resend"),
                    Part3("text/rfc822-headers"),
                    Lacks("BODY-MARKER"),
                ]),
                ret: Some(DsnRet::Full),
                ..case(
                    "absent NOTIFY, delay",
                    A,
                    vec![r("b@example.test", "", Delayed)],
                )
            },
            Case {
                expect: Some(vec![
                    Subject("Successful Mail Delivery Report"),
                    Status("Action: delivered"),
                    Status("Status: 2.0.0"),
                    NoField("Will-Retry-Until"),
                ]),
                ..case(
                    "NOTIFY=SUCCESS, delivered",
                    A,
                    vec![R {
                        diag: Some("250 2.0.0 Ok: queued as 123"),
                        ..r("b@example.test", "SUCCESS", Delivered)
                    }],
                )
            },
            Case {
                expect: Some(vec![
                    Subject("Undelivered Mail Returned to Sender"),
                    Status("Final-Recipient: rfc822; b@example.test"),
                    Status("Final-Recipient: rfc822; c@example.test"),
                    Status("Action: failed"),
                    Status("Action: delayed"),
                    Lacks("d@example.test"),
                ]),
                ..case(
                    "mixed failed and delayed; NEVER left out",
                    A,
                    vec![
                        r("b@example.test", "", Failed),
                        r("c@example.test", "FAILURE,DELAY", Delayed),
                        r("d@example.test", "NEVER", Failed),
                    ],
                )
            },
            Case {
                expect: Some(vec![Status(
                    "Original-Recipient: rfc822; orig@example.test",
                )]),
                ..case(
                    "ORCPT",
                    A,
                    vec![R {
                        orcpt: Some("rfc822;orig@example.test"),
                        ..r("b@example.test", "", Failed)
                    }],
                )
            },
            Case {
                envid: Some("QQ314159"),
                expect: Some(vec![Status("Original-Envelope-Id: QQ314159")]),
                ..case("ENVID", A, vec![r("b@example.test", "", Failed)])
            },
            Case {
                ret: Some(DsnRet::Headers),
                expect: Some(vec![
                    Part3("text/rfc822-headers"),
                    Has("Message-ID: <m1@example.test>"),
                    Lacks("BODY-MARKER"),
                    Text("as the sender asked (RET=HDRS)"),
                ]),
                ..case("RET=HDRS", A, vec![r("b@example.test", "", Failed)])
            },
            // RFC 8689 §5: the bounce of a REQUIRETLS message travels
            // without it, so its body stays out whatever RET says.
            Case {
                ret: Some(DsnRet::Full),
                require_tls: true,
                expect: Some(vec![
                    Part3("text/rfc822-headers"),
                    Has("Message-ID: <m1@example.test>"),
                    Lacks("BODY-MARKER"),
                    Text("sent with REQUIRETLS"),
                ]),
                ..case("REQUIRETLS", A, vec![r("b@example.test", "", Failed)])
            },
            // Regression: RET=FULL used to return the whole message at any
            // size, so a forged sender could have megabytes reflected at it.
            Case {
                ret: Some(DsnRet::Full),
                body_len: 5_000,
                max_returned: 1_000,
                expect: Some(vec![
                    Part3("text/rfc822-headers"),
                    Has("Subject: test"),
                    Lacks("BODY-MARKER"),
                    Text("more than the 1000 octets returned in full"),
                ]),
                ..case(
                    "RET=FULL, message over the limit: headers only",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                body_len: 5_000,
                max_returned: 1_000,
                expect: Some(vec![
                    Part3("text/rfc822-headers"),
                    Has("Subject: test"),
                    Lacks("BODY-MARKER"),
                    Text("Only the headers of the original message are attached"),
                    Text("more than the 1000 octets returned in full"),
                ]),
                ..case(
                    "absent RET, large message",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                expect: Some(vec![
                    NoField("X-Injected"),
                    NoField("Bcc"),
                    Status(
                        "Diagnostic-Code: smtp; 550 5.1.1 no such user X-Injected: yes \
                         Bcc: victim@example.test --fake Content-Type: text/html",
                    ),
                ]),
                ..case(
                    "CRLF injection in the remote reply",
                    A,
                    vec![R {
                        diag: Some(
                            "550 5.1.1 no such user\r\nX-Injected: yes\nBcc: victim@example.test\r\n\r\n--fake\r\nContent-Type: text/html\0",
                        ),
                        ..r("b@example.test", "", Failed)
                    }],
                )
            },
            Case {
                expect: Some(vec![Status(
                    "Diagnostic-Code: X-Portcullis; connection refused by mx.remote.test",
                )]),
                ..case(
                    "local reason",
                    A,
                    vec![R {
                        diag: Some("connection refused by mx.remote.test"),
                        ..r("b@example.test", "", Failed)
                    }],
                )
            },
            Case {
                body: BodyType::EightBitMime,
                expect: Some(vec![
                    Has("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"),
                    EightBit(true),
                ]),
                ..case(
                    "8BITMIME body returned",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                body: BodyType::EightBitMime,
                ret: Some(DsnRet::Headers),
                expect: Some(vec![Part3("text/rfc822-headers"), EightBit(false)]),
                ..case(
                    "8BITMIME body, headers only",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                body: BodyType::BinaryMime,
                expect: Some(vec![Part3("text/rfc822-headers"), Text("BODY=BINARYMIME")]),
                ..case(
                    "BINARYMIME body: headers only",
                    A,
                    vec![r("b@example.test", "", Failed)],
                )
            },
            Case {
                expect: Some(vec![
                    Status("Final-Recipient: utf-8; j\\x{F6}rg@example.test"),
                    Utf8(true),
                    EightBit(true),
                ]),
                ..case(
                    "non-ASCII sender and recipient",
                    "j\u{f6}rg@example.test",
                    vec![r("j\u{f6}rg@example.test", "", Failed)],
                )
            },
        ];
        for c in &cases {
            run(c);
        }
    }

    /// Issue 11: RET=FULL returns at most the first 64 KiB: a 1 MiB
    /// message bounces with its headers only and the DSN stays small; a
    /// 10 KiB one (and one of exactly 64 KiB) is returned whole.
    #[test]
    fn ret_full_returns_at_most_64_kib() {
        let rcpt = || vec![r("b@example.test", "", Failed)];
        run(&Case {
            ret: Some(DsnRet::Full),
            body_len: 1024 * 1024,
            expect: Some(vec![
                Part3("text/rfc822-headers"),
                Has("Message-ID: <m1@example.test>"),
                Lacks("BODY-MARKER"),
                AtMost(8 * 1024),
            ]),
            ..case("RET=FULL, 1 MiB", A, rcpt())
        });
        run(&Case {
            ret: Some(DsnRet::Full),
            body_len: 10 * 1024,
            expect: Some(vec![
                Part3("message/rfc822"),
                Has("BODY-MARKER"),
                Text("The original message is attached."),
            ]),
            ..case("RET=FULL, 10 KiB", A, rcpt())
        });
        let whole = message(BodyType::SevenBit, 0).len();
        run(&Case {
            ret: Some(DsnRet::Full),
            // `message` fills in 42-octet lines: the largest at the limit.
            body_len: (MAX_RETURNED - whole) / 42 * 42,
            expect: Some(vec![Part3("message/rfc822"), Has("BODY-MARKER")]),
            ..case("RET=FULL, just under 64 KiB", A, rcpt())
        });
    }

    /// A header section larger than the limit is itself cut, after a whole
    /// line.
    #[test]
    fn huge_header_section_is_cut_on_a_line() {
        let mut block = Vec::new();
        for i in 0..5000 {
            block.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        let cut = cap_lines(&block, MAX_RETURNED);
        assert!(cut.len() <= MAX_RETURNED && cut.len() > MAX_RETURNED - 100);
        assert!(cut.ends_with(b"\r\n") && block.starts_with(cut));
        assert_eq!(cap_lines(b"A: b\r\n", 100), b"A: b\r\n");
        assert_eq!(cap_lines(b"no line end at all", 4), b"");
    }

    #[test]
    fn notify_table() {
        let table = [
            ("", Failed, true),
            ("", Delayed, true),
            ("", Delivered, false),
            ("NEVER", Failed, false),
            ("NEVER", Delayed, false),
            ("NEVER", Delivered, false),
            ("SUCCESS", Failed, false),
            ("SUCCESS", Delivered, true),
            ("FAILURE", Failed, true),
            ("FAILURE", Delayed, false),
            ("DELAY", Delayed, true),
            ("DELAY", Failed, false),
            ("SUCCESS,FAILURE,DELAY", Delivered, true),
        ];
        for (spec, action, want) in table {
            assert_eq!(
                notify_allows(&notify(spec), action),
                want,
                "{spec} {action:?}"
            );
        }
        let empty_explicit = Notify {
            explicit: true,
            ..Notify::default()
        };
        assert!(!notify_allows(&empty_explicit, Failed));
    }

    #[track_caller]
    fn folded(name: &str, value: &str) -> String {
        let mut out = String::new();
        push_field(&mut out, name, value);
        assert!(out.ends_with("\r\n"));
        for line in out.trim_end_matches("\r\n").split("\r\n") {
            assert!(line.len() <= HARD, "line of {}", line.len());
            assert!(!line.trim().is_empty(), "whitespace-only line in {out:?}");
        }
        out
    }

    #[test]
    fn folding_keeps_the_value() {
        let long = "550 5.7.1 ".to_string() + &"word ".repeat(60) + "end";
        let out = folded("Diagnostic-Code", &long);
        assert!(out.split("\r\n").all(|l| l.len() <= SOFT));
        assert!(out.matches("\r\n").count() > 3);
        let unfolded = out.trim_end_matches("\r\n").replace("\r\n", "");
        assert_eq!(unfolded, format!("Diagnostic-Code: {long}"));

        // Quoted local parts keep their inner spaces exactly.
        let addr = format!("\"a  b{}\"@example.test", " x".repeat(40));
        let out = folded("To", &addr);
        assert_eq!(
            out.trim_end_matches("\r\n").replace("\r\n", ""),
            format!("To: {addr}")
        );

        // A run without spaces longer than the hard limit is cut.
        let out = folded("Diagnostic-Code", &"x".repeat(3000));
        assert_eq!(out.matches('x').count(), 3000);
        assert!(out.matches("\r\n").count() >= 4);
    }

    #[test]
    fn clean_neutralises_control_characters() {
        assert_eq!(clean(" a\r\nb\tc\0d\u{7f}e  "), "a b c d e");
        assert_eq!(clean("caf\u{e9}"), "caf?");
        assert_eq!(clean("\r\n"), "");
    }

    #[test]
    fn boundary_avoids_the_content() {
        let b = pick_boundary(&[b"--=_portcullis_ none here"]);
        assert!(b.starts_with("=_portcullis_") && b.len() == 45);
        assert_ne!(b, pick_boundary(&[]));
    }

    #[test]
    fn header_section_cases() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
    }
}
