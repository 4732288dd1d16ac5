//! DANE end to end (RFC 7672): the real binary validating DNSSEC
//! (`[dns] dnssec = "validate"`) from the trust anchor of the test DNS
//! server's own signed root, signed test zones with MX, A and TLSA
//! records, and SMTP sinks with certificates made in the test. One test
//! per row: a matching DANE-EE record delivers over TLS even to a
//! self-signed certificate for another name (names and dates do not count
//! for DANE-EE); a record that does not match defers, sends nothing and is
//! counted as a `tlsa` failure; a bogus TLSA answer defers; an unsigned
//! zone is delivered opportunistically; DANE governs even when the domain
//! also has an MTA-STS policy that would refuse the host.

use portcullis_test_support::dns::{FailMode, TestDns};
use portcullis_test_support::https::PolicyServer;
use portcullis_test_support::pki::{Issued, TestPki};
use portcullis_test_support::server::{Portcullis, background_runtime, eventually, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_test_support::smtp::{Client, queued_id};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The DNS server (on its own runtime) and the port every MX listens on.
struct World {
    rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    port: u16,
}

impl World {
    fn new() -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        World {
            rt,
            dns,
            pki: TestPki::new(),
            port: free_port(),
        }
    }

    /// `domain` (signed when `signed`) has the MX `mx1.<domain>` at
    /// 127.0.0.`last`, where a sink presents `cert` (self-signed, for
    /// another name: only DANE-EE can authenticate it).
    fn domain(&self, domain: &str, signed: bool, last: u8) -> (Sink, Vec<u8>) {
        let (sink, cert) = self.domain_with_cert(domain, signed, last);
        (sink, cert.cert_der().to_vec())
    }

    /// [`World::domain`], returning the sink's certificate and key.
    fn domain_with_cert(&self, domain: &str, signed: bool, last: u8) -> (Sink, Issued) {
        if signed {
            self.dns.sign_zone(domain);
        }
        let host = format!("mx1.{domain}");
        self.dns.add_mx(domain, 10, &host);
        self.dns.add_a(&host, Ipv4Addr::new(127, 0, 0, last));
        let cert = TestPki::self_signed(&["not-the-mx.example"]);
        let sink = Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls: SinkTls::Cert(cert.clone()),
            ..SinkConfig::default()
        });
        (sink, cert)
    }

    /// `domain` (signed) has the MX `mx1.<domain>` at 127.0.0.`last`, where
    /// a sink presents a certificate for that name from the test CA (which
    /// is not among the server's trust anchors: only DANE-TA makes it
    /// good). Returns the sink and the CA's certificate.
    fn domain_with_ca_cert(&self, domain: &str, last: u8) -> (Sink, Vec<u8>) {
        self.domain_certified_by(domain, last, &TestPki::new())
    }

    /// Like [`World::domain_with_ca_cert`] with the certificate from `ca`.
    fn domain_certified_by(&self, domain: &str, last: u8, ca: &TestPki) -> (Sink, Vec<u8>) {
        self.dns.sign_zone(domain);
        let host = format!("mx1.{domain}");
        self.dns.add_mx(domain, 10, &host);
        self.dns.add_a(&host, Ipv4Addr::new(127, 0, 0, last));
        let sink = Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls: SinkTls::Cert(ca.issue(&[&host])),
            ..SinkConfig::default()
        });
        (sink, ca.ca_der().to_vec())
    }

    /// A TLSA record at `_<port>._tcp.mx1.<domain>`.
    fn tlsa(&self, domain: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) {
        let name = format!("_{}._tcp.mx1.{domain}", self.port);
        self.dns.add_tlsa(&name, usage, selector, matching, data);
    }

    /// An MTA-STS `enforce` policy for `domain` listing its MX, served
    /// from 127.0.0.`last` with a certificate from the test CA.
    fn enforce(&self, domain: &str, last: u8) -> PolicyServer {
        self.dns
            .add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;");
        let host = format!("mta-sts.{domain}");
        let ip = Ipv4Addr::new(127, 0, 0, last);
        self.dns.add_a(&host, ip);
        let server = self
            .rt
            .block_on(PolicyServer::start(ip, &self.pki.issue(&[&host])));
        server.set_policy(&format!(
            "version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmax_age: 86400\n"
        ));
        server
    }

    /// The server validating DNSSEC from the test root's anchor (and
    /// trusting the test CA for MTA-STS policy fetches).
    fn server(&self, extra: &str) -> Portcullis {
        self.server_with(VALIDATE, "", extra)
    }

    /// The server with `dnssec` as the end of its `[dns]` section and
    /// `delivery` in its `[delivery]` section.
    fn server_with(&self, dnssec: &str, delivery: &str, extra: &str) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.key"), self.dns.trust_anchor()).unwrap();
        self.pki.write_ca(dir.path());
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["example.test"]
trusted_networks = ["127.0.0.0/8"]
[dns]
nameservers = ["{}"]
timeout = "2s"
{dnssec}
[delivery]
port = {}
{delivery}
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
{extra}
"#,
                self.dns.addr(),
                self.port
            ),
        )
    }
}

/// `[dns]` validating from the test root's anchor (written by
/// [`World::server_with`]; `{dir}` is the server's directory).
const VALIDATE: &str = "dnssec = \"validate\"\ntrust_anchors = [\"{dir}/root.key\"]";

/// TLS-RPT named but not sending: `tlsrpt show` builds the report of what
/// was recorded.
const TLSRPT: &str = "[tlsrpt]\nenabled = false\norganization = \"Portcullis Test Org\"\ncontact = \"mailto:postmaster@example.test\"\nsubmitter = \"example.test\"\n";

/// The SHA-256 of `data` (TLSA matching type 1).
fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// What TLS-RPT recorded for `domain` under its `tlsa` policy: the
/// policy's strings and the failures' result types (from `tlsrpt show`);
/// `None` while there is no such policy.
fn tlsa_report(server: &Portcullis, domain: &str) -> Option<(Vec<String>, Vec<String>)> {
    let out = server.cli(&["tlsrpt", "show", domain, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let policy = report["policies"]
        .as_array()?
        .iter()
        .find(|p| p["policy"]["policy-type"] == "tlsa")?
        .clone();
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let strings = texts(&policy["policy"]["policy-string"]);
    let types = policy["failure-details"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["result-type"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some((strings, types))
}

/// Sends one message; returns its queue id.
#[track_caller]
fn send(server: &Portcullis, to: &str) -> String {
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<app@example.test>", 250);
    c.cmd(&format!("RCPT TO:<{to}>"), 250);
    let r = c.data(b"Subject: dane\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    queued_id(&r)
}

/// Waits until `id` was attempted and its recipient deferred.
#[track_caller]
fn wait_deferred(server: &Portcullis, id: &str) -> serde_json::Value {
    eventually(&format!("{id} deferred"), WAIT, || {
        let q = server.cli_json(&["queue", "list", "--json"]);
        let e = q.as_array()?.iter().find(|e| e["id"] == id)?.clone();
        (e["attempts"].as_u64()? >= 1 && e["recipients"][0]["state"] == "deferred").then_some(e)
    })
}

/// The MX's certificate is self-signed for another name: the domain's
/// MTA-STS `enforce` policy alone would refuse it (PKIX), so only DANE,
/// which governs a host with usable TLSA records (RFC 8461 §2), lets the
/// message through.
#[test]
fn a_matching_dane_ee_record_delivers_over_tls_even_where_mta_sts_would_refuse() {
    let w = World::new();
    let (sink, der) = w.domain("dane.test", true, 31);
    w.tlsa("dane.test", 3, 0, 0, &der);
    let policy = w.enforce("dane.test", 41);
    let server = w.server(&format!("[mta_sts]\nhttps_port = {}\n", policy.port()));
    send(&server, "bob@dane.test");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "delivered in clear: {got:?}");
    // The plan says why: the host is governed by DANE.
    let explain =
        String::from_utf8_lossy(&server.cli_ok(&["policy", "explain", "dane.test"])).into_owned();
    assert!(explain.to_ascii_lowercase().contains("dane"), "{explain}");
}

/// Control for the row above: the same host without TLSA records, under
/// the same kind of policy, is refused (so the row above proves DANE).
#[test]
fn without_tlsa_the_enforce_policy_refuses_that_certificate() {
    let w = World::new();
    let (sink, _) = w.domain("stsonly.test", true, 35);
    let policy = w.enforce("stsonly.test", 42);
    let server = w.server(&format!("[mta_sts]\nhttps_port = {}\n", policy.port()));
    let id = send(&server, "bob@stsonly.test");
    wait_deferred(&server, &id);
    assert!(sink.received().is_empty());
}

#[test]
fn a_tlsa_record_that_does_not_match_defers_and_sends_nothing() {
    let w = World::new();
    let (sink, _) = w.domain("mismatch.test", true, 32);
    w.tlsa("mismatch.test", 3, 0, 1, &[0x42; 32]);
    let server = w.server("");
    let id = send(&server, "bob@mismatch.test");
    wait_deferred(&server, &id);
    assert!(sink.received().is_empty());
    assert!(
        !sink
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "a transaction started without DANE authentication: {:?}",
        sink.commands()
    );
    let page = server.metrics_page();
    assert!(
        page.lines()
            .any(|l| l.starts_with("portcullis_tls_policy_failures_total") && l.contains("tlsa")),
        "{page}"
    );
}

/// `TLS-Required: No` from a trusted client waives the recipient's DANE
/// records as it waives MTA-STS (RFC 8689 §5): the same mismatching record
/// as above, and the message is delivered, opportunistically over TLS.
#[test]
fn tls_required_no_from_a_trusted_client_is_delivered_despite_a_tlsa_mismatch() {
    let w = World::new();
    let (sink, _) = w.domain("waived.test", true, 36);
    w.tlsa("waived.test", 3, 0, 1, &[0x42; 32]);
    let server = w.server("");
    let mut c = Client::connect(server.smtp());
    c.ehlo("app.internal.test");
    c.cmd("MAIL FROM:<app@example.test>", 250);
    c.cmd("RCPT TO:<bob@waived.test>", 250);
    let r = c.data(b"TLS-Required: No\r\nSubject: waived\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221);
    let got = sink.wait_for(1, WAIT);
    assert!(
        got[0].tls.is_some(),
        "opportunistic TLS was not even tried: {got:?}"
    );
    // Control: without the field the same record defers (the row above).
}

#[test]
fn a_bogus_tlsa_answer_defers_the_host() {
    let w = World::new();
    let (sink, der) = w.domain("bogus.test", true, 33);
    w.tlsa("bogus.test", 3, 0, 0, &der);
    w.dns
        .break_signature(&format!("_{}._tcp.mx1.bogus.test", w.port));
    let server = w.server("");
    let id = send(&server, "bob@bogus.test");
    wait_deferred(&server, &id);
    assert!(sink.received().is_empty());
}

#[test]
fn an_unsigned_zone_is_delivered_opportunistically() {
    let w = World::new();
    // The test root is signed, so the unsigned zone is provably insecure.
    w.dns.sign_zone("signed-elsewhere.test");
    let (sink, _) = w.domain("plain.test", false, 34);
    let server = w.server("");
    send(&server, "bob@plain.test");
    let got = sink.wait_for(1, WAIT);
    assert!(
        got[0].tls.is_some(),
        "opportunistic TLS was offered: {got:?}"
    );
}

/// DANE-TA (2 0 0: the trust anchor's certificate in full): the MX's chain
/// from a CA nobody else trusts is good because the zone names that CA,
/// and the certificate names the MX host.
#[test]
fn a_dane_ta_record_authenticates_a_chain_from_the_designated_ca() {
    let w = World::new();
    let (sink, ca) = w.domain_with_ca_cert("ta.test", 36);
    w.tlsa("ta.test", 2, 0, 0, &ca);
    let server = w.server("");
    send(&server, "bob@ta.test");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some());
}

/// DANE-TA 2 0 1: the anchor named by the SHA-256 of its certificate,
/// which the MX sends after its own (RFC 7672 §3.1.2: a TA given by digest
/// must be in the chain the server presents).
#[test]
fn a_dane_ta_digest_record_authenticates_a_chain_that_carries_the_ca() {
    let w = World::new();
    let host = "mx1.tadigest.test";
    w.dns.sign_zone("tadigest.test");
    w.dns.add_mx("tadigest.test", 10, host);
    w.dns.add_a(host, Ipv4Addr::new(127, 0, 0, 39));
    let ca = TestPki::new();
    let sink = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 39], w.port)),
        tls: SinkTls::Cert(ca.issue(&[host]).with_chain(&ca.ca_pem())),
        ..SinkConfig::default()
    });
    let digest = ring::digest::digest(&ring::digest::SHA256, &ca.ca_der());
    w.tlsa("tadigest.test", 2, 0, 1, digest.as_ref());
    let server = w.server("");
    send(&server, "bob@tadigest.test");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some());
}

/// The same chain under a DANE-TA record for another CA: deferred.
#[test]
fn a_dane_ta_record_for_another_ca_defers() {
    let w = World::new();
    let (sink, _) = w.domain_with_ca_cert("otherta.test", 37);
    let other = TestPki::new();
    w.tlsa("otherta.test", 2, 0, 0, &other.ca_der());
    let server = w.server("");
    let id = send(&server, "bob@otherta.test");
    wait_deferred(&server, &id);
    assert!(sink.received().is_empty());
}

/// A TLSA lookup that fails (SERVFAIL) defers the host even under an
/// MTA-STS policy it would pass (its certificate is from the CA the server
/// trusts): never a fallback to MTA-STS (or clear text) for a host whose
/// DANE status is unknown. Once the lookup answers "no records", the same
/// host is delivered to under MTA-STS.
#[test]
fn a_tlsa_servfail_defers_without_falling_back_to_mta_sts() {
    let w = World::new();
    let (sink, _) = w.domain_certified_by("servfail.test", 38, &w.pki);
    let tlsa_name = format!("_{}._tcp.mx1.servfail.test", w.port);
    // The name exists (without TLSA): once it answers, its "no TLSA" is
    // provable (the test zone cannot prove a name away).
    w.dns.add_txt(&tlsa_name, "not a TLSA record");
    w.dns.fail(&tlsa_name, FailMode::ServFail);
    let policy = w.enforce("servfail.test", 43);
    let server = w.server(&format!("[mta_sts]\nhttps_port = {}\n", policy.port()));
    let id = send(&server, "bob@servfail.test");
    wait_deferred(&server, &id);
    assert!(sink.received().is_empty());
    w.dns.clear_fail(&tlsa_name);
    server.cli_ok(&["queue", "retry", &id]);
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some());
}

/// DANE-TA by public key (2 1 1: the SHA-256 of the CA's
/// SubjectPublicKeyInfo): a chain that carries that CA is authenticated;
/// the same record in front of a chain from another CA defers, nothing
/// sent.
#[test]
fn a_dane_ta_spki_record_authenticates_only_a_chain_from_that_ca() {
    let w = World::new();
    let ca = TestPki::new();
    let other = TestPki::new();
    let spki_digest = sha256(&ca.ca_spki_der());
    let mut sinks = Vec::new();
    for (domain, last, issuer) in [("taspki.test", 55, &ca), ("taother.test", 56, &other)] {
        let host = format!("mx1.{domain}");
        w.dns.sign_zone(domain);
        w.dns.add_mx(domain, 10, &host);
        w.dns.add_a(&host, Ipv4Addr::new(127, 0, 0, last));
        sinks.push(Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], w.port)),
            tls: SinkTls::Cert(issuer.issue(&[&host]).with_chain(&issuer.ca_pem())),
            ..SinkConfig::default()
        }));
        w.tlsa(domain, 2, 1, 1, &spki_digest);
    }
    let server = w.server("");
    send(&server, "bob@taspki.test");
    let got = sinks[0].wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "{got:?}");
    let id = send(&server, "bob@taother.test");
    wait_deferred(&server, &id);
    assert!(sinks[1].received().is_empty());
    assert!(
        !sinks[1]
            .commands()
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "{:?}",
        sinks[1].commands()
    );
}

/// `[dns] dnssec = "trust-ad"`: the zones are not signed; the loopback
/// "resolver" vouches with AD for the names of `vouched.test` and
/// `vouchedbad.test` only (and only when asked with AD or DO, as real
/// resolvers do). A DANE-EE `3 1 1` record that matches delivers; one that
/// does not defers; the same mismatching record without AD is not DANE
/// at all (opportunistic delivery), so the AD bit is what decided.
#[test]
fn trust_ad_gives_dane_where_the_resolver_sets_ad() {
    let w = World::new();
    let mut sinks = Vec::new();
    for (domain, last, vouched) in [
        ("vouched.test", 57, true),
        ("vouchedbad.test", 58, true),
        ("unvouched.test", 59, false),
    ] {
        let (sink, cert) = w.domain_with_cert(domain, false, last);
        let host = format!("mx1.{domain}");
        let tlsa_name = format!("_{}._tcp.{host}", w.port);
        if vouched {
            for name in [domain, &host, &tlsa_name] {
                w.dns.set_authentic(name);
            }
        }
        let data = match domain {
            "vouched.test" => sha256(&cert.spki_der()),
            _ => vec![0x42; 32],
        };
        w.tlsa(domain, 3, 1, 1, &data);
        sinks.push(sink);
    }
    let server = w.server_with("dnssec = \"trust-ad\"", "", "");

    send(&server, "bob@vouched.test");
    let got = sinks[0].wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "{got:?}");
    let explain = String::from_utf8_lossy(&server.cli_ok(&["policy", "explain", "vouched.test"]))
        .into_owned();
    assert!(explain.contains("DANE"), "{explain}");

    let id = send(&server, "bob@vouchedbad.test");
    wait_deferred(&server, &id);
    assert!(sinks[1].received().is_empty());

    send(&server, "bob@unvouched.test");
    let got = sinks[2].wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "opportunistic TLS: {got:?}");
}

/// `[delivery] dane_only`: an MX of an unsigned zone is never contacted
/// (not even in clear or opportunistically), the message waits, and
/// TLS-RPT records `dane-required`; the signed domain with a matching
/// record in the same list is delivered.
#[test]
fn dane_only_defers_hosts_without_dane_and_delivers_with_it() {
    let w = World::new();
    // The test root is signed, so the unsigned zone is provably insecure.
    w.dns.sign_zone("signed-elsewhere.test");
    let (plain_sink, _) = w.domain("plainbank.test", false, 60);
    let (dane_sink, der) = w.domain("danebank.test", true, 61);
    w.tlsa("danebank.test", 3, 0, 0, &der);
    let server = w.server_with(
        VALIDATE,
        "dane_only = [\"plainbank.test\", \"danebank.test\"]",
        TLSRPT,
    );

    let id = send(&server, "bob@plainbank.test");
    wait_deferred(&server, &id);
    assert_eq!(
        plain_sink.connections(),
        0,
        "a host without DANE was contacted"
    );
    eventually("the dane-required result", WAIT, || {
        let (_, types) = tlsa_report(&server, "plainbank.test")?;
        (types == ["dane-required"]).then_some(())
    });
    let explain = String::from_utf8_lossy(&server.cli_ok(&["policy", "explain", "plainbank.test"]))
        .into_owned();
    assert!(explain.contains("dane_only"), "{explain}");

    send(&server, "bob@danebank.test");
    let got = dane_sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "{got:?}");
}

/// A secure TLSA RRset with only unusable records (PKIX-EE `1 1 1`, RFC
/// 7672 §3.1.3): delivered as without DANE (§2.2), and recorded for
/// TLS-RPT as `tlsa-invalid` under a `tlsa` policy whose policy-string is
/// the record, so the domain's owner learns it does nothing.
#[test]
fn unusable_tlsa_records_are_delivered_and_reported_as_tlsa_invalid() {
    let w = World::new();
    let (sink, cert) = w.domain_with_cert("pkixee.test", true, 62);
    let digest = sha256(&cert.spki_der());
    w.tlsa("pkixee.test", 1, 1, 1, &digest);
    let server = w.server_with(VALIDATE, "", TLSRPT);
    send(&server, "bob@pkixee.test");
    let got = sink.wait_for(1, WAIT);
    assert!(got[0].tls.is_some(), "{got:?}");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    eventually("the tlsa-invalid result", WAIT, || {
        let (strings, types) = tlsa_report(&server, "pkixee.test")?;
        (strings == [format!("1 1 1 {hex}")] && types == ["tlsa-invalid"]).then_some(())
    });
}

/// The start-up DNSSEC self-check: validating through a server that signs
/// (its root trusted), the server says at start that the root's keys
/// validate; through one that answers without DNSSEC records (a resolver
/// that strips them) under the same anchor, it says, once, that nothing
/// will validate and which `[dns]` keys to change, and keeps running.
#[test]
fn the_start_up_self_check_names_a_resolver_path_that_strips_dnssec() {
    let w = World::new();
    w.dns.sign_zone("signed.test");
    let good = w.server("");
    good.wait_for_log("the root's keys validate through [dns] nameservers", WAIT);

    let plain = World::new();
    let anchor = w.dns.trust_anchor();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.key"), anchor).unwrap();
    let stripped = Portcullis::start_in(
        dir,
        &format!(
            r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{}"]
timeout = "2s"
{VALIDATE}
[admin]
socket = "{{dir}}/admin.sock"
"#,
            plain.dns.addr()
        ),
    );
    let line = stripped.wait_for_log("the root's keys do not validate", WAIT);
    assert!(line.contains("dnssec"), "the remedy names the key: {line}");
    assert!(
        !stripped
            .logs()
            .iter()
            .any(|l| l.contains("root's keys validate through")),
        "no success claimed"
    );
}
