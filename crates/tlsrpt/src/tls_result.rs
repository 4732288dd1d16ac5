//! The hand-over of every outbound TLS outcome to TLS-RPT (RFC 8460 §4):
//! delivery produces one [`TlsSessionResult`] per session attempt, with the
//! policy that applied, and gives it to a [`TlsResultSink`]. The trait lives
//! here, in the crate that records the results, so delivery depends on
//! TLS-RPT and not the other way round. [`LogTlsResults`] logs results and
//! counts what a downgrade alert needs.

use portcullis_tls::{ReportPolicy, ReportPolicyType, TlsResultType};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// One outbound session's TLS outcome, as TLS-RPT needs it.
#[derive(Debug, Clone)]
pub struct TlsSessionResult {
    /// The policy that applied (type `sts` or `no-policy-found`), its
    /// domain, text and MX patterns.
    pub policy: ReportPolicy,
    /// Our address on the connection (`sending-mta-ip`), when known.
    pub sending_ip: Option<IpAddr>,
    /// The MX host name we connected to.
    pub mx_host: String,
    /// Its address.
    pub receiving_ip: IpAddr,
    /// The name it gave in its greeting or EHLO, when known.
    pub receiving_helo: Option<String>,
    /// `None` for a successful TLS session, else the RFC 8460 result type.
    pub failure: Option<TlsResultType>,
    /// A short human explanation (additional-information).
    pub detail: String,
    /// The failure's code (`failure-reason-code`), when one is known: the
    /// TLS library's error name, never text from the peer.
    pub reason_code: Option<String>,
    /// True when the session carried one of our own TLS reports (its
    /// envelope's recorded origin, never its content): such sessions are
    /// never counted in reports (RFC 8460 §3: no report loops).
    pub is_report: bool,
}

/// Receives every outbound TLS outcome.
pub trait TlsResultSink: Send + Sync + 'static {
    /// Records one result.
    fn record(&self, result: TlsSessionResult);
}

/// Logs results and counts them by (policy domain, outcome), and counts
/// downgrades: sessions that failed TLS where a policy said TLS was expected.
#[derive(Debug, Default)]
pub struct LogTlsResults {
    counts: Mutex<BTreeMap<(String, String), u64>>,
    downgrades: Mutex<BTreeMap<Downgrade, u64>>,
}

impl LogTlsResults {
    /// (policy domain, result) → sessions.
    pub fn counts(&self) -> Vec<(String, String, u64)> {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((d, r), n)| (d.clone(), r.clone(), *n))
            .collect()
    }

    /// Sessions that failed TLS although a policy expected it, by policy
    /// domain, policy type and mode.
    pub fn downgrades(&self) -> Vec<(Downgrade, u64)> {
        let m = self.downgrades.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(d, n)| (d.clone(), *n)).collect()
    }
}

/// The labels of one downgrade counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Downgrade {
    /// The policy domain.
    pub domain: String,
    /// `sts` or `tlsa` (DANE).
    pub policy: &'static str,
    /// `enforce` (DANE, MTA-STS enforce), `testing`, or `unknown`.
    pub mode: &'static str,
}

impl TlsSessionResult {
    /// True when the policy type is `sts` or `tlsa` (a policy expected
    /// TLS).
    pub fn under_policy(&self) -> bool {
        matches!(
            self.policy.policy_type,
            ReportPolicyType::Sts | ReportPolicyType::Tlsa
        )
    }
}

impl TlsResultSink for LogTlsResults {
    fn record(&self, r: TlsSessionResult) {
        let outcome = r
            .failure
            .map(|f| f.as_str().to_string())
            .unwrap_or_else(|| "success".into());
        let domain = r.policy.policy_domain.to_string();
        if let Some(f) = r.failure {
            if r.under_policy() {
                let policy = r.policy.policy_type.as_str();
                let mode = r.policy.mode();
                tracing::warn!(policy_domain = %domain, mx = %r.mx_host, ip = %r.receiving_ip, policy, mode, result = f.as_str(), detail = %r.detail, "TLS failed where a policy expects it");
                let key = Downgrade {
                    domain: domain.clone(),
                    policy,
                    mode,
                };
                let mut d = self.downgrades.lock().unwrap_or_else(|p| p.into_inner());
                // Bounded like the counts: a flood of domains cannot grow it.
                if d.len() < 10_000 || d.contains_key(&key) {
                    *d.entry(key).or_insert(0) += 1;
                }
            } else {
                tracing::info!(policy_domain = %domain, mx = %r.mx_host, result = f.as_str(), detail = %r.detail, "tls result");
            }
        }
        if r.is_report {
            return;
        }
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (domain, outcome);
        if m.len() < 10_000 || m.contains_key(&key) {
            *m.entry(key).or_insert(0) += 1;
        }
    }
}
