//! [`RouteProbe`]: asks a domain's route (`[routes]`, the internal mail
//! store) whether a recipient exists, so the screen can refuse an unknown
//! one at RCPT instead of bouncing it later (no backscatter).
//!
//! The route is the one delivery would use now: the [`Planner`]'s live
//! destinations (a reload's routes apply to the next probe) through the
//! same [`decide`](crate::plan::decide), and the host is spoken to with
//! the same TLS decision and the same client as delivery. A probe is
//! `MAIL FROM:<>` (RFC 5321 §4.5.5: nothing can bounce), `RCPT TO`, `RSET`
//! on a pooled connection: at most [`ProbeSettings::per_route`]
//! connections (and probes) at once per route; more callers wait for a
//! slot up to [`ProbeSettings::wait`]; connections idle longer than
//! [`ProbeSettings::idle`], or after any error, are closed.
//!
//! Only 2xx to RCPT means "exists" and only 5xx means "unknown": a 4xx, a
//! refused MAIL, a timeout or an unreachable route says nothing
//! ([`ProbeAnswer::Unreachable`]), so a failing route never makes us
//! refuse mail permanently.

mod dialogue;
mod pool;

use crate::client::{SessionError, Timeouts};
use crate::connect::Connector;
use crate::execute::{server_name, tls_decision};
use crate::plan::{Outcome, PlannedHost, Planner, TlsRequirement, decide};
use dialogue::ProbeConn;
use pool::RoutePool;
use portcullis_dns::Resolver;
use portcullis_screen::BoxFuture;
use portcullis_screen::recipients::{ProbeAnswer, RecipientProbe};
use portcullis_tls::ClientTls;
use portcullis_types::{Address, Domain, Reply};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::debug;

/// How probes use a route. The defaults suit an RCPT that waits for the
/// answer: a few seconds per step, not RFC 5321's minutes for delivery.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Connections (and probes) at once per route (default 4).
    pub per_route: usize,
    /// How long a probe waits for a free slot before it is
    /// [`ProbeAnswer::Unreachable`] (default 10 s).
    pub wait: Duration,
    /// An idle connection is closed after this long (default 45 s).
    pub idle: Duration,
    /// Per-stage timeouts of the route's session (default 10 s each, QUIT
    /// 2 s).
    pub timeouts: Timeouts,
    /// Opening the TCP connection (default 10 s).
    pub connect: Duration,
    /// The whole probe, waiting included (default 30 s).
    pub deadline: Duration,
}

impl Default for ProbeSettings {
    fn default() -> ProbeSettings {
        let step = Duration::from_secs(10);
        ProbeSettings {
            per_route: 4,
            wait: step,
            idle: Duration::from_secs(45),
            timeouts: Timeouts {
                quit: Duration::from_secs(2),
                ..Timeouts::uniform(step)
            },
            connect: step,
            deadline: Duration::from_secs(30),
        }
    }
}

/// The recipient probe of `[recipients] verify = "route"`, on delivery's
/// planner, connector, TLS and client.
pub struct RouteProbe<R, C> {
    planner: Planner<R>,
    connector: C,
    hostname: String,
    tls: ClientTls,
    settings: ProbeSettings,
    /// One pool per next hop (host, port): as many as routes configured
    /// over the server's life.
    pools: Mutex<HashMap<(String, u16), Arc<RoutePool>>>,
}

impl<R: Resolver, C: Connector> RouteProbe<R, C> {
    /// A probe with the default [`ProbeSettings`] that plans with
    /// `planner` (share the deliverer's, so reloaded routes apply),
    /// connects with `connector`, says EHLO as `hostname` and takes TLS
    /// configurations from `tls`.
    pub fn new(
        planner: Planner<R>,
        connector: C,
        hostname: impl Into<String>,
        tls: ClientTls,
    ) -> RouteProbe<R, C> {
        RouteProbe {
            planner,
            connector,
            hostname: hostname.into(),
            tls,
            settings: ProbeSettings::default(),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The same probe with `settings`.
    pub fn with_settings(mut self, settings: ProbeSettings) -> RouteProbe<R, C> {
        self.settings = settings;
        self
    }

    /// The route's answer for `recipient`, within
    /// [`ProbeSettings::deadline`].
    pub async fn ask(&self, recipient: &Address) -> ProbeAnswer {
        let deadline = self.settings.deadline;
        let answer = match tokio::time::timeout(deadline, self.ask_route(recipient)).await {
            Ok(answer) => answer,
            Err(_) => unreachable(format!("no answer within {deadline:?}")),
        };
        debug!(%recipient, ?answer, "recipient probe");
        answer
    }

    async fn ask_route(&self, recipient: &Address) -> ProbeAnswer {
        let (host, tls) = match self.target(&recipient.domain).await {
            Ok(Some(target)) => target,
            Ok(None) => return ProbeAnswer::NoRoute,
            Err(reason) => return unreachable(reason),
        };
        let pool = self.pool(&host);
        let Some(_slot) = pool.slot(self.settings.wait).await else {
            return unreachable(format!(
                "{}: all {} probe connections busy",
                host.name, self.settings.per_route
            ));
        };
        let rcpt = recipient.to_string();
        let t = &self.settings.timeouts;
        if let Some(mut conn) = pool.take() {
            match conn.ask(&rcpt, t).await {
                Ok((reply, reusable)) => return keep(&pool, conn, reusable, answer(reply)),
                // The route may have closed it while idle: one more try on
                // a fresh connection.
                Err(e) => debug!(route = %host.name, error = %e, "pooled probe connection failed"),
            }
        }
        let mut conn = match self.connect(&host, &tls).await {
            Ok(conn) => conn,
            Err(reason) => return unreachable(reason),
        };
        match conn.ask(&rcpt, t).await {
            Ok((reply, reusable)) => keep(&pool, conn, reusable, answer(reply)),
            Err(e) => unreachable(failure(&host.name, &e)),
        }
    }

    /// The route's host and its TLS, as delivery would plan them now;
    /// `None` without a route.
    async fn target(
        &self,
        domain: &Domain,
    ) -> Result<Option<(PlannedHost, TlsRequirement)>, String> {
        let mut facts = self.planner.facts(domain, false);
        if facts.route.is_none() {
            return Ok(None);
        }
        self.planner.look_up_dns(&mut facts).await;
        let plan = decide(&facts);
        match plan.outcome {
            Outcome::Try => {}
            Outcome::Defer { reason, .. } | Outcome::Fail { reason, .. } => return Err(reason),
        }
        let found = plan.candidates().next();
        let target = found.map(|(host, tls)| (host.clone(), tls.clone()));
        target
            .map(Some)
            .ok_or_else(|| format!("no host to probe for {domain}"))
    }

    /// The pool of `host`'s next hop.
    fn pool(&self, host: &PlannedHost) -> Arc<RoutePool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (host.name.clone(), host.port);
        let s = &self.settings;
        Arc::clone(
            pools
                .entry(key)
                .or_insert_with(|| RoutePool::new(s.per_route, s.idle, s.timeouts)),
        )
    }

    /// A new connection to the first address of `host` that greets us,
    /// with the TLS delivery would use (an opportunistic TLS failure is
    /// retried in clear, as delivery does).
    async fn connect(&self, host: &PlannedHost, tls: &TlsRequirement) -> Result<ProbeConn, String> {
        let mut last = format!("{}: no address", host.name);
        for ip in &host.addrs {
            let target = SocketAddr::new(*ip, host.port);
            for in_clear in [false, true] {
                let decision = tls_decision(&self.tls, tls, in_clear)?;
                let connect = self.connector.connect(target);
                let stream = match tokio::time::timeout(self.settings.connect, connect).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        last = format!("{}[{target}]: connect: {e}", host.name);
                        break;
                    }
                    Err(_) => {
                        last = format!("{}[{target}]: connect timed out", host.name);
                        break;
                    }
                };
                let t = &self.settings.timeouts;
                let server_name = server_name(host, tls);
                match ProbeConn::open(stream, server_name, &self.hostname, decision, t).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        last = failure(&format!("{}[{target}]", host.name), &e);
                        let tls_failed = matches!(e, SessionError::Tls { .. });
                        if !tls_failed || tls.is_required() {
                            break;
                        }
                    }
                }
            }
        }
        Err(last)
    }
}

impl<R: Resolver, C: Connector> RecipientProbe for RouteProbe<R, C> {
    fn probe<'a>(&'a self, recipient: &'a Address) -> BoxFuture<'a, ProbeAnswer> {
        Box::pin(self.ask(recipient))
    }
}

/// What a reply to RCPT says: 2xx exists, 5xx unknown, anything else
/// nothing.
fn answer(reply: Reply) -> ProbeAnswer {
    match reply.code / 100 {
        2 => ProbeAnswer::Exists,
        5 => ProbeAnswer::Unknown {
            reply: reply.to_string(),
        },
        _ => unreachable(format!("route answered {reply}")),
    }
}

/// Puts a connection still in step back into the pool (else closes it).
fn keep(
    pool: &Arc<RoutePool>,
    conn: ProbeConn,
    reusable: bool,
    answer: ProbeAnswer,
) -> ProbeAnswer {
    if reusable {
        pool.put(conn);
    }
    answer
}

fn failure(host: &str, e: &SessionError) -> String {
    format!("{host}: {e}")
}

fn unreachable(reason: String) -> ProbeAnswer {
    ProbeAnswer::Unreachable { reason }
}
