//! The screen end to end (issue 14): the real binary, the real DNS server
//! of tests/support serving the DNS block and allow lists and the SPF
//! records, a real SMTP server (the sink) as the internal route that knows
//! some users, and clients from several loopback addresses (127.0.x.y).
//! One test per row of the behaviour table: unknown user 550 5.1.1 and no
//! DSN anywhere; route down 451 4.4.3; listed client 554 naming the zone
//! (postmaster stays reachable); allowlisted client passes; DNS failure
//! scores nothing; rates 421/452/451 then recovery; greylisting 451 then a
//! pass after the delay; a verified domain passes from a second address
//! without a new delay; trusted and authenticated clients are not screened.

use portcullis_test_support::dns::{BackgroundDns as Dns, FailMode};
use portcullis_test_support::server::{Portcullis, eventually, metric};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::Client;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const BL: &str = "bl.example.test";
const WL: &str = "wl.example.test";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The head of every config here: one `smtp` listener, `example.test`
/// accepted and routed to `route`, no trusted network but `trusted`, names
/// through the test DNS server, verification off unless `verify` is given.
fn config(dns: SocketAddr, route: SocketAddr, trusted: &str, extra: &str) -> String {
    format!(
        r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
trusted_networks = [{trusted}]
[routes]
"example.test" = "{route}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
{extra}"#
    )
}

/// A client from `source` that has said EHLO.
fn client(server: &Portcullis, source: &str) -> Client<TcpStream> {
    let mut c = Client::connect_raw_from(server.smtp(), ip(source));
    let greeting = c.read_reply();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.ehlo("client.example.net");
    c
}

/// The reply to `RCPT TO:<rcpt>` in a fresh transaction from `from`.
fn rcpt_reply(c: &mut Client<TcpStream>, from: &str, rcpt: &str) -> (u16, String) {
    c.cmd("RSET", 250);
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    let r = c.read_reply();
    (r.code, r.text)
}

/// A sink that knows alice, bob and postmaster at example.test and
/// refuses every other recipient with 550 5.1.1.
fn route_knowing_users() -> Sink {
    Sink::start(SinkConfig {
        rcpt_replies: ["ghost", "nobody", "carol"]
            .iter()
            .map(|u| {
                (
                    format!("{u}@example.test"),
                    "550 5.1.1 no such user".to_string(),
                )
            })
            .collect(),
        ..SinkConfig::default()
    })
}

/// How many `RCPT TO` commands for `rcpt` the route has seen.
fn probes(route: &Sink, rcpt: &str) -> usize {
    let needle = format!("RCPT TO:<{rcpt}>").to_ascii_lowercase();
    route
        .commands()
        .iter()
        .filter(|c| c.to_ascii_lowercase().starts_with(&needle))
        .count()
}

#[test]
fn unknown_recipient_from_the_file_gets_550_and_nothing_is_queued_or_bounced() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.test");
    std::fs::write(
        &file,
        "# our users\nalice@example.test\nPostmaster@example.test\n",
    )
    .unwrap();
    let server = Portcullis::start_in(
        dir,
        &config(
            dns.addr(),
            route.addr(),
            "",
            &format!(
                "[recipients]\nfiles = {{ \"example.test\" = {:?} }}\n",
                file.display().to_string()
            ),
        ),
    );
    let mut c = client(&server, "127.0.0.1");
    c.cmd("MAIL FROM:<sender@remote.example.net>", 250);
    let unknown = c.cmd("RCPT TO:<nobody@example.test>", 550);
    assert!(
        unknown
            .text
            .contains("5.1.1 <nobody@example.test>: Recipient address rejected: user unknown"),
        "{unknown:?}"
    );
    c.cmd("RCPT TO:<Alice@example.test>", 250);
    let ok = c.data(b"Subject: hi\r\n\r\nhello\r\n");
    assert_eq!(ok.code, 250, "{ok:?}");
    c.cmd("QUIT", 221);
    let got = route.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts, vec!["Alice@example.test".to_string()]);
    // Nothing for nobody: no queue entry, no DSN to the (forged) sender.
    eventually("queue empty", Duration::from_secs(20), || {
        server.queue_list().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        route.received().len(),
        1,
        "a DSN went out: {:?}",
        route.received()
    );
    // An edit of the file is in force without a reload.
    let path = server.data_dir().join("../example.test");
    std::fs::write(&path, "alice@example.test\nnobody@example.test\n").unwrap();
    eventually("the edited file in force", Duration::from_secs(10), || {
        let mut c = client(&server, "127.0.0.1");
        let (code, _) = rcpt_reply(&mut c, "s@remote.example.net", "nobody@example.test");
        (code == 250).then_some(())
    });
}

#[test]
fn route_verification_probes_the_route_once_and_refuses_unknown_users() {
    let dns = Dns::start();
    let route = route_knowing_users();
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        "[recipients]\nverify = \"route\"\n",
    ));
    let mut c = client(&server, "127.0.0.1");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "ghost@example.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.1.1 <ghost@example.test>: Recipient address rejected: user unknown"));
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "alice@example.test");
    assert_eq!(code, 250, "{text}");
    // Asked again from another session: answered from the cache.
    let mut c2 = client(&server, "127.0.0.2");
    assert_eq!(
        rcpt_reply(&mut c2, "t@remote.example.net", "alice@example.test").0,
        250
    );
    assert_eq!(
        rcpt_reply(&mut c2, "t@remote.example.net", "ghost@example.test").0,
        550
    );
    assert_eq!(
        probes(&route, "alice@example.test"),
        1,
        "{:?}",
        route.commands()
    );
    assert_eq!(
        probes(&route, "ghost@example.test"),
        1,
        "{:?}",
        route.commands()
    );
    // The probe is MAIL FROM:<> and no message ever reached the route.
    assert!(
        route
            .commands()
            .iter()
            .any(|c| c.eq_ignore_ascii_case("MAIL FROM:<>"))
    );
    assert!(route.received().is_empty());
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_screen_refusals_total{check="recipient_unknown"}"#
        ),
        Some(2.0),
        "{page}"
    );
}

#[test]
fn route_down_gives_451_4_4_3_or_accepts_when_told_to() {
    let dns = Dns::start();
    // A port nobody listens on.
    let closed: SocketAddr = format!("127.0.0.1:{}", portcullis_test_support::server::free_port())
        .parse()
        .unwrap();
    let mut server = Portcullis::start(&config(
        dns.addr(),
        closed,
        "",
        "[recipients]\nverify = \"route\"\n",
    ));
    let mut c = client(&server, "127.0.0.1");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "alice@example.test");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.4.3"), "{text}");
    // Not cached: the same recipient is asked again, and with
    // unreachable = "accept" it is taken.
    server.terminate(Duration::from_secs(20));
    server.edit_config(|t| {
        t.replace(
            "verify = \"route\"",
            "verify = \"route\"\nunreachable = \"accept\"",
        )
    });
    server.restart();
    let mut c = client(&server, "127.0.0.1");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "alice@example.test");
    assert_eq!(code, 250, "{text}");
}

#[test]
fn listed_client_gets_554_naming_the_zone_and_postmaster_stays_reachable() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    dns.list(BL, ip("127.0.0.2"), Ipv4Addr::new(127, 0, 0, 2), 300);
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        &format!("[[dnsbl]]\nzone = \"{BL}\"\nweight = 1\n"),
    ));
    let mut listed = client(&server, "127.0.0.2");
    let (code, text) = rcpt_reply(&mut listed, "s@remote.example.net", "bob@example.test");
    assert_eq!(code, 554, "{text}");
    assert!(
        text.contains(
            "5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.example.test"
        ),
        "{text}"
    );
    let (code, text) = rcpt_reply(
        &mut listed,
        "s@remote.example.net",
        "postmaster@example.test",
    );
    assert_eq!(code, 250, "postmaster must stay reachable: {text}");
    let mut clean = client(&server, "127.0.0.3");
    assert_eq!(
        rcpt_reply(&mut clean, "s@remote.example.net", "bob@example.test").0,
        250
    );
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_dnsbl_lookups_total{zone="bl.example.test",outcome="listed"}"#
        ),
        Some(1.0),
        "{page}"
    );
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("screen refused") && l.contains("127.0.0.2"))
    );
}

#[test]
fn allowlisted_client_passes_the_block_list_and_greylisting() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    dns.list(BL, ip("127.0.0.4"), Ipv4Addr::new(127, 0, 0, 2), 300);
    dns.list(WL, ip("127.0.0.4"), Ipv4Addr::new(127, 0, 10, 0), 300);
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        &format!(
            "[[dnsbl]]\nzone = \"{BL}\"\nweight = 1\n[[dnsbl]]\nzone = \"{WL}\"\nweight = -5\n[greylist]\nenabled = true\ndelay = \"1h\"\n"
        ),
    ));
    let mut c = client(&server, "127.0.0.4");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    // A client on no list is greylisted by the same server.
    let mut other = client(&server, "127.0.0.5");
    let (code, text) = rcpt_reply(&mut other, "s@remote.example.net", "bob@example.test");
    assert_eq!(code, 451, "{text}");
}

/// An allow list that blocks our queries answers 127.0.0.255 for every
/// client (dnswl.org): that is the list's error code, not a listing, so
/// it allows nobody: the client the block list names is still refused,
/// and the failure is counted.
#[test]
fn an_allow_list_refusing_our_queries_allows_nobody() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    dns.list(BL, ip("127.0.0.4"), Ipv4Addr::new(127, 0, 0, 2), 300);
    dns.list(WL, ip("127.0.0.4"), Ipv4Addr::new(127, 0, 0, 255), 300);
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        &format!(
            "[[dnsbl]]\nzone = \"{BL}\"\nweight = 1\n[[dnsbl]]\nzone = \"{WL}\"\nweight = -5\n"
        ),
    ));
    let mut c = client(&server, "127.0.0.4");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "bob@example.test");
    assert_eq!(code, 554, "{text}");
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            &format!(r#"portcullis_dnsbl_lookups_total{{zone="{WL}",outcome="failed"}}"#)
        ),
        Some(1.0),
        "{page}"
    );
}

#[test]
fn a_dns_list_failure_scores_nothing() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    dns.fail_zone(BL, FailMode::ServFail);
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        &format!("[[dnsbl]]\nzone = \"{BL}\"\n"),
    ));
    let mut c = client(&server, "127.0.0.6");
    let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    let page = server.metrics_page();
    assert_eq!(
        metric(
            &page,
            r#"portcullis_dnsbl_lookups_total{zone="bl.example.test",outcome="failed"}"#
        ),
        Some(1.0),
        "{page}"
    );
}

#[test]
fn rates_refuse_with_421_452_and_451_and_recover_after_the_window() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        "[screen]\nconnections_per_minute = 3\nmessages_per_minute = 2\nrecipients_per_minute = 2\n",
    ));
    // Messages: the third MAIL in the minute gets 452 4.7.1.
    let mut c = client(&server, "127.0.1.1");
    c.cmd("MAIL FROM:<a@remote.example.net>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    c.cmd("RCPT TO:<alice@example.test>", 250);
    // Recipients: the third in the minute gets 451 4.7.1.
    let third = c.cmd("RCPT TO:<carol@example.test>", 451);
    assert!(
        third
            .text
            .contains("4.7.1 Too many recipients from [127.0.1.1]"),
        "{third:?}"
    );
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<a@remote.example.net>", 250);
    c.cmd("RSET", 250);
    let mail = c.cmd("MAIL FROM:<a@remote.example.net>", 452);
    assert!(
        mail.text
            .contains("4.7.1 Too many messages from [127.0.1.1]"),
        "{mail:?}"
    );
    // Connections: the fourth in the minute gets 421 4.7.0 and is closed.
    let _second = client(&server, "127.0.1.1");
    let _third = client(&server, "127.0.1.1");
    let mut fourth = Client::connect_raw_from(server.smtp(), ip("127.0.1.1"));
    let r = fourth.read_reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(
        r.text
            .contains("4.7.0 Too many connections from [127.0.1.1]"),
        "{r:?}"
    );
    assert!(fourth.is_closed());
    // Another address has its own budget.
    let mut other = client(&server, "127.0.1.2");
    other.cmd("MAIL FROM:<a@remote.example.net>", 250);
    // After the window the client is served again.
    std::thread::sleep(Duration::from_secs(61));
    let mut again = client(&server, "127.0.1.1");
    again.cmd("MAIL FROM:<a@remote.example.net>", 250);
    again.cmd("RCPT TO:<bob@example.test>", 250);
}

#[test]
fn operator_clear_lifts_a_rate_limit_at_once() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        "[screen]\nconnections_per_minute = 1\n",
    ));
    let _first = client(&server, "127.0.1.3");
    let mut refused = Client::connect_raw_from(server.smtp(), ip("127.0.1.3"));
    assert_eq!(refused.read_reply().code, 421);
    let shown = server.cli_json(&["screen", "show", "127.0.1.3", "--json"]);
    let text = shown.to_string();
    assert!(text.contains("connections"), "{text}");
    server.cli_ok(&["screen", "clear", "127.0.1.3"]);
    let _served = client(&server, "127.0.1.3");
}

#[test]
fn greylisting_defers_the_first_attempt_and_passes_after_the_delay() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        "[greylist]\nenabled = true\ndelay = \"2s\"\n",
    ));
    let mut c = client(&server, "127.0.2.1");
    let (code, text) = rcpt_reply(&mut c, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.7.1 <bob@example.test>: Greylisted"),
        "{text}"
    );
    // Too early: still deferred.
    assert_eq!(
        rcpt_reply(&mut c, "s@nospf.example.net", "bob@example.test").0,
        451
    );
    // postmaster@ is never greylisted.
    assert_eq!(
        rcpt_reply(&mut c, "s@nospf.example.net", "postmaster@example.test").0,
        250
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (code, text) = rcpt_reply(&mut c, "s@nospf.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    // The whole message goes through now.
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<s@nospf.example.net>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    assert_eq!(c.data(b"Subject: x\r\n\r\nx\r\n").code, 250);
    route.wait_for(1, Duration::from_secs(20));
    // The same sender from another /24 is a new triplet: deferred.
    let mut elsewhere = client(&server, "127.0.3.1");
    assert_eq!(
        rcpt_reply(&mut elsewhere, "s@nospf.example.net", "bob@example.test").0,
        451
    );
    // screen show lists the entries of the client's network.
    let shown = server
        .cli_json(&["screen", "show", "127.0.2.1", "--json"])
        .to_string();
    assert!(shown.contains("bob@example.test"), "{shown}");
}

#[test]
fn a_verified_domain_passes_from_a_second_address_without_a_new_delay() {
    let dns = Dns::start();
    let route = Sink::start(SinkConfig::default());
    dns.add_txt("pool.example.net", "v=spf1 ip4:127.0.0.0/8 -all");
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "",
        // SPF at MAIL FROM needs verification on (the harness turns it
        // off unless the config has a [verify] table).
        "[greylist]\nenabled = true\ndelay = \"2s\"\n[verify]\nenabled = true\n",
    ));
    let mut first = client(&server, "127.0.4.1");
    let (code, text) = rcpt_reply(&mut first, "news@pool.example.net", "bob@example.test");
    assert_eq!(code, 451, "{text}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        rcpt_reply(&mut first, "news@pool.example.net", "bob@example.test").0,
        250
    );
    // The retry comes from another address of the sender's pool, in
    // another /24: SPF passes for pool.example.net, so it is the same key.
    let mut second = client(&server, "127.0.5.1");
    let (code, text) = rcpt_reply(&mut second, "other@pool.example.net", "bob@example.test");
    assert_eq!(code, 250, "{text}");
    // Control: a sender without SPF from that address is a new triplet.
    let (code, _) = rcpt_reply(&mut second, "x@nospf.example.net", "bob@example.test");
    assert_eq!(code, 451);
}

#[test]
fn trusted_clients_are_not_screened_but_their_recipients_are_verified() {
    let dns = Dns::start();
    let route = route_knowing_users();
    dns.list(BL, ip("127.0.6.1"), Ipv4Addr::new(127, 0, 0, 2), 300);
    let server = Portcullis::start(&config(
        dns.addr(),
        route.addr(),
        "\"127.0.6.0/24\"",
        &format!(
            "[[dnsbl]]\nzone = \"{BL}\"\n[screen]\nmessages_per_minute = 1\n[greylist]\nenabled = true\n[recipients]\nverify = \"route\"\n"
        ),
    ));
    let mut c = client(&server, "127.0.6.1");
    for _ in 0..3 {
        let (code, text) = rcpt_reply(&mut c, "s@remote.example.net", "bob@example.test");
        assert_eq!(code, 250, "{text}");
    }
    let (code, _) = rcpt_reply(&mut c, "s@remote.example.net", "ghost@example.test");
    assert_eq!(code, 550);
}
