//! The outbound side: the MTA-STS policy engine, the deliverer that applies
//! it, and the scheduler's settings and counters.

use crate::state::Engine;
use anyhow::{Context, Result};
use portcullis_config::Config;
use portcullis_delivery::{
    Deliverer, DelivererSettings, DeliveryMetrics, LogTlsResults, Planner, RouteProbe,
    SelfAddresses, TcpConnector, Timeouts,
};
use portcullis_dns::HickoryResolver;
use portcullis_policy::{PolicyEngine, PolicyFetcher, load_pins_dir};
use portcullis_queue::{QueueMetrics, SchedulerSettings};
use portcullis_store::Store;
use portcullis_tlsrpt::TlsRptRecorder;
use portcullis_types::SystemClock;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::info;

/// Everything that sends mail, built and not yet running.
pub struct Outbound {
    /// The MTA-STS engine (cache, fetch, pins).
    pub policy: Arc<Engine>,
    /// The deliverer the scheduler hands due messages to.
    pub deliverer: Arc<Deliverer<HickoryResolver, TcpConnector>>,
    /// Retry schedule, expiry and DSN settings.
    pub settings: Arc<SchedulerSettings>,
    /// The scheduler's counters.
    pub queue_metrics: Arc<QueueMetrics>,
    /// The deliverer's counters.
    pub delivery_metrics: Arc<DeliveryMetrics>,
    /// TLS outcomes of outbound sessions, counted.
    pub tls_results: Arc<LogTlsResults>,
    /// Daily TLS-RPT aggregates of those outcomes.
    pub tlsrpt_recorder: TlsRptRecorder,
    /// Asks a domain's route whether a recipient exists (`[recipients]
    /// verify = "route"`), with the deliverer's routes and TLS.
    pub probe: Arc<RouteProbe<HickoryResolver, TcpConnector>>,
}

impl Outbound {
    /// Builds the outbound side from `config`. `listening` are the
    /// addresses of our own listeners: an MX that points at one of them
    /// would hand the message back to us.
    pub fn wire(
        config: &Config,
        store: &Store,
        resolver: &HickoryResolver,
        listening: Vec<SocketAddr>,
    ) -> Result<Outbound> {
        let client_tls = portcullis_tls::ClientTls::new(&config.tls.extra_roots)
            .context("loading [tls] extra_roots")?;
        let policy = policy_engine(config, store, resolver, &client_tls)?;
        let (tlsrpt_recorder, reporter) = crate::tlsrpt::recorder(store)?;
        let tls_results = reporter.log().clone();
        let delivery_metrics = Arc::new(DeliveryMetrics::default());
        let planner = Planner {
            resolver: resolver.clone(),
            destinations: portcullis_delivery::LiveDestinations::new(
                portcullis_delivery::Destinations {
                    routes: config.routes.clone(),
                    accepted: config.relay.accepted_domains.clone(),
                    dane_only: config.delivery.dane_only.clone(),
                },
            ),
            port: config.delivery.port,
            // Every socket we listen on: an MX that points at one of them
            // would hand the message back to us (5.4.6, loops back to myself).
            myself: SelfAddresses::new(listening),
        };
        let connector = TcpConnector {
            timeout: config.delivery.connect_timeout,
        };
        // The probe plans with the deliverer's planner (a reload's routes
        // apply to both) and connects as delivery does.
        let probe = Arc::new(RouteProbe::new(
            planner.clone(),
            connector.clone(),
            config.hostname.clone(),
            client_tls.clone(),
        ));
        let deliverer = Arc::new(
            Deliverer::new(DelivererSettings {
                planner,
                connector,
                hostname: config.hostname.clone(),
                tls: client_tls,
                timeouts: Timeouts::default(),
                per_domain: config.delivery.per_domain as usize,
                metrics: delivery_metrics.clone(),
            })
            .with_policy(policy.clone())
            .with_reporter(reporter),
        );
        let settings = Arc::new(SchedulerSettings {
            hostname: config.hostname.clone(),
            retry: config.queue.retry.clone(),
            max_age: config.queue.max_age,
            delay_warning: config.queue.delay_warning,
            max_concurrent: config.delivery.max_concurrent as usize,
        });
        Ok(Outbound {
            policy,
            deliverer,
            settings,
            queue_metrics: Arc::new(QueueMetrics::default()),
            delivery_metrics,
            tls_results,
            tlsrpt_recorder,
            probe,
        })
    }
}

/// MTA-STS: policies fetched through the same resolver and trust anchors
/// as delivery, with the pins of `[mta_sts] pins_dir` loaded.
fn policy_engine(
    config: &Config,
    store: &Store,
    resolver: &HickoryResolver,
    client_tls: &portcullis_tls::ClientTls,
) -> Result<Arc<Engine>> {
    let fetcher = PolicyFetcher::builder(resolver.clone())
        .tls(client_tls.clone())
        .port(config.mta_sts.https_port)
        .timeout(config.mta_sts.fetch_timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("building the MTA-STS policy fetcher: {e}"))?;
    let policy = Arc::new(
        PolicyEngine::new(resolver.clone(), fetcher, store, Arc::new(SystemClock))
            .map_err(|e| anyhow::anyhow!("opening the MTA-STS policy cache: {e}"))?,
    );
    if let Some(dir) = &config.mta_sts.pins_dir {
        let pins = load_pins_dir(dir, policy.now())
            .map_err(|e| anyhow::anyhow!("loading [mta_sts] pins_dir {}: {e}", dir.display()))?;
        info!(count = pins.len(), dir = %dir.display(), "MTA-STS pins loaded");
        policy.set_file_pins(pins);
    }
    Ok(policy)
}
