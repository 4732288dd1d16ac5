//! TLS reports other providers send about our domains, by mail, with the
//! real binary: a reporter's RFC 8460 §5.3 message (multipart/report with
//! the gzip JSON, DKIM-signed: built by the same code that builds ours)
//! goes over real SMTP to the `[publish] tlsrpt_rua` address, is accepted
//! at RCPT although recipient verification does not know the mailbox,
//! queued, read by the server instead of being delivered onward, and then
//! shows in `portcullis tlsrpt received list|show` and on `/metrics`. A
//! message to that address without a usable report is dropped: no bounce,
//! nothing listed.
//!
//! The world: `example.test` is ours and routed to an SMTP sink (our
//! "internal" server), which must never see the report; a recipients file
//! knows only alice.

use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::server::{Portcullis, eventually, metric};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};
use portcullis_tlsrpt::{Day, MessageParts, ReportJson, build_report_message, gzip, report_signer};
use serde_json::{Value, json};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long [`eventually`] waits for the server to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

/// Where reports about our domains are to be mailed.
const RUA: &str = "tlsrpt@example.test";

/// `example.test` ours and routed to `route`, nobody trusted (the reporter
/// is an outside MTA), a recipients file knowing only alice, the report
/// address published, the metrics endpoint on.
fn config(dir: &Path, route: &Sink) -> String {
    let users = dir.join("example.test.users");
    std::fs::write(&users, "alice@example.test\n").unwrap();
    format!(
        r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
trusted_networks = []
[routes]
"example.test" = "{route}"
[recipients]
files = {{ "example.test" = {users:?} }}
[publish]
tlsrpt_rua = ["mailto:{RUA}"]
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
"#,
        route = route.addr(),
        users = users.display().to_string(),
    )
}

/// A report from Big Mail Inc about example.test: 120 sessions fine, 7
/// failed (5 with an expired certificate, 2 without STARTTLS).
fn report() -> Value {
    json!({
        "organization-name": "Big Mail Inc",
        "date-range": {
            "start-datetime": "2026-12-04T00:00:00Z",
            "end-datetime": "2026-12-04T23:59:59Z"
        },
        "contact-info": "smtp-tls-reporting@bigmail.example",
        "report-id": "2026-12-04T00:00:00Z_example.test@bigmail.example",
        "policies": [{
            "policy": {
                "policy-type": "sts",
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.test", "max_age: 604800"],
                "policy-domain": "example.test",
                "mx-host": ["mx.example.test"]
            },
            "summary": {
                "total-successful-session-count": 120,
                "total-failure-session-count": 7
            },
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "203.0.113.9",
                    "receiving-mx-hostname": "mx.example.test",
                    "receiving-ip": "192.0.2.25",
                    "failed-session-count": 5
                },
                {
                    "result-type": "starttls-not-supported",
                    "receiving-mx-hostname": "mx.example.test",
                    "receiving-ip": "192.0.2.26",
                    "failed-session-count": 2,
                    "additional-information": "EHLO without STARTTLS"
                }
            ]
        }]
    })
}

/// The message a reporter sends (RFC 8460 §5.3), built and DKIM-signed by
/// the code that builds ours.
fn report_mail(dir: &Path, value: &Value) -> Vec<u8> {
    let key = dir.join("reporter-dkim.pem");
    dkim_rsa_key(&key);
    let signer = report_signer(&std::fs::read(&key).unwrap(), "bigmail.example", "tlsrpt").unwrap();
    let json = serde_json::to_vec(value).unwrap();
    let report = ReportJson {
        report: mail_auth::report::tlsrpt::TlsReport::parse_json(&json).unwrap(),
        json: value.clone(),
    };
    let parts = MessageParts {
        domain: "example.test",
        submitter: "bigmail.example",
        from: "smtp-tls-reporting@bigmail.example",
        to: RUA,
        date: SystemTime::now(),
        day: Day::of(UNIX_EPOCH + Duration::from_secs(1_796_342_400)),
    };
    let message = build_report_message(&report, &gzip(&json).unwrap(), parts, &signer).unwrap();
    let gz_part = String::from_utf8_lossy(&message).contains("application/tlsrpt+gzip");
    assert!(gz_part, "the report goes as application/tlsrpt+gzip");
    message
}

/// `message` with its lines dot-stuffed for DATA (RFC 5321 §4.5.2).
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).replace("\r\n.", "\r\n..");
    text.into_bytes()
}

/// An outside reporter's session that has said EHLO and MAIL FROM.
fn reporter(server: &Portcullis) -> Client<TcpStream> {
    let mut c = Client::connect(server.smtp());
    c.ehlo("out.bigmail.example");
    c.cmd("MAIL FROM:<smtp-tls-reporting@bigmail.example>", 250);
    c
}

#[test]
fn a_mailed_report_is_read_listed_shown_and_counted() {
    let route = Sink::start(SinkConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &route);
    let server = Portcullis::start_in(dir, &text);
    let message = report_mail(server.dir.path(), &report());

    let mut c = reporter(&server);
    // The report mailbox is accepted although the recipients file does not
    // list it; verification is on for everyone else.
    c.cmd(&format!("RCPT TO:<{RUA}>"), 250);
    let unknown = c.cmd("RCPT TO:<nobody@example.test>", 550);
    assert!(unknown.text.contains("5.1.1"), "{}", unknown.text);
    c.cmd("RCPT TO:<alice@example.test>", 250);
    let reply = c.data(&dot_stuffed(&message));
    assert_eq!(reply.code, 250, "{}", reply.text);
    let id = queued_id(&reply);
    c.cmd("QUIT", 221);

    // Alice's copy goes onward; the report address's does not.
    let delivered = route.wait_for(1, WAIT);
    assert_eq!(delivered[0].rcpts, ["alice@example.test"]);

    let listed = eventually("the report listed", WAIT, || {
        let list = server.cli_json(&["tlsrpt", "received", "list", "--json"]);
        list.as_array().filter(|l| !l.is_empty()).cloned()
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["organization"], "Big Mail Inc");
    assert_eq!(entry["domains"], json!(["example.test"]));
    assert_eq!(entry["successful"], 120);
    assert_eq!(entry["failed"], 7);
    assert_eq!(entry["start"], 1_796_342_400);
    let report_id = entry["id"].as_str().unwrap().to_owned();

    // The filters: our domain and a day the period ends on or after.
    let by_domain = server.cli_json(&[
        "tlsrpt",
        "received",
        "list",
        "--domain",
        "EXAMPLE.test",
        "--since",
        "2026-12-04",
        "--json",
    ]);
    assert_eq!(by_domain.as_array().map(Vec::len), Some(1), "{by_domain}");
    let later = server.cli_json(&[
        "tlsrpt",
        "received",
        "list",
        "--since",
        "2026-12-05",
        "--json",
    ]);
    assert_eq!(later, json!([]));

    let shown = server.cli_json(&["tlsrpt", "received", "show", &report_id, "--json"]);
    assert_eq!(shown["channel"], "mail");
    assert_eq!(shown["contact"], "smtp-tls-reporting@bigmail.example");
    assert_eq!(
        shown["report_id"],
        "2026-12-04T00:00:00Z_example.test@bigmail.example"
    );
    let policy = &shown["policies"][0];
    assert_eq!(policy["policy_type"], "sts");
    assert_eq!(policy["policy_string"][1], "mode: enforce");
    let details = policy["failure_details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["result_type"], "certificate-expired");
    assert_eq!(details[0]["count"], 5);
    assert_eq!(details[0]["sending_mta_ip"], "203.0.113.9");
    assert_eq!(
        details[1]["additional_information"],
        "EHLO without STARTTLS"
    );

    // The human layouts carry the same facts.
    let human =
        String::from_utf8(server.cli_ok(&["tlsrpt", "received", "show", &report_id])).unwrap();
    assert!(human.contains("certificate-expired"), "{human}");
    assert!(human.contains("Big Mail Inc"), "{human}");
    let table = String::from_utf8(server.cli_ok(&["tlsrpt", "received", "list"])).unwrap();
    assert!(table.contains(&report_id), "{table}");

    let page = server.metrics_page();
    let series = |rt: &str| {
        format!(
            r#"portcullis_tlsrpt_received_failures_total{{domain="example.test",result_type="{rt}",reporter="Big Mail Inc"}}"#
        )
    };
    assert_eq!(
        metric(&page, &series("certificate-expired")),
        Some(5.0),
        "{page}"
    );
    assert_eq!(metric(&page, &series("starttls-not-supported")), Some(2.0));
    assert_eq!(
        metric(
            &page,
            r#"portcullis_tlsrpt_received_reports_total{channel="mail",outcome="stored"}"#
        ),
        Some(1.0)
    );

    // Every recipient is done: the message left the queue.
    eventually("the message to leave the queue", WAIT, || {
        server.queue_list().is_empty().then_some(())
    });
    assert!(
        server.queue_list().iter().all(|m| m["id"] != id.as_str()),
        "no DSN, no leftover"
    );

    // The same report mailed again is a duplicate: listed once, counted once.
    let mut c = reporter(&server);
    c.cmd(&format!("RCPT TO:<{RUA}>"), 250);
    assert_eq!(c.data(&dot_stuffed(&message)).code, 250);
    c.cmd("QUIT", 221);
    eventually("the duplicate to be seen", WAIT, || {
        let page = server.metrics_page();
        metric(
            &page,
            r#"portcullis_tlsrpt_received_reports_total{channel="mail",outcome="duplicate"}"#,
        )
        .filter(|n| *n == 1.0)
    });
    let list = server.cli_json(&["tlsrpt", "received", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let page = server.metrics_page();
    assert_eq!(metric(&page, &series("certificate-expired")), Some(5.0));
    assert_eq!(route.received().len(), 1, "nothing more went onward");
}

#[test]
fn a_mailed_garbage_report_is_dropped_without_a_bounce() {
    let route = Sink::start(SinkConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &route);
    let server = Portcullis::start_in(dir, &text);

    let garbage = "From: <smtp-tls-reporting@bigmail.example>\r\n\
        To: <tlsrpt@example.test>\r\n\
        Subject: Report Domain: example.test\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b\"\r\n\
        \r\n\
        --b\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        A report, supposedly.\r\n\
        --b\r\n\
        Content-Type: application/tlsrpt+json\r\n\
        Content-Disposition: attachment; filename=\"r.json\"\r\n\
        \r\n\
        {\"this is\": \"not a report\"}\r\n\
        --b--\r\n";
    let mut c = reporter(&server);
    c.cmd(&format!("RCPT TO:<{RUA}>"), 250);
    let reply = c.data(garbage.as_bytes());
    assert_eq!(reply.code, 250, "{}", reply.text);
    c.cmd("QUIT", 221);

    server.wait_for_log(
        "mail to the TLS report address without a usable report: dropped, no bounce",
        WAIT,
    );
    eventually("the message to leave the queue", WAIT, || {
        server.queue_list().is_empty().then_some(())
    });
    // No bounce was queued (the queue is empty), nothing went onward, and
    // nothing is listed.
    assert!(server.queue_list().is_empty());
    assert!(route.received().is_empty());
    let list = server.cli_json(&["tlsrpt", "received", "list", "--json"]);
    assert_eq!(list, json!([]));
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_tlsrpt_received_reports_total{channel="mail",outcome="invalid"}"#
        ),
        Some(1.0)
    );
}

/// The report address follows the config in force: before a reload names
/// it, it is an unknown user like any other (and nothing is read); after
/// `portcullis reload` adds it, mail to it is accepted and read.
#[test]
fn a_reload_puts_a_new_report_address_in_force() {
    let route = Sink::start(SinkConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), &route).replace(&format!("tlsrpt_rua = [\"mailto:{RUA}\"]"), "");
    let server = Portcullis::start_in(dir, &text);
    let message = report_mail(server.dir.path(), &report());

    let mut c = reporter(&server);
    c.cmd(&format!("RCPT TO:<{RUA}>"), 550);
    c.cmd("QUIT", 221);

    server.edit_config(|t| {
        t.replace(
            "[publish]\n",
            &format!("[publish]\ntlsrpt_rua = [\"mailto:{RUA}\"]\n"),
        )
    });
    server.cli_ok(&["reload"]);

    let mut c = reporter(&server);
    c.cmd(&format!("RCPT TO:<{RUA}>"), 250);
    assert_eq!(c.data(&dot_stuffed(&message)).code, 250);
    c.cmd("QUIT", 221);
    let listed = eventually("the report listed", WAIT, || {
        let list = server.cli_json(&["tlsrpt", "received", "list", "--json"]);
        list.as_array().filter(|l| !l.is_empty()).cloned()
    });
    assert_eq!(listed[0]["failed"], 7);
    assert!(route.received().is_empty(), "nothing went onward");
}
