//! Executing a [`DeliveryPlan`] for one domain: for each candidate host
//! and each of its addresses, connect → one SMTP session with the TLS the
//! plan demands → per-recipient results; every TLS outcome goes to the
//! TLS-RPT sink. A TLS failure is retried in clear only where the plan
//! allows it (opportunistic TLS), never for a host that must show PKIX TLS
//! (MTA-STS `enforce`) or TLS its TLSA records authenticate (DANE). A DANE
//! host's sessions are reported under its `tlsa` policy (RFC 8460 §4.4).

use crate::client::{RcptSpec, SessionReport, TlsDecision, Transaction, deliver_session};
use crate::connect::Connector;
use crate::plan::{DeliveryPlan, PlannedHost, PolicyMatch, Rule, TlsRequirement};
use crate::results::{Step, all, interpret, tls_failure};
use crate::settings::DelivererSettings;
use portcullis_policy::PolicyLookup;
use portcullis_queue::{DeliveryJob, RecipientOutcome, RecipientResult};
use portcullis_tls::{ClientTls, DaneAuthority, ReportPolicy, TlsResultType};
use portcullis_tlsrpt::{TlsResultSink, TlsSessionResult};
use portcullis_types::Domain;
use std::net::{IpAddr, SocketAddr};
use tracing::{debug, warn};

/// One domain's part of a delivery job, and what executing it needs.
pub(crate) struct Execution<'a, R, C> {
    /// The deliverer's settings (connector, TLS, timeouts, metrics).
    pub settings: &'a DelivererSettings<R, C>,
    /// Where TLS outcomes go (TLS-RPT).
    pub reporter: &'a dyn TlsResultSink,
    /// The message.
    pub job: &'a DeliveryJob,
    /// The recipient domain.
    pub domain: &'a Domain,
    /// The recipients (indexes into the envelope) of this domain.
    pub idxs: &'a [usize],
    /// The MTA-STS lookup, when one was made: then every session is
    /// reported.
    pub lookup: Option<&'a PolicyLookup>,
}

/// The TLS decision of one connection to a host that must show `tls`
/// (`in_clear`: the retry in clear after an opportunistic TLS failure).
/// Shared by delivery and the recipient probe, so a route is spoken to
/// the same way by both.
pub(crate) fn tls_decision(
    client: &ClientTls,
    tls: &TlsRequirement,
    in_clear: bool,
) -> Result<TlsDecision, String> {
    Ok(match (tls, in_clear) {
        (TlsRequirement::PkixFor(_), _) => match client.pkix_config() {
            Ok(config) => TlsDecision::Required { config },
            Err(e) => return Err(format!("PKIX: trust anchors unusable: {e}")),
        },
        // RFC 7672 §2.2: never in clear, never without the records.
        (TlsRequirement::Dane { authority }, _) => match client.dane_config(authority) {
            Ok(config) => TlsDecision::Required { config },
            Err(e) => return Err(format!("DANE: no usable configuration: {e}")),
        },
        (_, true) => TlsDecision::Disabled,
        (_, false) => {
            let (config, record) = client.opportunistic_config();
            TlsDecision::Opportunistic { config, record }
        }
    })
}

/// The name a host is greeted and verified by (SNI and reference
/// identifier): a route's `tls_name` under `tls = "verify"` (PKIX for a
/// name that may differ from the next hop's), else the host's own name.
pub(crate) fn server_name<'h>(host: &'h PlannedHost, tls: &'h TlsRequirement) -> &'h str {
    match tls {
        TlsRequirement::PkixFor(name) => name,
        _ => &host.name,
    }
}

/// One session (or a host that was never contacted) as TLS-RPT sees it.
pub(crate) struct Observed<'b> {
    /// The MX host name.
    pub mx_host: &'b str,
    /// The address contacted; nothing is recorded without one.
    pub ip: Option<IpAddr>,
    /// Our side of the connection.
    pub sending_ip: Option<IpAddr>,
    /// The name the peer greeted with.
    pub helo: Option<String>,
    /// The TLS failure, if any.
    pub failure: Option<TlsResultType>,
    /// What happened, for the report's details.
    pub detail: &'b str,
    /// The failure's code (`failure-reason-code`), when known.
    pub code: Option<&'b str>,
    /// The TLSA records that governed the host (DANE), if any: the session
    /// is reported under a `tlsa` policy, MTA-STS lookup or not.
    pub dane: Option<&'b DaneAuthority>,
}

impl<'b> Observed<'b> {
    /// Nothing seen yet of `mx_host` at `ip` but `failure` (a host never
    /// contacted): no session, no DANE.
    pub fn host(
        mx_host: &'b str,
        ip: Option<IpAddr>,
        failure: TlsResultType,
        detail: &'b str,
    ) -> Self {
        Observed {
            mx_host,
            ip,
            sending_ip: None,
            helo: None,
            failure: Some(failure),
            detail,
            code: None,
            dane: None,
        }
    }
}

impl<R, C: Connector> Execution<'_, R, C> {
    /// Tries the plan's candidates in order until one session settles the
    /// recipients; defers them with the last error otherwise.
    pub(crate) async fn run(&self, plan: &DeliveryPlan) -> Vec<RecipientResult> {
        let mut last_error = format!("no mail host of {} could be reached", self.domain);
        for (host, tls) in plan.candidates() {
            if let Some(e) = &host.error {
                last_error = e.clone();
            }
            if !crate::requiretls::hop_allowed(&self.job.envelope, tls) {
                continue;
            }
            for addr in &host.addrs {
                match self.try_address(host, tls, *addr).await {
                    Ok(results) => return results,
                    Err(e) => last_error = e,
                }
            }
        }
        all(self.idxs, |_| RecipientOutcome::Deferred {
            remote_mta: None,
            reason: last_error.clone(),
        })
    }

    /// One address of one host: a session with the TLS required, and under
    /// opportunistic TLS one more in clear after a TLS failure. `Err` says
    /// why the next address should be tried.
    async fn try_address(
        &self,
        host: &PlannedHost,
        tls: &TlsRequirement,
        addr: IpAddr,
    ) -> Result<Vec<RecipientResult>, String> {
        let s = self.settings;
        let target = SocketAddr::new(addr, host.port);
        let mx = format!("{}[{}]", host.name, addr);
        let mut in_clear = false;
        loop {
            let decision = self.decision(tls, in_clear)?;
            let stream = match s.connector.connect(target).await {
                Ok(s) => s,
                Err(e) => {
                    s.metrics.attempt(&host.name, "connect_failed");
                    debug!(%mx, error = %e, "connect failed");
                    return Err(format!("{mx}: connect: {e}"));
                }
            };
            let local_ip = stream.local_addr().ok().map(|a| a.ip());
            let report = self.session(stream, server_name(host, tls), decision).await;
            if !in_clear {
                self.report_session(host, tls, (addr, local_ip), &report);
            }
            match interpret(&mx, report, self.idxs) {
                Step::Done(results) => {
                    s.metrics.attempt(&host.name, "session");
                    return Ok(results);
                }
                Step::NextHost(e) => {
                    s.metrics.attempt(&host.name, "next_host");
                    return Err(e);
                }
                Step::RetryWithoutTls(e) => {
                    s.metrics.attempt(&host.name, "tls_failed");
                    if let TlsRequirement::Dane { .. } = tls {
                        // RFC 7672 §2.2: never a plaintext or unauthenticated retry.
                        s.metrics.policy_deferral("dane_tls");
                        warn!(%mx, error = %e, "DANE: TLS failed; trying the next MX, never in clear");
                        return Err(format!("DANE: {e}"));
                    }
                    if tls.is_required() && host.rule == Rule::Route {
                        // The operator asked for a verified hop: never in clear.
                        s.metrics.policy_deferral("route_tls");
                        warn!(%mx, error = %e, "route tls = verify: TLS failed; deferred, never in clear");
                        return Err(format!("route tls = verify: {e}"));
                    }
                    if tls.is_required() {
                        // RFC 8461 §5: never a plaintext or unverified retry.
                        s.metrics.policy_deferral("tls");
                        warn!(%mx, error = %e, "MTA-STS enforce: TLS failed; trying the next MX, never in clear");
                        return Err(format!("MTA-STS: {e}"));
                    }
                    if in_clear {
                        return Err(e);
                    }
                    warn!(%mx, error = %e, "STARTTLS failed; no policy requires TLS, retrying without it");
                    in_clear = true;
                }
            }
        }
    }

    /// The TLS decision of one connection. A fresh opportunistic
    /// configuration per connection: its record says whether this peer's
    /// certificate verified.
    fn decision(&self, tls: &TlsRequirement, in_clear: bool) -> Result<TlsDecision, String> {
        tls_decision(&self.settings.tls, tls, in_clear)
    }

    /// One SMTP session carrying the domain's recipients.
    async fn session(
        &self,
        stream: tokio::net::TcpStream,
        server_name: &str,
        decision: TlsDecision,
    ) -> SessionReport {
        let env = &self.job.envelope;
        let mail_from = env.sender.to_string();
        let rcpt_text: Vec<String> = self
            .idxs
            .iter()
            .map(|&i| env.recipients[i].address.to_string())
            .collect();
        let recipients = self
            .idxs
            .iter()
            .zip(&rcpt_text)
            .map(|(&i, text)| RcptSpec {
                address: text.as_str(),
                notify: env.recipients[i].notify,
                orcpt: env.recipients[i].orcpt.as_deref(),
            })
            .collect();
        let tx = Transaction {
            mail_from: &mail_from,
            recipients,
            message: self.job.message.clone(),
            body: env.body,
            smtputf8: env.smtputf8,
            ret: env.ret,
            envid: env.envid.as_deref(),
            require_tls: env.require_tls,
        };
        let s = self.settings;
        deliver_session(stream, server_name, &s.hostname, decision, &tx, &s.timeouts).await
    }

    /// Hands one session's TLS outcome to TLS-RPT. A host a `testing`
    /// policy does not list is a failure even when TLS was fine (RFC 8460
    /// §4.3.1: the policy did not validate the MX); a DANE host's
    /// certificate failure is `tlsa-invalid` (no record matched, §4.3.2).
    fn report_session(
        &self,
        host: &PlannedHost,
        tls: &TlsRequirement,
        (addr, local_ip): (IpAddr, Option<IpAddr>),
        report: &SessionReport,
    ) {
        let mut detail = match &report.result {
            Err(e) => e.to_string(),
            Ok(_) => format!("{:?}", report.tls),
        };
        let mut failure = tls_failure(&report.tls);
        let dane = match tls {
            TlsRequirement::Dane { authority } => Some(authority),
            _ => None,
        };
        if dane.is_some() && failure.is_some_and(is_certificate_failure) {
            failure = Some(TlsResultType::TlsaInvalid);
        }
        let unlisted = host.policy == PolicyMatch::NotListed && host.rule != Rule::Dane;
        if unlisted && failure.is_none() {
            failure = Some(TlsResultType::ValidationFailure);
            detail = format!("MX host {} is not listed in the MTA-STS policy", host.name);
        }
        self.report(Observed {
            mx_host: &host.name,
            ip: Some(addr),
            sending_ip: local_ip,
            helo: report.peer_name.clone(),
            failure,
            detail: &detail,
            code: failure.and(report.tls.reason_code()),
            dane,
        });
    }

    /// Hands one TLS outcome to the TLS-RPT recorder; nothing without a
    /// policy (a DANE host's TLSA records, or an MTA-STS lookup) or an
    /// address.
    pub(crate) fn report(&self, seen: Observed<'_>) {
        let policy = match (seen.dane, self.lookup) {
            (Some(authority), _) => ReportPolicy::tlsa(self.domain, &authority.records),
            (None, Some(lookup)) => lookup.report(self.domain),
            (None, None) => return,
        };
        // A failed policy fetch is a result of its own (RFC 8460 §4.3.2).
        let failure = policy.failure.or(seen.failure);
        let Some(receiving_ip) = seen.ip else { return };
        self.reporter.record(TlsSessionResult {
            policy,
            sending_ip: seen.sending_ip,
            mx_host: seen.mx_host.to_string(),
            receiving_ip,
            receiving_helo: seen.helo,
            failure,
            detail: seen.detail.chars().take(200).collect(),
            reason_code: seen.code.map(str::to_owned),
            is_report: self.job.envelope.origin.is_tls_report(),
        });
    }
}

/// True for the result types that say the certificate did not verify
/// (under DANE: no TLSA record matched it).
fn is_certificate_failure(t: TlsResultType) -> bool {
    matches!(
        t,
        TlsResultType::CertificateHostMismatch
            | TlsResultType::CertificateExpired
            | TlsResultType::CertificateNotTrusted
            | TlsResultType::ValidationFailure
    )
}
