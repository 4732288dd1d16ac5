//! The MTA-STS policy cache, the operator pins and the fetch election in
//! the cluster's database (migration 4): [`PgPolicyStore`], used by
//! [`SharedPolicyStore`](crate::policy_shared::SharedPolicyStore).
//!
//! The "never downgrade" promises of RFC 8461 §10.2 hold across nodes in
//! SQL, whichever node writes:
//! - a cached policy is replaced only by one fetched no earlier (the
//!   upsert's condition on `fetched_at`): a node whose fetch finished late,
//!   or that kept an older copy through an outage, cannot put back an
//!   older policy over a newer one;
//! - an operator's eviction leaves a tombstone (`policy_evictions`): a
//!   policy fetched before it is refused, so no node's local copy brings
//!   the evicted policy back;
//! - one node fetches a domain at a time: a lease row per domain
//!   (`policy_fetch_leases`), taken by an upsert that succeeds only when
//!   the row is free, lapsed, or already this node's; a lease lapses after
//!   its duration (the fetch timeout and some), so a crashed fetcher
//!   blocks nobody for long.
//!
//! `fetched_at` is the fetching node's clock, `evicted_at` the database's:
//! nodes are expected to keep their clocks in sync (NTP), and a skew of a
//! few seconds only shifts which in-flight fetch counts as "before" an
//! eviction.
//!
//! Every operation is one short statement on a pooled connection, bounded
//! by the cluster's timeout; its errors are [`ClusterError`]s, which the
//! shared store answers by falling back to the node's own store.

use crate::{Cluster, ClusterError};
use portcullis_policy::{CachedPolicy, MAX_MAX_AGE, Pin};
use portcullis_types::Domain;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The longest JSON value stored (a cached policy or a pin): a policy's
/// text is at most the fetcher's 64 KiB, so this is never reached by a
/// real policy, and a corrupt or hostile value cannot fill the database.
pub const MAX_VALUE: usize = 256 * 1024;

/// The policy state in the cluster's database. Cheap to clone.
#[derive(Clone)]
pub struct PgPolicyStore {
    cluster: Cluster,
    lease: Duration,
}

impl std::fmt::Debug for PgPolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPolicyStore")
            .field("cluster", &self.cluster)
            .field("lease", &self.lease)
            .finish()
    }
}

impl PgPolicyStore {
    /// The state in `cluster`'s database; a fetch lease this node takes
    /// lasts `lease` (give the fetch timeout and a margin: a lease that
    /// lapses mid-fetch lets a second node fetch too).
    pub fn new(cluster: Cluster, lease: Duration) -> PgPolicyStore {
        PgPolicyStore { cluster, lease }
    }

    /// The cluster this store uses.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The cached policy of `domain`, expired or not.
    pub async fn get(&self, domain: &Domain) -> Result<Option<CachedPolicy>, ClusterError> {
        let client = self.cluster.client().await?;
        let row = self
            .cluster
            .bounded(client.query_opt(
                "SELECT value FROM policy_cache WHERE domain = $1",
                &[&domain.as_str()],
            ))
            .await?;
        row.map(|r| self.decode(&r)).transpose()
    }

    /// Stores `policy` unless the row holds a policy fetched later, or the
    /// domain was evicted after `policy` was fetched; true when written.
    pub async fn put(&self, policy: &CachedPolicy) -> Result<bool, ClusterError> {
        let value = encode(policy)?;
        let client = self.cluster.client().await?;
        let written = self
            .cluster
            .bounded(client.execute(
                "INSERT INTO policy_cache (domain, fetched_at, expires_at, value) \
                 SELECT $1::text, $2::bigint, $3::bigint, $4::text \
                 WHERE NOT EXISTS (SELECT 1 FROM policy_evictions \
                                   WHERE domain = $1 AND evicted_at > $2) \
                 ON CONFLICT (domain) DO UPDATE \
                 SET fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, \
                     value = EXCLUDED.value \
                 WHERE policy_cache.fetched_at <= EXCLUDED.fetched_at",
                &[
                    &policy.domain.as_str(),
                    &to_db(policy.fetched_at),
                    &to_db(policy.expires_at),
                    &value,
                ],
            ))
            .await?;
        Ok(written > 0)
    }

    /// Removes `domain`'s policy and records the eviction (now, on the
    /// database's clock), in one transaction; true if there was a policy.
    pub async fn evict(&self, domain: &Domain) -> Result<bool, ClusterError> {
        let mut client = self.cluster.client().await?;
        self.cluster
            .bounded(async {
                let tx = client.transaction().await?;
                let removed = tx
                    .execute(
                        "DELETE FROM policy_cache WHERE domain = $1",
                        &[&domain.as_str()],
                    )
                    .await?;
                tx.execute(
                    "INSERT INTO policy_evictions (domain, evicted_at) \
                     VALUES ($1, extract(epoch FROM now())::bigint) \
                     ON CONFLICT (domain) DO UPDATE SET evicted_at = EXCLUDED.evicted_at",
                    &[&domain.as_str()],
                )
                .await?;
                tx.commit().await?;
                Ok(removed > 0)
            })
            .await
    }

    /// Every cached policy, sorted by domain.
    pub async fn list(&self) -> Result<Vec<CachedPolicy>, ClusterError> {
        let client = self.cluster.client().await?;
        let rows = self
            .cluster
            .bounded(client.query("SELECT value FROM policy_cache ORDER BY domain", &[]))
            .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// Removes policies that expired more than `grace` seconds before
    /// `now`, and tombstones older than any policy still in force could
    /// be; how many policies.
    pub async fn purge_expired(&self, now: u64, grace: u64) -> Result<usize, ClusterError> {
        let client = self.cluster.client().await?;
        let removed = self
            .cluster
            .bounded(client.execute(
                "DELETE FROM policy_cache WHERE expires_at <= $1",
                &[&to_db(now.saturating_sub(grace))],
            ))
            .await?;
        let stale = now.saturating_sub(MAX_MAX_AGE.saturating_add(grace));
        self.cluster
            .bounded(client.execute(
                "DELETE FROM policy_evictions WHERE evicted_at < $1",
                &[&to_db(stale)],
            ))
            .await?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// The operator pin of `domain`, active or not.
    pub async fn pin(&self, domain: &Domain) -> Result<Option<Pin>, ClusterError> {
        let client = self.cluster.client().await?;
        let row = self
            .cluster
            .bounded(client.query_opt(
                "SELECT value FROM policy_pins WHERE domain = $1",
                &[&domain.as_str()],
            ))
            .await?;
        row.map(|r| self.decode(&r)).transpose()
    }

    /// Stores an operator pin, replacing the domain's earlier one.
    pub async fn put_pin(&self, pin: &Pin) -> Result<(), ClusterError> {
        let value = encode(pin)?;
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "INSERT INTO policy_pins (domain, value) VALUES ($1, $2) \
                 ON CONFLICT (domain) DO UPDATE SET value = EXCLUDED.value",
                &[&pin.domain.as_str(), &value],
            ))
            .await?;
        Ok(())
    }

    /// Removes `domain`'s operator pin; true if there was one.
    pub async fn remove_pin(&self, domain: &Domain) -> Result<bool, ClusterError> {
        let client = self.cluster.client().await?;
        let removed = self
            .cluster
            .bounded(client.execute(
                "DELETE FROM policy_pins WHERE domain = $1",
                &[&domain.as_str()],
            ))
            .await?;
        Ok(removed > 0)
    }

    /// Every operator pin, sorted by domain.
    pub async fn pins(&self) -> Result<Vec<Pin>, ClusterError> {
        let client = self.cluster.client().await?;
        let rows = self
            .cluster
            .bounded(client.query("SELECT value FROM policy_pins ORDER BY domain", &[]))
            .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// Takes `domain`'s fetch lease for this node when it is free, lapsed
    /// or already this node's; true when this node holds it now.
    pub async fn take_lease(&self, domain: &Domain) -> Result<bool, ClusterError> {
        let millis = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let client = self.cluster.client().await?;
        let taken = self
            .cluster
            .bounded(client.execute(
                "INSERT INTO policy_fetch_leases (domain, node, until) \
                 VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (domain) DO UPDATE \
                 SET node = EXCLUDED.node, until = EXCLUDED.until \
                 WHERE policy_fetch_leases.until < now() \
                    OR policy_fetch_leases.node = EXCLUDED.node",
                &[&domain.as_str(), &self.cluster.node(), &millis],
            ))
            .await?;
        Ok(taken > 0)
    }

    /// Gives up this node's fetch lease of `domain` (another node's is
    /// left alone).
    pub async fn release_lease(&self, domain: &Domain) -> Result<(), ClusterError> {
        let client = self.cluster.client().await?;
        self.cluster
            .bounded(client.execute(
                "DELETE FROM policy_fetch_leases WHERE domain = $1 AND node = $2",
                &[&domain.as_str(), &self.cluster.node()],
            ))
            .await?;
        Ok(())
    }

    /// The JSON in column 0 of `row`, decoded; a value that does not decode
    /// is an error (it may be an `enforce` policy), never "absent".
    fn decode<T: DeserializeOwned>(&self, row: &tokio_postgres::Row) -> Result<T, ClusterError> {
        let text: String = row
            .try_get(0)
            .map_err(|e| self.cluster.statement_failed(&e))?;
        serde_json::from_str(&text)
            .map_err(|e| ClusterError::Query(format!("undecodable MTA-STS row: {e}")))
    }
}

/// `value` as JSON, refused past [`MAX_VALUE`].
fn encode<T: Serialize>(value: &T) -> Result<String, ClusterError> {
    let text = serde_json::to_string(value)
        .map_err(|e| ClusterError::Query(format!("cannot encode an MTA-STS row: {e}")))?;
    if text.len() > MAX_VALUE {
        return Err(ClusterError::Query(format!(
            "MTA-STS row of {} bytes is larger than {MAX_VALUE}",
            text.len()
        )));
    }
    Ok(text)
}

/// Unix seconds as a bigint (saturating: `u64::MAX` is "never").
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
