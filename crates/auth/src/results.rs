//! The outcome of each method in RFC 8601 terms, as owned values (nothing
//! borrows the message), so they can be logged, counted, written into
//! Authentication-Results and decided on.

use std::fmt;

use mail_auth::common::crypto::Algorithm;
use mail_auth::dkim::DkimError;
use mail_auth::{ArcOutput, DkimOutput, DkimResult, DmarcOutput, DmarcResult, SpfResult};

/// One method's result (RFC 8601 §2.7; `softfail` is SPF's, RFC 7208 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthResult {
    /// Authenticated.
    Pass,
    /// Checked and failed.
    Fail,
    /// SPF only: the domain says "probably not" (`~all`).
    SoftFail,
    /// Checked, but no definite statement (SPF `?all`, an unusable DKIM
    /// signature).
    Neutral,
    /// Nothing to check (no record, no signature).
    None,
    /// A temporary failure, normally DNS: a later try may succeed.
    TempError,
    /// A permanent error: a broken record or signature.
    PermError,
    /// Signed, but not verified by local policy (RFC 8601 §2.7.1): a
    /// signature over one of the `[verify]` bounds on work.
    Policy,
}

impl AuthResult {
    /// Every result, in metrics order.
    pub const ALL: [AuthResult; 8] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::SoftFail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::TempError,
        AuthResult::PermError,
        AuthResult::Policy,
    ];

    /// The RFC 8601 keyword (also the metrics label value).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
            AuthResult::Policy => "policy",
        }
    }
}

impl fmt::Display for AuthResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four methods (the `method` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// RFC 7208.
    Spf,
    /// RFC 6376.
    Dkim,
    /// RFC 7489.
    Dmarc,
    /// RFC 8617.
    Arc,
}

impl Method {
    /// Every method, in metrics order.
    pub const ALL: [Method; 4] = [Method::Spf, Method::Dkim, Method::Dmarc, Method::Arc];

    /// The RFC 8601 method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Spf => "spf",
            Method::Dkim => "dkim",
            Method::Dmarc => "dmarc",
            Method::Arc => "arc",
        }
    }
}

/// Which SPF identity was checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfIdentity {
    /// The MAIL FROM address.
    MailFrom,
    /// The HELO name: MAIL FROM was null, so `postmaster@<helo>` is the
    /// identity (RFC 7208 §2.4).
    Helo,
}

/// The SPF result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfVerdict {
    /// The result.
    pub result: AuthResult,
    /// Which identity was checked.
    pub identity: SpfIdentity,
    /// The MAIL FROM address (empty when null).
    pub mail_from: String,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The domain whose policy was evaluated: the MAIL FROM domain, or the
    /// HELO name.
    pub domain: String,
}

impl SpfVerdict {
    pub(crate) fn from_output(
        result: SpfResult,
        identity: SpfIdentity,
        mail_from: &str,
        helo: &str,
    ) -> SpfVerdict {
        let domain = match identity {
            SpfIdentity::MailFrom => mail_from.rsplit_once('@').map(|(_, d)| d).unwrap_or(helo),
            SpfIdentity::Helo => helo,
        };
        SpfVerdict {
            result: match result {
                SpfResult::Pass => AuthResult::Pass,
                SpfResult::Fail => AuthResult::Fail,
                SpfResult::SoftFail => AuthResult::SoftFail,
                SpfResult::Neutral => AuthResult::Neutral,
                SpfResult::TempError => AuthResult::TempError,
                SpfResult::PermError => AuthResult::PermError,
                SpfResult::None => AuthResult::None,
            },
            identity,
            mail_from: mail_from.to_owned(),
            helo: helo.to_owned(),
            domain: domain.to_ascii_lowercase(),
        }
    }
}

/// The result for one DKIM-Signature field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    /// The result.
    pub result: AuthResult,
    /// `d=` (empty when the signature could not be parsed).
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `a=`, e.g. `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: Option<&'static str>,
    /// Why it did not pass, for the comment in Authentication-Results.
    pub reason: Option<&'static str>,
}

impl DkimVerdict {
    pub(crate) fn from_output(output: &DkimOutput<'_>) -> DkimVerdict {
        let (result, reason) = match output.result() {
            DkimResult::Pass => (AuthResult::Pass, None),
            // RFC 6376 §6.1.3: a body hash that does not match is a failed
            // verification (PERMFAIL "body hash did not verify"), which RFC
            // 8601 §2.7.1 calls `fail`; mail-auth reports it as neutral.
            DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => {
                (AuthResult::Fail, Some(reason(e)))
            }
            DkimResult::Neutral(e) => (AuthResult::Neutral, Some(reason(e))),
            DkimResult::Fail(e) => (AuthResult::Fail, Some(reason(e))),
            DkimResult::PermError(e) => (AuthResult::PermError, Some(reason(e))),
            DkimResult::TempError(e) => (AuthResult::TempError, Some(reason(e))),
            DkimResult::None => (AuthResult::None, None),
        };
        let signature = output.signature();
        DkimVerdict {
            result,
            domain: signature
                .map(|s| s.d.to_ascii_lowercase())
                .unwrap_or_default(),
            selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
            algorithm: signature.map(|s| algorithm_name(s.a)),
            reason,
        }
    }
}

/// The `a=` of a signature as written (RFC 6376 §3.5, RFC 8463).
pub(crate) fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
    }
}

/// A DMARC policy (`p=`, `sp=`, `np=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// Monitor only.
    None,
    /// Treat as suspicious (we tag, or reject when configured).
    Quarantine,
    /// Refuse.
    Reject,
}

impl DmarcPolicy {
    /// The policy keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }

    /// RFC 7489 §6.6.4: a message not selected by `pct` gets the next less
    /// strict policy.
    pub fn relaxed(self) -> DmarcPolicy {
        match self {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            DmarcPolicy::Quarantine | DmarcPolicy::None => DmarcPolicy::None,
        }
    }
}

/// The DMARC result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcVerdict {
    /// The result.
    pub result: AuthResult,
    /// The RFC 5322.From domain (empty when there is none, or several).
    pub from_domain: String,
    /// The policy the domain's record asks for (`sp=`/`np=` and `t=y`
    /// already applied); `None` when no record was found or it could not
    /// be fetched.
    pub policy: Option<DmarcPolicy>,
    /// The record's `pct=` (RFC 7489 §6.3), 100 when absent.
    pub pct: u8,
    /// The policy this message gets after `pct` sampling (RFC 7489 §6.6.4):
    /// what the verdict applies. `None` unless the result is `fail`.
    pub applied: DmarcPolicy,
    /// Why it did not pass, for the comment in Authentication-Results.
    pub reason: Option<&'static str>,
    /// What an aggregate report says about this message, when the
    /// domain's record asks for aggregate reports (`rua=`); `None`
    /// otherwise.
    pub report: Option<Box<DmarcReportFacts>>,
}

/// One `rua=` destination of a DMARC record (RFC 7489 §6.2): the URI and
/// its size limit in octets (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcRua {
    /// The URI as published, e.g. `mailto:dmarc@example.com`.
    pub uri: String,
    /// The `!size` limit in octets, 0 when there is none.
    pub max_size: usize,
}

/// The facts of a DMARC aggregate report row (RFC 7489 §7.2,
/// Appendix C): the record as published (`policy_published`) and the
/// aligned results (`policy_evaluated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcReportFacts {
    /// `rua=`: where aggregate reports go (never empty here; only its
    /// `mailto:` URIs, the only kind mail-auth keeps).
    pub rua: Vec<DmarcRua>,
    /// `adkim=s`.
    pub adkim_strict: bool,
    /// `aspf=s`.
    pub aspf_strict: bool,
    /// `p=`.
    pub p: DmarcPolicy,
    /// `sp=` (`p=` when absent, RFC 7489 §6.3).
    pub sp: DmarcPolicy,
    /// `pct=` (100 when absent).
    pub pct: u8,
    /// A DKIM signature passed and aligned with the From domain.
    pub dkim_aligned: bool,
    /// SPF passed for a domain aligned with the From domain.
    pub spf_aligned: bool,
}

fn policy_of(p: mail_auth::dmarc::Policy) -> Option<DmarcPolicy> {
    match p {
        mail_auth::dmarc::Policy::Reject => Some(DmarcPolicy::Reject),
        mail_auth::dmarc::Policy::Quarantine => Some(DmarcPolicy::Quarantine),
        mail_auth::dmarc::Policy::None => Some(DmarcPolicy::None),
        mail_auth::dmarc::Policy::Unspecified => None,
    }
}

impl DmarcReportFacts {
    /// The facts of `output`, when its record asks for aggregate reports
    /// (pct 100 until it is known).
    pub(crate) fn from_output(output: &DmarcOutput) -> Option<DmarcReportFacts> {
        let record = output.dmarc_record()?;
        let rua: Vec<DmarcRua> = record
            .rua
            .iter()
            // mail-auth keeps only the `mailto:` URIs, as their addresses.
            .map(|u| DmarcRua {
                uri: format!("mailto:{}", u.uri()),
                max_size: u.max_size(),
            })
            .collect();
        if rua.is_empty() {
            return None;
        }
        let p = policy_of(record.p).unwrap_or(DmarcPolicy::None);
        Some(DmarcReportFacts {
            rua,
            adkim_strict: record.adkim == mail_auth::dmarc::Alignment::Strict,
            aspf_strict: record.aspf == mail_auth::dmarc::Alignment::Strict,
            p,
            sp: policy_of(record.sp).unwrap_or(p),
            pct: 100,
            dkim_aligned: matches!(output.dkim_result(), DmarcResult::Pass),
            spf_aligned: matches!(output.spf_result(), DmarcResult::Pass),
        })
    }
}

impl DmarcVerdict {
    /// The verdict before `pct` is applied (see [`DmarcVerdict::applied`]).
    pub(crate) fn from_output(output: &DmarcOutput) -> DmarcVerdict {
        let (result, reason) = match output.result() {
            DmarcResult::Pass => (AuthResult::Pass, None),
            DmarcResult::Fail(e) => (AuthResult::Fail, Some(reason(&e))),
            DmarcResult::TempError(e) => (AuthResult::TempError, Some(reason(&e))),
            DmarcResult::PermError(e) => (AuthResult::PermError, Some(reason(&e))),
            DmarcResult::None => (AuthResult::None, None),
        };
        let policy = output.dmarc_record().map(|_| match output.policy() {
            mail_auth::dmarc::Policy::Reject => DmarcPolicy::Reject,
            mail_auth::dmarc::Policy::Quarantine => DmarcPolicy::Quarantine,
            mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => {
                DmarcPolicy::None
            }
        });
        DmarcVerdict {
            result,
            from_domain: output.domain().to_ascii_lowercase(),
            policy,
            pct: 100,
            applied: DmarcPolicy::None,
            reason,
            report: DmarcReportFacts::from_output(output).map(Box::new),
        }
    }
}

/// The ARC chain result (RFC 8617 §5.2: none, pass or fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcVerdict {
    /// The result.
    pub result: AuthResult,
    /// `d=` of the newest ARC-Seal, when there is a chain.
    pub sealer: Option<String>,
    /// Why it did not pass, for the comment in Authentication-Results.
    pub reason: Option<&'static str>,
}

impl ArcVerdict {
    pub(crate) fn from_output(output: &ArcOutput<'_>) -> ArcVerdict {
        let (result, reason) = match output.result() {
            DkimResult::Pass => (AuthResult::Pass, None),
            DkimResult::None => (AuthResult::None, None),
            DkimResult::TempError(e) => (AuthResult::TempError, Some(reason(e))),
            // RFC 8617 knows only none, pass and fail: a chain that cannot
            // be validated for good is a failed chain.
            DkimResult::Fail(e) | DkimResult::Neutral(e) | DkimResult::PermError(e) => {
                (AuthResult::Fail, Some(reason(e)))
            }
        };
        ArcVerdict {
            result,
            sealer: output
                .sets()
                .last()
                .map(|set| set.seal.header.d.to_ascii_lowercase()),
            reason,
        }
    }
}

/// Every method's result for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    /// SPF.
    pub spf: SpfVerdict,
    /// DKIM, one per DKIM-Signature field (empty: no signature).
    pub dkim: Vec<DkimVerdict>,
    /// DMARC.
    pub dmarc: DmarcVerdict,
    /// ARC.
    pub arc: ArcVerdict,
    /// True when the checks ran out of time (`[verify] timeout`); every
    /// result is then `temperror`.
    pub timed_out: bool,
}

impl Results {
    /// The results of checks that did not finish in time: all temporary.
    pub(crate) fn timed_out(spf: SpfVerdict) -> Results {
        Results {
            spf: SpfVerdict {
                result: AuthResult::TempError,
                ..spf
            },
            dkim: Vec::new(),
            dmarc: DmarcVerdict {
                result: AuthResult::TempError,
                from_domain: String::new(),
                policy: None,
                pct: 100,
                applied: DmarcPolicy::None,
                reason: Some("timed out"),
                report: None,
            },
            arc: ArcVerdict {
                result: AuthResult::TempError,
                sealer: None,
                reason: Some("timed out"),
            },
            timed_out: true,
        }
    }

    /// The DKIM results in one word for logs: `none`, or each signature's
    /// `result:domain`, comma-separated.
    pub fn dkim_summary(&self) -> String {
        if self.dkim.is_empty() {
            return if self.timed_out {
                AuthResult::TempError.as_str().to_owned()
            } else {
                AuthResult::None.as_str().to_owned()
            };
        }
        self.dkim
            .iter()
            .map(|d| {
                if d.domain.is_empty() {
                    d.result.as_str().to_owned()
                } else {
                    format!("{}:{}", d.result, d.domain)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Each method with each of its results, for the metrics (DKIM counts
    /// every signature; a message without one counts as DKIM `none`).
    pub fn each(&self) -> Vec<(Method, AuthResult)> {
        let mut all = vec![(Method::Spf, self.spf.result)];
        if self.dkim.is_empty() {
            all.push((
                Method::Dkim,
                if self.timed_out {
                    AuthResult::TempError
                } else {
                    AuthResult::None
                },
            ));
        }
        all.extend(self.dkim.iter().map(|d| (Method::Dkim, d.result)));
        all.push((Method::Dmarc, self.dmarc.result));
        all.push((Method::Arc, self.arc.result));
        all
    }
}

/// A short reason for a mail-auth error, for comments in
/// Authentication-Results (never the error's own text, which may quote
/// DNS data).
pub(crate) fn reason(error: &mail_auth::Error) -> &'static str {
    use mail_auth::common::crypto::CryptoError;
    use mail_auth::{DnsError, Error};
    match error {
        Error::Dns(DnsError::Resolver(_)) => "dns error",
        Error::Dns(DnsError::RecordNotFound(_)) => "no key",
        Error::Dns(DnsError::InvalidRecordType) | Error::ParseError => "bad record",
        Error::Crypto(CryptoError::FailedVerification) => "signature did not verify",
        Error::Crypto(CryptoError::IncompatibleAlgorithms) => "key and signature algorithms differ",
        Error::Crypto(_) => "signature did not verify",
        Error::Dkim(DkimError::FailedBodyHashMatch) => "body hash did not verify",
        Error::Dkim(DkimError::RevokedPublicKey) => "key revoked",
        Error::Dkim(DkimError::SignatureExpired) => "signature expired",
        Error::Dkim(DkimError::FailedAuidMatch) => "i= not within d=",
        Error::Dkim(DkimError::SignatureLength) => "l= not accepted",
        Error::Dkim(_) => "unsupported signature",
        Error::Arc(mail_auth::arc::ArcError::BrokenChain) => "broken chain",
        Error::Arc(mail_auth::arc::ArcError::InvalidCV) => "invalid cv",
        Error::Arc(mail_auth::arc::ArcError::InvalidInstance(_)) => "invalid instance",
        Error::Arc(mail_auth::arc::ArcError::FailedBodyHashMatch) => "body hash did not verify",
        Error::Arc(_) => "invalid chain",
        Error::NotAligned => "not aligned",
        Error::NoHeadersFound | Error::MissingParameters => "malformed",
        _ => "error",
    }
}
