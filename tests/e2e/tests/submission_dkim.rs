//! DKIM signing of submitted mail (`[[submission.dkim]]`) against the real
//! binary: mail from an authenticated user goes through the queue to a
//! sink and arrives with a DKIM-Signature that mail-auth verifies as pass
//! against the key published in the test DNS; mail for an accepted domain
//! from an unauthenticated client is not signed; a bad key stops the start
//! with an error naming it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use portcullis_dns::HickoryResolver;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::keys::dkim_rsa_key;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, free_port, portcullis_bin};
use portcullis_test_support::sink::{Sink, SinkConfig};
use portcullis_test_support::smtp::{Client, queued_id};

const TLS_NAME: &str = "mx.example.test";
const SELECTOR: &str = "s1";
/// base64 of "\0alice\0secret".
const PLAIN_OK: &str = "AGFsaWNlAHNlY3JldA==";

/// The raw message's header section (up to the empty line).
fn header_section(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

#[test]
fn submitted_mail_is_dkim_signed_and_inbound_mail_is_not() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let pki = TestPki::new();

    // One sink: elsewhere.test's MX, and the route of example.test.
    let port = free_port();
    let sink_ip = Ipv4Addr::new(127, 0, 0, 47);
    dns.add_mx("elsewhere.test", 10, "mx.elsewhere.test");
    dns.add_a("mx.elsewhere.test", sink_ip);
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from((sink_ip, port)),
        ..SinkConfig::default()
    });

    let dir = tempfile::tempdir().unwrap();
    pki.issue(&[TLS_NAME]).write(dir.path(), "mx");
    let p = dkim_rsa_key(&dir.path().join("dkim.key"));
    dns.add_txt(
        &format!("{SELECTOR}._domainkey.example.test"),
        &format!("v=DKIM1; k=rsa; p={p}"),
    );
    let server = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[[listen]]
address = "127.0.0.1:0"
role = "submission"
[tls]
certificate = "{{dir}}/mx.crt"
private_key = "{{dir}}/mx.key"
[relay]
accepted_domains = ["example.test"]
[routes]
"example.test" = "{sink_ip}:{port}"
[dns]
nameservers = ["{}"]
timeout = "2s"
[delivery]
port = {port}
[queue]
retry = ["1s"]
[submission]
users_file = "{{dir}}/users"
[[submission.dkim]]
domain = "example.test"
selector = "{SELECTOR}"
key = "{{dir}}/dkim.key"
"#,
            dns.addr()
        ),
    );
    let out = server.cli_with_stdin(&["user", "add", "alice"], Some("secret\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Authenticated submission, relayed to elsewhere.test.
    let mut c = Client::connect(server.addr("submission"));
    c.ehlo("client.test");
    let mut c = c.starttls(pki.client_config(), TLS_NAME);
    c.ehlo("client.test");
    c.cmd(&format!("AUTH PLAIN {PLAIN_OK}"), 235);
    c.cmd("MAIL FROM:<alice@example.test>", 250);
    c.cmd("RCPT TO:<carol@elsewhere.test>", 250);
    let r = c.data(
        b"From: Alice <alice@example.test>\r\n\
          To: carol@elsewhere.test\r\n\
          Subject: signed\r\n\
          Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n\
          Message-ID: <signed.1@example.test>\r\n\
          MIME-Version: 1.0\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\
          \r\n\
          Hello,  Carol.\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text);
    let signed_id = queued_id(&r);
    c.cmd("QUIT", 221);

    // Unauthenticated, on port 25, for an accepted domain, with a From of
    // the same domain: not signed.
    let mut c = Client::connect(server.smtp());
    c.ehlo("outside.test");
    c.cmd("MAIL FROM:<someone@outside.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(
        b"From: alice@example.test\r\n\
          To: bob@example.test\r\n\
          Subject: not signed\r\n\
          \r\n\
          hi\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);

    let got = sink.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "{got:?}");
    let signed = got
        .iter()
        .find(|m| m.rcpts == ["carol@elsewhere.test"])
        .expect("the submitted message");
    let unsigned = got
        .iter()
        .find(|m| m.rcpts == ["bob@example.test"])
        .expect("the inbound message");

    // The signature is the first header, above our Received.
    let headers = header_section(&signed.data);
    assert!(headers.starts_with("DKIM-Signature:"), "{headers}");
    assert!(
        headers.contains(&format!("with ESMTPSA id {signed_id}")),
        "{headers}"
    );
    let sig_header: String = headers
        .split("\r\n")
        .take_while(|l| !l.starts_with("Received:"))
        .collect::<Vec<_>>()
        .join("");
    assert!(sig_header.contains("c=relaxed/relaxed"), "{sig_header}");

    let resolver = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).unwrap();
    let verifier = MessageAuthenticator(resolver.inner().clone());
    let am = AuthenticatedMessage::parse(&signed.data).expect("authenticated message");
    let results = rt.block_on(verifier.verify_dkim(&am));
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].result(), &DkimResult::Pass, "{results:?}");
    let sig = results[0].signature().expect("signature");
    assert_eq!((sig.d.as_str(), sig.s.as_str()), ("example.test", SELECTOR));
    let h: Vec<String> = sig.h.iter().map(|h| h.to_ascii_lowercase()).collect();
    for name in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ] {
        assert!(h.iter().any(|x| x == name), "{name} not signed: {h:?}");
    }

    let headers = header_section(&unsigned.data);
    assert!(
        !headers.to_ascii_lowercase().contains("dkim-signature"),
        "{headers}"
    );
    drop(server);
    drop(rt);
}

#[test]
fn an_unusable_dkim_key_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("broken.key");
    std::fs::write(&key, "not a key\n").unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"hostname = "mx.example.test"
data_dir = "{d}/data"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["127.0.0.1:1"]
[verify]
enabled = false
[admin]
socket = "{d}/admin.sock"
[[submission.dkim]]
domain = "example.test"
selector = "s1"
key = "{k}"
"#,
            d = dir.path().display(),
            k = key.display()
        ),
    )
    .unwrap();
    let out = Command::new(portcullis_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run portcullis");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&key.display().to_string()), "{stderr}");
    assert!(stderr.contains("submission.dkim"), "{stderr}");
}
