//! `dmarc list|send`.

use super::refused::Refused;
use crate::state::DmarcAccess;
use portcullis_admin::{DmarcEntry, DmarcOutcome, DmarcSendResult, Response};
use portcullis_dmarc::{Day, SendOutcome};

/// Why `dmarc` commands are refused with reporting off.
const DMARC_DISABLED: &str =
    "DMARC aggregate reports are disabled ([dmarc_reports] enabled = false)";

impl DmarcAccess {
    fn reports(&self) -> Result<&crate::dmarc::DmarcReports, Refused> {
        self.reports
            .as_ref()
            .ok_or_else(|| Response::error(DMARC_DISABLED))
    }

    pub(super) async fn list(&self) -> Result<Vec<DmarcEntry>, Refused> {
        let reports = self.reports()?;
        let today = Day::of(std::time::SystemTime::now());
        let pending = reports
            .sender
            .list()
            .await
            .map_err(|e| Response::error(e.to_string()))?;
        Ok(pending
            .into_iter()
            .map(|p| DmarcEntry {
                day: p.day.to_string(),
                state: if p.day >= today {
                    "collecting"
                } else {
                    "pending"
                }
                .to_owned(),
                domain: p.domain,
                rows: p.rows,
                messages: p.messages,
                rua: p.published.rua.into_iter().map(|r| r.uri).collect(),
            })
            .collect())
    }

    pub(super) async fn send(&self) -> Result<DmarcSendResult, Refused> {
        let reports = self.reports()?;
        let outcomes = reports
            .sender
            .send_now()
            .await
            .into_iter()
            .map(|o| match o {
                SendOutcome::Sent {
                    day,
                    domain,
                    to,
                    queue_id,
                } => DmarcOutcome {
                    day,
                    domain,
                    outcome: "sent".to_owned(),
                    to: Some(to),
                    detail: Some(queue_id),
                },
                SendOutcome::Skipped {
                    day,
                    domain,
                    to,
                    reason,
                } => DmarcOutcome {
                    day,
                    domain,
                    outcome: "skipped".to_owned(),
                    to: Some(to),
                    detail: Some(reason),
                },
                SendOutcome::Failed {
                    day,
                    domain,
                    error,
                    gave_up,
                } => DmarcOutcome {
                    day,
                    domain,
                    outcome: if gave_up { "gave-up" } else { "failed" }.to_owned(),
                    to: None,
                    detail: Some(error),
                },
            })
            .collect();
        Ok(DmarcSendResult { outcomes })
    }
}
