//! Issue 11 item 4 through the real binary: `queue retry --all` and `queue
//! delete` from the real admin CLI while deliveries to slow SMTP sinks on
//! loopback are in flight. The sink must see every recipient at most once,
//! and a deleted message must never come back in `queue list --json`.
//! Also `queue show` escaping control characters of stored headers.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::server::{
    Portcullis, background_runtime, eventually, free_port, relay_config,
};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Messages in flight at once, and rounds of retry-and-delete.
const MESSAGES: usize = 6;
const ROUNDS: usize = 3;

fn server(dns: &TestDns, routes: &str) -> Portcullis {
    Portcullis::start(&format!(
        "{}[queue]\nretry = [\"1h\"]\n[routes]\n{routes}\n",
        relay_config("127.0.0.1:0", dns.addr())
    ))
}

/// Sends one message from `from`; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, from: &str, to: &[&str], data: &[u8]) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    for rcpt in to {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    let r = c.data(data);
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

fn listed(server: &Portcullis) -> HashMap<String, serde_json::Value> {
    server
        .queue_list()
        .into_iter()
        .map(|e| (e["id"].as_str().expect("id").to_owned(), e))
        .collect()
}

/// MAIL FROM lines a sink has seen from `sender`: one per attempt.
fn attempts_seen(sink: &Sink, sender: &str) -> usize {
    let needle = format!("MAIL FROM:<{sender}>");
    sink.commands()
        .iter()
        .filter(|c| c.starts_with(&needle))
        .count()
}

/// Every sink session that began has ended (QUIT seen for every MAIL).
fn quiet(sinks: &[&Sink]) -> bool {
    sinks.iter().all(|s| {
        let cmds = s.commands();
        let mails = cmds.iter().filter(|c| c.starts_with("MAIL FROM")).count();
        let quits = cmds.iter().filter(|c| c.as_str() == "QUIT").count();
        mails == quits
    })
}

/// Each message goes to `ok{i}@dest.test` (a slow sink that accepts) and
/// `x@later.test` (a slow sink that answers 451 after the data), so every
/// `queue retry --all` starts slow attempts. While they run, the CLI
/// retries everything again and deletes one message per round.
#[test]
fn retry_all_and_delete_while_deliveries_are_in_flight() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let slow = Some(Duration::from_millis(300));
    let dest = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 31], free_port())),
        data_delay: slow,
        ..SinkConfig::default()
    });
    let later = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 32], free_port())),
        data_delay: slow,
        data_reply: Some("451 4.3.0 try later".into()),
        ..SinkConfig::default()
    });
    let server = server(
        &dns,
        &format!(
            "\"dest.test\" = \"{}\"\n\"later.test\" = \"{}\"\n",
            dest.addr(),
            later.addr()
        ),
    );
    let ids: Vec<String> = (0..MESSAGES)
        .map(|i| {
            send(
                &server,
                &format!("s{i}@src.test"),
                &[&format!("ok{i}@dest.test"), "x@later.test"],
                format!("Subject: race {i}\r\nMessage-ID: <m{i}@t>\r\n\r\nbody {i}\r\n").as_bytes(),
            )
        })
        .collect();

    let mut deleted = HashSet::new();
    for (round, victim) in ids.iter().enumerate().take(ROUNDS) {
        let sender = format!("s{round}@src.test");
        let before = attempts_seen(&later, &sender);
        server.cli_ok(&["queue", "retry", "--all"]);
        // The victim's attempt has reached the slow sink: delete it now,
        // with everyone's deliveries in flight, and retry again meanwhile.
        eventually("an attempt in flight", WAIT, || {
            (attempts_seen(&later, &sender) > before).then_some(())
        });
        server.cli_ok(&["queue", "delete", victim]);
        deleted.insert(victim.clone());
        server.cli_ok(&["queue", "retry", "--all"]);
        let now = listed(&server);
        for d in &deleted {
            assert!(!now.contains_key(d), "deleted {d} is back: {now:?}");
        }
    }
    // Let every attempt finish and write (or drop) its results.
    eventually("the sinks to go quiet", WAIT, || {
        quiet(&[&dest, &later]).then_some(())
    });
    let mut last = HashMap::new();
    for _ in 0..5 {
        last = listed(&server);
        for d in &deleted {
            assert!(!last.contains_key(d), "deleted {d} came back: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The race ran: at least one deletion landed during an attempt.
    let dropped = server.log_events("message deleted during its attempt: results dropped");
    assert!(!dropped.is_empty(), "no deletion met an attempt in flight");

    // The sink saw every recipient at most once.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for mail in dest.received() {
        let mid = String::from_utf8_lossy(&mail.data)
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
            .expect("Message-ID");
        for rcpt in mail.rcpts {
            *seen.entry((mid.clone(), rcpt)).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    // The messages not deleted: ok{i} delivered, x@later.test still deferred.
    for (i, id) in ids.iter().enumerate().skip(ROUNDS) {
        let entry = last
            .get(id)
            .unwrap_or_else(|| panic!("{id} lost: {last:?}"));
        let states: Vec<(&str, &str)> = entry["recipients"]
            .as_array()
            .expect("recipients")
            .iter()
            .map(|r| (r["address"].as_str().unwrap(), r["state"].as_str().unwrap()))
            .collect();
        let ok = format!("ok{i}@dest.test");
        assert_eq!(
            states,
            vec![(ok.as_str(), "delivered"), ("x@later.test", "deferred")],
            "{id}"
        );
        assert_eq!(seen.get(&(format!("<m{i}@t>"), ok)), Some(&1));
    }
}

/// `queue show` prints the stored headers with control characters escaped:
/// a sender's escape sequences never reach the operator's terminal.
#[test]
fn queue_show_escapes_control_characters_of_headers() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    // A route to a port nobody listens on: the message stays queued.
    let server = server(
        &dns,
        &format!("\"dest.test\" = \"127.0.0.1:{}\"\n", free_port()),
    );
    let id = send(
        &server,
        "s@src.test",
        &["u@dest.test"],
        b"Subject: \x1b]0;owned\x07\x1b[2Jhello\x7f\r\n\r\nbody\r\n",
    );
    let out = server.cli_ok(&["queue", "show", &id]);
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(
        text.contains(r"Subject: \x1b]0;owned\x07\x1b[2Jhello\x7f"),
        "{text}"
    );
    assert!(
        !text
            .bytes()
            .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f),
        "raw control characters printed: {text:?}"
    );
    // `--json` keeps the headers as stored (JSON escapes them itself).
    assert!(server.stored_headers(&id).contains("\x1b]0;owned\x07"));
}
