//! What the admin handler and the metrics page reach of the running
//! server, one small type per concern. `serve` builds them at start.

use crate::serve::CertWatch;
use crate::tlsrpt::TlsRptSender;
use portcullis_config::TlsRpt;
use portcullis_delivery::Planner;
use portcullis_dns::HickoryResolver;
use portcullis_inbound::ListenerHandle;
use portcullis_policy::PolicyEngine;
use portcullis_queue::{Queue, QueueMetrics, SchedulerSettings};
use portcullis_screen::Screen;
use portcullis_tlsrpt::ReportMetrics;
use portcullis_tlsrpt::TlsRptRecorder;
use portcullis_tlsrpt::received::ReceivedReports;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The MTA-STS engine as the binary builds it.
pub type Engine = PolicyEngine<HickoryResolver>;

/// The process itself, as `status` reports it.
pub struct ServerInfo {
    /// The hostname we announce.
    pub hostname: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// When the server started.
    pub started: Instant,
    /// The bound listeners (ephemeral ports resolved), SMTP and `mta-sts`.
    pub listeners: Vec<ListenerHandle>,
    /// The certificate each listener presents.
    pub certificates: CertWatch,
}

/// The queue and what admin operations on it need.
pub struct QueueAccess {
    /// The queue.
    pub queue: Queue,
    /// Retry schedule and DSN settings (`delete --bounce` makes a DSN).
    pub settings: Arc<SchedulerSettings>,
    /// The scheduler's counters (a bounce counts as a DSN).
    pub counters: Arc<QueueMetrics>,
}

/// MTA-STS, and what `policy explain` needs to plan a delivery.
pub struct PolicyAccess {
    /// The policy engine (cache, fetch, pins).
    pub engine: Arc<Engine>,
    /// What delivery plans with (resolver, routes, our domains and
    /// listeners, MX port): `policy explain` shows the same plan.
    pub planner: Planner<HickoryResolver>,
}

/// TLS-RPT: the recorder (always on) and the sender (with reporting on).
pub struct TlsRptAccess {
    /// The report sender; `None` with `[tlsrpt] enabled = false`.
    pub sender: Option<Arc<TlsRptSender>>,
    /// Daily aggregates (recorded even with reporting off).
    pub recorder: TlsRptRecorder,
    /// Reports sent, by transport and outcome.
    pub metrics: Arc<ReportMetrics>,
    /// `[tlsrpt]` (the reporter's names, for `show` with reporting off).
    pub settings: TlsRpt,
    /// The reports other providers sent about our domains.
    pub received: ReceivedReports,
}

/// DMARC aggregate reports (`dmarc list|send`): `None` with
/// `[dmarc_reports] enabled = false`.
pub struct DmarcAccess {
    /// The recorder and the sender.
    pub reports: Option<crate::dmarc::DmarcReports>,
}

/// The screen in force, as `screen show|clear` reach it: a function that
/// gives the current [`Screen`] (the inbound side's live generation, which
/// a reload replaces), asked once per request, so the handler always sees
/// the settings and the shared state the sessions use.
pub struct ScreenAccess {
    current: Box<dyn Fn() -> Screen + Send + Sync>,
}

impl ScreenAccess {
    /// Access through `current`, called once per admin request.
    pub fn new(current: impl Fn() -> Screen + Send + Sync + 'static) -> ScreenAccess {
        ScreenAccess {
            current: Box::new(current),
        }
    }

    /// The screen in force now.
    pub fn screen(&self) -> Screen {
        (self.current)()
    }
}

/// What `policy own` checks with besides the config in force: the
/// server's `[dns]` resolver (as every lookup of the server) and its
/// clock (certificate expiry and validity).
pub struct OwnAccess {
    /// The resolver the whole server uses.
    pub resolver: HickoryResolver,
    /// The wall clock.
    pub clock: Arc<dyn portcullis_types::Clock>,
}
