//! `mx certificate`: what one MX host showed after STARTTLS, judged as a
//! sender enforcing our policy judges it (RFC 8461 §4.2: PKIX-valid for
//! the MX host name), and not expiring within [`EXPIRY_WARNING`].

use super::starttls::ProbeError;
use super::{Check, EXPIRY_WARNING};
use portcullis_delivery::client::{PeerCertificate, TlsOutcome};
use portcullis_tls::{CertSummary, TlsResultType, WouldVerify, rfc3339};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The check's name.
pub const NAME: &str = "mx certificate";

/// Judges the probe of `host` at `now`. The detail names the host, the
/// reason, and the days left.
pub fn judge(host: &str, probed: &Result<PeerCertificate, ProbeError>, now: SystemTime) -> Check {
    let mut check = judge_inner(host, probed, now);
    check.host = Some(host.to_owned());
    check
}

fn judge_inner(host: &str, probed: &Result<PeerCertificate, ProbeError>, now: SystemTime) -> Check {
    let peer = match probed {
        Ok(peer) => peer,
        Err(e @ ProbeError::DnsTemporary(_)) => {
            return Check::temporary(NAME, format!("{host}: {e}; try again"));
        }
        Err(e) => return Check::gap(NAME, format!("{host}: {e}")),
    };
    match &peer.tls {
        TlsOutcome::Established { .. } => {}
        TlsOutcome::NotOffered => {
            return Check::gap(
                NAME,
                format!(
                    "{host} does not offer STARTTLS: senders enforcing the policy will not deliver there"
                ),
            );
        }
        TlsOutcome::Failed { detail, .. } => {
            return Check::gap(NAME, format!("{host}: STARTTLS failed: {detail}"));
        }
        other => return Check::gap(NAME, format!("{host}: no TLS session ({other:?})")),
    }
    let Some(leaf) = peer.chain.first() else {
        return Check::gap(NAME, format!("{host} sent no certificate"));
    };
    let summary = match CertSummary::from_der(Path::new(host), leaf) {
        Ok(s) => s,
        Err(e) => return Check::gap(NAME, format!("{host}: its certificate cannot be read: {e}")),
    };
    let left = lifetime(summary.not_after, now);
    match &peer.verification {
        Some(WouldVerify::Yes) => {}
        Some(WouldVerify::No { result_type, error }) => {
            return Check::gap(
                NAME,
                format!(
                    "{host}: {} ({error}); {left}",
                    reason(*result_type, host, &summary)
                ),
            );
        }
        None => {
            return Check::gap(
                NAME,
                format!("{host}: its certificate was not verified; {left}"),
            );
        }
    }
    let remaining = summary
        .not_after
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    if remaining < EXPIRY_WARNING {
        return Check::gap(
            NAME,
            format!(
                "{host}: certificate expires within {} days: {left}; renew it now",
                EXPIRY_WARNING.as_secs() / 86_400
            ),
        );
    }
    Check::ok(NAME, format!("{host}: valid for {host}, {left}"))
}

/// Why PKIX refused the certificate, in the operator's words.
fn reason(result_type: TlsResultType, host: &str, summary: &CertSummary) -> String {
    match result_type {
        TlsResultType::CertificateHostMismatch => format!(
            "certificate-host-mismatch: the certificate is for {}, not {host}",
            match summary.names.is_empty() {
                true => summary.subject.clone(),
                false => summary.names.join(", "),
            }
        ),
        TlsResultType::CertificateExpired => {
            "certificate-expired: the certificate is expired or not yet valid".to_owned()
        }
        TlsResultType::CertificateNotTrusted => format!(
            "certificate-not-trusted: issued by {}, not a trusted CA",
            summary.issuer
        ),
        other => format!("{other}: the certificate does not validate"),
    }
}

/// `expires in N days (date)` (days begun count: a certificate issued for
/// 5 days says 5 a moment later) or `expired N days ago (date)`.
fn lifetime(not_after: SystemTime, now: SystemTime) -> String {
    let date = rfc3339(not_after);
    match not_after.duration_since(now) {
        Ok(d) => format!("expires in {} days ({date})", d.as_secs().div_ceil(86_400)),
        Err(e) => format!(
            "expired {} days ago ({date})",
            e.duration().as_secs() / 86_400
        ),
    }
}
