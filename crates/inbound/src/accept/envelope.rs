//! What the pipeline writes down about a message: the facts of our
//! Received header and the envelope stored with it, both made from the
//! client's envelope and the session's record of the arrival.

use crate::received::TraceInfo;
use crate::session::IncomingMessage;
use portcullis_types::{Envelope, QueueId};
use std::time::SystemTime;

/// What our Received header says about message `id`, accepted `now`.
pub(super) fn trace<'a>(
    msg: &'a IncomingMessage,
    hostname: &'a str,
    id: QueueId,
    now: SystemTime,
) -> TraceInfo<'a> {
    TraceInfo {
        helo: &msg.arrival.helo,
        client_ip: msg.arrival.client_ip,
        hostname,
        esmtp: msg.arrival.esmtp,
        tls: msg.arrival.tls.as_ref(),
        authenticated: msg.arrival.authenticated.is_some(),
        smtputf8: msg.smtputf8,
        id,
        recipients: &msg.recipients,
        now,
    }
}

/// The envelope stored with message `id` of `size` octets whose data (as
/// received, header section first) is `data`, accepted `now`: the
/// client's envelope and what was recorded about its arrival.
pub(super) fn envelope(
    msg: IncomingMessage,
    data: &[u8],
    id: QueueId,
    now: SystemTime,
    size: u64,
) -> Envelope {
    let tls_optional = super::tls_required::waived(&msg, data, id);
    let arrival = msg.arrival;
    Envelope {
        id,
        sender: msg.sender,
        recipients: msg.recipients,
        ret: msg.ret,
        envid: msg.envid,
        body: msg.body_type,
        smtputf8: msg.smtputf8,
        require_tls: msg.require_tls,
        tls_optional,
        received_at: portcullis_types::date::unix_secs(now),
        client_ip: arrival.client_ip,
        helo: arrival.helo,
        tls: arrival.tls,
        origin: arrival.origin,
        authenticated: arrival.authenticated,
        size,
    }
}
