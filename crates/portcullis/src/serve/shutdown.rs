//! Signals and the two-phase shutdown.

use crate::reload::Reloader;
use anyhow::{Context, Result};
use portcullis_inbound::InboundMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The process's signal handlers: SIGTERM and SIGINT stop the server,
/// SIGHUP reloads the whole config (as `portcullis reload` does).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals are queued for
    /// [`Signals::wait`] instead of taking their default action.
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT, reloading the config on SIGHUP (the
    /// reload logs its outcome; a failed one leaves the config in force).
    pub async fn wait(mut self, reloader: &Arc<Reloader>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { info!(signal = "SIGTERM", "signal received"); return }
                _ = self.int.recv() => { info!(signal = "SIGINT", "signal received"); return }
                _ = self.hup.recv() => {
                    let reloader = reloader.clone();
                    // File reads and key parsing: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
                }
            }
        }
    }
}

/// The tasks of a running server and the token that stops them: sessions
/// apart from the services, so that sessions get the grace period.
#[derive(Default)]
pub struct Lifecycle {
    /// Cancelled once to stop everything.
    pub shutdown: CancellationToken,
    /// One task per SMTP session.
    pub sessions: TaskTracker,
    /// One task per delivery attempt the scheduler started: each writes
    /// its results when its session ends, so it gets the grace period too.
    pub attempts: TaskTracker,
    /// Listeners, the scheduler loop, the admin socket, the metrics endpoint,
    /// the refresh and report loops.
    pub services: TaskTracker,
}

impl Lifecycle {
    /// Phase one: stop accepting and stop starting deliveries; idle
    /// sessions get 421 4.3.2 at once, those in DATA and the delivery
    /// attempts in flight may finish within `grace` (an attempt cut off
    /// after it is over stays recorded and is tried again at the next
    /// start). Then the services get a few seconds to stop.
    pub async fn drain(self, grace: Duration, metrics: &InboundMetrics) {
        info!(grace = ?grace, open = metrics.open_sessions(), attempts = self.attempts.len(), "shutting down");
        self.shutdown.cancel();
        self.sessions.close();
        self.attempts.close();
        self.services.close();
        let in_flight = async { tokio::join!(self.sessions.wait(), self.attempts.wait()) };
        if tokio::time::timeout(grace, in_flight).await.is_err() {
            warn!(
                open = metrics.open_sessions(),
                attempts = self.attempts.len(),
                "grace period over; closing remaining sessions and delivery attempts"
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.services.wait()).await;
    }
}
