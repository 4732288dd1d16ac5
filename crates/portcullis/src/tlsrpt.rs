//! TLS-RPT as the binary wires it: the recorder every outbound TLS outcome
//! goes to, the report sender and its loop, the counters of reports
//! sent, and the reports other providers send about our domains. In
//! cluster mode the node's counts are pushed to the cluster's database
//! every `sync_interval`, and the sender reports every node's counts.

use anyhow::{Context, Result};
use portcullis_cluster::Cluster;
use portcullis_cluster::tlsrpt::PgTlsRpt;
use portcullis_config::{Config, TlsRptSending};
use portcullis_dns::HickoryResolver;
use portcullis_queue::Queue;
use portcullis_store::Store;
use portcullis_tlsrpt::received::{LiveOurs, Ours, ReceivedLimits, ReceivedReports};
use portcullis_tlsrpt::shared::{CountSync, SharedReports};
use portcullis_tlsrpt::{
    HttpsPoster, QueueMailer, ReportInfo, ReportMetrics, ReportParts, ReportSender,
    ReportSenderBuilder, ReportSettings, TlsRptRecorder, TlsRptSink,
};
use portcullis_types::SystemClock;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// The recorder of daily TLS-RPT aggregates, and the sink delivery reports
/// every TLS outcome to.
pub fn recorder(store: &Store) -> Result<(TlsRptRecorder, Arc<TlsRptSink>)> {
    // Every outbound TLS outcome: logged and counted, and recorded for the
    // daily TLS-RPT reports (recorded even with reporting off, so turning
    // it on later has the day's counts).
    let tlsrpt_recorder = TlsRptRecorder::new(store, Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("opening the TLS-RPT store: {e}"))?;
    let reporter = Arc::new(TlsRptSink::new(tlsrpt_recorder.clone()));
    Ok((tlsrpt_recorder, reporter))
}

/// Our domains and report mailboxes as `config` says (what a reload puts
/// in force in [`ReceivedReports::ours`]).
pub fn ours(config: &Config) -> Ours {
    Ours::new(
        config.relay.accepted_domains.clone(),
        config.publish.report_mailboxes(),
    )
}

/// The reports others send about our domains, in the store (the
/// `ReportIntake` of the HTTPS `/tlsrpt` endpoint and of the mail path).
pub fn received(config: &Config, store: &Store) -> Result<ReceivedReports> {
    ReceivedReports::open(
        store,
        Arc::new(SystemClock),
        LiveOurs::new(ours(config)),
        ReceivedLimits::default(),
    )
    .map_err(|e| anyhow::anyhow!("opening the received TLS reports: {e}"))
}

/// Cluster mode: the push of this node's counts to the cluster's
/// database (`None` without `[cluster]`).
pub fn count_sync(cluster: Option<&Cluster>, recorder: &TlsRptRecorder) -> Option<Arc<CountSync>> {
    let cluster = cluster?;
    let shared: Arc<dyn SharedReports> = Arc::new(PgTlsRpt::new(cluster.clone()));
    Some(Arc::new(CountSync::new(recorder.clone(), shared)))
}

/// Pushes this node's counts every `[cluster] sync_interval` until
/// `shutdown` (counts are recorded, and pushed, with reporting off too, so
/// that turning it on later has the cluster's day).
pub fn spawn_sync(
    services: &TaskTracker,
    sync: Arc<CountSync>,
    cluster: &Cluster,
    shutdown: &CancellationToken,
) {
    services.spawn(portcullis_tlsrpt::shared::run_sync(
        sync,
        cluster.sync_interval(),
        shutdown.clone(),
    ));
}

/// The report sender, with `[tlsrpt] enabled`; `None` without. With
/// `sync` (cluster mode) it reports every node's counts and sends a report
/// only while it holds the report's claim.
pub fn sender(
    config: &Config,
    store: &Store,
    resolver: &HickoryResolver,
    tlsrpt_recorder: &TlsRptRecorder,
    queue: &Queue,
    sync: Option<(&Arc<CountSync>, &Cluster)>,
) -> Result<Option<Arc<TlsRptSender>>> {
    let client_tls_for_reports = portcullis_tls::ClientTls::new(&config.tls.extra_roots)
        .context("loading [tls] extra_roots")?;
    let tlsrpt_sender = if let Some(sending) = config.tlsrpt.sending() {
        let mut builder = tlsrpt_builder(
            config,
            sending,
            store,
            resolver,
            &client_tls_for_reports,
            tlsrpt_recorder.clone(),
            queue.clone(),
        )?;
        if let Some((sync, cluster)) = sync {
            builder = builder.shared(sync.clone(), PgTlsRpt::lease(cluster));
        }
        Some(Arc::new(
            builder
                .build()
                .map_err(|e| anyhow::anyhow!("[tlsrpt]: {e}"))?,
        ))
    } else {
        None
    };
    Ok(tlsrpt_sender)
}

/// Runs the sender's daily loop on `services` until `shutdown`, counting
/// every outcome in `tlsrpt_metrics`.
pub fn spawn_sender(
    services: &TaskTracker,
    sender: Arc<TlsRptSender>,
    tlsrpt_metrics: &Arc<ReportMetrics>,
    shutdown: &CancellationToken,
) {
    let m = tlsrpt_metrics.clone();
    services.spawn(portcullis_tlsrpt::run_with(
        sender,
        shutdown.clone(),
        move |o| {
            m.count(o.transport(), o.kind());
        },
    ));
}

/// The TLS-RPT sender as the binary builds it.
pub type TlsRptSender = ReportSender<HickoryResolver, QueueMailer>;

/// The builder of the TLS-RPT sender from `[tlsrpt]` (validation already
/// made sure every key is present when reporting is on).
fn tlsrpt_builder(
    config: &Config,
    t: &TlsRptSending,
    store: &Store,
    resolver: &HickoryResolver,
    client_tls: &portcullis_tls::ClientTls,
    recorder: TlsRptRecorder,
    queue: Queue,
) -> Result<ReportSenderBuilder<HickoryResolver, QueueMailer>> {
    let from = t.from.clone();
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
        organization: t.reporter.organization.clone(),
        contact: t.reporter.contact.clone(),
        submitter: t.reporter.submitter.clone(),
    };
    let parts = ReportParts {
        store: store.clone(),
        recorder,
        resolver: resolver.clone(),
        mailer,
        poster,
    };
    let builder =
        ReportSender::builder(parts, ReportSettings::new(info, &from)).send_window(t.send_window);
    let signer =
        portcullis_tlsrpt::report_signer_from_file(&t.dkim_key, &from_domain, &t.dkim_selector)
            .map_err(|e| anyhow::anyhow!("[tlsrpt] dkim_key {}: {e}", t.dkim_key.display()))?;
    info!(record = %signer.dns_name(), "TLS-RPT reports are DKIM-signed; publish the key's DNS record there");
    Ok(builder.signer(signer))
}
