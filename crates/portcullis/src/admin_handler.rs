//! The admin socket's requests, answered from the server state.

use crate::commands::format_rfc3339;
use crate::serve::ServerState;
use portcullis_admin::{
    ExplainHost, Handler, ListenerStatus, PolicyEntry, PolicyExplain, PolicyRefresh, PolicyShow,
    QueueDetail, QueueEntry, RecipientEntry, Request, Response, StatusReport, TlsrptEntry,
    TlsrptOutcome, TlsrptSendResult,
};
use portcullis_dns::Resolver;
use portcullis_policy::{
    CachedPolicy, Mode, MxPattern, NoPolicy, Pin, PinSource, PolicyLookup, RefreshOutcome, StsError,
};
use portcullis_queue::{QueueError, QueueRecord};
use portcullis_tls::TlsResultType;
use portcullis_tlsrpt::{Day, ReportInfo, SendOutcome, TlsRptError, build_report};
use portcullis_types::{Clock, Domain, QueueId, SystemClock};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Answers admin requests.
pub struct AdminHandler {
    state: Arc<ServerState>,
}

impl AdminHandler {
    /// A handler over the shared server state.
    pub fn new(state: Arc<ServerState>) -> AdminHandler {
        AdminHandler { state }
    }

    fn status(&self) -> StatusReport {
        let s = &self.state;
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: s.config.hostname.clone(),
            uptime_secs: s.started.elapsed().as_secs(),
            listeners: s
                .listeners
                .iter()
                .map(|l| ListenerStatus {
                    address: l.local_addr.to_string(),
                    role: l.role.as_str().into(),
                })
                .collect(),
            open_sessions: s.metrics.open_sessions(),
            queue_size: s.queue.len(),
            data_dir: s.config.data_dir.display().to_string(),
        }
    }
}

/// The `policy` requests.
impl AdminHandler {
    fn now(&self) -> u64 {
        self.state.policy.now()
    }

    /// The pin that wins for `domain` now: an active operator pin, else an
    /// active file pin (the engine's own order).
    fn active_pin(&self, domain: &Domain, now: u64) -> Result<Option<Pin>, Response> {
        Ok(self
            .state
            .policy
            .pins()
            .map_err(store_err)?
            .into_iter()
            .find(|p| &p.domain == domain && p.is_active(now)))
    }

    fn policy_list(&self) -> Result<Vec<PolicyEntry>, Response> {
        let now = self.now();
        let engine = &self.state.policy;
        let mut pins: HashMap<Domain, Pin> = HashMap::new();
        // Operator pins come first and win over file pins.
        for pin in engine.pins().map_err(store_err)? {
            if pin.is_active(now) && !pins.contains_key(&pin.domain) {
                pins.insert(pin.domain.clone(), pin);
            }
        }
        let cached: HashMap<Domain, CachedPolicy> = engine
            .list()
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

    fn policy_show(&self, domain: &str) -> Result<PolicyShow, Response> {
        let d = parse_domain(domain)?;
        let now = self.now();
        let pin = self.active_pin(&d, now)?;
        let cached = self.state.policy.get(&d).map_err(store_err)?;
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

    async fn policy_fetch(&self, domain: &str) -> Result<PolicyEntry, Response> {
        let d = parse_domain(domain)?;
        match self.state.policy.fetch_now(&d).await {
            Ok(c) => {
                let now = self.now();
                let pinned = self.active_pin(&d, now)?.is_some();
                Ok(cache_entry(&c, now, pinned))
            }
            Err(e) => Err(Response::error(self.fetch_failure(&d, &e))),
        }
    }

    /// A failed fetch or refresh: the TLS-RPT result type, the error, and
    /// what stays in force.
    fn fetch_failure(&self, d: &Domain, e: &StsError) -> String {
        let mut message = match result_type(e) {
            Some(t) => format!("{t}: {e}"),
            None => e.to_string(),
        };
        let now = self.now();
        if let Ok(Some(c)) = self.state.policy.get(d)
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

    async fn policy_refresh(&self, domain: Option<&str>) -> Result<Vec<PolicyRefresh>, Response> {
        let engine = &self.state.policy;
        match domain {
            Some(domain) => {
                let d = parse_domain(domain)?;
                match engine.refresh(&d).await {
                    Ok(outcome) => Ok(vec![self.refresh_item(&d, Ok(outcome))]),
                    Err(e) => Err(Response::error(format!(
                        "{d}: {}",
                        self.fetch_failure(&d, &e)
                    ))),
                }
            }
            None => {
                let all = engine.refresh_all().await.map_err(store_err)?;
                Ok(all
                    .into_iter()
                    .map(|(d, outcome)| self.refresh_item(&d, outcome))
                    .collect())
            }
        }
    }

    fn refresh_item(&self, d: &Domain, outcome: Result<RefreshOutcome, StsError>) -> PolicyRefresh {
        let now = self.now();
        let pinned = matches!(self.active_pin(d, now), Ok(Some(_)));
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

    async fn policy_pin(
        &self,
        domain: &str,
        mode: &str,
        mx: &[String],
        until: u64,
        reason: &str,
    ) -> Result<PolicyEntry, Response> {
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
            .state
            .policy
            .pin(&d, mode, mx, until, reason)
            .await
            .map_err(|e| Response::error(e.to_string()))?;
        Ok(pin_entry(&pin, now))
    }

    async fn policy_explain(&self, domain: &str) -> Result<PolicyExplain, Response> {
        let d = parse_domain(domain)?;
        let s = &self.state;
        let now = self.now();
        let mut notes: Vec<String> = Vec::new();
        // The policy in force, without fetching when something is cached.
        let policy: Option<PolicyEntry> = match self.active_pin(&d, now)? {
            Some(pin) => Some(pin_entry(&pin, now)),
            None => match s.policy.get(&d).map_err(store_err)? {
                Some(c) if !c.is_expired(now) => Some(cache_entry(&c, now, false)),
                _ => match s.policy.policy_for(&d).await {
                    PolicyLookup::Policy { policy, .. } => Some(cache_entry(&policy, now, false)),
                    PolicyLookup::FetchFailed { error, .. } => {
                        notes.push(format!(
                            "{d} publishes an MTA-STS record but its policy cannot be fetched ({}: {error}): delivery proceeds as without a policy",
                            TlsResultType::from(&error)
                        ));
                        None
                    }
                    PolicyLookup::None(NoPolicy::NoRecord(reason)) => {
                        notes.push(format!("no MTA-STS policy ({reason}): opportunistic TLS"));
                        None
                    }
                    PolicyLookup::None(NoPolicy::DnsTemporary(e)) => {
                        notes.push(format!(
                            "the MTA-STS record could not be looked up ({e}) and nothing is cached: opportunistic TLS for now"
                        ));
                        None
                    }
                    lookup @ PolicyLookup::Unavailable { .. } => {
                        // Unknown is not "none": delivery defers.
                        notes.push(format!(
                            "{}: delivery is deferred",
                            lookup.unavailable().unwrap_or_default()
                        ));
                        None
                    }
                    other => {
                        notes.push(format!("no MTA-STS policy ({other:?}): opportunistic TLS"));
                        None
                    }
                },
            },
        };
        let route = portcullis_delivery::plan::route_for(&s.config.routes, &d);
        let mode = match (&policy, route) {
            (Some(p), None) => p.mode.parse::<Mode>().ok(),
            _ => None,
        };
        if let Some(r) = route {
            notes.push(format!(
                "{d} is routed by [routes] to {}:{}: MTA-STS does not apply to a configured route; opportunistic TLS",
                r.next_hop.host, r.next_hop.port
            ));
        }
        let patterns: Vec<MxPattern> = policy
            .as_ref()
            .map(|p| {
                p.mx.iter()
                    .filter_map(|m| MxPattern::parse(m).ok())
                    .collect()
            })
            .unwrap_or_default();
        let allowed = |host: &str| patterns.iter().any(|p| p.matches(host));
        let mut preferences: HashMap<String, u16> = HashMap::new();
        if route.is_none()
            && let Ok(mx) = s.resolver.mx(d.as_str()).await
        {
            for m in mx {
                preferences.entry(m.exchange).or_insert(m.preference);
            }
        }
        let mut mx_hosts = Vec::new();
        match portcullis_delivery::plan::plan(
            &s.resolver,
            &s.config.routes,
            s.config.delivery.port,
            &d,
        )
        .await
        {
            Ok(hops) => {
                for hop in hops {
                    let (allowed_by_policy, tls_required) = match mode {
                        Some(Mode::Enforce) if allowed(&hop.name) => {
                            (true, format!("PKIX-valid TLS 1.2+ for {}", hop.name))
                        }
                        Some(Mode::Enforce) => (false, "not contacted".to_owned()),
                        Some(Mode::Testing) => (allowed(&hop.name), "opportunistic".to_owned()),
                        _ => (true, "opportunistic".to_owned()),
                    };
                    mx_hosts.push(ExplainHost {
                        preference: preferences.get(&hop.name).copied(),
                        port: hop.port,
                        addrs: hop.addrs.iter().map(ToString::to_string).collect(),
                        error: hop.error.clone(),
                        allowed_by_policy,
                        tls_required,
                        name: hop.name,
                    });
                }
            }
            Err(e) => notes.push(format!("no mail host to try now: {e}")),
        }
        match mode {
            Some(Mode::Enforce) if !mx_hosts.is_empty() && mx_hosts.iter().all(|h| !h.allowed_by_policy) => {
                notes.push(format!(
                    "enforce: no MX host of {d} matches the policy, so deliveries are deferred (never sent elsewhere or in clear)"
                ));
            }
            Some(Mode::Enforce) => notes.push(
                "enforce: only allowed hosts are contacted, each only over PKIX-valid TLS 1.2+ for its name; any other outcome defers the delivery, never a retry in clear".into(),
            ),
            Some(Mode::Testing) => notes.push(
                "testing: delivery is opportunistic; what enforce would refuse (hosts not allowed, TLS failures) is recorded for TLS-RPT".into(),
            ),
            Some(Mode::None) => notes.push(
                "mode none: the domain has withdrawn its policy; opportunistic TLS".into(),
            ),
            None => {}
        }
        Ok(PolicyExplain {
            domain: d.to_string(),
            policy,
            mx_hosts,
            note: notes.join("\n"),
        })
    }
}

/// Why `tlsrpt send` (and `show`, when it lacks the report's settings) is
/// refused with reporting off.
const TLSRPT_DISABLED: &str = "TLS reporting is disabled ([tlsrpt] enabled = false)";

/// The `tlsrpt` requests: from the sender when reporting is on, otherwise
/// straight from the recorder (sessions are recorded either way).
impl AdminHandler {
    /// The current UTC day, by the recorder's clock.
    fn today(&self) -> Day {
        Day::of(self.state.tlsrpt_recorder.clock().now())
    }

    fn tlsrpt_list(&self) -> Result<Vec<TlsrptEntry>, Response> {
        if let Some(sender) = &self.state.tlsrpt {
            return Ok(sender
                .list()
                .map_err(tlsrpt_err)?
                .into_iter()
                .map(|r| TlsrptEntry {
                    day: r.day,
                    domain: r.domain,
                    successful: r.successful,
                    failed: r.failed,
                    destinations: r.destinations,
                    state: r.state.as_str().to_owned(),
                    last_error: r.last_error,
                })
                .collect());
        }
        let recorder = &self.state.tlsrpt_recorder;
        let today = self.today();
        let mut reports: Vec<(Day, String)> = recorder
            .reports()
            .map_err(tlsrpt_err)?
            .into_iter()
            .collect();
        reports.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out = Vec::new();
        for (day, domain) in reports {
            let aggs = recorder.aggregates(day, &domain).map_err(tlsrpt_err)?;
            out.push(TlsrptEntry {
                day: day.to_string(),
                successful: aggs.iter().map(|a| a.successful).sum(),
                failed: aggs.iter().map(|a| a.failed()).sum(),
                domain,
                destinations: Vec::new(),
                state: if day >= today {
                    "collecting"
                } else {
                    "disabled"
                }
                .to_owned(),
                last_error: None,
            });
        }
        Ok(out)
    }

    fn tlsrpt_show(&self, domain: &str, day: Option<&str>) -> Result<serde_json::Value, Response> {
        let day = day
            .map(|d| d.parse::<Day>().map_err(|e| Response::error(e.to_string())))
            .transpose()?;
        if let Some(sender) = &self.state.tlsrpt {
            return sender.show(domain, day).map_err(tlsrpt_err);
        }
        // Reporting is off: the report as it would be sent, if the settings
        // naming the reporter are there.
        let t = &self.state.config.tlsrpt;
        let (Some(organization), Some(contact), Some(submitter)) =
            (&t.organization, &t.contact, &t.submitter)
        else {
            return Err(Response::error(format!(
                "{TLSRPT_DISABLED}, and organization, contact and submitter are not all set: no report to show"
            )));
        };
        let info = ReportInfo {
            organization: organization.clone(),
            contact: contact.clone(),
            submitter: submitter.clone(),
        };
        let domain = parse_domain(domain)?.to_string();
        let recorder = &self.state.tlsrpt_recorder;
        let day = match day {
            Some(d) => d,
            None => recorder
                .reports()
                .map_err(tlsrpt_err)?
                .into_iter()
                .filter(|(_, d)| *d == domain)
                .map(|(day, _)| day)
                .max()
                .ok_or_else(|| {
                    tlsrpt_err(TlsRptError::NoData {
                        domain: domain.clone(),
                        day: "any day".to_owned(),
                    })
                })?,
        };
        let aggs = recorder.aggregates(day, &domain).map_err(tlsrpt_err)?;
        let report_id = info.new_report_id(day, &domain);
        build_report(&info, day, &domain, &report_id, &aggs)
            .map(|r| r.json)
            .map_err(tlsrpt_err)
    }

    async fn tlsrpt_send(&self) -> Result<TlsrptSendResult, Response> {
        let Some(sender) = &self.state.tlsrpt else {
            return Err(Response::error(format!(
                "{TLSRPT_DISABLED}: nothing is sent"
            )));
        };
        let outcomes = sender.send_now().await;
        for o in &outcomes {
            self.state.tlsrpt_metrics.count(o.transport(), o.kind());
        }
        let today = self.today();
        let collecting = self
            .state
            .tlsrpt_recorder
            .reports()
            .map_err(tlsrpt_err)?
            .iter()
            .filter(|(day, _)| *day >= today)
            .count() as u64;
        Ok(TlsrptSendResult {
            outcomes: outcomes.iter().map(outcome).collect(),
            collecting,
        })
    }
}

fn tlsrpt_err(e: TlsRptError) -> Response {
    Response::error(e.to_string())
}

/// One send outcome as the CLI shows it.
fn outcome(o: &SendOutcome) -> TlsrptOutcome {
    let (day, domain, destination, detail, next_try) = match o {
        SendOutcome::Sent {
            day,
            domain,
            destination,
            detail,
        } => (
            day,
            domain,
            Some(destination.clone()),
            Some(detail.clone()),
            None,
        ),
        SendOutcome::Retry {
            day,
            domain,
            destination,
            error,
            next_try,
        } => (
            day,
            domain,
            destination.clone(),
            Some(error.clone()),
            Some(*next_try),
        ),
        SendOutcome::GaveUp {
            day,
            domain,
            destination,
            error,
        } => (day, domain, destination.clone(), Some(error.clone()), None),
        SendOutcome::NoDestination {
            day,
            domain,
            reason,
        } => (day, domain, None, Some(reason.clone()), None),
    };
    TlsrptOutcome {
        day: day.clone(),
        domain: domain.clone(),
        destination,
        transport: o.transport().to_owned(),
        outcome: o.kind().to_owned(),
        detail,
        next_try,
    }
}

fn parse_domain(domain: &str) -> Result<Domain, Response> {
    Domain::parse(domain).map_err(|e| Response::error(format!("invalid domain {domain:?}: {e}")))
}

fn store_err(e: StsError) -> Response {
    Response::error(format!("MTA-STS cache: {e}"))
}

/// The TLS-RPT result type to show with a fetch failure; none for failures
/// that are not the remote domain's (no record, local store or setup).
fn result_type(e: &StsError) -> Option<TlsResultType> {
    match e {
        StsError::NoRecord { .. }
        | StsError::Store(_)
        | StsError::Setup { .. }
        | StsError::InvalidDomain { .. } => None,
        _ => Some(TlsResultType::from(e)),
    }
}

fn cache_entry(c: &CachedPolicy, now: u64, overridden_by_pin: bool) -> PolicyEntry {
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

fn pin_entry(p: &Pin, now: u64) -> PolicyEntry {
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

fn entry(r: &QueueRecord) -> QueueEntry {
    QueueEntry {
        id: r.envelope.id.to_string(),
        sender: format!("<{}>", r.envelope.sender),
        recipients: r
            .envelope
            .recipients
            .iter()
            .zip(&r.recipients)
            .map(|(rcpt, st)| RecipientEntry {
                address: rcpt.address.to_string(),
                state: st.status.as_str().into(),
            })
            .collect(),
        size: r.envelope.size,
        received_at: r.envelope.received_at,
        attempts: r.attempts,
        next_attempt: Some(r.next_attempt),
        last_error: r.last_error.clone(),
    }
}

fn parse_id(id: &str) -> Result<QueueId, Response> {
    id.parse::<QueueId>().map_err(Response::error)
}

/// The header section of a stored message (up to the first empty line).
fn headers_of(message: &[u8]) -> String {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    String::from_utf8_lossy(&message[..end]).into_owned()
}

impl Handler for AdminHandler {
    async fn handle(&self, req: Request) -> Response {
        let queue = &self.state.queue;
        let result: Result<Response, Response> = async {
            Ok(match req {
                Request::Status => Response::ok(&self.status()),
                Request::QueueList => {
                    let list = queue.list().map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(&list.iter().map(entry).collect::<Vec<_>>())
                }
                Request::QueueShow { id } => {
                    let id = parse_id(&id)?;
                    let record = queue.get(id).map_err(|e| Response::error(e.to_string()))?;
                    // A record without its body is shown (that is how the
                    // operator finds it), with the inconsistency named.
                    let (message, body_error) = match queue.message(id) {
                        Ok(m) => (m, None),
                        Err(e @ QueueError::BodyMissing { .. }) => (Vec::new(), Some(e.to_string())),
                        Err(e) => return Err(Response::error(e.to_string())),
                    };
                    let mut envelope = serde_json::to_value(&record.envelope).unwrap_or_default();
                    // The attempts kept (the first and the last ones) with
                    // their per-recipient outcomes and replies.
                    if let Some(obj) = envelope.as_object_mut() {
                        obj.insert(
                            "history".into(),
                            serde_json::to_value(&record.history).unwrap_or_default(),
                        );
                        if record.attempts_omitted() > 0 {
                            obj.insert(
                                "history_note".into(),
                                format!(
                                    "{} of {} attempts shown: the first {} and the last {}",
                                    record.history.len(),
                                    record.attempts,
                                    portcullis_queue::HISTORY_FIRST,
                                    portcullis_queue::HISTORY_LAST
                                )
                                .into(),
                            );
                        }
                        obj.insert(
                            "recipient_states".into(),
                            serde_json::to_value(&record.recipients).unwrap_or_default(),
                        );
                        if let Some(e) = body_error {
                            obj.insert("body_error".into(), e.into());
                        }
                    }
                    Response::ok(&QueueDetail {
                        entry: entry(&record),
                        envelope,
                        headers: headers_of(&message),
                    })
                }
                Request::QueueRetry { id } => {
                    let id = id.as_deref().map(parse_id).transpose()?;
                    let n = queue
                        .retry_now(id, SystemClock.unix_secs())
                        .await
                        .map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(&serde_json::json!({ "scheduled": n }))
                }
                Request::QueueDelete { id, bounce } => {
                    let id = parse_id(&id)?;
                    let s = &self.state;
                    portcullis_queue::scheduler::delete(
                        queue,
                        &s.scheduler,
                        &SystemClock,
                        &s.queue_metrics,
                        id,
                        bounce,
                    )
                    .await
                    .map_err(|e| Response::error(e.to_string()))?;
                    Response::ok(
                        &serde_json::json!({ "deleted": id.to_string(), "bounced": bounce }),
                    )
                }
                Request::PolicyList => Response::ok(&self.policy_list()?),
                Request::PolicyShow { domain } => Response::ok(&self.policy_show(&domain)?),
                Request::PolicyFetch { domain } => Response::ok(&self.policy_fetch(&domain).await?),
                Request::PolicyRefresh { domain } => {
                    Response::ok(&self.policy_refresh(domain.as_deref()).await?)
                }
                Request::PolicyEvict { domain } => {
                    let d = parse_domain(&domain)?;
                    if !self.state.policy.evict(&d).await.map_err(store_err)? {
                        return Err(Response::error(format!(
                            "{d}: no cached MTA-STS policy to evict"
                        )));
                    }
                    Response::ok(&serde_json::json!({ "evicted": d.to_string() }))
                }
                Request::PolicyExplain { domain } => {
                    Response::ok(&self.policy_explain(&domain).await?)
                }
                Request::PolicyPin {
                    domain,
                    mode,
                    mx,
                    until,
                    reason,
                } => Response::ok(&self.policy_pin(&domain, &mode, &mx, until, &reason).await?),
                Request::PolicyUnpin { domain } => {
                    let d = parse_domain(&domain)?;
                    if !self.state.policy.unpin(&d).await.map_err(store_err)? {
                        let file = self
                            .state
                            .policy
                            .pins()
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
                    Response::ok(&serde_json::json!({ "unpinned": d.to_string() }))
                }
                Request::TlsrptList => Response::ok(&self.tlsrpt_list()?),
                Request::TlsrptShow { domain, day } => {
                    Response::ok(&self.tlsrpt_show(&domain, day.as_deref())?)
                }
                Request::TlsrptSend => Response::ok(&self.tlsrpt_send().await?),
            })
        }
        .await;
        result.unwrap_or_else(|e| e)
    }
}
