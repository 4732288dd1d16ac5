//! `[publish]`: what we publish for our own domains (the accepted domains):
//! the MTA-STS policy served on `role = "mta-sts"` listeners at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and the TLS-RPT
//! address (`_smtp._tls.<domain>` `rua=`) whose reports we read.

use crate::check::Checker;
use serde::Deserialize;
use std::time::Duration;

/// `[publish]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishFile {
    /// `mode`: `"enforce"` (default), `"testing"` or `"none"`.
    pub mode: Option<String>,
    /// `mx`: the policy's `mx` patterns (`*.example.test` allowed); absent:
    /// the MX host names found in DNS for each accepted domain.
    pub mx: Option<Vec<String>>,
    /// `max_age`: the policy's `max_age` (default `"7d"`; RFC 8461 caps it
    /// at 31557600 seconds).
    pub max_age: Option<String>,
    /// `tlsrpt_rua`: where others send TLS reports about our domains
    /// (`mailto:` or `https:` URIs), as published in `_smtp._tls.<domain>`;
    /// reports mailed to a `mailto:` address here are read by the server.
    pub tlsrpt_rua: Option<Vec<String>>,
}

/// The MTA-STS mode we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Senders must deliver over authenticated TLS to a listed MX.
    Enforce,
    /// Senders report failures but deliver anyway.
    Testing,
    /// The policy is withdrawn (RFC 8461 §8.3).
    None,
}

impl PublishMode {
    /// The word in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Enforce => "enforce",
            PublishMode::Testing => "testing",
            PublishMode::None => "none",
        }
    }
}

/// `[publish]` as the server runs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Publish {
    /// The mode.
    pub mode: PublishMode,
    /// The `mx` patterns; `None`: each domain's MX host names from DNS.
    pub mx: Option<Vec<String>>,
    /// The policy's `max_age`.
    pub max_age: Duration,
    /// The TLS-RPT `rua` URIs (each `mailto:` or `https:`).
    pub tlsrpt_rua: Vec<String>,
}

/// RFC 8461 §3.2: `max_age` is at most 31557600 seconds (about a year).
pub const MAX_POLICY_AGE: Duration = Duration::from_secs(31_557_600);

impl Default for Publish {
    /// Enforce, MX from DNS, 7 days, no TLS-RPT address.
    fn default() -> Publish {
        Publish {
            mode: PublishMode::Enforce,
            mx: None,
            max_age: Duration::from_secs(7 * 86_400),
            tlsrpt_rua: Vec::new(),
        }
    }
}

/// `[publish]`: the mode one of three, every `mx` pattern a host name
/// (optionally `*.` and a name), `max_age` within RFC 8461's cap, each
/// `tlsrpt_rua` a `mailto:` address or an `https:` URL.
pub(crate) fn build(f: &PublishFile, c: &mut Checker) -> Publish {
    let d = Publish::default();
    let mode = match f.mode.as_deref() {
        None | Some("enforce") => PublishMode::Enforce,
        Some("testing") => PublishMode::Testing,
        Some("none") => PublishMode::None,
        Some(other) => {
            c.fail(
                "publish.mode",
                format!("{other:?} is not \"enforce\", \"testing\" or \"none\""),
            );
            d.mode
        }
    };
    let mx = f.mx.as_ref().map(|list| {
        if list.is_empty() {
            c.fail(
                "publish.mx",
                "an empty list publishes a policy no MX matches; leave it out to use the MX records",
            );
        }
        for p in list {
            if let Err(e) = check_mx_pattern(p) {
                c.fail("publish.mx", e);
            }
        }
        list.iter().map(|p| p.to_ascii_lowercase()).collect()
    });
    let max_age = c.duration("publish.max_age", &f.max_age, d.max_age);
    if max_age > MAX_POLICY_AGE || max_age.is_zero() {
        c.fail(
            "publish.max_age",
            format!(
                "must be between 1s and {}s (RFC 8461 §3.2)",
                MAX_POLICY_AGE.as_secs()
            ),
        );
    }
    let tlsrpt_rua = f.tlsrpt_rua.clone().unwrap_or_default();
    for uri in &tlsrpt_rua {
        if let Err(e) = check_rua(uri) {
            c.fail("publish.tlsrpt_rua", e);
        }
    }
    Publish {
        mode,
        mx,
        max_age: max_age.min(MAX_POLICY_AGE),
        tlsrpt_rua,
    }
}

/// An `mx` pattern: a host name, or `*.` followed by one (RFC 8461 §3.2).
fn check_mx_pattern(p: &str) -> Result<(), String> {
    let name = p.strip_prefix("*.").unwrap_or(p);
    portcullis_types::Domain::parse(name)
        .map(|_| ())
        .map_err(|e| format!("{p:?} is not a host name or *.host pattern: {e}"))
}

/// A TLS-RPT `rua` URI: `mailto:local@domain` or `https://host/...`
/// (RFC 8460 §3); no `,` or `;`, which would break the TXT record.
fn check_rua(uri: &str) -> Result<(), String> {
    if uri.contains([',', ';', ' ', '!']) {
        return Err(format!(
            "{uri:?}: `,`, `;`, `!` and spaces cannot appear in a rua URI"
        ));
    }
    if let Some(addr) = uri.strip_prefix("mailto:") {
        return portcullis_types::Address::parse(addr)
            .map(|_| ())
            .map_err(|e| format!("{uri:?}: {e}"));
    }
    if let Some(rest) = uri.strip_prefix("https://") {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        return portcullis_types::Domain::parse(host)
            .map(|_| ())
            .map_err(|e| format!("{uri:?}: {e}"));
    }
    Err(format!("{uri:?} is neither mailto: nor https:"))
}

impl Publish {
    /// The addresses of the `mailto:` URIs of `tlsrpt_rua` (validation
    /// made sure each parses): mail to one at an accepted domain is read
    /// as a TLS report, and accepted at RCPT whatever recipient
    /// verification says.
    pub fn report_mailboxes(&self) -> Vec<portcullis_types::Address> {
        self.tlsrpt_rua
            .iter()
            .filter_map(|uri| uri.strip_prefix("mailto:"))
            .filter_map(|addr| portcullis_types::Address::parse(addr).ok())
            .collect()
    }
}
