//! Token introspection (RFC 7662) against a real HTTPS endpoint on
//! loopback: the test PKI's certificate for `auth.example.test`, reached
//! through the server's strict HTTPS client (PKIX under the test CA only,
//! names through an in-memory resolver), answering scripted JSON. Time for
//! `exp`, `nbf` and the cache comes from a clock the test moves by hand.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use portcullis_dns::MemoryResolver;
use portcullis_submission::oauth::{IntrospectionSettings, Introspector, OAuthError};
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_tls::ClientTls;
use portcullis_types::Clock;

const HOST: &str = "auth.example.test";
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 61);
/// The hand clock starts here (2030-01-01T00:00:00Z).
const NOW: u64 = 1_893_456_000;
const TOKEN: &str = "ya29.a0-Token_with~all+b64/chars==";

/// A clock the test moves by hand.
#[derive(Debug)]
struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

impl HandClock {
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

struct Env {
    pki: TestPki,
    server: PolicyServer,
    clock: Arc<HandClock>,
}

impl Env {
    async fn new() -> Env {
        let pki = TestPki::new();
        let server = PolicyServer::start(IP, &pki.issue(&[HOST])).await;
        Env {
            pki,
            server,
            clock: Arc::new(HandClock(AtomicU64::new(NOW))),
        }
    }

    /// Settings for the loopback endpoint: client `portcullis:smtp` with a
    /// secret that needs form-urlencoding, scope `smtp` required, no cache.
    fn settings(&self) -> IntrospectionSettings {
        let mut settings = IntrospectionSettings::new(
            &format!("https://{HOST}:{}/introspect", self.server.port()),
            "portcullis:smtp",
            "s3cr&t =é",
        );
        settings.required_scope = Some("smtp".to_owned());
        settings
    }

    /// An introspector trusting only the test CA, resolving `HOST` to the
    /// server.
    fn introspector(&self, settings: IntrospectionSettings) -> Introspector {
        let resolver = MemoryResolver::new().a(HOST, IP);
        let client = portcullis_https::builder(resolver, "portcullis-test")
            .tls(ClientTls::with_roots(self.pki.root_store()))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Introspector::new(client, settings, self.clock.clone())
    }
}

/// An active answer for user `alice@example.test` with scope `openid smtp`
/// and `exp` `exp_in` seconds from the start of the hand clock.
fn active(exp_in: i64) -> String {
    serde_json::json!({
        "active": true,
        "username": "alice@example.test",
        "sub": "Z5O3upPC88QrAjx00dis",
        "scope": "openid smtp",
        "client_id": "mail-client",
        "token_type": "Bearer",
        "exp": NOW as i64 + exp_in,
        "iat": NOW - 60,
    })
    .to_string()
}

fn with(json: &str, key: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("json");
    v[key] = value;
    v.to_string()
}

#[tokio::test]
async fn oauth_active_token_gives_the_user_and_the_request_is_rfc_7662() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(3600)));
    let introspector = env.introspector(env.settings());
    assert_eq!(
        introspector.check(TOKEN).await.expect("active"),
        "alice@example.test"
    );
    let log = env.server.request_log();
    assert_eq!(log.len(), 1);
    let request = &log[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/introspect");
    assert_eq!(request.sni.as_deref(), Some(HOST));
    // RFC 7662 §2.1 with client_secret_basic: id and secret form-urlencoded
    // (RFC 6749 §2.3.1), then Basic.
    let basic =
        base64::engine::general_purpose::STANDARD.encode("portcullis%3Asmtp:s3cr%26t+%3D%C3%A9");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    let form: Vec<(String, String)> = form_urlencoded::parse(&request.body).into_owned().collect();
    assert_eq!(
        form,
        [
            ("token".to_owned(), TOKEN.to_owned()),
            ("token_type_hint".to_owned(), "access_token".to_owned()),
        ]
    );
}

/// One row per outcome of an introspection: what the endpoint answers, how
/// the settings differ, and which result the check gives.
#[tokio::test]
async fn oauth_introspection_outcomes() {
    #[derive(Debug, PartialEq)]
    enum Want {
        User(&'static str),
        Inactive,
        Scope,
        NoUser,
        Temporary,
    }
    let env = Env::new().await;
    let big = format!(
        "{{\"active\":true,\"username\":\"u\",\"scope\":\"smtp\",\"pad\":\"{}\"}}",
        "x".repeat(64 * 1024)
    );
    let cases: Vec<(&str, Reply, Option<&str>, Want)> = vec![
        (
            "active",
            Reply::json(&active(60)),
            None,
            Want::User("alice@example.test"),
        ),
        (
            "active with a null exp",
            Reply::json(&with(&active(60), "exp", serde_json::Value::Null)),
            None,
            Want::User("alice@example.test"),
        ),
        (
            "exp not a number",
            Reply::json(&with(&active(60), "exp", "tomorrow".into())),
            None,
            Want::Temporary,
        ),
        (
            "inactive",
            Reply::json(r#"{"active":false}"#),
            None,
            Want::Inactive,
        ),
        (
            "expired by our clock",
            Reply::json(&active(-1)),
            None,
            Want::Inactive,
        ),
        ("exp is now", Reply::json(&active(0)), None, Want::Inactive),
        (
            "not yet valid",
            Reply::json(&with(&active(60), "nbf", (NOW + 30).into())),
            None,
            Want::Inactive,
        ),
        (
            "missing scope",
            Reply::json(&with(&active(60), "scope", "openid profile".into())),
            None,
            Want::Scope,
        ),
        (
            "no scope member",
            Reply::json(r#"{"active":true,"username":"u"}"#),
            None,
            Want::Scope,
        ),
        (
            "claim sub",
            Reply::json(&active(60)),
            Some("sub"),
            Want::User("Z5O3upPC88QrAjx00dis"),
        ),
        (
            "claim email missing",
            Reply::json(&active(60)),
            Some("email"),
            Want::NoUser,
        ),
        (
            "empty username",
            Reply::json(&with(&active(60), "username", "".into())),
            None,
            Want::NoUser,
        ),
        ("status 500", Reply::status(500), None, Want::Temporary),
        (
            "status 401",
            Reply::status(401).with_content_type(Some("application/json")),
            None,
            Want::Temporary,
        ),
        (
            "not JSON",
            Reply::json("<html>hello</html>"),
            None,
            Want::Temporary,
        ),
        (
            "JSON but not an object",
            Reply::json("[true]"),
            None,
            Want::Temporary,
        ),
        (
            "no active member",
            Reply::json(r#"{"username":"u","scope":"smtp"}"#),
            None,
            Want::Temporary,
        ),
        (
            "JSON as text/plain",
            Reply::policy(&active(60)),
            None,
            Want::Temporary,
        ),
        (
            "body over the cap",
            Reply::json(&big),
            None,
            Want::Temporary,
        ),
        (
            "body over the cap without Content-Length",
            Reply::json(&big).without_content_length(),
            None,
            Want::Temporary,
        ),
        (
            "JSON with charset",
            Reply::json(&active(60)).with_content_type(Some("Application/JSON; charset=utf-8")),
            None,
            Want::User("alice@example.test"),
        ),
    ];
    for (name, reply, claim, want) in cases {
        env.server.set_reply(reply);
        let mut settings = env.settings();
        if let Some(claim) = claim {
            settings.username_claim = claim.to_owned();
        }
        let before = env.server.requests();
        let got = env.introspector(settings).check(TOKEN).await;
        assert_eq!(env.server.requests(), before + 1, "{name}: one request");
        let got = match got {
            Ok(user) => {
                assert!(
                    matches!(want, Want::User(u) if u == user),
                    "{name}: got user {user}, want {want:?}"
                );
                continue;
            }
            Err(e) => e,
        };
        let kind = match &got {
            OAuthError::Inactive => Want::Inactive,
            OAuthError::Scope => Want::Scope,
            OAuthError::NoUser => Want::NoUser,
            e if e.is_temporary() => Want::Temporary,
            e => panic!("{name}: unexpected {e:?}"),
        };
        assert_eq!(kind, want, "{name}: {got}");
        assert_eq!(got.is_temporary(), want == Want::Temporary, "{name}");
    }
}

#[tokio::test]
async fn oauth_token_expires_by_the_injected_clock() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(100)));
    let introspector = env.introspector(env.settings());
    assert!(introspector.check(TOKEN).await.is_ok());
    env.clock.advance(100);
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::Inactive)
    ));
    assert_eq!(env.server.requests(), 2);
}

#[tokio::test]
async fn oauth_cache_hit_makes_no_second_request_until_the_ttl_ends() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(3600)));
    let mut settings = env.settings();
    settings.cache_ttl = Duration::from_secs(60);
    let introspector = env.introspector(settings);
    assert_eq!(
        introspector.check(TOKEN).await.unwrap(),
        "alice@example.test"
    );
    env.clock.advance(59);
    assert_eq!(
        introspector.check(TOKEN).await.unwrap(),
        "alice@example.test"
    );
    assert_eq!(env.server.requests(), 1, "the second check used the cache");
    // Another token is another key.
    assert!(introspector.check("other-token").await.is_ok());
    assert_eq!(env.server.requests(), 2);
    // The TTL is over: the endpoint is asked again and now says no.
    env.clock.advance(1);
    env.server.set_reply(Reply::json(r#"{"active":false}"#));
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::Inactive)
    ));
    assert_eq!(env.server.requests(), 3);
    // Negative answers are not cached.
    assert!(introspector.check(TOKEN).await.is_err());
    assert_eq!(env.server.requests(), 4);
}

#[tokio::test]
async fn oauth_cache_never_outlives_exp() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(30)));
    let mut settings = env.settings();
    settings.cache_ttl = Duration::from_secs(3600);
    let introspector = env.introspector(settings);
    assert!(introspector.check(TOKEN).await.is_ok());
    env.clock.advance(29);
    assert!(introspector.check(TOKEN).await.is_ok());
    assert_eq!(env.server.requests(), 1);
    env.clock.advance(1);
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::Inactive)
    ));
    assert_eq!(env.server.requests(), 2, "the expired entry was not used");
}

#[tokio::test]
async fn oauth_bad_tokens_and_urls_never_reach_the_endpoint() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(60)));
    let introspector = env.introspector(env.settings());
    for token in [
        "",
        "a b",
        "a&token=b",
        "tök",
        "==",
        &"a".repeat(8 * 1024 + 1),
    ] {
        assert!(
            matches!(
                introspector.check(token).await,
                Err(OAuthError::Malformed(_))
            ),
            "{token:?}"
        );
    }
    let mut settings = env.settings();
    settings.url = format!("http://{HOST}:{}/introspect", env.server.port());
    let got = env.introspector(settings).check(TOKEN).await;
    assert!(got.as_ref().is_err_and(OAuthError::is_temporary), "{got:?}");
    assert_eq!(env.server.requests(), 0);
}

#[tokio::test]
async fn oauth_untrusted_or_unreachable_endpoint_is_temporary() {
    let env = Env::new().await;
    env.server.set_reply(Reply::json(&active(60)));
    env.server.set_certificate(&TestPki::self_signed(&[HOST]));
    let got = env.introspector(env.settings()).check(TOKEN).await;
    assert!(got.as_ref().is_err_and(OAuthError::is_temporary), "{got:?}");
    assert_eq!(env.server.handshakes(), 0);
    // Port 9 (discard) on loopback is closed in the test environment.
    let mut settings = env.settings();
    settings.url = format!("https://{HOST}:9/introspect");
    let got = env.introspector(settings).check(TOKEN).await;
    assert!(got.as_ref().is_err_and(OAuthError::is_temporary), "{got:?}");
}

/// The circuit breaker against a real failing endpoint (500, then 429):
/// after `failures` consecutive failures the endpoint sees no request until
/// the open time has passed on the injected clock; then exactly one probe
/// goes through; a failed probe opens it again, a good one closes it.
#[tokio::test]
async fn oauth_breaker_stops_asking_a_failing_endpoint() {
    use portcullis_submission::breaker::{BreakerSettings, BreakerState};
    let env = Env::new().await;
    let mut settings = env.settings();
    settings.breaker = BreakerSettings {
        failures: 3,
        open_for: Duration::from_secs(30),
    };
    let introspector = env.introspector(settings);
    env.server.set_reply(Reply::status(500));
    for i in 1..=3 {
        let got = introspector.check(TOKEN).await;
        assert!(matches!(got, Err(OAuthError::Endpoint(_))), "{i}: {got:?}");
        assert_eq!(env.server.requests(), i);
    }
    assert_eq!(introspector.stats().breaker, BreakerState::Open);
    assert_eq!(introspector.stats().breaker_opened, 1);
    for _ in 0..20 {
        let got = introspector.check(TOKEN).await;
        assert!(matches!(got, Err(OAuthError::CircuitOpen)), "{got:?}");
        assert!(got.as_ref().is_err_and(OAuthError::is_temporary));
    }
    assert_eq!(env.server.requests(), 3, "asked while the breaker was open");
    env.clock.advance(29);
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::CircuitOpen)
    ));
    assert_eq!(env.server.requests(), 3);
    // The open time has passed: one probe, answered 429, opens it again.
    env.clock.advance(1);
    assert_eq!(introspector.stats().breaker, BreakerState::Probing);
    env.server.set_reply(Reply::status(429));
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::Endpoint(_))
    ));
    assert_eq!(env.server.requests(), 4);
    assert!(matches!(
        introspector.check(TOKEN).await,
        Err(OAuthError::CircuitOpen)
    ));
    assert_eq!(env.server.requests(), 4);
    assert_eq!(introspector.stats().breaker_opened, 2);
    // Another open time; the endpoint is back: the probe closes it.
    env.clock.advance(30);
    env.server.set_reply(Reply::json(&active(3600)));
    assert_eq!(
        introspector.check(TOKEN).await.expect("probe answered"),
        "alice@example.test"
    );
    assert_eq!(introspector.stats().breaker, BreakerState::Closed);
    // A verdict on a token is an answer, not an endpoint failure.
    env.server.set_reply(Reply::json(r#"{"active":false}"#));
    for _ in 0..5 {
        assert!(matches!(
            introspector.check("other-token").await,
            Err(OAuthError::Inactive)
        ));
    }
    assert_eq!(introspector.stats().breaker, BreakerState::Closed);
    assert_eq!(env.server.requests(), 10);
}

/// At most `max_in_flight` requests wait for the endpoint; a check over it
/// is refused at once (`Busy`, temporary) without a request.
#[tokio::test]
async fn oauth_requests_in_flight_are_capped() {
    let env = Env::new().await;
    let mut settings = env.settings();
    settings.max_in_flight = 2;
    let introspector = Arc::new(env.introspector(settings));
    // A slow endpoint holds the first two checks.
    env.server
        .set_reply(Reply::json(&active(3600)).with_delay(Duration::from_secs(2)));
    let mut slow = Vec::new();
    for i in 0..2 {
        let introspector = introspector.clone();
        slow.push(tokio::spawn(async move {
            introspector.check(&format!("slow-{i}")).await
        }));
    }
    while introspector.stats().in_flight < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = introspector.check("third").await;
    assert!(matches!(got, Err(OAuthError::Busy)), "{got:?}");
    assert!(got.as_ref().is_err_and(OAuthError::is_temporary));
    for s in slow {
        assert!(s.await.unwrap().is_ok());
    }
    assert_eq!(env.server.requests(), 2, "the refused check made a request");
    assert_eq!(introspector.stats().in_flight, 0);
    // Slots are given back: checks go through again.
    env.server.set_reply(Reply::json(&active(3600)));
    assert!(introspector.check("fourth").await.is_ok());
}
