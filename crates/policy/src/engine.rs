//! The policy engine: which MTA-STS policy applies to a domain right now
//! (RFC 8461 §5.1 and §10.2), and the admin operations on the cache and the
//! pins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_dns::{DnsError, Resolver};
use portcullis_store::Store;
use portcullis_tls::{ReportPolicy, ReportPolicyType, TlsResultType};
use portcullis_types::{Clock, Domain};

use crate::cache::CachedPolicy;
use crate::diff::line_diff;
use crate::pin::{FilePins, Pin, PinSource, check_pin_parts};
use crate::record::{NoPolicyReason, RecordLookup, lookup_record, record_name};
use crate::state::{PolicyStore, SledPolicyStore, Turn};
use crate::{Mode, MxPattern, PolicyFetcher, StsError};

/// How often a node waiting for another node's fetch looks at the shared
/// cache (two short statements each time).
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// How long past the fetch timeout a node waits for another node's fetch
/// (that node stores the policy after its fetch).
const WAIT_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// What waiting for another node's fetch gave.
enum Waited {
    /// Its policy, stored.
    Stored(Box<RefreshOutcome>),
    /// Its lease ended without a new policy: this node fetches.
    MyTurn,
    /// Nothing before the deadline.
    GaveUp,
}

/// Why no policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoPolicy {
    /// DNS says there is no usable `_mta-sts` record (§3.1) and nothing
    /// unexpired is cached.
    NoRecord(NoPolicyReason),
    /// The TXT lookup failed temporarily and nothing unexpired is cached.
    DnsTemporary(DnsError),
}

/// Where the policy in force came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PolicySource {
    /// The cache, unchanged: its id matches the TXT record.
    Cache,
    /// Just fetched (first contact, or a changed id).
    Fetched,
    /// The cache, because discovery or the fetch failed (§5.1, §10.2): a
    /// vanished TXT record, a temporary DNS failure, or a failed fetch of a
    /// changed policy (then `error` says why, for TLS-RPT and the logs).
    CacheAfterFailure {
        /// The failed fetch, if it was a fetch that failed.
        error: Option<StsError>,
    },
    /// A pin (file or operator), which wins over DNS.
    Pinned {
        /// Why it was pinned.
        reason: String,
        /// Where the pin came from.
        source: PinSource,
    },
}

/// The outcome of [`PolicyEngine::policy_for`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PolicyLookup {
    /// No MTA-STS policy: deliver with opportunistic TLS.
    None(NoPolicy),
    /// A policy is in force.
    Policy {
        /// The policy (cached, fetched or pinned).
        policy: Arc<CachedPolicy>,
        /// Where it came from.
        source: PolicySource,
    },
    /// The domain publishes a record but its policy could not be fetched and
    /// nothing unexpired is cached: deliver as if there were no policy
    /// (§5.1), and record the failure for TLS-RPT.
    FetchFailed {
        /// The policy domain.
        domain: Domain,
        /// What went wrong.
        error: StsError,
    },
    /// Whether a policy is in force cannot be known now: the store could
    /// not be read (an I/O error, or a cached entry or operator pin that
    /// does not decode) and no fresh fetch replaced the unreadable entry.
    /// A temporary delivery failure, never "no policy": the unreadable
    /// entry may be an `enforce` policy (RFC 8461 §10.2 relies on the
    /// cache).
    Unavailable {
        /// The policy domain.
        domain: Domain,
        /// The store error.
        error: StsError,
        /// The fresh fetch that was tried instead, if one was (none for an
        /// unreadable pin: pins are not fetched).
        fetch: Option<StsError>,
    },
}

impl PolicyLookup {
    /// The policy in force, if any.
    pub fn policy(&self) -> Option<&Arc<CachedPolicy>> {
        match self {
            PolicyLookup::Policy { policy, .. } => Some(policy),
            _ => None,
        }
    }

    /// The mode in force (`None` when no policy applies, and also for
    /// [`PolicyLookup::Unavailable`]: check [`unavailable`](Self::unavailable)
    /// first).
    pub fn mode(&self) -> Option<Mode> {
        self.policy().map(|p| p.mode)
    }

    /// For [`PolicyLookup::Unavailable`], why delivery must wait (for the
    /// queue and the DSN); `None` for every lookup that decides.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            PolicyLookup::Unavailable {
                domain,
                error,
                fetch,
            } => Some(match fetch {
                Some(fetch) => format!(
                    "MTA-STS: the policy store entry of {domain} cannot be read ({error}) and a fresh fetch failed ({fetch}); waiting for a policy (`portcullis policy fetch {domain}`, or `policy evict {domain}` to forget the entry)"
                ),
                None => format!(
                    "MTA-STS: the policy store cannot be read for {domain} ({error}); waiting (`portcullis policy unpin {domain}` removes an unreadable pin)"
                ),
            }),
            _ => None,
        }
    }

    /// The policy-level error behind this lookup, if any.
    pub fn error(&self) -> Option<&StsError> {
        match self {
            PolicyLookup::FetchFailed { error, .. } => Some(error),
            PolicyLookup::Unavailable { fetch, .. } => fetch.as_ref(),
            PolicyLookup::Policy {
                source: PolicySource::CacheAfterFailure { error },
                ..
            } => error.as_ref(),
            _ => None,
        }
    }

    /// The TLS-RPT facts for `domain` (the domain that was looked up).
    pub fn report(&self, domain: &Domain) -> ReportPolicy {
        let failure = self.error().map(TlsResultType::from);
        match self {
            PolicyLookup::Policy { policy, .. } => ReportPolicy {
                policy_type: ReportPolicyType::Sts,
                policy_domain: policy.domain.clone(),
                policy_string: policy.policy_lines(),
                mx_host: policy.mx.iter().map(ToString::to_string).collect(),
                failure,
            },
            PolicyLookup::FetchFailed { domain, .. } | PolicyLookup::Unavailable { domain, .. } => {
                ReportPolicy {
                    policy_type: ReportPolicyType::Sts,
                    policy_domain: domain.clone(),
                    policy_string: Vec::new(),
                    mx_host: Vec::new(),
                    failure,
                }
            }
            PolicyLookup::None(_) => ReportPolicy {
                policy_type: ReportPolicyType::NoPolicyFound,
                policy_domain: domain.clone(),
                policy_string: Vec::new(),
                mx_host: Vec::new(),
                failure: None,
            },
        }
    }
}

/// What [`PolicyEngine::refresh`] did.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// The same policy was served again; its lifetime now counts from this
    /// fetch.
    Unchanged(CachedPolicy),
    /// A different policy (text or id) replaced the cached one (or there was
    /// none).
    Replaced {
        /// The policy that was cached before, if any.
        old: Option<CachedPolicy>,
        /// The policy now cached.
        new: CachedPolicy,
        /// The line diff old → new (`-`/`+` lines).
        diff: String,
    },
}

impl RefreshOutcome {
    /// The policy now cached.
    pub fn policy(&self) -> &CachedPolicy {
        match self {
            RefreshOutcome::Unchanged(p) => p,
            RefreshOutcome::Replaced { new, .. } => new,
        }
    }
}

/// Decides which MTA-STS policy applies to a domain, and keeps the cache.
///
/// Holds the resolver (for the TXT record), the fetcher (for the policy),
/// the state (cache, operator pins, fetch election: sled on a single node,
/// the cluster's database in cluster mode), this node's file pins, and the
/// injected clock.
pub struct PolicyEngine<R> {
    resolver: R,
    fetcher: PolicyFetcher,
    state: Arc<dyn PolicyStore>,
    file_pins: FilePins,
    clock: Arc<dyn Clock>,
    /// One fetch per domain at a time: deliveries that find a changed id
    /// together wait for the first one's fetch.
    inflight: Mutex<HashMap<Domain, Arc<tokio::sync::Mutex<()>>>>,
    /// Fetches by outcome ("ok" or the TLS-RPT result type), for metrics.
    fetches: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl<R> std::fmt::Debug for PolicyEngine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

impl<R: Resolver> PolicyEngine<R> {
    /// An engine over `store`'s policy and pin trees. Must be called within
    /// a tokio runtime (the store's committer).
    pub fn new(
        resolver: R,
        fetcher: PolicyFetcher,
        store: &Store,
        clock: Arc<dyn Clock>,
    ) -> Result<PolicyEngine<R>, StsError> {
        let state = Arc::new(SledPolicyStore::open(store)?);
        Ok(PolicyEngine::with_store(resolver, fetcher, state, clock))
    }

    /// An engine whose cache, operator pins and fetch election are `state`
    /// (in cluster mode, the cluster's shared store).
    pub fn with_store(
        resolver: R,
        fetcher: PolicyFetcher,
        state: Arc<dyn PolicyStore>,
        clock: Arc<dyn Clock>,
    ) -> PolicyEngine<R> {
        PolicyEngine {
            resolver,
            fetcher,
            state,
            file_pins: FilePins::default(),
            clock,
            inflight: Mutex::default(),
            fetches: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// Installs the file pins (from [`load_pins_dir`](crate::load_pins_dir)),
    /// replacing any loaded before.
    pub fn set_file_pins(&self, pins: Vec<Pin>) {
        for pin in &pins {
            tracing::warn!(domain = %pin.domain, mode = %pin.mode, reason = %pin.reason, "MTA-STS policy pinned from file");
        }
        self.file_pins.set(pins);
    }

    /// The state: the cache and the operator pins.
    pub fn cache(&self) -> &dyn PolicyStore {
        self.state.as_ref()
    }

    /// The current time in Unix seconds, from the injected clock.
    pub fn now(&self) -> u64 {
        self.clock.unix_secs()
    }

    /// The policy that applies to mail for `domain` now (RFC 8461 §5.1,
    /// §10.2):
    ///
    /// 1. an active pin wins;
    /// 2. a cached, unexpired policy whose id equals the TXT record's id is
    ///    used as is;
    /// 3. a new or changed id triggers a fetch; only a successful fetch
    ///    replaces the cache;
    /// 4. a failed fetch, a vanished TXT record or a temporary DNS failure
    ///    leaves the cached policy in force until it expires;
    /// 5. with nothing cached: no record → no policy; record but failed
    ///    fetch → [`PolicyLookup::FetchFailed`] (deliver as without a
    ///    policy, report the failure).
    ///
    /// A store that cannot be read is never taken for an empty cache (that
    /// would turn an `enforce` policy off): an unreadable cached entry is
    /// replaced by a fresh fetch if one succeeds, and otherwise, like an
    /// unreadable operator pin, gives [`PolicyLookup::Unavailable`], a
    /// temporary failure. Each is logged as an error naming the domain.
    pub async fn policy_for(&self, domain: &Domain) -> PolicyLookup {
        let now = self.now();
        if let Some(pinned) = self.pinned(domain, now).await {
            return pinned;
        }
        let cached = match self.cached_unexpired(domain, now).await {
            Ok(cached) => cached,
            Err(error) => return self.replace_unreadable(domain, error).await,
        };
        match lookup_record(&self.resolver, domain).await {
            RecordLookup::Found(record) => self.current(domain, &record.id, cached).await,
            RecordLookup::NoPolicy(reason) => match cached {
                // §10.2: a vanished record does not remove a cached policy
                // (an attacker can remove DNS records).
                Some(c) => {
                    tracing::info!(%domain, %reason, "no MTA-STS record; cached policy stays in force");
                    PolicyLookup::Policy {
                        policy: Arc::new(c),
                        source: PolicySource::CacheAfterFailure { error: None },
                    }
                }
                None => PolicyLookup::None(NoPolicy::NoRecord(reason)),
            },
            RecordLookup::Temporary(e) => match cached {
                Some(c) => {
                    tracing::info!(%domain, error = %e, "MTA-STS record lookup failed; cached policy stays in force");
                    PolicyLookup::Policy {
                        policy: Arc::new(c),
                        source: PolicySource::CacheAfterFailure { error: None },
                    }
                }
                None => PolicyLookup::None(NoPolicy::DnsTemporary(e)),
            },
        }
    }

    /// The operator's or a file's pin for `domain` in force at `now`, if
    /// any; an unreadable pin makes the domain wait (never "no policy").
    async fn pinned(&self, domain: &Domain, now: u64) -> Option<PolicyLookup> {
        match self.active_pin(domain, now).await {
            Ok(Some(pin)) => {
                tracing::warn!(%domain, mode = %pin.mode, reason = %pin.reason, "using pinned MTA-STS policy");
                Some(PolicyLookup::Policy {
                    policy: Arc::new(pin.to_cached()),
                    source: PolicySource::Pinned {
                        reason: pin.reason.clone(),
                        source: pin.source.clone(),
                    },
                })
            }
            Ok(None) => None,
            Err(error) => {
                tracing::error!(%domain, error = %error, "cannot read the MTA-STS pin; delivery waits until it is readable or removed");
                Some(PolicyLookup::Unavailable {
                    domain: domain.clone(),
                    error,
                    fetch: None,
                })
            }
        }
    }

    /// The pin that wins for `domain` at `now`: an active operator pin,
    /// else a file pin. An operator pin that cannot be read is an error,
    /// never "no pin": it may be the pin that enforces TLS for this domain.
    async fn active_pin(&self, domain: &Domain, now: u64) -> Result<Option<Pin>, StsError> {
        if let Some(pin) = self.state.pin(domain).await?.filter(|p| p.is_active(now)) {
            return Ok(Some(pin));
        }
        Ok(self.file_pins.active(domain, now))
    }

    /// The policy with id `id` (the TXT record's): the cached one when the
    /// ids match, else a fetch; a failed fetch leaves `cached` in force.
    async fn current(
        &self,
        domain: &Domain,
        id: &str,
        cached: Option<CachedPolicy>,
    ) -> PolicyLookup {
        if let Some(c) = cached.as_ref().filter(|c| c.id == id) {
            return PolicyLookup::Policy {
                policy: Arc::new(c.clone()),
                source: PolicySource::Cache,
            };
        }
        match self.fetch_once(domain, id).await {
            Ok((policy, fresh)) => PolicyLookup::Policy {
                policy: Arc::new(policy),
                source: if fresh {
                    PolicySource::Fetched
                } else {
                    PolicySource::Cache
                },
            },
            Err(error) => match cached {
                // §5.1: a failed fetch of a changed policy leaves the
                // cached one in force.
                Some(c) => {
                    tracing::warn!(%domain, cached_id = %c.id, new_id = %id, error = %error, "MTA-STS policy fetch failed; cached policy stays in force");
                    PolicyLookup::Policy {
                        policy: Arc::new(c),
                        source: PolicySource::CacheAfterFailure { error: Some(error) },
                    }
                }
                None => {
                    tracing::warn!(%domain, error = %error, "MTA-STS policy fetch failed; no cached policy");
                    PolicyLookup::FetchFailed {
                        domain: domain.clone(),
                        error,
                    }
                }
            },
        }
    }

    /// Discovers and fetches `domain`'s policy now (`portcullis policy
    /// fetch`): needs a valid TXT record; the cache is replaced only on
    /// success (a failure is noted as the cached entry's `last_error`).
    pub async fn fetch_now(&self, domain: &Domain) -> Result<CachedPolicy, StsError> {
        let id = match lookup_record(&self.resolver, domain).await {
            RecordLookup::Found(record) => record.id,
            RecordLookup::NoPolicy(reason) => {
                return Err(StsError::NoRecord {
                    domain: domain.to_string(),
                    reason,
                });
            }
            RecordLookup::Temporary(source) => {
                return Err(StsError::Dns {
                    name: record_name(domain),
                    source,
                });
            }
        };
        self.locked(domain, self.fetch_elected(domain, &id))
            .await
            .map(|o| o.policy().clone())
    }

    /// Re-fetches `domain`'s policy even when the id is unchanged (domain
    /// owners often change a policy and forget the id). A valid policy
    /// restarts the cached lifetime; a different one replaces the cached
    /// one and the change is logged with a line diff. With no usable TXT
    /// record the cached id is kept and the body is fetched anyway, so that
    /// removing DNS records alone cannot make a policy lapse.
    pub async fn refresh(&self, domain: &Domain) -> Result<RefreshOutcome, StsError> {
        let cached = self.state.get(domain).await?;
        let id = match lookup_record(&self.resolver, domain).await {
            RecordLookup::Found(record) => record.id,
            RecordLookup::NoPolicy(reason) => match &cached {
                Some(c) => c.id.clone(),
                None => {
                    return Err(StsError::NoRecord {
                        domain: domain.to_string(),
                        reason,
                    });
                }
            },
            RecordLookup::Temporary(source) => match &cached {
                Some(c) => c.id.clone(),
                None => {
                    return Err(StsError::Dns {
                        name: record_name(domain),
                        source,
                    });
                }
            },
        };
        self.locked(domain, self.fetch_elected(domain, &id)).await
    }

    /// Refreshes every cached policy that has not expired; the outcome per
    /// domain (`portcullis policy refresh` without a domain).
    pub async fn refresh_all(
        &self,
    ) -> Result<Vec<(Domain, Result<RefreshOutcome, StsError>)>, StsError> {
        let now = self.now();
        let mut out = Vec::new();
        for policy in self.state.list().await? {
            if policy.is_expired(now) {
                continue;
            }
            let outcome = self.refresh(&policy.domain).await;
            out.push((policy.domain, outcome));
        }
        Ok(out)
    }

    /// Every cached policy, expired or not.
    pub async fn list(&self) -> Result<Vec<CachedPolicy>, StsError> {
        self.state.list().await
    }

    /// The cached policy of `domain`, expired or not.
    pub async fn get(&self, domain: &Domain) -> Result<Option<CachedPolicy>, StsError> {
        self.state.get(domain).await
    }

    /// Removes `domain`'s cached policy; true if there was one. The next
    /// delivery discovers the policy afresh (trust on first use again).
    pub async fn evict(&self, domain: &Domain) -> Result<bool, StsError> {
        let removed = self.state.evict(domain).await?;
        if removed {
            tracing::warn!(%domain, "MTA-STS policy evicted from the cache");
        }
        Ok(removed)
    }

    /// Pins a policy for `domain` until `until` (Unix seconds), which wins
    /// over DNS until then; replaces an earlier operator pin.
    pub async fn pin(
        &self,
        domain: &Domain,
        mode: Mode,
        mx: Vec<MxPattern>,
        until: u64,
        reason: &str,
    ) -> Result<Pin, StsError> {
        let now = self.now();
        check_pin_parts(mode, &mx).map_err(|reason| StsError::Invalid { reason })?;
        if until <= now {
            return Err(StsError::Invalid {
                reason: format!("pin expiry {until} is not in the future (now {now})"),
            });
        }
        let pin = Pin {
            domain: domain.clone(),
            mode,
            mx,
            until: Some(until),
            reason: reason.to_owned(),
            source: PinSource::Operator,
            created_at: now,
        };
        self.state.put_pin(&pin).await?;
        tracing::warn!(%domain, %mode, mx = ?pin.mx.iter().map(ToString::to_string).collect::<Vec<_>>(), until, reason, "MTA-STS policy pinned by operator");
        Ok(pin)
    }

    /// Removes the operator pin of `domain`; true if there was one. File
    /// pins stay until their file is removed.
    pub async fn unpin(&self, domain: &Domain) -> Result<bool, StsError> {
        let removed = self.state.remove_pin(domain).await?;
        if removed {
            tracing::warn!(%domain, "MTA-STS operator pin removed");
        }
        Ok(removed)
    }

    /// Every pin: operator pins (active or expired), then file pins.
    pub async fn pins(&self) -> Result<Vec<Pin>, StsError> {
        let mut pins = self.state.pins().await?;
        pins.extend(self.file_pins.list());
        Ok(pins)
    }

    /// The cached policy of `domain` if it has not expired. A store error
    /// (or an entry that does not decode) is an error, never "nothing
    /// cached".
    async fn cached_unexpired(
        &self,
        domain: &Domain,
        now: u64,
    ) -> Result<Option<CachedPolicy>, StsError> {
        Ok(self.state.get(domain).await?.filter(|c| !c.is_expired(now)))
    }

    /// The lookup when `domain`'s cached entry cannot be read: whatever it
    /// held may be an `enforce` policy, so only a successfully fetched
    /// policy may stand in for it (and replace it); without one, delivery
    /// waits ([`PolicyLookup::Unavailable`]). The fetch is tried even when
    /// the TXT record is missing or its lookup failed, as a refresh does
    /// (§10.2: removing DNS records must not make a policy lapse); it is
    /// then stored under an empty id, which any id published later
    /// replaces.
    async fn replace_unreadable(&self, domain: &Domain, error: StsError) -> PolicyLookup {
        tracing::error!(%domain, error = %error, "cannot read the cached MTA-STS policy; fetching it afresh, delivery waits if that fails");
        let id = match lookup_record(&self.resolver, domain).await {
            RecordLookup::Found(record) => record.id,
            RecordLookup::NoPolicy(_) | RecordLookup::Temporary(_) => String::new(),
        };
        match self.fetch_once(domain, &id).await {
            Ok((policy, fresh)) => {
                tracing::warn!(%domain, mode = %policy.mode, "MTA-STS policy fetched in place of the unreadable cache entry");
                PolicyLookup::Policy {
                    policy: Arc::new(policy),
                    source: if fresh {
                        PolicySource::Fetched
                    } else {
                        PolicySource::Cache
                    },
                }
            }
            Err(fetch) => {
                tracing::error!(%domain, error = %error, fetch_error = %fetch, "MTA-STS cache entry unreadable and the policy could not be fetched: delivery deferred");
                PolicyLookup::Unavailable {
                    domain: domain.clone(),
                    error,
                    fetch: Some(fetch),
                }
            }
        }
    }

    /// Fetches `domain`'s policy for TXT `id` unless a concurrent caller
    /// has just done so; `(policy, true)` when this call fetched it. An
    /// unreadable cache entry counts as "not fetched yet".
    async fn fetch_once(
        &self,
        domain: &Domain,
        id: &str,
    ) -> Result<(CachedPolicy, bool), StsError> {
        self.locked(domain, async {
            match self.cached_unexpired(domain, self.now()).await {
                Ok(Some(c)) if c.id == id => Ok((c, false)),
                _ => self
                    .fetch_elected(domain, id)
                    .await
                    .map(|o| (o.policy().clone(), true)),
            }
        })
        .await
    }

    /// Fetches `domain`'s policy for TXT `id` ([`Self::fetch_and_store`])
    /// when it is this node's turn ([`PolicyStore::fetch_turn`]). When
    /// another node of the cluster is fetching it, waits (at most the fetch
    /// timeout) for that node's policy to appear in the shared cache and
    /// takes it instead of fetching too: one fetch per domain across the
    /// cluster. If none appears (the other fetch failed, or its node died
    /// and its lease ran out), this node fetches after all: a second fetch
    /// costs less than a missed policy.
    async fn fetch_elected(&self, domain: &Domain, id: &str) -> Result<RefreshOutcome, StsError> {
        let before = self.state.get(domain).await.ok().flatten();
        if self.state.fetch_turn(domain).await == Turn::Theirs {
            match self.await_other(domain, before.as_ref()).await {
                Waited::Stored(outcome) => return Ok(*outcome),
                Waited::MyTurn => {}
                Waited::GaveUp => {
                    tracing::warn!(%domain, "another node's MTA-STS fetch did not finish in time; fetching here too");
                    return self.fetch_and_store(domain, id).await;
                }
            }
        }
        let outcome = self.fetch_and_store(domain, id).await;
        self.state.fetch_done(domain).await;
        outcome
    }

    /// Waits for another node's fetch of `domain`: its stored policy, this
    /// node's turn once its lease is over, or the deadline.
    async fn await_other(&self, domain: &Domain, before: Option<&CachedPolicy>) -> Waited {
        let deadline = tokio::time::Instant::now() + self.fetcher.timeout() + WAIT_SLACK;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(WAIT_POLL).await;
            if let Some(outcome) = self.stored_since(domain, before).await {
                return Waited::Stored(Box::new(outcome));
            }
            if self.state.fetch_turn(domain).await == Turn::Mine {
                // Its lease just ended: its policy may have been stored
                // between the two reads.
                if let Some(outcome) = self.stored_since(domain, before).await {
                    self.state.fetch_done(domain).await;
                    return Waited::Stored(Box::new(outcome));
                }
                return Waited::MyTurn;
            }
        }
        Waited::GaveUp
    }

    /// The policy another node fetched and stored for `domain` since the
    /// cache held `before`, if it has.
    async fn stored_since(
        &self,
        domain: &Domain,
        before: Option<&CachedPolicy>,
    ) -> Option<RefreshOutcome> {
        let now = self.state.get(domain).await.ok().flatten()?;
        let fresh = match before {
            None => true,
            Some(b) => now.fetched_at > b.fetched_at || now.id != b.id || now.text != b.text,
        };
        if !fresh {
            return None;
        }
        tracing::info!(%domain, id = %now.id, mode = %now.mode, "MTA-STS policy fetched by another node of the cluster");
        Some(match before {
            Some(b) if b.text == now.text && b.id == now.id => RefreshOutcome::Unchanged(now),
            old => RefreshOutcome::Replaced {
                diff: line_diff(old.map_or("", |o| o.text.as_str()), &now.text),
                old: old.cloned(),
                new: now,
            },
        })
    }

    /// Runs `work` while holding `domain`'s fetch lock, so that fetches and
    /// cache writes for one domain never interleave (a slow failed fetch
    /// must not write its note over a newer policy).
    async fn locked<T>(&self, domain: &Domain, work: impl std::future::Future<Output = T>) -> T {
        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(inflight.entry(domain.clone()).or_default())
        };
        let result = {
            let _guard = lock.lock().await;
            work.await
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&lock) <= 2 {
            inflight.remove(domain);
        }
        result
    }

    /// Policy fetches so far by outcome: "ok" or the TLS-RPT result type.
    pub fn fetch_counts(&self) -> Vec<(&'static str, u64)> {
        let m = self.fetches.lock().unwrap_or_else(PoisonError::into_inner);
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Fetches the policy, and on success stores it under `id` (logging a
    /// diff when it differs from the cached one); on failure notes the error
    /// on the cached entry and returns it.
    async fn fetch_and_store(&self, domain: &Domain, id: &str) -> Result<RefreshOutcome, StsError> {
        let fetched = self.fetcher.fetch(domain).await;
        let outcome = match &fetched {
            Ok(_) => "ok",
            Err(e) => TlsResultType::from(e).as_str(),
        };
        *self
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(outcome)
            .or_insert(0) += 1;
        let policy = match fetched {
            Ok(policy) => policy,
            Err(error) => {
                self.note_failure(domain, &error).await;
                return Err(error);
            }
        };
        let now = self.now();
        let new = CachedPolicy::new(domain.clone(), id.to_owned(), policy, now);
        let old = self.state.get(domain).await.unwrap_or_else(|e| {
            tracing::error!(%domain, error = %e, "cannot read the MTA-STS cache");
            None
        });
        if let Err(e) = self.state.put(&new).await {
            // The fetched policy still applies to this delivery.
            tracing::error!(%domain, error = %e, "cannot store the MTA-STS policy");
        }
        let outcome = match old {
            Some(old) if old.text == new.text && old.id == new.id => {
                tracing::debug!(%domain, id, "MTA-STS policy unchanged");
                RefreshOutcome::Unchanged(new)
            }
            old => {
                let diff = line_diff(old.as_ref().map_or("", |o| o.text.as_str()), &new.text);
                match &old {
                    Some(o) => {
                        tracing::info!(%domain, old_id = %o.id, new_id = id, mode = %new.mode, max_age = new.max_age, %diff, "MTA-STS policy changed")
                    }
                    None => {
                        tracing::info!(%domain, id, mode = %new.mode, max_age = new.max_age, "MTA-STS policy cached")
                    }
                }
                RefreshOutcome::Replaced { old, new, diff }
            }
        };
        Ok(outcome)
    }

    /// Records a failed fetch on the cached entry (policy unchanged).
    async fn note_failure(&self, domain: &Domain, error: &StsError) {
        let now = self.now();
        match self.state.get(domain).await {
            Ok(Some(mut cached)) => {
                cached.last_error = Some(error.to_string());
                cached.last_checked = now;
                if let Err(e) = self.state.put(&cached).await {
                    tracing::error!(%domain, error = %e, "cannot note the MTA-STS fetch failure");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(%domain, error = %e, "cannot read the MTA-STS cache"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime};

    use portcullis_dns::MemoryResolver;

    use super::*;
    use crate::Policy;

    /// A clock the test moves by hand.
    #[derive(Debug, Default)]
    struct HandClock(AtomicU64);

    impl Clock for HandClock {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    struct Fixture {
        engine: PolicyEngine<MemoryResolver>,
        dns: MemoryResolver,
        clock: Arc<HandClock>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    const START: u64 = 1_700_000_000;
    const TXT: &str = "_mta-sts.example.test";

    fn domain() -> Domain {
        Domain::parse("example.test").unwrap()
    }

    /// An engine whose fetches always fail (the policy host has no address
    /// in the in-memory DNS), so every policy comes from the cache or a pin.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dns = MemoryResolver::new();
        let clock = Arc::new(HandClock(AtomicU64::new(START)));
        let fetcher = PolicyFetcher::builder(dns.clone())
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let engine = PolicyEngine::new(dns.clone(), fetcher, &store, clock.clone()).unwrap();
        Fixture {
            engine,
            dns,
            clock,
            store,
            _dir: dir,
        }
    }

    impl Fixture {
        async fn seed(&self, id: &str, mode: &str, max_age: u64) {
            let policy = Policy::parse(&format!(
                "version: STSv1\nmode: {mode}\nmx: *.example.test\nmax_age: {max_age}\n"
            ))
            .unwrap();
            let cached = CachedPolicy::new(domain(), id.into(), policy, self.engine.now());
            self.engine.cache().put(&cached).await.unwrap();
        }

        fn advance(&self, secs: u64) {
            self.clock.0.fetch_add(secs, Ordering::SeqCst);
        }

        async fn lookup(&self) -> PolicyLookup {
            self.engine.policy_for(&domain()).await
        }

        /// Writes `bytes` as the domain's raw entry in `tree`.
        fn raw_put(&self, tree: portcullis_store::TreeName, bytes: &[u8]) {
            self.store
                .tree(tree)
                .unwrap()
                .insert(domain().as_str(), bytes)
                .unwrap();
        }

        fn raw_get(&self, tree: portcullis_store::TreeName) -> Option<Vec<u8>> {
            self.store
                .tree(tree)
                .unwrap()
                .get(domain().as_str())
                .unwrap()
                .map(|v| v.to_vec())
        }
    }

    #[track_caller]
    fn assert_unavailable(lookup: &PolicyLookup, fetched: bool) {
        match lookup {
            PolicyLookup::Unavailable {
                domain: d,
                error,
                fetch,
            } => {
                assert_eq!(d, &domain());
                assert!(matches!(error, StsError::Store(_)), "{error:?}");
                assert_eq!(fetch.is_some(), fetched, "{fetch:?}");
            }
            other => panic!("expected a temporary failure, got {other:?}"),
        }
        assert_eq!(lookup.mode(), None);
        let reason = lookup.unavailable().expect("a deferral reason");
        assert!(
            reason.contains("MTA-STS") && reason.contains("example.test"),
            "{reason}"
        );
    }

    /// Regression test: an undecodable cached entry was logged and read as
    /// "nothing cached", so with the TXT record gone (or its fetch failing)
    /// an `enforce` domain got no policy at all. Now the lookup is a
    /// temporary failure, and the failed fetch does not touch the entry.
    #[tokio::test]
    async fn unreadable_cache_entry_with_failed_fetch_is_a_temporary_failure() {
        use portcullis_store::TreeName::MtaStsPolicies;
        let garbage = b"{\"domain\": \"example.test\", \"mode\": \"enf";
        for txt in [None, Some("v=STSv1; id=abc")] {
            let f = fixture();
            if let Some(txt) = txt {
                f.dns.add_txt(TXT, txt);
            }
            f.raw_put(MtaStsPolicies, garbage);
            let got = f.lookup().await;
            assert_unavailable(&got, true);
            assert!(got.unavailable().unwrap().contains("fresh fetch failed"));
            assert_eq!(
                f.raw_get(MtaStsPolicies).as_deref(),
                Some(&garbage[..]),
                "only a fetched policy may replace the entry ({txt:?})"
            );
            // Still so on the next attempt: nothing was cached meanwhile.
            assert_unavailable(&f.lookup().await, true);
        }
    }

    /// An operator pin that cannot be read may be the pin that enforces TLS:
    /// a temporary failure, not "no pin" (and not the cache behind it).
    #[tokio::test]
    async fn unreadable_operator_pin_is_a_temporary_failure() {
        let f = fixture();
        f.seed("abc", "none", 86_400).await;
        f.dns.add_txt(TXT, "v=STSv1; id=abc");
        f.raw_put(portcullis_store::TreeName::MtaStsPins, b"not json");
        assert_unavailable(&f.lookup().await, false);
        assert!(f.engine.unpin(&domain()).await.unwrap());
        assert_cache(&f.lookup().await, "abc");
    }

    #[track_caller]
    fn assert_cache(lookup: &PolicyLookup, id: &str) {
        match lookup {
            PolicyLookup::Policy {
                policy,
                source: PolicySource::Cache,
            } => assert_eq!(policy.id, id),
            other => panic!("expected the cached policy, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_cache_after_failure(lookup: &PolicyLookup, id: &str, with_error: bool) {
        match lookup {
            PolicyLookup::Policy {
                policy,
                source: PolicySource::CacheAfterFailure { error },
            } => {
                assert_eq!(policy.id, id);
                assert_eq!(error.is_some(), with_error, "{error:?}");
            }
            other => panic!("expected the cached policy after a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn no_record_no_cache_is_no_policy() {
        let f = fixture();
        let got = f.lookup().await;
        assert!(
            matches!(
                got,
                PolicyLookup::None(NoPolicy::NoRecord(NoPolicyReason::NoRecord))
            ),
            "{got:?}"
        );
        let report = got.report(&domain());
        assert_eq!(report.policy_type, ReportPolicyType::NoPolicyFound);
        assert_eq!(report.failure, None);
    }

    #[tokio::test]
    async fn temporary_dns_failure_no_cache_is_no_policy_kept_apart() {
        let f = fixture();
        f.dns.set_temp_fail(TXT, true);
        let got = f.lookup().await;
        assert!(
            matches!(got, PolicyLookup::None(NoPolicy::DnsTemporary(_))),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn two_records_no_cache_is_no_policy() {
        let f = fixture();
        f.dns.add_txt(TXT, "v=STSv1; id=1");
        f.dns.add_txt(TXT, "v=STSv1; id=2");
        let got = f.lookup().await;
        assert!(
            matches!(
                got,
                PolicyLookup::None(NoPolicy::NoRecord(NoPolicyReason::MultipleRecords(2)))
            ),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn matching_id_uses_the_cache_without_fetching() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        f.dns.add_txt(TXT, "v=STSv1; id=abc");
        let got = f.lookup().await;
        assert_cache(&got, "abc");
        assert_eq!(got.mode(), Some(Mode::Enforce));
        // No fetch was tried, so no error was noted.
        let cached = f.engine.get(&domain()).await.unwrap().unwrap();
        assert_eq!(cached.last_error, None);
        let report = got.report(&domain());
        assert_eq!(report.policy_type, ReportPolicyType::Sts);
        assert_eq!(report.mx_host, ["*.example.test"]);
        assert_eq!(report.policy_string[1], "mode: enforce");
    }

    /// §10.2: an attacker removing the TXT record does not remove the
    /// cached policy.
    #[tokio::test]
    async fn vanished_record_keeps_the_cached_policy() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        assert_cache_after_failure(&f.lookup().await, "abc", false);
    }

    #[tokio::test]
    async fn temporary_dns_failure_keeps_the_cached_policy() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        f.dns.set_temp_fail(TXT, true);
        assert_cache_after_failure(&f.lookup().await, "abc", false);
    }

    /// §5.1: a changed id whose fetch fails leaves the cached policy in
    /// force, and the failure is reported and noted.
    #[tokio::test]
    async fn changed_id_with_failed_fetch_keeps_the_cached_policy() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        f.dns.add_txt(TXT, "v=STSv1; id=def");
        let got = f.lookup().await;
        assert_cache_after_failure(&got, "abc", true);
        assert_eq!(
            got.report(&domain()).failure,
            Some(TlsResultType::StsPolicyFetchError)
        );
        let cached = f.engine.get(&domain()).await.unwrap().unwrap();
        assert_eq!(
            cached.id, "abc",
            "a failed fetch must not replace the policy"
        );
        assert!(cached.last_error.is_some());
    }

    #[tokio::test]
    async fn record_without_cache_and_failed_fetch_is_fetch_failed() {
        let f = fixture();
        f.dns.add_txt(TXT, "v=STSv1; id=1");
        let got = f.lookup().await;
        match &got {
            PolicyLookup::FetchFailed { domain: d, error } => {
                assert_eq!(d, &domain());
                assert!(matches!(error, StsError::Dns { .. }), "{error:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got.mode(), None);
        let report = got.report(&domain());
        assert_eq!(report.policy_type, ReportPolicyType::Sts);
        assert_eq!(report.failure, Some(TlsResultType::StsPolicyFetchError));
        assert!(f.engine.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_policy_no_longer_applies() {
        let f = fixture();
        f.seed("abc", "enforce", 3600).await;
        f.dns.add_txt(TXT, "v=STSv1; id=abc");
        assert_cache(&f.lookup().await, "abc");
        f.advance(3599);
        assert_cache(&f.lookup().await, "abc");
        f.advance(1);
        // Expired: the id matches but the fetch fails, nothing is in force.
        assert!(matches!(f.lookup().await, PolicyLookup::FetchFailed { .. }));
        f.dns.remove(TXT, "TXT");
        assert!(matches!(f.lookup().await, PolicyLookup::None(_)));
    }

    #[tokio::test]
    async fn operator_pin_wins_until_it_expires_then_unpin() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        f.dns.add_txt(TXT, "v=STSv1; id=abc");
        let now = f.engine.now();
        let err = f
            .engine
            .pin(&domain(), Mode::Enforce, Vec::new(), now + 60, "x")
            .await
            .unwrap_err();
        assert!(matches!(err, StsError::Invalid { .. }), "{err}");
        let err = f
            .engine
            .pin(&domain(), Mode::None, Vec::new(), now, "x")
            .await
            .unwrap_err();
        assert!(matches!(err, StsError::Invalid { .. }), "{err}");
        f.engine
            .pin(
                &domain(),
                Mode::None,
                Vec::new(),
                now + 60,
                "partner's certificate expired",
            )
            .await
            .unwrap();
        let got = f.lookup().await;
        match &got {
            PolicyLookup::Policy {
                policy,
                source: PolicySource::Pinned { reason, source },
            } => {
                assert_eq!(policy.mode, Mode::None);
                assert_eq!(policy.id, crate::PIN_ID);
                assert_eq!(reason, "partner's certificate expired");
                assert_eq!(source, &PinSource::Operator);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.engine.pins().await.unwrap().len(), 1);
        f.advance(60);
        assert_cache(&f.lookup().await, "abc");
        assert!(f.engine.unpin(&domain()).await.unwrap());
        assert!(!f.engine.unpin(&domain()).await.unwrap());
    }

    #[tokio::test]
    async fn file_pin_wins_over_dns_and_operator_pin_over_file_pin() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("example.test.txt"),
            "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n",
        )
        .unwrap();
        f.engine
            .set_file_pins(crate::load_pins_dir(dir.path(), f.engine.now()).unwrap());
        let got = f.lookup().await;
        assert_eq!(got.mode(), Some(Mode::Enforce));
        assert!(got.policy().unwrap().matches_mx("mx.example.test"));
        let now = f.engine.now();
        f.engine
            .pin(
                &domain(),
                Mode::Testing,
                vec![MxPattern::parse("*.example.test").unwrap()],
                now + 10,
                "test",
            )
            .await
            .unwrap();
        assert_eq!(f.lookup().await.mode(), Some(Mode::Testing));
        f.advance(10);
        assert_eq!(f.lookup().await.mode(), Some(Mode::Enforce));
    }

    #[tokio::test]
    async fn fetch_now_needs_a_record_and_leaves_the_cache_on_failure() {
        let f = fixture();
        let err = f.engine.fetch_now(&domain()).await.unwrap_err();
        assert!(matches!(err, StsError::NoRecord { .. }), "{err}");
        f.dns.set_temp_fail(TXT, true);
        let err = f.engine.fetch_now(&domain()).await.unwrap_err();
        assert!(matches!(err, StsError::Dns { .. }), "{err}");
        f.dns.set_temp_fail(TXT, false);
        f.seed("abc", "testing", 86_400).await;
        f.dns.add_txt(TXT, "v=STSv1; id=new");
        assert!(f.engine.fetch_now(&domain()).await.is_err());
        let cached = f.engine.get(&domain()).await.unwrap().unwrap();
        assert_eq!((cached.id.as_str(), cached.mode), ("abc", Mode::Testing));
        assert!(cached.last_error.is_some());
    }

    #[tokio::test]
    async fn evict_forgets_the_policy() {
        let f = fixture();
        f.seed("abc", "enforce", 86_400).await;
        assert!(f.engine.evict(&domain()).await.unwrap());
        assert!(matches!(f.lookup().await, PolicyLookup::None(_)));
        assert!(!f.engine.evict(&domain()).await.unwrap());
    }
}
