//! `tlsrpt received list|show`: the reports other providers sent about our
//! domains, from the store, in the admin protocol's types.

use super::refused::{Refused, parse_domain};
use crate::state::TlsRptAccess;
use portcullis_admin::{
    ReceivedEntry, ReceivedFailureShow, ReceivedPolicyShow, ReceivedShow, Response,
};
use portcullis_tlsrpt::Day;
use portcullis_tlsrpt::received::{ReceivedFilter, ReceivedReport};

impl TlsRptAccess {
    /// The received reports about `domain` (all without), whose period
    /// ends on or after the UTC day `since`, newest received first.
    pub(super) fn received_list(
        &self,
        domain: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<ReceivedEntry>, Refused> {
        let domain = domain
            .map(|d| parse_domain(d).map(|d| d.to_string()))
            .transpose()?;
        let since = since
            .map(|d| {
                d.parse::<Day>()
                    .map(Day::start_timestamp)
                    .map_err(|e| Response::error(format!("--since {d:?}: {e}")))
            })
            .transpose()?;
        let found = self
            .received
            .list(&ReceivedFilter { domain, since })
            .map_err(|e| Response::error(format!("reading the received TLS reports: {e}")))?;
        Ok(found
            .into_iter()
            .map(|s| ReceivedEntry {
                id: s.id,
                received_at: s.received_at,
                organization: s.organization,
                domains: s.domains,
                start: s.start,
                end: s.end,
                successful: s.successful,
                failed: s.failed,
            })
            .collect())
    }

    /// Everything stored of the received report `id`.
    pub(super) fn received_show(&self, id: &str) -> Result<ReceivedShow, Refused> {
        match self.received.show(id.trim()) {
            Ok(Some(r)) => Ok(show(r)),
            Ok(None) => Err(Response::error(format!(
                "no received TLS report {id:?} (see `portcullis tlsrpt received list`)"
            ))),
            Err(e) => Err(Response::error(format!(
                "reading the received TLS report {id:?}: {e}"
            ))),
        }
    }
}

/// The stored report as the admin protocol carries it.
fn show(r: ReceivedReport) -> ReceivedShow {
    ReceivedShow {
        id: r.id,
        received_at: r.received_at,
        channel: r.channel.as_str().to_owned(),
        organization: r.organization,
        contact: r.contact,
        report_id: r.report_id,
        start: r.start,
        end: r.end,
        policies: r
            .policies
            .into_iter()
            .map(|p| ReceivedPolicyShow {
                policy_type: p.policy_type,
                policy_domain: p.policy_domain,
                policy_string: p.policy_string,
                mx_host: p.mx_host,
                successful: p.successful,
                failed: p.failed,
                failure_details: p
                    .failure_details
                    .into_iter()
                    .map(|f| ReceivedFailureShow {
                        result_type: f.result_type,
                        count: f.count,
                        sending_mta_ip: f.sending_mta_ip,
                        receiving_mx_hostname: f.receiving_mx_hostname,
                        receiving_mx_helo: f.receiving_mx_helo,
                        receiving_ip: f.receiving_ip,
                        additional_information: f.additional_information,
                        failure_reason_code: f.failure_reason_code,
                    })
                    .collect(),
            })
            .collect(),
        other_policies: r.other_policies,
        truncated: r.truncated,
    }
}
