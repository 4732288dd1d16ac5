//! `portcullis policy own`: what we publish for our own domains, checked
//! from the outside in, as a remote sender sees it (RFC 8461, RFC 8460).
//!
//! For one domain, through the injected resolver, policy fetcher, STARTTLS
//! probe and clock (the server hands it its `[dns]` resolver and trust
//! anchors, so nothing here guesses what a sender would see):
//!
//! - `mta-sts record` ([`record`]): `_mta-sts.<d>` TXT exists, parses and
//!   carries the id of the policy we serve;
//! - `policy served` ([`served`]): the policy fetched over HTTPS from
//!   `mta-sts.<d>` equals ours;
//! - `mx covered` ([`coverage`]): every MX host matches our `mx` patterns;
//! - `mx certificate` ([`certificate`], one per host, through
//!   [`starttls`]): a real STARTTLS handshake shows a certificate valid for
//!   the host's name that does not expire within [`EXPIRY_WARNING`];
//! - `tls-rpt record` ([`tlsrpt`]): `_smtp._tls.<d>` TXT exists, is valid,
//!   and lists `[publish] tlsrpt_rua`.
//!
//! Each check is a pure judgement of what was gathered (unit-tested row by
//! row); a gap comes with the exact zone-file line to publish where DNS is
//! the fix. A temporary DNS failure is its own outcome, never "missing".
//!
//! Every remote party here is one of ours, but the answers still come from
//! the network: the MX hosts probed are capped ([`MAX_MX_HOSTS`]), each
//! probe and fetch runs under a timeout, and nothing read is trusted to be
//! printable (the CLI escapes it).

pub mod certificate;
pub mod coverage;
pub mod record;
pub mod served;
pub mod starttls;
pub mod tlsrpt;

use crate::policy::{OwnPolicy, own_policy};
use portcullis_config::Publish;
use portcullis_delivery::Connector;
use portcullis_dns::{DnsError, Mx, Resolver};
use portcullis_policy::{PolicyFetcher, record::lookup_record};
use portcullis_types::{Clock, Domain};
use serde::Serialize;
use starttls::StartTlsProbe;
use std::sync::Arc;
use std::time::Duration;

/// A certificate expiring within this is a gap: renewal must happen now.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// At most this many MX hosts of a domain are probed (and named); a domain
/// with more is reported with the first ones in preference order.
pub const MAX_MX_HOSTS: usize = 16;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// What we publish is right.
    Ok,
    /// Something is missing or wrong; the detail says what and how to fix it.
    Gap,
    /// It could not be told now (a temporary DNS failure): not "missing".
    Temporary,
}

impl Outcome {
    /// The word in the human table: `ok`, `GAP` or `TEMPFAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Gap => "GAP",
            Outcome::Temporary => "TEMPFAIL",
        }
    }
}

/// One check of one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `mta-sts record`, `policy served`, `mx covered`, `mx certificate` or
    /// `tls-rpt record`.
    pub name: String,
    /// The MX host, for `mx certificate`.
    pub host: Option<String>,
    /// Ok, gap, or not known now.
    pub outcome: Outcome,
    /// What was found; for a gap, what is wrong and how to fix it.
    pub detail: String,
    /// For `policy served`: the line diff served → ours (`-` served, `+`
    /// ours).
    pub diff: Option<String>,
}

impl Check {
    fn new(name: &str, outcome: Outcome, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            host: None,
            outcome,
            detail: detail.into(),
            diff: None,
        }
    }

    /// A check that passed.
    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Outcome::Ok, detail)
    }

    /// A gap.
    pub fn gap(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Outcome::Gap, detail)
    }

    /// Not known now.
    pub fn temporary(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, Outcome::Temporary, detail)
    }

    /// True when the check passed.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// A judgement: the check, and the zone-file line that fixes its gap when
/// DNS is the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The check.
    pub check: Check,
    /// The record to publish, if publishing one fixes the gap.
    pub publish: Option<String>,
}

impl From<Check> for Judged {
    fn from(check: Check) -> Judged {
        Judged {
            check,
            publish: None,
        }
    }
}

/// Everything checked for one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainReport {
    /// The domain.
    pub domain: String,
    /// The checks, in the order above.
    pub checks: Vec<Check>,
    /// Zone-file lines to publish (empty when DNS is right).
    pub records_to_publish: Vec<String>,
    /// What `https://mta-sts.<d>/.well-known/mta-sts.txt` must serve, when
    /// it does not serve it now (or when it cannot be told).
    pub policy_file: Option<String>,
}

impl DomainReport {
    /// True when every check passed.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(Check::is_ok)
    }
}

/// What [`OwnChecker`] needs besides the network: our `[publish]`.
#[derive(Debug, Clone)]
pub struct OwnSettings {
    /// `[publish]` in force.
    pub publish: Publish,
    /// Our hostname (where `mta-sts.<d>` should point when it does not
    /// resolve: the listener serving the policy runs here).
    pub hostname: String,
}

/// Checks our domains from the outside in. Cheap to clone.
pub struct OwnChecker<R, C> {
    resolver: R,
    fetcher: PolicyFetcher,
    probe: StartTlsProbe<R, C>,
    clock: Arc<dyn Clock>,
    settings: Arc<OwnSettings>,
}

impl<R: Clone, C: Clone> Clone for OwnChecker<R, C> {
    fn clone(&self) -> Self {
        OwnChecker {
            resolver: self.resolver.clone(),
            fetcher: self.fetcher.clone(),
            probe: self.probe.clone(),
            clock: self.clock.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<R, C> OwnChecker<R, C>
where
    R: Resolver + Clone,
    C: Connector + Clone,
{
    /// A checker looking names up through `resolver`, fetching policies
    /// with `fetcher` (the one a remote sender's fetch is: our resolver,
    /// trust anchors and `[mta_sts] https_port`), probing MX hosts with
    /// `probe`, judging expiry at `clock`'s time.
    pub fn new(
        resolver: R,
        fetcher: PolicyFetcher,
        probe: StartTlsProbe<R, C>,
        clock: Arc<dyn Clock>,
        settings: OwnSettings,
    ) -> OwnChecker<R, C> {
        OwnChecker {
            resolver,
            fetcher,
            probe,
            clock,
            settings: Arc::new(settings),
        }
    }

    /// Checks `domain`: the fetch, the probes and the TXT lookups run at
    /// once; each is bounded by its own timeout.
    pub async fn check(&self, domain: &Domain) -> DomainReport {
        let mx = self.resolver.mx(domain.as_str()).await;
        let hosts = mx_hosts(&mx);
        let ours = self.ours(domain, &mx, &hosts);

        let record = async {
            let lookup = lookup_record(&self.resolver, domain).await;
            match &ours {
                Ok(p) => record::judge(domain, &lookup, p),
                Err(c) => c.renamed(record::NAME).into(),
            }
        };
        let served = async {
            match &ours {
                Ok(p) => {
                    let fetched = self.fetcher.fetch(domain).await;
                    served::judge(domain, &fetched, p, &self.settings.hostname)
                }
                Err(c) => c.renamed(served::NAME).into(),
            }
        };
        let tlsrpt = async {
            let lookup =
                portcullis_tlsrpt::lookup_destinations(&self.resolver, domain.as_str()).await;
            tlsrpt::judge(domain, &lookup, &self.settings.publish.tlsrpt_rua)
        };
        let certificates = self.certificates(&hosts);
        let (record, served, tlsrpt, certificates) =
            tokio::join!(record, served, tlsrpt, certificates);

        let coverage: Judged = match &ours {
            Ok(p) => coverage::judge(domain, &mx, p).into(),
            Err(c) => c.renamed(coverage::NAME).into(),
        };
        let mut judged = vec![record, served, coverage];
        judged.extend(certificates.into_iter().map(Judged::from));
        judged.push(tlsrpt);

        let policy_file = match (&ours, judged[1].check.outcome) {
            (Ok(p), Outcome::Gap | Outcome::Temporary) => Some(p.text.clone()),
            _ => None,
        };
        let mut records_to_publish: Vec<String> = Vec::new();
        for line in judged.iter().filter_map(|j| j.publish.clone()) {
            if !records_to_publish.contains(&line) {
                records_to_publish.push(line);
            }
        }
        DomainReport {
            domain: domain.to_string(),
            checks: judged.into_iter().map(|j| j.check).collect(),
            records_to_publish,
            policy_file,
        }
    }

    /// The policy we serve for `domain`: from `[publish] mx`, or from the
    /// MX names in DNS when it is absent (then a failed lookup leaves it
    /// unknown). The error is the check every policy check then shows.
    fn ours(
        &self,
        domain: &Domain,
        mx: &Result<Vec<Mx>, DnsError>,
        hosts: &[String],
    ) -> Result<OwnPolicy, Check> {
        let publish = &self.settings.publish;
        if publish.mx.is_none()
            && let Err(e) = mx
            && e.is_temporary()
        {
            return Err(Check::temporary(
                "",
                format!(
                    "the policy we serve lists the MX hosts of {domain} ([publish] mx is absent), and their lookup failed: {e}"
                ),
            ));
        }
        own_policy(publish, domain.as_str(), hosts).map_err(|e| {
            Check::gap(
                "",
                format!(
                    "we serve no policy for {domain}: {e}; set [publish] mx or publish MX records"
                ),
            )
        })
    }

    /// One `mx certificate` check per MX host (at most [`MAX_MX_HOSTS`]),
    /// probed at once.
    async fn certificates(&self, hosts: &[String]) -> Vec<Check> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, host) in hosts.iter().enumerate() {
            let probe = self.probe.clone();
            let host = host.clone();
            tasks.spawn(async move { (i, host.clone(), probe.probe(&host).await) });
        }
        let mut done: Vec<(usize, Check)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, host, probed)) => {
                    done.push((i, certificate::judge(&host, &probed, self.clock.now())));
                }
                // A probe task that panicked or was cancelled: say so rather
                // than drop the host silently.
                Err(e) => done.push((
                    usize::MAX,
                    Check::temporary(certificate::NAME, format!("a probe did not finish: {e}")),
                )),
            }
        }
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, c)| c).collect()
    }
}

impl Check {
    /// The same outcome and detail under another check's name.
    fn renamed(&self, name: &str) -> Check {
        Check {
            name: name.to_owned(),
            ..self.clone()
        }
    }
}

/// The MX host names of a lookup, lower-case, without the null MX,
/// duplicates dropped, in preference order, at most [`MAX_MX_HOSTS`].
fn mx_hosts(mx: &Result<Vec<Mx>, DnsError>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for m in mx.iter().flatten().filter(|m| !m.is_null()) {
        let name = m.exchange.trim_end_matches('.').to_ascii_lowercase();
        if !hosts.contains(&name) && hosts.len() < MAX_MX_HOSTS {
            hosts.push(name);
        }
    }
    hosts
}

#[cfg(test)]
mod tests;
