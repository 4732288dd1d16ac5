//! DMARC aggregate reports (RFC 7489 §7.2) with the real binary: mail
//! arrives on port 25 from 127.0.0.1 and is verified against the test DNS
//! (SPF, a DKIM signature made here, the DMARC records with `rua`); the
//! server counts it; `portcullis dmarc send` sends the report of the
//! finished day to the rua's MX (a sink), from the null sender,
//! DKIM-signed, the gzip XML carrying the Appendix C fields with the
//! values of what was sent; a destination outside the policy domain
//! without its `_report._dmarc` authorisation gets nothing; each report is
//! sent once.
//!
//! The binary has no test clock (by design), and only a finished UTC day
//! is reported: between two runs of the binary, the test moves the day's
//! aggregates to yesterday through the dmarc crate's own API (rows and
//! counts as the server recorded them), then `dmarc send` (which ignores
//! the random delay; the window is huge so the server's own pass leaves
//! the report alone) sends it.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mail_parser::{MessageParser, MimeHeaders};
use portcullis_dmarc::{Day, DmarcRecorder, Limits, Observation};
use portcullis_dns::HickoryResolver;
use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::server::{Portcullis, background_runtime, free_port, metric};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::Client;

const RUA: &str = "dmarc@reports.test";
const ORG: &str = "Portcullis DMARC Test Org";
const CONTACT: &str = "postmaster@reporter.test";
const FROM: &str = "dmarc-reports@reporter.test";

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\n\
         To: <bob@example.test>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\
         Message-ID: <{}@test>\r\n\
         \r\n\
         Hello Bob.\r\n",
        subject.replace(' ', "-")
    )
}

fn send(server: &Portcullis, mail_from: &str, data: &str) {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.sender.test");
    c.cmd(&format!("MAIL FROM:<{mail_from}>"), 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(data.as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
}

/// Moves every aggregate the server recorded today to yesterday, through
/// the dmarc crate's API (the server is stopped: sled is ours).
fn move_to_yesterday(data_dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&data_dir.join("queue")).unwrap();
        let recorder = DmarcRecorder::open(&store, Limits::default(), Arc::default()).unwrap();
        let pending = recorder.pending().unwrap();
        assert!(!pending.is_empty());
        for p in pending {
            let yesterday = Day::from_days_since_epoch(p.day.days_since_epoch() - 1);
            for (row, count) in recorder.rows(p.day, &p.domain).unwrap() {
                for _ in 0..count {
                    recorder
                        .record(&Observation {
                            header_from: p.domain.clone(),
                            day: yesterday,
                            published: p.published.clone(),
                            row: row.clone(),
                        })
                        .unwrap();
                }
            }
            recorder.remove(p.day, &p.domain).unwrap();
        }
        store.commit().await.unwrap();
        store.flush_now().unwrap();
    });
}

fn gunzip(gz: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

/// The text of the first `<tag>` element within `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect("closed") + start;
    &xml[start..end]
}

/// Every `<record>` element.
fn records(xml: &str) -> Vec<&str> {
    xml.split("<record>")
        .skip(1)
        .map(|r| r.split("</record>").next().unwrap_or_default())
        .collect()
}

#[test]
fn a_days_dmarc_report_is_sent_once_signed_with_the_appendix_c_fields() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let dir = tempfile::tempdir().unwrap();

    // Sinks: the inbox of example.test, and the MX of reports.test.
    let port = free_port();
    let inbox_ip = Ipv4Addr::new(127, 0, 0, 61);
    let reports_ip = Ipv4Addr::new(127, 0, 0, 62);
    let _inbox = Sink::start(SinkConfig {
        bind: SocketAddr::from((inbox_ip, port)),
        ..SinkConfig::default()
    });
    let reports = Sink::start(SinkConfig {
        bind: SocketAddr::from((reports_ip, port)),
        ..SinkConfig::default()
    });
    dns.add_mx("reports.test", 10, "mx.reports.test");
    dns.add_a("mx.reports.test", reports_ip);

    // sender.test: SPF, a DKIM key, DMARC with an external rua that
    // reports.test authorises. other.test: its rua is not authorised.
    let ed = Ed25519Key::generate_pkcs8().expect("ed25519");
    let ed_public = B64.encode(Ed25519Key::from_pkcs8_der(&ed).expect("key").public_key());
    for domain in ["sender.test", "other.test"] {
        dns.add_txt(domain, "v=spf1 ip4:127.0.0.1 -all");
    }
    dns.add_txt(
        "s1._domainkey.sender.test",
        &format!("v=DKIM1; k=ed25519; p={ed_public}"),
    );
    dns.add_txt(
        "_dmarc.sender.test",
        &format!("v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=r; pct=100; rua=mailto:{RUA}"),
    );
    dns.add_txt("sender.test._report._dmarc.reports.test", "v=DMARC1");
    dns.add_txt(
        "_dmarc.other.test",
        &format!("v=DMARC1; p=none; rua=mailto:{RUA}"),
    );
    // The key that signs our reports.
    let p = dkim_rsa_key(&dir.path().join("report.key"));
    dns.add_txt(
        "dmarc._domainkey.reporter.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );

    let mut server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[routes]
"example.test" = "{inbox_ip}:{port}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[verify]
enabled = true
[dmarc_reports]
enabled = true
organization = "{ORG}"
contact = "{CONTACT}"
from = "{FROM}"
dkim_selector = "dmarc"
dkim_key = "{{dir}}/report.key"
send_window = "100000d"
"#,
            dns = dns.addr()
        ),
    );

    // Signed and aligned; unsigned (SPF aligned); another domain; and a
    // report, which is not counted.
    let signed = {
        let m = message("alice@sender.test", "signed");
        let sig = DkimSigner::from_key(Ed25519Key::from_pkcs8_der(&ed).expect("key"))
            .domain("sender.test")
            .selector("s1")
            .headers(["From", "To", "Subject", "Date", "Message-ID"])
            .sign(m.as_bytes())
            .expect("sign");
        format!("{}{m}", sig.to_header())
    };
    send(&server, "alice@sender.test", &signed);
    send(
        &server,
        "alice@sender.test",
        &message("alice@sender.test", "unsigned"),
    );
    send(&server, "x@other.test", &message("x@other.test", "other"));
    send(
        &server,
        "alice@sender.test",
        &message(
            "alice@sender.test",
            "Report Domain: sender.test Submitter: a.test Report-ID: <1@a.test>",
        ),
    );

    let list = server.cli_json(&["dmarc", "list", "--json"]);
    let entries = list.as_array().expect("list");
    let sender = entries
        .iter()
        .find(|e| e["domain"] == "sender.test")
        .unwrap_or_else(|| panic!("{list}\n{}", server.logs().join("\n")));
    assert_eq!(
        (sender["rows"].as_u64(), sender["messages"].as_u64()),
        (Some(2), Some(2)),
        "{list}"
    );
    assert_eq!(sender["state"], "collecting");
    assert_eq!(sender["rua"][0], format!("mailto:{RUA}"));
    let page = server.metrics_page();
    let counted = r#"portcullis_dmarc_messages_total{outcome="counted"}"#;
    assert_eq!(metric(&page, counted), Some(3.0), "{page}");
    let report = r#"portcullis_dmarc_messages_total{outcome="report"}"#;
    assert_eq!(metric(&page, report), Some(1.0), "{page}");
    // Today is not over: nothing is sent.
    let sent = server.cli_json(&["dmarc", "send", "--json"]);
    assert_eq!(sent["outcomes"].as_array().map(Vec::len), Some(0), "{sent}");

    // Yesterday's now.
    server.terminate(Duration::from_secs(30));
    move_to_yesterday(&server.data_dir());
    server.restart();
    let yesterday = Day::from_days_since_epoch(Day::of(SystemTime::now()).days_since_epoch() - 1);

    let sent = server.cli_json(&["dmarc", "send", "--json"]);
    let outcomes = sent["outcomes"].as_array().expect("outcomes");
    let for_domain = |d: &str| -> Vec<&serde_json::Value> {
        outcomes.iter().filter(|o| o["domain"] == d).collect()
    };
    let s = for_domain("sender.test");
    assert_eq!(s.len(), 1, "{sent}");
    assert_eq!(
        (s[0]["outcome"].as_str(), s[0]["to"].as_str()),
        (Some("sent"), Some(RUA)),
        "{sent}"
    );
    let o = for_domain("other.test");
    assert_eq!(o.len(), 1, "{sent}");
    assert_eq!(o[0]["outcome"], "skipped", "{sent}");
    assert!(
        o[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("other.test._report._dmarc.reports.test"),
        "{sent}"
    );

    let page = server.metrics_page();
    for (outcome, n) in [("sent", 1.0), ("skipped", 1.0)] {
        let series = format!("portcullis_dmarc_reports_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(&page, &series), Some(n), "{page}");
    }

    // Through the queue to reports.test's MX, from the null sender.
    let got = reports.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    assert_eq!(mail.mail_from, "", "{}", mail.raw_mail_line);
    assert_eq!(mail.rcpts, [RUA]);

    // DKIM verifies against the key in the test DNS, d= the From's domain.
    let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    let verifier = MessageAuthenticator(resolver.inner().clone());
    let am = AuthenticatedMessage::parse(&mail.data).expect("parse");
    let dkim = rt.block_on(verifier.verify_dkim(&am));
    assert!(
        dkim.iter().any(|r| r.result() == &DkimResult::Pass
            && r.signature()
                .is_some_and(|s| s.d == "reporter.test" && s.s == "dmarc")),
        "{dkim:?}"
    );

    // The message: subject, attachment name, gzip XML.
    let msg = MessageParser::default().parse(&mail.data).expect("mime");
    let subject = msg.subject().expect("subject").to_owned();
    assert!(
        subject.starts_with("Report Domain: sender.test Submitter: reporter.test Report-ID: <"),
        "{subject}"
    );
    let part = msg.attachment(0).expect("attachment");
    assert_eq!(
        part.attachment_name(),
        Some(
            format!(
                "reporter.test!sender.test!{}!{}.xml.gz",
                yesterday.start_timestamp(),
                yesterday.end_timestamp()
            )
            .as_str()
        )
    );
    let xml = gunzip(part.contents());
    let meta = element(&xml, "report_metadata");
    assert_eq!(element(meta, "org_name"), ORG);
    assert_eq!(element(meta, "email"), CONTACT);
    let report_id = element(meta, "report_id");
    assert!(
        subject.contains(&format!("Report-ID: <{report_id}>")),
        "{subject} / {report_id}"
    );
    assert_eq!(
        element(meta, "begin"),
        yesterday.start_timestamp().to_string()
    );
    assert_eq!(element(meta, "end"), yesterday.end_timestamp().to_string());
    let policy = element(&xml, "policy_published");
    assert_eq!(element(policy, "domain"), "sender.test");
    assert_eq!(element(policy, "adkim"), "s");
    assert_eq!(element(policy, "aspf"), "r");
    assert_eq!(element(policy, "p"), "quarantine");
    assert_eq!(element(policy, "sp"), "reject");
    assert_eq!(element(policy, "pct"), "100");
    let rows = records(&xml);
    assert_eq!(rows.len(), 2, "{xml}");
    for r in &rows {
        assert_eq!(element(r, "source_ip"), "127.0.0.1");
        assert_eq!(element(r, "count"), "1");
        let evaluated = element(r, "policy_evaluated");
        assert_eq!(element(evaluated, "disposition"), "none");
        assert_eq!(element(evaluated, "spf"), "pass");
        assert_eq!(
            element(element(r, "identifiers"), "header_from"),
            "sender.test"
        );
        let spf = element(element(r, "auth_results"), "spf");
        assert_eq!(element(spf, "domain"), "sender.test");
        assert_eq!(element(spf, "result"), "pass");
    }
    let signed_row = rows
        .iter()
        .find(|r| r.contains("<selector>"))
        .expect("the signed row");
    assert_eq!(
        element(element(signed_row, "policy_evaluated"), "dkim"),
        "pass"
    );
    let dkim_auth = element(element(signed_row, "auth_results"), "dkim");
    assert_eq!(element(dkim_auth, "domain"), "sender.test");
    assert_eq!(element(dkim_auth, "selector"), "s1");
    assert_eq!(element(dkim_auth, "result"), "pass");
    let unsigned_row = rows
        .iter()
        .find(|r| !r.contains("<selector>"))
        .expect("the unsigned row");
    assert_eq!(
        element(element(unsigned_row, "policy_evaluated"), "dkim"),
        "fail"
    );
    // And mail-auth reads the report back.
    let parsed = mail_auth::report::Report::parse_xml(xml.as_bytes()).expect("parses");
    assert_eq!(parsed.records().len(), 2);

    // Once: nothing left to send, nothing waiting, nothing more queued.
    let again = server.cli_json(&["dmarc", "send", "--json"]);
    assert_eq!(
        again["outcomes"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );
    let list = server.cli_json(&["dmarc", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    drop(server);
    drop(rt);
}
