//! Building the inbound service: [`InboundBuilder`] takes the runtime
//! config and the store, and optionally what the binary wires in (the
//! certificate, counters, clock, verifier, DKIM keys, token
//! introspection, the screen); it makes the per-role session settings, the AUTH
//! checker and the accept pipeline, at the start ([`InboundBuilder::build`])
//! and again at each reload ([`InboundBuilder::reload`]).

use crate::accept::{AcceptPipeline, PipelineParts};
use crate::conn_limit::ConnLimit;
use crate::dkim::DkimSigners;
use crate::live::{Live, LiveSlot, Stable};
use crate::metrics::InboundMetrics;
use crate::server::Inbound;
use crate::session::{ScreenScope, SessionConfig, VerifyScope};
use crate::smtp_auth::AuthChecker;
use crate::spooler::{ReadBudget, Spooler};
use portcullis_auth::Verifier;
use portcullis_config::{Config, Role, SpfFail};
use portcullis_dmarc::DmarcRecorder;
use portcullis_queue::LocalSigner;
use portcullis_queue::Queue;
use portcullis_screen::Screen;
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::oauth::Introspector;
use portcullis_submission::rate::SendRate;
use portcullis_tls::ServerTls;
use portcullis_types::{Clock, SystemClock};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Builds an [`Inbound`]. Without the optional parts: no TLS (STARTTLS
/// and AUTH not offered, `submissions` listeners refuse every
/// connection), fresh counters, the system clock, no verification, no
/// DKIM signing, no OAuth, no screen.
pub struct InboundBuilder<'a> {
    config: &'a Config,
    queue: Queue,
    tls: Option<ServerTls>,
    metrics: Option<Arc<InboundMetrics>>,
    clock: Arc<dyn Clock>,
    verifier: Option<Arc<Verifier>>,
    dkim: DkimSigners,
    oauth: Option<Arc<Introspector>>,
    screen: Option<Screen>,
    dmarc: Option<DmarcRecorder>,
}

impl<'a> InboundBuilder<'a> {
    /// A service for the runtime `config`, storing accepted mail in
    /// `queue`.
    pub fn new(config: &'a Config, queue: Queue) -> InboundBuilder<'a> {
        InboundBuilder {
            config,
            queue,
            tls: None,
            metrics: None,
            clock: Arc::new(SystemClock),
            verifier: None,
            dkim: DkimSigners::default(),
            oauth: None,
            screen: None,
            dmarc: None,
        }
    }

    /// Counts the DMARC results of verified mail into `recorder`, for the
    /// aggregate reports of `[dmarc_reports]`. Taken by
    /// [`InboundBuilder::build`]; a reload keeps the one in force.
    pub fn dmarc_reports(mut self, recorder: DmarcRecorder) -> Self {
        self.dmarc = Some(recorder);
        self
    }

    /// The server certificate: STARTTLS is offered, implicit TLS served.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Counts into `metrics` (shared with the metrics page).
    pub fn metrics(mut self, metrics: Arc<InboundMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Takes the time of queue ids, trace headers and envelopes from
    /// `clock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Verifies mail on `smtp` listeners as `[verify]` says; without a
    /// verifier nothing is verified.
    pub fn verifier(mut self, verifier: Arc<Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Signs mail we originate (from authenticated users, and relayed for
    /// `trusted_networks`) with the key of its From domain (see
    /// [`DkimSigners`]); the queue signs its DSNs with the same keys.
    pub fn dkim(mut self, dkim: DkimSigners) -> Self {
        self.dkim = dkim;
        self
    }

    /// Offers OAUTHBEARER and XOAUTH2, checked by `introspector`.
    pub fn oauth(mut self, introspector: Arc<Introspector>) -> Self {
        self.oauth = Some(introspector);
        self
    }

    /// Screens clients with `screen` (built for this builder's config; at
    /// a reload, the one [`Screen::reload`] made for the new config):
    /// connection and message rates and DNS lists on `smtp` listeners,
    /// the RCPT checks (recipient verification on every listener).
    pub fn screen(mut self, screen: Screen) -> Self {
        self.screen = Some(screen);
        self
    }

    /// The service, shared by all listeners and sessions.
    pub fn build(self) -> Arc<Inbound> {
        let metrics = self.metrics.clone().unwrap_or_default();
        let stable = Stable {
            guard: Arc::new(AuthGuard::new(self.config.submission.lockout.clone())),
            rate: Arc::new(SendRate::new()),
            spooler: Spooler::new(self.queue.clone(), self.clock.clone(), rand::random()),
            metrics: metrics.clone(),
            clock: self.clock.clone(),
            tls_available: self.tls.is_some(),
            dmarc: self.dmarc.clone(),
        };
        let config = self.config;
        let tls = self.tls.clone();
        let live = self.live(&stable, None);
        Arc::new(Inbound {
            tls,
            metrics,
            limits: ConnLimit::new(config.limits.max_connections),
            live: LiveSlot::new(live),
            session_ids: AtomicU64::new(rand::random::<u32>() as u64),
            stable,
        })
    }

    /// Puts this builder's config, verifier, DKIM keys, OAuth and screen in force
    /// in the running `inbound`, for connections accepted from now on;
    /// open sessions finish under what they started with. What outlives a
    /// reload stays `inbound`'s: the certificate (reloaded on its own),
    /// counters, clock, the connection totals (`[limits] max_connections`,
    /// `[[listen]]`), lockout state and its `[submission.lockout]`
    /// settings, and sending rates.
    pub fn reload(self, inbound: &Inbound) {
        let old = inbound.live.get();
        let live = self.live(&inbound.stable, Some(&old.budget));
        inbound.live.set(live);
    }

    /// The config-derived parts over `stable`; the read budget of `old`
    /// when it was sized for the same message size.
    fn live(self, stable: &Stable, old: Option<&(u64, ReadBudget)>) -> Live {
        let config = self.config;
        stable.metrics.watch_introspector(self.oauth.clone());
        let shared = Shared {
            tls_available: stable.tls_available,
            oauth: self.oauth.is_some(),
            verifier: self.verifier.is_some(),
            guard: stable.guard.clone(),
            rate: stable.rate.clone(),
            screen: self.screen.as_ref().map(|s| s.checks_rcpt()),
        };
        let configs = [Role::Smtp, Role::Submission, Role::Submissions]
            .into_iter()
            .map(|role| (role, Arc::new(session_config(config, role, &shared))))
            .collect();
        let size = config.limits.max_message_size;
        let budget = match old {
            Some((s, b)) if *s == size => b.clone(),
            _ => read_budget(config),
        };
        // The same keys sign the DSNs the queue makes (a reload swaps them
        // there too).
        let dkim = Arc::new(self.dkim);
        self.queue
            .set_local_signer((!dkim.is_empty()).then(|| dkim.clone() as Arc<dyn LocalSigner>));
        let pipeline = AcceptPipeline::new(PipelineParts {
            queue: self.queue,
            clock: stable.clock.clone(),
            verifier: self.verifier,
            dkim,
            dmarc: stable.dmarc.clone(),
            spooler: stable.spooler.clone(),
            read_budget: budget.clone(),
            metrics: stable.metrics.clone(),
        });
        let auth = AuthChecker::new(
            config,
            stable.guard.clone(),
            self.oauth,
            stable.metrics.clone(),
        );
        Live {
            configs,
            max_per_addr: config.limits.max_connections_per_ip,
            auth,
            pipeline,
            budget: (size, budget),
            screen: self.screen,
        }
    }
}

/// What every listener's session settings share.
struct Shared {
    tls_available: bool,
    oauth: bool,
    verifier: bool,
    guard: Arc<AuthGuard>,
    rate: Arc<SendRate>,
    /// `None`: no screen; else whether it checks RCPT.
    screen: Option<bool>,
}

/// The session settings of listeners of `role`.
fn session_config(config: &Config, role: Role, shared: &Shared) -> SessionConfig {
    SessionConfig {
        hostname: config.hostname.clone(),
        banner: config.banner.clone(),
        role,
        limits: config.limits.clone(),
        relay: config.relay.clone(),
        bare_newline: config.bare_newline,
        tls_available: shared.tls_available,
        // AUTH needs a users file or token introspection; on port 25 it is
        // off unless `[submission] auth_on_smtp`.
        auth: (config.users_file.is_some() || config.submission.oauth.is_some())
            && (role != Role::Smtp || config.submission.auth_on_smtp),
        submission: config.submission.clone(),
        oauth: shared.oauth,
        guard: shared.guard.clone(),
        rate: shared.rate.clone(),
        verify: match role {
            // Submission is authenticated mail from our own users: only
            // port 25 is verified.
            Role::Smtp if shared.verifier && config.verify.enabled => VerifyScope {
                enabled: true,
                skip_trusted: config.verify.skip_trusted,
                spf_at_mail: config.verify.spf_fail == SpfFail::Reject,
            },
            _ => VerifyScope::default(),
        },
        screen: screen_scope(config, role, shared.screen),
        tls_required_no: config.delivery.tls_required_no,
    }
}

/// What the screen asks of sessions of `role` (`screen`: `None` without
/// one, else whether it checks RCPT). Rates, lists and greylisting are for
/// port 25; recipients are verified on every listener.
fn screen_scope(config: &Config, role: Role, screen: Option<bool>) -> ScreenScope {
    let Some(checks_rcpt) = screen else {
        return ScreenScope::default();
    };
    let smtp = role == Role::Smtp;
    ScreenScope {
        // Counted even without a limit: `screen show` reports the count.
        messages: smtp,
        spf: smtp && config.greylist.enabled,
        recipients: checks_rcpt,
    }
}

/// As many largest messages as there are cores (verification is CPU work:
/// more at once would not finish sooner), and 32 MiB at least.
fn read_budget(config: &Config) -> ReadBudget {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    ReadBudget::new((config.limits.max_message_size * cores).max(32 * 1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: what is configured, and what a listener of `role` offers.
    struct Row {
        role: Role,
        users_file: bool,
        auth_on_smtp: bool,
        verifier: bool,
        spf_reject: bool,
        auth: bool,
        verify: VerifyScope,
    }

    #[track_caller]
    fn check(row: Row) {
        let mut config = portcullis_config::development_defaults();
        config.users_file = row.users_file.then(|| "/nonexistent/users".into());
        config.submission.auth_on_smtp = row.auth_on_smtp;
        config.verify.enabled = true;
        config.verify.spf_fail = if row.spf_reject {
            SpfFail::Reject
        } else {
            SpfFail::Record
        };
        let shared = Shared {
            tls_available: true,
            oauth: false,
            verifier: row.verifier,
            guard: Arc::new(AuthGuard::new(config.submission.lockout.clone())),
            rate: Arc::new(SendRate::new()),
            screen: None,
        };
        let cfg = session_config(&config, row.role, &shared);
        assert_eq!(cfg.role, row.role);
        assert_eq!(cfg.auth, row.auth, "auth offered on {:?}", row.role);
        assert_eq!(cfg.verify, row.verify, "verification on {:?}", row.role);
    }

    const OFF: VerifyScope = VerifyScope {
        enabled: false,
        skip_trusted: false,
        spf_at_mail: false,
    };

    /// AUTH needs a users file (or OAuth) and is off on port 25 unless
    /// `auth_on_smtp`; only port 25 verifies, and only with a verifier.
    #[test]
    fn auth_and_verification_by_role() {
        let smtp_verified = |spf_at_mail| VerifyScope {
            enabled: true,
            skip_trusted: portcullis_config::development_defaults()
                .verify
                .skip_trusted,
            spf_at_mail,
        };
        check(Row {
            role: Role::Smtp,
            users_file: true,
            auth_on_smtp: false,
            verifier: true,
            spf_reject: false,
            auth: false,
            verify: smtp_verified(false),
        });
        check(Row {
            role: Role::Smtp,
            users_file: true,
            auth_on_smtp: true,
            verifier: true,
            spf_reject: true,
            auth: true,
            verify: smtp_verified(true),
        });
        check(Row {
            role: Role::Smtp,
            users_file: false,
            auth_on_smtp: true,
            verifier: false,
            spf_reject: true,
            auth: false,
            verify: OFF,
        });
        check(Row {
            role: Role::Submission,
            users_file: true,
            auth_on_smtp: false,
            verifier: true,
            spf_reject: true,
            auth: true,
            verify: OFF,
        });
        check(Row {
            role: Role::Submissions,
            users_file: true,
            auth_on_smtp: false,
            verifier: true,
            spf_reject: false,
            auth: true,
            verify: OFF,
        });
        check(Row {
            role: Role::Submissions,
            users_file: false,
            auth_on_smtp: false,
            verifier: true,
            spf_reject: false,
            auth: false,
            verify: OFF,
        });
    }

    /// Without a screen nothing is handed to it; with one, port 25 counts
    /// messages (and checks SPF for greylisting when it is on), every
    /// listener hands RCPT to it when it checks RCPT.
    #[test]
    fn screen_scope_by_role() {
        let mut config = portcullis_config::development_defaults();
        assert_eq!(
            screen_scope(&config, Role::Smtp, None),
            ScreenScope::default()
        );
        let all = ScreenScope {
            messages: true,
            spf: false,
            recipients: true,
        };
        assert_eq!(screen_scope(&config, Role::Smtp, Some(true)), all);
        config.greylist.enabled = true;
        assert_eq!(
            screen_scope(&config, Role::Smtp, Some(false)),
            ScreenScope {
                spf: true,
                recipients: false,
                ..all
            }
        );
        for role in [Role::Submission, Role::Submissions] {
            assert_eq!(
                screen_scope(&config, role, Some(true)),
                ScreenScope {
                    messages: false,
                    spf: false,
                    recipients: true,
                }
            );
        }
    }
}
