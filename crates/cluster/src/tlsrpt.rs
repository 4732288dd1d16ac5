//! TLS-RPT across the nodes ([`PgTlsRpt`]): the [`SharedReports`] of
//! `portcullis-tlsrpt` over the report tables of migration 3 (counts of
//! kind `tlsrpt`, keyed by policy hash, the value a node's whole
//! `DayAggregate` JSON; one claim per (day, policy domain) holding the
//! report's send state). Every failure to reach the database is counted
//! as a fall-back of the store `tlsrpt` (the node keeps counting in sled
//! and sends nothing until the database answers again).

use crate::reports::{ClaimState, CountRow, ReportClaims, ReportCounts, ReportKind};
use crate::{Cluster, ClusterError};
use portcullis_tlsrpt::shared::{BoxFuture, SharedClaim, SharedCount, SharedError, SharedReports};
use std::time::Duration;

/// The name the fall-backs are counted under
/// (`portcullis_cluster_fallbacks_total{store="tlsrpt"}`).
const STORE: &str = "tlsrpt";

/// TLS-RPT counts and claims in the cluster's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgTlsRpt {
    cluster: Cluster,
    counts: ReportCounts,
    claims: ReportClaims,
}

impl PgTlsRpt {
    /// The TLS-RPT tables of `cluster`'s database.
    pub fn new(cluster: Cluster) -> PgTlsRpt {
        PgTlsRpt {
            counts: ReportCounts::new(cluster.clone(), ReportKind::TlsRpt),
            claims: ReportClaims::new(cluster.clone(), ReportKind::TlsRpt),
            cluster,
        }
    }

    /// The lease a report is claimed for with `cluster`'s settings: five
    /// sync intervals, at least two seconds (10 s sync: 50 s). Long enough
    /// that a renewal every third of it survives one slow statement; short
    /// enough that a node killed mid-send is replaced within a minute.
    pub fn lease(cluster: &Cluster) -> Duration {
        cluster
            .sync_interval()
            .saturating_mul(5)
            .max(Duration::from_secs(2))
    }

    /// `r`, with a failure counted and turned into the trait's error.
    fn counted<T>(&self, r: Result<T, ClusterError>) -> Result<T, SharedError> {
        r.map_err(|e| {
            self.cluster.fell_back(STORE, &e);
            SharedError(e.to_string())
        })
    }
}

impl SharedReports for PgTlsRpt {
    fn push<'a>(&'a self, rows: &'a [SharedCount]) -> BoxFuture<'a, Result<(), SharedError>> {
        Box::pin(async move {
            let rows: Vec<CountRow> = rows
                .iter()
                .map(|r| CountRow {
                    day: r.day.clone(),
                    domain: r.domain.clone(),
                    key: r.key.clone(),
                    value: r.value.clone(),
                })
                .collect();
            let skipped = self.counted(self.counts.push(&rows).await)?;
            if skipped > 0 {
                tracing::warn!(
                    skipped,
                    "TLS-RPT: counts over the shared table's bounds not pushed"
                );
            }
            Ok(())
        })
    }

    fn days(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SharedError>> {
        Box::pin(async move { self.counted(self.counts.days().await) })
    }

    fn counts<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>, SharedError>> {
        Box::pin(async move {
            let rows = self.counted(self.counts.rows(day, domain).await)?;
            Ok(rows.into_iter().map(|r| r.value).collect())
        })
    }

    fn claim<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<SharedClaim>, SharedError>> {
        Box::pin(async move {
            let claim = self.counted(self.claims.claim(day, domain, lease).await)?;
            Ok(claim.map(|c| SharedClaim {
                record: c.record,
                taken_from: c.taken_from,
            }))
        })
    }

    fn renew<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, SharedError>> {
        Box::pin(async move { self.counted(self.claims.renew(day, domain, lease).await) })
    }

    fn save<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
        record: &'a [u8],
        done: bool,
    ) -> BoxFuture<'a, Result<bool, SharedError>> {
        Box::pin(async move {
            let state = if done {
                ClaimState::Done
            } else {
                ClaimState::Pending
            };
            self.counted(self.claims.save(day, domain, record, state).await)
        })
    }

    fn release<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(), SharedError>> {
        Box::pin(async move { self.counted(self.claims.release(day, domain).await) })
    }

    fn state<'a>(
        &'a self,
        day: &'a str,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedError>> {
        Box::pin(async move {
            let row = self.counted(self.claims.get(day, domain).await)?;
            Ok(row.and_then(|r| r.record))
        })
    }

    fn prune_before<'a>(&'a self, day: &'a str) -> BoxFuture<'a, Result<(), SharedError>> {
        Box::pin(async move {
            self.counted(self.counts.prune_before(day).await)?;
            Ok(())
        })
    }
}
