//! The daily aggregates in sled ([`TreeName::DmarcAggregate`]): per (UTC
//! day, From domain) a header (the policy as last published, its row and
//! message counts) under `h‖day‖domain`, and one counter per row under
//! `r‖day‖domain‖0‖row` (the row's facts as JSON → 8-byte big-endian
//! count).
//!
//! Bounded (a sender chooses From domains and their DNS): at most
//! [`Limits::max_domain_days`] (day, domain) pairs and
//! [`Limits::max_rows`] rows per pair; what does not fit is not counted
//! (and that is counted). Writes are not fsynced: a count lost in a crash
//! is one message missing from a report, never a message. A message costs
//! two small sled writes under a short lock, never a wait for the disk.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_store::{Store, Tree, TreeName};
use portcullis_tlsrpt::Day;
use serde::{Deserialize, Serialize};

use crate::{DmarcError, DmarcMetrics, Observation, Published, RowFacts};

/// The bounds of what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// (day, domain) pairs with aggregates at once (default 10 000).
    pub max_domain_days: usize,
    /// Rows per (day, domain) (default 1 000).
    pub max_rows: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_domain_days: 10_000,
            max_rows: 1_000,
        }
    }
}

/// What happened to one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted in an existing row.
    Counted,
    /// Counted in a new row.
    NewRow,
    /// Not counted: the (day, domain) pairs are at their cap.
    DomainCap,
    /// Not counted: the domain's rows for the day are at their cap.
    RowCap,
}

/// The header of one (day, domain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    published: Published,
    rows: u32,
    messages: u64,
}

/// One (day, domain) with aggregates not yet reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReport {
    /// The UTC day.
    pub day: Day,
    /// The From domain.
    pub domain: String,
    /// The record as last published.
    pub published: Published,
    /// Rows.
    pub rows: u32,
    /// Messages counted.
    pub messages: u64,
}

/// Counts observations into the store. Cheap to clone.
#[derive(Clone)]
pub struct DmarcRecorder {
    tree: Tree,
    limits: Limits,
    /// Serialises the read-check-write of one observation.
    lock: Arc<Mutex<()>>,
    /// (day, domain) pairs stored (their headers).
    domain_days: Arc<AtomicUsize>,
    metrics: Arc<DmarcMetrics>,
}

impl std::fmt::Debug for DmarcRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmarcRecorder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn day_domain(prefix: u8, day: Day, domain: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + domain.len());
    k.push(prefix);
    k.extend_from_slice(&day.days_since_epoch().to_be_bytes());
    k.extend_from_slice(domain.as_bytes());
    k
}

fn row_prefix(day: Day, domain: &str) -> Vec<u8> {
    let mut k = day_domain(b'r', day, domain);
    k.push(0);
    k
}

fn parse_header_key(key: &[u8]) -> Option<(Day, String)> {
    let day = i64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let domain = std::str::from_utf8(key.get(9..)?).ok()?;
    Some((Day::from_days_since_epoch(day), domain.to_owned()))
}

impl DmarcRecorder {
    /// The recorder on `store`'s `dmarc.aggregate` tree.
    pub fn open(
        store: &Store,
        limits: Limits,
        metrics: Arc<DmarcMetrics>,
    ) -> Result<DmarcRecorder, DmarcError> {
        let tree = store.tree(TreeName::DmarcAggregate)?;
        let domain_days = tree.scan_prefix([b'h']).count();
        Ok(DmarcRecorder {
            tree,
            limits,
            lock: Arc::new(Mutex::new(())),
            domain_days: Arc::new(AtomicUsize::new(domain_days)),
            metrics,
        })
    }

    /// The counters this recorder (and its sender) count in.
    pub fn metrics(&self) -> &Arc<DmarcMetrics> {
        &self.metrics
    }

    /// Counts `o` (unless a cap says no), and counts the outcome.
    pub fn record(&self, o: &Observation) -> Result<Recorded, DmarcError> {
        let outcome = self.record_inner(o);
        self.metrics.recorded(match &outcome {
            Ok(Recorded::Counted | Recorded::NewRow) => "counted",
            Ok(Recorded::DomainCap) => "domain_cap",
            Ok(Recorded::RowCap) => "row_cap",
            Err(_) => "store_error",
        });
        outcome
    }

    fn record_inner(&self, o: &Observation) -> Result<Recorded, DmarcError> {
        let hkey = day_domain(b'h', o.day, &o.header_from);
        let mut rkey = row_prefix(o.day, &o.header_from);
        rkey.extend_from_slice(
            &serde_json::to_vec(&o.row).map_err(|e| DmarcError::Build(e.to_string()))?,
        );
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let header = match self.tree.get(&hkey)? {
            Some(v) => Some(
                serde_json::from_slice::<Header>(&v).map_err(|e| DmarcError::corrupt(&hkey, e))?,
            ),
            None => None,
        };
        if header.is_none()
            && self.domain_days.load(Ordering::Relaxed) >= self.limits.max_domain_days
        {
            return Ok(Recorded::DomainCap);
        }
        let count = match self.tree.get(&rkey)? {
            Some(v) => {
                Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    DmarcError::corrupt(&rkey, "count is not 8 bytes")
                })?))
            }
            None => None,
        };
        let rows = header.as_ref().map_or(0, |h| h.rows);
        if count.is_none() && rows >= self.limits.max_rows {
            return Ok(Recorded::RowCap);
        }
        let new_row = count.is_none();
        let header = Header {
            // The record as last seen: a report names the policy in force.
            published: o.published.clone(),
            rows: rows + u32::from(new_row),
            messages: header.as_ref().map_or(0, |h| h.messages) + 1,
        };
        let hvalue = serde_json::to_vec(&header).map_err(|e| DmarcError::Build(e.to_string()))?;
        portcullis_store::check_value_size(TreeName::DmarcAggregate, hvalue.len())?;
        let fresh = self.tree.insert(hkey, hvalue)?.is_none();
        if fresh {
            self.domain_days.fetch_add(1, Ordering::Relaxed);
        }
        let n = count.unwrap_or(0).saturating_add(1);
        self.tree.insert(rkey, &n.to_be_bytes())?;
        Ok(if new_row {
            Recorded::NewRow
        } else {
            Recorded::Counted
        })
    }

    /// Every (day, domain) with aggregates, oldest day first.
    pub fn pending(&self) -> Result<Vec<PendingReport>, DmarcError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix([b'h']) {
            let (k, v) = entry?;
            let Some((day, domain)) = parse_header_key(&k) else {
                return Err(DmarcError::corrupt(&k, "bad header key"));
            };
            let h: Header = serde_json::from_slice(&v).map_err(|e| DmarcError::corrupt(&k, e))?;
            out.push(PendingReport {
                day,
                domain,
                published: h.published,
                rows: h.rows,
                messages: h.messages,
            });
        }
        Ok(out)
    }

    /// The rows of (`day`, `domain`) with their counts, in key order.
    pub fn rows(&self, day: Day, domain: &str) -> Result<Vec<(RowFacts, u64)>, DmarcError> {
        let prefix = row_prefix(day, domain);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let row: RowFacts = serde_json::from_slice(&k[prefix.len()..])
                .map_err(|e| DmarcError::corrupt(&k, e))?;
            let n = u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| DmarcError::corrupt(&k, "count is not 8 bytes"))?,
            );
            out.push((row, n));
        }
        Ok(out)
    }

    /// Forgets (`day`, `domain`): its report went out (or never will).
    pub fn remove(&self, day: Day, domain: &str) -> Result<(), DmarcError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        for entry in self.tree.scan_prefix(row_prefix(day, domain)) {
            let (k, _) = entry?;
            self.tree.remove(k)?;
        }
        if self.tree.remove(day_domain(b'h', day, domain))?.is_some() {
            self.domain_days.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
