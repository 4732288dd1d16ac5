//! `TLS-Required: No` (RFC 8689 §5): a sender's request that its message be
//! delivered even where the recipient's MTA-STS or DANE policy would refuse
//! it. Honoured only for a client the session recorded as allowed to waive
//! TLS (`[delivery] tls_required_no`), only without REQUIRETLS (§4.1: then
//! the field is ignored), and only when the header section says exactly
//! that; the message's bytes never decide who the sender is.

use crate::session::IncomingMessage;
use portcullis_types::QueueId;
use tracing::{info, warn};

/// The field name, compared without regard to case (RFC 5322 §1.2.2).
const FIELD: &[u8] = b"tls-required";

/// True when message `id` is to be delivered with TLS optional: its
/// header section (at the start of `data`) carries `TLS-Required: No`, it
/// came without REQUIRETLS, and from a client allowed to waive TLS. One
/// log line when the field is present.
pub(super) fn waived(msg: &IncomingMessage, data: &[u8], id: QueueId) -> bool {
    if !says_no(data) {
        return false;
    }
    let client = msg.arrival.client_ip;
    if msg.require_tls {
        info!(queue_id = %id, %client, "TLS-Required: No ignored: the message asked for REQUIRETLS");
        false
    } else if !msg.arrival.may_waive_tls {
        info!(queue_id = %id, %client, "TLS-Required: No ignored: the client may not waive TLS (delivery.tls_required_no)");
        false
    } else {
        warn!(queue_id = %id, %client, user = msg.arrival.authenticated.as_deref().unwrap_or("-"), "TLS-Required: No honoured: delivered without MTA-STS or DANE enforcement");
        true
    }
}

/// True when the header section at the start of `data` has exactly one
/// `TLS-Required` field and its value is `No` (any case, surrounding white
/// space and folding ignored). Two fields, or any other value, are not a
/// clear request and count as absent.
fn says_no(data: &[u8]) -> bool {
    let mut found = None;
    for field in fields(data) {
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&field[..colon], &field[colon + 1..]);
        if !name.eq_ignore_ascii_case(FIELD) {
            continue;
        }
        if found.is_some() {
            return false;
        }
        let unfolded: Vec<u8> = value
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\r' | b'\n'))
            .collect();
        found = Some(unfolded.trim_ascii().eq_ignore_ascii_case(b"no"));
    }
    found.unwrap_or(false)
}

/// The header fields of `data` (each with its continuation lines), up to
/// the empty line that ends the header section.
fn fields(data: &[u8]) -> Vec<&[u8]> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |p| p + 2);
    let head = &data[..head_end];
    let mut starts: Vec<usize> = vec![0];
    for (i, w) in head.windows(3).enumerate() {
        if &w[..2] == b"\r\n" && !matches!(w[2], b' ' | b'\t') {
            starts.push(i + 2);
        }
    }
    starts.push(head.len());
    starts
        .windows(2)
        .map(|w| &head[w[0]..w[1]])
        .filter(|f| !f.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::says_no;

    #[test]
    fn only_one_clear_no_counts() {
        for yes in [
            "TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n",
            "Subject: x\r\ntls-required:   no  \r\n\r\n",
            "Subject: x\r\nTLS-Required:\r\n NO\r\n\r\n",
        ] {
            assert!(says_no(yes.as_bytes()), "{yes:?}");
        }
        for no in [
            "Subject: x\r\n\r\n",
            "TLS-Required: Yes\r\n\r\n",
            "TLS-Required: No thanks\r\n\r\n",
            "TLS-Required: No\r\nTLS-Required: No\r\n\r\n",
            "X-TLS-Required: No\r\n\r\n",
            // In the body, not the header section.
            "Subject: x\r\n\r\nTLS-Required: No\r\n",
            "",
        ] {
            assert!(!says_no(no.as_bytes()), "{no:?}");
        }
    }
}
