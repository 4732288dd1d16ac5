//! Where the sender's reports come from and where their send state lives,
//! as two narrow traits, so the same [`crate::DmarcSender`] sends a single
//! node's reports (this module's sled implementations, the default) or a
//! cluster's (the `portcullis-cluster` implementations: every node's
//! counts summed, one node holding each report under a lease).
//!
//! - [`ReportSource`]: the (day, domain) pairs with aggregates and their
//!   rows.
//! - [`SendStates`]: who may send a report now and what was done so far.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use portcullis_store::{Store, Tree, TreeName};
use portcullis_tlsrpt::Day;
use serde::{Deserialize, Serialize};

use crate::{DmarcError, DmarcRecorder, PendingReport, RowFacts};

/// A boxed future, so the traits stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the aggregates of reports come from.
pub trait ReportSource: Send + Sync {
    /// Every (day, domain) with aggregates not yet reported, oldest day
    /// first (the current day included: `dmarc list` shows it).
    fn pending(&self) -> BoxFuture<'_, Result<Vec<PendingReport>, DmarcError>>;

    /// The rows of (`day`, `domain`) with their counts.
    fn rows<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RowFacts, u64)>, DmarcError>>;

    /// Forgets this node's aggregates of (`day`, `domain`): its report is
    /// decided.
    fn finish<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<(), DmarcError>>;

    /// How long after a day's end its report waits at least, so counts
    /// made elsewhere just before midnight have arrived (zero on a single
    /// node).
    fn settle(&self) -> Duration {
        Duration::ZERO
    }
}

/// One destination of a report being sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The `mailto:` address.
    pub address: String,
    /// The `!size` limit (0: none).
    pub max_size: u64,
}

/// The state of one report, as the sender writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SendState {
    /// The report's id: kept by every attempt, so a receiver drops a
    /// second copy.
    pub report_id: String,
    /// `pending`, `sending` (queuing to `remaining`), `sent`,
    /// `no-destination` or `failed`.
    pub state: String,
    /// Passes that met a temporary DNS failure.
    pub attempts: u32,
    /// The last temporary failure.
    pub last_error: Option<String>,
    /// When it was decided (Unix seconds).
    pub decided_at: Option<u64>,
    /// While `sending`: the destinations not queued yet.
    #[serde(default)]
    pub remaining: Vec<Destination>,
}

impl SendState {
    /// The state as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The state stored as `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<SendState, DmarcError> {
        serde_json::from_slice(bytes).map_err(|e| DmarcError::corrupt(b"send state", e))
    }
}

/// What [`SendStates::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// This sender may send it now, with the state written so far (`None`:
    /// nobody started it).
    Yours(Option<SendState>),
    /// Decided already: never a second report; its aggregates can go.
    Decided,
    /// Another node is sending it (or finished it): nothing to do here.
    Elsewhere,
}

/// Where reports' send state lives, and who may send one.
pub trait SendStates: Send + Sync {
    /// Takes (`day`, `domain`) for this sender, if it may send it now.
    fn take<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<Taken, DmarcError>>;

    /// Keeps holding (`day`, `domain`) while working; false when this
    /// sender no longer may send it (it must stop).
    fn renew<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<bool, DmarcError>>;

    /// Writes `state` durably (before anything it announces is done);
    /// `decided` ends the report for good. False when this sender no
    /// longer holds it (nothing written; it must stop).
    fn save<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
        state: &'a SendState,
        decided: bool,
    ) -> BoxFuture<'a, Result<bool, DmarcError>>;
}

impl ReportSource for DmarcRecorder {
    fn pending(&self) -> BoxFuture<'_, Result<Vec<PendingReport>, DmarcError>> {
        Box::pin(async move { DmarcRecorder::pending(self) })
    }

    fn rows<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(RowFacts, u64)>, DmarcError>> {
        Box::pin(async move { DmarcRecorder::rows(self, day, domain) })
    }

    fn finish<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<(), DmarcError>> {
        Box::pin(async move { self.remove(day, domain) })
    }
}

/// The send state of a single node, in its store's `dmarc.sent` tree.
/// Every report is this node's; a report not `pending` is decided (so a
/// crash while queuing loses the rest of that report, never doubles it).
#[derive(Clone)]
pub struct LocalSendStates {
    store: Store,
    sent: Tree,
}

impl std::fmt::Debug for LocalSendStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSendStates").finish_non_exhaustive()
    }
}

/// The key of a report's state in `dmarc.sent`.
pub(crate) fn report_key(day: Day, domain: &str) -> Vec<u8> {
    let mut k = format!("r/{day}/").into_bytes();
    k.extend_from_slice(domain.as_bytes());
    k
}

impl LocalSendStates {
    /// The states in `store`'s `dmarc.sent` tree.
    pub fn open(store: &Store) -> Result<LocalSendStates, DmarcError> {
        Ok(LocalSendStates {
            store: store.clone(),
            sent: store.tree(TreeName::DmarcSent)?,
        })
    }

    fn load(&self, day: Day, domain: &str) -> Result<Option<SendState>, DmarcError> {
        let key = report_key(day, domain);
        match self.sent.get(&key)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| DmarcError::corrupt(&key, e))?,
            )),
            None => Ok(None),
        }
    }
}

impl SendStates for LocalSendStates {
    fn take<'a>(&'a self, day: Day, domain: &'a str) -> BoxFuture<'a, Result<Taken, DmarcError>> {
        Box::pin(async move {
            Ok(match self.load(day, domain)? {
                Some(s) if s.state != "pending" => Taken::Decided,
                other => Taken::Yours(other),
            })
        })
    }

    fn renew<'a>(&'a self, _day: Day, _domain: &'a str) -> BoxFuture<'a, Result<bool, DmarcError>> {
        Box::pin(async { Ok(true) })
    }

    fn save<'a>(
        &'a self,
        day: Day,
        domain: &'a str,
        state: &'a SendState,
        _decided: bool,
    ) -> BoxFuture<'a, Result<bool, DmarcError>> {
        Box::pin(async move {
            self.sent
                .insert(report_key(day, domain), state.to_bytes())?;
            // Committed before the caller acts on it (STYLE 7).
            self.store.commit().await?;
            Ok(true)
        })
    }
}
