//! DMARC aggregate reports as the binary wires them (`[dmarc_reports]`):
//! the recorder the inbound side counts verified mail into, the report
//! sender (DKIM key, From, reporter names from the config) and its daily
//! loop. Nothing is recorded or sent with reporting off.

use anyhow::Result;
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
use tracing::info;

/// The DMARC report sender as the binary builds it.
pub type DmarcReportSender = DmarcSender<HickoryResolver, QueueMailer>;

/// The recorder and the sender, with `[dmarc_reports] enabled`.
#[derive(Clone)]
pub struct DmarcReports {
    /// Where the inbound side counts verified mail.
    pub recorder: DmarcRecorder,
    /// Sends the daily reports.
    pub sender: Arc<DmarcReportSender>,
}

/// The recorder and sender of `[dmarc_reports]`; `None` when it is off. A
/// key that cannot be read stops the start.
pub fn build(
    config: &Config,
    store: &Store,
    resolver: &HickoryResolver,
    queue: &Queue,
) -> Result<Option<DmarcReports>> {
    let Some(s) = config.dmarc_reports.sending() else {
        return Ok(None);
    };
    let metrics = Arc::new(DmarcMetrics::default());
    let recorder = DmarcRecorder::open(store, Limits::default(), metrics)
        .map_err(|e| anyhow::anyhow!("opening the DMARC report store: {e}"))?;
    let sender = sender(config, s, store, resolver, queue, recorder.clone())?;
    info!(from = %s.from, "DMARC aggregate reports on");
    Ok(Some(DmarcReports {
        recorder,
        sender: Arc::new(sender),
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

/// Runs the sender's daily loop on `services` until `shutdown`.
pub fn spawn_sender(
    services: &TaskTracker,
    sender: Arc<DmarcReportSender>,
    shutdown: &CancellationToken,
) {
    services.spawn(portcullis_dmarc::run(sender, shutdown.clone()));
}
