//! `portcullis policy own`, end to end: the real binary checks what we
//! publish for our own domain `example.test` from the outside in, through
//! the real test DNS server, an HTTPS policy server with a certificate
//! from the test CA standing in for `mta-sts.example.test`, and SMTP sinks
//! offering STARTTLS with test-CA certificates standing in for the MX
//! hosts.
//!
//! The correct setup passes every check (exit 0); each deliberately wrong
//! setup fails with the exact gap named, exit non-zero, and where DNS is
//! the fix, the exact record to publish. The expected policy and its id
//! are computed here from RFC 8461 §3.2's format and the documented id
//! rule (the first 20 hex digits of the SHA-256 of the policy text), not
//! by the code under test.

use portcullis_test_support::dns::{FailMode, TestDns};
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::{Issued, TestPki};
use portcullis_test_support::server::{Portcullis, background_runtime, free_port};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;
use std::time::{Duration, SystemTime};

const DOMAIN: &str = "example.test";
const MX1: &str = "mx1.example.test";
const RUA: &str = "mailto:tlsrpt@example.test";
const DAY: Duration = Duration::from_secs(86_400);

/// The policy `[publish] mx = ["mx1.example.test"]` (enforce, 7 days)
/// makes.
fn our_policy() -> String {
    policy_for(&[MX1])
}

/// An enforce policy for 7 days listing `mx`.
fn policy_for(mx: &[&str]) -> String {
    let mut text = "version: STSv1\nmode: enforce\n".to_owned();
    for m in mx {
        text.push_str(&format!("mx: {m}\n"));
    }
    text + "max_age: 604800\n"
}

/// Its id: the first 20 hex digits of the SHA-256 of the text.
fn our_id() -> String {
    id_of(&our_policy())
}

fn id_of(policy: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, policy.as_bytes());
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sts_line() -> String {
    format!("_mta-sts.{DOMAIN}. IN TXT \"v=STSv1; id={}\"", our_id())
}

fn tlsrpt_line() -> String {
    format!("_smtp._tls.{DOMAIN}. IN TXT \"v=TLSRPTv1; rua={RUA}\"")
}

/// A correctly published domain: DNS, the policy host, one MX, and the
/// server checking it.
struct World {
    /// Runs the DNS and policy servers; kept for their lifetime.
    _rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    /// The port every MX sink listens on (`[delivery] port`).
    port: u16,
    policy_host: PolicyServer,
    sinks: Vec<Sink>,
    server: Option<Portcullis>,
    /// `[publish] mx` as written in the config; `None`: left out (the
    /// policy lists the MX names DNS gives).
    publish_mx: Option<String>,
}

impl World {
    /// Everything published as it should be; `base` picks the 127.0.0.x
    /// block this test's hosts use.
    fn correct(base: u8) -> World {
        World::with_mx_cert(base, |pki| pki.issue(&[MX1]))
    }

    /// Everything published as it should be, but the MX `mx1` presents
    /// the certificate `cert` makes.
    fn with_mx_cert(base: u8, cert: impl FnOnce(&TestPki) -> Issued) -> World {
        let rt = background_runtime();
        let dns = rt.block_on(TestDns::start());
        let pki = TestPki::new();
        let ip = Ipv4Addr::new(127, 0, 0, base);
        let host = format!("mta-sts.{DOMAIN}");
        dns.add_a(&host, ip);
        let policy_host = rt.block_on(PolicyServer::start(ip, &pki.issue(&[&host])));
        policy_host.set_policy(&our_policy());
        dns.add_txt(
            &format!("_mta-sts.{DOMAIN}"),
            &format!("v=STSv1; id={}", our_id()),
        );
        dns.add_txt(
            &format!("_smtp._tls.{DOMAIN}"),
            &format!("v=TLSRPTv1; rua={RUA}"),
        );
        let mut world = World {
            _rt: rt,
            dns,
            pki,
            port: free_port(),
            policy_host,
            sinks: Vec::new(),
            server: None,
            publish_mx: Some(format!("mx = [\"{MX1}\"]")),
        };
        let cert = cert(&world.pki);
        world.mx(10, MX1, base + 1, cert);
        world
    }

    /// `host` is an MX of the domain (preference `pref`) at 127.0.0.`last`,
    /// where a sink offers STARTTLS with `cert`.
    fn mx(&mut self, pref: u16, host: &str, last: u8, cert: Issued) {
        self.dns.add_mx(DOMAIN, pref, host);
        self.dns.add_a(host, Ipv4Addr::new(127, 0, 0, last));
        self.sinks.push(Sink::start(SinkConfig {
            bind: SocketAddr::from(([127, 0, 0, last], self.port)),
            tls: SinkTls::Cert(cert),
            hostname: host.to_owned(),
            ..SinkConfig::default()
        }));
    }

    /// Starts the server (once): the test CA as an extra trust anchor,
    /// `[publish]` for our domain.
    fn server(&mut self) -> &Portcullis {
        if self.server.is_none() {
            let dir = tempfile::tempdir().unwrap();
            self.pki.write_ca(dir.path());
            let config = format!(
                r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[relay]
accepted_domains = ["{DOMAIN}"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[delivery]
port = {}
[mta_sts]
https_port = {}
[publish]
mode = "enforce"
{}
tlsrpt_rua = ["{RUA}"]
[admin]
socket = "{{dir}}/admin.sock"
"#,
                self.dns.addr(),
                self.port,
                self.policy_host.port(),
                self.publish_mx.as_deref().unwrap_or_default(),
            );
            self.server = Some(Portcullis::start_in(dir, &config));
        }
        self.server.as_ref().unwrap()
    }

    /// `policy own --json`: the status and the parsed answer.
    fn own_json(&mut self) -> (bool, Value) {
        let out = self.server().cli(&["policy", "own", "--json"]);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), json)
    }

    /// `policy own` in the human layout.
    fn own_text(&mut self) -> Output {
        self.server().cli(&["policy", "own"])
    }

    /// The one domain's report, expecting a failed command.
    #[track_caller]
    fn failing(&mut self) -> Value {
        let (ok, json) = self.own_json();
        assert!(!ok, "policy own must fail: {json:#}");
        json["domains"][0].clone()
    }
}

/// The check named `name` (and `host`), which must be there.
#[track_caller]
fn check<'a>(domain: &'a Value, name: &str, host: Option<&str>) -> &'a Value {
    domain["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name && host.is_none_or(|h| c["host"] == h))
        .unwrap_or_else(|| panic!("no check {name} {host:?} in {domain:#}"))
}

/// The checks that did not pass, as `name` or `name host`.
fn failed(domain: &Value) -> Vec<String> {
    domain["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| match c["host"].as_str() {
            Some(h) => format!("{} {h}", c["name"].as_str().unwrap()),
            None => c["name"].as_str().unwrap().to_owned(),
        })
        .collect()
}

#[track_caller]
fn assert_detail(c: &Value, words: &[&str]) {
    let detail = c["detail"].as_str().unwrap();
    for w in words {
        assert!(detail.contains(w), "{w:?} not in {detail:?}");
    }
}

fn records(domain: &Value) -> Vec<String> {
    domain["records_to_publish"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

/// Everything published right: exit 0, every check ok, nothing to
/// publish; and the JSON has the documented shape.
#[test]
fn a_correct_setup_passes_every_check() {
    let mut w = World::correct(60);
    let (ok, json) = w.own_json();
    assert!(ok, "{json:#}");
    let domains = json["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 1);
    let d = &domains[0];
    assert_eq!(d["domain"], DOMAIN);
    let names: Vec<&str> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "mta-sts record",
            "policy served",
            "mx covered",
            "mx certificate",
            "tls-rpt record"
        ]
    );
    for c in d["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c:#}");
        assert_eq!(c["outcome"], "ok", "{c:#}");
        assert!(c["detail"].is_string(), "{c:#}");
    }
    assert_detail(check(d, "mta-sts record", None), &[&our_id()]);
    assert_detail(
        check(d, "mx certificate", Some(MX1)),
        &[MX1, "expires in 365 days"],
    );
    assert_eq!(records(d), Vec::<String>::new());
    assert!(d["policy_file"].is_null(), "{d:#}");
    // The policy was fetched over HTTPS, as a sender fetches it.
    assert!(w.policy_host.requests() >= 1);

    let out = w.own_text();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CHECK") && text.contains("STATUS"), "{text}");
    assert!(text.contains("every check passed"), "{text}");
    assert!(!text.contains("GAP"), "{text}");
}

/// An MX host that `[publish] mx` does not cover is named.
#[test]
fn an_mx_not_covered_by_the_policy_is_named() {
    let mut w = World::correct(64);
    let cert = w.pki.issue(&["mx2.example.test"]);
    w.mx(20, "mx2.example.test", 66, cert);
    let d = w.failing();
    assert_eq!(failed(&d), ["mx covered"]);
    assert_detail(
        check(&d, "mx covered", None),
        &["MX host mx2.example.test not covered", "[publish] mx"],
    );
    let text = String::from_utf8_lossy(&w.own_text().stdout).into_owned();
    assert!(text.contains("1 gap: example.test: mx covered"), "{text}");
}

/// A `_mta-sts` id that is not our policy's: the record with ours.
#[test]
fn a_txt_id_differing_from_our_policy_is_a_gap() {
    let mut w = World::correct(68);
    let name = format!("_mta-sts.{DOMAIN}");
    w.dns.remove(&name, "TXT");
    w.dns.add_txt(&name, "v=STSv1; id=20240101old");
    let d = w.failing();
    assert_eq!(failed(&d), ["mta-sts record"]);
    assert_detail(
        check(&d, "mta-sts record", None),
        &["id=20240101old", &format!("id={}", our_id())],
    );
    assert_eq!(records(&d), [sts_line()]);
}

/// No `_mta-sts` record: the gap, and the exact record printed.
#[test]
fn a_missing_mta_sts_record_prints_the_record_to_publish() {
    let mut w = World::correct(72);
    w.dns.remove(&format!("_mta-sts.{DOMAIN}"), "TXT");
    let d = w.failing();
    assert_eq!(failed(&d), ["mta-sts record"]);
    assert_detail(check(&d, "mta-sts record", None), &["missing"]);
    assert_eq!(records(&d), [sts_line()]);
    let out = w.own_text();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DNS records to publish:"), "{text}");
    assert!(text.contains(&format!("  {}", sts_line())), "{text}");
    assert!(text.contains("GAP"), "{text}");
}

/// No `_smtp._tls` record: the gap and the record with `tlsrpt_rua`.
#[test]
fn a_missing_tlsrpt_record_is_a_gap() {
    let mut w = World::correct(76);
    w.dns.remove(&format!("_smtp._tls.{DOMAIN}"), "TXT");
    let d = w.failing();
    assert_eq!(failed(&d), ["tls-rpt record"]);
    assert_detail(
        check(&d, "tls-rpt record", None),
        &["missing", "_smtp._tls.example.test"],
    );
    assert_eq!(records(&d), [tlsrpt_line()]);
}

/// A temporary DNS failure is reported as such, not as a missing record,
/// and nothing is offered to publish for it.
#[test]
fn a_temporary_dns_failure_is_not_a_missing_record() {
    let mut w = World::correct(80);
    w.dns
        .fail(&format!("_smtp._tls.{DOMAIN}"), FailMode::ServFail);
    let d = w.failing();
    let c = check(&d, "tls-rpt record", None);
    assert_eq!(c["outcome"], "temporary", "{c:#}");
    assert_detail(c, &["temporary DNS failure"]);
    assert!(!c["detail"].as_str().unwrap().contains("missing"), "{c:#}");
    assert_eq!(records(&d), Vec::<String>::new());
    let text = String::from_utf8_lossy(&w.own_text().stdout).into_owned();
    assert!(text.contains("TEMPFAIL"), "{text}");
}

/// An MX certificate that expires in 5 days: host, reason, days left.
#[test]
fn an_mx_certificate_expiring_in_5_days_is_a_gap() {
    let now = SystemTime::now();
    let mut w = World::with_mx_cert(84, |pki| {
        pki.issue_with_validity(&[MX1], now - DAY, now + 5 * DAY)
    });
    let d = w.failing();
    assert_eq!(failed(&d), [format!("mx certificate {MX1}")]);
    assert_detail(
        check(&d, "mx certificate", Some(MX1)),
        &[MX1, "expires within 14 days", "expires in 5 days"],
    );
}

/// An MX certificate for another name: host and reason.
#[test]
fn an_mx_certificate_for_another_name_is_a_gap() {
    let mut w = World::with_mx_cert(88, |pki| pki.issue(&["other.example.test"]));
    let d = w.failing();
    assert_eq!(failed(&d), [format!("mx certificate {MX1}")]);
    assert_detail(
        check(&d, "mx certificate", Some(MX1)),
        &[
            "certificate-host-mismatch",
            "the certificate is for other.example.test, not mx1.example.test",
        ],
    );
}

/// The policy host serves another policy: the differences named, the
/// diff, and the policy file it must serve.
#[test]
fn a_served_policy_differing_from_ours_is_a_gap() {
    let mut w = World::correct(92);
    w.policy_host.set_reply(Reply::policy(
        "version: STSv1\nmode: testing\nmx: mx1.example.test\nmax_age: 86400\n",
    ));
    let d = w.failing();
    assert_eq!(failed(&d), ["policy served"]);
    let c = check(&d, "policy served", None);
    assert_detail(
        c,
        &[
            "mode testing instead of enforce",
            "max_age 86400 instead of 604800",
        ],
    );
    let diff = c["diff"].as_str().unwrap();
    assert!(
        diff.contains("-mode: testing") && diff.contains("+mode: enforce"),
        "{diff}"
    );
    assert_eq!(d["policy_file"], our_policy());
    let text = String::from_utf8_lossy(&w.own_text().stdout).into_owned();
    assert!(
        text.contains("https://mta-sts.example.test/.well-known/mta-sts.txt must serve"),
        "{text}"
    );
    assert!(text.contains("  mode: enforce"), "{text}");
}

/// A domain that is not ours is refused, naming ours.
#[test]
fn a_domain_that_is_not_ours_is_an_error() {
    let mut w = World::correct(96);
    let out = w.server().cli(&["policy", "own", "other.test"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.test is not one of our domains"),
        "{err}"
    );
    assert!(err.contains(DOMAIN), "{err}");
    let named = w.server().cli(&["policy", "own", DOMAIN, "--json"]);
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stdout)
    );
}

/// Without `[publish] mx` the policy we serve lists the MX names DNS
/// gives: a new MX host is covered at once, and it is the `_mta-sts` id
/// (and the served policy) that must follow, with the new id printed.
#[test]
fn without_publish_mx_the_policy_follows_the_mx_records() {
    let mut w = World::correct(100);
    w.publish_mx = None;
    let cert = w.pki.issue(&["mx2.example.test"]);
    w.mx(20, "mx2.example.test", 102, cert);
    let d = w.failing();
    assert_eq!(failed(&d), ["mta-sts record", "policy served"]);
    assert!(check(&d, "mx covered", None)["ok"] == true, "{d:#}");
    let both = policy_for(&[MX1, "mx2.example.test"]);
    assert_eq!(
        records(&d),
        [format!(
            "_mta-sts.{DOMAIN}. IN TXT \"v=STSv1; id={}\"",
            id_of(&both)
        )]
    );
    assert_eq!(d["policy_file"], both);
    assert_detail(
        check(&d, "policy served", None),
        &["mx mx2.example.test missing"],
    );
}
