//! The sans-IO session set up as the targets drive it: four listener
//! configurations and the driver's part played (STARTTLS "succeeds", SPF
//! passes, the message rate never refuses, the screen refuses recipients
//! whose local part is `unknown`, AUTH succeeds for alice, messages are
//! stored).

use portcullis_config::{BareNewline, Limits, Relay, Role};
use portcullis_inbound::session::{AuthCheck, AuthOutcome};
use portcullis_inbound::{
    Event, IncomingMessage, ScreenScope, Session, SessionConfig, VerifyScope,
};
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::rate::SendRate;
use portcullis_types::{Domain, QueueId, Reply, TlsSummary};
use std::sync::{Arc, OnceLock};

/// The message size limit of every configuration.
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// `[limits]` from the config loader's defaults with the sizes the targets
/// need (lower than a config may set, so the fuzzer reaches them), written
/// with `..`: limits added later keep their defaults instead of breaking
/// the build of the targets.
fn limits() -> Limits {
    let defaults = match portcullis_config::parse("", None, "mx.example.test") {
        Ok(c) => c.limits,
        Err(e) => panic!("the empty config does not validate: {e}"),
    };
    Limits {
        max_line_length: 512,
        max_message_size: MAX_MESSAGE_SIZE as u64,
        max_recipients: 5,
        max_errors: 20,
        max_received_headers: 3,
        greet_pause: std::time::Duration::ZERO,
        ..defaults
    }
}

fn config(role: Role, bare: BareNewline) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        banner: "ESMTP".into(),
        role,
        limits: limits(),
        relay: Relay {
            accepted_domains: vec![Domain::parse("example.test").expect("valid domain")],
            trusted_networks: vec![],
        },
        bare_newline: bare,
        tls_available: true,
        verify: VerifyScope::default(),
        // Every listener hands RCPT to the (played) screen; port 25 also
        // MAIL, for the message rate.
        screen: ScreenScope {
            messages: role == Role::Smtp,
            spf: false,
            recipients: true,
        },
        auth: true,
        submission: Default::default(),
        oauth: true,
        guard: Arc::new(AuthGuard::new(Default::default())),
        rate: Arc::new(SendRate::new()),
        tls_required_no: Default::default(),
    })
}

/// The four configurations: smtp (bare newlines refused, normalised),
/// submission, submissions (implicit TLS).
pub fn configs() -> &'static [Arc<SessionConfig>; 4] {
    static CONFIGS: OnceLock<[Arc<SessionConfig>; 4]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            config(Role::Smtp, BareNewline::Reject),
            config(Role::Smtp, BareNewline::Normalize),
            config(Role::Submission, BareNewline::Reject),
            config(Role::Submissions, BareNewline::Normalize),
        ]
    })
}

/// The TLS state the driver reports after a (pretend) handshake.
pub fn tls() -> TlsSummary {
    TlsSummary {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    }
}

/// A new session on configuration `pick % 4`, greeting written to `out`.
pub fn session(pick: u8, out: &mut Vec<u8>) -> Session {
    let cfg = configs()[usize::from(pick % 4)].clone();
    let submissions = cfg.role == Role::Submissions;
    let mut s = Session::new(cfg, "192.0.2.1".parse().expect("an address"));
    if submissions {
        s.set_tls(tls());
    }
    s.greeting(out);
    s
}

/// What the driver saw while draining the session's events.
pub enum Drained {
    /// The session wants more input.
    NeedInput,
    /// The session closed the connection.
    Closed,
}

/// Runs the session until it needs input or closes, playing the driver;
/// every complete message goes to `on_message` and is then "stored".
pub fn drain(
    s: &mut Session,
    out: &mut Vec<u8>,
    ids: &mut u64,
    on_message: &mut dyn FnMut(&IncomingMessage),
) -> Drained {
    loop {
        match s.step(out) {
            Event::NeedInput => return Drained::NeedInput,
            Event::StartTls => {
                s.discard_input();
                s.tls_started(tls());
                // Input buffered before the handshake is gone (RFC 3207 §4.2).
                return Drained::NeedInput;
            }
            Event::CheckSender(_) => s.sender_checked(None, None, out),
            Event::CheckRecipient(check) => {
                let refusal = (check.recipient.local == "unknown").then(|| {
                    Reply::new(550, (5, 1, 1), "Recipient address rejected: user unknown")
                });
                s.recipient_checked(refusal.as_ref(), out);
            }
            Event::CheckAuth(check) => {
                let outcome = match *check {
                    AuthCheck::Password { user, .. } if user == "alice" => {
                        AuthOutcome::Success { user }
                    }
                    _ => AuthOutcome::Failed {
                        challenge: None,
                        lockout: None,
                    },
                };
                s.auth_checked(outcome, out);
            }
            Event::Message(m) => {
                on_message(&m);
                *ids += 1;
                s.message_stored(QueueId::generate(*ids, 0), out);
            }
            Event::Close => return Drained::Closed,
        }
    }
}
