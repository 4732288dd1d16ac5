//! SMTP AUTH checking, the driver's half of [`Event::CheckAuth`]: the
//! session decodes the exchange, [`AuthChecker`] decides it against the
//! users file, the lockout state and token introspection.
//!
//! Lockouts first (a locked address or user costs no argon2 and no HTTP
//! request), then the attempt is counted against the address and the user
//! BEFORE the check, so concurrent guesses from one address stop at its
//! limit without each costing a hash; then the mechanism's check: argon2
//! through the per-core [`HashGate`] for passwords (the users file
//! reloaded first when it changed), the SCRAM proof, or token
//! introspection. The outcome settles the count: a success takes it back,
//! a failure keeps it and is delayed, a check that could not be made (454:
//! hashing saturated, introspection busy, its breaker open or the endpoint
//! failing) keeps it against the address only. Everything is logged with
//! the user (never the secret) and counted.
//!
//! [`Event::CheckAuth`]: crate::session::Event::CheckAuth

use crate::metrics::{AuthUnchecked, InboundMetrics};
use crate::session::{AuthCheck, AuthOutcome};
use portcullis_config::Config;
use portcullis_submission::hashing::{HashError, HashGate};
use portcullis_submission::lockout::{Attempt, AuthGuard, Failure, Lock, Scope};
use portcullis_submission::oauth::{self, BearerResponse, Introspector};
use portcullis_submission::scram::{ClientFirst, ScramSecret, ScramServer};
use portcullis_submission::{Credential, UsersDb};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, error, info, warn};

/// Checks SMTP AUTH credentials for every session of the server: owns the
/// users file, the lockout state it shares with the sessions, the hashing
/// gate, the token introspector and the key of fake SCRAM salts.
pub(crate) struct AuthChecker {
    users: Arc<UsersDb>,
    guard: Arc<AuthGuard>,
    /// Password checks (argon2id) at most one per core at a time.
    hashing: HashGate,
    oauth: Option<Arc<Introspector>>,
    /// Keys the fake SCRAM salts of unknown users (random per process).
    scram_key: [u8; 32],
    metrics: Arc<InboundMetrics>,
}

impl AuthChecker {
    /// A checker for `[submission]` of `config` (users file, hashing
    /// queue wait), counting attempts in `guard` (the sessions' lockout
    /// state) and checking tokens with `oauth` when it is set.
    pub(crate) fn new(
        config: &Config,
        guard: Arc<AuthGuard>,
        oauth: Option<Arc<Introspector>>,
        metrics: Arc<InboundMetrics>,
    ) -> AuthChecker {
        AuthChecker {
            users: Arc::new(UsersDb::new(config.users_file.clone())),
            guard,
            hashing: HashGate::per_core(config.submission.auth_queue_wait),
            oauth,
            scram_key: rand::random(),
            metrics,
        }
    }

    /// Decides one AUTH step of a client at `ip` (see the module doc for
    /// the order of lockout, counting and checking); the session answers
    /// with the outcome.
    pub(crate) async fn check(&self, check: AuthCheck, ip: IpAddr) -> AuthOutcome {
        let mechanism = check.mechanism();
        let claimed = check.user().to_string();
        match check {
            AuthCheck::ScramStart(first) => self.scram_first(*first, ip, &claimed, mechanism).await,
            AuthCheck::Password { user, password } => {
                self.password(ip, user, password, mechanism).await
            }
            AuthCheck::ScramFinal { server, message } => {
                self.scram_final(ip, *server, &message, mechanism).await
            }
            AuthCheck::Bearer { response, .. } => {
                self.bearer(ip, response, &claimed, mechanism).await
            }
        }
    }

    /// Counts an attempt of `claimed` from `ip` before its check, or the
    /// lockout that refuses it.
    fn attempt(&self, ip: IpAddr, claimed: &str, mechanism: &str) -> Result<Attempt, AuthOutcome> {
        self.guard
            .attempt(ip, claimed, Instant::now())
            .map_err(|lock| locked_out(lock, claimed, mechanism))
    }

    /// SCRAM client-first: not a credential yet, so nothing is counted,
    /// only the lockouts apply.
    async fn scram_first(
        &self,
        first: ClientFirst,
        ip: IpAddr,
        claimed: &str,
        mechanism: &str,
    ) -> AuthOutcome {
        let named = (!claimed.is_empty()).then_some(claimed);
        match self.guard.locked(ip, named, Instant::now()) {
            Some(lock) => locked_out(lock, claimed, mechanism),
            None => self.scram_start(first, ip, mechanism).await,
        }
    }

    /// PLAIN or LOGIN: argon2 through the hashing gate.
    async fn password(
        &self,
        ip: IpAddr,
        user: String,
        password: String,
        mechanism: &str,
    ) -> AuthOutcome {
        let attempt = match self.attempt(ip, &user, mechanism) {
            Ok(attempt) => attempt,
            Err(locked) => return locked,
        };
        let users = self.users.clone();
        let name = user.clone();
        let checked = self
            .hashing
            .run(move |memory| users.current().verify_in(&name, &password, memory))
            .await;
        match checked {
            Ok(Some(credential)) => {
                self.metrics.password_check();
                let via = match &credential {
                    Credential::Password => "password".to_string(),
                    Credential::App(label) => format!("app password {label}"),
                };
                self.auth_success(attempt, ip, user, mechanism, &via)
            }
            Ok(None) => {
                self.metrics.password_check();
                self.auth_failure(attempt, &user, mechanism, None).await
            }
            Err(e) => {
                if e != HashError::Busy {
                    error!(user = %user, error = %e, "password check failed");
                }
                self.auth_unchecked(attempt, &user, mechanism, AuthUnchecked::HashBusy)
                    .await
            }
        }
    }

    /// SCRAM client-final: the proof is a few SHA-256 operations against
    /// the stored secret (no PBKDF2 per attempt), so no gate is needed.
    async fn scram_final(
        &self,
        ip: IpAddr,
        server: ScramServer,
        message: &str,
        mechanism: &str,
    ) -> AuthOutcome {
        let user = server.username().to_string();
        let attempt = match self.attempt(ip, &user, mechanism) {
            Ok(attempt) => attempt,
            Err(locked) => return locked,
        };
        match server.client_final(message) {
            Ok(server_final) => match self.auth_success(attempt, ip, user, mechanism, "password") {
                AuthOutcome::Success { user } => AuthOutcome::ScramSuccess { user, server_final },
                other => other,
            },
            Err(e) => {
                debug!(user = %user, error = %e, "SCRAM exchange failed");
                self.auth_failure(attempt, &user, mechanism, None).await
            }
        }
    }

    /// OAUTHBEARER or XOAUTH2: token introspection; the token must belong
    /// to the user the client named, if it named one.
    async fn bearer(
        &self,
        ip: IpAddr,
        response: BearerResponse,
        claimed: &str,
        mechanism: &str,
    ) -> AuthOutcome {
        let attempt = match self.attempt(ip, claimed, mechanism) {
            Ok(attempt) => attempt,
            Err(locked) => return locked,
        };
        let challenge = |i: &Introspector| {
            Some(oauth::error_challenge(
                i.settings().required_scope.as_deref(),
            ))
        };
        let Some(introspector) = &self.oauth else {
            return self.auth_failure(attempt, claimed, mechanism, None).await;
        };
        match introspector.check(&response.token).await {
            Ok(owner) => {
                if response
                    .user
                    .as_deref()
                    .is_some_and(|asked| !asked.eq_ignore_ascii_case(&owner))
                {
                    info!(user = %claimed, token_user = %owner, "bearer token belongs to another user");
                    self.auth_failure(attempt, claimed, mechanism, challenge(introspector))
                        .await
                } else {
                    self.auth_success(attempt, ip, owner, mechanism, "bearer token")
                }
            }
            Err(e) if e.is_temporary() => {
                let why = match e {
                    oauth::OAuthError::Busy => AuthUnchecked::IntrospectionBusy,
                    oauth::OAuthError::CircuitOpen => AuthUnchecked::BreakerOpen,
                    _ => AuthUnchecked::Endpoint,
                };
                warn!(user = %claimed, mechanism, error = %e, "token introspection failed");
                self.auth_unchecked(attempt, claimed, mechanism, why).await
            }
            Err(e) => {
                info!(user = %claimed, mechanism, error = %e, "bearer token refused");
                self.auth_failure(attempt, claimed, mechanism, challenge(introspector))
                    .await
            }
        }
    }

    /// SCRAM client-first: the user's secret (a fake one for an unknown
    /// user, so the exchange does not tell who exists) and the
    /// server-first-message. Acting as another user is a failure.
    async fn scram_start(&self, first: ClientFirst, ip: IpAddr, mechanism: &str) -> AuthOutcome {
        let user = first.username().to_string();
        if first.authzid().is_some_and(|a| a != user) {
            let failure = self.guard.failure(ip, &user, Instant::now());
            return self.failed(failure, &user, mechanism, None).await;
        }
        let users = self.users.current();
        let secret = users.scram_secret(&user).unwrap_or_else(|| {
            if users.contains(&user) {
                warn!(user = %user, "user has no SCRAM-SHA-256 secret; `portcullis user passwd` makes one");
            }
            ScramSecret::fake(&user, &self.scram_key)
        });
        let (server, server_first) = first.server_first(&secret);
        AuthOutcome::ScramChallenge {
            server: Box::new(server),
            server_first,
        }
    }

    fn auth_success(
        &self,
        attempt: Attempt,
        ip: IpAddr,
        user: String,
        mechanism: &str,
        via: &str,
    ) -> AuthOutcome {
        self.guard.succeeded(attempt, &user, ip, Instant::now());
        self.metrics.smtp_auth_success();
        info!(user = %user, mechanism, via, "authenticated");
        AuthOutcome::Success { user }
    }

    /// Settles `attempt` as a failure: waits its delay, logs and counts it
    /// (and the lockout it may start).
    async fn auth_failure(
        &self,
        attempt: Attempt,
        user: &str,
        mechanism: &str,
        challenge: Option<String>,
    ) -> AuthOutcome {
        let failure = self.guard.failed(attempt);
        self.failed(failure, user, mechanism, challenge).await
    }

    /// Logs and counts a failure, waits its delay: 535 follows.
    async fn failed(
        &self,
        failure: Failure,
        user: &str,
        mechanism: &str,
        challenge: Option<String>,
    ) -> AuthOutcome {
        self.metrics.smtp_auth_failure();
        warn!(
            user = %user,
            mechanism,
            delay_ms = failure.delay.as_millis() as u64,
            "authentication failed"
        );
        self.settle(&failure, user).await;
        AuthOutcome::Failed {
            challenge,
            lockout: failure.locked,
        }
    }

    /// Settles `attempt` as a check that could not be made: 454 4.7.0
    /// (RFC 4954 §6), counted against the address (and the session) but
    /// not the user, after the failure delay.
    async fn auth_unchecked(
        &self,
        attempt: Attempt,
        user: &str,
        mechanism: &str,
        why: AuthUnchecked,
    ) -> AuthOutcome {
        let failure = self.guard.unchecked(attempt);
        self.metrics.smtp_auth_temporary();
        self.metrics.smtp_auth_unchecked(why);
        warn!(
            user = %user,
            mechanism,
            reason = why.as_str(),
            delay_ms = failure.delay.as_millis() as u64,
            "AUTH not checked; answered 454"
        );
        self.settle(&failure, user).await;
        AuthOutcome::Temporary {
            lockout: failure.locked,
        }
    }

    /// What every failure costs after it is counted: the lockout it
    /// started, logged and counted, and its delay before the answer.
    async fn settle(&self, failure: &Failure, user: &str) {
        self.lockout_began(failure.locked, user);
        if !failure.delay.is_zero() {
            tokio::time::sleep(failure.delay).await;
        }
    }

    /// Logs and counts the lockout a failure started, if any.
    fn lockout_began(&self, locked: Option<Lock>, user: &str) {
        if let Some(Lock { scope, remaining }) = locked {
            self.metrics.smtp_auth_lockout(scope == Scope::Ip);
            warn!(
                user = %user,
                scope = scope.as_str(),
                lockout_secs = remaining.as_secs(),
                "too many failed authentication attempts; lockout begins"
            );
        }
    }
}

/// An attempt refused by a lockout, logged: 421 4.7.0 follows.
fn locked_out(lock: Lock, claimed: &str, mechanism: &str) -> AuthOutcome {
    warn!(user = %claimed, mechanism, scope = lock.scope.as_str(), remaining_secs = lock.remaining.as_secs(), "AUTH refused: locked out");
    AuthOutcome::Locked(lock)
}
