//! The engine against real parts on loopback (DNS server, HTTPS policy
//! server, production resolver, sled): the downgrade cases of RFC 8461
//! §10.2 and the refresh rules. The clock the engine sees is moved by hand;
//! certificates are checked against real time.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use portcullis_dns::HickoryResolver;
use portcullis_policy::{
    Mode, PolicyEngine, PolicyFetcher, PolicyLookup, PolicySource, RefreshOptions, RefreshOutcome,
    refresh_at, refresh_pass,
};
use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_tls::{ClientTls, TlsResultType};
use portcullis_types::{Clock, Domain};

const DOMAIN: &str = "example.test";
const TXT: &str = "_mta-sts.example.test";
const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n";
const NONE: &str = "version: STSv1\nmode: none\nmax_age: 86400\n";

/// A clock the test moves by hand.
#[derive(Debug)]
struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

struct Env {
    dns: TestDns,
    server: PolicyServer,
    engine: Arc<PolicyEngine<HickoryResolver>>,
    clock: Arc<HandClock>,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(ip: Ipv4Addr) -> Env {
        let dns = TestDns::start().await;
        let pki = TestPki::new();
        let server = PolicyServer::start(ip, &pki.issue(&["mta-sts.example.test"])).await;
        dns.add_a("mta-sts.example.test", ip);
        let resolver =
            HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).expect("resolver");
        let fetcher = PolicyFetcher::builder(resolver.clone())
            .tls(ClientTls::with_roots(pki.root_store()))
            .port(server.port())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("fetcher");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock = Arc::new(HandClock(AtomicU64::new(1_700_000_000)));
        let engine = Arc::new(PolicyEngine::new(resolver, fetcher, &store, clock.clone()).unwrap());
        Env {
            dns,
            server,
            engine,
            clock,
            store,
            _dir: dir,
        }
    }

    async fn lookup(&self) -> PolicyLookup {
        self.engine.policy_for(&domain()).await
    }

    fn advance(&self, secs: u64) {
        self.clock.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// Replaces the TXT record and waits out the resolver's cache.
    async fn set_txt(&self, text: Option<&str>) {
        self.dns.remove(TXT, "TXT");
        if let Some(text) = text {
            self.dns.add_txt(TXT, text);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

fn domain() -> Domain {
    Domain::parse(DOMAIN).unwrap()
}

#[track_caller]
fn mode_and_source(lookup: &PolicyLookup) -> (Mode, &PolicySource) {
    match lookup {
        PolicyLookup::Policy { policy, source } => (policy.mode, source),
        other => panic!("expected a policy, got {other:?}"),
    }
}

/// §10.2: after a good fetch, an attacker removes the TXT record and
/// makes the policy host answer 500: the cached policy stays in force, and
/// a refresh does not remove it either.
#[tokio::test]
async fn cached_policy_survives_vanished_record_and_failing_host() {
    let env = Env::start(Ipv4Addr::new(127, 0, 3, 1)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    env.server.set_policy(ENFORCE);
    let got = env.lookup().await;
    assert!(matches!(
        mode_and_source(&got),
        (Mode::Enforce, PolicySource::Fetched)
    ));
    assert_eq!(env.server.requests(), 1);

    // Same id: served from the cache, no fetch.
    let got = env.lookup().await;
    assert!(matches!(
        mode_and_source(&got),
        (Mode::Enforce, PolicySource::Cache)
    ));
    assert_eq!(env.server.requests(), 1);

    env.server.set_reply(Reply::status(500));
    env.set_txt(None).await;
    env.advance(3600);
    let got = env.lookup().await;
    assert!(matches!(
        mode_and_source(&got),
        (Mode::Enforce, PolicySource::CacheAfterFailure { .. })
    ));
    assert!(env.engine.refresh(&domain()).await.is_err());
    let got = env.lookup().await;
    assert_eq!(got.mode(), Some(Mode::Enforce));
    let cached = env.engine.get(&domain()).await.unwrap().unwrap();
    assert_eq!(cached.id, "1");
    assert!(
        cached.last_error.as_deref().unwrap_or("").contains("500"),
        "{cached:?}"
    );

    // A changed id whose fetch fails: still the cached policy, and the
    // failure is there for TLS-RPT.
    env.set_txt(Some("v=STSv1; id=2")).await;
    let got = env.lookup().await;
    assert_eq!(got.mode(), Some(Mode::Enforce));
    assert_eq!(
        got.report(&domain()).failure,
        Some(TlsResultType::StsPolicyFetchError)
    );
    assert_eq!(env.engine.get(&domain()).await.unwrap().unwrap().id, "1");
}

/// A new id with mode `none`, fetched successfully, replaces the cached
/// policy: that is how a domain withdraws (§8.3).
#[tokio::test]
async fn new_id_with_mode_none_replaces_the_policy() {
    let env = Env::start(Ipv4Addr::new(127, 0, 3, 2)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    env.server.set_policy(ENFORCE);
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));
    env.server.set_policy(NONE);
    env.set_txt(Some("v=STSv1; id=2")).await;
    let got = env.lookup().await;
    assert!(matches!(
        mode_and_source(&got),
        (Mode::None, PolicySource::Fetched)
    ));
    let cached = env.engine.get(&domain()).await.unwrap().unwrap();
    assert_eq!((cached.id.as_str(), cached.mode), ("2", Mode::None));
}

/// Without a refresh, a policy lapses at `max_age`: then there is no
/// policy.
#[tokio::test]
async fn expiry_without_refresh_is_no_policy() {
    let env = Env::start(Ipv4Addr::new(127, 0, 3, 3)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    env.server.set_policy(ENFORCE);
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));
    env.server.set_reply(Reply::status(500));
    env.set_txt(None).await;
    env.advance(86_399);
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));
    env.advance(1);
    let got = env.lookup().await;
    assert!(matches!(got, PolicyLookup::None(_)), "{got:?}");
}

/// A log sink for one test (the runtime is single-threaded, so a
/// thread-local subscriber sees the engine's events).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Domain owners often change the policy and forget the id: a refresh
/// fetches the body anyway, a new valid body replaces the cached one, and
/// the change is logged with a diff.
#[tokio::test]
async fn refresh_with_same_id_and_new_body_replaces_and_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::start(Ipv4Addr::new(127, 0, 3, 4)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    env.server.set_policy(ENFORCE);
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));

    // Unchanged body: the lifetime restarts, nothing is replaced.
    env.advance(1000);
    let outcome = env.engine.refresh(&domain()).await.unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Unchanged(_)),
        "{outcome:?}"
    );
    assert_eq!(outcome.policy().fetched_at, env.engine.now());

    let changed = ENFORCE.replace(
        "mx: mx.example.test\n",
        "mx: mx.example.test\nmx: mx2.example.test\n",
    );
    env.server.set_policy(&changed);
    match env.engine.refresh(&domain()).await.unwrap() {
        RefreshOutcome::Replaced { old, new, diff } => {
            assert_eq!(old.unwrap().text, ENFORCE);
            assert_eq!(new.text, changed);
            assert_eq!(new.id, "1");
            assert_eq!(diff, "+mx: mx2.example.test");
        }
        other => panic!("{other:?}"),
    }
    let got = env.lookup().await;
    assert!(got.policy().unwrap().matches_mx("mx2.example.test"));
    let text = logs.text();
    assert!(
        text.contains("MTA-STS policy changed") && text.contains("+mx: mx2.example.test"),
        "{text}"
    );
}

/// The refresh loop's pass re-fetches a policy in its last quarter, so it
/// does not lapse, and leaves a fresh one alone.
#[tokio::test]
async fn refresh_pass_keeps_policies_from_lapsing() {
    let env = Env::start(Ipv4Addr::new(127, 0, 3, 5)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    env.server.set_policy(ENFORCE);
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));
    let options = RefreshOptions::default();
    assert_eq!(refresh_pass(&env.engine, &options).await, 0);
    assert_eq!(env.server.requests(), 1);

    let cached = env.engine.get(&domain()).await.unwrap().unwrap();
    let due = refresh_at(&cached);
    env.advance(due - env.engine.now());
    assert_eq!(refresh_pass(&env.engine, &options).await, 1);
    assert_eq!(env.server.requests(), 2);
    let refreshed = env.engine.get(&domain()).await.unwrap().unwrap();
    assert_eq!(refreshed.fetched_at, due);
    assert!(refreshed.expires_at > cached.expires_at);

    // Past the original expiry, the refreshed policy is still in force.
    env.advance(cached.expires_at - env.engine.now() + 1);
    env.server.set_reply(Reply::status(500));
    env.set_txt(None).await;
    assert_eq!(env.lookup().await.mode(), Some(Mode::Enforce));
}

/// A cached entry that cannot be decoded is never "no policy": while the
/// policy host fails, the lookup is a temporary failure (logged as an
/// error naming the domain) and the entry stays as it was; the first
/// successful fetch replaces it.
#[tokio::test]
async fn unreadable_cache_entry_waits_for_a_successful_fetch() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::start(Ipv4Addr::new(127, 0, 3, 6)).await;
    env.dns.add_txt(TXT, "v=STSv1; id=1");
    let tree = env
        .store
        .tree(portcullis_store::TreeName::MtaStsPolicies)
        .unwrap();
    tree.insert(DOMAIN, &b"\xff not a policy"[..]).unwrap();

    env.server.set_reply(Reply::status(500));
    let got = env.lookup().await;
    assert!(matches!(got, PolicyLookup::Unavailable { .. }), "{got:?}");
    let reason = got.unavailable().unwrap();
    assert!(
        reason.contains(DOMAIN) && reason.contains("500"),
        "{reason}"
    );
    assert_eq!(
        tree.get(DOMAIN).unwrap().as_deref(),
        Some(&b"\xff not a policy"[..])
    );
    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("ERROR")
            && l.contains("domain=example.test")
            && l.contains("cannot read the cached MTA-STS policy")),
        "{text}"
    );

    env.server.set_policy(ENFORCE);
    let got = env.lookup().await;
    assert!(matches!(
        mode_and_source(&got),
        (Mode::Enforce, PolicySource::Fetched)
    ));
    let cached = env.engine.get(&domain()).await.unwrap().unwrap();
    assert_eq!((cached.id.as_str(), cached.mode), ("1", Mode::Enforce));
    // From now on, the ordinary cache.
    assert!(matches!(
        mode_and_source(&env.lookup().await),
        (Mode::Enforce, PolicySource::Cache)
    ));
}
