//! Full reload (issue 13): `portcullis reload` and SIGHUP re-read the whole
//! config file; new sessions and deliveries use the new config, open
//! sessions keep theirs, a bad file changes nothing and says why, and
//! settings that need a restart are named. The real binary, real sockets.

use portcullis_test_support::server::Portcullis;
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::Client;
use std::time::Duration;

const CONFIG: &str = r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[limits]
max_message_size = 200000
"#;

const WAIT: Duration = Duration::from_secs(20);

/// `portcullis reload`, which must succeed; its human output.
#[track_caller]
fn reload(server: &Portcullis) -> String {
    let out = server.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "reload failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The RCPT reply code a new session from loopback gets for `rcpt`.
fn rcpt_code(server: &Portcullis, rcpt: &str) -> u16 {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<a@sender.test>", 250);
    c.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    c.read_reply().code
}

fn add_accepted(text: &str) -> String {
    text.replace(
        r#"accepted_domains = ["example.test"]"#,
        r#"accepted_domains = ["example.test", "other.test"]"#,
    )
}

/// A domain added to `accepted_domains` is accepted after `portcullis
/// reload` (a relay refusal before), and the reload says what changed.
#[test]
fn reload_accepts_a_new_domain() {
    let server = Portcullis::start(CONFIG);
    assert_eq!(rcpt_code(&server, "u@other.test"), 554);
    server.edit_config(add_accepted);
    let out = reload(&server);
    assert!(out.contains("changed") && out.contains("relay"), "{out}");
    assert_eq!(rcpt_code(&server, "u@other.test"), 250);
    server.wait_for_log("config reloaded", WAIT);
}

/// SIGHUP does what `portcullis reload` does.
#[test]
fn sighup_reloads_the_whole_config() {
    let server = Portcullis::start(CONFIG);
    assert_eq!(rcpt_code(&server, "u@other.test"), 554);
    server.edit_config(add_accepted);
    server.signal(libc::SIGHUP);
    server.wait_for_log("config reloaded", WAIT);
    assert_eq!(rcpt_code(&server, "u@other.test"), 250);
}

/// A broken file: `portcullis reload` exits non-zero naming the key and
/// line (the CLI reads the file first, to find the admin socket, and
/// refuses it itself), SIGHUP logs the same, and the server keeps serving
/// under the config in force.
#[test]
fn a_broken_file_keeps_the_config_in_force() {
    let server = Portcullis::start(CONFIG);
    server.edit_config(|t| {
        add_accepted(t).replace("max_message_size = 200000", "max_message_size = 1000")
    });
    let text = std::fs::read_to_string(&server.config_path).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("max_message_size"))
        .unwrap();
    let out = server.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad file was reloaded");
    let named = format!("portcullis.toml:{line}: limits.max_message_size");
    assert!(stderr.contains(&named), "{stderr}");
    assert!(stderr.contains("not reloaded"), "{stderr}");
    server.signal(libc::SIGHUP);
    let logged = server.wait_for_log("reload failed", WAIT);
    assert!(logged.contains(&named), "{logged}");
    // The old config: other.test is still refused, example.test accepted.
    assert_eq!(rcpt_code(&server, "u@other.test"), 554);
    assert_eq!(rcpt_code(&server, "u@example.test"), 250);
}

/// A session opened before the reload keeps its limits; a new one gets
/// the new `max_message_size`.
#[test]
fn open_sessions_keep_their_limits() {
    let server = Portcullis::start(CONFIG);
    let mut before = Client::connect(server.smtp());
    assert!(before.ehlo("client.test").text.contains("SIZE 200000"));
    server.edit_config(|t| t.replace("max_message_size = 200000", "max_message_size = 100000"));
    let out = reload(&server);
    assert!(out.contains("limits"), "{out}");

    let mut after = Client::connect(server.smtp());
    assert!(after.ehlo("client.test").text.contains("SIZE 100000"));
    after.cmd("MAIL FROM:<a@sender.test> SIZE=150000", 552);
    before.cmd("MAIL FROM:<a@sender.test> SIZE=150000", 250);
    before.cmd("RCPT TO:<u@example.test>", 250);
}

/// A route changed by a reload is used by the next delivery.
#[test]
fn the_next_delivery_takes_the_new_route() {
    let first = Sink::start(SinkConfig::default());
    let second = Sink::start(SinkConfig::default());
    let route = |sink: &Sink| format!("[routes]\n\"example.test\" = \"{}\"\n", sink.addr());
    let server = Portcullis::start(&format!("{CONFIG}{}", route(&first)));
    send(&server, "one");
    assert_eq!(first.wait_for(1, WAIT).len(), 1);

    let (old, new) = (route(&first), route(&second));
    server.edit_config(|t| t.replace(&old, &new));
    assert!(reload(&server).contains("routes"));
    send(&server, "two");
    let got = second.wait_for(1, WAIT);
    assert!(String::from_utf8_lossy(&got[0].data).contains("two"));
    assert_eq!(first.received().len(), 1, "the old route was used again");
}

fn send(server: &Portcullis, body: &str) {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<a@sender.test>", 250);
    c.cmd("RCPT TO:<u@example.test>", 250);
    let r = c.data(format!("Subject: {body}\r\n\r\n{body}").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
}

/// A changed listen address needs a restart: named in the answer (human
/// and `--json`) and in the log; the rest of the file still applies and
/// the server keeps its listener.
#[test]
fn a_new_listen_address_needs_a_restart() {
    let server = Portcullis::start(CONFIG);
    let port = portcullis_test_support::server::free_port();
    server.edit_config(|t| add_accepted(t).replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
    let json = server.cli_json(&["reload", "--json"]);
    assert_eq!(json["needs_restart"], serde_json::json!(["listen"]));
    assert_eq!(json["changed"], serde_json::json!(["relay"]));
    server.wait_for_log("needs a restart: listen", WAIT);
    let out = reload(&server);
    assert!(
        out.contains("needs a restart") && out.contains("listen"),
        "{out}"
    );
    assert_eq!(rcpt_code(&server, "u@other.test"), 250);
}

/// A file the CLI can read but the server cannot put in force (a DKIM key
/// that is not there): `portcullis reload` exits non-zero with the
/// server's reason, and nothing of the file applies.
#[test]
fn a_reload_the_server_refuses_changes_nothing() {
    let server = Portcullis::start(CONFIG);
    server.edit_config(|t| {
        format!(
            "{}\n[[submission.dkim]]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"{{dir}}/missing.key\"\n",
            add_accepted(t)
        )
        .replace("{dir}", &server.dir.path().display().to_string())
    });
    let out = server.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a reload with a missing key succeeded"
    );
    assert!(stderr.contains("missing.key"), "{stderr}");
    server.wait_for_log("reload failed", WAIT);
    assert_eq!(rcpt_code(&server, "u@other.test"), 554);
}

/// A pin file added to `[mta_sts] pins_dir` is in force after a reload (a
/// pin the operator put there must protect the domain without a restart),
/// and a broken pin file is refused by the server with the reason while
/// the pins in force stay.
#[test]
fn a_reload_reads_the_pins_directory_again() {
    let pins = tempfile::tempdir().expect("pins dir");
    let config = format!(
        "{CONFIG}[mta_sts]\npins_dir = \"{}\"\n",
        pins.path().display()
    );
    let server = Portcullis::start(&config);
    let file_pin = |server: &Portcullis| {
        server
            .cli_json(&["policy", "list", "--json"])
            .as_array()
            .expect("a list")
            .iter()
            .find(|e| e["domain"] == "pinned.test" && e["source"] == "file pin")
            .cloned()
    };
    assert!(file_pin(&server).is_none());

    std::fs::write(
        pins.path().join("pinned.test.txt"),
        "version: STSv1\nmode: enforce\nmx: mx.pinned.test\nmax_age: 86400\n",
    )
    .expect("write the pin");
    reload(&server);
    let pin = file_pin(&server).expect("the new file pin is listed after the reload");
    assert_eq!(pin["mode"], "enforce", "{pin}");
    assert_eq!(pin["mx"][0], "mx.pinned.test", "{pin}");

    // A pin file that is not a policy: refused, the pin in force stays.
    std::fs::write(pins.path().join("broken.test.txt"), "mode: nonsense\n").expect("write");
    let out = server.cli(&["reload"]);
    assert!(!out.status.success(), "a broken pin file was accepted");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("broken.test"), "{said}");
    assert!(file_pin(&server).is_some(), "the pin in force was dropped");
}
