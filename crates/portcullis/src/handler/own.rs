//! `policy own`: what we publish for our own domains, checked from the
//! outside in by the publish crate's [`OwnChecker`] with the server's own
//! resolver, trust anchors (`[tls] extra_roots`), `[mta_sts] https_port`
//! and `[delivery] port`: what a remote sender would see. This module only
//! picks the domains, builds the checker from the config in force and
//! carries its reports into the admin answer.

use super::refused::{Refused, parse_domain};
use crate::state::OwnAccess;
use portcullis_admin::{OwnCheck, OwnDomain, PolicyOwn, Response};
use portcullis_config::Config;
use portcullis_delivery::TcpConnector;
use portcullis_dns::HickoryResolver;
use portcullis_policy::PolicyFetcher;
use portcullis_publish::check::starttls::{ClockTime, StartTlsProbe};
use portcullis_publish::check::{DomainReport, OwnChecker, OwnSettings};
use portcullis_tls::ClientTls;
use portcullis_types::Domain;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Each fetch and each MX probe ends after this: the domains and hosts
/// are checked at once, so the answer comes well within the CLI's 30 s.
const STEP_LIMIT: Duration = Duration::from_secs(15);

/// At most this many domains are checked at the same time: each opens a
/// connection to every MX host and to its policy host.
const DOMAINS_AT_ONCE: usize = 8;

impl OwnAccess {
    /// Checks `domain` (one of `relay.accepted_domains`), or every
    /// accepted domain.
    pub(super) async fn check(
        &self,
        config: &Config,
        domain: Option<&str>,
    ) -> Result<PolicyOwn, Refused> {
        let accepted = &config.relay.accepted_domains;
        let domains: Vec<Domain> = match domain {
            Some(d) => {
                let d = parse_domain(d)?;
                if !accepted.contains(&d) {
                    return Err(Response::error(format!(
                        "{d} is not one of our domains (relay.accepted_domains: {})",
                        names(accepted)
                    )));
                }
                vec![d]
            }
            None => accepted.clone(),
        };
        if domains.is_empty() {
            return Err(Response::error(
                "no domain to check: relay.accepted_domains is empty",
            ));
        }
        let checker = self.checker(config)?;
        let permits = Arc::new(tokio::sync::Semaphore::new(DOMAINS_AT_ONCE));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, d) in domains.iter().enumerate() {
            let checker = checker.clone();
            let d = d.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                // The semaphore is never closed; without a permit the check
                // still runs rather than being lost.
                let _permit = permits.acquire_owned().await.ok();
                (i, checker.check(&d).await)
            });
        }
        let mut reports: Vec<(usize, DomainReport)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, report) =
                joined.map_err(|e| Response::error(format!("policy own did not finish: {e}")))?;
            reports.push((i, report));
        }
        reports.sort_by_key(|(i, _)| *i);
        let domains: Vec<OwnDomain> = reports
            .into_iter()
            .map(|(_, r)| {
                let gaps: Vec<&str> = r
                    .checks
                    .iter()
                    .filter(|c| !c.is_ok())
                    .map(|c| c.name.as_str())
                    .collect();
                info!(domain = %r.domain, gaps = gaps.len(), failed = %gaps.join(", "), "policy own checked");
                own_domain(r)
            })
            .collect();
        Ok(PolicyOwn { domains })
    }

    /// The checker as a remote sender would look: our resolver, the trust
    /// anchors and ports in force, the server's clock for certificates.
    fn checker(
        &self,
        config: &Config,
    ) -> Result<OwnChecker<HickoryResolver, TcpConnector>, Refused> {
        let tls = ClientTls::new(&config.tls.extra_roots)
            .map_err(|e| Response::error(format!("[tls] extra_roots: {e}")))?
            .with_time_provider(Arc::new(ClockTime(self.clock.clone())));
        let fetcher = PolicyFetcher::builder(self.resolver.clone())
            .tls(tls.clone())
            .port(config.mta_sts.https_port)
            .timeout(config.mta_sts.fetch_timeout.min(STEP_LIMIT))
            .build()
            .map_err(|e| Response::error(format!("policy fetcher: {e}")))?;
        let probe = StartTlsProbe::new(
            self.resolver.clone(),
            TcpConnector {
                timeout: config.delivery.connect_timeout.min(STEP_LIMIT),
            },
            tls,
            config.delivery.port,
            &config.hostname,
            STEP_LIMIT,
        );
        Ok(OwnChecker::new(
            self.resolver.clone(),
            fetcher,
            probe,
            self.clock.clone(),
            OwnSettings {
                publish: config.publish.clone(),
                hostname: config.hostname.clone(),
            },
        ))
    }
}

fn names(domains: &[Domain]) -> String {
    match domains.is_empty() {
        true => "none".into(),
        false => domains
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The publish crate's report as the admin answer (the same fields).
fn own_domain(r: DomainReport) -> OwnDomain {
    OwnDomain {
        domain: r.domain,
        checks: r
            .checks
            .into_iter()
            .map(|c| OwnCheck {
                ok: c.is_ok(),
                outcome: match c.outcome {
                    portcullis_publish::check::Outcome::Ok => "ok",
                    portcullis_publish::check::Outcome::Gap => "gap",
                    portcullis_publish::check::Outcome::Temporary => "temporary",
                }
                .into(),
                name: c.name,
                host: c.host,
                detail: c.detail,
                diff: c.diff,
            })
            .collect(),
        records_to_publish: r.records_to_publish,
        policy_file: r.policy_file,
    }
}
