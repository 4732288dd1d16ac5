//! Portcullis configuration: the TOML file model (serde,
//! `deny_unknown_fields`, a doc comment per key), validation that gathers
//! *every* error with its key and line, and the typed runtime [`Config`].
//! Each section of the file has one module in [`section`] holding all
//! three for it; [`runtime`] assembles the whole.
//!
//! Threat model: the file is trusted input from the operator, but a mistake
//! in it must never silently weaken the server (an unknown key is an error,
//! not ignored; a /0 trusted network is refused as an open relay).

#![forbid(unsafe_code)]

mod check;
pub mod duration;
mod error;
mod file;
pub mod locate;
pub mod runtime;
pub mod section;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigIssue};
pub use runtime::Config;
pub use section::admin::Admin;
pub use section::cluster::{Cluster, ClusterTls};
pub use section::delivery::{Delivery, TlsRequiredNo};
pub use section::dmarc_reports::{DmarcReports, DmarcReportsSending};
pub use section::dns::{Dns, Dnssec};
pub use section::dnsbl::Dnsbl;
pub use section::greylist::Greylist;
pub use section::limits::Limits;
pub use section::listen::{Listener, Role};
pub use section::log::LogFormat;
pub use section::mta_sts::MtaSts;
pub use section::publish::{MAX_POLICY_AGE, Publish, PublishMode};
pub use section::queue::Queue;
pub use section::recipients::{RecipientVerify, Recipients, Unreachable};
pub use section::relay::Relay;
pub use section::routes::{NextHop, Route, RouteTls};
pub use section::screen::Screen;
pub use section::smtp::BareNewline;
pub use section::submission::dkim::DkimKey;
pub use section::submission::oauth::OAuth;
pub use section::submission::{Lockout, SenderPattern, Submission, UserLimits};
pub use section::tls::Tls;
pub use section::tlsrpt::{TlsRpt, TlsRptOff, TlsRptReporter, TlsRptSending};
pub use section::verify::{DmarcQuarantine, SpfFail, Verify, VerifyException};

use check::{Checker, Problem};
use file::Sections;
use locate::{Locator, parse_path};
use std::path::Path;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse(&text, Some(path), &system_hostname())
}

/// The built-in development defaults of DESIGN.md: 127.0.0.1:2525 (smtp),
/// `./data`, a self-signed certificate, accepted domain `localhost`.
pub fn development_defaults() -> Config {
    let mut c = Checker::default();
    let sections = Sections {
        relay: section::relay::RelayFile {
            accepted_domains: vec!["localhost".into()],
            trusted_networks: vec![],
        },
        ..Sections::default()
    };
    runtime::build(sections, &system_hostname(), &mut c)
}

/// The machine's host name (from the kernel), or `localhost`.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses and validates config text. `file` is only used in messages;
/// `system_hostname` is used when the file sets no `hostname`.
pub fn parse(
    text: &str,
    file: Option<&Path>,
    system_hostname: &str,
) -> Result<Config, ConfigError> {
    let locator = Locator::new(text);
    let invalid = |issues: Vec<ConfigIssue>| ConfigError::Invalid {
        file: file.map(Path::to_path_buf),
        issues,
    };
    let table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(invalid(vec![ConfigIssue {
                key: "(syntax)".into(),
                line: e.span().map(|s| locator.line_of(s.start)),
                message: e.message().trim().to_string(),
            }]));
        }
    };
    let mut checker = Checker::default();
    let mut sections = Sections::default();
    for (key, value) in table {
        sections.insert(&key, value, &mut checker);
    }
    let config = runtime::build(sections, system_hostname, &mut checker);
    if checker.problems.is_empty() {
        return Ok(config);
    }
    let mut issues: Vec<ConfigIssue> = checker
        .problems
        .into_iter()
        .map(|Problem { key, message }| ConfigIssue {
            line: locator.line(&parse_path(&key)),
            key,
            message,
        })
        .collect();
    issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
    Err(invalid(issues))
}

#[cfg(test)]
mod sections_tests;
#[cfg(test)]
mod slots_tests;
#[cfg(test)]
mod tests;
