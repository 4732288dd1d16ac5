//! The periodic exchange of the limits nodes enforce together: every
//! `[cluster] sync_interval` the server calls [`LimitsExchange::exchange`],
//! which pushes what this node counted (rates, AUTH failures and
//! lockouts) and pulls the other nodes' sums into the rate table and the
//! AUTH guard, then (once a minute) sweeps what has expired. Nothing here runs on a
//! connection: the checks read only memory.
//!
//! When the database cannot answer: the fall-back is counted (`rates`,
//! `lockouts`), what was not pushed is pushed at the next exchange, and
//! the other nodes' last known counts stay (they age out with their
//! minute or window): the node goes on enforcing its own limits, never
//! fewer.

use crate::lists::PgLists;
use crate::lockouts::PgLockouts;
use crate::rates::{MAX_PUSH, PgRates};
use crate::{Cluster, ClusterError};
use portcullis_screen::rates::RateTable;
use portcullis_submission::lockout::AuthGuard;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::debug;

/// Keys of the AUTH guard pushed and pulled per exchange at most: the
/// bound of the guard's own memory.
pub const MAX_LOCKOUT_KEYS: usize = 100_000;

/// How often the expired rows are swept. Every read already filters by
/// time, so sweeping only bounds the tables' size; it includes a count
/// of the DNS-list answers, which need not run at every exchange (every
/// 300 ms in the tests, 10 s by default).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One node's side of the exchange.
pub struct LimitsExchange {
    cluster: Cluster,
    rates: PgRates,
    lockouts: PgLockouts,
    lists: Arc<PgLists>,
    /// When the last sweep ran (`None`: never, so the first round sweeps).
    swept_at: Mutex<Option<Instant>>,
}

impl LimitsExchange {
    /// The exchange over `cluster`'s database; `lists` is the DNS-list
    /// store the screen shares answers through (swept here).
    pub fn new(cluster: Cluster, lists: Arc<PgLists>) -> LimitsExchange {
        LimitsExchange {
            rates: PgRates::new(cluster.clone()),
            lockouts: PgLockouts::new(cluster.clone()),
            cluster,
            lists,
            swept_at: Mutex::new(None),
        }
    }

    /// True when a sweep is due now (and notes that it runs).
    fn sweep_due(&self) -> bool {
        let mut at = self.swept_at.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return false;
        }
        *at = Some(Instant::now());
        true
    }

    /// One round: rates of `table`, failures and lockouts of `guard`,
    /// then, at most every [`SWEEP_EVERY`], the sweeps. Failures are counted, never returned: the next
    /// round tries again.
    pub async fn exchange(&self, table: &RateTable, guard: &AuthGuard) {
        if let Err(e) = self.rates(table).await {
            self.cluster.fell_back("rates", &e);
            if matches!(e, ClusterError::Unreachable(_)) {
                // The rest would wait out the same timeout again: this
                // round ends here (the guard's changes stay marked).
                self.cluster.fell_back("lockouts", &e);
                return;
            }
        }
        if let Err(e) = self.lockouts(guard).await {
            self.cluster.fell_back("lockouts", &e);
        }
        if !self.sweep_due() {
            return;
        }
        let minute = current_minute();
        let swept = async {
            let rates = self.rates.sweep(minute.saturating_sub(1)).await?;
            let lockouts = self.lockouts.sweep().await?;
            let lists = self.lists.sweep().await?;
            Ok::<_, ClusterError>(rates + lockouts + lists)
        };
        match swept.await {
            Ok(n) => debug!(removed = n, "shared limits swept"),
            // Not a fall-back: nothing was asked; the next round sweeps.
            Err(e) => debug!(error = %e, "shared limits not swept"),
        }
    }

    /// Pushes the table's changed counts (kept for the next round when
    /// the push fails) and pulls the others' sums into it.
    async fn rates(&self, table: &RateTable) -> Result<(), ClusterError> {
        let changed = table.changed(MAX_PUSH);
        if let Err(e) = self.rates.push(&changed).await {
            table.requeue(changed.iter().map(|c| c.key));
            return Err(e);
        }
        let since = current_minute().saturating_sub(1);
        let others = self
            .rates
            .pull(since, table.capacity().saturating_mul(2))
            .await?;
        table.set_remote(others);
        Ok(())
    }

    /// The same for the AUTH guard.
    async fn lockouts(&self, guard: &AuthGuard) -> Result<(), ClusterError> {
        let changed = guard.changed(Instant::now(), MAX_LOCKOUT_KEYS);
        if let Err(e) = self.lockouts.push(&changed).await {
            guard.requeue(changed.into_iter().map(|c| c.key));
            return Err(e);
        }
        let others = self.lockouts.pull(MAX_LOCKOUT_KEYS).await?;
        guard.set_remote(others, Instant::now());
        Ok(())
    }
}

/// The current minute (Unix ms / 60,000) on this node's clock, as the
/// rate table counts it.
fn current_minute() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ms / 60_000
}
