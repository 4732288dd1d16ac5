//! The command line of DESIGN.md against the real binary: `config check`
//! (exit 0 with the effective config, or exit 2 with every error and its
//! line) and the admin subcommands over the admin socket.

use portcullis_test_support::server::{Portcullis, eventually, free_port, portcullis_bin};
use portcullis_test_support::smtp::{Client, queued_id};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const CONFIG: &str = r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
"#;

/// Runs `portcullis ARGS` in `cwd` (no `--config` added).
fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(portcullis_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run portcullis")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `config check --config FILE` on `text` written to `dir/name`.
fn check(dir: &Path, name: &str, text: &str, extra: &[&str]) -> (PathBuf, Output) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let mut args = vec!["config", "check", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    (path.clone(), run(dir, &args))
}

/// Contract: "`config check` exit 0 and print the effective config". A good
/// file passes, the output names the accepted domain, and `--json` is JSON.
#[test]
fn config_check_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{CONFIG}[queue]\nretry = [\"90s\", \"5m\"]\n");
    let (_, out) = check(dir.path(), "good.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(
        s.lines()
            .any(|l| l.starts_with("relay.accepted_domains") && l.contains("example.test")),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.starts_with("hostname") && l.contains("mx.example.test")),
        "{s}"
    );
    assert!(
        s.lines()
            .any(|l| l.starts_with("queue.retry") && l.contains("90s, 5m")),
        "{s}"
    );

    let (_, out) = check(dir.path(), "good.toml", &text, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("config check --json is not JSON ({e}): {}", stdout(&out)));
    assert_eq!(v["hostname"], "mx.example.test");
    assert_eq!(v["relay"]["accepted_domains"][0], "example.test");
}

/// `config check` shows `[cluster]` as the node will use it: off when
/// absent; else the node, the database, where the password comes from
/// (never a password), TLS and its anchors, the pool, the timeout and the
/// sync interval.
#[test]
fn config_check_shows_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = check(dir.path(), "single.toml", CONFIG, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(
        s.lines()
            .any(|l| l.starts_with("cluster ") && l.contains("off")),
        "{s}"
    );
    let text = format!(
        "{CONFIG}[cluster]\ndatabase = \"postgresql://portcullis@db.example.test/portcullis\"\nnode = \"mx2\"\npassword_file = \"/etc/portcullis/db-password\"\ntls_ca = \"/etc/portcullis/db-ca.pem\"\nsync_interval = \"5s\"\n"
    );
    let (_, out) = check(dir.path(), "cluster.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    for (key, value) in [
        ("cluster.node", "mx2"),
        (
            "cluster.database",
            "postgresql://portcullis@db.example.test/portcullis",
        ),
        ("cluster.password", "from /etc/portcullis/db-password"),
        ("cluster.tls", "verify-full under /etc/portcullis/db-ca.pem"),
        ("cluster.pool_size", "8"),
        ("cluster.timeout", "2s"),
        ("cluster.sync_interval", "5s"),
    ] {
        assert!(
            s.lines().any(|l| l.starts_with(key) && l.ends_with(value)),
            "{key} {value}: {s}"
        );
    }
}

/// Contract: "exit 2 with the error and its line"; the config crate gathers
/// *every* error with its key and line, none hides another (an unknown key
/// in a section must not hide a bad value next to it).
#[test]
fn config_check_names_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\
hostname = \"mx.example.test\"

[[listen]]
address = \"127.0.0.1:99999\"
role = \"smtp\"

[relay]
accepted_domains = [\"example.test\", \"bad..domain\"]
no_such_key = true

[queue]
retry = [\"5m\", \"10 minutes\"]
";
    let (path, out) = check(dir.path(), "bad.toml", text, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let file = path.display().to_string();
    for (line, key) in [
        (4, "listen[0].address"),
        (8, "relay.accepted_domains[1]"),
        (9, "relay.no_such_key"),
        (12, "queue.retry[1]"),
    ] {
        let want = format!("{file}:{line}: {key}:");
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("bad..domain"), "{err}");
    assert!(err.contains("10 minutes"), "{err}");
}

/// Contract: a syntax error exits 2 and names its line; a missing file is a
/// clear error naming the path.
#[test]
fn config_check_reports_syntax_errors_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = "hostname = \"mx.example.test\"\n\n[relay\naccepted_domains = [\"example.test\"]\n";
    let (path, out) = check(dir.path(), "syntax.toml", text, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:3:", path.display())),
        "no line 3 in:\n{err}"
    );

    let missing = dir.path().join("does-not-exist.toml");
    let out = run(
        dir.path(),
        &["config", "check", "--config", missing.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&missing.display().to_string()),
        "path not named in:\n{err}"
    );
}

/// `config check` reads the recipients files as the server would: a bad
/// line fails the check naming the file and the line; a good file shows
/// in the summary.
#[test]
fn config_check_reads_the_recipients_files() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("example.test");
    std::fs::write(&list, "alice@example.test\nbob@elsewhere.test\n").unwrap();
    let text = format!(
        "{CONFIG}[recipients]\nfiles = {{ \"example.test\" = {:?} }}\n",
        list.display().to_string()
    );
    let (_, out) = check(dir.path(), "recipients.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:2:", list.display())), "{err}");
    assert!(err.contains("bob@elsewhere.test"), "{err}");
    std::fs::write(&list, "alice@example.test\n").unwrap();
    let (_, out) = check(dir.path(), "recipients.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("recipients.files"),
        "{}",
        stdout(&out)
    );
}

/// `config check` reads `[dns] trust_anchors` as the server would: a file
/// that is missing or is no DNSKEY record fails the check naming it.
#[test]
fn config_check_reads_the_dnssec_trust_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.key");
    std::fs::write(&anchor, "this is not a DNSKEY record\n").unwrap();
    let text = format!(
        "{CONFIG}[dns]\ndnssec = \"validate\"\ntrust_anchors = [{:?}]\n",
        anchor.display().to_string()
    );
    let (_, out) = check(dir.path(), "anchors.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("dns.trust_anchors"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&anchor).unwrap();
    let (_, out) = check(dir.path(), "anchors.toml", &text, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("anchor.key"), "{}", stderr(&out));
    let (_, out) = check(dir.path(), "plain.toml", CONFIG, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Contract: `config/portcullis.toml` is the documented reference: every
/// example configuration shipped in `config/`, and the benchmark's template
/// once filled in, must pass `config check`.
#[test]
fn shipped_example_configs_pass_config_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join("config"))
        .expect("config/ directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    let dir = tempfile::tempdir().unwrap();
    for path in &entries {
        let out = run(
            dir.path(),
            &["config", "check", "--config", path.to_str().unwrap()],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} fails config check:\n{}",
            path.display(),
            stderr(&out)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the example configs in config/, found {entries:?}"
    );

    // The benchmark template: run.sh substitutes @VAR@ placeholders.
    let template = std::fs::read_to_string(root.join("tests/bench/portcullis.toml.in"))
        .expect("tests/bench/portcullis.toml.in");
    let data = dir.path().join("bench-data");
    let text = template
        .replace("@DATA_DIR@", data.to_str().unwrap())
        .replace("@SMTP_PORT@", "2600")
        .replace("@SINK_PORT@", "2601")
        .replace("@DNS_PORT@", "5353");
    let left: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('@'))
        .collect();
    assert!(left.is_empty(), "unknown placeholders left: {left:?}");
    let (_, out) = check(dir.path(), "bench.toml", &text, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the bench config fails config check:\n{}",
        stderr(&out)
    );
}

/// Contract: "Every admin subcommand talks to the running server through the
/// admin socket; with no server running it says so and exits non-zero."
#[test]
fn admin_commands_without_a_server_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/admin.sock");
    let text = format!(
        "data_dir = \"{}\"\n{CONFIG}[admin]\nsocket = \"{}\"\n",
        dir.path().join("data").display(),
        socket.display()
    );
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, text).unwrap();
    for args in [
        &["status"][..],
        &["queue", "list"][..],
        &["status", "--json"][..],
    ] {
        let mut full = args.to_vec();
        full.extend(["--config", config.to_str().unwrap()]);
        let out = run(dir.path(), &full);
        assert!(!out.status.success(), "{args:?} succeeded with no server");
        let err = stderr(&out);
        assert!(
            err.contains("no portcullis server is running"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&socket.display().to_string()),
            "{args:?} does not name the socket: {err}"
        );
        assert!(
            stdout(&out).trim().is_empty(),
            "{args:?} printed {}",
            stdout(&out)
        );
    }
}

fn send(server: &Portcullis, subject: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@sender.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(format!("Subject: {subject}\r\n\r\nhi").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

fn status_json(server: &Portcullis) -> serde_json::Value {
    server.cli_json(&["status", "--json"])
}

/// Contract: `portcullis status` reaches the running server over the admin
/// socket and reports its real state: the bound listeners (ephemeral port
/// resolved), the queue size and the open sessions.
#[test]
fn status_json_reports_listeners_queue_size_and_sessions() {
    let server = Portcullis::start(CONFIG);
    let addr = server.smtp().to_string();

    let v = status_json(&server);
    let listeners = v["listeners"].as_array().expect("listeners");
    assert!(
        listeners
            .iter()
            .any(|l| l["address"] == addr.as_str() && l["role"] == "smtp"),
        "{addr} not in {v}"
    );
    assert!(!addr.ends_with(":0"));
    assert_eq!(v["hostname"], "mx.example.test");
    assert_eq!(v["queue_size"], 0, "{v}");

    send(&server, "one");
    send(&server, "two");
    let v = status_json(&server);
    assert_eq!(v["queue_size"], 2, "{v}");

    let mut open = Client::connect(server.smtp());
    open.ehlo("client.test");
    let v = status_json(&server);
    assert!(
        v["open_sessions"].as_u64().expect("open_sessions") >= 1,
        "{v}"
    );
    open.cmd("QUIT", 221);

    // The human table names the listener too.
    let out = server.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("listener") && l.contains(&addr)),
        "{}",
        stdout(&out)
    );
}

/// Contract: `queue delete ID` removes a message for good (durably, through
/// the running server); `queue show` of a deleted or malformed id fails with
/// a clear message and a non-zero exit, never a crash.
#[test]
fn queue_delete_and_show_errors() {
    let server = Portcullis::start(CONFIG);
    let keep = send(&server, "keep");
    let gone = send(&server, "gone");

    let out = server.cli(&["queue", "show", &gone, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = server.cli(&["queue", "delete", &gone]);
    assert!(out.status.success(), "delete: {}", stderr(&out));

    let out = server.cli(&["queue", "show", &gone]);
    assert!(!out.status.success(), "show of a deleted message succeeded");
    let err = stderr(&out);
    assert!(
        err.contains(&gone) && err.contains("no message"),
        "unclear error: {err}"
    );

    let out = server.cli(&["queue", "delete", &gone]);
    assert!(!out.status.success(), "second delete succeeded");
    assert!(stderr(&out).contains("no message"), "{}", stderr(&out));

    let out = server.cli(&["queue", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keep.as_str()]);
    assert_eq!(status_json(&server)["queue_size"], 1);

    for bad in ["BADID", "0123456789abcdefXX", "zzzzzzzzzzzzzzzz"] {
        let out = server.cli(&["queue", "show", bad]);
        assert!(!out.status.success(), "queue show {bad} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains(bad) && err.contains("16 hex digits"),
            "unclear error for {bad}: {err}"
        );
    }
}

/// A server whose route for example.test points at a port nobody listens
/// on: messages stay queued, each attempt deferred and recorded.
fn server_with_dead_route() -> Portcullis {
    Portcullis::start(&format!(
        "{CONFIG}[routes]\n\"example.test\" = \"127.0.0.1:{}\"\n",
        free_port()
    ))
}

/// Contract: every admin command prints a human layout by default. `queue
/// show` reads like Postfix's `postcat -q`: the envelope (arrival, origin,
/// client, sender), the recipients with their states and last replies,
/// the attempt history and the header section, each under its own
/// heading; `--json` keeps the machine form scripts rely on.
#[test]
fn queue_show_prints_envelope_recipients_history_and_headers() {
    let server = server_with_dead_route();
    let id = send(&server, "postcat layout");
    // The first attempt is made at once and deferred (nobody listens).
    eventually(
        "the first attempt recorded",
        Duration::from_secs(20),
        || {
            let v = server.cli_json(&["queue", "show", &id, "--json"]);
            (v["envelope"]["history"][0]["outcomes"].as_array()?.len() == 1).then_some(())
        },
    );

    let text = String::from_utf8(server.cli_ok(&["queue", "show", &id])).unwrap();
    let sections: Vec<&str> = text.lines().filter(|l| l.starts_with("*** ")).collect();
    assert_eq!(
        sections,
        ["ENVELOPE", "RECIPIENTS", "HISTORY", "HEADERS"].map(|s| format!("*** {s} {id} ***")),
        "{text}"
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name}: line in\n{text}"))
            .to_owned()
    };
    assert_eq!(field("origin"), "relay");
    assert_eq!(field("sender"), "<alice@sender.test>");
    assert_eq!(field("client"), "client.test [127.0.0.1]");
    assert_eq!(field("tls"), "none");
    assert_eq!(field("attempts"), "1");
    assert!(field("arrival").ends_with('Z'), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("bob@example.test")
            && l.contains("deferred")
            && l.contains("127.0.0.1")),
        "recipient row: {text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("attempt 1 at ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("bob@example.test: deferred: ")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "Subject: postcat layout"),
        "{text}"
    );
    assert!(
        !text.trim_start().starts_with('{'),
        "JSON without --json: {text}"
    );

    // The JSON form: the stored envelope with history and states beside it.
    let v = server.cli_json(&["queue", "show", &id, "--json"]);
    assert_eq!(v["entry"]["id"], id.as_str());
    assert_eq!(v["envelope"]["origin"], "relay");
    assert_eq!(v["envelope"]["id"], id.as_str());
    assert_eq!(v["envelope"]["history"][0]["number"], 1);
    assert_eq!(v["envelope"]["recipient_states"][0]["status"], "deferred");
    assert!(v["envelope"].get("history_note").is_none(), "{v:#}");
    assert!(
        v["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: postcat layout")
    );
}

/// Contract: `queue retry` and `queue delete` say what they did in words,
/// and in JSON with `--json` (`{"scheduled": N}`, `{"deleted": ID,
/// "bounced": B}` as before).
#[test]
fn queue_retry_and_delete_print_what_they_did() {
    let server = server_with_dead_route();
    let id = send(&server, "retry me");

    let text = String::from_utf8(server.cli_ok(&["queue", "retry", "--all"])).unwrap();
    assert_eq!(text.trim(), "1 message(s) due for delivery now");
    let v = server.cli_json(&["queue", "retry", &id, "--json"]);
    assert_eq!(v, serde_json::json!({ "scheduled": 1 }));

    let text = String::from_utf8(server.cli_ok(&["queue", "delete", &id])).unwrap();
    assert_eq!(text.trim(), format!("deleted {id}"));
    let other = send(&server, "delete me as JSON");
    let v = server.cli_json(&["queue", "delete", &other, "--json"]);
    assert_eq!(
        v,
        serde_json::json!({ "deleted": other.as_str(), "bounced": false })
    );
    let text = String::from_utf8(server.cli_ok(&["queue", "list"])).unwrap();
    assert_eq!(text.trim(), "queue is empty");
}
