//! The screen as the server wires it (issue 14): the connection rate at
//! connect (421 4.7.0 before the greeting, counted as `reason="rate"`),
//! trusted networks exempt, and a reload whose recipients file is broken
//! changing nothing. The real binary, real sockets.
//!
//! The screen's decisions themselves are `portcullis-screen`'s; these
//! tests check that the server asks it at the right moments and acts on
//! its answers.

use portcullis_test_support::server::{Portcullis, metric};
use portcullis_test_support::smtp::Client;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A server whose screen allows two connections a minute per client.
fn rate_config(trusted: &str) -> String {
    format!(
        r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
trusted_networks = [{trusted}]
[screen]
connections_per_minute = 2
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
"#
    )
}

/// The first reply line of a new connection from loopback.
fn greeting(server: &Portcullis) -> String {
    Client::connect_raw(server.smtp()).read_reply().text
}

/// Over `connections_per_minute` a client gets 421 4.7.0 instead of the
/// greeting, and the refusal is counted and logged; a client in a trusted
/// network is never counted.
#[test]
fn a_client_over_its_connection_rate_gets_421() {
    let server = Portcullis::start(&rate_config(""));
    assert!(greeting(&server).starts_with("220 "));
    assert!(greeting(&server).starts_with("220 "));
    let third = greeting(&server);
    assert!(third.starts_with("421 4.7.0"), "{third}");
    let line = server.wait_for_log("screen refused", WAIT);
    assert!(line.contains("rate_connections"), "{line}");
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_connections_refused_total{reason="rate"}"#
        ),
        Some(1.0),
        "{page}"
    );

    let trusted = Portcullis::start(&rate_config(r#""127.0.0.0/8""#));
    for _ in 0..4 {
        assert!(greeting(&trusted).starts_with("220 "));
    }
}

/// A recipients file that the config check accepts (it exists) but that
/// the screen cannot load (a bad line): `portcullis reload` fails naming
/// the file, and nothing of the new config applies.
#[test]
fn a_reload_with_a_broken_recipients_file_changes_nothing() {
    let config = r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[recipients]
files = { "example.test" = "{dir}/example.test.rcpts" }
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.test.rcpts");
    std::fs::write(&file, "u@example.test\n").unwrap();
    let server = Portcullis::start_in(dir, config);
    std::fs::write(&file, "u@example.test\nthis is not an address\n").unwrap();
    server.edit_config(|t| {
        t.replace(
            r#"accepted_domains = ["example.test"]"#,
            r#"accepted_domains = ["example.test", "other.test"]"#,
        )
    });
    let out = server.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken recipients file was reloaded"
    );
    assert!(stderr.contains("example.test.rcpts"), "{stderr}");
    server.wait_for_log("reload failed", WAIT);
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<a@sender.test>", 250);
    // The old generation: other.test is still not ours.
    c.cmd("RCPT TO:<u@other.test>", 554);
}
