//! Publishing for our own domain with nothing but Portcullis: its own
//! `mta-sts` listener serves the policy, and `portcullis policy own`
//! fetches it back from the outside in (the name through the test DNS,
//! the HTTPS certificate from the test CA, the port as any sender would
//! use it) and finds nothing to fix. Then the operator moves to `testing`
//! with `portcullis reload` without publishing the new id: the listener
//! serves the new policy at once and `policy own` names the one gap and
//! prints the exact record to publish.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};

const DOMAIN: &str = "loop.test";
const MX: &str = "mx1.loop.test";
const RUA: &str = "mailto:tlsrpt@loop.test";

/// The first 20 hex digits of the SHA-256 of `policy` (the documented id
/// rule, computed here, not by the code under test).
fn id_of(policy: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, policy.as_bytes());
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy(mode: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {MX}\nmax_age: 604800\n")
}

fn config(dir: &str, dns: SocketAddr, smtp_port: u16, https_port: u16) -> String {
    format!(
        r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[[listen]]
address = "127.0.0.61:{https_port}"
role = "mta-sts"
certificate = "{dir}/mta-sts.crt"
private_key = "{dir}/mta-sts.key"
[tls]
extra_roots = ["{dir}/ca.pem"]
[relay]
accepted_domains = ["{DOMAIN}"]
[dns]
nameservers = ["{dns}"]
timeout = "2s"
dnssec = "off"
[delivery]
port = {smtp_port}
[mta_sts]
https_port = {https_port}
[publish]
mode = "enforce"
mx = ["{MX}"]
tlsrpt_rua = ["{RUA}"]
[admin]
socket = "{dir}/admin.sock"
"#
    )
}

fn own(server: &Portcullis) -> (bool, Value) {
    let out = server.cli(&["policy", "own", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json["domains"][0].clone())
}

fn gaps(domain: &Value) -> Vec<String> {
    domain["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn our_own_listener_serves_what_policy_own_checks_and_a_change_is_named() {
    let rt = background_runtime();
    let dns = rt.block_on(TestDns::start());
    let pki = TestPki::new();
    let (smtp_port, https_port) = (free_port(), free_port());
    // What a correct deployment publishes in DNS.
    dns.add_a(&format!("mta-sts.{DOMAIN}"), Ipv4Addr::new(127, 0, 0, 61));
    dns.add_txt(
        &format!("_mta-sts.{DOMAIN}"),
        &format!("v=STSv1; id={}", id_of(&policy("enforce"))),
    );
    dns.add_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!("v=TLSRPTv1; rua={RUA}"),
    );
    dns.add_mx(DOMAIN, 10, MX);
    dns.add_a(MX, Ipv4Addr::new(127, 0, 0, 62));
    let _mx = Sink::start(SinkConfig {
        bind: SocketAddr::from(([127, 0, 0, 62], smtp_port)),
        tls: SinkTls::Cert(pki.issue(&[MX])),
        hostname: MX.to_owned(),
        ..SinkConfig::default()
    });

    let dir = tempfile::tempdir().unwrap();
    pki.write_ca(dir.path());
    pki.issue(&[&format!("mta-sts.{DOMAIN}")])
        .write(dir.path(), "mta-sts");
    let path = dir.path().display().to_string();
    let server = Portcullis::start_in(dir, &config(&path, dns.addr(), smtp_port, https_port));

    let (ok, domain) = own(&server);
    assert!(ok, "a correct setup: {domain:#}");
    assert_eq!(gaps(&domain), Vec::<String>::new(), "{domain:#}");
    // The policy really came over HTTPS from our own listener.
    assert!(
        !server.log_events("mta-sts request").is_empty(),
        "policy own did not fetch from the mta-sts listener"
    );

    // The operator switches to testing and forgets the TXT record.
    server.edit_config(|text| text.replace("mode = \"enforce\"", "mode = \"testing\""));
    server.cli_ok(&["reload"]);
    let (ok, domain) = own(&server);
    assert!(!ok, "the id is stale: {domain:#}");
    assert_eq!(gaps(&domain), ["mta-sts record"], "{domain:#}");
    let want = format!(
        "_mta-sts.{DOMAIN}. IN TXT \"v=STSv1; id={}\"",
        id_of(&policy("testing"))
    );
    let records: Vec<&str> = domain["records_to_publish"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(records.contains(&want.as_str()), "{records:?}");
}
