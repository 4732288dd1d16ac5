//! The hook of DMARC aggregate reports (`[dmarc_reports]`): each verified
//! message whose From domain asks for reports is counted, once its
//! verdict is known and before the reply. Reports themselves are not
//! counted (loop-free, see [`portcullis_dmarc::is_report`]). Counting is
//! two small sled writes, never a wait for the disk; a failure to count
//! is logged and never affects the message.

use std::time::SystemTime;

use portcullis_auth::Verdict;
use portcullis_dmarc::{DmarcRecorder, Observation, is_report};
use tracing::warn;

use crate::session::Arrival;

/// Counts `verdict` of the message whose header section starts `head`.
pub(super) fn count(
    recorder: &DmarcRecorder,
    verdict: &Verdict,
    arrival: &Arrival,
    head: &[u8],
    now: SystemTime,
) {
    let Some(observation) = Observation::from_verdict(verdict, arrival.client_ip, now) else {
        return;
    };
    if is_report(head) {
        recorder.metrics().recorded("report");
        return;
    }
    if let Err(e) = recorder.record(&observation) {
        warn!(error = %e, domain = %observation.header_from, "DMARC result not counted");
    }
}
