use super::*;
use portcullis_types::{Address, BodyType, Notify, Recipient, ReversePath};

/// A one-recipient envelope with id number `n` (shared with the spool tests).
pub(crate) fn envelope(n: u64) -> Envelope {
    Envelope {
        id: QueueId::generate(1_700_000_000_000 + n, 0),
        sender: ReversePath::parse("a@example.test").unwrap(),
        recipients: vec![Recipient {
            address: Address::parse("b@example.test").unwrap(),
            notify: Notify::default(),
            orcpt: None,
        }],
        ret: None,
        envid: None,
        body: BodyType::SevenBit,
        smtputf8: false,
        received_at: 1_700_000_000,
        client_ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        tls: None,
        authenticated: None,
        size: 0,
        origin: Default::default(),
        require_tls: false,
        tls_optional: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_list_read_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = Queue::open(&store).unwrap();
    let big: Vec<u8> = (0..(MAX_VALUE * 2 + 17)).map(|i| (i % 251) as u8).collect();
    let e = envelope(1);
    q.enqueue(e.clone(), &big).await.unwrap();
    q.enqueue(envelope(2), b"small\r\n").await.unwrap();
    assert_eq!(q.len(), 2);
    let list = q.list().unwrap();
    assert_eq!(list[0].envelope, e);
    assert_eq!(list[0].recipients[0].status, RecipientStatus::Queued);
    assert_eq!(q.message(e.id).unwrap(), big);
    q.remove(e.id).await.unwrap();
    assert_eq!(q.len(), 1);
    assert!(matches!(q.message(e.id), Err(QueueError::NotFound(_))));
    assert!(matches!(q.remove(e.id).await, Err(QueueError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_bodies_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let kept = envelope(1);
    let orphan = envelope(9).id.to_bytes();
    {
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        q.enqueue(kept.clone(), b"kept\r\n").await.unwrap();
        // A body written without its record: what a crash mid-enqueue leaves.
        let bodies = store.tree(TreeName::QueueBodies).unwrap();
        bodies
            .insert(body_key(orphan, 0), b"orphan".to_vec())
            .unwrap();
        bodies
            .insert(body_key(orphan, 1), b"orphan".to_vec())
            .unwrap();
        store.flush_now().unwrap();
    }
    let store = Store::open_when_released(dir.path(), std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let q = Queue::open(&store).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(store.tree(TreeName::QueueBodies).unwrap().len(), 1);
    assert_eq!(q.message(kept.id).unwrap(), b"kept\r\n");
}

mod scheduling {
    use super::*;
    use crate::scheduler::{SchedulerSettings, attempt};
    use crate::{Deliver, DeliveryJob, QueueMetrics, RecipientOutcome, RecipientResult};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A clock the test moves by hand.
    struct TestClock(AtomicU64);
    impl portcullis_types::Clock for TestClock {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    /// Answers each recipient from a table and remembers what the stored
    /// record looked like while delivery ran.
    struct Scripted {
        queue: Queue,
        outcome: Box<dyn Fn(&str) -> RecipientOutcome + Send + Sync>,
        seen: Mutex<Vec<(u32, u64, Vec<usize>)>>,
    }

    impl Deliver for Scripted {
        async fn deliver(&self, job: DeliveryJob) -> Vec<RecipientResult> {
            let stored = self.queue.get(job.id).unwrap();
            self.seen.lock().unwrap().push((
                stored.attempts,
                stored.next_attempt,
                job.pending.clone(),
            ));
            job.pending
                .iter()
                .map(|&i| RecipientResult {
                    index: i,
                    outcome: (self.outcome)(&job.envelope.recipients[i].address.local),
                })
                .collect()
        }
    }

    fn settings() -> SchedulerSettings {
        SchedulerSettings {
            hostname: "mx.test".into(),
            retry: vec![Duration::from_secs(300), Duration::from_secs(600)],
            max_age: Duration::from_secs(86_400),
            delay_warning: Duration::from_secs(3600),
            max_concurrent: 4,
        }
    }

    fn env(rcpts: &[&str], sender: &str) -> Envelope {
        let mut e = envelope(1);
        e.received_at = 1_000_000;
        e.sender = ReversePath::parse(sender).unwrap();
        e.recipients = rcpts
            .iter()
            .map(|r| Recipient {
                address: Address::parse(&format!("{r}@dest.test")).unwrap(),
                notify: Notify::default(),
                orcpt: None,
            })
            .collect();
        e
    }

    fn outcome(local: &str) -> RecipientOutcome {
        match local {
            "ok" => RecipientOutcome::Delivered {
                remote_mta: "mx".into(),
                reply: "250 ok".into(),
            },
            "bad" => RecipientOutcome::Failed {
                remote_mta: Some("mx".into()),
                status: (5, 1, 1),
                reason: "550 5.1.1 no such user".into(),
            },
            _ => RecipientOutcome::Deferred {
                remote_mta: Some("mx".into()),
                reason: "451 4.3.0 later".into(),
            },
        }
    }

    async fn setup(e: Envelope) -> (tempfile::TempDir, Queue, Scripted, TestClock) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = Queue::open(&store).unwrap();
        q.enqueue(e, b"Subject: t\r\n\r\nbody\r\n").await.unwrap();
        let d = Scripted {
            queue: q.clone(),
            outcome: Box::new(outcome),
            seen: Mutex::new(vec![]),
        };
        (dir, q, d, TestClock(AtomicU64::new(1_000_000)))
    }

    /// STYLE 7: the attempt and the next retry are on disk before delivery
    /// starts; delivered recipients are not offered again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempt_is_recorded_before_delivery_and_delivered_recipients_stay_delivered() {
        let e = env(&["ok", "later"], "s@src.test");
        let id = e.id;
        let (_dir, q, d, clock) = setup(e).await;
        let m = QueueMetrics::default();
        attempt(&q, &d, &settings(), &clock, &m, id).await.unwrap();
        assert_eq!(d.seen.lock().unwrap()[0], (1, 1_000_300, vec![0, 1]));
        let r = q.get(id).unwrap();
        assert_eq!(r.recipients[0].status, RecipientStatus::Delivered);
        assert_eq!(r.recipients[1].status, RecipientStatus::Deferred);
        assert_eq!(r.next_attempt, 1_000_300);
        clock.0.store(1_000_300, Ordering::SeqCst);
        attempt(&q, &d, &settings(), &clock, &m, id).await.unwrap();
        // Second attempt: only the deferred one, and the second backoff.
        assert_eq!(d.seen.lock().unwrap()[1], (2, 1_000_900, vec![1]));
        assert_eq!(
            q.len(),
            1,
            "no DSN yet: nothing failed and no delay warning due"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanent_failure_queues_a_dsn_and_finishes() {
        let e = env(&["ok", "bad"], "s@src.test");
        let id = e.id;
        let (_dir, q, d, clock) = setup(e).await;
        attempt(&q, &d, &settings(), &clock, &QueueMetrics::default(), id)
            .await
            .unwrap();
        let all = q.list().unwrap();
        assert_eq!(all.len(), 1, "original removed, DSN queued");
        let dsn = &all[0];
        assert_eq!(dsn.envelope.sender, ReversePath::Null);
        assert_eq!(dsn.envelope.recipients[0].address.to_string(), "s@src.test");
        let text = String::from_utf8(q.message(dsn.envelope.id).unwrap()).unwrap();
        assert!(text.contains("550 5.1.1 no such user"), "{text}");
        assert!(
            !text.contains("Final-Recipient: rfc822; ok@dest.test"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_warning_once_then_expiry_bounce() {
        let e = env(&["later"], "s@src.test");
        let id = e.id;
        let (_dir, q, d, clock) = setup(e).await;
        let m = QueueMetrics::default();
        let s = settings();
        clock.0.store(1_000_000 + 3600, Ordering::SeqCst);
        attempt(&q, &d, &s, &clock, &m, id).await.unwrap();
        assert!(q.get(id).unwrap().delay_warned);
        assert_eq!(q.len(), 2, "one delay DSN");
        attempt(&q, &d, &s, &clock, &m, id).await.unwrap();
        assert_eq!(q.len(), 2, "the delay DSN is sent once");
        clock.0.store(1_000_000 + 86_400, Ordering::SeqCst);
        attempt(&q, &d, &s, &clock, &m, id).await.unwrap();
        assert!(
            matches!(q.get(id), Err(QueueError::NotFound(_))),
            "expired message removed"
        );
        let dsns: Vec<String> = q
            .list()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8(q.message(r.envelope.id).unwrap()).unwrap())
            .collect();
        assert_eq!(dsns.len(), 2);
        assert!(dsns.iter().any(|t| t.contains("Action: delayed")));
        assert!(
            dsns.iter()
                .any(|t| t.contains("Action: failed") && t.contains("Status: 4.4.7"))
        );
    }

    /// Never a bounce for a bounce: the failed notification stays, visible.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_notification_is_kept_not_bounced() {
        let e = env(&["bad"], "");
        let id = e.id;
        let (_dir, q, d, clock) = setup(e).await;
        attempt(&q, &d, &settings(), &clock, &QueueMetrics::default(), id)
            .await
            .unwrap();
        assert_eq!(q.len(), 1);
        let r = q.get(id).unwrap();
        assert_eq!(r.recipients[0].status, RecipientStatus::Failed);
        assert!(q.with_index(|i| i.is_empty()), "not scheduled again");
    }
}
