//! DMARC aggregate reports as the binary wires them (`[dmarc_reports]`):
//! the recorder the inbound side counts verified mail into, the report
//! sender (DKIM key, From, reporter names from the config) and its daily
//! loop. Nothing is recorded or sent with reporting off.
//!
//! In cluster mode the sender works on the cluster's reports
//! ([`ClusterDmarc`]: every node's counts summed, one node sending each
//! report), and a task pushes this node's counts every `[cluster]
//! sync_interval`; counting itself stays local.

use anyhow::Result;
use portcullis_cluster::Cluster;
use portcullis_cluster::dmarc::ClusterDmarc;
use portcullis_config::{Config, DmarcReportsSending};
use portcullis_dmarc::{
    DmarcMetrics, DmarcRecorder, DmarcSender, Limits, QueueMailer, REPORT_HEADERS, ReportInfo,
    SenderSettings,
};
use portcullis_dns::HickoryResolver;
use portcullis_queue::Queue;
use portcullis_store::Store;
use portcullis_types::SystemClock;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

/// The DMARC report sender as the binary builds it.
pub type DmarcReportSender = DmarcSender<HickoryResolver, QueueMailer>;

/// The recorder and the sender, with `[dmarc_reports] enabled`.
#[derive(Clone)]
pub struct DmarcReports {
    /// Where the inbound side counts verified mail.
    pub recorder: DmarcRecorder,
    /// Sends the daily reports.
    pub sender: Arc<DmarcReportSender>,
    /// In cluster mode: the cluster's reports, synced by [`spawn_sender`].
    pub shared: Option<Arc<ClusterDmarc>>,
}

/// The recorder and sender of `[dmarc_reports]`; `None` when it is off. A
/// key that cannot be read stops the start. With a `cluster`, the sender
/// sends the cluster's reports.
pub fn build(
    config: &Config,
    store: &Store,
    resolver: &HickoryResolver,
    queue: &Queue,
    cluster: Option<&Cluster>,
) -> Result<Option<DmarcReports>> {
    let Some(s) = config.dmarc_reports.sending() else {
        return Ok(None);
    };
    let metrics = Arc::new(DmarcMetrics::default());
    let recorder = DmarcRecorder::open(store, Limits::default(), metrics)
        .map_err(|e| anyhow::anyhow!("opening the DMARC report store: {e}"))?;
    let mut sender = sender(config, s, store, resolver, queue, recorder.clone())?;
    let shared = cluster.map(|c| Arc::new(ClusterDmarc::new(c.clone(), recorder.clone())));
    if let Some(shared) = &shared {
        sender = sender.with_backend(shared.clone(), shared.clone());
    }
    info!(from = %s.from, shared = shared.is_some(), "DMARC aggregate reports on");
    Ok(Some(DmarcReports {
        recorder,
        sender: Arc::new(sender),
        shared,
    }))
}

fn sender(
    config: &Config,
    s: &DmarcReportsSending,
    store: &Store,
    resolver: &HickoryResolver,
    queue: &Queue,
    recorder: DmarcRecorder,
) -> Result<DmarcReportSender> {
    // Validation made sure `from` is an address.
    let from_domain = s
        .from
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let signer = portcullis_auth::DkimSigner::from_pem_file(
        &s.dkim_key,
        &from_domain,
        &s.dkim_selector,
        &REPORT_HEADERS,
    )
    .map_err(|e| anyhow::anyhow!("[dmarc_reports] dkim_key {}: {e}", s.dkim_key.display()))?;
    let info = ReportInfo {
        organization: s.organization.clone(),
        contact: s.contact.clone(),
        submitter: from_domain,
    };
    let mut settings = SenderSettings::new(info, &s.from);
    settings.send_window = s.send_window;
    let mailer = QueueMailer {
        queue: queue.clone(),
        hostname: config.hostname.clone(),
        clock: Arc::new(SystemClock),
    };
    DmarcSender::new(
        store.clone(),
        recorder,
        resolver.clone(),
        mailer,
        signer,
        settings,
        Arc::new(SystemClock),
    )
    .map_err(|e| anyhow::anyhow!("opening the DMARC report store: {e}"))
}

/// Runs the sender's daily loop on `services` until `shutdown`, and in
/// cluster mode the sync of this node's counts.
pub fn spawn_sender(services: &TaskTracker, reports: DmarcReports, shutdown: &CancellationToken) {
    services.spawn(portcullis_dmarc::run(reports.sender, shutdown.clone()));
    if let Some(shared) = reports.shared {
        services.spawn(sync(shared, shutdown.clone()));
    }
}

/// Pushes this node's counts every `[cluster] sync_interval` until
/// `shutdown`, and once more then (a node stopped for a while still has
/// its counts in the day's report). A failure is counted as a fall-back
/// by the cluster (and the counts wait in the local store for the next
/// sync).
async fn sync(shared: Arc<ClusterDmarc>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(shared.sync_interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = every.tick() => false,
        };
        match shared.sync(std::time::SystemTime::now()).await {
            Ok(s) => debug!(
                pushed = s.pushed,
                finished = s.finished,
                "DMARC counts synced"
            ),
            Err(e) => debug!(error = %e, "DMARC counts not synced; kept locally"),
        }
        if stopping {
            break;
        }
    }
}
