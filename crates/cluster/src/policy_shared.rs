//! The MTA-STS state of a node in a cluster: [`SharedPolicyStore`] is the
//! [`PolicyStore`] the policy engine gets with `[cluster]`, the cluster's
//! database ([`PgPolicyStore`]) with the node's own sled store as its
//! mirror and fallback.
//!
//! The model:
//! - **The database is the truth while it answers.** Lookups read it (two
//!   short statements per policy lookup, the operator pin and the cached
//!   policy, each bounded by the cluster timeout: a
//!   delivery attempt already waits on DNS and SMTP, and only a read of
//!   the shared cache lets a policy fetched by one node serve every node
//!   without a second fetch). What it answers is copied into the mirror
//!   when it differs, so the mirror holds what this node last saw.
//! - **The mirror answers when the database cannot** (unreachable, timed
//!   out, a statement failed): a cached `enforce` policy stays in force
//!   and pins keep governing. Each fall-back is counted
//!   (`portcullis_cluster_fallbacks_total{store="policy"}`) and the
//!   database is left alone for [`RETRY_AFTER`], so a dead database costs
//!   one timeout, not one per delivery.
//! - **Only a fetched policy replaces a cached one, whichever node fetched
//!   it.** A policy this node fetched during an outage stays in its mirror
//!   and is offered to the database when the database answers again (on
//!   the next lookup of the domain, or by [`SharedPolicyStore::sync`]);
//!   the database takes it only if it was fetched later than what it
//!   holds and not before an operator evicted the domain, so neither an
//!   older copy nor an evicted policy comes back.
//! - **Pins:** set and removed in the database (and the mirror), so a pin
//!   set through one node's CLI governs all of them, and one removed stops
//!   governing all of them. A pin set or removed while the database is
//!   unreachable applies to this node only, until the database answers
//!   again and its pins govern once more (logged at warn).
//! - **One fetch per domain across the cluster:** [`PolicyStore::fetch_turn`]
//!   takes the domain's lease in the database; a node that finds it held
//!   waits for the holder's policy (the engine's side). Without the
//!   database every node fetches for itself.

use crate::policy::PgPolicyStore;
use crate::rest::Rest;
use crate::{Cluster, ClusterError};
use portcullis_policy::{BoxFuture, CachedPolicy, Pin, PolicyStore, StsError, Turn};
use portcullis_types::Domain;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// The name the fall-backs are counted under
/// (`portcullis_cluster_fallbacks_total{store="policy"}`).
const STORE: &str = "policy";

pub use crate::rest::RETRY_AFTER;

/// [`PolicyStore`] of a node in a cluster: the database first, the node's
/// `local` store (its sled store) as mirror and fallback.
pub struct SharedPolicyStore {
    shared: PgPolicyStore,
    local: Arc<dyn PolicyStore>,
    cluster: Cluster,
    /// Until when the database is not tried (after a failure).
    rest: Rest,
}

impl SharedPolicyStore {
    /// The state in `shared`, mirrored in and falling back to `local`;
    /// fall-backs are counted on the shared store's cluster.
    pub fn new(shared: PgPolicyStore, local: Arc<dyn PolicyStore>) -> SharedPolicyStore {
        let cluster = shared.cluster().clone();
        SharedPolicyStore {
            shared,
            local,
            cluster,
            rest: Rest::new(STORE),
        }
    }

    /// The same store, resting `retry_after` (instead of [`RETRY_AFTER`])
    /// after a failure before trying the database again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> SharedPolicyStore {
        self.rest = self.rest.with_after(retry_after);
        self
    }

    /// Brings the mirror and the database together for every domain: the
    /// database's policies and pins into the mirror, and policies this
    /// node fetched while the database was unreachable into the database
    /// (where it takes them: later fetches only, never an evicted one).
    /// Run every `[cluster] sync_interval`, so a node's mirror holds the
    /// cluster's policies before an outage, not only those it used.
    pub async fn sync(&self) -> Result<(), ClusterError> {
        if self.resting() {
            return Ok(());
        }
        let shared = match self.shared.list().await {
            Ok(list) => list,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let mut shared: BTreeMap<Domain, CachedPolicy> =
            shared.into_iter().map(|p| (p.domain.clone(), p)).collect();
        let mut local: BTreeMap<Domain, CachedPolicy> = match self.local.list().await {
            Ok(list) => list.into_iter().map(|p| (p.domain.clone(), p)).collect(),
            Err(e) => {
                warn!(error = %e, "cannot list the local MTA-STS cache to sync it");
                BTreeMap::new()
            }
        };
        let domains: BTreeSet<Domain> = shared.keys().chain(local.keys()).cloned().collect();
        for domain in domains {
            let s = shared.remove(&domain);
            let l = local.remove(&domain);
            if s != l {
                let _ = self.reconcile(&domain, s, l).await;
            }
        }
        let pins = match self.shared.pins().await {
            Ok(pins) => pins,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let mut local_pins: BTreeMap<Domain, Pin> = match self.local.pins().await {
            Ok(list) => list.into_iter().map(|p| (p.domain.clone(), p)).collect(),
            Err(e) => {
                warn!(error = %e, "cannot list the local MTA-STS pins to sync them");
                BTreeMap::new()
            }
        };
        for pin in pins {
            let mine = local_pins.remove(&pin.domain);
            self.mirror_pin(&pin.domain, mine.as_ref(), Some(&pin))
                .await;
        }
        for (domain, mine) in local_pins {
            self.mirror_pin(&domain, Some(&mine), None).await;
        }
        Ok(())
    }

    /// True while the store answers locally without trying the database.
    fn resting(&self) -> bool {
        self.rest.resting()
    }

    /// The database failed with `error`: count it, rest a while.
    fn failed(&self, error: &ClusterError) {
        self.rest.failed(&self.cluster, error);
    }

    /// The database's answer, or `None` (counted) when it cannot give one
    /// and the mirror must answer.
    async fn db<T>(&self, op: impl Future<Output = Result<T, ClusterError>>) -> Option<T> {
        if self.resting() {
            self.cluster.fell_back(
                STORE,
                &ClusterError::Unreachable("failed recently; answering locally".into()),
            );
            return None;
        }
        match op.await {
            Ok(answer) => Some(answer),
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// The policy in force for `domain` given the database's `shared` and
    /// the mirror's `local`: a local policy fetched later than the shared
    /// one (during an outage) is offered to the database, which takes it
    /// unless a newer fetch or an eviction wins; the mirror then follows
    /// whatever the database holds.
    async fn reconcile(
        &self,
        domain: &Domain,
        shared: Option<CachedPolicy>,
        local: Option<CachedPolicy>,
    ) -> Option<CachedPolicy> {
        let newer_here = match (&shared, &local) {
            (None, Some(_)) => true,
            (Some(s), Some(l)) => l.fetched_at > s.fetched_at,
            _ => false,
        };
        if newer_here && let Some(l) = &local {
            match self.db(self.shared.put(l)).await {
                // The database stopped answering: the mirror's copy stands.
                None => return local,
                Some(true) => {
                    debug!(%domain, "MTA-STS policy fetched during an outage now shared");
                    return local;
                }
                Some(false) => {
                    let Some(now) = self.db(self.shared.get(domain)).await else {
                        return local;
                    };
                    self.mirror(domain, local.as_ref(), now.as_ref()).await;
                    return now;
                }
            }
        }
        self.mirror(domain, local.as_ref(), shared.as_ref()).await;
        shared
    }

    /// Makes the mirror's entry of `domain` what the database holds.
    async fn mirror(
        &self,
        domain: &Domain,
        local: Option<&CachedPolicy>,
        shared: Option<&CachedPolicy>,
    ) {
        if local == shared {
            return;
        }
        let outcome = match shared {
            Some(policy) => self.local.put(policy).await,
            None => self.local.evict(domain).await.map(|_| ()),
        };
        if let Err(e) = outcome {
            warn!(%domain, error = %e, "cannot mirror the shared MTA-STS policy locally");
        }
    }

    /// Makes the mirror's pin of `domain` what the database holds.
    async fn mirror_pin(&self, domain: &Domain, local: Option<&Pin>, shared: Option<&Pin>) {
        if local == shared {
            return;
        }
        let outcome = match shared {
            Some(pin) => self.local.put_pin(pin).await,
            None => self.local.remove_pin(domain).await.map(|_| ()),
        };
        if let Err(e) = outcome {
            warn!(%domain, error = %e, "cannot mirror the shared MTA-STS pin locally");
        }
    }
}

impl PolicyStore for SharedPolicyStore {
    fn get<'a>(
        &'a self,
        domain: &'a Domain,
    ) -> BoxFuture<'a, Result<Option<CachedPolicy>, StsError>> {
        Box::pin(async move {
            let local = self.local.get(domain).await;
            let Some(shared) = self.db(self.shared.get(domain)).await else {
                return local;
            };
            // While the database answers it is the truth: an unreadable
            // mirror entry is replaced by its copy.
            Ok(self.reconcile(domain, shared, local.ok().flatten()).await)
        })
    }

    fn put<'a>(&'a self, policy: &'a CachedPolicy) -> BoxFuture<'a, Result<(), StsError>> {
        Box::pin(async move {
            match self.db(self.shared.put(policy)).await {
                // Kept here; offered to the database when it answers again.
                None => self.local.put(policy).await,
                Some(true) => {
                    let local = self.local.get(&policy.domain).await.ok().flatten();
                    self.mirror(&policy.domain, local.as_ref(), Some(policy))
                        .await;
                    Ok(())
                }
                Some(false) => {
                    debug!(domain = %policy.domain, "a later fetch or an eviction won over this MTA-STS policy");
                    if let Some(now) = self.db(self.shared.get(&policy.domain)).await {
                        let local = self.local.get(&policy.domain).await.ok().flatten();
                        self.mirror(&policy.domain, local.as_ref(), now.as_ref())
                            .await;
                    }
                    Ok(())
                }
            }
        })
    }

    fn evict<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>> {
        Box::pin(async move {
            let local = self.local.evict(domain).await;
            match self.db(self.shared.evict(domain)).await {
                Some(removed) => Ok(removed || matches!(local, Ok(true))),
                None => {
                    warn!(%domain, "MTA-STS policy evicted on this node only: the cluster database is unreachable, and its copy comes back when it answers");
                    local
                }
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<CachedPolicy>, StsError>> {
        Box::pin(async move {
            match self.db(self.shared.list()).await {
                Some(list) => Ok(list),
                None => self.local.list().await,
            }
        })
    }

    fn purge_expired(&self, now: u64, grace: u64) -> BoxFuture<'_, Result<usize, StsError>> {
        Box::pin(async move {
            // The mirror is purged whatever the database does: it must
            // stay small.
            let local = self.local.purge_expired(now, grace).await;
            match self.db(self.shared.purge_expired(now, grace)).await {
                Some(n) => Ok(n),
                None => local,
            }
        })
    }

    fn pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<Option<Pin>, StsError>> {
        Box::pin(async move {
            let local = self.local.pin(domain).await;
            let Some(shared) = self.db(self.shared.pin(domain)).await else {
                return local;
            };
            let mine = local.ok().flatten();
            self.mirror_pin(domain, mine.as_ref(), shared.as_ref())
                .await;
            Ok(shared)
        })
    }

    fn put_pin<'a>(&'a self, pin: &'a Pin) -> BoxFuture<'a, Result<(), StsError>> {
        Box::pin(async move {
            if self.db(self.shared.put_pin(pin)).await.is_none() {
                warn!(domain = %pin.domain, "MTA-STS pin set on this node only: the cluster database is unreachable, and its pins govern again when it answers");
            }
            self.local.put_pin(pin).await
        })
    }

    fn remove_pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>> {
        Box::pin(async move {
            let local = self.local.remove_pin(domain).await;
            match self.db(self.shared.remove_pin(domain)).await {
                Some(removed) => Ok(removed || matches!(local, Ok(true))),
                None => {
                    warn!(%domain, "MTA-STS pin removed on this node only: the cluster database is unreachable, and its pins govern again when it answers");
                    local
                }
            }
        })
    }

    fn pins(&self) -> BoxFuture<'_, Result<Vec<Pin>, StsError>> {
        Box::pin(async move {
            match self.db(self.shared.pins()).await {
                Some(pins) => Ok(pins),
                None => self.local.pins().await,
            }
        })
    }

    fn cached_len(&self) -> usize {
        self.local.cached_len()
    }

    fn fetch_turn<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Turn> {
        Box::pin(async move {
            match self.db(self.shared.take_lease(domain)).await {
                Some(false) => Turn::Theirs,
                // Taken, or no election possible: fetch here.
                Some(true) | None => Turn::Mine,
            }
        })
    }

    fn fetch_done<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.resting() {
                return;
            }
            if let Err(e) = self.shared.release_lease(domain).await {
                // Not a fall-back: the lease lapses by itself.
                debug!(%domain, error = %e, "MTA-STS fetch lease not released");
            }
        })
    }
}
