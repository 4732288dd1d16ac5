//! `screen show|clear`: one client as the screen sees it, and what a reset
//! removed. Greylist keys hold sender addresses and list outcomes hold DNS
//! error text: every value goes through a table, which blanks control
//! characters.

use super::text::fields;
use crate::dates::format_time;
use portcullis_admin::{
    ScreenCleared, ScreenGreylistLine, ScreenListLine, ScreenRateLine, ScreenShow, ScreenTarget,
    render_table,
};

/// `screen show` without `--json`: the client and whether it is trusted,
/// its DNS list score against the threshold with a line per list, its
/// rates this minute against the limits, the greylist entries of its
/// network, and the screen's one-sentence summary.
pub fn show(s: &ScreenShow) -> String {
    let yes_no = |b: bool| if b { "yes (never screened)" } else { "no" };
    let mut out = fields(&[
        vec!["client".into(), s.ip.to_string()],
        vec!["rates counted for".into(), s.rate_key.clone()],
        vec!["trusted network".into(), yes_no(s.trusted).into()],
        vec![
            "dns lists".into(),
            format!("score {}, threshold {}", s.dnsbl_score, s.dnsbl_threshold),
        ],
    ]);
    section(&mut out, lists(&s.lists));
    out.push_str("\nrates this minute");
    section(&mut out, rates(&s.rates));
    out.push_str("\ngreylist");
    section(&mut out, greylist(&s.greylist));
    if !s.summary.is_empty() {
        out.push('\n');
        out.push_str(&fields(&[vec!["summary".into(), s.summary.clone()]]));
    }
    out
}

/// Appends `body` indented by two spaces, on lines of its own.
fn section(out: &mut String, body: String) {
    for line in body.trim_end().lines() {
        out.push_str("\n  ");
        out.push_str(line);
    }
}

/// One row per configured list: zone, weight, the outcome, the answers of
/// a listing.
fn lists(lines: &[ScreenListLine]) -> String {
    if lines.is_empty() {
        return "no [[dnsbl]] zone is configured".into();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let kind = if l.weight < 0 { "allow" } else { "block" };
            vec![
                l.zone.clone(),
                format!("{} ({kind})", l.weight),
                l.outcome.clone(),
                dash_if_empty(l.answers.join(", ")),
            ]
        })
        .collect();
    render_table(&["ZONE", "WEIGHT", "RESULT", "ANSWERS"], &rows)
}

/// One line per rate: the count out of the limit.
fn rates(lines: &[ScreenRateLine]) -> String {
    if lines.is_empty() {
        return "nothing counted".into();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|r| {
            let of = match r.limit {
                0 => format!("{} (no limit)", r.count),
                limit => format!("{} of {limit}", r.count),
            };
            vec![r.kind.clone(), of]
        })
        .collect();
    fields(&rows)
}

/// One row per greylist entry: its key, state, first sight and expiry
/// (UTC).
fn greylist(lines: &[ScreenGreylistLine]) -> String {
    if lines.is_empty() {
        return "no entries for this network".into();
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|g| {
            vec![
                g.key.clone(),
                g.state.clone(),
                format_time(g.first_seen),
                format_time(g.expires),
            ]
        })
        .collect();
    render_table(
        &["KEY", "STATE", "FIRST SEEN (UTC)", "EXPIRES (UTC)"],
        &rows,
    )
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// `screen clear`: what was removed for the client or the domain.
pub fn cleared(c: &ScreenCleared) -> String {
    let what = match &c.target {
        ScreenTarget::Ip(ip) => format!("client {ip}"),
        ScreenTarget::Domain(d) => format!("sender domain {d}"),
    };
    if c.rates + c.lists + c.greylist == 0 {
        return format!("{what}: the screen held nothing to clear");
    }
    format!(
        "cleared {what}: {}, {}, {}",
        count(c.rates, "rate entry", "rate entries"),
        count(c.lists, "cached DNS list answer", "cached DNS list answers"),
        count(c.greylist, "greylist entry", "greylist entries"),
    )
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ScreenShow {
        let list = |zone: &str, weight: i32, outcome: &str, answers: &[&str]| ScreenListLine {
            zone: zone.into(),
            weight,
            outcome: outcome.into(),
            answers: answers.iter().map(|a| a.to_string()).collect(),
        };
        let rate = |kind: &str, count: u32, limit: u32| ScreenRateLine {
            kind: kind.into(),
            count,
            limit,
        };
        ScreenShow {
            ip: "192.0.2.1".parse().unwrap(),
            rate_key: "192.0.2.1".into(),
            trusted: false,
            dnsbl_score: 3,
            dnsbl_threshold: 2,
            lists: vec![
                list("bl.example.test", 3, "listed", &["127.0.0.2", "127.0.0.4"]),
                list("wl.example.test", -2, "not listed", &[]),
                list("slow.example.test", 1, "lookup failed: timed out", &[]),
            ],
            rates: vec![
                rate("connections", 3, 60),
                rate("messages", 7, 120),
                rate("recipients", 12, 0),
            ],
            greylist: vec![
                ScreenGreylistLine {
                    key: "192.0.2.0/24 a@b.test -> c@d.test".into(),
                    state: "waiting (passes 2023-11-14 22:18)".into(),
                    first_seen: 1_700_000_000,
                    expires: 1_700_014_400,
                },
                ScreenGreylistLine {
                    // A sender-written key trying to drive the terminal.
                    key: "192.0.2.0/24 x\u{1b}[2J@b.test -> c@d.test".into(),
                    state: "passed".into(),
                    first_seen: 1_700_000_060,
                    expires: 1_702_592_060,
                },
            ],
            summary: "refused at RCPT: listed by bl.example.test (score 3, threshold 2)".into(),
        }
    }

    /// The line of `text` that contains `needle`.
    #[track_caller]
    fn line<'a>(text: &'a str, needle: &str) -> &'a str {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
    }

    #[test]
    fn show_lays_out_lists_rates_and_greylist() {
        let out = show(&report());
        assert!(line(&out, "client").ends_with("192.0.2.1"), "{out}");
        assert!(line(&out, "trusted network").ends_with("no"), "{out}");
        assert!(
            line(&out, "dns lists").contains("score 3, threshold 2"),
            "{out}"
        );
        // One row per list: listed with its answers, not listed, failed.
        let listed = line(&out, "bl.example.test");
        assert!(listed.contains("3 (block)"), "{listed}");
        assert!(listed.contains("listed"), "{listed}");
        assert!(listed.contains("127.0.0.2, 127.0.0.4"), "{listed}");
        let allow = line(&out, "wl.example.test");
        assert!(
            allow.contains("-2 (allow)") && allow.contains("not listed"),
            "{allow}"
        );
        assert!(allow.trim_end().ends_with('-'), "{allow}");
        let failed = line(&out, "slow.example.test");
        assert!(failed.contains("lookup failed: timed out"), "{failed}");
        // The list table is aligned under its header.
        let header = line(&out, "ZONE");
        assert_eq!(header.find("RESULT"), listed.find("listed"), "{out}");
        // Rates: out of the limit, or without one.
        assert!(line(&out, "connections").ends_with("3 of 60"), "{out}");
        assert!(line(&out, "messages").ends_with("7 of 120"), "{out}");
        assert!(line(&out, "recipients").ends_with("12 (no limit)"), "{out}");
        // Greylist: key, state and UTC times.
        let waiting = line(&out, "a@b.test -> c@d.test");
        assert!(waiting.contains("waiting"), "{waiting}");
        assert!(waiting.contains("2023-11-14 22:13"), "{waiting}");
        assert!(waiting.contains("2023-11-15 02:13"), "{waiting}");
        assert!(line(&out, "summary").contains("refused at RCPT"), "{out}");
        // Sections come in the operator's reading order.
        let at = |s: &str| out.find(s).unwrap();
        assert!(at("dns lists") < at("rates this minute"));
        assert!(at("rates this minute") < at("greylist"));
        assert!(at("greylist") < at("summary"));
    }

    #[test]
    fn show_never_passes_control_characters_to_the_terminal() {
        let out = show(&report());
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(line(&out, "x [2J@b.test").contains("passed"), "{out}");
    }

    #[test]
    fn show_of_a_client_the_screen_knows_nothing_about() {
        let empty = ScreenShow {
            ip: "2001:db8::1".parse().unwrap(),
            rate_key: "2001:db8::/64".into(),
            trusted: true,
            dnsbl_score: 0,
            dnsbl_threshold: 1,
            lists: vec![],
            rates: vec![],
            greylist: vec![],
            summary: String::new(),
        };
        let out = show(&empty);
        assert!(line(&out, "rates counted for").ends_with("2001:db8::/64"));
        assert!(line(&out, "trusted network").contains("yes"), "{out}");
        assert!(out.contains("no [[dnsbl]] zone is configured"), "{out}");
        assert!(out.contains("nothing counted"), "{out}");
        assert!(out.contains("no entries for this network"), "{out}");
        assert!(!out.contains("summary"), "{out}");
    }

    #[test]
    fn cleared_says_what_was_removed() {
        let ip = ScreenCleared {
            target: ScreenTarget::Ip("192.0.2.1".parse().unwrap()),
            rates: 1,
            lists: 2,
            greylist: 0,
        };
        assert_eq!(
            cleared(&ip),
            "cleared client 192.0.2.1: 1 rate entry, 2 cached DNS list answers, 0 greylist entries"
        );
        let domain = ScreenCleared {
            target: ScreenTarget::Domain("example.test".into()),
            rates: 0,
            lists: 0,
            greylist: 0,
        };
        assert_eq!(
            cleared(&domain),
            "sender domain example.test: the screen held nothing to clear"
        );
    }
}
