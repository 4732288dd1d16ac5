//! The policy resource (RFC 8461 §3.2) and MX matching (§4.1), parsed
//! strictly: a policy we misread is worse than none, because an enforced
//! policy decides where mail may go.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::StsError;

/// RFC 8461 §3.2: the largest `max_age` a policy may carry (about one year).
pub const MAX_MAX_AGE: u64 = 31_557_600;

/// The policy mode (§3.2, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only over PKIX-valid TLS to a matching MX (§5).
    Enforce,
    /// Deliver as usual, but report what `enforce` would have refused.
    Testing,
    /// The domain has withdrawn its policy (§8.3): nothing is required.
    None,
}

impl Mode {
    /// The mode as written in a policy: `enforce`, `testing` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = StsError;

    /// Case-sensitive, as the ABNF of §3.2 (`%s"enforce"`) requires.
    fn from_str(s: &str) -> Result<Mode, StsError> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            other => Err(invalid(format!(
                "mode {other:?} is not enforce, testing or none"
            ))),
        }
    }
}

/// One `mx:` pattern (§3.2, §4.1): a host name, or `*.` plus a domain to
/// match exactly one extra left-most label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxPattern {
    /// True for `*.domain`.
    wildcard: bool,
    /// The name (after `*.` for a wildcard), lowercase, no trailing dot.
    name: String,
}

impl MxPattern {
    /// Parses a pattern: `mx.example.com` or `*.example.com`, letters, digits
    /// and hyphens only (RFC 5321 `Domain`), case-insensitive, one trailing
    /// dot ignored.
    pub fn parse(pattern: &str) -> Result<MxPattern, StsError> {
        let bad = |why: &str| invalid(format!("mx pattern {pattern:?}: {why}"));
        let trimmed = pattern.strip_suffix('.').unwrap_or(pattern);
        let (wildcard, name) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if name.is_empty() {
            return Err(bad("empty"));
        }
        if name.len() > 253 {
            return Err(bad("longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad("empty or over-long label"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                // This also rejects a `*` anywhere but the leading `*.`.
                return Err(bad(
                    "a label holds characters other than letters, digits and '-'",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label begins or ends with '-'"));
            }
        }
        Ok(MxPattern {
            wildcard,
            name: name.to_ascii_lowercase(),
        })
    }

    /// True for a `*.` pattern.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// §4.1: does MX host `host` match? Case-insensitive, a trailing dot on
    /// `host` ignored; `*.example.com` matches `mx1.example.com` but neither
    /// `example.com` nor `a.mx1.example.com`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !self.wildcard {
            return host == self.name;
        }
        match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.name,
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

impl TryFrom<String> for MxPattern {
    type Error = StsError;

    fn try_from(s: String) -> Result<MxPattern, StsError> {
        MxPattern::parse(&s)
    }
}

impl From<MxPattern> for String {
    fn from(p: MxPattern) -> String {
        p.to_string()
    }
}

/// A parsed policy (§3.2), with the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns in the order given (at least one unless mode is
    /// `none`).
    pub mx: Vec<MxPattern>,
    /// `max_age:` in seconds, 0..=[`MAX_MAX_AGE`].
    pub max_age: u64,
    /// The policy text as served (for TLS-RPT's `policy-string` and diffs).
    pub text: String,
}

impl Policy {
    /// Parses a policy body strictly (RFC 8461 §3.2):
    ///
    /// - lines end in CRLF or LF; lines that are empty or only white space
    ///   are skipped;
    /// - each line is `key: value` (white space allowed after the colon and
    ///   around the line); keys are case-sensitive;
    /// - `version: STSv1` must be the first field;
    /// - `mode` (`enforce`, `testing`, `none`) and `max_age` (1 to 10
    ///   digits, at most 31557600) exactly once each;
    /// - one or more `mx` patterns; a policy in mode `none` may omit them
    ///   (it only withdraws a policy, §8.3, and must be able to);
    /// - unknown keys (extensions) are ignored; a repeated `version`,
    ///   `mode` or `max_age`, a missing field or a bad value is invalid.
    pub fn parse(text: &str) -> Result<Policy, StsError> {
        let mut version_seen = false;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let n = index + 1;
            let Some((key, value)) = field(n, raw)? else {
                continue;
            };
            if !version_seen && key != "version" {
                return Err(invalid(format!(
                    "line {n}: the first field must be `version`, not {key:?}"
                )));
            }
            let dup = |field: &str| invalid(format!("line {n}: {field} given twice"));
            match key {
                "version" => {
                    if version_seen {
                        return Err(dup("version"));
                    }
                    if value != "STSv1" {
                        return Err(invalid(format!("line {n}: version {value:?} is not STSv1")));
                    }
                    version_seen = true;
                }
                "mode" => {
                    if mode.is_some() {
                        return Err(dup("mode"));
                    }
                    mode = Some(
                        value
                            .parse::<Mode>()
                            .map_err(|e| invalid(format!("line {n}: {}", reason(e))))?,
                    );
                }
                "max_age" => {
                    if max_age.is_some() {
                        return Err(dup("max_age"));
                    }
                    max_age =
                        Some(parse_max_age(value).map_err(|why| {
                            invalid(format!("line {n}: max_age {value:?}: {why}"))
                        })?);
                }
                "mx" => mx.push(
                    MxPattern::parse(value)
                        .map_err(|e| invalid(format!("line {n}: {}", reason(e))))?,
                ),
                // §3.2: extension fields are ignored, but must still be
                // well-formed `key: value` lines (checked above).
                _ => {}
            }
        }
        if !version_seen {
            return Err(invalid("no version field".to_owned()));
        }
        let mode = mode.ok_or_else(|| invalid("no mode field".to_owned()))?;
        let max_age = max_age.ok_or_else(|| invalid("no max_age field".to_owned()))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(invalid(format!("mode {mode} without any mx field")));
        }
        Ok(Policy {
            mode,
            mx,
            max_age,
            text: text.to_owned(),
        })
    }

    /// §4.1: true when MX host `host` matches one of the `mx` patterns.
    pub fn matches_mx(&self, host: &str) -> bool {
        matches_any(&self.mx, host)
    }

    /// Writes a policy in the §3.2 format (LF line ends), e.g. for a pin.
    pub fn render(mode: Mode, mx: &[MxPattern], max_age: u64) -> String {
        let mut text = format!("version: STSv1\nmode: {mode}\n");
        for pattern in mx {
            text.push_str(&format!("mx: {pattern}\n"));
        }
        text.push_str(&format!("max_age: {max_age}\n"));
        text
    }
}

/// True when `host` matches one of `patterns` (§4.1).
pub(crate) fn matches_any(patterns: &[MxPattern], host: &str) -> bool {
    patterns.iter().any(|p| p.matches(host))
}

/// `sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`
/// (the fixed keys fit this too).
fn is_field_name(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `max-age-value = 1*10(DIGIT)`, at most [`MAX_MAX_AGE`].
fn parse_max_age(value: &str) -> Result<u64, &'static str> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not 1 to 10 digits");
    }
    let n: u64 = value.parse().map_err(|_| "not a number")?;
    if n > MAX_MAX_AGE {
        return Err("larger than 31557600");
    }
    Ok(n)
}

fn invalid(reason: String) -> StsError {
    StsError::Invalid { reason }
}

/// The reason text of an [`StsError::Invalid`] (to prefix a line number).
fn reason(e: StsError) -> String {
    match e {
        StsError::Invalid { reason } => reason,
        other => other.to_string(),
    }
}

/// The `key: value` of policy line `n` (§3.2), without its line end and
/// the white space around it; `None` for a blank line. A bare CR, a line
/// without a colon or a malformed key is invalid.
fn field(n: usize, raw: &str) -> Result<Option<(&str, &str)>, StsError> {
    let line = raw.strip_suffix('\r').unwrap_or(raw);
    if line.contains('\r') {
        return Err(invalid(format!("line {n}: bare CR")));
    }
    let line = line.trim_matches([' ', '\t']);
    if line.is_empty() {
        return Ok(None);
    }
    let Some((key, value)) = line.split_once(':') else {
        return Err(invalid(format!("line {n}: not a `key: value` line")));
    };
    if !is_field_name(key) {
        return Err(invalid(format!("line {n}: bad key {key:?}")));
    }
    Ok(Some((key, value.trim_start_matches([' ', '\t']))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";

    #[track_caller]
    fn ok(text: &str) -> Policy {
        match Policy::parse(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?} rejected: {e}"),
        }
    }

    #[track_caller]
    fn bad(text: &str, want_in_reason: &str) {
        match Policy::parse(text) {
            Ok(p) => panic!("{text:?} accepted as {p:?}"),
            Err(StsError::Invalid { reason }) => assert!(
                reason.contains(want_in_reason),
                "{text:?}: reason {reason:?} lacks {want_in_reason:?}"
            ),
            Err(e) => panic!("{text:?}: wrong error {e}"),
        }
    }

    fn patterns(p: &Policy) -> Vec<String> {
        p.mx.iter().map(ToString::to_string).collect()
    }

    // §3.2 example policy.
    #[test]
    fn rfc_example_parses() {
        let p = ok(GOOD);
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert_eq!(
            patterns(&p),
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert_eq!(p.text, GOOD);
    }

    #[test]
    fn crlf_line_ends() {
        let p = ok(&GOOD.replace('\n', "\r\n"));
        assert_eq!(p.mx.len(), 3);
    }

    #[test]
    fn no_final_line_end() {
        ok("version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400");
    }

    #[test]
    fn white_space_after_colon_and_around_lines() {
        let p = ok("version:STSv1\nmode:\ttesting  \n  mx:   mx.example.com\nmax_age: 86400\n");
        assert_eq!(p.mode, Mode::Testing);
    }

    #[test]
    fn blank_lines_are_skipped() {
        ok("version: STSv1\n\nmode: enforce\r\n\r\nmx: mx.example.com\nmax_age: 1\n\n\n");
    }

    #[test]
    fn every_mode() {
        for (text, mode) in [
            ("enforce", Mode::Enforce),
            ("testing", Mode::Testing),
            ("none", Mode::None),
        ] {
            let p = ok(&format!(
                "version: STSv1\nmode: {text}\nmx: a.example\nmax_age: 5\n"
            ));
            assert_eq!(p.mode, mode);
        }
    }

    #[test]
    fn mode_none_may_omit_mx() {
        let p = ok("version: STSv1\nmode: none\nmax_age: 86400\n");
        assert!(p.mx.is_empty());
    }

    #[test]
    fn unknown_keys_are_ignored() {
        ok(
            "version: STSv1\nmode: enforce\nfuture_key: some value\nmx: mx.example.com\nmax_age: 86400\n",
        );
    }

    #[test]
    fn max_age_bounds() {
        let at = |n: &str| format!("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: {n}\n");
        assert_eq!(ok(&at("0")).max_age, 0);
        assert_eq!(ok(&at("31557600")).max_age, MAX_MAX_AGE);
        bad(&at("31557601"), "larger than");
        bad(&at("99999999999"), "1 to 10 digits");
        bad(&at("-1"), "1 to 10 digits");
        bad(&at("1d"), "1 to 10 digits");
        bad(&at(""), "1 to 10 digits");
    }

    #[test]
    fn version_must_come_first() {
        bad(
            "mode: enforce\nversion: STSv1\nmx: a.example\nmax_age: 5\n",
            "first field must be `version`",
        );
    }

    #[test]
    fn missing_version() {
        bad("", "no version");
        bad("\n\n", "no version");
    }

    #[test]
    fn wrong_version() {
        bad(
            "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 5\n",
            "not STSv1",
        );
        bad(
            "version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 5\n",
            "not STSv1",
        );
    }

    #[test]
    fn missing_mode() {
        bad("version: STSv1\nmx: a.example\nmax_age: 5\n", "no mode");
    }

    #[test]
    fn missing_max_age() {
        bad(
            "version: STSv1\nmode: enforce\nmx: a.example\n",
            "no max_age",
        );
    }

    #[test]
    fn missing_mx_in_enforce_and_testing() {
        bad(
            "version: STSv1\nmode: enforce\nmax_age: 5\n",
            "without any mx",
        );
        bad(
            "version: STSv1\nmode: testing\nmax_age: 5\n",
            "without any mx",
        );
    }

    #[test]
    fn bad_mode() {
        bad(
            "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 5\n",
            "is not enforce",
        );
        bad(
            "version: STSv1\nmode: reject\nmx: a.example\nmax_age: 5\n",
            "is not enforce",
        );
    }

    #[test]
    fn duplicates_are_invalid() {
        bad(
            "version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\n",
            "version given twice",
        );
        bad(
            "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 5\n",
            "mode given twice",
        );
        bad(
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\nmax_age: 5\n",
            "max_age given twice",
        );
    }

    #[test]
    fn line_without_colon() {
        bad(
            "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 5\n",
            "line 2",
        );
    }

    #[test]
    fn bare_cr() {
        bad(
            "version: STSv1\rmode: enforce\nmx: a.example\nmax_age: 5\n",
            "bare CR",
        );
    }

    #[test]
    fn keys_are_case_sensitive() {
        // `Mode` is an (ignored) extension, so mode is missing.
        bad(
            "version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 5\n",
            "no mode",
        );
    }

    #[test]
    fn bad_key_characters() {
        bad(
            "version: STSv1\nmode: enforce\nm x: a\nmx: a.example\nmax_age: 5\n",
            "bad key",
        );
    }

    #[test]
    fn bad_mx_patterns() {
        for pattern in [
            "",
            "*",
            "*.",
            "mx.*.example.com",
            "**.example.com",
            "*example.com",
            "mx..example.com",
            "-mx.example.com",
            "mx_1.example.com",
            "mx.example.com:25",
            "192.0.2.1/24",
        ] {
            bad(
                &format!("version: STSv1\nmode: enforce\nmx: {pattern}\nmax_age: 5\n"),
                "mx pattern",
            );
        }
    }

    #[test]
    fn mx_patterns_are_lowercased_and_lose_the_trailing_dot() {
        let p = ok(
            "version: STSv1\nmode: enforce\nmx: MX.Example.COM.\nmx: *.Example.NET\nmax_age: 5\n",
        );
        assert_eq!(patterns(&p), ["mx.example.com", "*.example.net"]);
    }

    #[track_caller]
    fn matching(pattern: &str, host: &str, want: bool) {
        let p = MxPattern::parse(pattern).unwrap();
        assert_eq!(p.matches(host), want, "{pattern} vs {host}");
    }

    // §4.1 cases.
    #[test]
    fn exact_pattern_matches_only_that_host() {
        matching("mail.example.com", "mail.example.com", true);
        matching("mail.example.com", "MAIL.Example.Com.", true);
        matching("mail.example.com", "mail2.example.com", false);
        matching("mail.example.com", "x.mail.example.com", false);
        matching("mail.example.com", "example.com", false);
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        matching("*.example.com", "mx1.example.com", true);
        matching("*.example.com", "MX1.EXAMPLE.COM.", true);
        matching("*.example.com", "example.com", false);
        matching("*.example.com", "a.mx1.example.com", false);
        matching("*.example.com", ".example.com", false);
        matching("*.example.com", "mx1.example.net", false);
        matching("*.example.com", "mx1example.com", false);
    }

    #[test]
    fn policy_matches_any_pattern() {
        let p = ok(GOOD);
        assert!(p.matches_mx("mail.example.com"));
        assert!(p.matches_mx("relay.example.net"));
        assert!(p.matches_mx("backupmx.example.com."));
        assert!(!p.matches_mx("example.net"));
        assert!(!p.matches_mx("evil.example.org"));
    }

    #[test]
    fn render_round_trips() {
        let p = ok(GOOD);
        let text = Policy::render(p.mode, &p.mx, p.max_age);
        let again = ok(&text);
        assert_eq!(
            (again.mode, &again.mx, again.max_age),
            (p.mode, &p.mx, p.max_age)
        );
    }

    #[test]
    fn patterns_serialize_as_strings() {
        let p = MxPattern::parse("*.example.com").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"*.example.com\"");
        let back: MxPattern = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::from_str::<MxPattern>("\"bad pattern\"").is_err());
    }
}
