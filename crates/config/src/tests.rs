use super::*;
use std::path::PathBuf;
use std::time::Duration;

fn ok(text: &str) -> Config {
    parse(text, None, "host.example.test").unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn issues(text: &str) -> Vec<ConfigIssue> {
    match parse(text, Some(Path::new("t.toml")), "host.example.test") {
        Ok(_) => panic!("accepted: {text}"),
        Err(ConfigError::Invalid { issues, .. }) => issues,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn empty_file_is_the_development_defaults_shape() {
    let c = ok("");
    assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
    assert_eq!(c.admin.socket, PathBuf::from("data/admin.sock"));
    assert_eq!(c.queue.retry.len(), 5);
    assert_eq!(c.limits.max_recipients, 100);
    assert_eq!(c.hostname, "host.example.test");
    let d = development_defaults();
    assert_eq!(d.relay.accepted_domains[0].as_str(), "localhost");
}

#[test]
fn full_example() {
    let c = ok(r#"
hostname = "mx.example.test"
data_dir = "/var/lib/portcullis"
[[listen]]
address = "0.0.0.0:25"
role = "smtp"
[[listen]]
address = "[::]:465"
role = "submissions"
[relay]
accepted_domains = ["Example.TEST.", "bücher.example"]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
[routes]
"example.test" = "127.0.0.1:2526"
".sub.example.test" = "[::1]:2527"
[dns]
nameservers = ["127.0.0.1:5353", "192.0.2.53"]
[queue]
retry = ["90s", "5m"]
max_age = "5d"
delay_warning = "4h"
[admin]
metrics = "127.0.0.1:9025"
"#);
    assert_eq!(
        c.relay.accepted_domains[1].as_str(),
        "xn--bcher-kva.example"
    );
    assert!(c.relay.trusts("10.1.2.3".parse().unwrap()));
    assert!(c.relay.trusts("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!c.relay.trusts("11.1.2.3".parse().unwrap()));
    assert!(c.relay.trusts("192.0.2.7".parse().unwrap()));
    assert_eq!(c.dns.nameservers[1].port(), 53);
    assert_eq!(
        c.queue.retry,
        vec![Duration::from_secs(90), Duration::from_secs(300)]
    );
    let sub = Domain::parse("a.sub.example.test").unwrap();
    assert_eq!(c.route_for(&sub).unwrap().next_hop.port, 2527);
    assert_eq!(
        c.route_for(&Domain::parse("example.test").unwrap())
            .unwrap()
            .next_hop
            .port,
        2526
    );
    assert!(
        c.route_for(&Domain::parse("a.example.test").unwrap())
            .is_none()
    );
    assert_eq!(c.admin.metrics.unwrap().port(), 9025);
}

use portcullis_types::Domain;

#[test]
fn every_error_is_reported_with_key_and_line() {
    let text = "hostname = \"mx.example.test\"\n\
[relay]\n\
accepted_domains = [\"ok.test\", \"bad..test\"]\n\
trusted_networks = [\"not-a-net\"]\n\
[queue]\n\
retry = [\"5x\"]\n\
[limits]\n\
max_recipients = 0\n\
[[listen]]\n\
address = \"nowhere\"\n\
role = \"smtp\"\n";
    let found = issues(text);
    let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("relay.accepted_domains[1]", Some(3)),
            ("relay.trusted_networks[0]", Some(4)),
            ("queue.retry[0]", Some(6)),
            ("limits.max_recipients", Some(8)),
            ("listen[0].address", Some(10)),
        ],
        "{found:#?}"
    );
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let found = issues("[relay]\naccepted_domains = []\nopen_relay = true\n[nonsense]\nx = 1\n");
    assert!(
        found
            .iter()
            .any(|i| i.key == "relay.open_relay" && i.line == Some(3)),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.key == "nonsense" && i.line == Some(4)),
        "{found:#?}"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let found = issues("hostname = \"a.test\"\n[relay\n");
    assert_eq!(found[0].line, Some(2), "{found:#?}");
}

#[test]
fn open_relay_network_is_refused() {
    let found = issues("[relay]\ntrusted_networks = [\"0.0.0.0/0\"]\n");
    assert!(found[0].message.contains("open relay"));
}

#[test]
fn display_lists_file_line_and_key() {
    let err = parse("[limits]\nmax_errors = 0\n", Some(Path::new("x.toml")), "h").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("x.toml:2: limits.max_errors: must be greater than zero"),
        "{text}"
    );
}

/// `[limits] max_received_headers`: 100 by default, any positive count,
/// zero refused with its key and line.
#[test]
fn max_received_headers_default_value_and_zero() {
    let c = parse("", None, "h").unwrap();
    assert_eq!(c.limits.max_received_headers, 100);
    let c = parse("[limits]\nmax_received_headers = 30\n", None, "h").unwrap();
    assert_eq!(c.limits.max_received_headers, 30);
    let err = parse(
        "[limits]\nmax_received_headers = 0\n",
        Some(Path::new("x.toml")),
        "h",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("x.toml:2: limits.max_received_headers: must be greater than zero"),
        "{text}"
    );
}

#[test]
fn next_hops() {
    use section::routes::parse_next_hop;
    assert_eq!(
        parse_next_hop("mail.example.test:25").unwrap().host,
        "mail.example.test"
    );
    assert_eq!(parse_next_hop("[::1]:2526").unwrap().host, "::1");
    for bad in ["nope", "::1:25", "host:99999", "[::1]", "bad..host:25"] {
        assert!(parse_next_hop(bad).is_err(), "{bad}");
    }
}

#[test]
fn verify_defaults_and_values() {
    let d = ok("").verify;
    assert_eq!(d, Verify::default());
    assert!(d.enabled && d.skip_trusted && d.dmarc_reject);
    assert_eq!(d.dmarc_quarantine, DmarcQuarantine::Tag);
    assert_eq!(d.spf_fail, SpfFail::Record);
    assert_eq!(d.timeout, Duration::from_secs(30));

    let v = ok(r#"
[verify]
enabled = true
skip_trusted = false
dmarc_reject = false
dmarc_quarantine = "reject"
spf_fail = "reject"
exceptions = ["Forwarder.Example", ".lists.example", "192.0.2.0/24", "2001:db8::1"]
timeout = "5s"
"#)
    .verify;
    assert!(!v.skip_trusted && !v.dmarc_reject);
    assert_eq!(v.dmarc_quarantine, DmarcQuarantine::Reject);
    assert_eq!(v.spf_fail, SpfFail::Reject);
    assert_eq!(v.timeout, Duration::from_secs(5));
    assert_eq!(
        v.exceptions,
        vec![
            VerifyException::Domain(Domain::parse("forwarder.example").unwrap()),
            VerifyException::Domain(Domain::parse("lists.example").unwrap()),
            VerifyException::Network("192.0.2.0/24".parse().unwrap()),
            VerifyException::Network("2001:db8::1/128".parse().unwrap()),
        ]
    );
}

#[test]
fn verify_errors_are_reported_with_key_and_line() {
    let found = issues(
        "[verify]\n\
dmarc_quarantine = \"drop\"\n\
spf_fail = \"bounce\"\n\
exceptions = [\"ok.example\", \"bad..example\", \"0.0.0.0/0\"]\n\
timeout = \"0s\"\n\
skip = true\n",
    );
    let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("verify.dmarc_quarantine", Some(2)),
            ("verify.spf_fail", Some(3)),
            ("verify.exceptions[1]", Some(4)),
            ("verify.exceptions[2]", Some(4)),
            ("verify.timeout", Some(5)),
            ("verify.skip", Some(6)),
        ],
        "{found:#?}"
    );
}

/// `[verify]` bounds on DKIM work: 5 signatures, 64 `h=` entries, 1000
/// header fields by default; any positive count; zero refused with key and
/// line.
#[test]
fn verify_dkim_bounds() {
    let d = ok("").verify;
    assert_eq!(
        (
            d.dkim_max_signatures,
            d.dkim_max_signed_headers,
            d.max_header_fields
        ),
        (5, 64, 1000)
    );
    let v = ok(
        "[verify]\ndkim_max_signatures = 2\ndkim_max_signed_headers = 100\n\
max_header_fields = 300\n",
    )
    .verify;
    assert_eq!(
        (
            v.dkim_max_signatures,
            v.dkim_max_signed_headers,
            v.max_header_fields
        ),
        (2, 100, 300)
    );
    let found = issues(
        "[verify]\ndkim_max_signatures = 0\ndkim_max_signed_headers = 0\nmax_header_fields = 0\n",
    );
    let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("verify.dkim_max_signatures", Some(2)),
            ("verify.dkim_max_signed_headers", Some(3)),
            ("verify.max_header_fields", Some(4)),
        ],
        "{found:#?}"
    );
}

#[test]
fn submission_defaults_and_senders() {
    let c = ok("");
    assert_eq!(c.submission, Submission::default());
    assert!(!c.submission.auth_on_smtp);
    assert_eq!(c.submission.max_auth_failures, 3);
    let c = ok("[relay]\naccepted_domains = [\"example.test\"]\n\
[submission]\nusers_file = \"/x/users\"\nauth_on_smtp = true\nmax_auth_failures = 5\n\
[submission.senders]\nalice = [\"Sales@Example.Test\", \"@other.test\"]\n");
    assert!(c.submission.auth_on_smtp);
    assert_eq!(c.submission.max_auth_failures, 5);
    let a = |s: &str| portcullis_types::Address::parse(s).unwrap();
    let sub = &c.submission;
    assert!(sub.may_send_as("alice", &a("sales@example.test"), &c.relay));
    assert!(sub.may_send_as("alice", &a("x@other.test"), &c.relay));
    assert!(!sub.may_send_as("alice", &a("alice@example.test"), &c.relay));
    // Not listed: user@<accepted domain>, or the name when it is an address.
    assert!(sub.may_send_as("bob", &a("Bob@example.test"), &c.relay));
    assert!(!sub.may_send_as("bob", &a("bob@other.test"), &c.relay));
    assert!(!sub.may_send_as("bob", &a("alice@example.test"), &c.relay));
    assert!(sub.may_send_as("carol@example.test", &a("carol@example.test"), &c.relay));
}

#[test]
fn submission_errors_are_reported_with_key_and_line() {
    let found = issues(
        "[submission]\n\
max_auth_failures = 0\n\
[submission.senders]\n\
alice = [\"ok@example.test\", \"not an address\", \"@bad..domain\"]\n",
    );
    let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("submission.max_auth_failures", Some(2)),
            ("submission.senders.alice[1]", Some(4)),
            ("submission.senders.alice[2]", Some(4)),
        ],
        "{found:#?}"
    );
}

/// The bounds on AUTH work: the hashing wait and the introspection cap
/// and breaker, with their defaults, values and errors (key and line).
#[test]
fn submission_auth_bounds() {
    let c = ok("");
    assert_eq!(c.submission.auth_queue_wait, Duration::from_secs(2));
    let oauth = "[submission.oauth]\nintrospection_url = \"https://id.test/i\"\n\
client_id = \"p\"\nclient_secret_file = \"/s\"\n";
    let c = ok(oauth);
    let o = c.submission.oauth.as_ref().unwrap();
    assert_eq!(
        (o.max_in_flight, o.breaker_failures, o.breaker_open),
        (8, 5, Duration::from_secs(30))
    );
    let c = ok(&format!(
        "[submission]\nauth_queue_wait = \"500ms\"\n{oauth}max_in_flight = 2\nbreaker_failures = 0\nbreaker_open = \"1s\"\n"
    ));
    assert_eq!(c.submission.auth_queue_wait, Duration::from_millis(500));
    let o = c.submission.oauth.as_ref().unwrap();
    assert_eq!(
        (o.max_in_flight, o.breaker_failures, o.breaker_open),
        (2, 0, Duration::from_secs(1))
    );
    let found = issues(&format!(
        "[submission]\nauth_queue_wait = \"2m\"\n{oauth}max_in_flight = 0\nbreaker_open = \"0s\"\n"
    ));
    let keys: Vec<_> = found.iter().map(|i| (i.key.as_str(), i.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("submission.auth_queue_wait", Some(2)),
            ("submission.oauth.max_in_flight", Some(7)),
            ("submission.oauth.breaker_open", Some(8)),
        ],
        "{found:#?}"
    );
}

#[test]
fn submission_dkim_keys() {
    let c = ok(
        "[[submission.dkim]]\ndomain = \"Example.Test\"\nselector = \"s1\"\nkey = \"/k/example.key\"\n\
[[submission.dkim]]\ndomain = \"other.test\"\nselector = \"2026-a\"\nkey = \"/k/other.key\"\n",
    );
    let d = &c.submission.dkim;
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].domain.to_string(), "example.test");
    assert_eq!(d[0].selector, "s1");
    assert_eq!(d[0].key, std::path::PathBuf::from("/k/example.key"));
    assert_eq!(d[1].selector, "2026-a");
    let found = issues(
        "[[submission.dkim]]\ndomain = \"a..b\"\nselector = \"s1\"\nkey = \"/k\"\n\
[[submission.dkim]]\ndomain = \"ok.test\"\nselector = \"bad sel\"\nkey = \"/k\"\n\
[[submission.dkim]]\ndomain = \"two.test\"\nselector = \"s1\"\nkey = \"/k\"\n\
[[submission.dkim]]\ndomain = \"two.test\"\nselector = \"s2\"\nkey = \"/k\"\n",
    );
    let keys: Vec<_> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "submission.dkim[0].domain",
            "submission.dkim[1].selector",
            "submission.dkim[3].domain",
        ],
        "{found:#?}"
    );
}

/// `[limits] spool_threshold` (64 KiB) and `max_header_size` (256 KiB) by default;
/// values outside 4 KiB..64 MiB refused with their key and line.
#[test]
fn message_memory_limits_default_value_and_range() {
    let c = parse("", None, "h").unwrap();
    assert_eq!(c.limits.spool_threshold, 65_536);
    assert_eq!(c.limits.max_header_size, 262_144);
    let c = parse(
        "[limits]\nspool_threshold = 131072\nmax_header_size = 1048576\n",
        None,
        "h",
    )
    .unwrap();
    assert_eq!(c.limits.spool_threshold, 131_072);
    assert_eq!(c.limits.max_header_size, 1_048_576);
    let err = parse(
        "[limits]\nspool_threshold = 100\nmax_header_size = 1000000000\n",
        Some(Path::new("x.toml")),
        "h",
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "x.toml:2: limits.spool_threshold: must be between 4096 and 67108864 octets",
        "x.toml:3: limits.max_header_size: must be between 4096 and 67108864 octets",
    ] {
        assert!(text.contains(want), "{text}");
    }
}
