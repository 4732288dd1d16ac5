//! Recipients files on disk (a tempdir) and the verifier's sources, cache
//! and shared probes.
//!
//! The state store here is a small in-memory [`ScreenStore`] that honours
//! expiry as the trait promises (the sled one is tested in `state.rs`);
//! the probe is a scripted [`RecipientProbe`] that counts its calls (the
//! real one, against a real SMTP server, is tested in
//! `portcullis-delivery`'s `tests/probe.rs`).

use super::*;
use portcullis_config::{RecipientVerify, Recipients};
use portcullis_metrics::MetricsWriter;
use portcullis_types::{Clock, Domain};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

fn addr(text: &str) -> Address {
    Address::parse(text).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Replaces `path` atomically (a new inode), as careful operators do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn files_for(entries: &[(&str, &Path)]) -> BTreeMap<Domain, PathBuf> {
    entries
        .iter()
        .map(|(d, p)| (domain(d), p.to_path_buf()))
        .collect()
}

#[tokio::test]
async fn files_answer_for_their_domain_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.test");
    let b = dir.path().join("b.test");
    write(&a, "# users\nalice@a.test\n");
    write(&b, "@b.test\n");
    let files = RecipientFiles::load(&files_for(&[("a.test", &a), ("b.test", &b)])).unwrap();
    assert_eq!(files.lookup(&addr("alice@a.test")).await, Some(true));
    assert_eq!(files.lookup(&addr("Alice@A.TEST")).await, Some(true));
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(false));
    assert_eq!(files.lookup(&addr("anyone@b.test")).await, Some(true));
    // `@b.test` is that domain only, not its subdomains.
    assert_eq!(files.lookup(&addr("x@sub.b.test")).await, None);
    assert_eq!(files.lookup(&addr("alice@c.test")).await, None);
    assert!(files.covers(&domain("a.test")) && !files.covers(&domain("c.test")));
}

#[test]
fn a_bad_file_is_refused_at_start_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.test");
    write(&a, "alice@a.test\n\nbob@b.test\n");
    let e = RecipientFiles::load(&files_for(&[("a.test", &a)]))
        .err()
        .unwrap();
    assert_eq!(e.line, 3, "{e}");
    assert_eq!(e.path, a.display().to_string());
    assert!(e.to_string().contains(":3: "), "{e}");

    let missing = dir.path().join("missing");
    let e = RecipientFiles::load(&files_for(&[("a.test", &missing)]))
        .err()
        .unwrap();
    assert_eq!(e.line, 0, "{e}");

    std::fs::write(&a, b"alice@a.test\n\xffbob@a.test\n").unwrap();
    let e = RecipientFiles::load(&files_for(&[("a.test", &a)]))
        .err()
        .unwrap();
    assert_eq!((e.line, e.message.as_str()), (2, "not UTF-8"));
}

#[tokio::test]
async fn a_change_on_disk_is_picked_up_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.test");
    write(&a, "alice@a.test\n");
    let files = RecipientFiles::load(&files_for(&[("a.test", &a)]))
        .unwrap()
        .recheck_every(Duration::ZERO);
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(false));

    replace(&a, "alice@a.test\nbob@a.test\n");
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(true));

    // Rewritten in place (same inode, other size): picked up too.
    write(&a, "bob@a.test\n");
    assert_eq!(files.lookup(&addr("alice@a.test")).await, Some(false));
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(true));

    // A broken version is refused: the one in force stays.
    replace(&a, "carol@a.test\ndave@elsewhere.test\n");
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(true));
    assert_eq!(files.lookup(&addr("carol@a.test")).await, Some(false));

    // A vanished file too.
    std::fs::remove_file(&a).unwrap();
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(true));

    // The next good version is taken.
    replace(&a, "carol@a.test\n");
    assert_eq!(files.lookup(&addr("carol@a.test")).await, Some(true));
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(false));
}

#[tokio::test]
async fn changes_are_looked_for_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.test");
    write(&a, "alice@a.test\n");
    let files = RecipientFiles::load(&files_for(&[("a.test", &a)]))
        .unwrap()
        .recheck_every(Duration::from_secs(3600));
    replace(&a, "bob@a.test\n");
    // Within the interval the version read at load is answered from.
    assert_eq!(files.lookup(&addr("alice@a.test")).await, Some(true));
    assert_eq!(files.lookup(&addr("bob@a.test")).await, Some(false));
}

/// A clock moved by hand.
struct HandClock(AtomicU64);

impl HandClock {
    fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// Answers from a table (unlisted: unknown), counting calls; while
/// `gate` is closed, every probe waits for it.
struct Scripted {
    answers: Mutex<HashMap<String, ProbeAnswer>>,
    calls: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Scripted {
    fn new(answers: &[(&str, ProbeAnswer)], open: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|(a, p)| (a.to_string(), p.clone()))
                    .collect(),
            ),
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(if open { 1000 } else { 0 }),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn set(&self, address: &str, answer: ProbeAnswer) {
        self.answers
            .lock()
            .unwrap()
            .insert(address.to_owned(), answer);
    }
}

impl RecipientProbe for Scripted {
    fn probe<'a>(&'a self, recipient: &'a Address) -> BoxFuture<'a, ProbeAnswer> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let _pass = self.gate.acquire().await;
            let unknown = ProbeAnswer::Unknown {
                reply: "550 5.1.1 no".into(),
            };
            let answers = self.answers.lock().unwrap();
            answers
                .get(&recipient.to_string())
                .cloned()
                .unwrap_or(unknown)
        })
    }
}

struct Rig {
    verifier: RecipientVerifier,
    probe: Arc<Scripted>,
    clock: Arc<HandClock>,
    settings: Recipients,
    files: RecipientFiles,
    _dir: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
}

/// `a.test` has a file (alice only); other domains are probed.
fn rig(probe: Arc<Scripted>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.test");
    write(&a, "alice@a.test\n");
    let files = RecipientFiles::load(&files_for(&[("a.test", &a)])).unwrap();
    let clock = Arc::new(HandClock(AtomicU64::new(1_700_000_000)));
    let (store_dir, store) = crate::testkit::store();
    let verifier = RecipientVerifier::new(store, Some(probe.clone()), clock.clone());
    let settings = Recipients {
        verify: RecipientVerify::Route,
        cache_positive: Duration::from_secs(3600),
        cache_negative: Duration::from_secs(600),
        ..Recipients::default()
    };
    Rig {
        verifier,
        probe,
        clock,
        settings,
        files,
        _dir: dir,
        _store_dir: store_dir,
    }
}

impl Rig {
    async fn check(&self, address: &str) -> Known {
        self.verifier
            .check(&self.settings, &self.files, &addr(address))
            .await
    }

    fn metrics(&self) -> String {
        let mut w = MetricsWriter::new();
        self.verifier.render_metrics(&mut w);
        w.finish()
    }
}

#[track_caller]
fn counted(page: &str, source: &str, outcome: &str, n: u64) {
    let line = format!(
        "portcullis_recipient_checks_total{{source=\"{source}\",outcome=\"{outcome}\"}} {n}"
    );
    assert!(page.lines().any(|l| l == line), "{line} not in\n{page}");
}

#[tokio::test]
async fn a_domain_with_a_file_is_never_probed() {
    let r = rig(Scripted::new(&[("bob@a.test", ProbeAnswer::Exists)], true));
    assert_eq!(r.check("alice@a.test").await, Known::Exists);
    assert_eq!(r.check("bob@a.test").await, Known::Unknown);
    assert_eq!(r.probe.calls(), 0);
    let page = r.metrics();
    counted(&page, "file", "exists", 1);
    counted(&page, "file", "unknown", 1);
}

#[tokio::test]
async fn probe_answers_are_cached_for_their_time() {
    let r = rig(Scripted::new(&[("bob@b.test", ProbeAnswer::Exists)], true));
    assert_eq!(r.check("bob@b.test").await, Known::Exists);
    assert_eq!(r.check("BOB@b.test").await, Known::Exists);
    assert_eq!(r.check("carol@b.test").await, Known::Unknown);
    assert_eq!(r.check("carol@b.test").await, Known::Unknown);
    assert_eq!(r.probe.calls(), 2, "one probe per address");

    // The route learns both users; the cache answers until it expires.
    r.probe.set("carol@b.test", ProbeAnswer::Exists);
    r.clock.advance(599);
    assert_eq!(r.check("carol@b.test").await, Known::Unknown);
    r.clock.advance(1);
    assert_eq!(r.check("carol@b.test").await, Known::Exists);
    assert_eq!(r.probe.calls(), 3);
    r.probe.set(
        "bob@b.test",
        ProbeAnswer::Unknown {
            reply: "550".into(),
        },
    );
    r.clock.advance(2999);
    assert_eq!(r.check("bob@b.test").await, Known::Exists);
    r.clock.advance(1);
    assert_eq!(r.check("bob@b.test").await, Known::Unknown);
    let page = r.metrics();
    counted(&page, "probe", "exists", 2);
    counted(&page, "probe", "unknown", 2);
    counted(&page, "cache", "exists", 2);
    counted(&page, "cache", "unknown", 2);
}

#[tokio::test]
async fn unreachable_and_no_route_are_never_cached() {
    let down = ProbeAnswer::Unreachable {
        reason: "connect refused".into(),
    };
    let r = rig(Scripted::new(
        &[("bob@b.test", down), ("x@c.test", ProbeAnswer::NoRoute)],
        true,
    ));
    assert_eq!(
        r.check("bob@b.test").await,
        Known::Unreachable("connect refused".into())
    );
    assert_eq!(r.check("x@c.test").await, Known::Unverified);
    r.probe.set("bob@b.test", ProbeAnswer::Exists);
    assert_eq!(r.check("bob@b.test").await, Known::Exists);
    assert_eq!(r.check("x@c.test").await, Known::Unverified);
    assert_eq!(r.probe.calls(), 4);
    let page = r.metrics();
    counted(&page, "probe", "unreachable", 1);
    counted(&page, "probe", "unverified", 2);
}

#[tokio::test]
async fn verify_off_or_no_probe_verifies_nothing_but_files() {
    let mut r = rig(Scripted::new(&[], true));
    r.settings.verify = RecipientVerify::Off;
    assert_eq!(r.check("bob@b.test").await, Known::Unverified);
    assert_eq!(r.check("bob@a.test").await, Known::Unknown);
    assert_eq!(r.probe.calls(), 0);

    let (_store_dir, store) = crate::testkit::store();
    let no_probe = RecipientVerifier::new(store, None, r.clock.clone());
    r.settings.verify = RecipientVerify::Route;
    let known = no_probe
        .check(&r.settings, &r.files, &addr("bob@b.test"))
        .await;
    assert_eq!(known, Known::Unverified);
}

#[tokio::test]
async fn concurrent_checks_of_one_address_share_one_probe() {
    let r = Arc::new(rig(Scripted::new(
        &[("bob@b.test", ProbeAnswer::Exists)],
        false,
    )));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let r = Arc::clone(&r);
        let address = if i % 2 == 0 {
            "bob@b.test"
        } else {
            "Bob@B.test"
        };
        tasks.push(tokio::spawn(async move { r.check(address).await }));
    }
    // Every check is waiting: one probe started, the others wait for it.
    while r.probe.calls() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(r.verifier.in_flight(), 1);
    r.probe.gate.add_permits(1000);
    for t in tasks {
        assert_eq!(t.await.unwrap(), Known::Exists);
    }
    assert_eq!(r.probe.calls(), 1);
    // All ten waited for the probe (none came late to the cache).
    counted(&r.metrics(), "probe", "exists", 10);
    assert_eq!(r.verifier.in_flight(), 0, "finished flights are forgotten");
}

/// Regression guard: a client that hangs up while its RCPT waits for a
/// probe must not leave the flight behind (one entry per address an
/// attacker names would grow without bound).
#[tokio::test]
async fn a_cancelled_check_leaves_no_flight_behind() {
    let r = rig(Scripted::new(&[], false));
    for i in 0..3 {
        let address = format!("user{i}@b.test");
        let check = r.check(&address);
        let timed_out = tokio::time::timeout(Duration::from_millis(1), check).await;
        assert!(timed_out.is_err());
    }
    assert_eq!(r.probe.calls(), 3);
    assert_eq!(r.verifier.in_flight(), 0);
}
