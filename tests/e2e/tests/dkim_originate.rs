//! DKIM for everything we originate, against the real binary: mail a
//! client in `trusted_networks` relays, and the DSNs the queue makes, are
//! signed with the `[[submission.dkim]]` key of their From domain (the
//! same signer as authenticated submission) and verify as pass with
//! mail-auth against the keys in the test DNS; mail from a trusted client
//! whose From domain has no key goes unsigned.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use portcullis_dns::HickoryResolver;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::server::{Portcullis, background_runtime, free_port};
use portcullis_test_support::sink::{ReceivedMail, Sink, SinkConfig};
use portcullis_test_support::smtp::Client;

fn header_section(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

fn relay(server: &Portcullis, from: &str, to: &str, subject: &str) {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd(&format!("MAIL FROM:<{from}>"), 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(
        format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
             Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n\
             Message-ID: <{subject}@internal.test>\r\n\r\nHello.\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
}

/// The DKIM results of `mail` as mail-auth finds them through `dns`.
fn verify(
    rt: &tokio::runtime::Runtime,
    dns: &TestDns,
    mail: &ReceivedMail,
) -> Vec<(DkimResult, String, String)> {
    let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    let verifier = MessageAuthenticator(resolver.inner().clone());
    let am = AuthenticatedMessage::parse(&mail.data).expect("parse");
    rt.block_on(verifier.verify_dkim(&am))
        .iter()
        .map(|o| {
            let (d, s) = o
                .signature()
                .map(|s| (s.d.clone(), s.s.clone()))
                .unwrap_or_default();
            (o.result().clone(), d, s)
        })
        .collect()
}

#[test]
fn trusted_relay_and_dsns_are_signed_by_the_key_of_their_from_domain() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let dir = tempfile::tempdir().unwrap();

    // One sink: elsewhere.test's MX (refusing one address), and the route
    // of example.test (where the DSN goes).
    let port = free_port();
    let sink_ip = Ipv4Addr::new(127, 0, 0, 63);
    dns.add_mx("elsewhere.test", 10, "mx.elsewhere.test");
    dns.add_a("mx.elsewhere.test", sink_ip);
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from((sink_ip, port)),
        rcpt_replies: vec![(
            "nobody@elsewhere.test".into(),
            "550 5.1.1 no such user".into(),
        )],
        ..SinkConfig::default()
    });

    // example.test signs relayed mail; mx.example.test (our host name,
    // MAILER-DAEMON's domain) signs DSNs.
    let p = dkim_rsa_key(&dir.path().join("example.key"));
    dns.add_txt(
        "s1._domainkey.example.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );
    let p = dkim_rsa_key(&dir.path().join("mx.key"));
    dns.add_txt(
        "s2._domainkey.mx.example.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );

    let server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[routes]
"example.test" = "{sink_ip}:{port}"
[dns]
nameservers = ["{dns}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[[submission.dkim]]
domain = "example.test"
selector = "s1"
key = "{{dir}}/example.key"
[[submission.dkim]]
domain = "mx.example.test"
selector = "s2"
key = "{{dir}}/mx.key"
"#,
            dns = dns.addr()
        ),
    );

    relay(
        &server,
        "alice@example.test",
        "carol@elsewhere.test",
        "signed",
    );
    relay(
        &server,
        "app@nokey.test",
        "carol@elsewhere.test",
        "unsigned",
    );
    relay(
        &server,
        "alice@example.test",
        "nobody@elsewhere.test",
        "bounces",
    );

    // The two relayed messages and the DSN to alice.
    let got = sink.wait_for(3, Duration::from_secs(30));
    let find = |pred: &dyn Fn(&ReceivedMail) -> bool| -> &ReceivedMail {
        got.iter()
            .find(|m| pred(m))
            .unwrap_or_else(|| panic!("not received: {got:?}"))
    };
    let signed = find(&|m| header_section(&m.data).contains("Subject: signed"));
    let unsigned = find(&|m| header_section(&m.data).contains("Subject: unsigned"));
    let dsn = find(&|m| m.mail_from.is_empty() && m.rcpts == ["alice@example.test"]);

    let results = verify(&rt, &dns, signed);
    assert_eq!(
        results,
        [(DkimResult::Pass, "example.test".to_owned(), "s1".to_owned())]
    );
    assert!(
        !header_section(&unsigned.data)
            .to_ascii_lowercase()
            .contains("dkim-signature"),
        "{}",
        header_section(&unsigned.data)
    );
    let headers = header_section(&dsn.data);
    assert!(headers.starts_with("DKIM-Signature:"), "{headers}");
    assert!(
        headers.contains("MAILER-DAEMON@mx.example.test"),
        "{headers}"
    );
    let results = verify(&rt, &dns, dsn);
    assert_eq!(
        results,
        [(
            DkimResult::Pass,
            "mx.example.test".to_owned(),
            "s2".to_owned()
        )]
    );
    drop(server);
    drop(rt);
}
