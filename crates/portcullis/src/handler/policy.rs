//! `policy list|show|fetch|refresh|evict|pin|unpin`: the MTA-STS cache and
//! pins.

use super::refused::{Refused, parse_domain};
use crate::dates::format_rfc3339;
use crate::state::PolicyAccess;
use portcullis_admin::{
    PolicyEntry, PolicyEvicted, PolicyRefresh, PolicyShow, PolicyUnpinned, Response,
};
use portcullis_policy::{CachedPolicy, Mode, MxPattern, Pin, PinSource, RefreshOutcome, StsError};
use portcullis_tls::TlsResultType;
use portcullis_types::Domain;
use std::collections::{BTreeSet, HashMap};

impl PolicyAccess {
    pub(super) fn now(&self) -> u64 {
        self.engine.now()
    }

    /// The pin that wins for `domain` now: an active operator pin, else an
    /// active file pin (the engine's own order).
    pub(super) async fn active_pin(
        &self,
        domain: &Domain,
        now: u64,
    ) -> Result<Option<Pin>, Refused> {
        Ok(self
            .engine
            .pins()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|p| &p.domain == domain && p.is_active(now)))
    }

    pub(super) async fn list(&self) -> Result<Vec<PolicyEntry>, Refused> {
        let now = self.now();
        let engine = &self.engine;
        let mut pins: HashMap<Domain, Pin> = HashMap::new();
        // Operator pins come first and win over file pins.
        for pin in engine.pins().await.map_err(store_err)? {
            if pin.is_active(now) && !pins.contains_key(&pin.domain) {
                pins.insert(pin.domain.clone(), pin);
            }
        }
        let cached: HashMap<Domain, CachedPolicy> = engine
            .list()
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|c| (c.domain.clone(), c))
            .collect();
        let domains: BTreeSet<&Domain> = pins.keys().chain(cached.keys()).collect();
        let mut out = Vec::new();
        for d in domains {
            let pin = pins.get(d);
            if let Some(p) = pin {
                out.push(pin_entry(p, now));
            }
            if let Some(c) = cached.get(d) {
                out.push(cache_entry(c, now, pin.is_some()));
            }
        }
        Ok(out)
    }

    pub(super) async fn show(&self, domain: &str) -> Result<PolicyShow, Refused> {
        let d = parse_domain(domain)?;
        let now = self.now();
        let pin = self.active_pin(&d, now).await?;
        let cached = self.engine.get(&d).await.map_err(store_err)?;
        if pin.is_none() && cached.is_none() {
            return Err(Response::error(format!(
                "{d}: no cached MTA-STS policy and no pin (`portcullis policy fetch {d}` fetches it)"
            )));
        }
        Ok(PolicyShow {
            domain: d.to_string(),
            cached: cached.map(|c| cache_entry(&c, now, pin.is_some())),
            pin: pin.map(|p| pin_entry(&p, now)),
        })
    }

    pub(super) async fn fetch(&self, domain: &str) -> Result<PolicyEntry, Refused> {
        let d = parse_domain(domain)?;
        match self.engine.fetch_now(&d).await {
            Ok(c) => {
                let now = self.now();
                let pinned = self.active_pin(&d, now).await?.is_some();
                Ok(cache_entry(&c, now, pinned))
            }
            Err(e) => Err(Response::error(self.fetch_failure(&d, &e).await)),
        }
    }

    /// A failed fetch or refresh: the TLS-RPT result type, the error, and
    /// what stays in force.
    async fn fetch_failure(&self, d: &Domain, e: &StsError) -> String {
        let mut message = match result_type(e) {
            Some(t) => format!("{t}: {e}"),
            None => e.to_string(),
        };
        let now = self.now();
        if let Ok(Some(c)) = self.engine.get(d).await
            && !c.is_expired(now)
        {
            message.push_str(&format!(
                "; the cached policy (mode {}, id {}) stays in force until {}",
                c.mode,
                c.id,
                format_rfc3339(c.expires_at)
            ));
        }
        message
    }

    pub(super) async fn refresh(
        &self,
        domain: Option<&str>,
    ) -> Result<Vec<PolicyRefresh>, Refused> {
        let engine = &self.engine;
        match domain {
            Some(domain) => {
                let d = parse_domain(domain)?;
                match engine.refresh(&d).await {
                    Ok(outcome) => Ok(vec![self.refresh_item(&d, Ok(outcome)).await]),
                    Err(e) => Err(Response::error(format!(
                        "{d}: {}",
                        self.fetch_failure(&d, &e).await
                    ))),
                }
            }
            None => {
                let all = engine.refresh_all().await.map_err(store_err)?;
                let mut out = Vec::with_capacity(all.len());
                for (d, outcome) in all {
                    out.push(self.refresh_item(&d, outcome).await);
                }
                Ok(out)
            }
        }
    }

    async fn refresh_item(
        &self,
        d: &Domain,
        outcome: Result<RefreshOutcome, StsError>,
    ) -> PolicyRefresh {
        let now = self.now();
        let pinned = matches!(self.active_pin(d, now).await, Ok(Some(_)));
        match outcome {
            Ok(RefreshOutcome::Unchanged(p)) => PolicyRefresh {
                domain: d.to_string(),
                outcome: "unchanged".into(),
                policy: Some(cache_entry(&p, now, pinned)),
                diff: None,
                error: None,
                result_type: None,
            },
            Ok(RefreshOutcome::Replaced { new, diff, .. }) => PolicyRefresh {
                domain: d.to_string(),
                outcome: "replaced".into(),
                policy: Some(cache_entry(&new, now, pinned)),
                diff: Some(diff),
                error: None,
                result_type: None,
            },
            Err(e) => PolicyRefresh {
                domain: d.to_string(),
                outcome: "failed".into(),
                policy: None,
                diff: None,
                error: Some(e.to_string()),
                result_type: result_type(&e).map(|t| t.as_str().to_owned()),
            },
        }
    }

    pub(super) async fn pin(
        &self,
        domain: &str,
        mode: &str,
        mx: &[String],
        until: u64,
        reason: &str,
    ) -> Result<PolicyEntry, Refused> {
        let d = parse_domain(domain)?;
        let mode: Mode = mode
            .parse()
            .map_err(|e: StsError| Response::error(format!("--mode: {e}")))?;
        let mx = mx
            .iter()
            .map(|m| MxPattern::parse(m).map_err(|e| Response::error(format!("--mx {m:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Response::error("a pin needs a --reason"));
        }
        let now = self.now();
        if until <= now {
            return Err(Response::error(format!(
                "--until {} is not in the future (now {})",
                format_rfc3339(until),
                format_rfc3339(now)
            )));
        }
        let pin = self
            .engine
            .pin(&d, mode, mx, until, reason)
            .await
            .map_err(|e| Response::error(e.to_string()))?;
        Ok(pin_entry(&pin, now))
    }

    /// Forgets a domain's cached policy.
    pub(super) async fn evict(&self, domain: &str) -> Result<PolicyEvicted, Refused> {
        let d = parse_domain(domain)?;
        if !self.engine.evict(&d).await.map_err(store_err)? {
            return Err(Response::error(format!(
                "{d}: no cached MTA-STS policy to evict"
            )));
        }
        Ok(PolicyEvicted {
            evicted: d.to_string(),
        })
    }

    /// Removes a domain's operator pin (a file pin stays: it names its
    /// file).
    pub(super) async fn unpin(&self, domain: &str) -> Result<PolicyUnpinned, Refused> {
        let d = parse_domain(domain)?;
        if !self.engine.unpin(&d).await.map_err(store_err)? {
            let file = self
                .engine
                .pins()
                .await
                .map_err(store_err)?
                .into_iter()
                .find_map(|p| match p.source {
                    PinSource::File(path) if p.domain == d => Some(path),
                    _ => None,
                });
            return Err(Response::error(match file {
                Some(path) => format!(
                    "{d} has no operator pin; its pin comes from {} (remove the file and restart to drop it)",
                    path.display()
                ),
                None => format!("{d} has no operator pin"),
            }));
        }
        Ok(PolicyUnpinned {
            unpinned: d.to_string(),
        })
    }
}

pub(super) fn store_err(e: StsError) -> Refused {
    Response::error(format!("MTA-STS cache: {e}"))
}

/// The TLS-RPT result type to show with a fetch failure; none for failures
/// that are not the remote domain's (no record, local store or setup).
pub(super) fn result_type(e: &StsError) -> Option<TlsResultType> {
    match e {
        StsError::NoRecord { .. }
        | StsError::Store(_)
        | StsError::Setup { .. }
        | StsError::InvalidDomain { .. } => None,
        _ => Some(TlsResultType::from(e)),
    }
}

pub(super) fn cache_entry(c: &CachedPolicy, now: u64, overridden_by_pin: bool) -> PolicyEntry {
    let expired = c.is_expired(now);
    PolicyEntry {
        domain: c.domain.to_string(),
        source: "cache".into(),
        mode: c.mode.as_str().into(),
        id: c.id.clone(),
        mx: c.mx.iter().map(ToString::to_string).collect(),
        max_age: c.max_age,
        fetched_at: c.fetched_at,
        expires_at: Some(c.expires_at),
        expired,
        in_force: !expired && !overridden_by_pin,
        last_error: c.last_error.clone(),
        last_checked: Some(c.last_checked),
        pinned: false,
        pin_reason: None,
        pin_until: None,
        pin_file: None,
        text: c.text.clone(),
    }
}

pub(super) fn pin_entry(p: &Pin, now: u64) -> PolicyEntry {
    let c = p.to_cached();
    let (source, file) = match &p.source {
        PinSource::Operator => ("operator pin", None),
        PinSource::File(path) => ("file pin", Some(path.display().to_string())),
    };
    PolicyEntry {
        domain: p.domain.to_string(),
        source: source.into(),
        mode: p.mode.as_str().into(),
        id: c.id,
        mx: p.mx.iter().map(ToString::to_string).collect(),
        max_age: c.max_age,
        fetched_at: p.created_at,
        expires_at: p.until,
        expired: !p.is_active(now),
        in_force: p.is_active(now),
        last_error: None,
        last_checked: None,
        pinned: true,
        pin_reason: Some(p.reason.clone()),
        pin_until: p.until,
        pin_file: file,
        text: c.text,
    }
}
