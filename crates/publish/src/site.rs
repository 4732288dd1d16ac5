//! What the `mta-sts` listeners serve: the policy of each accepted domain
//! under `[publish]`, with the domain's MX host names from DNS when
//! `[publish] mx` is absent.
//!
//! The MX names are cached: looked up the first time a domain is asked
//! for, then refreshed every [`REFRESH`] by [`Site::run_refresh`]. A failed
//! lookup keeps the last good answer, so a DNS outage never withdraws a
//! policy senders rely on; only an answer that says "no MX" replaces it.
//! A reload ([`Site::update`]) swaps the settings and the domains at once.

use crate::policy::{OwnPolicy, own_policy};
use portcullis_config::Publish;
use portcullis_dns::Resolver;
use portcullis_types::Domain;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often a good MX answer is looked up again.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// How soon a domain without any good answer yet is tried again.
const RETRY: Duration = Duration::from_secs(30);

/// What the site answers for a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The host is `mta-sts.<d>` for an accepted domain `d`: its policy.
    Policy(OwnPolicy),
    /// Not one of our `mta-sts.<domain>` hosts.
    NotOurs,
    /// One of ours, but no policy can be made now (why, for the log).
    Unavailable {
        /// The accepted domain.
        domain: String,
        /// Why, e.g. no MX host known yet.
        reason: String,
    },
}

/// The settings in force: `[publish]` and the accepted domains
/// (lower-case, without trailing dot).
#[derive(Debug)]
struct Settings {
    publish: Publish,
    domains: Vec<String>,
}

/// One domain's cached MX host names.
#[derive(Debug, Clone)]
struct MxEntry {
    /// The last good answer (`Some(empty)`: DNS says there is no MX);
    /// `None`: no good answer yet.
    names: Option<Vec<String>>,
    /// When it was last looked up, good or not.
    checked: Instant,
}

/// The policies the `mta-sts` listeners serve, shared by all of them and
/// by the reloader.
pub struct Site<R> {
    resolver: R,
    settings: RwLock<Arc<Settings>>,
    mx: Mutex<HashMap<String, MxEntry>>,
}

impl<R: Resolver> Site<R> {
    /// A site serving `domains` under `publish`, looking MX hosts up
    /// through `resolver`.
    pub fn new(resolver: R, publish: Publish, domains: &[Domain]) -> Arc<Site<R>> {
        Arc::new(Site {
            resolver,
            settings: RwLock::new(Arc::new(settings(publish, domains))),
            mx: Mutex::new(HashMap::new()),
        })
    }

    /// Puts a reloaded `[publish]` and accepted domains in force; the
    /// next request sees them. Cached MX names of domains still accepted
    /// are kept.
    pub fn update(&self, publish: Publish, domains: &[Domain]) {
        let new = Arc::new(settings(publish, domains));
        self.lock_mx().retain(|d, _| new.domains.contains(d));
        match self.settings.write() {
            Ok(mut s) => *s = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    fn settings(&self) -> Arc<Settings> {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn lock_mx(&self) -> std::sync::MutexGuard<'_, HashMap<String, MxEntry>> {
        self.mx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The accepted domain `d` when `host` (from the `Host` header: any
    /// case, an optional trailing dot, an optional `:port`) is
    /// `mta-sts.<d>`.
    pub fn domain_for_host(&self, host: &str) -> Option<String> {
        let name = host_name(host)?;
        let domain = name.strip_prefix("mta-sts.")?;
        self.settings()
            .domains
            .iter()
            .find(|d| d.as_str() == domain)
            .cloned()
    }

    /// The policy for `host` (see [`Site::domain_for_host`]): made from
    /// `[publish]` and, without `[publish] mx`, the domain's cached MX
    /// names (looked up now when the domain has never been looked up).
    pub async fn policy_for_host(&self, host: &str) -> Lookup {
        let Some(domain) = self.domain_for_host(host) else {
            return Lookup::NotOurs;
        };
        let settings = self.settings();
        let names = if settings.publish.mx.is_some() {
            Vec::new()
        } else {
            let cached = self.lock_mx().get(&domain).cloned();
            let entry = match cached {
                Some(e) => e,
                None => self.look_up(&domain).await,
            };
            match entry.names {
                Some(names) => names,
                None => {
                    return Lookup::Unavailable {
                        reason: format!("{domain}: no MX answer from DNS yet"),
                        domain,
                    };
                }
            }
        };
        match own_policy(&settings.publish, &domain, &names) {
            Ok(p) => Lookup::Policy(p),
            Err(reason) => Lookup::Unavailable { domain, reason },
        }
    }

    /// Looks up `domain`'s MX names and records the answer: a good one
    /// (names, or "no MX") replaces the entry, a failure keeps the last
    /// good names. Returns the entry now in force.
    async fn look_up(&self, domain: &str) -> MxEntry {
        let answer = self.resolver.mx(domain).await;
        let mut mx = self.lock_mx();
        let last = mx.get(domain).and_then(|e| e.names.clone());
        let names = match answer {
            Ok(records) => Some(
                records
                    .into_iter()
                    .map(|r| r.exchange)
                    // RFC 7505: a null MX takes no mail; it adds no name.
                    .filter(|name| !name.is_empty())
                    .collect(),
            ),
            Err(e) if e.is_not_found() => {
                debug!(domain, error = %e, "mta-sts: our domain has no MX");
                Some(Vec::new())
            }
            Err(e) => {
                warn!(domain, error = %e, kept = last.is_some(), "mta-sts: MX lookup failed; keeping the last answer");
                last
            }
        };
        let entry = MxEntry {
            names,
            checked: Instant::now(),
        };
        // Only domains accepted now are cached, so the map stays bounded
        // by the config even while a reload races a lookup.
        if self.settings().domains.iter().any(|d| d == domain) {
            mx.insert(domain.to_string(), entry.clone());
        }
        entry
    }

    /// Looks up every accepted domain whose answer is due: a good one
    /// older than [`REFRESH`], a missing one after [`RETRY`]. Nothing is
    /// looked up when `[publish] mx` names the hosts.
    pub async fn refresh_due(&self) {
        let settings = self.settings();
        if settings.publish.mx.is_some() {
            return;
        }
        let now = Instant::now();
        let due: Vec<String> = {
            let mx = self.lock_mx();
            settings
                .domains
                .iter()
                .filter(|d| match mx.get(*d) {
                    None => true,
                    Some(e) if e.names.is_some() => now.duration_since(e.checked) >= REFRESH,
                    Some(e) => now.duration_since(e.checked) >= RETRY,
                })
                .cloned()
                .collect()
        };
        for domain in due {
            self.look_up(&domain).await;
        }
    }

    /// Refreshes the MX names at once, then every [`RETRY`] (each domain
    /// when it is due), until `shutdown`.
    pub async fn run_refresh(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.refresh_due() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

fn settings(publish: Publish, domains: &[Domain]) -> Settings {
    Settings {
        publish,
        domains: domains
            .iter()
            .map(|d| d.as_str().trim_end_matches('.').to_ascii_lowercase())
            .collect(),
    }
}

/// The host name of a `Host` header value: the port and a trailing dot
/// dropped, lower-cased; `None` for an IP literal in brackets or an empty
/// name.
pub fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
