//! The basic promise end to end: a message sent to the real binary over a
//! real socket is acknowledged with a queue id and is in the queue.

use portcullis_test_support::server::Portcullis;
use portcullis_test_support::smtp::{Client, queued_id};

const CONFIG: &str = r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
"#;

#[test]
fn accepted_message_is_listed_with_its_queue_id() {
    let server = Portcullis::start(CONFIG);
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(b"Subject: hello\r\n\r\nhi");
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    c.cmd("QUIT", 221);

    let out = server.cli(&["queue", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["sender"], "<alice@sender.test>");
    assert_eq!(list[0]["recipients"][0]["address"], "bob@example.test");

    let out = server.cli(&["queue", "show", &id, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let headers = detail["headers"].as_str().unwrap();
    assert!(
        headers.starts_with("Received: from client.test ([127.0.0.1])"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("with ESMTP id {id}")),
        "{headers}"
    );
    assert!(headers.contains("Subject: hello"), "{headers}");
    // The log line about the message carries the queue id.
    let accepted = server.log_events("message accepted");
    assert_eq!(accepted[0]["queue_id"], id.as_str());
}
