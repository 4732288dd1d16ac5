//! The header fields we write (Authentication-Results, RFC 8601;
//! Received-SPF, RFC 7208 §9.1; our quarantine tag) and the removal of
//! incoming fields that claim to be ours (RFC 8601 §5).
//!
//! Every value that comes from the client or from DNS is written as an RFC
//! 8601 `pvalue`: bare when it is a plain atom, else a quoted-string with
//! `"` and `\` escaped and control characters dropped, so no sender can
//! inject a `;` result or a new header line.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::results::{AuthResult, DmarcPolicy, Results, SpfIdentity};

/// The header our quarantine tag uses; the internal mail store filters on
/// it. Incoming copies are removed, so its presence is always our verdict.
pub const QUARANTINE_HEADER: &str = "X-Portcullis-Quarantine";

/// The Authentication-Results field (RFC 8601 §2.2) for `results`, folded
/// one method per line, ending in CRLF. `dmarc_disposition` is what the
/// verdict did with the DMARC result (for the `dis=` comment).
pub fn authentication_results(
    authserv_id: &str,
    results: &Results,
    client_ip: IpAddr,
    dmarc_disposition: DmarcPolicy,
) -> String {
    let mut h = format!("Authentication-Results: {authserv_id}");
    push_spf(&mut h, results);
    push_dkim(&mut h, results);
    push_dmarc(&mut h, results, dmarc_disposition);
    push_arc(&mut h, results, client_ip);
    h.push_str("\r\n");
    h
}

/// Why every result is a guess, when verification ran out of time.
fn timed_out(results: &Results) -> Option<&'static str> {
    results.timed_out.then_some("verification timed out")
}

/// SPF (RFC 7208 §9.2, RFC 8601 §2.7.2).
fn push_spf(h: &mut String, results: &Results) {
    let spf = &results.spf;
    let _ = write!(h, ";\r\n\tspf={}", spf.result);
    if let Some(why) = timed_out(results) {
        let _ = write!(h, " ({why})");
    }
    match spf.identity {
        SpfIdentity::MailFrom => {
            h.push_str(" smtp.mailfrom=");
            push_pvalue(h, &spf.mail_from);
        }
        SpfIdentity::Helo => {
            h.push_str(" smtp.helo=");
            push_pvalue(h, &spf.helo);
        }
    }
}

/// DKIM, one result per signature (RFC 6376 §3.9, RFC 8601 §2.7.1).
fn push_dkim(h: &mut String, results: &Results) {
    if results.dkim.is_empty() {
        let none = if results.timed_out {
            AuthResult::TempError
        } else {
            AuthResult::None
        };
        let _ = write!(h, ";\r\n\tdkim={none}");
        if let Some(why) = timed_out(results) {
            let _ = write!(h, " ({why})");
        }
    }
    for dkim in &results.dkim {
        let _ = write!(h, ";\r\n\tdkim={}", dkim.result);
        if let Some(why) = dkim.reason {
            let _ = write!(h, " ({why})");
        }
        if !dkim.domain.is_empty() {
            h.push_str(" header.d=");
            push_pvalue(h, &dkim.domain);
            h.push_str(" header.s=");
            push_pvalue(h, &dkim.selector);
        }
        if let Some(a) = dkim.algorithm {
            let _ = write!(h, " header.a={a}");
        }
    }
}

/// DMARC (RFC 7489 §11.2), with the policy and what we did in a comment.
fn push_dmarc(h: &mut String, results: &Results, dmarc_disposition: DmarcPolicy) {
    let dmarc = &results.dmarc;
    let _ = write!(h, ";\r\n\tdmarc={}", dmarc.result);
    match (dmarc.policy, dmarc.reason) {
        (Some(p), _) => {
            let _ = write!(h, " (p={}", p.as_str());
            if dmarc.pct < 100 {
                let _ = write!(h, " pct={}", dmarc.pct);
            }
            let _ = write!(h, " dis={})", dmarc_disposition.as_str());
        }
        (None, Some(why)) => {
            let _ = write!(h, " ({why})");
        }
        (None, None) => {}
    }
    if !dmarc.from_domain.is_empty() {
        h.push_str(" header.from=");
        push_pvalue(h, &dmarc.from_domain);
    }
}

/// ARC (RFC 8617 §10.1). The reason and the newest sealer go into a
/// comment: RFC 8617 §10.1 registers only smtp.remote-ip and
/// header.oldest-pass for arc.
fn push_arc(h: &mut String, results: &Results, client_ip: IpAddr) {
    let arc = &results.arc;
    let _ = write!(h, ";\r\n\tarc={}", arc.result);
    let comment: Vec<String> = arc
        .reason
        .map(str::to_owned)
        .into_iter()
        .chain(arc.sealer.as_ref().map(|d| format!("d={d}")))
        .collect();
    if !comment.is_empty() {
        h.push_str(" (");
        push_comment(h, &comment.join(", "));
        h.push(')');
    }
    if arc.result != AuthResult::None && !results.timed_out {
        h.push_str(" smtp.remote-ip=");
        push_pvalue(h, &client_ip.to_string());
    }
}

/// The Received-SPF field (RFC 7208 §9.1), ending in CRLF.
pub fn received_spf(receiver: &str, results: &Results, client_ip: IpAddr) -> String {
    let spf = &results.spf;
    let (identity, subject) = match spf.identity {
        SpfIdentity::MailFrom => ("mailfrom", format!("domain of {}", spf.mail_from)),
        SpfIdentity::Helo => ("helo", format!("domain of postmaster@{}", spf.helo)),
    };
    let comment = match spf.result {
        AuthResult::Pass => format!("{subject} designates {client_ip} as permitted sender"),
        AuthResult::Fail => {
            format!("{subject} does not designate {client_ip} as permitted sender")
        }
        AuthResult::SoftFail => format!("{subject} does not designate {client_ip} (softfail)"),
        AuthResult::Neutral => format!("{subject} makes no statement about {client_ip}"),
        AuthResult::None => format!("{subject}: no SPF record"),
        AuthResult::TempError => format!("{subject}: temporary DNS error"),
        AuthResult::PermError => format!("{subject}: SPF record error"),
        AuthResult::Policy => format!("{subject}: not evaluated by local policy"),
    };
    let mut h = format!("Received-SPF: {} (", spf.result);
    push_comment(&mut h, &format!("{receiver}: {comment}"));
    h.push_str(")\r\n\tclient-ip=");
    h.push_str(&client_ip.to_string());
    h.push_str("; envelope-from=");
    push_quoted(&mut h, &spf.mail_from);
    h.push_str("; helo=");
    push_pvalue(&mut h, &spf.helo);
    h.push_str(";\r\n\treceiver=");
    push_pvalue(&mut h, receiver);
    let _ = write!(h, "; identity={identity};\r\n");
    h
}

/// The quarantine tag for a DMARC failure under `policy`, ending in CRLF.
pub fn quarantine(from_domain: &str, policy: DmarcPolicy) -> String {
    let mut h = format!("{QUARANTINE_HEADER}: dmarc; p={}", policy.as_str());
    if !from_domain.is_empty() {
        h.push_str("; header.from=");
        push_pvalue(&mut h, from_domain);
    }
    h.push_str("\r\n");
    h
}

/// Removes from the header section of `message` every Authentication-Results
/// field whose authserv-id is `authserv_id` (RFC 8601 §5: "a border MTA …
/// SHOULD delete any discovered instance of this header field that claims
/// … to have been added within its trust boundary") and every
/// [`QUARANTINE_HEADER`] field. Folded fields are removed whole; field names
/// and the authserv-id compare without regard to case; the body is never
/// touched. `None` when there was nothing to remove.
pub fn strip_forged(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let ours = authserv_id.trim_end_matches('.');
    let mut drop = Vec::new();
    for (start, end) in fields(message) {
        let text = &message[start..end];
        if let Some((name, value)) = split_field(text) {
            let forged = if name.eq_ignore_ascii_case(b"Authentication-Results") {
                authserv_id_of(value)
                    .is_some_and(|id| id.trim_end_matches('.').eq_ignore_ascii_case(ours))
            } else {
                name.eq_ignore_ascii_case(QUARANTINE_HEADER.as_bytes())
            };
            if forged {
                drop.push((start, end));
            }
        }
    }
    if drop.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut from = 0;
    for (start, end) in drop {
        out.extend_from_slice(&message[from..start]);
        from = end;
    }
    out.extend_from_slice(&message[from..]);
    Some(out)
}

/// The fields of the header section as `(start, end)` byte ranges, each
/// with its continuation lines and its final line break. The section ends
/// at the first empty line (RFC 5322 §2.1) or at the end of the message.
fn fields(message: &[u8]) -> Vec<(usize, usize)> {
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        let line_end = memchr_lf(&message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match fields.last_mut() {
            // RFC 5322 §2.2.3: a line starting with WSP continues the field.
            Some(last) if matches!(line[0], b' ' | b'\t') => last.1 = line_end,
            _ => fields.push((pos, line_end)),
        }
        pos = line_end;
    }
    fields
}

fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Splits a field into its name (without trailing WSP, RFC 5322 §4.5 allows
/// it before the colon) and its value.
fn split_field(field: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = &field[..colon];
    let trimmed = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(&name[..0], |i| &name[..=i]);
    Some((trimmed, &field[colon + 1..]))
}

/// The authserv-id at the start of an Authentication-Results value (RFC
/// 8601 §2.2: `[CFWS] authserv-id`, a `value`, i.e. a token or a
/// quoted-string), with comments and folding skipped.
fn authserv_id_of(value: &[u8]) -> Option<String> {
    let mut i = skip_cfws(value, 0);
    let bytes = value;
    if bytes.get(i) == Some(&b'"') {
        let mut id = Vec::new();
        i += 1;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'"' => return Some(String::from_utf8_lossy(&id).into_owned()),
                b'\\' => {
                    if let Some(&next) = bytes.get(i + 1) {
                        id.push(next);
                    }
                    i += 2;
                }
                b'\r' | b'\n' => i += 1,
                _ => {
                    id.push(b);
                    i += 1;
                }
            }
        }
        return None;
    }
    let start = i;
    while let Some(&b) = bytes.get(i) {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(') {
            break;
        }
        i += 1;
    }
    (i > start).then(|| String::from_utf8_lossy(&bytes[start..i]).into_owned())
}

/// Skips whitespace, line breaks and (nested) comments from `i`.
fn skip_cfws(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    i
}

/// Writes `value` as an RFC 8601 `pvalue`: bare when every character is
/// `atext`, `.` or `@` (an addr-spec or domain), else quoted.
fn push_pvalue(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.@".contains(&b));
    if bare {
        out.push_str(value);
    } else {
        push_quoted(out, value);
    }
}

/// Writes `value` as a quoted-string (RFC 5322 §3.2.4).
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `text` inside a comment: parentheses and backslashes escaped,
/// control characters dropped.
fn push_comment(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ArcVerdict, DkimVerdict, DmarcVerdict, SpfVerdict};

    const MSG_BODY: &[u8] = b"\r\nAuthentication-Results: mx.example.test; spf=pass\r\n";

    #[track_caller]
    fn strip(message: &str, expected: Option<&str>) {
        let got = strip_forged(message.as_bytes(), "mx.example.test");
        assert_eq!(
            got.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            expected.map(str::to_owned),
            "input: {message:?}"
        );
    }

    #[test]
    fn ours_is_removed_others_stay() {
        strip(
            "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a@b.test\r\n\
             Authentication-Results: other.example; dkim=pass\r\n\
             Subject: hi\r\n\r\nbody\r\n",
            Some(
                "Authentication-Results: other.example; dkim=pass\r\n\
                 Subject: hi\r\n\r\nbody\r\n",
            ),
        );
    }

    #[test]
    fn nothing_to_remove_is_none() {
        strip(
            "Subject: hi\r\n\r\nAuthentication-Results: mx.example.test; x\r\n",
            None,
        );
        strip(
            "Authentication-Results: mx.example.test.evil; spf=pass\r\n\r\n",
            None,
        );
        strip("Authentication-Results: mx.example; spf=pass\r\n\r\n", None);
    }

    #[test]
    fn folded_field_is_removed_whole() {
        strip(
            "From: a@b.test\r\nAuthentication-Results:\r\n\tmx.example.test;\r\n\tspf=pass\r\n \
             dkim=pass\r\nTo: c@d.test\r\n\r\nbody",
            Some("From: a@b.test\r\nTo: c@d.test\r\n\r\nbody"),
        );
    }

    #[test]
    fn case_comments_quotes_and_space_before_colon() {
        strip(
            "AUTHENTICATION-RESULTS : (forged) MX.Example.TEST. 1; spf=pass\r\n\r\nb",
            Some("\r\nb"),
        );
        strip(
            "authentication-results: (a (nested) comment)\r\n \"mx.example.test\"; none\r\n\r\n",
            Some("\r\n"),
        );
        strip(
            "Authentication-Results: mx.example.test(comment); none\r\n\r\n",
            Some("\r\n"),
        );
    }

    #[test]
    fn forged_quarantine_tag_is_removed() {
        strip(
            "X-Portcullis-Quarantine: none\r\nx-portcullis-quarantine:\r\n dmarc\r\nSubject: s\r\n\r\n",
            Some("Subject: s\r\n\r\n"),
        );
    }

    /// The body is never read as headers, even when it looks like one.
    #[test]
    fn body_is_untouched() {
        let mut message = b"Authentication-Results: mx.example.test; spf=pass\r\n".to_vec();
        message.extend_from_slice(MSG_BODY);
        let out = strip_forged(&message, "mx.example.test").unwrap();
        assert_eq!(out, MSG_BODY);
    }

    #[test]
    fn headers_only_message() {
        strip(
            "Subject: x\r\nAuthentication-Results: mx.example.test; none\r\n",
            Some("Subject: x\r\n"),
        );
    }

    fn results() -> Results {
        Results {
            spf: SpfVerdict {
                result: AuthResult::Pass,
                identity: SpfIdentity::MailFrom,
                mail_from: "alice@sender.test".into(),
                helo: "client.test".into(),
                domain: "sender.test".into(),
            },
            dkim: vec![
                DkimVerdict {
                    result: AuthResult::Pass,
                    domain: "sender.test".into(),
                    selector: "sel".into(),
                    algorithm: Some("ed25519-sha256"),
                    reason: None,
                },
                DkimVerdict {
                    result: AuthResult::Fail,
                    domain: "other.test".into(),
                    selector: "s2".into(),
                    algorithm: Some("rsa-sha256"),
                    reason: Some("body hash did not verify"),
                },
            ],
            dmarc: DmarcVerdict {
                result: AuthResult::Pass,
                from_domain: "sender.test".into(),
                policy: Some(DmarcPolicy::Reject),
                pct: 100,
                applied: DmarcPolicy::None,
                reason: None,
                report: None,
            },
            arc: ArcVerdict {
                result: AuthResult::None,
                sealer: None,
                reason: None,
            },
            timed_out: false,
        }
    }

    #[test]
    fn authentication_results_layout() {
        let h = authentication_results(
            "mx.example.test",
            &results(),
            "127.0.0.1".parse().unwrap(),
            DmarcPolicy::None,
        );
        assert_eq!(
            h,
            "Authentication-Results: mx.example.test;\r\n\
             \tspf=pass smtp.mailfrom=alice@sender.test;\r\n\
             \tdkim=pass header.d=sender.test header.s=sel header.a=ed25519-sha256;\r\n\
             \tdkim=fail (body hash did not verify) header.d=other.test header.s=s2 header.a=rsa-sha256;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=sender.test;\r\n\
             \tarc=none\r\n"
        );
    }

    #[test]
    fn hostile_values_are_quoted() {
        let mut r = results();
        r.spf.mail_from = "\"a;dkim=pass\"@x.test".into();
        r.dkim.clear();
        r.dmarc.from_domain = "x.test\r\nX-Evil: 1".into();
        let h = authentication_results(
            "mx.example.test",
            &r,
            "::1".parse().unwrap(),
            DmarcPolicy::None,
        );
        assert!(
            h.contains("smtp.mailfrom=\"\\\"a;dkim=pass\\\"@x.test\""),
            "{h}"
        );
        assert!(h.contains("header.from=\"x.testX-Evil: 1\""), "{h}");
        assert_eq!(h.matches("\r\n").count(), 5, "{h}");
        assert!(h.contains("dkim=none;"), "{h}");
    }

    #[test]
    fn helo_identity_and_received_spf() {
        let mut r = results();
        r.spf.identity = SpfIdentity::Helo;
        r.spf.mail_from = String::new();
        r.spf.result = AuthResult::Fail;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let h = authentication_results("mx.example.test", &r, ip, DmarcPolicy::None);
        assert!(h.contains("spf=fail smtp.helo=client.test;"), "{h}");
        let spf = received_spf("mx.example.test", &r, ip);
        assert_eq!(
            spf,
            "Received-SPF: fail (mx.example.test: domain of postmaster@client.test does not \
             designate 192.0.2.1 as permitted sender)\r\n\
             \tclient-ip=192.0.2.1; envelope-from=\"\"; helo=client.test;\r\n\
             \treceiver=mx.example.test; identity=helo;\r\n"
        );
    }

    #[test]
    fn quarantine_tag() {
        assert_eq!(
            quarantine("sender.test", DmarcPolicy::Quarantine),
            "X-Portcullis-Quarantine: dmarc; p=quarantine; header.from=sender.test\r\n"
        );
    }
}
