//! What sessions run under, built from one config: the per-role session
//! settings, the AUTH checker (users file, hashing gate), the accept
//! pipeline (verifier, DKIM keys) and the screen (its settings; its state
//! is shared by every generation). A reload builds a new [`Live`] and swaps
//! it in whole; each connection reads it once when it is accepted, so an
//! open session finishes under the settings it started with. [`Stable`]
//! is what every generation shares and a reload keeps.

use crate::accept::AcceptPipeline;
use crate::metrics::InboundMetrics;
use crate::session::SessionConfig;
use crate::smtp_auth::AuthChecker;
use crate::spooler::{ReadBudget, Spooler};
use portcullis_config::Role;
use portcullis_screen::Screen;
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::rate::SendRate;
use portcullis_types::Clock;
use std::sync::{Arc, RwLock};

/// One generation of the config-derived parts of the inbound service.
pub(crate) struct Live {
    /// The session settings of each listener role.
    pub(crate) configs: Vec<(Role, Arc<SessionConfig>)>,
    /// `[limits] max_connections_per_ip`, per listener.
    pub(crate) max_per_addr: u32,
    /// Decides SMTP AUTH.
    pub(crate) auth: AuthChecker,
    /// Verifies and stores complete messages.
    pub(crate) pipeline: AcceptPipeline,
    /// The read budget of the pipeline and the message size it was sized
    /// for: a reload that keeps the size keeps the budget (and what is
    /// counted in it), so a reload never doubles the memory bound.
    pub(crate) budget: (u64, ReadBudget),
    /// The screen in front of the queue; `None`: nothing is screened.
    pub(crate) screen: Option<Screen>,
}

impl Live {
    /// The session settings of listeners of `role`.
    pub(crate) fn session_config(&self, role: Role) -> Option<Arc<SessionConfig>> {
        self.configs
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, c)| c.clone())
    }
}

/// The generation in force: read once per connection, replaced by a
/// reload.
pub(crate) struct LiveSlot(RwLock<Arc<Live>>);

impl LiveSlot {
    /// A slot holding `live`.
    pub(crate) fn new(live: Live) -> LiveSlot {
        LiveSlot(RwLock::new(Arc::new(live)))
    }

    /// The generation in force now.
    pub(crate) fn get(&self) -> Arc<Live> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `live` in force for connections accepted from now on.
    pub(crate) fn set(&self, live: Live) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}

/// The parts of the service that outlive a reload: state shared by every
/// generation of settings.
pub(crate) struct Stable {
    /// Failed-AUTH accounting (lockouts survive a reload).
    pub(crate) guard: Arc<AuthGuard>,
    /// Per-user sending rates.
    pub(crate) rate: Arc<SendRate>,
    /// Draws queue ids; writes large messages to the store as they arrive.
    pub(crate) spooler: Spooler,
    /// The inbound counters.
    pub(crate) metrics: Arc<InboundMetrics>,
    /// The time of queue ids, trace headers and envelopes.
    pub(crate) clock: Arc<dyn Clock>,
    /// True when a certificate is loaded (STARTTLS can be offered).
    pub(crate) tls_available: bool,
    /// Where DMARC results are counted (`[dmarc_reports]`, a restart
    /// setting): taken at the build, kept by reloads.
    pub(crate) dmarc: Option<portcullis_dmarc::DmarcRecorder>,
}
