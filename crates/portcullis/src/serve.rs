//! `portcullis serve`: wiring, signals and the two-phase shutdown.

use crate::admin_handler::AdminHandler;
use crate::cli::ServeArgs;
use crate::logging;
use anyhow::{Context, Result};
use portcullis_admin::MetricsWriter;
use portcullis_config::{Config, LogFormat};
use portcullis_delivery::{
    Deliverer, DeliveryMetrics, LogTlsResults, SelfAddresses, TcpConnector, Timeouts,
};
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{Inbound, InboundMetrics, ListenerHandle};
use portcullis_policy::{PolicyEngine, PolicyFetcher, load_pins_dir};
use portcullis_queue::{Queue, QueueMetrics, SchedulerSettings};
use portcullis_store::Store;
use portcullis_tls::ServerTls;
use portcullis_tlsrpt::{
    HttpsPoster, QueueMailer, ReportInfo, ReportParts, ReportSender, ReportSettings,
    TlsRptRecorder, TlsRptSink,
};
use portcullis_types::{Clock, SystemClock};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Runs the server; exit code 0 after a clean shutdown.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match crate::commands::load_config(args.config.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            eprintln!("portcullis: --log-format {other:?}: use text or json");
            return ExitCode::from(2);
        }
        None => config.log_format,
    };
    logging::init(format, &config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Shared state the admin handler and metrics read.
pub struct ServerState {
    /// The validated config.
    pub config: Config,
    /// The queue.
    pub queue: Queue,
    /// The store (for flush counts).
    pub store: Store,
    /// Inbound counters.
    pub metrics: Arc<InboundMetrics>,
    /// Scheduler counters.
    pub queue_metrics: Arc<QueueMetrics>,
    /// Delivery counters.
    pub delivery_metrics: Arc<DeliveryMetrics>,
    /// Retry schedule and DSN settings (admin delete --bounce uses them).
    pub scheduler: Arc<SchedulerSettings>,
    /// The MTA-STS policy engine (cache, fetch, pins).
    pub policy: Arc<PolicyEngine<HickoryResolver>>,
    /// The resolver built from `[dns]` (for `policy explain`).
    pub resolver: HickoryResolver,
    /// TLS outcomes of outbound sessions, counted for metrics.
    pub tls_results: Arc<LogTlsResults>,
    /// The TLS-RPT report sender; `None` with `[tlsrpt] enabled = false`.
    pub tlsrpt: Option<Arc<TlsRptSender>>,
    /// Daily TLS-RPT aggregates (always recorded).
    pub tlsrpt_recorder: TlsRptRecorder,
    /// Reports sent by transport and outcome.
    pub tlsrpt_metrics: Arc<ReportMetrics>,
    /// Bound listeners.
    pub listeners: Vec<ListenerHandle>,
    /// When the server started.
    pub started: Instant,
}

async fn run(config: Config) -> Result<()> {
    let started = Instant::now();
    create_private_dir(&config.data_dir)?;

    let tls = match &config.tls.files {
        Some((cert, key)) => {
            ServerTls::from_files(cert, key).context("loading [tls] certificate")?
        }
        None => {
            let dir = config.data_dir.join("tls");
            warn!(dir = %dir.display(), "no [tls] certificate configured: using a self-signed certificate (fine for development, not for the Internet)");
            ServerTls::self_signed(&dir, &config.hostname)
                .context("creating the self-signed certificate")?
        }
    };
    info!(certificate = %tls.describe(), "tls ready");

    let store_dir = config.data_dir.join("queue");
    let store = Store::open(&store_dir)
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    let queue = Queue::open(&store).context("opening the queue")?;
    info!(messages = queue.len(), "queue opened");

    // Bind everything before serving anything: a bad address fails the start.
    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = portcullis_inbound::server::bind(l.address)
            .await
            .with_context(|| {
                format!("cannot listen on {} (role {})", l.address, l.role.as_str())
            })?;
        let local = listener.local_addr().context("reading the bound address")?;
        bound.push((
            listener,
            ListenerHandle {
                local_addr: local,
                role: l.role,
                max_connections: l.max_connections,
            },
        ));
    }
    let admin = portcullis_admin::bind(&config.admin.socket).context("binding the admin socket")?;
    let metrics_listener = match config.admin.metrics {
        Some(addr) => Some(
            portcullis_admin::bind_metrics(addr)
                .await
                .context("binding [admin] metrics")?,
        ),
        None => None,
    };

    let resolver = HickoryResolver::new(&config.dns.nameservers, config.dns.timeout)
        .map_err(|e| anyhow::anyhow!("building the DNS resolver from [dns]: {e}"))?;
    let client_tls_for_reports = portcullis_tls::ClientTls::new(&config.tls.extra_roots)
        .context("loading [tls] extra_roots")?;
    let client_tls = portcullis_tls::ClientTls::new(&config.tls.extra_roots)
        .context("loading [tls] extra_roots")?;
    // MTA-STS: policies fetched through the same resolver and trust anchors.
    let fetcher = PolicyFetcher::builder(resolver.clone())
        .tls(client_tls.clone())
        .port(config.mta_sts.https_port)
        .timeout(config.mta_sts.fetch_timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("building the MTA-STS policy fetcher: {e}"))?;
    let policy = Arc::new(
        PolicyEngine::new(resolver.clone(), fetcher, &store, Arc::new(SystemClock))
            .map_err(|e| anyhow::anyhow!("opening the MTA-STS policy cache: {e}"))?,
    );
    if let Some(dir) = &config.mta_sts.pins_dir {
        let pins = load_pins_dir(dir, policy.now())
            .map_err(|e| anyhow::anyhow!("loading [mta_sts] pins_dir {}: {e}", dir.display()))?;
        info!(count = pins.len(), dir = %dir.display(), "MTA-STS pins loaded");
        policy.set_file_pins(pins);
    }
    // Every outbound TLS outcome: logged and counted, and recorded for the
    // daily TLS-RPT reports (recorded even with reporting off, so turning
    // it on later has the day's counts).
    let tlsrpt_recorder = TlsRptRecorder::new(&store, Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("opening the TLS-RPT store: {e}"))?;
    let reporter = Arc::new(TlsRptSink::new(tlsrpt_recorder.clone()));
    let tls_results = reporter.log().clone();
    let delivery_metrics = Arc::new(DeliveryMetrics::default());
    let deliverer = Arc::new(
        Deliverer::new(
            resolver.clone(),
            TcpConnector {
                timeout: config.delivery.connect_timeout,
            },
            config.routes.clone(),
            config.relay.accepted_domains.clone(),
            config.delivery.port,
            config.hostname.clone(),
            client_tls,
            Timeouts::default(),
            config.delivery.per_domain as usize,
            delivery_metrics.clone(),
        )
        .with_policy(policy.clone())
        .with_reporter(reporter)
        // Every socket we listen on: an MX that points at one of them
        // would hand the message back to us (5.4.6, loops back to myself).
        .with_self_addresses(SelfAddresses::new(
            bound.iter().map(|(_, h)| h.local_addr).collect(),
        )),
    );
    let queue_metrics = Arc::new(QueueMetrics::default());
    let scheduler = Arc::new(SchedulerSettings {
        hostname: config.hostname.clone(),
        retry: config.queue.retry.clone(),
        max_age: config.queue.max_age,
        delay_warning: config.queue.delay_warning,
        max_concurrent: config.delivery.max_concurrent as usize,
    });

    // Sender verification shares the one resolver (and its cache): mail-auth
    // verifies through it, so `[dns]` governs every lookup.
    let verifier = match config.verify.enabled {
        true => Some(Arc::new(
            portcullis_auth::Verifier::new(&resolver, &config.hostname, config.verify.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        false => None,
    };
    // DKIM keys of submission, loaded now so a bad key stops the start.
    let dkim = portcullis_inbound::DkimSigners::load(&config.submission.dkim)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let oauth = match &config.submission.oauth {
        Some(o) => Some(Arc::new(build_introspector(&config, o, &resolver)?)),
        None => None,
    };
    let metrics = Arc::new(InboundMetrics::default());
    let inbound = Inbound::new(
        &config,
        queue.clone(),
        Some(tls.clone()),
        metrics.clone(),
        Arc::new(SystemClock),
        verifier,
        dkim,
        oauth,
    );
    let tlsrpt_metrics = Arc::new(ReportMetrics::default());
    let tlsrpt_sender = if config.tlsrpt.enabled {
        Some(Arc::new(build_tlsrpt_sender(
            &config,
            &store,
            &resolver,
            &client_tls_for_reports,
            tlsrpt_recorder.clone(),
            queue.clone(),
        )?))
    } else {
        None
    };
    let shutdown = CancellationToken::new();
    let sessions = TaskTracker::new();
    let services = TaskTracker::new();

    let state = Arc::new(ServerState {
        listeners: bound.iter().map(|(_, h)| h.clone()).collect(),
        config: config.clone(),
        queue: queue.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        queue_metrics: queue_metrics.clone(),
        delivery_metrics: delivery_metrics.clone(),
        scheduler: scheduler.clone(),
        policy: policy.clone(),
        resolver: resolver.clone(),
        tls_results: tls_results.clone(),
        tlsrpt: tlsrpt_sender.clone(),
        tlsrpt_recorder: tlsrpt_recorder.clone(),
        tlsrpt_metrics: tlsrpt_metrics.clone(),
        started,
    });
    if let Some(sender) = tlsrpt_sender {
        let m = tlsrpt_metrics.clone();
        services.spawn(portcullis_tlsrpt::run_with(
            sender,
            shutdown.clone(),
            move |o| {
                m.count(o.transport(), o.kind());
            },
        ));
    }
    services.spawn(portcullis_policy::run_refresh(
        policy.clone(),
        shutdown.clone(),
    ));
    services.spawn(portcullis_queue::scheduler::run(
        queue.clone(),
        deliverer,
        scheduler,
        Arc::new(SystemClock),
        queue_metrics,
        shutdown.clone(),
    ));

    for (listener, handle) in bound {
        info!(address = %handle.local_addr, role = handle.role.as_str(), max_connections = handle.max_connections, "listening");
        services.spawn(
            inbound
                .clone()
                .run(listener, handle, shutdown.clone(), sessions.clone()),
        );
    }
    info!(socket = %config.admin.socket.display(), "admin socket ready");
    let handler = Arc::new(AdminHandler::new(state.clone()));
    let admin_shutdown = shutdown.clone();
    services.spawn(async move {
        if let Err(e) = admin.run(handler, admin_shutdown).await {
            error!(error = %e, "admin socket failed");
        }
    });
    if let Some(m) = metrics_listener {
        info!(address = %m.local_addr(), "metrics at /metrics");
        let state = state.clone();
        services.spawn(m.run(Arc::new(move || render_metrics(&state)), shutdown.clone()));
    }
    // The handlers exist before "ready" is said: a SIGTERM or SIGHUP sent
    // the moment a supervisor (or a test) reads that line must not find the
    // default disposition, which kills the process without a drain.
    let signals = Signals::install()?;
    info!(hostname = %config.hostname, startup_ms = started.elapsed().as_millis() as u64, "portcullis ready");

    signals.wait(&tls).await;

    // Phase one: stop accepting; idle sessions get 421 4.3.2 at once, those
    // in DATA may finish within the grace period.
    info!(grace = ?config.limits.shutdown_grace, open = metrics.open_sessions(), "shutting down");
    shutdown.cancel();
    sessions.close();
    services.close();
    if tokio::time::timeout(config.limits.shutdown_grace, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            open = metrics.open_sessions(),
            "grace period over; closing remaining sessions"
        );
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), services.wait()).await;
    // Phase two: everything acknowledged is already synced; this flush
    // covers bookkeeping written since.
    store.flush_now().context("final store flush")?;
    info!("stopped");
    Ok(())
}

/// The process's signal handlers: SIGTERM and SIGINT stop the server,
/// SIGHUP reloads the TLS certificate.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals are queued for
    /// [`Signals::wait`] instead of taking their default action.
    fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT, reloading the certificate on SIGHUP.
    async fn wait(mut self, tls: &ServerTls) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { info!(signal = "SIGTERM", "signal received"); return }
                _ = self.int.recv() => { info!(signal = "SIGINT", "signal received"); return }
                _ = self.hup.recv() => match tls.reload() {
                    Ok(()) => info!(certificate = %tls.describe(), "SIGHUP: tls certificate reloaded"),
                    Err(e) => warn!(error = %e, "SIGHUP: tls reload failed; keeping the current certificate"),
                },
            }
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("creating data_dir {}", dir.display()))
}

fn render_metrics(state: &ServerState) -> String {
    let mut w = MetricsWriter::new();
    state.metrics.render(&mut w);
    w.gauge(
        "portcullis_queue_messages",
        "Messages in the queue.",
        &[],
        state.queue.len(),
    );
    let oldest = state
        .queue
        .oldest_millis()
        .map(|ms| (SystemClock.unix_secs() * 1000).saturating_sub(ms) / 1000)
        .unwrap_or(0);
    w.gauge(
        "portcullis_queue_oldest_message_age_seconds",
        "Age of the oldest queued message.",
        &[],
        oldest,
    );
    let (delivered, deferred, failed) = state.delivery_metrics.outcomes();
    for (outcome, n) in [
        ("delivered", delivered),
        ("deferred", deferred),
        ("failed", failed),
    ] {
        w.counter(
            "portcullis_deliveries_total",
            "Recipient delivery outcomes.",
            &[("outcome", outcome)],
            n,
        );
    }
    for (mx, result, n) in state.delivery_metrics.attempts() {
        w.counter(
            "portcullis_delivery_attempts_by_mx_total",
            "Attempts at MX hosts by host and result (loops_to_self: not contacted, it is this server).",
            &[("mx", &mx), ("result", result)],
            n,
        );
    }
    for (mode, n) in state.delivery_metrics.modes() {
        w.counter(
            "portcullis_deliveries_by_policy_mode_total",
            "Deliveries to a domain, by the MTA-STS mode that applied.",
            &[("mode", mode)],
            n,
        );
    }
    for (reason, n) in state.delivery_metrics.deferrals() {
        w.counter(
            "portcullis_policy_deferrals_total",
            "Hosts or deliveries refused because of an MTA-STS policy, by reason.",
            &[("reason", reason)],
            n,
        );
    }
    for (domain, n) in state.tls_results.downgrades() {
        w.counter(
            "portcullis_tls_policy_failures_total",
            "Sessions that failed TLS where an MTA-STS policy expects it (a downgrade alert).",
            &[("domain", &domain)],
            n,
        );
    }
    for (domain, result, n) in state.tls_results.counts() {
        w.counter(
            "portcullis_tls_sessions_total",
            "Outbound sessions by policy domain and TLS result.",
            &[("domain", &domain), ("result", &result)],
            n,
        );
    }
    for (outcome, n) in state.policy.fetch_counts() {
        w.counter(
            "portcullis_mta_sts_fetches_total",
            "MTA-STS policy fetches by outcome (ok or the TLS-RPT result type).",
            &[("outcome", outcome)],
            n,
        );
    }
    for (transport, outcome, n) in state.tlsrpt_metrics.snapshot() {
        w.counter(
            "portcullis_tlsrpt_reports_total",
            "TLS-RPT reports by transport and outcome.",
            &[("transport", &transport), ("outcome", &outcome)],
            n,
        );
    }
    let policies = state.policy.list().unwrap_or_default();
    w.gauge(
        "portcullis_mta_sts_policies_cached",
        "MTA-STS policies in the cache.",
        &[],
        policies.len(),
    );
    let q = &state.queue_metrics;
    w.counter(
        "portcullis_delivery_attempts_total",
        "Message delivery attempts started.",
        &[],
        q.attempts.load(std::sync::atomic::Ordering::Relaxed),
    );
    w.counter(
        "portcullis_dsns_total",
        "Delivery status notifications queued.",
        &[],
        q.dsns.load(std::sync::atomic::Ordering::Relaxed),
    );
    w.counter(
        "portcullis_store_commits_total",
        "Group-commit fsyncs of the store.",
        &[],
        state.store.commits_done(),
    );
    w.gauge(
        "portcullis_uptime_seconds",
        "Seconds since the server started.",
        &[],
        state.started.elapsed().as_secs(),
    );
    w.finish()
}

/// The TLS-RPT sender as the binary builds it.
pub type TlsRptSender = ReportSender<HickoryResolver, QueueMailer>;

/// Reports sent, by transport and outcome.
#[derive(Debug, Default)]
pub struct ReportMetrics(std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>);

impl ReportMetrics {
    pub(crate) fn count(&self, transport: &str, outcome: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((transport.to_string(), outcome.to_string()))
            .or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<(String, String, u64)> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|((t, o), n)| (t.clone(), o.clone(), *n))
            .collect()
    }
}

/// Builds the TLS-RPT sender from `[tlsrpt]` (validation already made sure
/// every key is present when reporting is on).
fn build_tlsrpt_sender(
    config: &Config,
    store: &Store,
    resolver: &HickoryResolver,
    client_tls: &portcullis_tls::ClientTls,
    recorder: TlsRptRecorder,
    queue: Queue,
) -> Result<TlsRptSender> {
    let t = &config.tlsrpt;
    let from = t.from.clone().unwrap_or_default();
    let from_domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let poster = HttpsPoster::builder(resolver.clone())
        .tls(client_tls.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("building the TLS-RPT HTTPS client: {e}"))?;
    let mailer = QueueMailer {
        queue,
        hostname: config.hostname.clone(),
        clock: Arc::new(SystemClock),
    };
    let info = ReportInfo {
        organization: t.organization.clone().unwrap_or_default(),
        contact: t.contact.clone().unwrap_or_default(),
        submitter: t.submitter.clone().unwrap_or_default(),
    };
    let parts = ReportParts {
        store: store.clone(),
        recorder,
        resolver: resolver.clone(),
        mailer,
        poster,
    };
    let mut builder =
        ReportSender::builder(parts, ReportSettings::new(info, &from)).send_window(t.send_window);
    if let (Some(key), Some(selector)) = (&t.dkim_key, &t.dkim_selector) {
        let signer = portcullis_tlsrpt::report_signer_from_file(key, &from_domain, selector)
            .map_err(|e| anyhow::anyhow!("[tlsrpt] dkim_key {}: {e}", key.display()))?;
        info!(record = %signer.dns_name(), "TLS-RPT reports are DKIM-signed; publish the key's DNS record there");
        builder = builder.signer(signer);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("[tlsrpt]: {e}"))
}

/// The token introspector of `[submission.oauth]`: the one strict HTTPS
/// client (`portcullis-https`, as for policy fetches; PKIX under the web
/// roots, `[tls] extra_roots` and the section's `ca_file`; TLS 1.2+; no
/// redirects; names through `[dns]`) and the client secret read from its
/// file now, so a missing file stops the start.
fn build_introspector(
    config: &Config,
    o: &portcullis_config::OAuth,
    resolver: &HickoryResolver,
) -> anyhow::Result<portcullis_submission::oauth::Introspector> {
    use portcullis_submission::oauth::{IntrospectionSettings, Introspector};
    let secret = std::fs::read_to_string(&o.client_secret_file).with_context(|| {
        format!(
            "reading [submission.oauth] client_secret_file {}",
            o.client_secret_file.display()
        )
    })?;
    let secret = secret.trim();
    if secret.is_empty() {
        anyhow::bail!(
            "[submission.oauth] client_secret_file {} is empty",
            o.client_secret_file.display()
        );
    }
    let mut roots = config.tls.extra_roots.clone();
    roots.extend(o.ca_file.iter().cloned());
    let tls = portcullis_tls::ClientTls::new(&roots)
        .context("loading trust anchors for [submission.oauth]")?;
    let client = portcullis_https::builder(
        resolver.clone(),
        concat!("portcullis-oauth/", env!("CARGO_PKG_VERSION")),
    )
    .tls(tls)
    .timeout(o.timeout)
    .build()
    .map_err(|e| anyhow::anyhow!("building the token introspection client: {e}"))?;
    let mut settings = IntrospectionSettings::new(&o.introspection_url, &o.client_id, secret);
    settings.required_scope = o.required_scope.clone();
    settings.username_claim = o.username_claim.clone();
    settings.cache_ttl = o.cache_ttl;
    settings.max_in_flight = o.max_in_flight as usize;
    settings.breaker = portcullis_submission::breaker::BreakerSettings {
        failures: o.breaker_failures,
        open_for: o.breaker_open,
    };
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("[submission.oauth]: {e}"))?;
    info!(endpoint = %o.introspection_url, "OAUTHBEARER and XOAUTH2 offered (token introspection)");
    Ok(Introspector::new(client, settings, Arc::new(SystemClock)))
}
