//! Proactive refresh (RFC 8461 §5.1, §10.2): cached policies are re-fetched
//! in the background before they expire, spread over time, so that a
//! domain's policy does not lapse because no mail went there for a while —
//! a lapsed policy is what a downgrade attacker waits for.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use portcullis_dns::Resolver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{CachedPolicy, PolicyEngine};

/// How long an expired entry stays in the cache (for `policy list`) before
/// the refresh loop purges it.
pub const EXPIRED_GRACE: u64 = 7 * 24 * 3600;

/// Knobs of the refresh loop.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// How often the loop looks for policies to refresh.
    pub interval: Duration,
    /// At most this many refreshes run at once.
    pub concurrency: usize,
    /// After a failed refresh, wait at least this long (shortened for
    /// short-lived policies) before the next attempt.
    pub retry_after: Duration,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        RefreshOptions {
            interval: Duration::from_secs(300),
            concurrency: 4,
            retry_after: Duration::from_secs(900),
        }
    }
}

/// When `policy`'s refresh becomes due (Unix seconds): when less than a
/// quarter of its `max_age` remains, minus a per-domain jitter of up to an
/// eighth of `max_age` so that policies fetched together are not refreshed
/// together.
pub fn refresh_at(policy: &CachedPolicy) -> u64 {
    let window = policy.max_age / 4;
    let spread = policy.max_age / 8;
    let jitter = if spread == 0 {
        0
    } else {
        let mut h = DefaultHasher::new();
        policy.domain.as_str().hash(&mut h);
        policy.fetched_at.hash(&mut h);
        h.finish() % (spread + 1)
    };
    policy
        .expires_at
        .saturating_sub(window)
        .saturating_sub(jitter)
}

/// True when `policy` should be refreshed at `now`: unexpired, past
/// [`refresh_at`], and not tried (and failed) within the retry delay.
pub fn refresh_due(policy: &CachedPolicy, now: u64, options: &RefreshOptions) -> bool {
    if policy.is_expired(now) || now < refresh_at(policy) {
        return false;
    }
    if policy.last_checked > policy.fetched_at {
        // A refresh already failed since the last good fetch: back off, by
        // less for short policies so that they get several attempts.
        let retry = options
            .retry_after
            .as_secs()
            .min(policy.max_age / 16)
            .max(30);
        return now >= policy.last_checked.saturating_add(retry);
    }
    true
}

/// One pass: refreshes every due policy (at most `options.concurrency` at
/// once) and purges long-expired entries; returns how many refreshes ran.
pub async fn refresh_pass<R: Resolver>(
    engine: &Arc<PolicyEngine<R>>,
    options: &RefreshOptions,
) -> usize {
    let now = engine.now();
    let policies = match engine.list().await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "MTA-STS refresh: cannot list the cache");
            return 0;
        }
    };
    let due: Vec<_> = policies
        .into_iter()
        .filter(|p| refresh_due(p, now, options))
        .map(|p| p.domain)
        .collect();
    let count = due.len();
    let mut tasks = JoinSet::new();
    for domain in due {
        while tasks.len() >= options.concurrency.max(1) {
            tasks.join_next().await;
        }
        let engine = Arc::clone(engine);
        tasks.spawn(async move {
            match engine.refresh(&domain).await {
                Ok(outcome) => {
                    tracing::debug!(%domain, expires_at = outcome.policy().expires_at, "MTA-STS policy refreshed")
                }
                Err(e) => tracing::warn!(%domain, error = %e, "MTA-STS policy refresh failed"),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    match engine.cache().purge_expired(now, EXPIRED_GRACE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "purged long-expired MTA-STS policies"),
        Err(e) => tracing::error!(error = %e, "MTA-STS refresh: cannot purge expired policies"),
    }
    count
}

/// The refresh loop with [`RefreshOptions::default`]; returns when
/// `shutdown` is cancelled.
pub async fn run_refresh<R: Resolver>(engine: Arc<PolicyEngine<R>>, shutdown: CancellationToken) {
    run_refresh_with(engine, RefreshOptions::default(), shutdown).await;
}

/// The refresh loop: every `options.interval` a [`refresh_pass`]; returns
/// when `shutdown` is cancelled (a pass in progress is abandoned: each
/// refresh either stored its policy or did not).
pub async fn run_refresh_with<R: Resolver>(
    engine: Arc<PolicyEngine<R>>,
    options: RefreshOptions,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(options.interval) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            n = refresh_pass(&engine, &options) => {
                if n > 0 {
                    tracing::debug!(refreshed = n, "MTA-STS refresh pass done");
                }
            }
        }
    }
    tracing::debug!("MTA-STS refresh loop stopped");
}

#[cfg(test)]
mod tests {
    use portcullis_types::Domain;

    use super::*;
    use crate::Policy;

    fn entry(domain: &str, fetched_at: u64, max_age: u64) -> CachedPolicy {
        let policy = Policy::parse(&format!(
            "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: {max_age}\n"
        ))
        .unwrap();
        CachedPolicy::new(
            Domain::parse(domain).unwrap(),
            "1".into(),
            policy,
            fetched_at,
        )
    }

    #[test]
    fn due_in_the_last_quarter_with_jitter() {
        let p = entry("a.test", 0, 800);
        let at = refresh_at(&p);
        // expires 800; window 200; jitter 0..=100.
        assert!((500..=600).contains(&at), "{at}");
        let o = RefreshOptions::default();
        assert!(!refresh_due(&p, at - 1, &o));
        assert!(refresh_due(&p, at, &o));
        assert!(refresh_due(&p, 799, &o));
        assert!(
            !refresh_due(&p, 800, &o),
            "expired policies are not refreshed"
        );
    }

    #[test]
    fn jitter_spreads_domains() {
        let ats: std::collections::HashSet<u64> = (0..20)
            .map(|i| refresh_at(&entry(&format!("d{i}.test"), 0, 86_400)))
            .collect();
        assert!(ats.len() > 10, "{ats:?}");
    }

    #[test]
    fn failed_refresh_backs_off() {
        let mut p = entry("a.test", 0, 86_400);
        let at = refresh_at(&p);
        p.last_checked = at;
        p.last_error = Some("HTTP 500".into());
        let o = RefreshOptions::default();
        assert!(!refresh_due(&p, at + 10, &o));
        assert!(refresh_due(&p, at + 900, &o));
    }
}
