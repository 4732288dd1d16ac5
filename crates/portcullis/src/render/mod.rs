//! The human layouts of the admin commands: one typed [`Answer`] in, the
//! text an operator reads out (`--json` prints the answer itself instead).
//!
//! Everything shown here may contain what a sender or a remote server
//! wrote (addresses, replies, headers): tables turn control characters
//! into spaces and free text goes through `text::escape_terminal`, so nothing
//! can drive the operator's terminal.

mod cluster;
mod dmarc;
mod own;
mod policy;
mod queue;
mod received;
mod screen;
mod text;
mod tlsrpt;

use portcullis_admin::{Answer, ReloadReport, StatusReport};
use text::fields;

/// The human layout of `answer`.
pub fn human(answer: &Answer) -> String {
    match answer {
        Answer::Status(s) => status(s),
        Answer::QueueList(entries) => queue::list(entries),
        Answer::QueueShow(detail) => queue::show(detail),
        Answer::QueueRetry(r) => queue::retried(r),
        Answer::QueueDelete(d) => queue::deleted(d),
        Answer::PolicyList(entries) => policy::list(entries),
        Answer::PolicyShow(show) => policy::show(show),
        Answer::PolicyFetch(entry) => policy::fetched(entry),
        Answer::PolicyRefresh(items) => policy::refreshed(items),
        Answer::PolicyEvict(e) => format!("evicted the cached MTA-STS policy of {}", e.evicted),
        Answer::PolicyExplain(x) => policy::explain(x),
        Answer::PolicyPin(entry) => policy::pinned(entry),
        Answer::PolicyOwn(own) => own::checked(own),
        Answer::PolicyUnpin(u) => format!("removed the operator pin of {}", u.unpinned),
        Answer::TlsrptList(entries) => tlsrpt::list(entries),
        Answer::TlsrptShow(report) => tlsrpt::show(report),
        Answer::TlsrptSend(result) => tlsrpt::sent(result),
        Answer::TlsrptReceivedList(entries) => received::list(entries),
        Answer::TlsrptReceivedShow(report) => received::show(report),
        Answer::DmarcList(entries) => dmarc::list(entries),
        Answer::DmarcSend(result) => dmarc::sent(result),
        Answer::ClusterMigrate(m) => cluster::migrated(m),
        Answer::Reload(r) => reloaded(r),
        Answer::ScreenShow(s) => screen::show(s),
        Answer::ScreenClear(c) => screen::cleared(c),
    }
}

/// `reload`: the file, what changed, what waits for a restart, the
/// certificate in force.
fn reloaded(r: &ReloadReport) -> String {
    let list = |items: &[String], none: &str| match items.is_empty() {
        true => none.to_string(),
        false => items.join(", "),
    };
    let mut rows = vec![
        vec![
            "reloaded".into(),
            r.config
                .clone()
                .unwrap_or_else(|| "development defaults".into()),
        ],
        vec!["changed".into(), list(&r.changed, "nothing")],
    ];
    if !r.needs_restart.is_empty() {
        rows.push(vec!["needs a restart".into(), list(&r.needs_restart, "")]);
    }
    rows.push(vec!["certificate".into(), r.certificate.clone()]);
    fields(&rows)
}

/// `status`: one field per line, then one line per listener with the
/// expiry of the certificate it presents.
fn status(s: &StatusReport) -> String {
    status_at(s, crate::dates::now_secs())
}

/// [`status`] as seen at `now` (Unix seconds).
fn status_at(s: &StatusReport, now: u64) -> String {
    let mut rows = vec![
        vec!["version".into(), s.version.clone()],
        vec!["hostname".into(), s.hostname.clone()],
        vec!["uptime".into(), format!("{}s", s.uptime_secs)],
        vec!["open sessions".into(), s.open_sessions.to_string()],
        vec!["queue size".into(), s.queue_size.to_string()],
        vec!["data dir".into(), s.data_dir.clone()],
    ];
    for l in &s.listeners {
        let mut line = format!("{} ({})", l.address, l.role);
        if let Some(end) = l.certificate_not_after {
            line.push_str(&format!(
                ", certificate until {}",
                crate::dates::format_rfc3339(end)
            ));
            line.push_str(&certificate_note(end, now));
        }
        rows.push(vec!["listener".into(), line]);
    }
    if let Some(c) = &s.cluster {
        rows.extend(cluster::status_rows(c));
    }
    fields(&rows)
}

/// How close a certificate's end is: days left, and a word when it is
/// within the 14 days the log warns about, or past.
fn certificate_note(end: u64, now: u64) -> String {
    if end <= now {
        return " (EXPIRED)".into();
    }
    let days = (end - now) / 86_400;
    if end - now <= 14 * 86_400 {
        format!(" ({days} days left: renew it)")
    } else {
        format!(" ({days} days left)")
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;
    use portcullis_admin::ListenerStatus;

    #[test]
    fn each_listener_shows_its_certificate_expiry() {
        let listener = |address: &str, role: &str, end: Option<u64>| ListenerStatus {
            address: address.into(),
            role: role.into(),
            certificate_not_after: end,
        };
        let now = 1_800_000_000;
        let report = StatusReport {
            version: "1".into(),
            hostname: "mx.example.test".into(),
            uptime_secs: 1,
            listeners: vec![
                listener("127.0.0.1:25", "smtp", Some(now + 90 * 86_400)),
                listener("127.0.0.1:443", "mta-sts", Some(now + 10 * 86_400)),
                listener("127.0.0.1:465", "submissions", Some(now - 1)),
                listener("127.0.0.1:587", "submission", None),
            ],
            open_sessions: 0,
            queue_size: 0,
            data_dir: "d".into(),
            cluster: None,
        };
        let text = status_at(&report, now);
        assert!(
            text.contains(
                "127.0.0.1:25 (smtp), certificate until 2027-04-15T08:00:00Z (90 days left)"
            ),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.1:443 (mta-sts), certificate until"),
            "{text}"
        );
        assert!(text.contains("(10 days left: renew it)"), "{text}");
        assert!(text.contains("(EXPIRED)"), "{text}");
        assert!(
            text.contains("127.0.0.1:587 (submission)\n")
                || text.ends_with("127.0.0.1:587 (submission)"),
            "{text}"
        );
    }
}
