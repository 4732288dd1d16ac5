//! REQUIRETLS and `TLS-Required: No` (RFC 8689) end to end: the real
//! binary with a certificate from a test CA, a real DNS server and an
//! MTA-STS policy server on loopback, SMTP sinks on 127.0.0.x standing in
//! for the MX of an `enforce` domain.
//!
//! What must hold: REQUIRETLS is offered and accepted only over TLS, and
//! travels on to an MX reached over authenticated TLS that offers it;
//! `TLS-Required: No` from a client the server allows to waive TLS gets
//! past an MX whose certificate does not verify, and the same message is
//! deferred when nobody may waive TLS (`tls_required_no = "never"`).

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::PolicyServer;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const HOSTNAME: &str = "mx.portcullis.test";

/// DNS, the test CA, the MX port, and `sts.test` with an `enforce` policy
/// listing `mx.sts.test` at 127.0.0.`mx_last`.
struct World {
    dns: TestDns,
    pki: TestPki,
    port: u16,
    policy: PolicyServer,
    _rt: tokio::runtime::Runtime,
}

impl World {
    fn new(policy_last: u8, mx_last: u8) -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        let pki = TestPki::new();
        dns.add_mx("sts.test", 10, "mx.sts.test");
        dns.add_a("mx.sts.test", Ipv4Addr::new(127, 0, 0, mx_last));
        dns.add_txt("_mta-sts.sts.test", "v=STSv1; id=1;");
        let ip = Ipv4Addr::new(127, 0, 0, policy_last);
        dns.add_a("mta-sts.sts.test", ip);
        let cert = pki.issue(&["mta-sts.sts.test"]);
        let policy = rt.block_on(PolicyServer::start(ip, &cert));
        policy.set_policy("version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n");
        World {
            dns,
            pki,
            port: free_port(),
            policy,
            _rt: rt,
        }
    }

    /// The MX sink at 127.0.0.`last`, STARTTLS with `tls`.
    fn sink(&self, last: u8, tls: SinkTls, requiretls: bool) -> Sink {
        Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls,
            requiretls,
            ..SinkConfig::default()
        })
    }

    /// The server: a certificate for its name, the test CA trusted,
    /// loopback trusted to relay, `delivery_extra` in `[delivery]`.
    fn server(&self, delivery_extra: &str) -> Portcullis {
        self.server_with(delivery_extra, "")
    }

    /// [`World::server`] with `tail` (more sections) at the end.
    fn server_with(&self, delivery_extra: &str, tail: &str) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.issue(&[HOSTNAME]).write(dir.path(), "mx");
        self.pki.write_ca(dir.path());
        let https_port = self.policy.port();
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "{HOSTNAME}"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
certificate = "{{dir}}/mx.crt"
private_key = "{{dir}}/mx.key"
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[delivery]
port = {}
{delivery_extra}
[mta_sts]
https_port = {https_port}
[admin]
socket = "{{dir}}/admin.sock"
{tail}
"#,
                self.dns.addr(),
                self.port
            ),
        )
    }
}

/// Offered and accepted only after STARTTLS; the message goes on to the
/// enforce domain's MX with REQUIRETLS on its MAIL command.
#[test]
fn requiretls_is_accepted_over_tls_and_passed_on() {
    let w = World::new(60, 61);
    let sink = w.sink(61, SinkTls::Cert(w.pki.issue(&["mx.sts.test"])), true);
    let server = w.server("");

    let mut c = Client::connect(server.smtp());
    let ehlo = c.ehlo("app.internal.test");
    assert!(!ehlo.text.contains("REQUIRETLS"), "{}", ehlo.text);
    let r = c.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", 530);
    assert!(r.text.contains("5.7.10"), "{}", r.text);
    let mut t = c.starttls(w.pki.client_config(), HOSTNAME);
    let ehlo = t.ehlo("app.internal.test");
    assert!(ehlo.text.contains("REQUIRETLS"), "{}", ehlo.text);
    t.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", 250);
    t.cmd("RCPT TO:<bob@sts.test>", 250);
    let r = t.data(b"Subject: secret\r\n\r\nrequiretls body\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    t.cmd("QUIT", 221);

    let got = sink.wait_for(1, WAIT);
    assert!(
        got[0].raw_mail_line.ends_with(" REQUIRETLS"),
        "{}",
        got[0].raw_mail_line
    );
    assert!(String::from_utf8_lossy(&got[0].data).contains("requiretls body"));
}

/// Sends a `TLS-Required: No` message to the enforce domain; its id.
fn send_tls_optional(server: &Portcullis, body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<a@sender.test>", 250);
    c.cmd("RCPT TO:<bob@sts.test>", 250);
    let message = format!("TLS-Required: No\r\nSubject: x\r\n\r\n{body}\r\n");
    let r = c.data(message.as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

/// The MX's certificate is self-signed: a trusted client's `TLS-Required:
/// No` gets the message delivered; with `tls_required_no = "never"` the
/// same message is deferred under the policy.
#[test]
fn tls_required_no_from_a_trusted_client() {
    let w = World::new(62, 63);
    let sink = w.sink(
        63,
        SinkTls::Cert(TestPki::self_signed(&["mx.sts.test"])),
        false,
    );

    let never = w.server("tls_required_no = \"never\"");
    let id = send_tls_optional(&never, "refused body");
    eventually("the message to be deferred", WAIT, || {
        let q = never.cli_json(&["queue", "list", "--json"]);
        let e = q
            .as_array()?
            .iter()
            .find(|e| e["id"] == id.as_str())?
            .clone();
        (e["attempts"].as_u64()? >= 1 && e["recipients"][0]["state"] == "deferred").then_some(())
    });
    assert!(sink.received().is_empty());
    drop(never);

    let trusted = w.server("");
    send_tls_optional(&trusted, "waived body");
    let got = sink.wait_for(1, WAIT);
    assert!(String::from_utf8_lossy(&got[0].data).contains("waived body"));
}

/// Sends a REQUIRETLS message to `to` over STARTTLS; its queue id.
fn send_requiretls(w: &World, server: &Portcullis, to: &str, body: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    let mut t = c.starttls(w.pki.client_config(), HOSTNAME);
    t.ehlo("app.internal.test");
    t.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", 250);
    t.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = t.data(format!("Subject: routed\r\n\r\n{body}\r\n").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    t.cmd("QUIT", 221);
    queued_id(&r)
}

/// A route with `tls = "verify"` is authenticated TLS: a REQUIRETLS
/// message to the routed domain goes to the next hop (named in DNS; its
/// certificate from the trusted test CA names it) with REQUIRETLS on MAIL.
#[test]
fn requiretls_travels_over_a_verified_route() {
    let w = World::new(64, 65);
    w.dns
        .add_a("relay.partner.test", Ipv4Addr::new(127, 0, 0, 66));
    let sink = w.sink(
        66,
        SinkTls::Cert(w.pki.issue(&["relay.partner.test"])),
        true,
    );
    let server = w.server_with(
        "",
        &format!(
            "[routes]\n\"partner.test\" = {{ next_hop = \"relay.partner.test:{}\", tls = \"verify\" }}\n",
            w.port
        ),
    );
    send_requiretls(&w, &server, "bob@partner.test", "routed secret");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "{got:?}");
    assert!(
        got[0].raw_mail_line.ends_with(" REQUIRETLS"),
        "{}",
        got[0].raw_mail_line
    );
    assert!(String::from_utf8_lossy(&got[0].data).contains("routed secret"));
    let explain = String::from_utf8_lossy(&server.cli_ok(&["policy", "explain", "partner.test"]))
        .into_owned();
    assert!(
        explain.contains("tls = verify") && explain.contains("relay.partner.test"),
        "{explain}"
    );
}

/// The same kind of route to a hop (an IP address, `tls_name` given) whose
/// certificate names someone else: deferred, and nothing is sent in clear
/// (no transaction starts at all).
#[test]
fn a_verified_route_to_a_certificate_for_another_name_defers() {
    let w = World::new(67, 68);
    let sink = w.sink(69, SinkTls::Cert(w.pki.issue(&["someone-else.test"])), true);
    let server = w.server_with(
        "",
        &format!(
            "[routes]\n\"partner2.test\" = {{ next_hop = \"127.0.0.69:{}\", tls = \"verify\", tls_name = \"relay.partner2.test\" }}\n",
            w.port
        ),
    );
    let id = send_requiretls(&w, &server, "bob@partner2.test", "must not leak");
    eventually("the message to be deferred", WAIT, || {
        let q = server.cli_json(&["queue", "list", "--json"]);
        let e = q
            .as_array()?
            .iter()
            .find(|e| e["id"] == id.as_str())?
            .clone();
        (e["attempts"].as_u64()? >= 1 && e["recipients"][0]["state"] == "deferred").then_some(())
    });
    assert!(sink.received().is_empty());
    assert!(
        !sink
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "a transaction started over an unverified hop: {:?}",
        sink.commands()
    );
    assert!(sink.connections() >= 1, "the hop was never tried");
}
