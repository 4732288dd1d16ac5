//! `screen show|clear`: the screen in force asked about one client, or
//! told to forget a client or a sender domain. The screen decides and
//! reports; this module only carries its report into the admin answer.

use super::refused::{Refused, parse_domain};
use crate::state::ScreenAccess;
use portcullis_admin::{
    Response, ScreenCleared, ScreenGreylistLine, ScreenListLine, ScreenRateLine, ScreenShow,
    ScreenTarget,
};
use portcullis_screen::{ClearTarget, ScreenReport};
use std::net::IpAddr;
use tracing::info;

impl ScreenAccess {
    /// Why `ip` is treated as it is (the screen looks its lists up afresh
    /// when no answer is cached).
    pub(super) async fn show(&self, ip: IpAddr) -> ScreenShow {
        let report = self.screen().show(ip).await;
        info!(client = %ip, summary = %report.summary, "screen show");
        show_of(report)
    }

    /// Forgets what the screen holds about `target`; the domain is checked
    /// again here (the socket is a trust boundary of its own).
    pub(super) async fn clear(&self, target: ScreenTarget) -> Result<ScreenCleared, Refused> {
        let clear = match &target {
            ScreenTarget::Ip(ip) => ClearTarget::Ip(*ip),
            ScreenTarget::Domain(d) => ClearTarget::Domain(parse_domain(d)?),
        };
        let cleared = self
            .screen()
            .clear(&clear)
            .await
            .map_err(|e| Response::error(format!("screen clear {target}: {e}")))?;
        info!(
            target = %target,
            rates = cleared.rates,
            lists = cleared.lists,
            greylist = cleared.greylist,
            "screen state cleared by the operator"
        );
        Ok(ScreenCleared {
            target,
            rates: cleared.rates,
            lists: cleared.lists,
            greylist: cleared.greylist,
        })
    }
}

/// The screen's report as the admin answer (the same fields).
fn show_of(r: ScreenReport) -> ScreenShow {
    ScreenShow {
        ip: r.ip,
        rate_key: r.rate_key,
        trusted: r.trusted,
        dnsbl_score: r.dnsbl_score,
        dnsbl_threshold: r.dnsbl_threshold,
        lists: r
            .lists
            .into_iter()
            .map(|l| ScreenListLine {
                zone: l.zone,
                weight: l.weight,
                outcome: l.outcome,
                answers: l.answers,
            })
            .collect(),
        rates: r
            .rates
            .into_iter()
            .map(|l| ScreenRateLine {
                kind: l.kind,
                count: l.count,
                limit: l.limit,
            })
            .collect(),
        greylist: r
            .greylist
            .into_iter()
            .map(|l| ScreenGreylistLine {
                key: l.key,
                state: l.state,
                first_seen: l.first_seen,
                expires: l.expires,
            })
            .collect(),
        summary: r.summary,
    }
}
