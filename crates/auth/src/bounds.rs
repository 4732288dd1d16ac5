//! Bounds on the work one message can make the DKIM and ARC checks do,
//! applied to the parsed message before mail-auth verifies anything.
//!
//! Why: mail-auth 0.13 hashes the fields a signature lists in `h=`
//! (`signed_headers`) by searching, for each entry, the names seen so far
//! and then the header section from the bottom, so the work grows with
//! `h=` entries × (distinct names + header fields) and never yields: one
//! signature listing 100,000 names cost 9.3 s of CPU. Each signature also
//! costs a key lookup in the sender's DNS and a public-key operation. So:
//! - at most `dkim_max_signatures` DKIM-Signature fields are verified
//!   (RFC 6376 §6.1: "a verifier MAY limit the number of signatures it
//!   tries to verify"), those whose `d=` matches the From domain first,
//!   since only they can make DMARC pass (RFC 7489 §3.1.1);
//! - a signature listing more than `dkim_max_signed_headers` fields is not
//!   verified (real signers list 5 to 40, oversigning included);
//! - a message with more than `max_header_fields` header fields gets none
//!   of its signatures verified.
//!
//! A signature that is not verified is recorded as `dkim=policy` with the
//! reason in a comment (RFC 8601 §2.7.1: "some aspect of the signature …
//! was not acceptable to the ADMD"); an ARC chain whose newest
//! ARC-Message-Signature (the only one whose `h=` is hashed, RFC 8617
//! §5.2) is over a bound is `arc=fail` with the reason, as RFC 8617 knows
//! no other verdict for a chain that is not validated. The number of
//! results written is bounded too, so a message of many malformed or
//! excess signatures cannot make our header larger than theirs.

use mail_auth::AuthenticatedMessage;
use portcullis_config::Verify;

use crate::results::{ArcVerdict, AuthResult, DkimVerdict, algorithm_name};

/// Reason: the message has more header fields than `max_header_fields`.
pub(crate) const TOO_MANY_FIELDS: &str = "too many header fields";
/// Reason: `h=` lists more than `dkim_max_signed_headers` fields.
pub(crate) const TOO_MANY_SIGNED: &str = "too many signed header fields";
/// Reason: the message has more than `dkim_max_signatures` signatures.
pub(crate) const TOO_MANY_SIGNATURES: &str = "too many signatures";
/// Reason of the one result that stands for those not written.
pub(crate) const NOT_RECORDED: &str = "further signatures not recorded";

/// At most this many DKIM results that are not verifications (malformed
/// signatures, signatures over a bound) are written; one more result says
/// that there were others.
pub(crate) const MAX_UNVERIFIED_RECORDED: usize = 10;

/// The bounds of `[verify]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// DKIM-Signature fields verified per message.
    pub signatures: usize,
    /// Most `h=` entries of a verified signature.
    pub signed_headers: usize,
    /// Most header fields of a message whose signatures are verified.
    pub header_fields: usize,
}

impl From<&Verify> for Limits {
    fn from(config: &Verify) -> Limits {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        Limits {
            signatures: n(config.dkim_max_signatures),
            signed_headers: n(config.dkim_max_signed_headers),
            header_fields: n(config.max_header_fields),
        }
    }
}

/// What the bounds took away from mail-auth.
#[derive(Debug, Default)]
pub(crate) struct Skipped {
    /// A `dkim=policy` result for each signature that is not verified.
    pub dkim: Vec<DkimVerdict>,
    /// The ARC verdict when the chain is not validated.
    pub arc: Option<ArcVerdict>,
}

/// Removes from `message` every DKIM signature and ARC set that is over a
/// bound, so mail-auth never sees them, and returns their results.
pub(crate) fn apply(message: &mut AuthenticatedMessage<'_>, limits: &Limits) -> Skipped {
    let mut skipped = Skipped::default();
    let signatures = std::mem::take(&mut message.dkim_headers);
    if message.headers.len() > limits.header_fields {
        skipped.dkim = signatures
            .iter()
            .map(|h| policy(&h.header, TOO_MANY_FIELDS))
            .collect();
        skipped.arc = skip_arc(message, TOO_MANY_FIELDS);
        return skipped;
    }

    // The verified ones: within the h= bound, aligned with From first,
    // then in header order (newest first), at most `signatures` of them.
    let from_domain = message
        .from()
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let mut candidates: Vec<usize> = Vec::with_capacity(signatures.len());
    let mut reasons: Vec<Option<&'static str>> = vec![None; signatures.len()];
    for (i, h) in signatures.iter().enumerate() {
        if h.header.h.len() > limits.signed_headers {
            reasons[i] = Some(TOO_MANY_SIGNED);
        } else {
            candidates.push(i);
        }
    }
    // A stable sort: header order is kept within each group.
    candidates.sort_by_key(|&i| !aligned(&signatures[i].header.d, &from_domain));
    for &i in candidates.iter().skip(limits.signatures) {
        reasons[i] = Some(TOO_MANY_SIGNATURES);
    }
    for (h, reason) in signatures.into_iter().zip(reasons) {
        match reason {
            Some(reason) => skipped.dkim.push(policy(&h.header, reason)),
            None => message.dkim_headers.push(h),
        }
    }

    // RFC 8617 §5.2: only the newest ARC-Message-Signature is hashed over
    // its h= (the seals cover the ARC fields alone, at most 50 sets).
    let newest = message.ams_headers.iter().max_by_key(|h| h.header.i);
    if !message.has_arc_errors && newest.is_some_and(|h| h.header.h.len() > limits.signed_headers) {
        skipped.arc = skip_arc(message, TOO_MANY_SIGNED);
    }
    skipped
}

/// The results to write: every verification (at most `signatures`), then
/// at most [`MAX_UNVERIFIED_RECORDED`] of the rest and, when there were
/// more, one `dkim=policy` that says so.
pub(crate) fn recorded(
    verified: Vec<DkimVerdict>,
    mut unverified: Vec<DkimVerdict>,
) -> Vec<DkimVerdict> {
    let mut all = verified;
    if unverified.len() > MAX_UNVERIFIED_RECORDED {
        unverified.truncate(MAX_UNVERIFIED_RECORDED);
        unverified.push(DkimVerdict {
            result: AuthResult::Policy,
            domain: String::new(),
            selector: String::new(),
            algorithm: None,
            reason: Some(NOT_RECORDED),
        });
    }
    all.extend(unverified);
    all
}

/// True when `d` and the From domain are the same or one is a subdomain of
/// the other: the signatures relaxed alignment can accept (RFC 7489
/// §3.1.1), found without the public suffix list (an order, not a verdict).
fn aligned(d: &str, from_domain: &str) -> bool {
    if from_domain.is_empty() {
        return false;
    }
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let sub = |a: &str, b: &str| {
        a.strip_suffix(b)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    };
    sub(from_domain, &d) || sub(&d, from_domain)
}

/// The `dkim=policy` result of a signature that is not verified.
fn policy(signature: &mail_auth::dkim::Signature, reason: &'static str) -> DkimVerdict {
    DkimVerdict {
        result: AuthResult::Policy,
        domain: signature.d.to_ascii_lowercase(),
        selector: signature.s.clone(),
        algorithm: Some(algorithm_name(signature.a)),
        reason: Some(reason),
    }
}

/// Takes the ARC sets away from `message` (mail-auth then finds no chain
/// and does no work) and returns the `arc=fail` for `reason`; `None` when
/// there was no chain.
fn skip_arc(message: &mut AuthenticatedMessage<'_>, reason: &'static str) -> Option<ArcVerdict> {
    if message.ams_headers.is_empty() && message.as_headers.is_empty() && !message.has_arc_errors {
        return None;
    }
    message.ams_headers.clear();
    message.as_headers.clear();
    message.aar_headers.clear();
    message.has_arc_errors = false;
    Some(ArcVerdict {
        result: AuthResult::Fail,
        sealer: None,
        reason: Some(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            signatures: 5,
            signed_headers: 64,
            header_fields: 1000,
        }
    }

    /// A DKIM-Signature field (not a valid signature: nothing here is
    /// verified) for `d`, listing `h` fields.
    fn signature(d: &str, h: usize) -> String {
        let names: Vec<String> = (0..h)
            .map(|i| match i {
                0 => "From".to_owned(),
                i => format!("X-H{i}"),
            })
            .collect();
        format!(
            "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d={d}; s=sel;\r\n\
             \th={};\r\n\tbh=AAAA; b=AAAA\r\n",
            names.join(":\r\n\t")
        )
    }

    fn message(signatures: &[String], extra_fields: usize) -> String {
        let mut m = signatures.concat();
        for i in 0..extra_fields {
            m.push_str(&format!("X-Filler-{i}: x\r\n"));
        }
        m.push_str("From: <alice@sender.test>\r\nSubject: s\r\n\r\nbody\r\n");
        m
    }

    #[track_caller]
    fn check<'m>(
        raw: &'m str,
        limits: Limits,
        kept: usize,
        skipped: &[(&str, &str)],
    ) -> AuthenticatedMessage<'m> {
        let mut parsed = AuthenticatedMessage::parse(raw.as_bytes()).expect("parse");
        let s = apply(&mut parsed, &limits);
        assert_eq!(
            parsed.dkim_headers.len(),
            kept,
            "signatures left for mail-auth"
        );
        let got: Vec<(&str, &str)> = s
            .dkim
            .iter()
            .map(|v| {
                assert_eq!(v.result, AuthResult::Policy);
                (v.domain.as_str(), v.reason.unwrap_or_default())
            })
            .collect();
        assert_eq!(got, skipped);
        parsed
    }

    #[test]
    fn within_every_bound_nothing_is_skipped() {
        let sigs: Vec<String> = (0..5)
            .map(|i| signature(&format!("d{i}.test"), 64))
            .collect();
        check(&message(&sigs, 0), limits(), 5, &[]);
    }

    /// N+1 signatures: the last one in header order is not verified.
    #[test]
    fn one_signature_over_the_count() {
        let sigs: Vec<String> = (0..6)
            .map(|i| signature(&format!("d{i}.test"), 3))
            .collect();
        check(
            &message(&sigs, 0),
            limits(),
            5,
            &[("d5.test", TOO_MANY_SIGNATURES)],
        );
    }

    /// Signatures that can make DMARC pass are verified first, wherever
    /// they are: six junk signatures on top cannot push the author's out.
    #[test]
    fn aligned_signatures_go_first() {
        let mut sigs: Vec<String> = (0..6)
            .map(|i| signature(&format!("d{i}.test"), 3))
            .collect();
        sigs.push(signature("mail.sender.test", 3));
        let raw = message(&sigs, 0);
        let parsed = check(
            &raw,
            limits(),
            5,
            &[
                ("d4.test", TOO_MANY_SIGNATURES),
                ("d5.test", TOO_MANY_SIGNATURES),
            ],
        );
        assert!(
            parsed
                .dkim_headers
                .iter()
                .any(|h| h.header.d == "mail.sender.test")
        );
        assert!(aligned("Sender.Test.", "sender.test"));
        assert!(aligned("sender.test", "a.sender.test"));
        assert!(!aligned("ender.test", "sender.test"));
        assert!(!aligned("sender.test", ""));
    }

    /// h= one over the bound: not verified; at the bound: verified; the
    /// one skipped does not take a place among the verified.
    #[test]
    fn signed_headers_over_the_bound() {
        let mut sigs = vec![signature("big.test", 65), signature("ok.test", 64)];
        sigs.extend((0..4).map(|i| signature(&format!("d{i}.test"), 2)));
        check(
            &message(&sigs, 0),
            limits(),
            5,
            &[("big.test", TOO_MANY_SIGNED)],
        );
    }

    /// The crafted signature of the issue: 100,000 names.
    #[test]
    fn one_hundred_thousand_names() {
        check(
            &message(&[signature("flood.test", 100_000)], 0),
            limits(),
            0,
            &[("flood.test", TOO_MANY_SIGNED)],
        );
    }

    /// One header field over the bound: no signature is verified.
    #[test]
    fn header_fields_over_the_bound() {
        let sigs = vec![signature("a.test", 3), signature("b.test", 3)];
        // Two signatures, the filler, From and Subject.
        let bound = Limits {
            header_fields: 2 + 10 + 2,
            ..limits()
        };
        check(&message(&sigs, 10), bound, 2, &[]);
        check(
            &message(&sigs, 11),
            bound,
            0,
            &[("a.test", TOO_MANY_FIELDS), ("b.test", TOO_MANY_FIELDS)],
        );
    }

    fn arc_set(h: usize) -> String {
        let names: Vec<String> = (0..h).map(|i| format!("X-H{i}")).collect();
        format!(
            "ARC-Seal: i=1; a=ed25519-sha256; cv=none; d=fwd.test; s=sel; b=AAAA\r\n\
             ARC-Message-Signature: i=1; a=ed25519-sha256; c=relaxed/relaxed; d=fwd.test;\r\n\
             \ts=sel; h={}; bh=AAAA; b=AAAA\r\n\
             ARC-Authentication-Results: i=1; fwd.test; dkim=pass\r\n",
            names.join(":")
        )
    }

    #[test]
    fn arc_signature_over_the_bound_is_a_failed_chain() {
        let ok = message(&[arc_set(64)], 0);
        let mut parsed = AuthenticatedMessage::parse(ok.as_bytes()).expect("parse");
        assert!(apply(&mut parsed, &limits()).arc.is_none());
        assert_eq!(parsed.ams_headers.len(), 1);

        let big = message(&[arc_set(65)], 0);
        let mut parsed = AuthenticatedMessage::parse(big.as_bytes()).expect("parse");
        let arc = apply(&mut parsed, &limits()).arc.expect("arc verdict");
        assert_eq!(arc.result, AuthResult::Fail);
        assert_eq!(arc.reason, Some(TOO_MANY_SIGNED));
        assert!(parsed.ams_headers.is_empty() && parsed.as_headers.is_empty());
    }

    #[test]
    fn results_written_are_bounded() {
        let v = |d: &str| DkimVerdict {
            result: AuthResult::Fail,
            domain: d.into(),
            selector: "s".into(),
            algorithm: None,
            reason: None,
        };
        let verified = vec![v("a.test"), v("b.test")];
        let few: Vec<DkimVerdict> = (0..MAX_UNVERIFIED_RECORDED).map(|_| v("x.test")).collect();
        assert_eq!(
            recorded(verified.clone(), few).len(),
            2 + MAX_UNVERIFIED_RECORDED
        );
        let many: Vec<DkimVerdict> = (0..10_000).map(|_| v("x.test")).collect();
        let all = recorded(verified, many);
        assert_eq!(all.len(), 2 + MAX_UNVERIFIED_RECORDED + 1);
        assert_eq!(all[0].domain, "a.test");
        let last = all.last().expect("summary");
        assert_eq!(
            (last.result, last.reason),
            (AuthResult::Policy, Some(NOT_RECORDED))
        );
    }
}
