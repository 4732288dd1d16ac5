//! One message's DMARC facts as an aggregate report counts them
//! (RFC 7489 §7.2, Appendix C `record`): the row (source, disposition,
//! aligned results, the DKIM and SPF results) and the policy as published.
//! Made from the inbound verdict; every string bounded so that one row
//! stays small whatever the sender wrote.

use std::net::IpAddr;
use std::time::SystemTime;

use portcullis_auth::{AuthResult, Disposition, DmarcPolicy, SpfIdentity, Verdict};
use portcullis_tlsrpt::Day;
use serde::{Deserialize, Serialize};

/// DKIM results kept per row (a message may carry more signatures).
const MAX_DKIM: usize = 8;
/// Longest string kept (a domain name is at most 253 octets).
const MAX_TEXT: usize = 255;

/// One `rua=` destination as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rua {
    /// The URI, e.g. `mailto:dmarc@example.com`.
    pub uri: String,
    /// The `!size` limit in octets, 0: none.
    pub max_size: u64,
}

/// The DMARC record as published (Appendix C `policy_published`), with its
/// `rua` list: where the report goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// `rua=` (never empty for a recorded domain; at most 8 kept).
    pub rua: Vec<Rua>,
    /// `adkim=s`.
    pub adkim_strict: bool,
    /// `aspf=s`.
    pub aspf_strict: bool,
    /// `p=`: `none`, `quarantine` or `reject`.
    pub p: String,
    /// `sp=` (`p=` when absent).
    pub sp: String,
    /// `pct=`.
    pub pct: u8,
}

/// One DKIM result of a row (`auth_results/dkim`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DkimAuth {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `pass`, `fail`, `neutral`, `temperror`, `permerror`, `none`.
    pub result: String,
}

/// The SPF result of a row (`auth_results/spf`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpfAuth {
    /// The domain checked.
    pub domain: String,
    /// True when the HELO name was checked (MAIL FROM was null).
    pub helo: bool,
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`,
    /// `permerror`.
    pub result: String,
}

/// What makes two messages fall in the same row of a report: every field
/// of Appendix C's `row`, `identifiers` (but `header_from`, the report's
/// domain) and `auth_results`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowFacts {
    /// The client's address.
    pub source_ip: IpAddr,
    /// The RFC 5321 MAIL FROM domain (the HELO name for a null sender).
    pub envelope_from: String,
    /// The disposition we applied: `none`, `quarantine` or `reject`.
    pub disposition: String,
    /// DKIM passed aligned (`policy_evaluated/dkim`).
    pub dkim_aligned: bool,
    /// SPF passed aligned (`policy_evaluated/spf`).
    pub spf_aligned: bool,
    /// We applied less than the policy asked for (an exception, or
    /// `[verify]` tagging instead of refusing): `reason` `local_policy`.
    pub local_policy: bool,
    /// The DKIM results.
    pub dkim: Vec<DkimAuth>,
    /// The SPF result.
    pub spf: SpfAuth,
}

/// One message's facts, ready to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The RFC 5322 From domain: the report's policy domain.
    pub header_from: String,
    /// The UTC day the message arrived.
    pub day: Day,
    /// The record as published.
    pub published: Published,
    /// The row.
    pub row: RowFacts,
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn strictness(p: DmarcPolicy) -> u8 {
    match p {
        DmarcPolicy::None => 0,
        DmarcPolicy::Quarantine => 1,
        DmarcPolicy::Reject => 2,
    }
}

impl Observation {
    /// The facts of a message verified at `now` from `client_ip`, when its
    /// From domain asks for aggregate reports; `None` when it does not, or
    /// when the verdict was "try again later" (the message will come back
    /// and be counted then).
    pub fn from_verdict(
        verdict: &Verdict,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Option<Observation> {
        let dmarc = &verdict.results.dmarc;
        let facts = dmarc.report.as_deref()?;
        if dmarc.from_domain.is_empty() {
            return None;
        }
        let applied = match &verdict.disposition {
            Disposition::Accept => DmarcPolicy::None,
            Disposition::Quarantine => DmarcPolicy::Quarantine,
            Disposition::Reject(_) => DmarcPolicy::Reject,
            Disposition::TempFail(_) => return None,
        };
        let asked = if dmarc.result == AuthResult::Fail {
            dmarc.applied
        } else {
            DmarcPolicy::None
        };
        let spf = &verdict.results.spf;
        let mut dkim: Vec<DkimAuth> = verdict
            .results
            .dkim
            .iter()
            .take(MAX_DKIM)
            .map(|d| DkimAuth {
                domain: bounded(&d.domain),
                selector: bounded(&d.selector),
                result: d.result.as_str().to_owned(),
            })
            .collect();
        dkim.sort();
        Some(Observation {
            header_from: bounded(&dmarc.from_domain),
            day: Day::of(now),
            published: Published {
                rua: facts
                    .rua
                    .iter()
                    .take(8)
                    .map(|r| Rua {
                        uri: bounded(&r.uri),
                        max_size: r.max_size as u64,
                    })
                    .collect(),
                adkim_strict: facts.adkim_strict,
                aspf_strict: facts.aspf_strict,
                p: facts.p.as_str().to_owned(),
                sp: facts.sp.as_str().to_owned(),
                pct: facts.pct,
            },
            row: RowFacts {
                source_ip: client_ip,
                envelope_from: bounded(&spf.domain),
                disposition: applied.as_str().to_owned(),
                dkim_aligned: facts.dkim_aligned,
                spf_aligned: facts.spf_aligned,
                local_policy: strictness(applied) < strictness(asked),
                dkim,
                spf: SpfAuth {
                    domain: bounded(&spf.domain),
                    helo: spf.identity == SpfIdentity::Helo,
                    result: spf.result.as_str().to_owned(),
                },
            },
        })
    }
}

/// True when `message` (its header section is enough) is itself a report:
/// a TLS report (`TLS-Report-Domain`, RFC 8460 §5.3) or a DMARC or TLS
/// aggregate report by its subject (`Report Domain: … Submitter: …`,
/// RFC 7489 §7.2.1.1). Such mail is not counted, so that two servers
/// reporting to each other do not report on their reports forever.
pub fn is_report(message: &[u8]) -> bool {
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        let name = name.trim();
        if name.eq_ignore_ascii_case("tls-report-domain") {
            return true;
        }
        if name.eq_ignore_ascii_case("subject") {
            let v = value.trim().to_ascii_lowercase();
            if v.starts_with("report domain:") && v.contains("submitter:") {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_auth::{
        ArcVerdict, DkimVerdict, DmarcReportFacts, DmarcRua, DmarcVerdict, Results, SpfVerdict,
    };
    use portcullis_types::Reply;

    fn verdict(result: AuthResult, applied: DmarcPolicy, disposition: Disposition) -> Verdict {
        Verdict {
            results: Results {
                spf: SpfVerdict {
                    result: AuthResult::Pass,
                    identity: SpfIdentity::MailFrom,
                    mail_from: "a@bounce.sender.test".into(),
                    helo: "client.test".into(),
                    domain: "bounce.sender.test".into(),
                },
                dkim: vec![DkimVerdict {
                    result: AuthResult::Fail,
                    domain: "other.test".into(),
                    selector: "s1".into(),
                    algorithm: Some("rsa-sha256"),
                    reason: None,
                }],
                dmarc: DmarcVerdict {
                    result,
                    from_domain: "sender.test".into(),
                    policy: Some(DmarcPolicy::Reject),
                    pct: 100,
                    applied,
                    reason: None,
                    report: Some(Box::new(DmarcReportFacts {
                        rua: vec![DmarcRua {
                            uri: "mailto:d@sender.test".into(),
                            max_size: 10_000,
                        }],
                        adkim_strict: false,
                        aspf_strict: true,
                        p: DmarcPolicy::Reject,
                        sp: DmarcPolicy::Quarantine,
                        pct: 100,
                        dkim_aligned: false,
                        spf_aligned: false,
                    })),
                },
                arc: ArcVerdict {
                    result: AuthResult::None,
                    sealer: None,
                    reason: None,
                },
                timed_out: false,
            },
            disposition,
            exception: None,
            headers: String::new(),
        }
    }

    /// A failing message we only tagged under `p=reject` is a quarantine
    /// row with `local_policy`; one we refused is a reject row without;
    /// "try again later" is not counted; a domain without `rua` neither.
    #[test]
    fn rows_say_what_we_applied() {
        let ip: IpAddr = "192.0.2.3".parse().expect("ip");
        let now = SystemTime::UNIX_EPOCH;
        let tagged = Observation::from_verdict(
            &verdict(
                AuthResult::Fail,
                DmarcPolicy::Reject,
                Disposition::Quarantine,
            ),
            ip,
            now,
        )
        .expect("counted");
        assert_eq!(tagged.header_from, "sender.test");
        assert_eq!(tagged.row.disposition, "quarantine");
        assert!(tagged.row.local_policy);
        assert_eq!(tagged.row.envelope_from, "bounce.sender.test");
        assert_eq!(tagged.row.dkim[0].result, "fail");
        assert_eq!(
            (tagged.published.p.as_str(), tagged.published.sp.as_str()),
            ("reject", "quarantine")
        );
        assert_eq!(tagged.published.rua[0].max_size, 10_000);
        let reply = Reply::new(550, (5, 7, 1), "no");
        let refused = Observation::from_verdict(
            &verdict(
                AuthResult::Fail,
                DmarcPolicy::Reject,
                Disposition::Reject(reply),
            ),
            ip,
            now,
        )
        .expect("counted");
        assert_eq!(refused.row.disposition, "reject");
        assert!(!refused.row.local_policy);
        let later = Reply::new(451, (4, 7, 1), "later");
        assert!(
            Observation::from_verdict(
                &verdict(
                    AuthResult::TempError,
                    DmarcPolicy::None,
                    Disposition::TempFail(later)
                ),
                ip,
                now
            )
            .is_none()
        );
        let mut no_rua = verdict(AuthResult::Pass, DmarcPolicy::None, Disposition::Accept);
        no_rua.results.dmarc.report = None;
        assert!(Observation::from_verdict(&no_rua, ip, now).is_none());
    }

    #[test]
    fn reports_are_recognised_by_their_headers() {
        assert!(is_report(
            b"From: a@b\r\nSubject: Report Domain: x.test Submitter: y.test Report-ID: <1>\r\n\r\nbody"
        ));
        assert!(is_report(b"TLS-Report-Domain: x.test\r\n\r\n"));
        assert!(!is_report(
            b"Subject: hello\r\n\r\nSubject: Report Domain: a Submitter: b\r\n"
        ));
        assert!(!is_report(b"Subject: Report Domain: only\r\n\r\n"));
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let s = "é".repeat(200);
        let b = bounded(&s);
        assert!(b.len() <= MAX_TEXT && s.starts_with(&b));
    }
}
