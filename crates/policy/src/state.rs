//! The engine's state behind one narrow trait, [`PolicyStore`]: the policy
//! cache, the operator pins, and the election of the one fetcher of a
//! domain's policy. A single node keeps it in sled ([`SledPolicyStore`],
//! the behaviour of a node without `[cluster]`); a cluster keeps it in its
//! database (the `portcullis-cluster` crate), with the node's sled store
//! as the fallback. The engine holds an `Arc<dyn PolicyStore>`, so both
//! run the same engine code.

use std::future::Future;
use std::pin::Pin as StdPin;

use portcullis_store::Store;
use portcullis_types::Domain;

use crate::pin::SledPins;
use crate::{CachedPolicy, Pin, PolicyCache, StsError};

/// A boxed future that can be sent between threads, the return type of
/// [`PolicyStore`]'s methods (a trait object needs them boxed).
pub type BoxFuture<'a, T> = StdPin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whose turn it is to fetch a domain's policy (see
/// [`PolicyStore::fetch_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This node fetches; it calls [`PolicyStore::fetch_done`] afterwards.
    Mine,
    /// Another node is fetching it now: wait for its policy to appear in
    /// the cache rather than fetching too.
    Theirs,
}

/// The state of a [`PolicyEngine`](crate::PolicyEngine): the cache of
/// fetched policies (RFC 8461 §5.1), the operator pins, and the fetch
/// election. File pins are not here: each node loads its own directory.
///
/// Errors are errors, never "nothing there": a cache entry or pin that
/// cannot be read may be an `enforce` policy, and the engine makes the
/// delivery wait rather than take it for absent.
pub trait PolicyStore: Send + Sync {
    /// The cached policy of `domain`, expired or not.
    fn get<'a>(
        &'a self,
        domain: &'a Domain,
    ) -> BoxFuture<'a, Result<Option<CachedPolicy>, StsError>>;

    /// Stores `policy`, on disk (or in the database) when this returns. A
    /// store shared by several nodes keeps an entry fetched later
    /// (`fetched_at` greater) rather than replace it with an older fetch,
    /// and refuses a policy fetched before an operator evicted the domain.
    fn put<'a>(&'a self, policy: &'a CachedPolicy) -> BoxFuture<'a, Result<(), StsError>>;

    /// Removes `domain`'s cached policy; true if there was one.
    fn evict<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>>;

    /// Every cached policy, expired or not, sorted by domain.
    fn list(&self) -> BoxFuture<'_, Result<Vec<CachedPolicy>, StsError>>;

    /// Removes entries that expired more than `grace` seconds before `now`;
    /// how many.
    fn purge_expired(&self, now: u64, grace: u64) -> BoxFuture<'_, Result<usize, StsError>>;

    /// The operator pin of `domain`, active or not.
    fn pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<Option<Pin>, StsError>>;

    /// Stores an operator pin (replacing the domain's earlier one).
    fn put_pin<'a>(&'a self, pin: &'a Pin) -> BoxFuture<'a, Result<(), StsError>>;

    /// Removes `domain`'s operator pin; true if there was one.
    fn remove_pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>>;

    /// Every operator pin, active or expired, sorted by domain.
    fn pins(&self) -> BoxFuture<'_, Result<Vec<Pin>, StsError>>;

    /// How many policies are cached, without a round trip (for the
    /// metrics page): a shared store answers from its node's copy.
    fn cached_len(&self) -> usize;

    /// Whether this node fetches `domain`'s policy now or another node
    /// already does. Never fails: when the election cannot be held, the
    /// answer is [`Turn::Mine`] (a second fetch costs less than a missed
    /// policy). A single node always answers [`Turn::Mine`].
    fn fetch_turn<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Turn>;

    /// This node's fetch of `domain` (after [`Turn::Mine`]) is over,
    /// stored or failed: another node may fetch it.
    fn fetch_done<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, ()>;
}

/// [`PolicyStore`] in a node's sled store: the cache in
/// `mta_sts.policies`, operator pins in `mta_sts.pins`, every fetch this
/// node's (one fetch per domain at a time within the node is the engine's
/// own lock). Exactly what a node without `[cluster]` does.
#[derive(Clone)]
pub struct SledPolicyStore {
    cache: PolicyCache,
    pins: SledPins,
}

impl std::fmt::Debug for SledPolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledPolicyStore")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl SledPolicyStore {
    /// The policy state in `store`'s trees. Must be called within a tokio
    /// runtime (the store's committer).
    pub fn open(store: &Store) -> Result<SledPolicyStore, StsError> {
        Ok(SledPolicyStore {
            cache: PolicyCache::open(store)?,
            pins: SledPins::open(store)?,
        })
    }
}

impl PolicyStore for SledPolicyStore {
    fn get<'a>(
        &'a self,
        domain: &'a Domain,
    ) -> BoxFuture<'a, Result<Option<CachedPolicy>, StsError>> {
        Box::pin(std::future::ready(self.cache.get(domain)))
    }

    /// Replaces the entry whatever it holds: within one node the engine's
    /// per-domain lock already orders the writes.
    fn put<'a>(&'a self, policy: &'a CachedPolicy) -> BoxFuture<'a, Result<(), StsError>> {
        Box::pin(self.cache.put(policy))
    }

    fn evict<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>> {
        Box::pin(self.cache.evict(domain))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<CachedPolicy>, StsError>> {
        Box::pin(std::future::ready(self.cache.list()))
    }

    fn purge_expired(&self, now: u64, grace: u64) -> BoxFuture<'_, Result<usize, StsError>> {
        Box::pin(self.cache.purge_expired(now, grace))
    }

    fn pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<Option<Pin>, StsError>> {
        Box::pin(std::future::ready(self.pins.get(domain)))
    }

    fn put_pin<'a>(&'a self, pin: &'a Pin) -> BoxFuture<'a, Result<(), StsError>> {
        Box::pin(self.pins.put(pin))
    }

    fn remove_pin<'a>(&'a self, domain: &'a Domain) -> BoxFuture<'a, Result<bool, StsError>> {
        Box::pin(self.pins.remove(domain))
    }

    fn pins(&self) -> BoxFuture<'_, Result<Vec<Pin>, StsError>> {
        Box::pin(std::future::ready(self.pins.list()))
    }

    fn cached_len(&self) -> usize {
        self.cache.list().map(|l| l.len()).unwrap_or_default()
    }

    fn fetch_turn<'a>(&'a self, _domain: &'a Domain) -> BoxFuture<'a, Turn> {
        Box::pin(std::future::ready(Turn::Mine))
    }

    fn fetch_done<'a>(&'a self, _domain: &'a Domain) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}
