//! Portcullis configuration: the TOML file model (serde,
//! `deny_unknown_fields`, a doc comment per key), validation that gathers
//! *every* error with its key and line, and the typed runtime [`Config`].
//!
//! Threat model: the file is trusted input from the operator, but a mistake
//! in it must never silently weaken the server (an unknown key is an error,
//! not ignored; a /0 trusted network is refused as an open relay).

#![forbid(unsafe_code)]

pub mod duration;
pub mod locate;
pub mod model;
pub mod runtime;
pub mod validate;

pub use duration::{format_duration, parse_duration};
pub use runtime::*;

use locate::{Locator, parse_path};
use std::fmt;
use std::path::{Path, PathBuf};
use validate::{Checker, Problem, Sections};

/// One configuration problem with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key path, e.g. `relay.accepted_domains[1]`.
    pub key: String,
    /// The 1-based line in the file, when it could be located.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Why a configuration could not be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file was read but has problems.
    #[error("{}", render_issues(file.as_deref(), issues))]
    Invalid {
        /// The file, if any.
        file: Option<PathBuf>,
        /// Every problem, in file order.
        issues: Vec<ConfigIssue>,
    },
}

fn render_issues(file: Option<&Path>, issues: &[ConfigIssue]) -> String {
    let name = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "config".into());
    let mut out = format!("{} error(s) in {name}:", issues.len());
    for i in issues {
        match i.line {
            Some(line) => out.push_str(&format!("\n  {name}:{line}: {}: {}", i.key, i.message)),
            None => out.push_str(&format!("\n  {name}: {}: {}", i.key, i.message)),
        }
    }
    out
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

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
        relay: model::RelayFile {
            accepted_domains: vec!["localhost".into()],
            trusted_networks: vec![],
        },
        ..Sections::default()
    };
    validate::build(sections, &system_hostname(), &mut c)
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
        section(&mut sections, &key, value, &mut checker);
    }
    let config = validate::build(sections, system_hostname, &mut checker);
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

/// Deserialises one top-level key into its section, recording a problem
/// (with the offending nested key when serde names one) on failure.
fn section(s: &mut Sections, key: &str, value: toml::Value, c: &mut Checker) {
    fn take<T: serde::de::DeserializeOwned + Default>(
        key: &str,
        mut value: toml::Value,
        c: &mut Checker,
    ) -> T {
        loop {
            match value.clone().try_into::<T>() {
                Ok(v) => return v,
                Err(e) => {
                    let message = e.message().trim().to_string();
                    // serde names the unknown field: point at it, not at the table.
                    let field = message
                        .strip_prefix("unknown field `")
                        .and_then(|r| r.split_once('`'))
                        .map(|(field, _)| field.to_string());
                    c.problems.push(Problem {
                        key: field
                            .as_ref()
                            .map(|f| format!("{key}.{f}"))
                            .unwrap_or_else(|| key.to_string()),
                        message,
                    });
                    // Drop the unknown key (reported above) and check the rest
                    // of the section, so its other errors are found too.
                    let removed = match (field, &mut value) {
                        (Some(f), toml::Value::Table(t)) => t.remove(&f).is_some(),
                        _ => false,
                    };
                    if !removed {
                        return T::default();
                    }
                }
            }
        }
    }
    match key {
        "hostname" => s.hostname = take::<Option<String>>(key, value, c),
        "data_dir" => s.data_dir = take::<Option<String>>(key, value, c),
        "listen" => s.listen = Some(take::<Vec<model::ListenFile>>(key, value, c)),
        "tls" => s.tls = take(key, value, c),
        "relay" => s.relay = take(key, value, c),
        "routes" => s.routes = take(key, value, c),
        "dns" => s.dns = take(key, value, c),
        "delivery" => s.delivery = take(key, value, c),
        "queue" => s.queue = take(key, value, c),
        "mta_sts" => s.mta_sts = take(key, value, c),
        "tlsrpt" => s.tlsrpt = take(key, value, c),
        "submission" => s.submission = take(key, value, c),
        "admin" => s.admin = take(key, value, c),
        "limits" => s.limits = take(key, value, c),
        "smtp" => s.smtp = take(key, value, c),
        "log" => s.log = take(key, value, c),
        "verify" => s.verify = take(key, value, c),
        other => c.problems.push(Problem {
            key: other.to_string(),
            message: format!("unknown key {other:?}"),
        }),
    }
}

#[cfg(test)]
mod slots_tests;
#[cfg(test)]
mod tests;
