//! The outbound side: the MTA-STS policy engine, the deliverer that applies
//! it, and the scheduler's settings and counters.

use crate::state::Engine;
use anyhow::{Context, Result};
use portcullis_cluster::Cluster;
use portcullis_cluster::policy::PgPolicyStore;
use portcullis_cluster::policy_shared::SharedPolicyStore;
use portcullis_config::Config;
use portcullis_delivery::{
    Deliverer, DelivererSettings, DeliveryMetrics, LogTlsResults, Planner, RouteProbe,
    SelfAddresses, TcpConnector, Timeouts,
};
use portcullis_dns::HickoryResolver;
use portcullis_policy::{PolicyEngine, PolicyFetcher, PolicyStore, SledPolicyStore, load_pins_dir};
use portcullis_queue::{QueueMetrics, SchedulerSettings};
use portcullis_store::Store;
use portcullis_tlsrpt::TlsRptRecorder;
use portcullis_types::SystemClock;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Everything that sends mail, built and not yet running.
pub struct Outbound {
    /// The MTA-STS engine (cache, fetch, pins).
    pub policy: Arc<Engine>,
    /// In cluster mode, the engine's shared store, synced every
    /// `[cluster] sync_interval` ([`run_policy_sync`]).
    pub shared_policy: Option<Arc<SharedPolicyStore>>,
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
    /// would hand the message back to us. With a `cluster`, the MTA-STS
    /// cache and operator pins are the cluster's.
    pub fn wire(
        config: &Config,
        store: &Store,
        cluster: Option<&Cluster>,
        resolver: &HickoryResolver,
        listening: Vec<SocketAddr>,
    ) -> Result<Outbound> {
        let client_tls = portcullis_tls::ClientTls::new(&config.tls.extra_roots)
            .context("loading [tls] extra_roots")?;
        let (policy, shared_policy) = policy_engine(config, store, cluster, resolver, &client_tls)?;
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
            shared_policy,
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
/// as delivery, with the pins of `[mta_sts] pins_dir` loaded; the cache
/// and operator pins in `store`, or with a `cluster` in its database
/// (`store` then holds the node's mirror, the fallback while the database
/// is unreachable).
fn policy_engine(
    config: &Config,
    store: &Store,
    cluster: Option<&Cluster>,
    resolver: &HickoryResolver,
    client_tls: &portcullis_tls::ClientTls,
) -> Result<(Arc<Engine>, Option<Arc<SharedPolicyStore>>)> {
    let fetcher = PolicyFetcher::builder(resolver.clone())
        .tls(client_tls.clone())
        .port(config.mta_sts.https_port)
        .timeout(config.mta_sts.fetch_timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("building the MTA-STS policy fetcher: {e}"))?;
    let local = SledPolicyStore::open(store)
        .map_err(|e| anyhow::anyhow!("opening the MTA-STS policy cache: {e}"))?;
    let shared = cluster.map(|cluster| {
        // A lease outlives the fetch it covers (timeout, then storing).
        let lease = config.mta_sts.fetch_timeout + LEASE_MARGIN;
        Arc::new(SharedPolicyStore::new(
            PgPolicyStore::new(cluster.clone(), lease),
            Arc::new(local.clone()),
        ))
    });
    let state: Arc<dyn PolicyStore> = match &shared {
        Some(shared) => shared.clone(),
        None => Arc::new(local),
    };
    let policy = Arc::new(PolicyEngine::with_store(
        resolver.clone(),
        fetcher,
        state,
        Arc::new(SystemClock),
    ));
    if let Some(dir) = &config.mta_sts.pins_dir {
        let pins = load_pins_dir(dir, policy.now())
            .map_err(|e| anyhow::anyhow!("loading [mta_sts] pins_dir {}: {e}", dir.display()))?;
        info!(count = pins.len(), dir = %dir.display(), "MTA-STS pins loaded");
        policy.set_file_pins(pins);
    }
    Ok((policy, shared))
}

/// How long a fetch lease outlives the fetch timeout: storing the policy
/// after the fetch.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Syncs the shared MTA-STS store every `every` (`[cluster]
/// sync_interval`) until `shutdown`: the cluster's policies and pins into
/// this node's mirror, and what this node fetched during an outage back
/// into the database.
pub async fn run_policy_sync(
    shared: Arc<SharedPolicyStore>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A failure is counted as a fall-back and logged by the cluster's
        // health; the next tick tries again.
        let _ = shared.sync().await;
    }
}
