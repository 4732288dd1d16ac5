//! Issue 11 item 4: the queue's writes against each other, run for real on
//! a sled store on disk with a slow [`Deliver`] that counts every delivery
//! per recipient. Regression tests: on the old code (blind writes of a copy
//! read before delivery), `queue retry --all` during attempts re-delivered
//! delivered recipients, `queue delete` during an attempt was undone, a
//! record without body was "delivered" empty, and an enqueue under an id in
//! use overwrote that message.

use crate::scheduler::{self, PARK, SchedulerSettings, attempt};
use crate::*;
use portcullis_store::{Store, TreeName};
use portcullis_types::{Address, BodyType, Clock, Notify, Recipient, ReversePath};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const T0: u64 = 1_800_000_000;

struct FixedClock(AtomicU64);
impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(SeqCst))
    }
}

fn clock() -> FixedClock {
    FixedClock(AtomicU64::new(T0))
}

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        hostname: "mx.test".into(),
        retry: vec![Duration::from_secs(300)],
        max_age: Duration::from_secs(86_400),
        delay_warning: Duration::from_secs(86_400),
        max_concurrent: 8,
    }
}

/// Recipients `ok*` are delivered, `later*` deferred, `bad*` failed.
fn envelope(n: u64, rcpts: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(T0 * 1000 + n, 7),
        sender: ReversePath::parse("s@src.test").unwrap(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: Address::parse(&format!("{r}@dest.test")).unwrap(),
                notify: Notify::default(),
                orcpt: None,
            })
            .collect(),
        ret: None,
        envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        received_at: T0,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        tls: None,
        origin: portcullis_types::Origin::Relay,
        authenticated: None,
        size: 0,
        require_tls: false,
        tls_optional: false,
    }
}

const BODY: &[u8] = b"Subject: race\r\n\r\nbody\r\n";

/// A slow far end: each delivery waits (a random short sleep, or a gate
/// the test opens), and every delivered recipient and every message length
/// handed over is counted.
#[derive(Default)]
struct Slow {
    delivered: Mutex<HashMap<(QueueId, usize), u32>>,
    lengths: Mutex<Vec<usize>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    /// With a gate: announce each start here, then wait for a permit.
    started: Option<mpsc::UnboundedSender<QueueId>>,
    gate: Option<Semaphore>,
}

impl Slow {
    fn gated() -> (Slow, mpsc::UnboundedReceiver<QueueId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let slow = Slow {
            started: Some(tx),
            gate: Some(Semaphore::new(0)),
            ..Slow::default()
        };
        (slow, rx)
    }

    fn open(&self) {
        if let Some(g) = &self.gate {
            g.add_permits(1);
        }
    }

    fn max_deliveries(&self) -> u32 {
        self.delivered
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

impl Deliver for Slow {
    async fn deliver(&self, job: DeliveryJob) -> Vec<RecipientResult> {
        self.calls.fetch_add(1, SeqCst);
        self.in_flight.fetch_add(1, SeqCst);
        self.lengths
            .lock()
            .unwrap()
            .push(job.message.len() as usize);
        if let Some(tx) = &self.started {
            tx.send(job.id).unwrap();
        }
        match &self.gate {
            Some(g) => g.acquire().await.unwrap().forget(),
            None => {
                let ms = rand::random::<u64>() % 3;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let out = job
            .pending
            .iter()
            .map(|&i| {
                let local = &job.envelope.recipients[i].address.local;
                let outcome = if local.starts_with("ok") {
                    *self
                        .delivered
                        .lock()
                        .unwrap()
                        .entry((job.id, i))
                        .or_default() += 1;
                    RecipientOutcome::Delivered {
                        remote_mta: "mx.dest.test".into(),
                        reply: "250 2.0.0 ok".into(),
                    }
                } else if local.starts_with("bad") {
                    RecipientOutcome::Failed {
                        remote_mta: Some("mx.dest.test".into()),
                        status: (5, 1, 1),
                        reason: "550 5.1.1 no such user".into(),
                    }
                } else {
                    RecipientOutcome::Deferred {
                        remote_mta: Some("mx.dest.test".into()),
                        reason: "451 4.3.0 try later".into(),
                    }
                };
                RecipientResult { index: i, outcome }
            })
            .collect();
        self.in_flight.fetch_sub(1, SeqCst);
        out
    }
}

async fn open(dir: &tempfile::TempDir) -> (Store, Queue) {
    let store = Store::open_when_released(dir.path(), Duration::from_secs(10))
        .await
        .unwrap();
    let queue = Queue::open(&store).unwrap();
    (store, queue)
}

/// Everything the store and the index say about `id` after a deletion.
#[track_caller]
fn assert_gone(store: &Store, q: &Queue, id: QueueId) {
    assert!(
        matches!(q.get(id), Err(QueueError::NotFound(_))),
        "{id} resurrected"
    );
    assert!(
        q.list().unwrap().iter().all(|r| r.envelope.id != id),
        "{id} in the list"
    );
    assert!(matches!(q.message(id), Err(QueueError::NotFound(_))));
    assert!(
        q.with_index(|i| i.iter().all(|(_, x)| *x != id)),
        "{id} still scheduled"
    );
    let bodies = store.tree(TreeName::QueueBodies).unwrap();
    assert_eq!(bodies.scan_prefix(id.to_bytes()).count(), 0, "body left");
}

/// `queue retry --all` over and over while the real scheduler loop runs
/// attempts that finish at random moments: no delivered recipient is ever
/// delivered again, and every message ends with its `ok` recipients
/// delivered and its `later` ones deferred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_while_attempts_finish_never_redelivers() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, q) = open(&dir).await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let e = envelope(n, &["ok1", "later", "ok2"]);
        ids.push(e.id);
        q.enqueue(e, BODY).await.unwrap();
    }
    let slow = Arc::new(Slow::default());
    let clock: Arc<dyn Clock> = Arc::new(clock());
    let metrics = Arc::new(QueueMetrics::default());
    let stop = CancellationToken::new();
    let attempts = TaskTracker::new();
    let run = tokio::spawn(scheduler::run(
        q.clone(),
        slow.clone(),
        Arc::new(settings()),
        clock.clone(),
        metrics.clone(),
        stop.clone(),
        attempts.clone(),
    ));
    for _ in 0..400 {
        q.retry_now(None, T0).await.unwrap();
        tokio::task::yield_now().await;
    }
    // On a loaded machine the scheduler may not have reached every message
    // yet: let it run until each has had an attempt and none is in flight
    // (the assertions below are about what was written, not about speed).
    let attempted = |q: &Queue| {
        ids.iter().all(|id| {
            q.get(*id)
                .map(|r| {
                    r.recipients
                        .iter()
                        .all(|s| s.status != RecipientStatus::Queued)
                })
                .unwrap_or(false)
        })
    };
    for _ in 0..6000 {
        if attempted(&q) && slow.in_flight.load(SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    run.await.unwrap();
    // Let attempts still in flight write their results.
    attempts.close();
    attempts.wait().await;
    assert_eq!(slow.in_flight.load(SeqCst), 0);
    assert!(slow.calls.load(SeqCst) > ids.len(), "the race did not run");
    assert_eq!(slow.max_deliveries(), 1, "a recipient was delivered twice");
    for id in ids {
        let r = q.get(id).unwrap();
        let states: Vec<_> = r.recipients.iter().map(|s| s.status).collect();
        assert_eq!(
            states,
            [
                RecipientStatus::Delivered,
                RecipientStatus::Deferred,
                RecipientStatus::Delivered
            ],
            "{id}"
        );
    }
}

/// Shutdown while an attempt is in flight: the loop returns at once, and
/// the attempt, still tracked, finishes and writes its results before the
/// tracker's wait ends. Regression test: attempts were spawned with a bare
/// `tokio::spawn` that nothing waited for, so a shutdown cut them off
/// after the message had been handed over, and the next start sent it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_attempt_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, q) = open(&dir).await;
    let e = envelope(1, &["ok"]);
    let id = e.id;
    q.enqueue(e, BODY).await.unwrap();
    let (slow, mut started) = Slow::gated();
    let slow = Arc::new(slow);
    let stop = CancellationToken::new();
    let attempts = TaskTracker::new();
    let run = tokio::spawn(scheduler::run(
        q.clone(),
        slow.clone(),
        Arc::new(settings()),
        Arc::new(clock()),
        Arc::new(QueueMetrics::default()),
        stop.clone(),
        attempts.clone(),
    ));
    assert_eq!(started.recv().await, Some(id));

    // The loop stops without waiting for the far end...
    stop.cancel();
    run.await.unwrap();
    attempts.close();
    // ...but the attempt is still there to wait for, its results unwritten.
    assert_eq!(attempts.len(), 1);
    assert!(!attempts.is_empty());
    assert_eq!(
        q.get(id).unwrap().recipients[0].status,
        RecipientStatus::Queued
    );

    slow.open();
    attempts.wait().await;
    assert!(
        matches!(q.get(id), Err(QueueError::NotFound(_))),
        "the delivered message is still queued: its results were not written"
    );
    assert_eq!(slow.max_deliveries(), 1);
}

/// `queue delete` (with and without bounce) while an attempt is in
/// flight: the message stays deleted when the attempt finishes, body and
/// index included, and the attempt drops its results without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_an_attempt_is_never_undone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir).await;
    let (slow, mut started) = Slow::gated();
    let slow = Arc::new(slow);
    let clock = Arc::new(clock());
    let s = Arc::new(settings());
    let m = Arc::new(QueueMetrics::default());
    for n in 0..40u64 {
        // `later` keeps the message unfinished after the attempt: the old
        // code wrote it back.
        let e = envelope(n, &["ok", "later", "bad"]);
        let id = e.id;
        q.enqueue(e, BODY).await.unwrap();
        let task = {
            let (q, slow, clock, s, m) =
                (q.clone(), slow.clone(), clock.clone(), s.clone(), m.clone());
            tokio::spawn(
                async move { attempt(&q, slow.as_ref(), &s, clock.as_ref(), &m, id).await },
            )
        };
        assert_eq!(started.recv().await, Some(id));
        scheduler::delete(&q, &s, clock.as_ref(), &m, id, n % 2 == 0)
            .await
            .unwrap();
        slow.open();
        task.await.unwrap().unwrap();
        assert_gone(&store, &q, id);
    }
    // What remains are the postmaster's bounces (to s@src.test), nothing
    // of the deleted messages.
    for r in q.list().unwrap() {
        assert_eq!(r.envelope.sender, ReversePath::Null);
        assert_eq!(r.envelope.recipients[0].address.to_string(), "s@src.test");
    }
}

/// A retry asked for while an attempt is in flight is kept (the attempt
/// does not write its old copy over it), and the attempt's outcomes are
/// kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_during_an_attempt_keeps_both() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, q) = open(&dir).await;
    let (slow, mut started) = Slow::gated();
    let slow = Arc::new(slow);
    let clock = Arc::new(clock());
    let s = Arc::new(settings());
    let e = envelope(1, &["ok", "later"]);
    let id = e.id;
    q.enqueue(e, BODY).await.unwrap();
    let task = {
        let (q, slow, clock, s) = (q.clone(), slow.clone(), clock.clone(), s.clone());
        tokio::spawn(async move {
            let m = QueueMetrics::default();
            attempt(&q, slow.as_ref(), &s, clock.as_ref(), &m, id).await
        })
    };
    started.recv().await.unwrap();
    assert_eq!(q.get(id).unwrap().next_attempt, T0 + 300, "recorded first");
    assert_eq!(q.retry_now(None, T0 + 5).await.unwrap(), 1);
    slow.open();
    task.await.unwrap().unwrap();
    let r = q.get(id).unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(r.recipients[1].status, RecipientStatus::Deferred);
    assert_eq!(r.next_attempt, T0 + 5, "the operator's retry was undone");
    assert_eq!(
        q.with_index(|i| i.iter().next().copied()),
        Some((T0 + 5, id))
    );
}

/// A record whose body is missing (or cut) is never handed to delivery:
/// it is kept, parked for [`PARK`], with the reason in `last_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_without_body_is_never_sent_and_is_parked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir).await;
    let bodies = store.tree(TreeName::QueueBodies).unwrap();
    let whole = envelope(1, &["ok"]);
    let cut = envelope(2, &["ok"]);
    let (whole_id, cut_id) = (whole.id, cut.id);
    q.enqueue(whole, BODY).await.unwrap();
    let big = vec![b'x'; portcullis_store::MAX_VALUE * 2 + 10];
    q.enqueue(cut, &big).await.unwrap();
    for key in bodies.scan_prefix(whole_id.to_bytes()).keys() {
        bodies.remove(key.unwrap()).unwrap();
    }
    // The middle chunk of three goes: a gap, not a shorter message.
    let middle: Vec<_> = bodies
        .scan_prefix(cut_id.to_bytes())
        .keys()
        .map(|k| k.unwrap())
        .collect();
    assert_eq!(middle.len(), 3);
    bodies.remove(&middle[1]).unwrap();

    assert!(matches!(
        q.message(whole_id),
        Err(QueueError::BodyMissing { .. })
    ));
    assert!(matches!(
        q.message(cut_id),
        Err(QueueError::BodyMissing { .. })
    ));
    let unknown = QueueId::generate(T0 * 1000 + 99, 1);
    assert!(matches!(q.message(unknown), Err(QueueError::NotFound(_))));

    let slow = Slow::default();
    let (c, s, m) = (clock(), settings(), QueueMetrics::default());
    for id in [whole_id, cut_id] {
        attempt(&q, &slow, &s, &c, &m, id).await.unwrap();
        let r = q.get(id).expect("kept for the operator");
        assert_eq!(r.recipients[0].status, RecipientStatus::Queued);
        assert_eq!(
            r.next_attempt,
            T0 + PARK.as_secs(),
            "parked, not retried soon"
        );
        let why = r.last_error.unwrap_or_default();
        assert!(why.contains("body is missing"), "{why}");
    }
    assert_eq!(slow.calls.load(SeqCst), 0, "an incomplete message was sent");
    assert_eq!(q.len(), 2, "no bounce, nothing removed");
}

/// Check-and-insert: an enqueue under an id in use is refused and leaves
/// that message whole; a bounce draws another id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_never_overwrites_an_existing_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, q) = open(&dir).await;
    let first = envelope(1, &["ok"]);
    let id = first.id;
    q.enqueue(first.clone(), BODY).await.unwrap();
    let mut intruder = envelope(2, &["other"]);
    intruder.id = id;
    assert!(matches!(
        q.enqueue(intruder.clone(), b"Subject: other\r\n\r\nX\r\n").await,
        Err(QueueError::Exists(x)) if x == id
    ));
    assert_eq!(q.get(id).unwrap().envelope, first);
    assert_eq!(q.message(id).unwrap(), BODY);

    // A generator that first hands out the id in use (a forced collision).
    let fresh = QueueId::generate(T0 * 1000 + 50, 3);
    let mut ids = vec![fresh, id].into_iter().rev();
    let used = q
        .enqueue_fresh(intruder, b"Subject: dsn\r\n\r\nY\r\n", || {
            ids.next().unwrap()
        })
        .await
        .unwrap();
    assert_eq!(used, fresh);
    assert_eq!(q.get(id).unwrap().envelope, first);
    assert_eq!(q.message(id).unwrap(), BODY);
    assert_eq!(q.message(fresh).unwrap(), b"Subject: dsn\r\n\r\nY\r\n");
    assert_eq!(q.len(), 2);
}

/// Item 5: the worst record the receiver can produce (100 recipients with
/// the longest addresses and ORCPTs a 2048-octet command line allows, 10
/// KiB replies, many attempts) is stored with no value over `MAX_VALUE`,
/// its history keeps the first and last attempts, and reply texts are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worst_case_record_stays_bounded_and_under_the_value_limit() {
    struct Loud;
    impl Deliver for Loud {
        async fn deliver(&self, job: DeliveryJob) -> Vec<RecipientResult> {
            job.pending
                .iter()
                .map(|&i| RecipientResult {
                    index: i,
                    outcome: RecipientOutcome::Deferred {
                        remote_mta: Some("m".repeat(300)),
                        reason: format!("451-{}\r\n451 é{}", "x".repeat(5000), "y".repeat(5000)),
                    },
                })
                .collect()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir).await;
    let label = "d".repeat(63);
    let domain = format!("{label}.{label}.{label}.{}.test", "e".repeat(55));
    let mut e = envelope(1, &[]);
    e.recipients = (0..100)
        .map(|i| Recipient {
            address: Address::parse(&format!("{i:03}{}@{domain}", "l".repeat(61))).unwrap(),
            notify: Notify::default(),
            orcpt: Some(format!("rfc822;{}", "o".repeat(1900))),
        })
        .collect();
    let id = e.id;
    q.enqueue(e, BODY).await.unwrap();
    let (c, s, m) = (clock(), settings(), QueueMetrics::default());
    for n in 0..40 {
        c.0.store(T0 + n, SeqCst);
        attempt(&q, &Loud, &s, &c, &m, id).await.unwrap();
    }
    let r = q.get(id).unwrap();
    assert_eq!(r.attempts, 40);
    let numbers: Vec<u32> = r.history.iter().map(|a| a.number).collect();
    let expected: Vec<u32> = (1..=5).chain(21..=40).collect();
    assert_eq!(numbers, expected, "first 5 and last 20 attempts");
    assert_eq!(r.attempts_omitted(), 15);
    for state in &r.recipients {
        let reply = state.last_reply.as_deref().unwrap();
        assert!(
            reply.len() <= REPLY_LIMIT && reply.ends_with("[...cut]"),
            "{}",
            reply.len()
        );
        assert!(state.remote_mta.as_deref().unwrap().len() <= 255);
    }
    for a in &r.history {
        let len: usize = a.outcomes.iter().map(String::len).sum();
        assert!(len <= OUTCOMES_LIMIT + 100, "{len}");
    }
    assert!(
        r.encode().len() > portcullis_store::MAX_VALUE,
        "the test is not worst case"
    );
    assert!(q.records.largest_value() <= portcullis_store::MAX_VALUE);
    store.flush_now().unwrap();
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "sled wrote blob files");
    // Reopened, the chunked record reads back the same, with nothing swept.
    drop(q);
    drop(store);
    let (_store, q) = open(&dir).await;
    assert_eq!(q.get(id).unwrap(), r);
}

/// A record that cannot be trimmed under [`RECORD_LIMIT`] (an envelope of
/// thousands of huge recipients) is an error, not a panic, and nothing of
/// it is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, q) = open(&dir).await;
    let mut e = envelope(1, &[]);
    e.recipients = (0..3000)
        .map(|i| Recipient {
            address: Address::parse(&format!("r{i}@dest.test")).unwrap(),
            notify: Notify::default(),
            orcpt: Some(format!("rfc822;{}", "o".repeat(1900))),
        })
        .collect();
    let id = e.id;
    assert!(matches!(
        q.enqueue(e, BODY).await,
        Err(QueueError::RecordTooLarge { .. })
    ));
    assert!(matches!(q.get(id), Err(QueueError::NotFound(_))));
    assert_eq!(store.tree(TreeName::QueueBodies).unwrap().len(), 0);
    assert_eq!(q.len(), 0);
}
