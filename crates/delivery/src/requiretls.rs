//! REQUIRETLS and `TLS-Required: No` (RFC 8689) on the sending side, as
//! small decisions the deliverer and the executor ask about a message:
//!
//! * a message with REQUIRETLS goes only to hosts whose TLS the plan
//!   requires authenticated (MTA-STS `enforce`, DANE, a route with `tls =
//!   "verify"`: every [`TlsRequirement::is_required`]); with none such it
//!   fails for good with 5.7.30 before anything is contacted. The client
//!   then refuses a peer that does not advertise REQUIRETLS (also 5.7.30)
//!   and passes the parameter on. A route with opportunistic TLS (the
//!   string form) is not authenticated, so a REQUIRETLS message to such a
//!   routed domain bounces.
//! * a message whose sender was allowed to say `TLS-Required: No` is
//!   planned like our own TLS reports: without MTA-STS enforcement,
//!   opportunistic TLS (RFC 8689 §5).
//!
//! The DSN of such a failure is one of our own notices: it never carries
//! REQUIRETLS (§5), and it returns only the headers (the queue's DSN).

use crate::plan::{DeliveryPlan, Outcome, TlsRequirement};
use crate::results::all;
use portcullis_queue::{RecipientOutcome, RecipientResult};
use portcullis_types::{Domain, Envelope};
use tracing::{info, warn};

/// The status of every REQUIRETLS failure (RFC 8689 §5).
pub(crate) const STATUS: (u8, u16, u16) = (5, 7, 30);

/// True when the plan's TLS enforcement is waived for this message: our
/// own TLS reports (RFC 8460 §5.3) and messages whose sender said
/// `TLS-Required: No` and was allowed to (RFC 8689 §5).
pub(crate) fn enforcement_waived(env: &Envelope) -> bool {
    env.origin.is_tls_report() || env.tls_optional
}

/// True when a host that must show `tls` may carry this message: any host
/// without REQUIRETLS, only an authenticated-TLS host with it.
pub(crate) fn hop_allowed(env: &Envelope, tls: &TlsRequirement) -> bool {
    !env.require_tls || tls.is_required()
}

/// The results that end delivery of a REQUIRETLS message to `domain`
/// before any host is contacted: every recipient in `idxs` failed with
/// 5.7.30 when the plan would try hosts but none over authenticated TLS.
/// `None` (go on) for any other message or plan. Logs the waiver of a
/// `TLS-Required: No` message.
pub(crate) fn refused(
    env: &Envelope,
    domain: &Domain,
    plan: &DeliveryPlan,
    idxs: &[usize],
) -> Option<Vec<RecipientResult>> {
    if env.tls_optional && plan.outcome == Outcome::Try {
        warn!(queue_id = %env.id, %domain, client = %env.client_ip, "TLS-Required: No: delivering with opportunistic TLS, MTA-STS and DANE not enforced (RFC 8689 §5)");
    }
    if !env.require_tls || plan.outcome != Outcome::Try {
        return None;
    }
    if plan.candidates().any(|(_, tls)| tls.is_required()) {
        return None;
    }
    info!(queue_id = %env.id, %domain, "REQUIRETLS: no mail host reachable over authenticated TLS (MTA-STS enforce, DANE or a route with tls = verify); bounced with 5.7.30");
    let reason = format!(
        "REQUIRETLS support required: no mail host of {domain} is reachable over authenticated TLS (MTA-STS enforce, DANE or a route with tls = verify)"
    );
    Some(all(idxs, |_| RecipientOutcome::Failed {
        remote_mta: None,
        status: STATUS,
        reason: reason.clone(),
    }))
}
