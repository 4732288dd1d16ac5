//! `portcullis serve`: wiring, signals and the two-phase shutdown.
//!
//! [`run`] reads top to bottom as the start: open the store, bind every
//! socket, wire the outbound side ([`outbound`]), the screen
//! ([`screen`]) and the inbound side ([`inbound`]), the `mta-sts`
//! listeners ([`publish`]), watch the certificates ([`certs`]), start the
//! services ([`services`]), say "ready", wait for a signal and drain
//! ([`shutdown`]).

mod certs;
mod cluster;
mod dnssec_check;
mod inbound;
mod limits;
mod outbound;
mod publish;
mod screen;
mod services;
mod shutdown;

use crate::cli::ServeArgs;
use crate::handler::AdminHandler;
use crate::logging;
use crate::metrics::MetricsPage;
use crate::reload::{Reloader, Targets};
use crate::state::{
    DmarcAccess, OwnAccess, PolicyAccess, QueueAccess, ScreenAccess, ServerInfo, TlsRptAccess,
};
use anyhow::{Context, Result};
pub use certs::CertWatch;
use inbound::Listeners;
use outbound::Outbound;
use portcullis_config::{Config, LogFormat};
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{Inbound, InboundMetrics};
use portcullis_queue::Queue;
use portcullis_store::Store;
use portcullis_tls::ServerTls;
use portcullis_tlsrpt::ReportMetrics;
use portcullis_tlsrpt::received::{ReceivedReports, ReportIntake, ReportMailbox};
use portcullis_types::SystemClock;
use publish::PublishSide;
pub use publish::PublishSite;
use services::Endpoints;
use shutdown::{Lifecycle, Signals};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info};

/// Runs the server; exit code 0 after a clean shutdown.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match crate::config_cmd::load_config(args.config.config.as_deref()) {
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
    match runtime.block_on(run(config, args.config.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the server with `config` (read from `path`, which SIGHUP and
/// `portcullis reload` read again), serves until SIGTERM or SIGINT, then
/// drains; an error says which step of the start failed.
async fn run(config: Config, path: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    create_private_dir(&config.data_dir)?;
    let tls = inbound::server_tls(&config)?;
    let (store, queue) = open_queue(&config)?;

    // Bind everything before serving anything: a bad address fails the start.
    let listeners = Listeners::bind(&config).await?;
    let endpoints = Endpoints::bind(&config).await?;

    let resolver = HickoryResolver::with_dnssec(
        &config.dns.nameservers,
        config.dns.timeout,
        &dnssec_settings(&config.dns),
    )
    .map_err(|e| anyhow::anyhow!("building the DNS resolver from [dns]: {e}"))?;
    // Cluster mode: the schema migrated now when the database answers;
    // when it does not, the node starts anyway on its local state.
    let cluster = cluster::build(&config)?;
    let migrated = match &cluster {
        Some(c) => cluster::migrate_at_start(c).await?,
        None => false,
    };
    let publish = PublishSide::bind(&config, &tls, &resolver).await?;
    let certs = cert_watch(&listeners, &tls, &publish);
    let outbound = Outbound::wire(
        &config,
        &store,
        cluster.as_ref(),
        &resolver,
        listeners.addresses(),
    )?;
    let shared_lists = cluster.as_ref().map(limits::lists);
    let screen = screen::build(
        &config,
        &store,
        cluster.as_ref(),
        shared_lists.clone(),
        &resolver,
        outbound.probe.clone(),
    )?;
    let first_screen = screen.clone();
    let dmarc = crate::dmarc::build(&config, &store, &resolver, &queue, cluster.as_ref())?;
    let side = inbound::build(&config, &queue, &tls, &resolver, screen, dmarc.as_ref())?;
    let tlsrpt_sync = crate::tlsrpt::count_sync(cluster.as_ref(), &outbound.tlsrpt_recorder);
    let tlsrpt_sender = crate::tlsrpt::sender(
        &config,
        &store,
        &resolver,
        &outbound.tlsrpt_recorder,
        &queue,
        tlsrpt_sync.as_ref().zip(cluster.as_ref()),
    )?;
    let tlsrpt_metrics = Arc::new(ReportMetrics::default());
    // Reports others send about our domains: one intake for the mail path
    // (below, around the deliverer) and HTTPS.
    let received = crate::tlsrpt::received(&config, &store)?;
    let reloader = reloader(
        path, &config, &side, &queue, &tls, &resolver, &outbound, &received, &publish,
    );

    let life = Lifecycle::default();
    let info = ServerInfo {
        hostname: config.hostname.clone(),
        data_dir: config.data_dir.clone(),
        started,
        listeners: [listeners.handles(), publish.handles()].concat(),
        certificates: certs.clone(),
    };
    let tlsrpt = TlsRptAccess {
        sender: tlsrpt_sender.clone(),
        recorder: outbound.tlsrpt_recorder.clone(),
        metrics: tlsrpt_metrics.clone(),
        settings: config.tlsrpt.clone(),
        received: received.clone(),
    };
    let mut page = MetricsPage {
        publish: publish.metrics.clone(),
        certificates: certs.clone(),
        ..metrics_page(&store, &queue, &outbound, &side, &tlsrpt, started)
    };
    page.dmarc = dmarc.as_ref().map(|d| d.recorder.metrics().clone());
    page.cluster = cluster.clone();
    // The admin commands see the generation in force (a reload replaces
    // it); the server always builds its inbound side with a screen.
    let live = side.inbound.clone();
    let screen = ScreenAccess::new(move || live.screen().unwrap_or_else(|| first_screen.clone()));
    let handler = admin_handler(
        &reloader,
        info,
        &queue,
        &outbound,
        &side.metrics,
        tlsrpt,
        screen,
    );
    let handler = AdminHandler {
        dmarc: DmarcAccess {
            reports: dmarc.clone(),
        },
        cluster: cluster.clone(),
        ..handler
    };
    if let Some(d) = dmarc {
        crate::dmarc::spawn_sender(&life.services, d, &life.shutdown);
    }
    if let Some(sender) = tlsrpt_sender {
        crate::tlsrpt::spawn_sender(&life.services, sender, &tlsrpt_metrics, &life.shutdown);
    }
    // The same intake reads reports mailed to us and reports POSTed to the
    // mta-sts listeners' /tlsrpt.
    let intake: Arc<dyn ReportIntake> = Arc::new(received.clone());
    let policy_sync = outbound.shared_policy.clone();
    spawn_outbound(outbound, received, &queue, &life);
    screen::spawn_sweep(side.inbound.clone(), &life);
    if let (Some(c), Some(lists)) = (&cluster, shared_lists) {
        limits::spawn(c.clone(), lists, side.inbound.clone(), &life);
    }
    spawn_listeners(side.inbound, listeners, &life);
    if let Some((sync, c)) = tlsrpt_sync.zip(cluster.as_ref()) {
        crate::tlsrpt::spawn_sync(&life.services, sync, c, &life.shutdown);
    }
    if let Some(c) = cluster {
        if let Some(shared) = policy_sync {
            life.services.spawn(outbound::run_policy_sync(
                shared,
                c.sync_interval(),
                life.shutdown.clone(),
            ));
        }
        cluster::spawn(c, migrated, &life);
    }
    publish.spawn(Some(intake), &life);
    life.services.spawn(certs.run(life.shutdown.clone()));
    life.services.spawn(dnssec_check::run(resolver.clone()));
    endpoints.spawn(&config, handler, page, &life);
    // The handlers exist before "ready" is said: a SIGTERM or SIGHUP sent
    // the moment a supervisor (or a test) reads that line must not find the
    // default disposition, which kills the process without a drain.
    let signals = Signals::install()?;
    info!(hostname = %config.hostname, startup_ms = started.elapsed().as_millis() as u64, "portcullis ready");

    signals.wait(&reloader).await;

    // The grace period in force: a reload may have changed it.
    life.drain(reloader.config().limits.shutdown_grace, &side.metrics)
        .await;
    // Phase two: everything acknowledged is already synced; this flush
    // covers bookkeeping written since.
    store.flush_now().context("final store flush")?;
    info!("stopped");
    Ok(())
}

/// The certificate every listener presents: `[tls]` for the SMTP ones,
/// `[tls]` or its own for each `mta-sts` one.
fn cert_watch(listeners: &Listeners, tls: &ServerTls, publish: &PublishSide) -> CertWatch {
    let mut certs = CertWatch::default();
    for h in listeners.handles() {
        certs.add(h, tls.clone());
    }
    for l in &publish.listeners {
        certs.add(l.handle.clone(), l.tls.clone());
    }
    certs
}

/// The reloader of SIGHUP and `portcullis reload`: the file `serve` read
/// (`path`), the config and verifier in force, and every part a reload
/// changes.
#[allow(clippy::too_many_arguments)]
fn reloader(
    path: Option<PathBuf>,
    config: &Config,
    side: &inbound::InboundSide,
    queue: &Queue,
    tls: &ServerTls,
    resolver: &HickoryResolver,
    outbound: &Outbound,
    received: &ReceivedReports,
    publish: &PublishSide,
) -> Arc<Reloader> {
    let targets = Targets {
        inbound: side.inbound.clone(),
        queue: queue.clone(),
        tls: tls.clone(),
        resolver: resolver.clone(),
        destinations: outbound.deliverer.planner().destinations.clone(),
        policy: outbound.policy.clone(),
        report_ours: received.ours().clone(),
        site: publish.site.clone(),
        listener_certificates: publish.own_certificates(),
    };
    Arc::new(Reloader::new(
        path,
        config.clone(),
        side.verifier.clone(),
        targets,
    ))
}

/// The store in `data_dir/queue` and the queue in it.
fn open_queue(config: &Config) -> Result<(Store, Queue)> {
    let store_dir = config.data_dir.join("queue");
    let store = Store::open(&store_dir)
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    let queue = Queue::open(&store).context("opening the queue")?;
    info!(messages = queue.len(), "queue opened");
    Ok((store, queue))
}

/// The metrics page over every part that counts something.
fn metrics_page(
    store: &Store,
    queue: &Queue,
    outbound: &Outbound,
    side: &inbound::InboundSide,
    tlsrpt: &TlsRptAccess,
    started: Instant,
) -> MetricsPage {
    MetricsPage {
        inbound: side.metrics.clone(),
        screen: side.inbound.clone(),
        queue: queue.clone(),
        queue_counters: outbound.queue_metrics.clone(),
        delivery: outbound.delivery_metrics.clone(),
        tls_results: outbound.tls_results.clone(),
        policy: outbound.policy.clone(),
        tlsrpt: tlsrpt.metrics.clone(),
        received: tlsrpt.received.clone(),
        dmarc: None,
        cluster: None,
        store: store.clone(),
        publish: Arc::default(),
        certificates: CertWatch::default(),
        started,
    }
}

/// The admin handler over the parts each command group reaches (and the
/// reloader, for `reload` and the settings in force).
fn admin_handler(
    reloader: &Arc<Reloader>,
    info: ServerInfo,
    queue: &Queue,
    outbound: &Outbound,
    inbound_metrics: &Arc<InboundMetrics>,
    tlsrpt: TlsRptAccess,
    screen: ScreenAccess,
) -> AdminHandler {
    AdminHandler {
        info,
        sessions: inbound_metrics.clone(),
        queue: QueueAccess {
            queue: queue.clone(),
            settings: outbound.settings.clone(),
            counters: outbound.queue_metrics.clone(),
        },
        policy: PolicyAccess {
            engine: outbound.policy.clone(),
            planner: outbound.deliverer.planner().clone(),
        },
        tlsrpt,
        reload: reloader.clone(),
        screen,
        // The resolver every lookup of the server uses (delivery's).
        own: OwnAccess {
            resolver: outbound.deliverer.planner().resolver.clone(),
            clock: Arc::new(SystemClock),
        },
        dmarc: DmarcAccess { reports: None },
        cluster: None,
    }
}

/// Starts the MTA-STS refresh loop and the scheduler, which hands due
/// messages to the deliverer; mail to our TLS report mailboxes is read
/// into `received` instead (`ReportMailbox`).
fn spawn_outbound(outbound: Outbound, received: ReceivedReports, queue: &Queue, life: &Lifecycle) {
    let ours = received.ours().clone();
    let deliver = Arc::new(ReportMailbox::new(
        outbound.deliverer,
        Arc::new(received),
        ours,
    ));
    life.services.spawn(portcullis_policy::run_refresh(
        outbound.policy,
        life.shutdown.clone(),
    ));
    life.services.spawn(portcullis_queue::scheduler::run(
        queue.clone(),
        deliver,
        outbound.settings,
        Arc::new(SystemClock),
        outbound.queue_metrics,
        life.shutdown.clone(),
        life.attempts.clone(),
    ));
}

/// Starts accepting on every listener; sessions run on `life.sessions`.
fn spawn_listeners(inbound: Arc<Inbound>, listeners: Listeners, life: &Lifecycle) {
    for (listener, handle) in listeners.into_inner() {
        info!(address = %handle.local_addr, role = handle.role.as_str(), max_connections = handle.max_connections, "listening");
        life.services.spawn(inbound.clone().run(
            listener,
            handle,
            life.shutdown.clone(),
            life.sessions.clone(),
        ));
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

/// `[dns] dnssec` and `trust_anchors` as the resolver takes them.
fn dnssec_settings(dns: &portcullis_config::Dns) -> portcullis_dns::DnssecSettings {
    use portcullis_config::Dnssec;
    use portcullis_dns::DnssecMode;
    portcullis_dns::DnssecSettings {
        mode: match dns.dnssec {
            Dnssec::Off => DnssecMode::Off,
            Dnssec::Validate => DnssecMode::Validate,
            Dnssec::TrustAd => DnssecMode::TrustAd,
        },
        trust_anchors: dns.trust_anchors.clone(),
    }
}
