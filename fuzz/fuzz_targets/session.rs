//! A whole sans-IO SMTP session on arbitrary octets in arbitrary splits:
//! greeting, feed, step until it needs input, the driver's part played
//! (STARTTLS "succeeds", SPF passes, AUTH succeeds for alice, messages are
//! stored). Nothing may panic, and output stays bounded by the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::{BareNewline, Limits, Relay, Role};
use portcullis_inbound::session::{AuthCheck, AuthOutcome};
use portcullis_inbound::{Event, Session, SessionConfig, VerifyScope};
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::rate::SendRate;
use portcullis_types::{Domain, QueueId, TlsSummary};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod split;

fn config(role: Role, bare: BareNewline) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        banner: "ESMTP".into(),
        role,
        limits: Limits {
            max_connections: 100,
            max_connections_per_ip: 10,
            max_session_duration: Duration::from_secs(3600),
            max_junk_commands: 100,
            max_line_length: 512,
            max_message_size: 4096,
            max_recipients: 5,
            max_errors: 20,
            max_received_headers: 3,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            tls_handshake_timeout: Duration::from_secs(30),
            greet_pause: Duration::ZERO,
            shutdown_grace: Duration::from_secs(30),
        },
        relay: Relay {
            accepted_domains: vec![Domain::parse("example.test").expect("valid domain")],
            trusted_networks: vec![],
        },
        bare_newline: bare,
        tls_available: true,
        verify: VerifyScope::default(),
        auth: true,
        submission: Default::default(),
        oauth: true,
        guard: Arc::new(AuthGuard::new(Default::default())),
        rate: Arc::new(SendRate::new()),
    })
}

fn configs() -> &'static [Arc<SessionConfig>; 4] {
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

fn tls() -> TlsSummary {
    TlsSummary {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let cfg = configs()[usize::from(pick % 4)].clone();
    let submissions = cfg.role == Role::Submissions;
    let mut s = Session::new(cfg, "192.0.2.1".parse().expect("an address"));
    if submissions {
        s.set_tls(tls());
    }
    let mut out = Vec::new();
    s.greeting(&mut out);
    let mut ids = 0u64;
    'feed: for chunk in split::chunks(rest) {
        s.feed(chunk);
        loop {
            match s.step(&mut out) {
                Event::NeedInput => break,
                Event::StartTls => {
                    s.discard_input();
                    s.tls_started(tls());
                    continue 'feed;
                }
                Event::CheckSender(_) => s.sender_checked(None, &mut out),
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
                    s.auth_checked(outcome, &mut out);
                }
                Event::Message(m) => {
                    // The limit applies before `normalize`, which at most doubles it.
                    assert!(m.data.len() <= 2 * 4096, "message over the limit kept");
                    ids += 1;
                    s.message_stored(QueueId::generate(ids, 0), &mut out);
                }
                Event::Close => break 'feed,
            }
        }
        // Replies are bounded by what came in (no reply storms).
        assert!(out.len() <= 4096 + 256 * (data.len() + 1));
        out.clear();
    }
});
