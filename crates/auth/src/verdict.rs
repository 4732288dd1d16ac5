//! From results to what happens to the message: accept, tag, reject or
//! "try again later". Pure functions of the results and `[verify]`, so
//! every rule is unit-tested without DNS.
//!
//! The rules, in order (the first that applies wins):
//! 1. the checks ran out of time: 451 4.7.0;
//! 2. `spf_fail = "reject"` and SPF `fail`: 550 5.7.23 (RFC 7372);
//! 3. DMARC `fail` (RFC 7489 §6.6.4, `pct` already applied): under
//!    `p=reject` 550 5.7.1 when `dmarc_reject`, else like `p=quarantine`;
//!    under `p=quarantine` the quarantine tag, or 550 5.7.1 when
//!    `dmarc_quarantine = "reject"`;
//! 4. DMARC `temperror` when the policy is unknown or not `none`: 451 4.7.0
//!    (we cannot tell whether the domain asks for rejection — never a false
//!    reject, never a false accept);
//! 5. `spf_fail = "reject"` and SPF `temperror`: 451 4.7.24;
//! 6. otherwise accept. SPF `softfail`/`neutral`/`permerror`, DKIM and ARC
//!    results and DMARC `permerror` are recorded, never acted on alone.
//!
//! An exception (`[verify] exceptions`) turns anything but "accept" into
//! "accept"; the results are still recorded.

use ipnet::IpNet;
use portcullis_config::{DmarcQuarantine, SpfFail, Verify, VerifyException};
use portcullis_types::{Domain, Reply};
use std::net::IpAddr;

use crate::results::{AuthResult, DmarcPolicy, Results, SpfVerdict};

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Accept.
    Accept,
    /// Accept with the quarantine tag (DMARC `p=quarantine` failure).
    Quarantine,
    /// Refuse for good (5xx).
    Reject(Reply),
    /// Refuse for now (4xx): the client retries later.
    TempFail(Reply),
}

impl Disposition {
    /// A word for logs and metrics: `accept`, `quarantine`, `reject`,
    /// `tempfail`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Accept => "accept",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject(_) => "reject",
            Disposition::TempFail(_) => "tempfail",
        }
    }

    /// The refusal reply, if the message is refused.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Disposition::Reject(r) | Disposition::TempFail(r) => Some(r),
            Disposition::Accept | Disposition::Quarantine => None,
        }
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Every method's result.
    pub results: Results,
    /// What happens to the message.
    pub disposition: Disposition,
    /// The `[verify] exceptions` entry that kept the message from being
    /// refused or tagged.
    pub exception: Option<String>,
    /// Header fields to prepend when the message is accepted
    /// (Authentication-Results, Received-SPF, and the quarantine tag when
    /// quarantined), each ending in CRLF.
    pub headers: String,
}

/// The verdict on a sender at MAIL FROM (`spf_fail = "reject"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderVerdict {
    /// The SPF result.
    pub spf: SpfVerdict,
    /// Refuse the sender with this reply; `None`: go on.
    pub reply: Option<Reply>,
    /// The exceptions entry that let a refused sender through.
    pub exception: Option<String>,
}

/// The disposition the rules of the module documentation give, before
/// exceptions.
pub fn decide(config: &Verify, results: &Results) -> Disposition {
    if results.timed_out {
        return Disposition::TempFail(Reply::new(
            451,
            (4, 7, 0),
            "Sender verification (SPF, DKIM, DMARC) timed out, try again later",
        ));
    }
    if let Some(reply) = spf_rule(config, &results.spf)
        && reply.is_permanent()
    {
        return Disposition::Reject(reply);
    }
    let dmarc = &results.dmarc;
    if dmarc.result == AuthResult::Fail {
        let applied = match dmarc.applied {
            DmarcPolicy::Reject if !config.dmarc_reject => DmarcPolicy::Quarantine,
            other => other,
        };
        match applied {
            DmarcPolicy::Reject => return Disposition::Reject(dmarc_reject(&dmarc.from_domain)),
            DmarcPolicy::Quarantine => {
                return match config.dmarc_quarantine {
                    DmarcQuarantine::Tag => Disposition::Quarantine,
                    DmarcQuarantine::Reject => Disposition::Reject(Reply::new(
                        550,
                        (5, 7, 1),
                        format!(
                            "Message rejected: it fails DMARC authentication and {} asks for \
                             quarantine",
                            shown(&dmarc.from_domain)
                        ),
                    )),
                };
            }
            DmarcPolicy::None => {}
        }
    }
    if dmarc.result == AuthResult::TempError && dmarc.policy != Some(DmarcPolicy::None) {
        return Disposition::TempFail(Reply::new(
            451,
            (4, 7, 0),
            format!(
                "Temporary DNS failure while checking DMARC for {}, try again later",
                shown(&dmarc.from_domain)
            ),
        ));
    }
    if let Some(reply) = spf_rule(config, &results.spf) {
        return Disposition::TempFail(reply);
    }
    Disposition::Accept
}

/// Rules 2 and 5: with `spf_fail = "reject"`, SPF `fail` refuses the
/// sender and `temperror` defers it. Used at MAIL FROM and again at the
/// end of data.
pub fn spf_rule(config: &Verify, spf: &SpfVerdict) -> Option<Reply> {
    if config.spf_fail != SpfFail::Reject {
        return None;
    }
    match spf.result {
        // RFC 7208 §8.4: fail may be refused, with RFC 7372's code.
        AuthResult::Fail => Some(Reply::new(
            550,
            (5, 7, 23),
            format!(
                "SPF validation failed: {} does not permit this host to send its mail",
                shown(&spf.domain)
            ),
        )),
        // RFC 7208 §8.6: temperror should be a 4xx.
        AuthResult::TempError => Some(Reply::new(
            451,
            (4, 7, 24),
            format!(
                "SPF validation error (temporary DNS failure for {}), try again later",
                shown(&spf.domain)
            ),
        )),
        _ => None,
    }
}

fn dmarc_reject(domain: &str) -> Reply {
    Reply::new(
        550,
        (5, 7, 1),
        format!(
            "Message rejected: it fails DMARC authentication and {} asks for rejection \
             (p=reject)",
            shown(domain)
        ),
    )
}

/// A domain for a reply text: the client-supplied name, bounded.
fn shown(domain: &str) -> &str {
    match domain {
        "" => "the From domain",
        d if d.len() > 253 => d.get(..253).unwrap_or("the From domain"),
        d => d,
    }
}

/// What the client is authenticated as, for matching exceptions.
#[derive(Debug, Default)]
pub struct Identities<'a> {
    /// The client's address (always authentic: it is the TCP peer).
    pub client_ip: Option<IpAddr>,
    /// Domains authenticated for this message: the SPF-passed MAIL FROM or
    /// HELO domain, DKIM-passed `d=`, the sealer of a passing ARC chain,
    /// the host name of a passing iprev check.
    pub domains: Vec<&'a str>,
}

impl<'a> Identities<'a> {
    /// The identities the results prove.
    pub fn from_results(client_ip: IpAddr, results: &'a Results) -> Identities<'a> {
        let mut domains = Vec::new();
        if results.spf.result == AuthResult::Pass {
            domains.push(results.spf.domain.as_str());
        }
        domains.extend(
            results
                .dkim
                .iter()
                .filter(|d| d.result == AuthResult::Pass)
                .map(|d| d.domain.as_str()),
        );
        if results.arc.result == AuthResult::Pass
            && let Some(sealer) = &results.arc.sealer
        {
            domains.push(sealer.as_str());
        }
        Identities {
            client_ip: Some(client_ip),
            domains,
        }
    }
}

/// The first exception that `who` matches: a network containing the
/// client's address, or a domain that one of the authenticated domains is
/// within (the domain itself or a subdomain). Unauthenticated names (a
/// MAIL FROM without SPF pass, the HELO name, the From header) never match:
/// they are the sender's to choose.
pub fn matching_exception(exceptions: &[VerifyException], who: &Identities<'_>) -> Option<String> {
    let ip = who.client_ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    });
    let domains: Vec<Domain> = who
        .domains
        .iter()
        .filter_map(|d| Domain::parse(d).ok())
        .collect();
    exceptions.iter().find_map(|e| match e {
        VerifyException::Network(net) => ip
            .is_some_and(|ip| IpNet::contains(net, &ip))
            .then(|| net.to_string()),
        VerifyException::Domain(entry) => domains
            .iter()
            .any(|d| d.is_within(entry))
            .then(|| entry.to_string()),
    })
}

/// True when some exception is a domain (only then is an iprev lookup worth
/// making).
pub fn has_domain_exceptions(exceptions: &[VerifyException]) -> bool {
    exceptions
        .iter()
        .any(|e| matches!(e, VerifyException::Domain(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ArcVerdict, DkimVerdict, DmarcVerdict, SpfIdentity};
    use std::time::Duration;

    fn config() -> Verify {
        Verify::default()
    }

    fn results(spf: AuthResult, dmarc: AuthResult, policy: Option<DmarcPolicy>) -> Results {
        Results {
            spf: SpfVerdict {
                result: spf,
                identity: SpfIdentity::MailFrom,
                mail_from: "a@sender.test".into(),
                helo: "client.test".into(),
                domain: "sender.test".into(),
            },
            dkim: vec![],
            dmarc: DmarcVerdict {
                result: dmarc,
                from_domain: "sender.test".into(),
                policy,
                pct: 100,
                applied: if dmarc == AuthResult::Fail {
                    policy.unwrap_or(DmarcPolicy::None)
                } else {
                    DmarcPolicy::None
                },
                reason: Option::None,
                report: Option::None,
            },
            arc: ArcVerdict {
                result: AuthResult::None,
                sealer: Option::None,
                reason: Option::None,
            },
            timed_out: false,
        }
    }

    #[track_caller]
    fn case(config: &Verify, r: &Results, expected: &str, code: Option<&str>) {
        let d = decide(config, r);
        assert_eq!(d.as_str(), expected, "{d:?}");
        assert_eq!(
            d.reply().map(|r| {
                let (c, s, x) = r.enhanced.unwrap_or_default();
                format!("{} {c}.{s}.{x}", r.code)
            }),
            code.map(str::to_owned),
            "{d:?}"
        );
    }

    use AuthResult::*;
    use DmarcPolicy as P;

    #[test]
    fn dmarc_reject_is_550_naming_dmarc() {
        let d = decide(&config(), &results(Fail, Fail, Some(P::Reject)));
        let reply = d.reply().unwrap().to_string();
        assert!(reply.starts_with("550 5.7.1 "), "{reply}");
        assert!(
            reply.contains("DMARC") && reply.contains("sender.test"),
            "{reply}"
        );
    }

    #[test]
    fn table() {
        let c = config();
        // SPF alone never decides by default.
        case(
            &c,
            &results(Fail, None, Option::None),
            "accept",
            Option::None,
        );
        case(
            &c,
            &results(SoftFail, None, Option::None),
            "accept",
            Option::None,
        );
        case(
            &c,
            &results(PermError, None, Option::None),
            "accept",
            Option::None,
        );
        case(
            &c,
            &results(TempError, None, Option::None),
            "accept",
            Option::None,
        );
        // DMARC.
        case(
            &c,
            &results(Pass, Pass, Some(P::Reject)),
            "accept",
            Option::None,
        );
        case(
            &c,
            &results(Fail, Fail, Some(P::None)),
            "accept",
            Option::None,
        );
        case(
            &c,
            &results(Fail, Fail, Some(P::Quarantine)),
            "quarantine",
            Option::None,
        );
        case(
            &c,
            &results(Fail, Fail, Some(P::Reject)),
            "reject",
            Some("550 5.7.1"),
        );
        case(
            &c,
            &results(Pass, PermError, Option::None),
            "accept",
            Option::None,
        );
        // A temporary failure defers unless the policy is known to be none.
        case(
            &c,
            &results(Pass, TempError, Option::None),
            "tempfail",
            Some("451 4.7.0"),
        );
        case(
            &c,
            &results(TempError, TempError, Some(P::Reject)),
            "tempfail",
            Some("451 4.7.0"),
        );
        case(
            &c,
            &results(TempError, TempError, Some(P::None)),
            "accept",
            Option::None,
        );
    }

    #[test]
    fn pct_downgrade_is_applied_policy() {
        let mut r = results(Fail, Fail, Some(P::Reject));
        r.dmarc.pct = 0;
        r.dmarc.applied = P::Reject.relaxed();
        case(&config(), &r, "quarantine", Option::None);
        r.dmarc.policy = Some(P::Quarantine);
        r.dmarc.applied = P::Quarantine.relaxed();
        case(&config(), &r, "accept", Option::None);
    }

    #[test]
    fn switches() {
        let mut c = config();
        c.dmarc_reject = false;
        case(
            &c,
            &results(Fail, Fail, Some(P::Reject)),
            "quarantine",
            Option::None,
        );
        c.dmarc_quarantine = DmarcQuarantine::Reject;
        case(
            &c,
            &results(Fail, Fail, Some(P::Quarantine)),
            "reject",
            Some("550 5.7.1"),
        );
        case(
            &c,
            &results(Fail, Fail, Some(P::Reject)),
            "reject",
            Some("550 5.7.1"),
        );
        let mut c = config();
        c.spf_fail = SpfFail::Reject;
        case(
            &c,
            &results(Fail, None, Option::None),
            "reject",
            Some("550 5.7.23"),
        );
        case(
            &c,
            &results(TempError, None, Option::None),
            "tempfail",
            Some("451 4.7.24"),
        );
        case(
            &c,
            &results(SoftFail, None, Option::None),
            "accept",
            Option::None,
        );
        // A definite DMARC rejection wins over an SPF temperror.
        case(
            &c,
            &results(TempError, Fail, Some(P::Reject)),
            "reject",
            Some("550 5.7.1"),
        );
    }

    #[test]
    fn timeout_is_451() {
        let mut r = results(TempError, TempError, Option::None);
        r.timed_out = true;
        let mut c = config();
        c.timeout = Duration::from_millis(1);
        case(&c, &r, "tempfail", Some("451 4.7.0"));
    }

    #[test]
    fn exceptions_match_only_authenticated_identities() {
        let exceptions = vec![
            VerifyException::Domain(Domain::parse("forwarder.example").unwrap()),
            VerifyException::Network("192.0.2.0/24".parse().unwrap()),
        ];
        let mut r = results(Fail, Fail, Some(P::Reject));
        r.spf.domain = "forwarder.example".into();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        // SPF failed: the MAIL FROM domain is not authenticated.
        assert_eq!(
            matching_exception(&exceptions, &Identities::from_results(ip, &r)),
            Option::None
        );
        // SPF passed for a subdomain of the entry.
        r.spf.result = Pass;
        r.spf.domain = "bounces.forwarder.example".into();
        assert_eq!(
            matching_exception(&exceptions, &Identities::from_results(ip, &r)).as_deref(),
            Some("forwarder.example")
        );
        // A look-alike is not within.
        r.spf.domain = "evilforwarder.example".into();
        assert_eq!(
            matching_exception(&exceptions, &Identities::from_results(ip, &r)),
            Option::None
        );
        // DKIM pass and ARC pass count too.
        r.spf.result = Fail;
        r.dkim.push(DkimVerdict {
            result: Pass,
            domain: "Forwarder.Example".into(),
            selector: "s".into(),
            algorithm: Option::None,
            reason: Option::None,
        });
        assert!(matching_exception(&exceptions, &Identities::from_results(ip, &r)).is_some());
        r.dkim.clear();
        r.arc = ArcVerdict {
            result: Pass,
            sealer: Some("forwarder.example".into()),
            reason: Option::None,
        };
        assert!(matching_exception(&exceptions, &Identities::from_results(ip, &r)).is_some());
        r.arc.result = Fail;
        assert!(matching_exception(&exceptions, &Identities::from_results(ip, &r)).is_none());
        // Networks match the client address, IPv4-mapped too.
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(
            matching_exception(&exceptions, &Identities::from_results(mapped, &r)).as_deref(),
            Some("192.0.2.0/24")
        );
    }
}
