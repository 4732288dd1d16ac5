//! `[submission]`: SMTP AUTH, who may send as whom, brute-force defence
//! and sending limits; `[[submission.dkim]]` and `[submission.oauth]` are
//! submodules.

pub mod dkim;
pub mod oauth;

use crate::check::Checker;
use crate::section::relay::Relay;
use dkim::{DkimKey, DkimKeyFile};
use oauth::{OAuth, OAuthFile};
use portcullis_types::{Address, Domain};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[submission]`: authenticated submission.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionFile {
    /// `users_file`: the users file managed with `portcullis user ...`.
    pub users_file: Option<String>,
    /// `auth_on_smtp`: offer AUTH (after STARTTLS) on `smtp` listeners too
    /// (default false).
    pub auth_on_smtp: Option<bool>,
    /// `max_auth_failures`: failed AUTH attempts in one session before it is
    /// closed with 421 4.7.0 (default 3).
    pub max_auth_failures: Option<u32>,
    /// `senders`: user name → the MAIL FROM addresses the user may use
    /// (`"alice@example.test"`, or `"@example.test"` for the whole domain).
    /// A user not named here may send as `user@<any accepted domain>`.
    pub senders: Option<BTreeMap<String, Vec<String>>>,
    /// `[[submission.dkim]]`: DKIM keys that sign authenticated mail, one
    /// per domain of ours.
    pub dkim: Option<Vec<DkimKeyFile>>,
    /// `auth_failures_per_ip`: failed AUTH attempts from one address (an
    /// IPv6 /64) within `lockout_window` before it is locked out (default 10).
    pub auth_failures_per_ip: Option<u32>,
    /// `auth_failures_per_user`: failed AUTH attempts for one user within
    /// `lockout_window` before the user is locked out, except from addresses
    /// the user recently authenticated from (default 10).
    pub auth_failures_per_user: Option<u32>,
    /// `lockout_window`: how long failures are counted and how long a
    /// lockout lasts (default "15m").
    pub lockout_window: Option<String>,
    /// `auth_failure_delay`: the delay before a failed AUTH is answered,
    /// doubled for each earlier failure in the window, at most 16 times it
    /// (default "1s"; "0s" turns delays off).
    pub auth_failure_delay: Option<String>,
    /// `auth_queue_wait`: how long an AUTH PLAIN/LOGIN waits for a free
    /// password-hashing slot (one per core) before it is answered 454 4.7.0
    /// (default "2s").
    pub auth_queue_wait: Option<String>,
    /// `messages_per_hour`: messages one authenticated user may submit per
    /// hour (default 1000; 0: no limit).
    pub messages_per_hour: Option<u32>,
    /// `recipients_per_message`: recipients per message for authenticated
    /// users (default 100; 0: only `[limits] max_recipients`).
    pub recipients_per_message: Option<u32>,
    /// `[submission.user_limits.NAME]`: per-user overrides of the two
    /// sending limits.
    pub user_limits: Option<BTreeMap<String, UserLimitsFile>>,
    /// `[submission.oauth]`: OAUTHBEARER and XOAUTH2 with token
    /// introspection; absent: not offered.
    pub oauth: Option<OAuthFile>,
}

/// One `[submission.user_limits.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLimitsFile {
    /// `messages_per_hour` for this user (0: no limit).
    pub messages_per_hour: Option<u32>,
    /// `recipients_per_message` for this user (0: no per-user limit).
    pub recipients_per_message: Option<u32>,
}

/// `[submission]`: SMTP AUTH and what authenticated users may do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Submission {
    /// Offer AUTH (after STARTTLS) on `smtp` listeners too.
    pub auth_on_smtp: bool,
    /// Failed AUTH attempts in one session before it is closed.
    pub max_auth_failures: u32,
    /// User name → the sender addresses the user may use.
    pub senders: BTreeMap<String, Vec<SenderPattern>>,
    /// `[[submission.dkim]]`: the keys that sign authenticated mail.
    pub dkim: Vec<DkimKey>,
    /// Brute-force defence across sessions.
    pub lockout: Lockout,
    /// How long an AUTH PLAIN/LOGIN waits for a password-hashing slot
    /// before 454 4.7.0.
    pub auth_queue_wait: Duration,
    /// Sending limits for every authenticated user.
    pub limits: UserLimits,
    /// Per-user overrides of `limits`.
    pub user_limits: BTreeMap<String, UserLimits>,
    /// OAUTHBEARER/XOAUTH2 through token introspection; `None`: the
    /// mechanisms are not offered at all.
    pub oauth: Option<OAuth>,
}

/// Failed-AUTH limits across sessions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lockout {
    /// Failures from one address (IPv6: its /64) before it is locked out.
    pub failures_per_ip: u32,
    /// Failures for one user before the user is locked out (except from
    /// addresses the user recently authenticated from).
    pub failures_per_user: u32,
    /// How long failures count, and how long a lockout lasts.
    pub window: Duration,
    /// The delay before answering the first failure; doubled per earlier
    /// failure in the window, at most 16 times it.
    pub failure_delay: Duration,
}

impl Default for Lockout {
    /// 10 failures per address and per user in 15 minutes; 1 s delay.
    fn default() -> Self {
        Lockout {
            failures_per_ip: 10,
            failures_per_user: 10,
            window: Duration::from_secs(15 * 60),
            failure_delay: Duration::from_secs(1),
        }
    }
}

/// Sending limits of an authenticated user; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct UserLimits {
    /// Messages per hour.
    pub messages_per_hour: u32,
    /// Recipients per message.
    pub recipients_per_message: u32,
}

impl Default for UserLimits {
    /// 1000 messages an hour, 100 recipients a message.
    fn default() -> Self {
        UserLimits {
            messages_per_hour: 1000,
            recipients_per_message: 100,
        }
    }
}

impl Default for Submission {
    /// The defaults of the reference configuration (no AUTH on port 25,
    /// 3 failures a session, no OAuth).
    fn default() -> Self {
        Submission {
            auth_on_smtp: false,
            max_auth_failures: 3,
            senders: Default::default(),
            dkim: Vec::new(),
            lockout: Lockout::default(),
            auth_queue_wait: Duration::from_secs(2),
            limits: UserLimits::default(),
            user_limits: Default::default(),
            oauth: None,
        }
    }
}

/// One entry of `[submission] senders`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SenderPattern {
    /// `"@example.test"`: any address at the domain.
    Domain(Domain),
    /// `"alice@example.test"`: this address (local part without regard to
    /// ASCII case).
    Address(Address),
}

impl SenderPattern {
    /// True when `address` matches.
    pub fn matches(&self, address: &Address) -> bool {
        match self {
            SenderPattern::Domain(d) => &address.domain == d,
            SenderPattern::Address(a) => {
                a.domain == address.domain && a.local.eq_ignore_ascii_case(&address.local)
            }
        }
    }
}

impl Submission {
    /// The sending limits of `user` (their override, or the defaults).
    pub fn limits_for(&self, user: &str) -> UserLimits {
        self.user_limits.get(user).copied().unwrap_or(self.limits)
    }

    /// True when `user` may use `sender` as MAIL FROM: the addresses
    /// `senders` lists for the user, or, for a user not listed there,
    /// `user@<any accepted domain>` (and the user name itself when it is
    /// an address at an accepted domain).
    pub fn may_send_as(&self, user: &str, sender: &Address, relay: &Relay) -> bool {
        if let Some(patterns) = self.senders.get(user) {
            return patterns.iter().any(|p| p.matches(sender));
        }
        if !relay.accepted_domains.contains(&sender.domain) {
            return false;
        }
        sender.local.eq_ignore_ascii_case(user)
            || Address::parse(user).is_ok_and(|u| {
                u.domain == sender.domain && u.local.eq_ignore_ascii_case(&sender.local)
            })
    }
}

/// `[submission]`: every sender pattern, key and limit checked; defaults
/// from [`Submission::default`].
pub(crate) fn build(f: &SubmissionFile, c: &mut Checker) -> Submission {
    let d = Submission::default();
    let senders = senders(f.senders.as_ref(), c);
    let dkim = dkim::build(f.dkim.as_deref().unwrap_or_default(), c);
    let lockout = lockout(f, &d.lockout, c);
    let auth_queue_wait = c.duration(
        "submission.auth_queue_wait",
        &f.auth_queue_wait,
        d.auth_queue_wait,
    );
    if auth_queue_wait > Duration::from_secs(60) {
        // Longer than a client's patience for an AUTH reply (RFC 5321
        // §4.5.3.2 gives 5 minutes per command, clients use less).
        c.fail("submission.auth_queue_wait", "must be at most 60s");
    }
    let (limits, user_limits) = user_limits(f, d.limits);
    Submission {
        dkim,
        auth_on_smtp: f.auth_on_smtp.unwrap_or(d.auth_on_smtp),
        max_auth_failures: c.positive(
            "submission.max_auth_failures",
            f.max_auth_failures,
            d.max_auth_failures,
        ),
        senders,
        lockout,
        auth_queue_wait,
        limits,
        user_limits,
        oauth: f.oauth.as_ref().and_then(|o| oauth::build(o, c)),
    }
}

/// `submission.senders`: each pattern an address or `@domain`.
fn senders(
    written: Option<&BTreeMap<String, Vec<String>>>,
    c: &mut Checker,
) -> BTreeMap<String, Vec<SenderPattern>> {
    let mut senders = BTreeMap::new();
    for (user, patterns) in written.into_iter().flatten() {
        let key = format!("submission.senders.{user}");
        let mut parsed = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let pattern = match p.strip_prefix('@') {
                Some(domain) => Domain::parse(domain)
                    .map(SenderPattern::Domain)
                    .map_err(|e| e.to_string()),
                None => Address::parse(p)
                    .map(SenderPattern::Address)
                    .map_err(|e| e.to_string()),
            };
            match pattern {
                Ok(pattern) => parsed.push(pattern),
                Err(e) => c.fail(
                    format!("{key}[{i}]"),
                    format!("{p:?} is neither an address nor @domain: {e}"),
                ),
            }
        }
        senders.insert(user.clone(), parsed);
    }
    senders
}

/// The lockout keys: positive counts, a window longer than zero, a
/// failure delay of at most 10 s.
fn lockout(f: &SubmissionFile, d: &Lockout, c: &mut Checker) -> Lockout {
    let lockout = Lockout {
        failures_per_ip: c.positive(
            "submission.auth_failures_per_ip",
            f.auth_failures_per_ip,
            d.failures_per_ip,
        ),
        failures_per_user: c.positive(
            "submission.auth_failures_per_user",
            f.auth_failures_per_user,
            d.failures_per_user,
        ),
        window: c.duration("submission.lockout_window", &f.lockout_window, d.window),
        failure_delay: c.duration(
            "submission.auth_failure_delay",
            &f.auth_failure_delay,
            d.failure_delay,
        ),
    };
    if lockout.window.is_zero() {
        c.fail("submission.lockout_window", "must be longer than zero");
    }
    if lockout.failure_delay > Duration::from_secs(10) {
        // 16 doublings of more would outlast a client's command timeout.
        c.fail("submission.auth_failure_delay", "must be at most 10s");
    }
    lockout
}

/// The sending limits for everyone, and each user's overrides (a key a
/// user's table leaves out is the everyone value).
fn user_limits(
    f: &SubmissionFile,
    defaults: UserLimits,
) -> (UserLimits, BTreeMap<String, UserLimits>) {
    let limits = UserLimits {
        messages_per_hour: f.messages_per_hour.unwrap_or(defaults.messages_per_hour),
        recipients_per_message: f
            .recipients_per_message
            .unwrap_or(defaults.recipients_per_message),
    };
    let per_user = f
        .user_limits
        .iter()
        .flatten()
        .map(|(user, l)| {
            (
                user.clone(),
                UserLimits {
                    messages_per_hour: l.messages_per_hour.unwrap_or(limits.messages_per_hour),
                    recipients_per_message: l
                        .recipients_per_message
                        .unwrap_or(limits.recipients_per_message),
                },
            )
        })
        .collect();
    (limits, per_user)
}
