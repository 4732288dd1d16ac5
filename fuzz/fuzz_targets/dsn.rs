//! The DSN parameters from the client to the bounce: RET/ENVID on MAIL FROM
//! and NOTIFY/ORCPT on RCPT TO (RFC 3461 §4, xtext-decoded by the session's
//! command parser), relayed on by the delivery client (xtext-encoded again)
//! and written into a delivery status notification (RFC 3464) with the
//! remote server's reply and the returned message.
//!
//! Input: `MAIL parameters \0 RCPT parameters \0 diagnostic \0 remote MTA
//! \0 message`; the first octet picks the action, the status and RET.
//!
//! Promises checked:
//! - what we relay is what we were given: ENVID and ORCPT as the delivery
//!   client encodes them parse back to the values the session stored;
//! - the DSN is well-formed whatever strangers wrote into it: CRLF lines
//!   of at most 998 octets outside the returned message, every line of the
//!   header and of the delivery-status part a field or a continuation, only
//!   the RFC 3464 fields we write, one per recipient where one is due, and
//!   the MIME boundary only where it delimits the three parts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_delivery::client::xtext;
use portcullis_inbound::IncomingMessage;
use portcullis_queue::dsn::{self, Action, DsnRecipient, DsnRequest};
use portcullis_types::{BodyType, DsnRet, Envelope, Origin, QueueId, Recipient, ReversePath};
use smtp_proto::Request;
use std::time::{Duration, UNIX_EPOCH};

mod smtp;

/// One command line's parameters: cut at the first CR or LF so that the
/// input stays one command.
fn params(raw: &[u8]) -> String {
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The message as DATA carries it: dot-stuffed, CRLF lines, terminated.
fn data_section(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// What the session hands to the queue, the parts a DSN is made of.
struct Received {
    sender: ReversePath,
    recipients: Vec<Recipient>,
    ret: Option<DsnRet>,
    envid: Option<String>,
    body: BodyType,
    smtputf8: bool,
    data: Vec<u8>,
}

/// True when the last reply line in `out` begins with `code`.
fn last_reply_starts(out: &[u8], code: &[u8]) -> bool {
    let Some(body) = out.strip_suffix(b"\r\n") else {
        return false;
    };
    let last = body.rsplit(|&b| b == b'\n').next().unwrap_or(body);
    last.starts_with(code)
}

/// Runs EHLO, MAIL, RCPT and DATA through the real session and returns the
/// message as the session hands it to the queue (None when refused).
fn receive(mail: &str, rcpt: &str, message: &[u8]) -> Option<Received> {
    let mut out = Vec::new();
    // Configuration 1: port 25, bare newlines normalised.
    let mut s = smtp::session(1, &mut out);
    let commands = format!(
        "EHLO client.test\r\nMAIL FROM:<sender@client.test> {mail}\r\n\
         RCPT TO:<rcpt@example.test> {rcpt}\r\nDATA\r\n"
    );
    s.feed(commands.as_bytes());
    let mut got = None;
    let mut ids = 0;
    let _ = smtp::drain(&mut s, &mut out, &mut ids, &mut |_| {});
    // Only after a 354 is the message data (else a refused MAIL or RCPT
    // would turn the message's lines into commands).
    if !last_reply_starts(&out, b"354 ") {
        return None;
    }
    s.feed(&data_section(message));
    let _ = smtp::drain(&mut s, &mut out, &mut ids, &mut |m: &IncomingMessage| {
        got = Some(Received {
            sender: m.sender.clone(),
            recipients: m.recipients.clone(),
            ret: m.ret,
            envid: m.envid.clone(),
            body: m.body_type,
            smtputf8: m.smtputf8,
            data: m.data.clone(),
        });
    });
    got
}

/// The ENVID the next hop decodes from our `MAIL FROM ... ENVID=`.
fn relayed_envid(envid: &str) -> Option<String> {
    let line = format!("MAIL FROM:<sender@client.test> ENVID={}\r\n", xtext(envid));
    match Request::parse(&mut line.as_bytes().iter()) {
        Ok(Request::Mail { from }) => from.env_id.map(|e| e.into_owned()),
        other => panic!("our own MAIL FROM does not parse: {line:?}: {other:?}"),
    }
}

/// The ORCPT address the next hop decodes from our `RCPT TO ... ORCPT=`.
fn relayed_orcpt(address: &str) -> Option<String> {
    let line = format!(
        "RCPT TO:<rcpt@example.test> ORCPT=rfc822;{}\r\n",
        xtext(address)
    );
    match Request::parse(&mut line.as_bytes().iter()) {
        Ok(Request::Rcpt { to }) => to.orcpt.map(|o| o.into_owned()),
        other => panic!("our own RCPT TO does not parse: {line:?}: {other:?}"),
    }
}

const FIELDS: &[&str] = &[
    "Reporting-MTA",
    "X-Portcullis-Queue-ID",
    "Original-Envelope-Id",
    "Arrival-Date",
    "Original-Recipient",
    "Final-Recipient",
    "Action",
    "Status",
    "Remote-MTA",
    "Diagnostic-Code",
    "Last-Attempt-Date",
    "Will-Retry-Until",
];

/// Every line of a header block is `Name: value` with a known name or a
/// continuation (leading white space); blank lines separate the
/// per-recipient groups of the delivery-status part. Returns the names.
fn field_names<'a>(block: &'a str, allowed: &[&str]) -> Vec<&'a str> {
    let mut names = Vec::new();
    for line in block.split("\r\n") {
        if line.is_empty() || line.starts_with([' ', '\t']) {
            continue;
        }
        let (name, _) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a field: {line:?}"));
        assert!(
            allowed.contains(&name),
            "field {name:?} written from input: {line:?}"
        );
        names.push(name);
    }
    names
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(5, |&b| b == 0);
    let mail = params(parts.next().unwrap_or_default());
    let rcpt = params(parts.next().unwrap_or_default());
    let diagnostic = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let remote = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let message = parts.next().unwrap_or_default();

    let Some(m) = receive(&mail, &rcpt, message) else {
        return;
    };
    if let Some(envid) = &m.envid {
        assert_eq!(relayed_envid(envid).as_ref(), Some(envid), "ENVID relayed");
    }
    for r in &m.recipients {
        if let Some(orcpt) = &r.orcpt {
            let (_, address) = orcpt.split_once(';').expect("addr-type;address");
            assert_eq!(
                relayed_orcpt(address).as_deref(),
                Some(address),
                "ORCPT relayed"
            );
        }
    }

    let envelope = Envelope {
        id: QueueId::generate(1_795_416_947_000, 7),
        sender: m.sender.clone(),
        recipients: m.recipients.clone(),
        ret: m.ret,
        envid: m.envid.clone(),
        body: m.body,
        smtputf8: m.smtputf8,
        received_at: 1_795_416_947,
        client_ip: "192.0.2.1".parse().expect("an address"),
        helo: "client.test".into(),
        tls: None,
        authenticated: None,
        size: m.data.len() as u64,
        origin: Origin::Relay,
        // RET=HDRS is forced for REQUIRETLS mail: fuzz both.
        require_tls: pick % 2 == 1,
        tls_optional: false,
    };
    let action = match pick % 3 {
        0 => Action::Failed,
        1 => Action::Delayed,
        _ => Action::Delivered,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_795_420_000);
    let recipients: Vec<DsnRecipient<'_>> = envelope
        .recipients
        .iter()
        .map(|r| DsnRecipient {
            recipient: r,
            action,
            status: ((pick >> 2) & 7, u16::from(pick >> 5), 1),
            remote_mta: (!remote.is_empty()).then_some(remote.as_str()),
            diagnostic: (!diagnostic.is_empty()).then_some(diagnostic.as_str()),
            last_attempt: Some(now),
            will_retry_until: Some(now + Duration::from_secs(86_400)),
        })
        .collect();
    let reported = recipients
        .iter()
        .filter(|r| dsn::notify_allows(&r.recipient.notify, r.action))
        .count();
    let req = DsnRequest {
        reporting_mta: "mx.example.test",
        envelope: &envelope,
        message: &m.data,
        size: m.data.len() as u64,
        recipients,
        now,
        max_returned: 1024,
    };
    let Some(d) = dsn::build(&req) else {
        // Never a DSN to the null reverse path (RFC 3461 §6.2), else only
        // when no recipient asked.
        assert!(
            envelope.sender.address().is_none() || reported == 0,
            "no DSN although {reported} recipients asked"
        );
        return;
    };
    assert!(reported > 0, "a DSN nobody asked for");

    // The boundary, from the top-level Content-Type.
    let text = String::from_utf8_lossy(&d.message);
    let b_at = text.find("boundary=\"").expect("a boundary") + "boundary=\"".len();
    let boundary = &text[b_at..b_at + text[b_at..].find('"').expect("closing quote")];
    let delimiter = format!("\r\n--{boundary}\r\n");
    let pieces: Vec<&str> = text.split(delimiter.as_str()).collect();
    assert_eq!(pieces.len(), 4, "the boundary delimits exactly three parts");
    let close = format!("\r\n--{boundary}--\r\n");
    assert!(text.ends_with(&close), "closing delimiter");
    assert_eq!(text.matches(boundary).count(), 5, "boundary inside a part");

    // Everything we wrote (all but the returned message): CRLF lines of at
    // most 998 octets (RFC 5322 §2.1.1), no bare CR or LF.
    let returned_body_at = {
        let p3 = pieces[3];
        let at = p3.find("\r\n\r\n").expect("part 3 header") + 4;
        text.len() - p3.len() + at
    };
    let ours = &d.message[..returned_body_at];
    for line in ours.split(|&b| b == b'\n') {
        assert!(line.len() <= 1000, "line of {} octets", line.len());
    }
    for (i, &b) in ours.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && ours[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(ours.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }

    // The top-level header: only fields we write.
    let head = &pieces[0][..pieces[0].find("\r\n\r\n").expect("end of header")];
    field_names(
        head,
        &[
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Auto-Submitted",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding",
        ],
    );

    // The delivery-status part: only RFC 3464 fields, one group per
    // reported recipient, nothing injected by ENVID, ORCPT or the reply.
    let p2 = pieces[2];
    let status = &p2[p2.find("\r\n\r\n").expect("part 2 header") + 4..];
    let names = field_names(status, FIELDS);
    let count = |n: &str| names.iter().filter(|&&x| x == n).count();
    assert_eq!(count("Reporting-MTA"), 1);
    assert_eq!(
        count("Original-Envelope-Id"),
        usize::from(m.envid.is_some())
    );
    assert_eq!(count("Final-Recipient"), reported);
    assert_eq!(count("Action"), reported);
    assert_eq!(count("Status"), reported);
    assert!(count("Original-Recipient") <= reported);
    assert!(count("Diagnostic-Code") <= reported);
});
