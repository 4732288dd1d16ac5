//! Full reload (SIGHUP and `portcullis reload`): one function, [`Reloader::reload`],
//! re-reads the config file the server was started with and puts it in
//! force, or changes nothing and says why.
//!
//! The order is what makes a bad file harmless: read and validate the file
//! (the config crate names the key and line), carry over the settings
//! that need a restart ([`diff`]), load everything the new config points
//! at (verifier, DKIM keys, OAuth secret, recipients files, pins, the
//! certificate files);
//! only when all of that succeeded are the new parts swapped in, each as
//! one `Arc`: the inbound generation (read once per connection, so open
//! sessions finish under theirs), delivery's routes and accepted domains
//! (read once per domain delivery), the MTA-STS file pins, our domains and
//! TLS report mailboxes for received reports.

mod diff;

use crate::inbound_parts::InboundParts;
use crate::serve::PublishSite;
use crate::state::Engine;
use anyhow::Context;
use portcullis_admin::ReloadReport;
use portcullis_auth::Verifier;
use portcullis_config::Config;
use portcullis_delivery::{Destinations, LiveDestinations};
use portcullis_dns::HickoryResolver;
use portcullis_inbound::{Inbound, InboundBuilder};
use portcullis_queue::Queue;
use portcullis_tls::ServerTls;
use portcullis_tlsrpt::received::LiveOurs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// What a reload reaches of the running server: every part that holds
/// settings a reload may change.
pub struct Targets {
    /// The inbound service (sessions, AUTH, the accept pipeline).
    pub inbound: Arc<Inbound>,
    /// The queue accepted mail goes to.
    pub queue: Queue,
    /// The server certificate.
    pub tls: ServerTls,
    /// The resolver of `[dns]` (verification is built on it).
    pub resolver: HickoryResolver,
    /// Delivery's routes and accepted domains.
    pub destinations: LiveDestinations,
    /// MTA-STS, for the file pins.
    pub policy: Arc<Engine>,
    /// Our domains and TLS report mailboxes, for received TLS reports.
    pub report_ours: LiveOurs,
    /// What the `mta-sts` listeners serve: `[publish]` and the accepted
    /// domains.
    pub site: Arc<PublishSite>,
    /// The certificates of `mta-sts` listeners that have their own, read
    /// again at each reload like the `[tls]` one.
    pub listener_certificates: Vec<ServerTls>,
}

/// The config in force and the verifier built for it.
struct InForce {
    config: Arc<Config>,
    verifier: Option<Arc<Verifier>>,
}

/// Reloads the config file of a running server; one at a time.
pub struct Reloader {
    /// The file `serve` was started with; `None`: the development
    /// defaults, which a reload reads again (so nothing changes).
    path: Option<PathBuf>,
    in_force: Mutex<InForce>,
    targets: Targets,
}

impl Reloader {
    /// A reloader for a server started with `config` (read from `path`)
    /// and `verifier` (built for it), acting on `targets`.
    pub fn new(
        path: Option<PathBuf>,
        config: Config,
        verifier: Option<Arc<Verifier>>,
        targets: Targets,
    ) -> Reloader {
        Reloader {
            path,
            in_force: Mutex::new(InForce {
                config: Arc::new(config),
                verifier,
            }),
            targets,
        }
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.lock().config.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InForce> {
        self.in_force.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the config file and puts it in force (`trigger` names who
    /// asked, `SIGHUP` or `admin`, in the log). On an error nothing
    /// changes: the error is logged and returned (for a bad file: every
    /// problem with its key and line).
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        // One reload at a time: the lock is held until the new config is
        // in force, so two reloads never interleave their swaps.
        let mut in_force = self.lock();
        match self.apply(trigger, &mut in_force) {
            Ok(report) => Ok(report),
            Err(e) => {
                let reason = format!("{e:#}");
                warn!(trigger, error = %reason, "reload failed; the config in force stays");
                Err(reason)
            }
        }
    }

    /// The steps of [`Reloader::reload`]: everything that can fail first,
    /// then the swaps, which cannot.
    fn apply(&self, trigger: &str, in_force: &mut InForce) -> anyhow::Result<ReloadReport> {
        let t = &self.targets;
        let mut config = crate::config_cmd::load_config(self.path.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let old = &in_force.config;
        let needs_restart = diff::keep_restart_settings(old, &mut config);
        let changed = diff::changed_sections(old, &config);
        // A verifier is a thread pool: kept when its settings are.
        let reuse = in_force
            .verifier
            .clone()
            .filter(|_| old.verify == config.verify);
        let parts = InboundParts::load(&config, &t.resolver, reuse)?;
        // The screen's new settings and recipients files (its state stays
        // shared): a broken file fails the reload here, before any swap.
        let screen = match t.inbound.screen() {
            Some(screen) => Some(
                screen
                    .reload(&config)
                    .context("loading [recipients] files")?,
            ),
            None => None,
        };
        let pins = match &config.mta_sts.pins_dir {
            Some(dir) => portcullis_policy::load_pins_dir(dir, t.policy.now()).map_err(|e| {
                anyhow::anyhow!("loading [mta_sts] pins_dir {}: {e}", dir.display())
            })?,
            None => Vec::new(),
        };
        // The mta-sts listeners' own certificates, then the shared one,
        // last of the fallible steps: each swaps itself on success.
        for tls in &t.listener_certificates {
            if let Err(e) = tls.reload() {
                warn!(
                    "{trigger}: mta-sts listener certificate reload failed; keeping the current one"
                );
                return Err(e).context("reloading an mta-sts listener's certificate");
            }
        }
        if let Err(e) = t.tls.reload() {
            warn!("{trigger}: tls reload failed; keeping the current certificate");
            return Err(e).context("reloading the [tls] certificate");
        }
        info!(certificate = %t.tls.describe(), "{trigger}: tls certificate reloaded");

        in_force.verifier = parts.verifier.clone();
        let mut builder = parts.apply(InboundBuilder::new(&config, t.queue.clone()));
        if let Some(screen) = screen {
            builder = builder.screen(screen);
        }
        builder.reload(&t.inbound);
        t.destinations.set(Destinations {
            routes: config.routes.clone(),
            accepted: config.relay.accepted_domains.clone(),
            dane_only: config.delivery.dane_only.clone(),
        });
        t.policy.set_file_pins(pins);
        t.report_ours.set(crate::tlsrpt::ours(&config));
        t.site
            .update(config.publish.clone(), &config.relay.accepted_domains);
        in_force.config = Arc::new(config);
        if !needs_restart.is_empty() {
            warn!(trigger, settings = ?needs_restart, "needs a restart: {}; these stay as the server started", needs_restart.join(", "));
        }
        info!(trigger, changed = ?changed, needs_restart = ?needs_restart, "config reloaded");
        Ok(ReloadReport {
            config: self.path.as_ref().map(|p| p.display().to_string()),
            changed: changed.into_iter().map(String::from).collect(),
            needs_restart: needs_restart.into_iter().map(String::from).collect(),
            certificate: t.tls.describe().to_string(),
        })
    }
}
