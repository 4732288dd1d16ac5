//! `tlsrpt list|show|send`.

use super::refused::{Refused, parse_domain};
use crate::state::TlsRptAccess;
use portcullis_admin::{Response, TlsrptEntry, TlsrptOutcome, TlsrptSendResult};
use portcullis_tlsrpt::{Day, ReportInfo, SendOutcome, TlsRptError, build_report};

/// Why `tlsrpt send` (and `show`, when it lacks the report's settings) is
/// refused with reporting off.
const TLSRPT_DISABLED: &str = "TLS reporting is disabled ([tlsrpt] enabled = false)";

/// The `tlsrpt` requests: from the sender when reporting is on, otherwise
/// straight from the recorder (sessions are recorded either way).
impl TlsRptAccess {
    /// The current UTC day, by the recorder's clock.
    fn today(&self) -> Day {
        Day::of(self.recorder.clock().now())
    }

    pub(super) async fn list(&self) -> Result<Vec<TlsrptEntry>, Refused> {
        if let Some(sender) = &self.sender {
            // In cluster mode: every node's counts and the shared state.
            return Ok(sender
                .summaries()
                .await
                .map_err(tlsrpt_err)?
                .into_iter()
                .map(|r| TlsrptEntry {
                    day: r.day,
                    domain: r.domain,
                    successful: r.successful,
                    failed: r.failed,
                    destinations: r.destinations,
                    state: r.state.as_str().to_owned(),
                    last_error: r.last_error,
                })
                .collect());
        }
        let recorder = &self.recorder;
        let today = self.today();
        let mut reports: Vec<(Day, String)> = recorder
            .reports()
            .map_err(tlsrpt_err)?
            .into_iter()
            .collect();
        reports.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = Vec::new();
        for (day, domain) in reports {
            let aggs = recorder.aggregates(day, &domain).map_err(tlsrpt_err)?;
            out.push(TlsrptEntry {
                day: day.to_string(),
                successful: aggs.iter().map(|a| a.successful).sum(),
                failed: aggs.iter().map(|a| a.failed()).sum(),
                domain,
                destinations: Vec::new(),
                state: if day >= today {
                    "collecting"
                } else {
                    "disabled"
                }
                .to_owned(),
                last_error: None,
            });
        }
        Ok(out)
    }

    pub(super) async fn show(
        &self,
        domain: &str,
        day: Option<&str>,
    ) -> Result<serde_json::Value, Refused> {
        let day = day
            .map(|d| d.parse::<Day>().map_err(|e| Response::error(e.to_string())))
            .transpose()?;
        if let Some(sender) = &self.sender {
            return sender.report_json(domain, day).await.map_err(tlsrpt_err);
        }
        // Reporting is off: the report as it would be sent, if the settings
        // naming the reporter are there.
        let Some(reporter) = self.settings.reporter() else {
            return Err(Response::error(format!(
                "{TLSRPT_DISABLED}, and organization, contact and submitter are not all set: no report to show"
            )));
        };
        let info = ReportInfo {
            organization: reporter.organization,
            contact: reporter.contact,
            submitter: reporter.submitter,
        };
        let domain = parse_domain(domain)?.to_string();
        let recorder = &self.recorder;
        let day = match day {
            Some(d) => d,
            None => recorder
                .reports()
                .map_err(tlsrpt_err)?
                .into_iter()
                .filter(|(_, d)| *d == domain)
                .map(|(day, _)| day)
                .max()
                .ok_or_else(|| {
                    tlsrpt_err(TlsRptError::NoData {
                        domain: domain.clone(),
                        day: "any day".to_owned(),
                    })
                })?,
        };
        let aggs = recorder.aggregates(day, &domain).map_err(tlsrpt_err)?;
        let report_id = info.new_report_id(day, &domain);
        build_report(&info, day, &domain, &report_id, &aggs)
            .map(|r| r.json)
            .map_err(tlsrpt_err)
    }

    pub(super) async fn send(&self) -> Result<TlsrptSendResult, Refused> {
        let Some(sender) = &self.sender else {
            return Err(Response::error(format!(
                "{TLSRPT_DISABLED}: nothing is sent"
            )));
        };
        // In cluster mode a database that cannot be reached is an error:
        // nothing was sent, and the operator must not read "nothing due".
        let outcomes = sender.send_now_checked().await.map_err(tlsrpt_err)?;
        for o in &outcomes {
            self.metrics.count(o.transport(), o.kind());
        }
        let today = self.today();
        let collecting = self
            .recorder
            .reports()
            .map_err(tlsrpt_err)?
            .iter()
            .filter(|(day, _)| *day >= today)
            .count() as u64;
        Ok(TlsrptSendResult {
            outcomes: outcomes.iter().map(outcome).collect(),
            collecting,
        })
    }
}

fn tlsrpt_err(e: TlsRptError) -> Refused {
    Response::error(e.to_string())
}

/// One send outcome as the CLI shows it.
fn outcome(o: &SendOutcome) -> TlsrptOutcome {
    let (day, domain, destination, detail, next_try) = match o {
        SendOutcome::Sent {
            day,
            domain,
            destination,
            detail,
        } => (
            day,
            domain,
            Some(destination.clone()),
            Some(detail.clone()),
            None,
        ),
        SendOutcome::Retry {
            day,
            domain,
            destination,
            error,
            next_try,
        } => (
            day,
            domain,
            destination.clone(),
            Some(error.clone()),
            Some(*next_try),
        ),
        SendOutcome::GaveUp {
            day,
            domain,
            destination,
            error,
        } => (day, domain, destination.clone(), Some(error.clone()), None),
        SendOutcome::NoDestination {
            day,
            domain,
            reason,
        } => (day, domain, None, Some(reason.clone()), None),
    };
    TlsrptOutcome {
        day: day.clone(),
        domain: domain.clone(),
        destination,
        transport: o.transport().to_owned(),
        outcome: o.kind().to_owned(),
        detail,
        next_try,
    }
}
