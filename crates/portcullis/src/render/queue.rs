//! `queue ...`: the queue as a table, and one message as an operator reads
//! it (envelope, recipients, attempt history, header section), in the
//! manner of Postfix's `postcat -q`.

use super::text::{escape_terminal, fields};
use crate::dates::format_rfc3339;
use portcullis_admin::{
    AttemptEntry, QueueDeleted, QueueDetail, QueueEntry, QueueEnvelope, QueueRetried, render_table,
};
use portcullis_types::{BodyType, DsnRet, Envelope, Notify};

/// `queue list`: one row per message.
pub fn list(entries: &[QueueEntry]) -> String {
    if entries.is_empty() {
        return "queue is empty".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            // Senders, addresses and remote replies come from the network:
            // no control character reaches the operator's terminal.
            vec![
                e.id.clone(),
                escape_terminal(&e.sender),
                escape_terminal(
                    &e.recipients
                        .iter()
                        .map(|r| format!("{} ({})", r.address, r.state))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                e.size.to_string(),
                e.attempts.to_string(),
                escape_terminal(e.last_error.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    render_table(
        &[
            "ID",
            "SENDER",
            "RECIPIENTS",
            "SIZE",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// `queue show`: the envelope, the recipients with their states, the
/// attempt history and the header section, each under a `*** NAME ***`
/// line.
pub fn show(d: &QueueDetail) -> String {
    let id = &d.entry.id;
    // The headers are the sender's bytes: escaped, so that they cannot
    // drive the operator's terminal.
    let headers = d.headers.trim_end().replace("\r\n", "\n");
    [
        format!("*** ENVELOPE {id} ***\n{}", envelope(d)),
        format!("*** RECIPIENTS {id} ***\n{}", recipients(&d.envelope)),
        format!("*** HISTORY {id} ***\n{}", history(&d.envelope)),
        format!("*** HEADERS {id} ***\n{}", escape_terminal(&headers)),
    ]
    .join("\n\n")
}

/// The envelope fields, one per line.
fn envelope(d: &QueueDetail) -> String {
    let e: &Envelope = &d.envelope.envelope;
    let mut rows = vec![
        row("arrival", format_rfc3339(e.received_at)),
        row("origin", e.origin.as_str().to_owned()),
        row("client", format!("{} [{}]", e.helo, e.client_ip)),
        row(
            "tls",
            e.tls.as_ref().map_or_else(
                || "none".to_owned(),
                |t| format!("{} {}", t.version, t.cipher),
            ),
        ),
    ];
    if let Some(user) = &e.authenticated {
        rows.push(row("authenticated", user.clone()));
    }
    rows.push(row("sender", format!("<{}>", e.sender)));
    rows.push(row(
        "size",
        format!("{} octets, {}", e.size, body_type(e.body)),
    ));
    if e.ret.is_some() || e.envid.is_some() {
        rows.push(row("dsn", dsn(e)));
    }
    if e.smtputf8 {
        rows.push(row("smtputf8", "yes".to_owned()));
    }
    if e.require_tls {
        rows.push(row(
            "requiretls",
            "yes: only to an authenticated hop that offers REQUIRETLS".to_owned(),
        ));
    }
    if e.tls_optional {
        rows.push(row(
            "tls-required",
            "no: the sender waived the recipient's TLS policy".to_owned(),
        ));
    }
    rows.push(row("attempts", d.entry.attempts.to_string()));
    if let Some(next) = d.entry.next_attempt {
        rows.push(row("next attempt", format_rfc3339(next)));
    }
    if let Some(error) = &d.envelope.body_error {
        rows.push(row("body", error.clone()));
    }
    fields(&rows)
}

fn row(name: &str, value: String) -> Vec<String> {
    vec![format!("{name}:"), value]
}

/// BODY= of MAIL FROM (RFC 6152, RFC 3030), as written there.
fn body_type(b: BodyType) -> &'static str {
    match b {
        BodyType::SevenBit => "7bit",
        BodyType::EightBitMime => "8bitmime",
        BodyType::BinaryMime => "binarymime",
    }
}

/// RET and ENVID of the DSN extension (RFC 3461).
fn dsn(e: &Envelope) -> String {
    let ret = match e.ret {
        Some(DsnRet::Full) => "ret full",
        Some(DsnRet::Headers) => "ret headers",
        None => "ret -",
    };
    match &e.envid {
        Some(envid) => format!("{ret}, envid {envid}"),
        None => ret.to_owned(),
    }
}

/// One row per recipient: its state, what it asked to be notified of, the
/// host that answered last and its reply.
fn recipients(q: &QueueEnvelope) -> String {
    let rows: Vec<Vec<String>> = q
        .envelope
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let state = q.recipient_states.get(i);
            vec![
                r.address.to_string(),
                state.map_or("-", |s| s.status.as_str()).to_owned(),
                notify(&r.notify),
                state
                    .and_then(|s| s.remote_mta.clone())
                    .unwrap_or_else(|| "-".into()),
                state.and_then(|s| s.last_reply.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    render_table(&["ADDRESS", "STATE", "NOTIFY", "MTA", "LAST REPLY"], &rows)
        .trim_end()
        .to_string()
}

/// NOTIFY= as the client gave it (RFC 3461 §4.1); `-` when it gave none.
fn notify(n: &Notify) -> String {
    if !n.explicit {
        return "-".into();
    }
    if n.never {
        return "never".into();
    }
    [
        (n.success, "success"),
        (n.failure, "failure"),
        (n.delay, "delay"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(",")
}

/// The attempts, each with its per-recipient outcomes.
fn history(q: &QueueEnvelope) -> String {
    if q.history.is_empty() {
        return "no delivery attempt yet".into();
    }
    let mut lines: Vec<String> = q.history.iter().map(attempt).collect();
    if let Some(note) = &q.history_note {
        lines.push(format!("({note})"));
    }
    escape_terminal(&lines.join("\n"))
}

fn attempt(a: &AttemptEntry) -> String {
    let mut text = format!("attempt {} at {}", a.number, format_rfc3339(a.at));
    if a.outcomes.is_empty() {
        text.push_str(" (no outcome recorded)");
    }
    for o in &a.outcomes {
        text.push_str("\n    ");
        text.push_str(&o.replace(['\r', '\n'], " "));
    }
    text
}

/// `queue retry`.
pub fn retried(r: &QueueRetried) -> String {
    format!("{} message(s) due for delivery now", r.scheduled)
}

/// `queue delete`.
pub fn deleted(d: &QueueDeleted) -> String {
    if d.bounced {
        format!(
            "deleted {}; a non-delivery report to the sender is queued",
            d.deleted
        )
    } else {
        format!("deleted {}", d.deleted)
    }
}
