//! The human layouts of the admin commands: one typed [`Answer`] in, the
//! text an operator reads out (`--json` prints the answer itself instead).
//!
//! Everything shown here may contain what a sender or a remote server
//! wrote (addresses, replies, headers): tables turn control characters
//! into spaces and free text goes through `text::escape_terminal`, so nothing
//! can drive the operator's terminal.

mod dmarc;
mod policy;
mod queue;
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
        Answer::PolicyUnpin(u) => format!("removed the operator pin of {}", u.unpinned),
        Answer::TlsrptList(entries) => tlsrpt::list(entries),
        Answer::TlsrptShow(report) => tlsrpt::show(report),
        Answer::TlsrptSend(result) => tlsrpt::sent(result),
        Answer::DmarcList(entries) => dmarc::list(entries),
        Answer::DmarcSend(result) => dmarc::sent(result),
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

/// `status`: one field per line, then one line per listener.
fn status(s: &StatusReport) -> String {
    let mut rows = vec![
        vec!["version".into(), s.version.clone()],
        vec!["hostname".into(), s.hostname.clone()],
        vec!["uptime".into(), format!("{}s", s.uptime_secs)],
        vec!["open sessions".into(), s.open_sessions.to_string()],
        vec!["queue size".into(), s.queue_size.to_string()],
        vec!["data dir".into(), s.data_dir.clone()],
    ];
    for l in &s.listeners {
        rows.push(vec![
            "listener".into(),
            format!("{} ({})", l.address, l.role),
        ]);
    }
    fields(&rows)
}
