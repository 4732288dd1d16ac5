//! What `load` and `parse` report: every problem with its key and line.

use std::fmt;
use std::path::{Path, PathBuf};

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
