//! The intake over a real sled store, and the mail path over a real
//! report message (built and DKIM-signed as we send ours).

use super::*;
use crate::{Day, MessageParts, ReportJson, build_report_message, gzip, report_signer};
use portcullis_queue::{Deliver, DeliveryJob, MessageData, RecipientOutcome, RecipientResult};
use portcullis_store::Store;
use portcullis_types::{Address, Clock, Domain};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A clock a test moves.
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn at(secs: u64) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(secs),
        )))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// 2026-12-01 00:00 UTC.
const T0: u64 = 1_796_083_200;

fn ours() -> LiveOurs {
    LiveOurs::new(Ours::new(
        vec![
            Domain::parse("example.test").unwrap(),
            Domain::parse("other.example").unwrap(),
        ],
        vec![Address::parse("tlsrpt@example.test").unwrap()],
    ))
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<TestClock>,
    reports: ReceivedReports,
}

fn world(limits: ReceivedLimits) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clock = TestClock::at(T0);
    let reports = ReceivedReports::open(&store, clock.clone(), ours(), limits).unwrap();
    World {
        _dir: dir,
        store,
        clock,
        reports,
    }
}

/// A report from `org` with `report_id` about `domain`: 10 successful
/// sessions, 3 failed (2 certificate-expired, 1 starttls-not-supported).
fn report(org: &str, report_id: &str, domain: &str) -> Value {
    json!({
        "organization-name": org,
        "date-range": {
            "start-datetime": "2026-11-30T00:00:00Z",
            "end-datetime": "2026-11-30T23:59:59Z"
        },
        "contact-info": "tlsrpt@reporter.example",
        "report-id": report_id,
        "policies": [{
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.test", "max_age: 86400"],
                "policy-domain": domain,
                "mx-host": ["mx.example.test"]
            },
            "summary": {
                "total-successful-session-count": 10,
                "total-failure-session-count": 3
            },
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "192.0.2.1",
                    "receiving-mx-hostname": "mx.example.test",
                    "receiving-ip": "198.51.100.7",
                    "failed-session-count": 2
                },
                {
                    "result-type": "starttls-not-supported",
                    "receiving-mx-hostname": "mx.example.test",
                    "failed-session-count": 1,
                    "additional-information": "no STARTTLS in EHLO"
                }
            ]
        }]
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[track_caller]
fn invalid(r: Result<Taken, IntakeError>, needle: &str) {
    match r {
        Err(IntakeError::Invalid(why)) => assert!(why.contains(needle), "{why}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_gzip_report_is_stored_with_its_counts_and_details() {
    let w = world(ReceivedLimits::default());
    let body = gzip(&bytes(&report(
        "Big Mail",
        "r1@big.example",
        "example.test",
    )))
    .unwrap();
    let taken = w.reports.take_report(&body, Channel::Https).unwrap();
    assert!(!taken.duplicate);
    let list = w.reports.list(&ReceivedFilter::default()).unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!(s.id, taken.id);
    assert_eq!(s.organization, "Big Mail");
    assert_eq!(s.domains, ["example.test"]);
    assert_eq!((s.successful, s.failed), (10, 3));
    assert_eq!(s.received_at, T0);
    let shown = w.reports.show(&taken.id).unwrap().unwrap();
    assert_eq!(shown.report_id, "r1@big.example");
    assert_eq!(shown.contact, "tlsrpt@reporter.example");
    assert_eq!(shown.channel, Channel::Https);
    let p = &shown.policies[0];
    assert_eq!(p.policy_type, "sts");
    assert_eq!(p.policy_string.len(), 4);
    assert_eq!(p.failure_details.len(), 2);
    assert_eq!(p.failure_details[0].result_type, "certificate-expired");
    assert_eq!(p.failure_details[0].count, 2);
    assert_eq!(
        p.failure_details[0].receiving_ip,
        Some("198.51.100.7".parse().unwrap())
    );
    assert_eq!(shown.start, 1_795_996_800);
    assert_eq!(
        w.reports
            .failures("example.test", "certificate-expired", "Big Mail"),
        2
    );
    assert_eq!(
        w.reports
            .failures("example.test", "starttls-not-supported", "Big Mail"),
        1
    );
}

#[tokio::test]
async fn plain_json_is_taken_as_is() {
    let w = world(ReceivedLimits::default());
    let body = bytes(&report("Plain", "p1", "example.test"));
    assert!(w.reports.take_report(&body, Channel::Mail).is_ok());
    assert_eq!(w.reports.len(), 1);
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_without_inflating_it_all() {
    let w = world(ReceivedLimits::default());
    // 64 MiB of zeros compress to about 64 KiB.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]).unwrap();
    assert!(bomb.len() < MAX_REPORT_BYTES);
    invalid(
        w.reports.take_report(&bomb, Channel::Https),
        "once decompressed",
    );
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    invalid(w.reports.take_report(&big, Channel::Https), "cap");
    assert!(w.reports.is_empty());
}

#[tokio::test]
async fn a_report_about_none_of_our_domains_is_refused() {
    let w = world(ReceivedLimits::default());
    let body = bytes(&report("Someone", "x1", "not-ours.example"));
    invalid(
        w.reports.take_report(&body, Channel::Https),
        "none of our domains",
    );
    assert!(w.reports.is_empty());
    assert_eq!(
        w.reports
            .failures("not-ours.example", "certificate-expired", "Someone"),
        0
    );
}

#[tokio::test]
async fn policies_about_other_domains_are_left_out() {
    let w = world(ReceivedLimits::default());
    let mut r = report("Mixed", "m1", "EXAMPLE.test.");
    let mut foreign = r["policies"][0].clone();
    foreign["policy"]["policy-domain"] = json!("not-ours.example");
    r["policies"].as_array_mut().unwrap().push(foreign);
    let id = w
        .reports
        .take_report(&bytes(&r), Channel::Https)
        .unwrap()
        .id;
    let shown = w.reports.show(&id).unwrap().unwrap();
    assert_eq!(shown.policies.len(), 1);
    assert_eq!(shown.policies[0].policy_domain, "example.test");
    assert_eq!(shown.other_policies, 1);
}

#[tokio::test]
async fn missing_optional_fields_are_tolerated() {
    let w = world(ReceivedLimits::default());
    let minimal = json!({
        "date-range": {
            "start-datetime": "2026-11-30T00:00:00Z",
            "end-datetime": "2026-11-30T23:59:59Z"
        },
        "policies": [{
            "policy": { "policy-type": "no-policy-found", "policy-domain": "example.test" },
            "summary": { "total-successful-session-count": 5 }
        }]
    });
    let taken = w
        .reports
        .take_report(&bytes(&minimal), Channel::Https)
        .unwrap();
    let shown = w.reports.show(&taken.id).unwrap().unwrap();
    assert_eq!(shown.organization, "");
    assert_eq!(shown.report_id, "");
    assert_eq!(shown.policies[0].policy_type, "no-policy-found");
    assert_eq!(
        (shown.policies[0].successful, shown.policies[0].failed),
        (5, 0)
    );
    // Two different reports without a report-id are two reports.
    let mut other = minimal.clone();
    other["policies"][0]["summary"]["total-successful-session-count"] = json!(6);
    let second = w
        .reports
        .take_report(&bytes(&other), Channel::Https)
        .unwrap();
    assert_ne!(second.id, taken.id);
    assert_eq!(w.reports.len(), 2);
}

#[tokio::test]
async fn a_report_sent_again_is_stored_and_counted_once() {
    let w = world(ReceivedLimits::default());
    let json = bytes(&report("Twice", "same-id", "example.test"));
    let first = w.reports.take_report(&json, Channel::Mail).unwrap();
    // The same report by the other channel, gzip this time.
    let again = w
        .reports
        .take_report(&gzip(&json).unwrap(), Channel::Https)
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(w.reports.len(), 1);
    assert_eq!(
        w.reports
            .failures("example.test", "certificate-expired", "Twice"),
        2
    );
}

#[tokio::test]
async fn garbage_is_invalid() {
    let w = world(ReceivedLimits::default());
    for body in [
        &b"hello, this is not a report"[..],
        b"{\"policies\": 5}",
        b"[]",
        &[0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02][..],
        b"",
    ] {
        assert!(
            matches!(
                w.reports.take_report(body, Channel::Https),
                Err(IntakeError::Invalid(_))
            ),
            "{body:?}"
        );
    }
    assert!(w.reports.is_empty());
}

#[tokio::test]
async fn the_oldest_reports_go_when_the_store_is_full() {
    let limits = ReceivedLimits {
        max_reports: 3,
        ..ReceivedLimits::default()
    };
    let w = world(limits);
    let mut ids = Vec::new();
    for n in 0..5 {
        let body = bytes(&report("Many", &format!("id-{n}"), "example.test"));
        ids.push(w.reports.take_report(&body, Channel::Https).unwrap().id);
        w.clock.advance(Duration::from_secs(60));
    }
    assert_eq!(w.reports.len(), 3);
    let listed: Vec<String> = w
        .reports
        .list(&ReceivedFilter::default())
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    assert!(w.reports.show(&ids[0]).unwrap().is_none());
    // The counter never goes down: it counts what was reported.
    assert_eq!(
        w.reports
            .failures("example.test", "certificate-expired", "Many"),
        10
    );
}

#[tokio::test]
async fn reports_expire_after_the_retention() {
    let w = world(ReceivedLimits {
        retention: Duration::from_secs(86_400),
        ..ReceivedLimits::default()
    });
    let body = bytes(&report("Old", "old-1", "example.test"));
    let id = w.reports.take_report(&body, Channel::Https).unwrap().id;
    w.clock.advance(Duration::from_secs(86_401));
    assert!(
        w.reports
            .list(&ReceivedFilter::default())
            .unwrap()
            .is_empty()
    );
    w.reports.sweep().unwrap();
    assert!(w.reports.show(&id).unwrap().is_none());
    assert!(w.reports.is_empty());
}

#[tokio::test]
async fn reporter_labels_are_capped() {
    let w = world(ReceivedLimits {
        max_reporters: 2,
        ..ReceivedLimits::default()
    });
    for org in ["A", "B", "C", "D"] {
        let body = bytes(&report(org, "r", "example.test"));
        w.reports.take_report(&body, Channel::Https).unwrap();
    }
    let f = |who| {
        w.reports
            .failures("example.test", "certificate-expired", who)
    };
    assert_eq!((f("A"), f("B"), f("C"), f("other")), (2, 2, 0, 4));
}

#[tokio::test]
async fn counters_and_reports_survive_a_restart() {
    let w = world(ReceivedLimits::default());
    let body = bytes(&report("Kept", "k1", "example.test"));
    let id = w.reports.take_report(&body, Channel::Https).unwrap().id;
    let (dir, store) = (w._dir, w.store);
    drop(w.reports);
    drop(store);
    let store = Store::open_when_released(dir.path(), Duration::from_secs(10))
        .await
        .unwrap();
    let reopened =
        ReceivedReports::open(&store, TestClock::at(T0), ours(), ReceivedLimits::default())
            .unwrap();
    assert!(reopened.show(&id).unwrap().is_some());
    assert_eq!(
        reopened.failures("example.test", "certificate-expired", "Kept"),
        2
    );
    let mut page = portcullis_metrics::MetricsWriter::new();
    reopened.render_metrics(&mut page);
    let page = page.finish();
    assert!(
        page.contains(r#"portcullis_tlsrpt_received_failures_total{domain="example.test",result_type="certificate-expired",reporter="Kept"} 2"#),
        "{page}"
    );
}

#[tokio::test]
async fn the_list_filters_by_domain_and_date() {
    let w = world(ReceivedLimits::default());
    let a = bytes(&report("F", "a", "example.test"));
    let mut later = report("F", "b", "other.example");
    later["date-range"]["end-datetime"] = json!("2026-12-03T23:59:59Z");
    w.reports.take_report(&a, Channel::Https).unwrap();
    w.reports
        .take_report(&bytes(&later), Channel::Https)
        .unwrap();
    let by_domain = ReceivedFilter {
        domain: Some("example.test".into()),
        since: None,
    };
    assert_eq!(w.reports.list(&by_domain).unwrap().len(), 1);
    let since = ReceivedFilter {
        domain: None,
        since: Some(Day::of(UNIX_EPOCH + Duration::from_secs(T0 + 86_400)).start_timestamp()),
    };
    let found = w.reports.list(&since).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].domains, ["other.example"]);
}

#[tokio::test]
async fn a_huge_report_is_trimmed_to_fit_one_value() {
    let w = world(ReceivedLimits::default());
    let mut r = report("Huge", "h1", "example.test");
    let detail = r["policies"][0]["failure-details"][0].clone();
    let mut policy = r["policies"][0].clone();
    policy["failure-details"] = Value::Array(
        (0..30)
            .map(|n| {
                let mut d = detail.clone();
                d["additional-information"] = json!(format!("{n} {}", "x".repeat(80)));
                d
            })
            .collect(),
    );
    policy["policy"]["policy-string"] = Value::Array(vec![json!("y".repeat(30)); 25]);
    policy["summary"]["total-failure-session-count"] = json!(1000);
    r["policies"] = Value::Array(vec![policy; 110]);
    let body = gzip(&bytes(&r)).unwrap();
    assert!(bytes(&r).len() < MAX_REPORT_BYTES);
    let id = w.reports.take_report(&body, Channel::Https).unwrap().id;
    let shown = w.reports.show(&id).unwrap().unwrap();
    assert!(shown.truncated);
    assert!(serde_json::to_vec(&shown).unwrap().len() <= record::RECORD_BUDGET);
    assert!(
        shown
            .policies
            .iter()
            .all(|p| p.failure_details.len() <= MAX_FAILURE_DETAILS)
    );
    // Every row counted, kept or not: 110 policies × 30 rows × 2.
    assert_eq!(
        w.reports
            .failures("example.test", "certificate-expired", "Huge"),
        6_600
    );
}

/// A deliverer that records what it was asked and says "delivered".
#[derive(Default)]
struct Onward(Mutex<Vec<usize>>);

impl Deliver for Onward {
    async fn deliver(&self, job: DeliveryJob) -> Vec<RecipientResult> {
        self.0.lock().unwrap().extend(&job.pending);
        job.pending
            .iter()
            .map(|&index| RecipientResult {
                index,
                outcome: RecipientOutcome::Delivered {
                    remote_mta: "next.hop".into(),
                    reply: "250 ok".into(),
                },
            })
            .collect()
    }
}

/// The RFC 8460 §5.3 message a reporter sends (our own builder), signed.
fn report_mail(value: &Value, to: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    portcullis_test_support::keys::dkim_rsa_key(&key);
    let signer = report_signer(&std::fs::read(&key).unwrap(), "reporter.example", "s").unwrap();
    let report = ReportJson {
        report: mail_auth::report::tlsrpt::TlsReport::parse_json(&bytes(value)).unwrap(),
        json: value.clone(),
    };
    let gz = gzip(&bytes(value)).unwrap();
    let parts = MessageParts {
        domain: "example.test",
        submitter: "reporter.example",
        from: "tlsrpt@reporter.example",
        to,
        date: SystemTime::now(),
        day: Day::of(UNIX_EPOCH + Duration::from_secs(T0)),
    };
    build_report_message(&report, &gz, parts, &signer).unwrap()
}

fn job(message: Vec<u8>, rcpts: &[&str]) -> DeliveryJob {
    use portcullis_types::{BodyType, Envelope, Notify, Origin, QueueId, Recipient, ReversePath};
    let id = QueueId::generate(1_700_000_000_000, 7);
    let envelope = Envelope {
        id,
        sender: ReversePath::parse("reporter@reporter.example").unwrap(),
        recipients: rcpts
            .iter()
            .map(|r| Recipient {
                address: Address::parse(r).unwrap(),
                notify: Notify::default(),
                orcpt: None,
            })
            .collect(),
        ret: None,
        envid: None,
        body: BodyType::EightBitMime,
        smtputf8: false,
        received_at: 1_700_000_000,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        helo: "reporter.example".into(),
        tls: None,
        authenticated: None,
        size: message.len() as u64,
        origin: Origin::Relay,
        require_tls: false,
        tls_optional: false,
    };
    DeliveryJob {
        id,
        pending: (0..rcpts.len()).collect(),
        envelope: Arc::new(envelope),
        message: MessageData::from(message),
        attempt: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_the_report_address_is_read_and_not_sent_onward() {
    let w = world(ReceivedLimits::default());
    let onward = Arc::new(Onward::default());
    let mailbox = ReportMailbox::new(onward.clone(), Arc::new(w.reports.clone()), ours());
    let message = report_mail(
        &report("Mailer", "mail-1", "example.test"),
        "TLSRPT@example.test",
    );
    let results = mailbox
        .deliver(job(
            message,
            &["TLSRPT@example.test", "someone@elsewhere.example"],
        ))
        .await;
    assert_eq!(onward.0.lock().unwrap().as_slice(), [1]);
    let mine = results.iter().find(|r| r.index == 0).unwrap();
    match &mine.outcome {
        RecipientOutcome::Delivered { reply, .. } => assert!(reply.contains("stored"), "{reply}"),
        other => panic!("{other:?}"),
    }
    let listed = w.reports.list(&ReceivedFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].organization, "Mailer");
    assert_eq!(
        w.reports.show(&listed[0].id).unwrap().unwrap().channel,
        Channel::Mail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_without_a_usable_report_is_dropped_without_a_bounce() {
    let w = world(ReceivedLimits::default());
    let onward = Arc::new(Onward::default());
    let mailbox = ReportMailbox::new(onward.clone(), Arc::new(w.reports.clone()), ours());
    let plain =
        b"From: a@b.example\r\nTo: tlsrpt@example.test\r\nSubject: hi\r\n\r\nnot a report\r\n";
    let foreign = report_mail(
        &report("Else", "e-1", "not-ours.example"),
        "tlsrpt@example.test",
    );
    for message in [plain.to_vec(), foreign] {
        let results = mailbox
            .deliver(job(message, &["tlsrpt@example.test"]))
            .await;
        match &results[0].outcome {
            RecipientOutcome::Delivered { reply, .. } => assert!(reply.contains("dropped")),
            other => panic!("no failure (no bounce) expected: {other:?}"),
        }
    }
    assert!(onward.0.lock().unwrap().is_empty());
    assert!(w.reports.is_empty());
}
