//! The builder of a [`ReportSender`] (STYLE 22): parts and settings in,
//! settings checked, the sending state's tree opened.

use std::sync::Arc;
use std::time::Duration;

use portcullis_auth::DkimSigner;
use portcullis_dns::Resolver;
use portcullis_store::TreeName;

use crate::settings::{ReportParts, ReportSettings};
use crate::shared::CountSync;
use crate::{ReportMailer, ReportSender, TlsRptError};

/// Builds a [`ReportSender`] (STYLE 22).
pub struct ReportSenderBuilder<R, M> {
    parts: ReportParts<R, M>,
    settings: ReportSettings,
    signer: Option<DkimSigner>,
    shared: Option<(Arc<CountSync>, Duration)>,
}

impl<R, M> std::fmt::Debug for ReportSenderBuilder<R, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportSenderBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<R: Resolver, M: ReportMailer> ReportSender<R, M> {
    /// A builder over `parts`, with `settings` (start from
    /// [`ReportSettings::new`]).
    pub fn builder(
        parts: ReportParts<R, M>,
        settings: ReportSettings,
    ) -> ReportSenderBuilder<R, M> {
        ReportSenderBuilder {
            parts,
            settings,
            signer: None,
            shared: None,
        }
    }
}

impl<R: Resolver, M: ReportMailer> ReportSenderBuilder<R, M> {
    /// The DKIM signer for report mail. Without one, `mailto:` destinations
    /// are given up (RFC 8460 §5.3 requires a signature); `https:` ones
    /// still get reports.
    pub fn signer(mut self, signer: DkimSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    /// Cluster mode: reports of every node's counts (pushed by `sync`, which
    /// also names the shared store), sent by the node holding a report's
    /// claim for `lease` (renewed every third of it while it works; at
    /// least 300 ms).
    pub fn shared(mut self, sync: Arc<CountSync>, lease: Duration) -> Self {
        self.shared = Some((sync, lease.max(Duration::from_millis(300))));
        self
    }

    /// Sets [`ReportSettings::send_window`].
    pub fn send_window(mut self, window: Duration) -> Self {
        self.settings.send_window = window;
        self
    }

    /// Sets [`ReportSettings::backoff`].
    pub fn backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Sets [`ReportSettings::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = n.max(1);
        self
    }

    /// Sets [`ReportSettings::retention_days`] (at least 2).
    pub fn retention_days(mut self, days: u32) -> Self {
        self.settings.retention_days = i64::from(days.max(2));
        self
    }

    /// Sets [`ReportSettings::poll_interval`] (at least 1 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every.max(Duration::from_secs(1));
        self
    }

    /// Builds the sender; the settings must name the reporter and a `From`
    /// address.
    pub fn build(self) -> Result<ReportSender<R, M>, TlsRptError> {
        self.settings.check()?;
        Ok(ReportSender {
            sent: self.parts.store.tree(TreeName::TlsRptSent)?,
            clock: Arc::clone(self.parts.recorder.clock()),
            parts: self.parts,
            settings: self.settings,
            signer: self.signer,
            pass: tokio::sync::Mutex::new(()),
            shared: self
                .shared
                .map(|(sync, lease)| crate::send::SharedMode { sync, lease }),
        })
    }
}
