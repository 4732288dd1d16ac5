//! Recording TLS session results for TLS-RPT (RFC 8460 §4): one sled
//! record per (UTC day, policy domain, policy), updated in place for every
//! outbound session, so that a restart loses no counts and memory does not
//! grow with traffic.
//!
//! Key: `YYYY-MM-DD \0 policy-domain \0 policy-hash` (16 hex digits of a
//! stable FNV-1a hash over the policy type, text and MX patterns). Value:
//! a JSON [`DayAggregate`]. Writes go to sled's log at once (sled flushes it
//! to disk within a second); counting is not an acknowledgement point, so
//! no fsync per session.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_store::{Store, StoreError, Tree, TreeName};
use portcullis_types::Clock;
use serde::{Deserialize, Serialize};

use crate::{Day, TlsRptError};
use crate::{TlsResultSink, TlsSessionResult};
use portcullis_tls::ReportPolicy;

/// The most distinct failure rows one aggregate keeps; further distinct
/// rows are folded into one [`OTHER_FAILURES`] row per result type, so an
/// aggregate stays small whatever a hostile MX sends us.
pub const MAX_FAILURE_KEYS: usize = 100;

/// The `additional-information` of the row that folds failures beyond
/// [`MAX_FAILURE_KEYS`].
pub const OTHER_FAILURES: &str = "other failures: further distinct details were folded";

/// Longest host name or HELO name kept (RFC 1035 §2.3.4: 255 octets).
const MAX_NAME: usize = 255;
/// Longest additional-information string kept.
const MAX_INFO: usize = 200;
/// Most policy lines and MX patterns kept (a valid policy is ≤ 64 KiB).
const MAX_LINES: usize = 200;
/// Longest policy line kept.
const MAX_LINE: usize = 1000;

/// The RFC 8460 §4.4 `policy` object of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AggregatePolicy {
    /// `policy-type`: `sts` or `no-policy-found`.
    pub policy_type: String,
    /// `policy-domain` (A-labels, lowercase).
    pub policy_domain: String,
    /// `policy-string`: the policy's lines (empty without a policy).
    #[serde(default)]
    pub policy_string: Vec<String>,
    /// `mx-host`: the policy's MX patterns (empty without a policy).
    #[serde(default)]
    pub mx_host: Vec<String>,
}

impl AggregatePolicy {
    /// The report facts of `policy`, length-capped.
    pub fn from_report_policy(policy: &ReportPolicy) -> AggregatePolicy {
        let cap_lines = |v: &[String]| -> Vec<String> {
            v.iter()
                .take(MAX_LINES)
                .map(|l| truncate(l, MAX_LINE))
                .collect()
        };
        AggregatePolicy {
            policy_type: policy.policy_type.as_str().to_owned(),
            policy_domain: policy.policy_domain.as_str().to_owned(),
            policy_string: cap_lines(&policy.policy_string),
            mx_host: cap_lines(&policy.mx_host),
        }
    }

    /// A stable hash of the policy (FNV-1a, 64 bits) as 16 hex digits: the
    /// last part of the aggregate's key.
    pub fn hash_hex(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes.iter().chain(std::iter::once(&0xffu8)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        feed(self.policy_type.as_bytes());
        for line in &self.policy_string {
            feed(line.as_bytes());
        }
        feed(b"\0mx");
        for mx in &self.mx_host {
            feed(mx.as_bytes());
        }
        format!("{h:016x}")
    }
}

/// One failure row (RFC 8460 §4.4 `failure-details`), the key under which
/// failed sessions are counted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureKey {
    /// `result-type` (RFC 8460 §4.3).
    pub result_type: String,
    /// `sending-mta-ip`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-mx-helo`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    /// `receiving-ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    /// `additional-information`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    /// `failure-reason-code`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

impl FailureKey {
    /// The row that folds every further distinct failure of `result_type`.
    fn other(result_type: &str) -> FailureKey {
        FailureKey {
            result_type: result_type.to_owned(),
            sending_mta_ip: None,
            receiving_mx_hostname: None,
            receiving_mx_helo: None,
            receiving_ip: None,
            additional_information: Some(OTHER_FAILURES.to_owned()),
            failure_reason_code: None,
        }
    }
}

/// A failure row and its count, as stored (JSON object keys must be
/// strings, so the map is stored as a list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FailureRow {
    #[serde(flatten)]
    key: FailureKey,
    count: u64,
}

/// `BTreeMap<FailureKey, u64>` ⇄ a JSON list of rows.
mod failure_list {
    use super::{FailureKey, FailureRow};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<FailureKey, u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let rows: Vec<FailureRow> = map
            .iter()
            .map(|(key, count)| FailureRow {
                key: key.clone(),
                count: *count,
            })
            .collect();
        rows.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<FailureKey, u64>, D::Error> {
        let rows = Vec::<FailureRow>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for row in rows {
            *map.entry(row.key).or_insert(0) += row.count;
        }
        Ok(map)
    }
}

/// The counts of one (UTC day, policy domain, policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DayAggregate {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The policy the sessions were under.
    pub policy: AggregatePolicy,
    /// Sessions that negotiated TLS as the policy demanded.
    pub successful: u64,
    /// Failed sessions per failure row.
    #[serde(with = "failure_list", default)]
    pub failures: BTreeMap<FailureKey, u64>,
}

impl DayAggregate {
    /// An empty aggregate.
    pub fn new(day: Day, policy: AggregatePolicy) -> DayAggregate {
        DayAggregate {
            day: day.to_string(),
            policy,
            successful: 0,
            failures: BTreeMap::new(),
        }
    }

    /// Failed sessions, all rows together.
    pub fn failed(&self) -> u64 {
        self.failures
            .values()
            .fold(0u64, |a, n| a.saturating_add(*n))
    }

    /// Counts one session.
    pub fn add(&mut self, result: &TlsSessionResult) {
        let Some(failure) = result.failure else {
            self.successful = self.successful.saturating_add(1);
            return;
        };
        let helo = result
            .receiving_helo
            .as_deref()
            .map(|h| truncate(h, MAX_NAME))
            .filter(|h| !h.is_empty());
        let info = Some(truncate(result.detail.trim(), MAX_INFO)).filter(|s| !s.is_empty());
        let key = FailureKey {
            result_type: failure.as_str().to_owned(),
            sending_mta_ip: result.sending_ip,
            receiving_mx_hostname: Some(truncate(&result.mx_host, MAX_NAME))
                .filter(|s| !s.is_empty()),
            receiving_mx_helo: helo,
            receiving_ip: Some(result.receiving_ip),
            additional_information: info,
            failure_reason_code: result
                .reason_code
                .as_deref()
                .map(|c| truncate(c, MAX_NAME))
                .filter(|c| !c.is_empty()),
        };
        self.add_failure(key, 1);
    }

    /// Adds `n` failures under `key`, folding it into the result type's
    /// "other" row when the aggregate already has [`MAX_FAILURE_KEYS`]
    /// distinct rows.
    pub fn add_failure(&mut self, key: FailureKey, n: u64) {
        let key = if self.failures.contains_key(&key) || self.failures.len() < MAX_FAILURE_KEYS {
            key
        } else {
            FailureKey::other(&key.result_type)
        };
        let count = self.failures.entry(key).or_insert(0);
        *count = count.saturating_add(n);
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, and replaces
/// control characters (they have no business in a report).
fn truncate(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The key prefix of every aggregate of `day`.
pub(crate) fn day_prefix(day: Day) -> Vec<u8> {
    let mut k = day.to_string().into_bytes();
    k.push(0);
    k
}

/// The key prefix of every aggregate of (`day`, `domain`).
pub(crate) fn domain_prefix(day: Day, domain: &str) -> Vec<u8> {
    let mut k = day_prefix(day);
    k.extend_from_slice(domain.as_bytes());
    k.push(0);
    k
}

/// Splits an aggregate key into (day, domain).
pub(crate) fn split_key(key: &[u8]) -> Option<(Day, String)> {
    let mut parts = key.split(|b| *b == 0);
    let day = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let domain = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    parts.next()?;
    Some((day, domain))
}

/// Counts every outbound TLS session in sled, per (UTC day, policy domain,
/// policy). Cheap to clone; implements [`TlsResultSink`], the hand-over
/// delivery calls once per session.
#[derive(Clone)]
pub struct TlsRptRecorder {
    tree: Tree,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TlsRptRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRptRecorder")
            .field("aggregates", &self.tree.len())
            .finish_non_exhaustive()
    }
}

impl TlsRptRecorder {
    /// A recorder over `store`'s [`TreeName::TlsRptResults`]; days are cut
    /// at 00:00 UTC by `clock`.
    pub fn new(store: &Store, clock: Arc<dyn Clock>) -> Result<TlsRptRecorder, TlsRptError> {
        Ok(TlsRptRecorder {
            tree: store.tree(TreeName::TlsRptResults)?,
            clock,
        })
    }

    /// Counts one session (errors are logged: counting never fails a
    /// delivery). Sessions that carried a TLS report are not counted
    /// (RFC 8460 §3: no report loops).
    pub fn try_record(&self, result: &TlsSessionResult) -> Result<(), TlsRptError> {
        if result.is_report {
            tracing::debug!(policy_domain = %result.policy.policy_domain, mx = %result.mx_host, "TLS-RPT: session carried a report; not counted");
            return Ok(());
        }
        let day = Day::of(self.clock.now());
        let policy = AggregatePolicy::from_report_policy(&result.policy);
        let mut key = domain_prefix(day, &policy.policy_domain);
        key.extend_from_slice(policy.hash_hex().as_bytes());
        let mut encode_error = None;
        self.tree
            .update_and_fetch(&key, |old| {
                let mut agg = old
                    .and_then(|v| serde_json::from_slice::<DayAggregate>(v).ok())
                    .unwrap_or_else(|| DayAggregate::new(day, policy.clone()));
                agg.add(result);
                match serde_json::to_vec(&agg) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        encode_error = Some(e.to_string());
                        old.map(<[u8]>::to_vec)
                    }
                }
            })
            .map_err(StoreError::from)?;
        match encode_error {
            Some(e) => Err(TlsRptError::corrupt(&key, e)),
            None => Ok(()),
        }
    }

    /// The aggregates of (`day`, `domain`), one per policy seen.
    pub fn aggregates(&self, day: Day, domain: &str) -> Result<Vec<DayAggregate>, TlsRptError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(domain_prefix(day, domain)) {
            let (k, v) = item.map_err(StoreError::from)?;
            out.push(serde_json::from_slice(&v).map_err(|e| TlsRptError::corrupt(&k, e))?);
        }
        Ok(out)
    }

    /// Every aggregate as stored: (key, day, policy domain, policy hash,
    /// JSON value), in key order (what cluster mode pushes).
    #[allow(clippy::type_complexity)]
    pub(crate) fn entries(
        &self,
    ) -> Result<Vec<(Vec<u8>, Day, String, String, Vec<u8>)>, TlsRptError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(StoreError::from)?;
            let Some((day, domain)) = split_key(&k) else {
                continue;
            };
            let hash = k
                .rsplit(|b| *b == 0)
                .next()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .unwrap_or_default();
            out.push((k.to_vec(), day, domain, hash, v.to_vec()));
        }
        Ok(out)
    }

    /// Every (day, policy domain) with aggregates, oldest day first.
    pub fn reports(&self) -> Result<BTreeSet<(Day, String)>, TlsRptError> {
        let mut out = BTreeSet::new();
        for item in self.tree.iter() {
            let (k, _) = item.map_err(StoreError::from)?;
            if let Some(pair) = split_key(&k) {
                out.insert(pair);
            }
        }
        Ok(out)
    }

    /// Deletes every aggregate of days before `day`; returns how many.
    pub fn prune_before(&self, day: Day) -> Result<usize, TlsRptError> {
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, _) = item.map_err(StoreError::from)?;
            match split_key(&k) {
                Some((d, _)) if d >= day => break,
                _ => {
                    self.tree.remove(&k).map_err(StoreError::from)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The clock days are cut by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

impl TlsResultSink for TlsRptRecorder {
    fn record(&self, result: TlsSessionResult) {
        if let Err(e) = self.try_record(&result) {
            tracing::warn!(error = %e, policy_domain = %result.policy.policy_domain, "TLS-RPT: could not count a session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_tls::ReportPolicyType;
    use portcullis_tls::TlsResultType;
    use portcullis_types::Domain;

    fn result(failure: Option<TlsResultType>, detail: &str) -> TlsSessionResult {
        TlsSessionResult {
            policy: ReportPolicy {
                policy_type: ReportPolicyType::NoPolicyFound,
                policy_domain: Domain::parse("example.test").expect("domain"),
                policy_string: Vec::new(),
                mx_host: Vec::new(),
                failure: None,
            },
            sending_ip: None,
            mx_host: "mx.example.test".into(),
            receiving_ip: "192.0.2.1".parse().expect("ip"),
            receiving_helo: None,
            failure,
            detail: detail.into(),
            reason_code: failure.map(|_| "UnknownIssuer".to_owned()),
            is_report: false,
        }
    }

    #[test]
    fn distinct_failure_rows_are_capped_and_folded_per_result_type() {
        let mut agg = DayAggregate::new(
            Day::from_days_since_epoch(20_000),
            AggregatePolicy::from_report_policy(&result(None, "").policy),
        );
        for i in 0..(MAX_FAILURE_KEYS + 50) {
            agg.add(&result(
                Some(TlsResultType::ValidationFailure),
                &format!("error {i}"),
            ));
        }
        agg.add(&result(Some(TlsResultType::StartTlsNotSupported), "x"));
        agg.add(&result(None, ""));
        assert_eq!(agg.failures.len(), MAX_FAILURE_KEYS + 2);
        assert_eq!(agg.failed(), MAX_FAILURE_KEYS as u64 + 51);
        assert_eq!(agg.successful, 1);
        assert_eq!(
            agg.failures[&FailureKey::other("validation-failure")],
            50,
            "the overflow keeps its result type"
        );
        assert_eq!(
            agg.failures[&FailureKey::other("starttls-not-supported")],
            1
        );
        // Stored and read back as a list of rows.
        let json = serde_json::to_vec(&agg).expect("json");
        let back: DayAggregate = serde_json::from_slice(&json).expect("back");
        assert_eq!(back, agg);
    }

    #[test]
    fn long_and_control_strings_are_cut() {
        let mut agg = DayAggregate::new(
            Day::from_days_since_epoch(1),
            AggregatePolicy::from_report_policy(&result(None, "").policy),
        );
        let mut r = result(Some(TlsResultType::ValidationFailure), &"é".repeat(500));
        r.receiving_helo = Some("evil\r\nX-Header: 1".into());
        agg.add(&r);
        let key = agg.failures.keys().next().expect("row");
        assert!(
            key.additional_information
                .as_deref()
                .is_some_and(|s| s.len() <= MAX_INFO)
        );
        assert_eq!(key.receiving_mx_helo.as_deref(), Some("evil  X-Header: 1"));
    }

    #[test]
    fn keys_split_back_into_day_and_domain() {
        let day: Day = "2026-03-01".parse().expect("day");
        let mut k = domain_prefix(day, "example.test");
        k.extend_from_slice(b"0123456789abcdef");
        assert_eq!(split_key(&k), Some((day, "example.test".to_owned())));
        assert_eq!(split_key(b"garbage"), None);
    }
}
