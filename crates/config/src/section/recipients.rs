//! `[recipients]`: which recipients at our accepted domains exist, so that
//! an unknown one is refused during the session (no backscatter).

use crate::check::Checker;
use portcullis_types::Domain;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[recipients]`: recipient verification.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientsFile {
    /// `verify`: `"off"` (default: every local part of an accepted domain
    /// is taken) or `"route"` (ask the domain's route with an RCPT probe,
    /// cached).
    pub verify: Option<String>,
    /// `files`: accepted domain → file of its valid addresses (one per
    /// line, `@domain` for the whole domain, `#` comments); a domain with
    /// a file is answered from it, never probed. Reloaded when it changes.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// `unreachable`: what a recipient gets when the route cannot answer
    /// (down, or a 4xx): `"tempfail"` (default, 451 4.4.3) or `"accept"`.
    pub unreachable: Option<String>,
    /// `cache_positive`: how long a probe's "exists" is believed (default
    /// `"1h"`).
    pub cache_positive: Option<String>,
    /// `cache_negative`: how long a probe's "unknown user" is believed
    /// (default `"10m"`).
    pub cache_negative: Option<String>,
}

/// How recipients of domains without a file are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientVerify {
    /// Not verified: every local part is taken.
    Off,
    /// Asked of the domain's route (`[routes]`) with `MAIL FROM:<>` and
    /// `RCPT TO:`; a domain without a route is not verified.
    Route,
}

/// What a recipient gets when its route cannot say whether it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unreachable {
    /// 451 4.4.3: the client tries again later.
    Tempfail,
    /// Taken; the route refuses it later if it must (a bounce).
    Accept,
}

/// Recipient verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipients {
    /// How domains without a file are verified.
    pub verify: RecipientVerify,
    /// Domain → file of valid addresses (every domain is an accepted one).
    pub files: BTreeMap<Domain, PathBuf>,
    /// When the route cannot answer.
    pub unreachable: Unreachable,
    /// How long a positive probe answer is cached.
    pub cache_positive: Duration,
    /// How long a negative probe answer is cached.
    pub cache_negative: Duration,
}

impl Default for Recipients {
    /// No verification, no files; tempfail when a route cannot answer;
    /// answers cached one hour (exists) and ten minutes (unknown).
    fn default() -> Recipients {
        Recipients {
            verify: RecipientVerify::Off,
            files: BTreeMap::new(),
            unreachable: Unreachable::Tempfail,
            cache_positive: Duration::from_secs(3600),
            cache_negative: Duration::from_secs(600),
        }
    }
}

impl Recipients {
    /// True when recipients of some domain are verified (by a file or a
    /// probe).
    pub fn enabled(&self) -> bool {
        self.verify == RecipientVerify::Route || !self.files.is_empty()
    }
}

/// `[recipients]`: every file's domain must be an accepted domain and the
/// file must be readable (its lines are checked when it is loaded).
pub(crate) fn build(f: &RecipientsFile, accepted: &[Domain], c: &mut Checker) -> Recipients {
    let d = Recipients::default();
    let verify = c.one_of(
        "recipients.verify",
        f.verify.as_deref(),
        [
            ("off", RecipientVerify::Off),
            ("route", RecipientVerify::Route),
        ],
    );
    let unreachable = c.one_of(
        "recipients.unreachable",
        f.unreachable.as_deref(),
        [
            ("tempfail", Unreachable::Tempfail),
            ("accept", Unreachable::Accept),
        ],
    );
    let mut files = BTreeMap::new();
    for (domain, path) in &f.files {
        let key = format!("recipients.files.{domain}");
        let parsed = match Domain::parse(domain) {
            Ok(d) => d,
            Err(e) => {
                c.fail(key, e.to_string());
                continue;
            }
        };
        if !accepted.contains(&parsed) {
            c.fail(
                &key,
                format!("{domain} is not in relay.accepted_domains; a recipients file is for a domain we accept mail for"),
            );
        }
        if let Err(e) = std::fs::metadata(path) {
            c.fail(&key, format!("{path}: {e}"));
        }
        files.insert(parsed, PathBuf::from(path));
    }
    Recipients {
        verify,
        files,
        unreachable,
        cache_positive: c.duration(
            "recipients.cache_positive",
            &f.cache_positive,
            d.cache_positive,
        ),
        cache_negative: c.duration(
            "recipients.cache_negative",
            &f.cache_negative,
            d.cache_negative,
        ),
    }
}
