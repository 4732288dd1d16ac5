//! The aggregates (counting, the caps), the XML of a report (RFC 7489
//! Appendix C fields), and a send pass (once only, §7.1 external
//! destinations, `!size`), on a real sled store and the in-memory
//! resolver.

use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mail_parser::MimeHeaders;
use portcullis_auth::DkimSigner;
use portcullis_dns::MemoryResolver;
use portcullis_store::Store;
use portcullis_types::Clock;

use super::*;

const ED25519: &str = "-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIPduBFJ69OEeWd+/xMmq0/T5phXuEgLE//1Bjm6QGn5G\n\
-----END PRIVATE KEY-----\n";

/// 2026-12-05 10:00 UTC.
const NOW: u64 = 1_796_464_800;

struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<(String, Vec<u8>)>>);

impl DmarcMailer for Arc<Sink> {
    async fn submit(&self, to: &str, message: Vec<u8>) -> Result<String, String> {
        let mut m = self.0.lock().map_err(|e| e.to_string())?;
        m.push((to.to_owned(), message));
        Ok(format!("q{}", m.len()))
    }
}

fn published(rua: &[&str]) -> Published {
    Published {
        rua: rua
            .iter()
            .map(|u| Rua {
                uri: (*u).to_owned(),
                max_size: 0,
            })
            .collect(),
        adkim_strict: true,
        aspf_strict: false,
        p: "quarantine".to_owned(),
        sp: "reject".to_owned(),
        pct: 50,
    }
}

fn observation(domain: &str, ip: &str, disposition: &str, rua: &[&str]) -> Observation {
    Observation {
        header_from: domain.to_owned(),
        day: Day::of(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)),
        published: published(rua),
        row: RowFacts {
            source_ip: ip.parse::<IpAddr>().expect("ip"),
            envelope_from: domain.to_owned(),
            disposition: disposition.to_owned(),
            dkim_aligned: disposition == "none",
            spf_aligned: false,
            local_policy: false,
            dkim: vec![DkimAuth {
                domain: domain.to_owned(),
                selector: "s1".to_owned(),
                result: if disposition == "none" {
                    "pass"
                } else {
                    "fail"
                }
                .to_owned(),
            }],
            spf: SpfAuth {
                domain: domain.to_owned(),
                helo: false,
                result: "softfail".to_owned(),
            },
        },
    }
}

fn recorder(dir: &std::path::Path, limits: Limits) -> (Store, DmarcRecorder) {
    let store = Store::open(dir).expect("store");
    let rec = DmarcRecorder::open(&store, limits, Arc::default()).expect("recorder");
    (store, rec)
}

#[tokio::test]
async fn messages_are_counted_per_row_and_domain_day() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_store, rec) = recorder(dir.path(), Limits::default());
    let rua = ["mailto:d@a.test"];
    assert_eq!(
        rec.record(&observation("a.test", "192.0.2.1", "none", &rua))
            .ok(),
        Some(Recorded::NewRow)
    );
    assert_eq!(
        rec.record(&observation("a.test", "192.0.2.1", "none", &rua))
            .ok(),
        Some(Recorded::Counted)
    );
    assert_eq!(
        rec.record(&observation("a.test", "192.0.2.2", "quarantine", &rua))
            .ok(),
        Some(Recorded::NewRow)
    );
    assert_eq!(
        rec.record(&observation("b.test", "192.0.2.1", "none", &rua))
            .ok(),
        Some(Recorded::NewRow)
    );
    let pending = rec.pending().expect("pending");
    let a = pending
        .iter()
        .find(|p| p.domain == "a.test")
        .expect("a.test");
    assert_eq!((a.rows, a.messages), (2, 3));
    let rows = rec.rows(a.day, "a.test").expect("rows");
    let counts: Vec<u64> = rows.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts.iter().sum::<u64>(), 3);
    assert!(counts.contains(&2) && counts.contains(&1));
    // "b.test" rows are not "a.test"'s, though one name is not a prefix.
    assert_eq!(rec.rows(a.day, "b.test").expect("rows").len(), 1);
    rec.remove(a.day, "a.test").expect("remove");
    assert!(rec.rows(a.day, "a.test").expect("rows").is_empty());
    assert_eq!(rec.pending().expect("pending").len(), 1);
}

/// A sender choosing From domains and source addresses fills the caps,
/// no further; the counts survive a reopen (the domain-day count too).
#[tokio::test]
async fn the_caps_bound_what_a_sender_can_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let limits = Limits {
        max_domain_days: 3,
        max_rows: 2,
    };
    {
        let (_store, rec) = recorder(dir.path(), limits);
        let rua = ["mailto:d@x.test"];
        for i in 0..10 {
            let r = rec.record(&observation(
                &format!("d{i}.test"),
                "192.0.2.1",
                "none",
                &rua,
            ));
            let want = if i < 3 {
                Recorded::NewRow
            } else {
                Recorded::DomainCap
            };
            assert_eq!(r.ok(), Some(want), "domain {i}");
        }
        for i in 0..5 {
            let r = rec.record(&observation(
                "d0.test",
                &format!("198.51.100.{i}"),
                "none",
                &rua,
            ));
            let want = if i < 1 {
                Recorded::NewRow
            } else {
                Recorded::RowCap
            };
            assert_eq!(r.ok(), Some(want), "row {i}");
        }
        // An existing row is still counted at the cap.
        assert_eq!(
            rec.record(&observation("d0.test", "192.0.2.1", "none", &rua))
                .ok(),
            Some(Recorded::Counted)
        );
    }
    let store = Store::open_when_released(dir.path(), Duration::from_secs(10))
        .await
        .expect("reopen");
    let rec = DmarcRecorder::open(&store, limits, Arc::default()).expect("recorder");
    assert_eq!(
        rec.record(&observation(
            "new.test",
            "192.0.2.1",
            "none",
            &["mailto:d@x.test"]
        ))
        .ok(),
        Some(Recorded::DomainCap)
    );
    assert_eq!(rec.pending().expect("pending").len(), 3);
}

fn info() -> ReportInfo {
    ReportInfo {
        organization: "Portcullis Test".to_owned(),
        contact: "postmaster@mx.test".to_owned(),
        submitter: "mx.test".to_owned(),
    }
}

#[test]
fn the_xml_has_the_appendix_c_fields() {
    let o = observation("a.test", "192.0.2.7", "quarantine", &["mailto:d@a.test"]);
    let day = o.day;
    let report = build_report(
        &info(),
        day,
        "a.test",
        "id-1@mx.test",
        &o.published,
        &[(o.row.clone(), 4)],
    );
    let xml = report_xml(&report, o.published.pct);
    for want in [
        "<org_name>Portcullis Test</org_name>",
        "<email>postmaster@mx.test</email>",
        "<report_id>id-1@mx.test</report_id>",
        &format!("<begin>{}</begin>", day.start_timestamp()),
        &format!("<end>{}</end>", day.end_timestamp()),
        "<domain>a.test</domain>",
        "<adkim>s</adkim>",
        "<aspf>r</aspf>",
        "<p>quarantine</p>",
        "<sp>reject</sp>",
        "<pct>50</pct>",
        "<source_ip>192.0.2.7</source_ip>",
        "<count>4</count>",
        "<disposition>quarantine</disposition>",
        "<dkim>fail</dkim>",
        "<spf>fail</spf>",
        "<header_from>a.test</header_from>",
        "<selector>s1</selector>",
        "<result>softfail</result>",
    ] {
        assert!(xml.contains(want), "{want} missing from\n{xml}");
    }
    // The pct sits inside policy_published.
    let pp = &xml[xml.find("<policy_published>").expect("pp")
        ..xml.find("</policy_published>").expect("pp end")];
    assert!(pp.contains("<pct>50</pct>"));
    // And mail-auth reads its own report back.
    let back = mail_auth::report::Report::parse_xml(xml.as_bytes()).expect("parses");
    assert_eq!(back.records().len(), 1);
    assert_eq!(back.records()[0].count(), 4);
}

fn gunzip(gz: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

/// The gzip XML attachment of a report message.
fn attachment(message: &[u8]) -> (String, String) {
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .expect("mime");
    let part = parsed.attachment(0).expect("attachment");
    let name = part.attachment_name().expect("name").to_owned();
    (name, gunzip(part.contents()))
}

#[tokio::test]
async fn a_pass_sends_once_to_authorized_destinations_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, rec) = recorder(dir.path(), Limits::default());
    let rua = [
        "mailto:dmarc@a.test",
        "mailto:agg@reports.test",
        "mailto:agg@elsewhere.test",
        "https://a.test/report",
    ];
    rec.record(&observation("a.test", "192.0.2.1", "none", &rua))
        .expect("record");
    let resolver = MemoryResolver::new().txt("a.test._report._dmarc.reports.test", "v=DMARC1");
    let clock = Arc::new(HandClock(AtomicU64::new(NOW)));
    let sink = Arc::new(Sink::default());
    let signer =
        DkimSigner::from_pem(ED25519.as_bytes(), "mx.test", "s1", &REPORT_HEADERS).expect("key");
    let mut settings = SenderSettings::new(info(), "dmarc-reports@mx.test");
    settings.send_window = Duration::from_secs(3600);
    let sender = DmarcSender::new(
        store,
        rec.clone(),
        resolver,
        Arc::clone(&sink),
        signer,
        settings,
        clock.clone(),
    )
    .expect("sender");
    // The day is not over: nothing.
    assert!(sender.send_now().await.is_empty());
    // The next day, past the window: sent.
    let next = Day::of(clock.now()).end() + Duration::from_secs(3600);
    let outcomes = sender.send_due(next).await;
    let sent: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            SendOutcome::Sent { to, .. } => Some(to.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["dmarc@a.test", "agg@reports.test"], "{outcomes:#?}");
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Skipped { .. }))
        .count();
    assert_eq!(skipped, 2, "{outcomes:#?}");
    {
        let mails = sink.0.lock().expect("sink");
        assert_eq!(mails.len(), 2);
        let text = String::from_utf8_lossy(&mails[0].1).to_string();
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        let parsed = mail_parser::MessageParser::default()
            .parse(&mails[0].1)
            .expect("mime");
        let subject = parsed.subject().expect("subject");
        assert!(
            subject.starts_with("Report Domain: a.test Submitter: mx.test Report-ID: <"),
            "{subject}"
        );
        let (name, xml) = attachment(&mails[0].1);
        let day = Day::of(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW));
        assert_eq!(
            name,
            format!(
                "mx.test!a.test!{}!{}.xml.gz",
                day.start_timestamp(),
                day.end_timestamp()
            )
        );
        assert!(xml.contains("<source_ip>192.0.2.1</source_ip>"), "{xml}");
    }
    // Once only: the aggregates are gone, and a late row is not reported.
    assert!(rec.pending().expect("pending").is_empty());
    rec.record(&observation("a.test", "192.0.2.9", "none", &rua))
        .expect("record");
    assert!(
        sender
            .send_due(next + Duration::from_secs(60))
            .await
            .is_empty()
    );
    assert_eq!(sink.0.lock().expect("sink").len(), 2);
    assert!(rec.pending().expect("pending").is_empty());
}

#[tokio::test]
async fn a_report_over_the_size_limit_is_not_sent_and_dns_trouble_waits() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, rec) = recorder(dir.path(), Limits::default());
    let mut o = observation(
        "a.test",
        "192.0.2.1",
        "none",
        &["mailto:d@a.test", "mailto:x@other.test"],
    );
    o.published.rua[0].max_size = 100;
    rec.record(&o).expect("record");
    let resolver = MemoryResolver::new().temp_fail("a.test._report._dmarc.other.test");
    let clock = Arc::new(HandClock(AtomicU64::new(NOW + 86_400)));
    let sink = Arc::new(Sink::default());
    let signer =
        DkimSigner::from_pem(ED25519.as_bytes(), "mx.test", "s1", &REPORT_HEADERS).expect("key");
    let mut settings = SenderSettings::new(info(), "dmarc-reports@mx.test");
    settings.max_attempts = 2;
    let sender = DmarcSender::new(
        store,
        rec.clone(),
        resolver,
        Arc::clone(&sink),
        signer,
        settings,
        clock,
    )
    .expect("sender");
    let first = sender.send_now().await;
    assert!(
        matches!(
            first.as_slice(),
            [SendOutcome::Failed { gave_up: false, .. }]
        ),
        "{first:#?}"
    );
    assert_eq!(rec.pending().expect("pending").len(), 1);
    let second = sender.send_now().await;
    assert!(
        matches!(
            second.as_slice(),
            [SendOutcome::Failed { gave_up: true, .. }]
        ),
        "{second:#?}"
    );
    assert!(rec.pending().expect("pending").is_empty());
    assert!(sink.0.lock().expect("sink").is_empty());
}

/// A single node that crashed while queuing a report (its state says
/// `sending`) never sends it again: at most once, as before cluster mode.
#[tokio::test]
async fn a_report_interrupted_while_queuing_on_a_single_node_is_not_sent_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, rec) = recorder(dir.path(), Limits::default());
    rec.record(&observation(
        "a.test",
        "192.0.2.1",
        "none",
        &["mailto:d@a.test"],
    ))
    .expect("record");
    let day = Day::of(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW));
    let states = LocalSendStates::open(&store).expect("states");
    let interrupted = SendState {
        report_id: "rid@mx.test".to_owned(),
        state: "sending".to_owned(),
        attempts: 0,
        last_error: None,
        decided_at: None,
        remaining: vec![Destination {
            address: "d@a.test".to_owned(),
            max_size: 0,
        }],
    };
    assert!(
        states
            .save(day, "a.test", &interrupted, false)
            .await
            .expect("save")
    );
    assert_eq!(
        states.take(day, "a.test").await.expect("take"),
        Taken::Decided
    );
    let sink = Arc::new(Sink::default());
    let signer =
        DkimSigner::from_pem(ED25519.as_bytes(), "mx.test", "s1", &REPORT_HEADERS).expect("key");
    let sender = DmarcSender::new(
        store,
        rec.clone(),
        MemoryResolver::new(),
        Arc::clone(&sink),
        signer,
        SenderSettings::new(info(), "dmarc-reports@mx.test"),
        Arc::new(HandClock(AtomicU64::new(NOW + 86_400))),
    )
    .expect("sender");
    assert!(sender.send_now().await.is_empty());
    assert!(sink.0.lock().expect("sink").is_empty());
    // Its aggregates are forgotten.
    assert!(rec.pending().expect("pending").is_empty());
}
