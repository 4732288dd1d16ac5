//! `portcullis screen show IP|clear IP|clear DOMAIN [--json]` against the
//! real binary: every command through the admin socket of a running
//! server, the lists served by a real DNS server on loopback.

use portcullis_test_support::dns::{BackgroundDns, FailMode};
use portcullis_test_support::server::Portcullis;
use portcullis_test_support::smtp::Client;
use serde_json::Value;
use std::process::Output;

/// Two block lists (one of which fails) and an allow list, the rates
/// limited, 192.0.2.1 on the block list and 127.0.0.7 on the allow list.
fn world() -> (BackgroundDns, Portcullis) {
    let dns = BackgroundDns::start();
    dns.add_a("1.2.0.192.bl.example.test", "127.0.0.2".parse().unwrap());
    dns.add_a("7.0.0.127.wl.example.test", "127.0.0.9".parse().unwrap());
    dns.fail("1.2.0.192.slow.example.test", FailMode::ServFail);
    dns.fail("7.0.0.127.slow.example.test", FailMode::ServFail);
    let server = Portcullis::start(&format!(
        r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["portcullis.test"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[[dnsbl]]
zone = "bl.example.test"
weight = 2
[[dnsbl]]
zone = "slow.example.test"
weight = 1
[[dnsbl]]
zone = "wl.example.test"
weight = -1
[screen]
dnsbl_threshold = 2
connections_per_minute = 60
messages_per_minute = 120
"#,
        dns.addr()
    ));
    (dns, server)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn text(server: &Portcullis, args: &[&str]) -> String {
    String::from_utf8_lossy(&server.cli_ok(args)).into_owned()
}

/// The line of `text` that contains `needle`.
#[track_caller]
fn line<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

/// The `lists` entry of `zone` in a `screen show --json`.
#[track_caller]
fn list<'a>(show: &'a Value, zone: &str) -> &'a Value {
    show["lists"]
        .as_array()
        .unwrap_or_else(|| panic!("no lists: {show}"))
        .iter()
        .find(|l| l["zone"] == zone)
        .unwrap_or_else(|| panic!("{zone} not in {show}"))
}

/// The `rates` entry of `kind` in a `screen show --json`.
#[track_caller]
fn rate<'a>(show: &'a Value, kind: &str) -> &'a Value {
    show["rates"]
        .as_array()
        .unwrap_or_else(|| panic!("no rates: {show}"))
        .iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("{kind} not in {show}"))
}

/// The CLI round trip: `show --json` is the typed answer (every field of
/// the report, the client and the key its rates count under: an IPv6
/// address counts for its /64), the human layout has its sections, `clear`
/// of an address and of a domain (normalised) say what they reset, and an
/// argument that is neither an address nor a domain is refused by the CLI
/// with a clear error and exit code 2.
#[test]
fn show_and_clear_round_trip_through_the_admin_socket() {
    let (_dns, server) = world();

    let show = server.cli_json(&["screen", "show", "192.0.2.1", "--json"]);
    assert_eq!(show["ip"], "192.0.2.1", "{show}");
    assert_eq!(show["rate_key"], "192.0.2.1", "{show}");
    for key in ["trusted", "dnsbl_score", "dnsbl_threshold", "summary"] {
        assert!(show.get(key).is_some(), "{key} missing: {show}");
    }
    for key in ["lists", "rates", "greylist"] {
        assert!(show[key].is_array(), "{key} not a list: {show}");
    }
    let v6 = server.cli_json(&["screen", "show", "2001:db8:1:2::7", "--json"]);
    assert_eq!(v6["ip"], "2001:db8:1:2::7", "{v6}");
    assert_eq!(v6["rate_key"], "2001:db8:1:2::/64", "{v6}");

    let human = text(&server, &["screen", "show", "192.0.2.1"]);
    assert!(line(&human, "client").ends_with("192.0.2.1"), "{human}");
    for section in [
        "trusted network",
        "dns lists",
        "rates this minute",
        "greylist",
    ] {
        line(&human, section);
    }

    let cleared = server.cli_json(&["screen", "clear", "192.0.2.1", "--json"]);
    assert_eq!(cleared["target"]["ip"], "192.0.2.1", "{cleared}");
    for key in ["rates", "lists", "greylist"] {
        assert!(cleared[key].is_u64(), "{key}: {cleared}");
    }
    let out = text(&server, &["screen", "clear", "192.0.2.1"]);
    assert!(out.contains("client 192.0.2.1"), "{out}");

    let cleared = server.cli_json(&["screen", "clear", "Example.TEST", "--json"]);
    assert_eq!(cleared["target"]["domain"], "example.test", "{cleared}");
    let out = text(&server, &["screen", "clear", "example.test"]);
    assert!(out.contains("sender domain example.test"), "{out}");

    for bad in ["not_an_ip_or_domain!", "192.0.2.256"] {
        let out = server.cli(&["screen", "clear", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(bad) && err.contains("neither an IP address nor a domain name"),
            "{bad}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{bad}: {}", stdout(&out));
    }
    let out = server.cli(&["screen", "show", "example.test"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
}

/// With no server running, `screen show` says so and exits non-zero.
#[test]
fn show_without_a_server_says_so() {
    let (_dns, mut server) = world();
    server.terminate(std::time::Duration::from_secs(10));
    let out = server.cli(&["screen", "show", "192.0.2.1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no portcullis server is running"),
        "{}",
        stderr(&out)
    );
}

/// What the screen reports is what it holds: the lists as the DNS server
/// answers them (listed with the answer, not listed, a SERVFAIL as a failed
/// lookup that scores nothing), the score against the configured
/// threshold, the rates counted for a client that connected, and `clear`
/// resets them.
#[test]
fn show_reports_the_lists_and_rates_and_clear_resets_them() {
    let (_dns, server) = world();

    let show = server.cli_json(&["screen", "show", "192.0.2.1", "--json"]);
    assert_eq!(show["trusted"], false, "{show}");
    assert_eq!(show["dnsbl_threshold"], 2, "{show}");
    assert_eq!(show["dnsbl_score"], 2, "{show}");
    let bl = list(&show, "bl.example.test");
    assert_eq!(bl["outcome"], "listed", "{show}");
    assert_eq!(bl["weight"], 2, "{show}");
    assert_eq!(bl["answers"][0], "127.0.0.2", "{show}");
    assert_eq!(list(&show, "wl.example.test")["outcome"], "not listed");
    let slow = list(&show, "slow.example.test")["outcome"].clone();
    assert!(
        slow.as_str().unwrap().starts_with("lookup failed"),
        "{show}"
    );
    let human = text(&server, &["screen", "show", "192.0.2.1"]);
    assert!(
        line(&human, "bl.example.test").contains("127.0.0.2"),
        "{human}"
    );
    assert!(line(&human, "slow.example.test").contains("lookup failed"));

    // A connection from 127.0.0.7 is counted against its limit.
    let mut client = Client::connect_raw_from(server.smtp(), "127.0.0.7".parse().unwrap());
    client.read_reply();
    client.cmd("QUIT", 221);
    let show = server.cli_json(&["screen", "show", "127.0.0.7", "--json"]);
    assert_eq!(
        list(&show, "wl.example.test")["outcome"],
        "listed",
        "{show}"
    );
    assert_eq!(show["dnsbl_score"], -1, "{show}");
    let conns = rate(&show, "connections");
    assert_eq!(conns["count"], 1, "{show}");
    assert_eq!(conns["limit"], 60, "{show}");
    assert_eq!(rate(&show, "messages")["limit"], 120, "{show}");
    assert_eq!(rate(&show, "recipients")["limit"], 0, "{show}");
    let human = text(&server, &["screen", "show", "127.0.0.7"]);
    assert!(line(&human, "connections").ends_with("1 of 60"), "{human}");

    let cleared = server.cli_json(&["screen", "clear", "127.0.0.7", "--json"]);
    assert!(cleared["rates"].as_u64().unwrap() >= 1, "{cleared}");
    let show = server.cli_json(&["screen", "show", "127.0.0.7", "--json"]);
    assert_eq!(rate(&show, "connections")["count"], 0, "{show}");
}
