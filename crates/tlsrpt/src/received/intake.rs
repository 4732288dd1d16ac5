//! [`ReceivedReports`]: the [`ReportIntake`] over sled (tree
//! `tlsrpt.received`), and the reading side `tlsrpt received list|show`
//! uses.
//!
//! Keys (one tree): `r` ‖ id → the [`ReceivedReport`] (JSON); `t` ‖
//! receipt time (8 bytes, big-endian) ‖ id → its [`ReceivedSummary`], the
//! time order that listing, expiry and eviction walk; `c` ‖ domain `\0`
//! result type `\0` reporter → a failure counter (8 bytes, big-endian),
//! never lowered, so the metric restored at start is monotonic; `o` ‖
//! organisation → a reporter with a label of its own. A report and
//! everything it changes are written in one batch and fsynced before
//! [`ReportIntake::take`] returns, so whoever hands a report over (an
//! HTTP 200, the mail queue marking the recipient done) may forget it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_metrics::MetricsWriter;
use portcullis_store::{Store, StoreError, Tree, TreeName, check_value_size};
use portcullis_types::Clock;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::metrics::{FailureLabels, ReceivedMetrics};
use super::record::{ReceivedReport, cut, from_report};
use super::{Channel, IntakeError, LiveOurs, ReportIntake, decode};

/// The bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedLimits {
    /// Most reports kept; the oldest received goes first.
    pub max_reports: usize,
    /// How long a report is kept after it was received.
    pub retention: Duration,
    /// Most organisations with a `reporter` label of their own (the first
    /// seen); later ones are counted as `other`.
    pub max_reporters: usize,
}

impl Default for ReceivedLimits {
    /// 100,000 reports, 400 days (a year and a bit, to compare with last
    /// year), 50 reporter labels.
    fn default() -> ReceivedLimits {
        ReceivedLimits {
            max_reports: 100_000,
            retention: Duration::from_secs(400 * 86_400),
            max_reporters: 50,
        }
    }
}

/// The most entries `list` returns (newest first).
pub const MAX_LIST: usize = 10_000;

/// Longest `reporter` label (an organisation name is cut to it).
const MAX_REPORTER_LABEL: usize = 64;

/// The label of the reporters beyond [`ReceivedLimits::max_reporters`].
pub const OTHER_REPORTER: &str = "other";

/// What `tlsrpt received list` shows of one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedSummary {
    /// Our id.
    pub id: String,
    /// When we took it, Unix seconds.
    pub received_at: u64,
    /// The reporting organisation (empty when it left it out).
    pub organization: String,
    /// Our policy domains it is about.
    pub domains: Vec<String>,
    /// `date-range` start, Unix seconds.
    pub start: i64,
    /// `date-range` end, Unix seconds.
    pub end: i64,
    /// Sessions that negotiated TLS.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
}

impl ReceivedSummary {
    fn of(r: &ReceivedReport) -> ReceivedSummary {
        ReceivedSummary {
            id: r.id.clone(),
            received_at: r.received_at,
            organization: r.organization.clone(),
            domains: r.domains(),
            start: r.start,
            end: r.end,
            successful: r.successful(),
            failed: r.failed(),
        }
    }
}

/// What [`ReceivedReports::take_report`] did with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The id it is stored under.
    pub id: String,
    /// True when the same report (organisation and report-id) was already
    /// stored: nothing was written or counted again.
    pub duplicate: bool,
}

/// Which reports `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedFilter {
    /// Only reports about this policy domain (canonical form).
    pub domain: Option<String>,
    /// Only reports whose date range ends at or after this time (Unix
    /// seconds): what they are about, not when they came.
    pub since: Option<i64>,
}

/// The bookkeeping of the one writer.
struct Book {
    /// Reports stored (index entries).
    count: usize,
    /// Organisations with a label of their own.
    reporters: BTreeSet<String>,
}

struct Inner {
    store: Store,
    tree: Tree,
    clock: Arc<dyn Clock>,
    ours: LiveOurs,
    limits: ReceivedLimits,
    /// Held across a take's read-check-write, so two copies of one report
    /// arriving together are stored once and counted once.
    book: Mutex<Book>,
    metrics: ReceivedMetrics,
}

/// The received reports in sled. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ReceivedReports(Arc<Inner>);

fn store_err(e: impl std::fmt::Display) -> IntakeError {
    IntakeError::Store(e.to_string())
}

fn record_key(id: &str) -> Vec<u8> {
    let mut k = b"r".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_key(received_at: u64, id: &str) -> Vec<u8> {
    let mut k = b"t".to_vec();
    k.extend_from_slice(&received_at.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn counter_key(l: &FailureLabels) -> Vec<u8> {
    format!("c{}\0{}\0{}", l.0, l.1, l.2).into_bytes()
}

fn parse_counter_key(k: &[u8]) -> Option<FailureLabels> {
    let s = std::str::from_utf8(k.strip_prefix(b"c")?).ok()?;
    let mut parts = s.split('\0');
    let l = (parts.next()?, parts.next()?, parts.next()?);
    Some((l.0.to_owned(), l.1.to_owned(), l.2.to_owned()))
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The id of a report: 20 hex digits of the SHA-256 of its organisation
/// and report-id, so the same report sent twice (or by mail and by
/// HTTPS) has one id; a report without a report-id is keyed by its whole
/// JSON instead, so two different ones are never taken for one.
fn report_id(organization: &str, report_id: &str, json: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(organization.as_bytes());
    ctx.update(b"\0");
    if report_id.is_empty() {
        ctx.update(b"json\0");
        ctx.update(json);
    } else {
        ctx.update(report_id.as_bytes());
    }
    let digest = ctx.finish();
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ReceivedReports {
    /// Opens the received reports in `store`: counts them, drops those past
    /// `limits.retention`, and restores the failure counters.
    pub fn open(
        store: &Store,
        clock: Arc<dyn Clock>,
        ours: LiveOurs,
        limits: ReceivedLimits,
    ) -> Result<ReceivedReports, StoreError> {
        let tree = store.tree(TreeName::TlsRptReceived)?;
        let metrics = ReceivedMetrics::default();
        for item in tree.scan_prefix(b"c") {
            let (k, v) = item?;
            if let Some(labels) = parse_counter_key(&k) {
                metrics.restore(labels, be_u64(&v));
            }
        }
        let mut reporters = BTreeSet::new();
        for item in tree.scan_prefix(b"o") {
            let (k, _) = item?;
            reporters.insert(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        let count = tree.scan_prefix(b"t").count();
        let inner = Inner {
            store: store.clone(),
            tree,
            clock,
            ours,
            limits,
            book: Mutex::new(Book { count, reporters }),
            metrics,
        };
        let reports = ReceivedReports(Arc::new(inner));
        reports.sweep()?;
        Ok(reports)
    }

    /// Drops the reports past their retention and over the count (oldest
    /// first); runs at open and before each new report is stored.
    pub fn sweep(&self) -> Result<(), StoreError> {
        let i = &self.0;
        let mut book = i.book.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        let dropped = self.drop_old(&mut book, &mut batch, 0)?;
        if dropped > 0 {
            i.tree.apply_batch(batch)?;
            i.store.flush_now()?;
            info!(dropped, "TLS reports received: old reports dropped");
        }
        Ok(())
    }

    /// Puts into `batch` the removal of every report past retention and of
    /// the oldest until `room` more fit; returns how many.
    fn drop_old(
        &self,
        book: &mut Book,
        batch: &mut sled::Batch,
        room: usize,
    ) -> Result<usize, StoreError> {
        let i = &self.0;
        let now = i.clock.unix_secs();
        let cutoff = now.saturating_sub(i.limits.retention.as_secs());
        let mut dropped = 0;
        for item in i.tree.scan_prefix(b"t") {
            let (k, _) = item?;
            let at = k.get(1..9).map(be_u64).unwrap_or(0);
            let over = book.count + room > i.limits.max_reports;
            if at >= cutoff && !over {
                break;
            }
            let id = &k[9..];
            let mut rk = b"r".to_vec();
            rk.extend_from_slice(id);
            batch.remove(k.clone());
            batch.remove(rk);
            book.count = book.count.saturating_sub(1);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// The label of `organization`: its own while fewer than
    /// `max_reporters` have one (the new one is put into `batch`), else
    /// `other`.
    fn reporter_label(
        &self,
        book: &mut Book,
        organization: &str,
        batch: &mut sled::Batch,
    ) -> String {
        let name = cut(organization.trim(), MAX_REPORTER_LABEL);
        let name = if name.is_empty() {
            "unknown".to_owned()
        } else {
            name
        };
        if book.reporters.contains(&name) {
            return name;
        }
        if book.reporters.len() >= self.0.limits.max_reporters || name == OTHER_REPORTER {
            return OTHER_REPORTER.to_owned();
        }
        let mut k = b"o".to_vec();
        k.extend_from_slice(name.as_bytes());
        batch.insert(k, &[][..]);
        book.reporters.insert(name.clone());
        name
    }

    /// Takes one report (gzip or plain JSON): parses it, keeps the
    /// policies about our domains, stores it once (a report already stored
    /// is a duplicate: not written or counted again), counts its failures,
    /// and fsyncs before returning. Blocks on the disk: from async code,
    /// call it through `spawn_blocking`.
    pub fn take_report(&self, body: &[u8], channel: Channel) -> Result<Taken, IntakeError> {
        let result = self.take_inner(body, channel);
        let outcome = match &result {
            Ok(t) if t.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(IntakeError::Invalid(_)) => "invalid",
            Err(_) => "error",
        };
        self.0.metrics.report(channel.as_str(), outcome);
        result
    }

    fn take_inner(&self, body: &[u8], channel: Channel) -> Result<Taken, IntakeError> {
        let i = &self.0;
        let json = decode::json_of(body)?;
        let report = decode::parse(&json)?;
        let org = report.organization_name.as_deref().unwrap_or("");
        let id = report_id(org, &report.report_id, &json);
        let ours = i.ours.get();
        let now = i.clock.unix_secs();
        let (stored, counts) = from_report(&report, &ours.domains, id.clone(), now, channel)
            .ok_or_else(|| {
                IntakeError::Invalid(format!(
                    "about none of our domains ({} policies about others)",
                    report.policies.len()
                ))
            })?;
        let mut book = i.book.lock().unwrap_or_else(|p| p.into_inner());
        if i.tree.contains_key(record_key(&id)).map_err(store_err)? {
            info!(%id, organization = %stored.organization, report_id = %stored.report_id, channel = channel.as_str(), "TLS report received again: duplicate, not counted twice");
            return Ok(Taken {
                id,
                duplicate: true,
            });
        }
        let record = serde_json::to_vec(&stored).map_err(store_err)?;
        let summary = serde_json::to_vec(&ReceivedSummary::of(&stored)).map_err(store_err)?;
        check_value_size(TreeName::TlsRptReceived, record.len()).map_err(store_err)?;
        check_value_size(TreeName::TlsRptReceived, summary.len()).map_err(store_err)?;

        let mut batch = sled::Batch::default();
        let before = book.count;
        self.drop_old(&mut book, &mut batch, 1).map_err(store_err)?;
        let reporter = self.reporter_label(&mut book, &stored.organization, &mut batch);
        let mut added: Vec<(FailureLabels, u64)> = Vec::new();
        for (domain, result_type, n) in counts {
            let labels = (domain, result_type, reporter.clone());
            match added.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, sum)) => *sum = sum.saturating_add(n),
                None => added.push((labels, n)),
            }
        }
        for (labels, n) in &added {
            let key = counter_key(labels);
            let old = i.tree.get(&key).map_err(store_err)?;
            let value = old.as_deref().map(be_u64).unwrap_or(0).saturating_add(*n);
            batch.insert(key, &value.to_be_bytes()[..]);
        }
        batch.insert(record_key(&id), record);
        batch.insert(index_key(now, &id), summary);
        let written = i
            .tree
            .apply_batch(batch)
            .map_err(store_err)
            .and_then(|()| i.store.flush_now().map_err(store_err));
        if let Err(e) = written {
            // Nothing was promised; the bookkeeping is read again at the
            // next start.
            book.count = before;
            warn!(%id, error = %e, "TLS report received but not stored");
            return Err(e);
        }
        book.count += 1;
        for (labels, n) in added {
            i.metrics.add_failures(labels, n);
        }
        info!(
            %id,
            organization = %stored.organization,
            report_id = %stored.report_id,
            channel = channel.as_str(),
            domains = %stored.domains().join(","),
            successful = stored.successful(),
            failed = stored.failed(),
            "TLS report received"
        );
        Ok(Taken {
            id,
            duplicate: false,
        })
    }

    /// The stored report `id`, or `None`.
    pub fn show(&self, id: &str) -> Result<Option<ReceivedReport>, StoreError> {
        let Some(v) = self.0.tree.get(record_key(id))? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: TreeName::TlsRptReceived.as_str(),
                reason: format!("report {id}: {e}"),
            })
    }

    /// The reports that pass `filter`, newest received first, at most
    /// [`MAX_LIST`]; those past retention are left out even before a
    /// sweep removes them.
    pub fn list(&self, filter: &ReceivedFilter) -> Result<Vec<ReceivedSummary>, StoreError> {
        let i = &self.0;
        let cutoff = i
            .clock
            .unix_secs()
            .saturating_sub(i.limits.retention.as_secs());
        let mut out = Vec::new();
        for item in i.tree.scan_prefix(b"t").rev() {
            let (_, v) = item?;
            let s: ReceivedSummary = match serde_json::from_slice(&v) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "TLS reports received: unreadable summary skipped");
                    continue;
                }
            };
            if s.received_at < cutoff {
                break;
            }
            let domain_ok = filter
                .domain
                .as_ref()
                .is_none_or(|d| s.domains.iter().any(|x| x == d));
            let since_ok = filter.since.is_none_or(|t| s.end >= t);
            if domain_ok && since_ok {
                out.push(s);
                if out.len() >= MAX_LIST {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// How many reports are stored.
    pub fn len(&self) -> usize {
        self.0.book.lock().unwrap_or_else(|p| p.into_inner()).count
    }

    /// True when no report is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What makes a report (and a report mailbox) ours, shared with the
    /// reload.
    pub fn ours(&self) -> &LiveOurs {
        &self.0.ours
    }

    /// The failure counter of (domain, result type, reporter label).
    pub fn failures(&self, domain: &str, result_type: &str, reporter: &str) -> u64 {
        self.0.metrics.failures(&(
            domain.to_owned(),
            result_type.to_owned(),
            reporter.to_owned(),
        ))
    }

    /// Appends `portcullis_tlsrpt_received_failures_total` and
    /// `portcullis_tlsrpt_received_reports_total` to `w`.
    pub fn render_metrics(&self, w: &mut MetricsWriter) {
        self.0.metrics.render(w);
    }
}

impl ReportIntake for ReceivedReports {
    fn take(&self, body: &[u8], channel: Channel) -> Result<String, IntakeError> {
        self.take_report(body, channel).map(|t| t.id)
    }
}
