//! `screen show`: the lines of a [`ScreenReport`](super::ScreenReport)
//! and its one-sentence summary, from what the screen holds.

use super::{GreylistLine, ListLine, RateLine};
use crate::dnsbl::ListsVerdict;
use crate::greylist::Entry;
use crate::rates::{Counts, Kind};
use portcullis_config::Dnsbl;
use std::time::{Duration, UNIX_EPOCH};

/// One line per configured list: listed (with its answers), not listed,
/// or the lookup failed (scores nothing).
pub(crate) fn list_lines(lists: &[Dnsbl], verdict: &ListsVerdict) -> Vec<ListLine> {
    lists
        .iter()
        .map(|l| {
            let hit = verdict.hits.iter().find(|h| h.zone == l.zone);
            let outcome = if hit.is_some() {
                "listed"
            } else if verdict.failed.contains(&l.zone) {
                "lookup failed (scores nothing)"
            } else {
                "not listed"
            };
            ListLine {
                zone: l.zone.to_string(),
                weight: l.weight,
                outcome: outcome.into(),
                answers: hit
                    .map(|h| h.answers.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The three rates with their limits.
pub(crate) fn rate_lines(counts: Counts, screen: &portcullis_config::Screen) -> Vec<RateLine> {
    Kind::ALL
        .iter()
        .map(|&kind| RateLine {
            kind: kind.as_str().into(),
            count: counts.get(kind),
            limit: match kind {
                Kind::Connections => screen.connections_per_minute,
                Kind::Messages => screen.messages_per_minute,
                Kind::Recipients => screen.recipients_per_minute,
            },
        })
        .collect()
}

/// A greylist entry: `passed`, or `waiting until <time>`.
pub(crate) fn greylist_line(e: Entry) -> GreylistLine {
    let state = if e.passed {
        "passed".to_string()
    } else {
        let at = UNIX_EPOCH + Duration::from_secs(e.passes_at);
        format!("waiting until {}", portcullis_types::date::rfc3339(at))
    };
    GreylistLine {
        key: e.key,
        state,
        first_seen: e.first_seen,
        expires: e.expires,
    }
}

/// What the report's sentence is made from.
pub(crate) struct Standing<'a> {
    pub(crate) trusted: bool,
    pub(crate) verdict: &'a ListsVerdict,
    pub(crate) threshold: i32,
    pub(crate) rates: &'a [RateLine],
    pub(crate) greylisting: bool,
    pub(crate) greylist: &'a [GreylistLine],
}

/// One sentence: what happens to this client now, the first reason that
/// applies in the order the screen decides.
pub(crate) fn summary(s: &Standing<'_>) -> String {
    if s.trusted {
        return "trusted network: never screened (no DNS lists, rates or greylisting)".into();
    }
    if let Some(zone) = s.verdict.blocked_by(s.threshold) {
        return format!(
            "refused at RCPT with 554 5.7.1: listed on {zone} (score {} at or over the threshold {})",
            s.verdict.score, s.threshold
        );
    }
    if let Some(r) = s.rates.iter().find(|r| r.limit > 0 && r.count >= r.limit) {
        return format!(
            "rate-limited: {} {} in the last minute (limit {})",
            r.count, r.kind, r.limit
        );
    }
    if s.verdict.allowlisted() {
        return "served: allowlisted, never greylisted".into();
    }
    if !s.greylisting {
        return "served: no list, rate or greylisting holds it back".into();
    }
    let passed = s.greylist.iter().filter(|g| g.state == "passed").count();
    format!(
        "served: greylisting applies ({passed} passed and {} waiting entries for its network)",
        s.greylist.len() - passed
    )
}
