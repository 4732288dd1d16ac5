//! The policy cache (RFC 8461 §5.1) in sled: one JSON record per domain in
//! [`TreeName::MtaStsPolicies`], written durably with [`Store::commit`].
//!
//! The cache is the defence against downgrades (§10.2), so nothing here
//! evicts a policy for space: entries go only when an operator evicts them,
//! when a fetched policy replaces them, or (by
//! [`purge_expired`](PolicyCache::purge_expired)) long after they expired.

use portcullis_store::{Store, StoreError, Tree, TreeName};
use portcullis_types::Domain;
use serde::{Deserialize, Serialize};

use crate::policy::matches_any;
use crate::{Mode, MxPattern, Policy, StsError};

/// A cached policy: the text as fetched, its parsed form, where it came
/// from and when, and how the latest check went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The policy domain (the recipient domain).
    pub domain: Domain,
    /// The `id` of the TXT record the policy was fetched under.
    pub id: String,
    /// The policy text as served.
    pub text: String,
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns.
    pub mx: Vec<MxPattern>,
    /// `max_age:` in seconds.
    pub max_age: u64,
    /// When the policy was last fetched successfully (Unix seconds).
    pub fetched_at: u64,
    /// `fetched_at + max_age`: from then on the policy is not in force.
    pub expires_at: u64,
    /// The error of the latest failed fetch or refresh since `fetched_at`.
    pub last_error: Option<String>,
    /// When DNS or the policy host was last consulted for this domain
    /// (Unix seconds).
    pub last_checked: u64,
}

impl CachedPolicy {
    /// A cache entry for `policy`, fetched for `domain` under TXT `id` at
    /// `now` (Unix seconds).
    pub fn new(domain: Domain, id: String, policy: Policy, now: u64) -> CachedPolicy {
        CachedPolicy {
            domain,
            id,
            mode: policy.mode,
            mx: policy.mx,
            max_age: policy.max_age,
            text: policy.text,
            fetched_at: now,
            expires_at: now.saturating_add(policy.max_age),
            last_error: None,
            last_checked: now,
        }
    }

    /// True once `now` (Unix seconds) has reached `expires_at`.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// §4.1: true when MX host `host` matches one of the `mx` patterns.
    pub fn matches_mx(&self, host: &str) -> bool {
        matches_any(&self.mx, host)
    }

    /// The policy text as lines, without line ends: RFC 8460 §4.4's
    /// `policy-string`.
    pub fn policy_lines(&self) -> Vec<String> {
        self.text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// The cache: typed access to the policies tree.
#[derive(Clone)]
pub struct PolicyCache {
    store: Store,
    tree: Tree,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache")
            .field("entries", &self.tree.len())
            .finish()
    }
}

const TREE: &str = "mta_sts.policies";

impl PolicyCache {
    /// Opens the cache in `store`.
    pub fn open(store: &Store) -> Result<PolicyCache, StsError> {
        Ok(PolicyCache {
            store: store.clone(),
            tree: store.tree(TreeName::MtaStsPolicies)?,
        })
    }

    /// The cached policy of `domain`, expired or not.
    pub fn get(&self, domain: &Domain) -> Result<Option<CachedPolicy>, StsError> {
        match self.tree.get(domain.as_str()).map_err(StoreError::from)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `policy` (replacing the domain's entry) and returns once it is
    /// on disk.
    pub async fn put(&self, policy: &CachedPolicy) -> Result<(), StsError> {
        let key = policy.domain.as_str();
        crate::stored::put_stored(&self.store, &self.tree, TREE, key, policy).await
    }

    /// Removes `domain`'s entry; true if there was one.
    pub async fn evict(&self, domain: &Domain) -> Result<bool, StsError> {
        crate::stored::remove_stored(&self.store, &self.tree, domain.as_str()).await
    }

    /// Every cached policy, expired or not, sorted by domain. Entries that
    /// cannot be decoded are skipped and logged.
    pub fn list(&self) -> Result<Vec<CachedPolicy>, StsError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            match decode(&value) {
                Ok(policy) => out.push(policy),
                Err(e) => tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    error = %e,
                    "skipping undecodable MTA-STS cache entry"
                ),
            }
        }
        Ok(out)
    }

    /// Removes entries that expired more than `grace` seconds before `now`
    /// (they are no longer in force and only clutter `policy list`); returns
    /// how many.
    pub async fn purge_expired(&self, now: u64, grace: u64) -> Result<usize, StsError> {
        let mut removed = 0;
        for policy in self.list()? {
            if policy.expires_at.saturating_add(grace) <= now {
                // Only if unchanged since it was read: a concurrent fetch
                // may just have replaced it.
                let current = self
                    .tree
                    .get(policy.domain.as_str())
                    .map_err(StoreError::from)?;
                if let Some(bytes) = current
                    && decode(&bytes).is_ok_and(|p| p == policy)
                {
                    self.tree
                        .remove(policy.domain.as_str())
                        .map_err(StoreError::from)?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.store.commit().await?;
        }
        Ok(removed)
    }
}

fn decode(bytes: &[u8]) -> Result<CachedPolicy, StsError> {
    crate::stored::decode_stored(TREE, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domain: &str, now: u64) -> CachedPolicy {
        let policy =
            Policy::parse("version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 100\n")
                .unwrap();
        CachedPolicy::new(Domain::parse(domain).unwrap(), "1".into(), policy, now)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_get_list_evict_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let cache = PolicyCache::open(&store).unwrap();
            cache.put(&entry("b.test", 1000)).await.unwrap();
            cache.put(&entry("a.test", 1000)).await.unwrap();
        }
        let store = Store::open_when_released(dir.path(), std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let cache = PolicyCache::open(&store).unwrap();
        let a = Domain::parse("a.test").unwrap();
        let got = cache.get(&a).unwrap().unwrap();
        assert_eq!(got, entry("a.test", 1000));
        assert_eq!(got.expires_at, 1100);
        assert!(!got.is_expired(1099) && got.is_expired(1100));
        let domains: Vec<String> = cache
            .list()
            .unwrap()
            .into_iter()
            .map(|p| p.domain.to_string())
            .collect();
        assert_eq!(domains, ["a.test", "b.test"]);
        assert!(cache.evict(&a).await.unwrap());
        assert!(!cache.evict(&a).await.unwrap());
        assert!(cache.get(&a).unwrap().is_none());
    }

    #[tokio::test]
    async fn purge_removes_only_long_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cache = PolicyCache::open(&store).unwrap();
        cache.put(&entry("old.test", 0)).await.unwrap(); // expires 100
        cache.put(&entry("new.test", 1000)).await.unwrap(); // expires 1100
        assert_eq!(cache.purge_expired(1050, 1000).await.unwrap(), 0);
        assert_eq!(cache.purge_expired(1100, 1000).await.unwrap(), 1);
        assert_eq!(cache.list().unwrap().len(), 1);
    }

    #[test]
    fn policy_lines_are_rfc_8460_policy_strings() {
        let mut e = entry("a.test", 0);
        e.text = "version: STSv1\r\nmode: enforce\r\nmx: a.test\r\nmax_age: 5\r\n".into();
        assert_eq!(
            e.policy_lines(),
            [
                "version: STSv1",
                "mode: enforce",
                "mx: a.test",
                "max_age: 5"
            ]
        );
    }
}
