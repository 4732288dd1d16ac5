//! `portcullis policy ...` against the real binary: a real DNS server and a
//! real HTTPS policy server (certificate from the test CA, trusted through
//! `[tls] extra_roots`) on loopback, every command through the admin socket.

use portcullis_test_support::dns::TestDns;
use portcullis_test_support::https::{PolicyServer, Reply};
use portcullis_test_support::pki::TestPki;
use portcullis_test_support::server::{Portcullis, background_runtime, portcullis_bin};
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const POLICY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 50);

const GOOD: &str = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.backup.example.test\nmax_age: 86400\n";

/// The DNS server and the policy server, on their own runtime.
struct World {
    _rt: tokio::runtime::Runtime,
    dns: TestDns,
    pki: TestPki,
    https: PolicyServer,
}

impl World {
    /// `example.test` (and `bad.test`) publish `v=STSv1; id=1;` and their
    /// policy hosts resolve to the policy server, which serves [`GOOD`].
    fn new() -> World {
        let rt = background_runtime();
        let pki = TestPki::new();
        let cert = pki.issue(&["mta-sts.example.test", "mta-sts.bad.test"]);
        let (dns, https) = rt.block_on(async {
            (
                TestDns::start().await,
                PolicyServer::start(POLICY_IP, &cert).await,
            )
        });
        for domain in ["example.test", "bad.test"] {
            dns.add_txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1;");
            dns.add_a(&format!("mta-sts.{domain}"), POLICY_IP);
        }
        https.set_policy(GOOD);
        World {
            _rt: rt,
            dns,
            pki,
            https,
        }
    }

    fn server(&self) -> Portcullis {
        let dir = tempfile::tempdir().unwrap();
        self.pki.write_ca(dir.path());
        Portcullis::start_in(
            dir,
            &format!(
                r#"hostname = "mx.portcullis.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["portcullis.test"]
[tls]
extra_roots = ["{{dir}}/ca.pem"]
[dns]
nameservers = ["{}"]
timeout = "2s"
[mta_sts]
https_port = {}
fetch_timeout = "5s"
"#,
                self.dns.addr(),
                self.https.port()
            ),
        )
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(server: &Portcullis, args: &[&str]) -> String {
    String::from_utf8_lossy(&server.cli_ok(args)).into_owned()
}

#[track_caller]
fn fails(server: &Portcullis, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[track_caller]
fn list(server: &Portcullis) -> Vec<serde_json::Value> {
    let text = ok(server, &["policy", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("policy list --json is not JSON ({e}): {text}"));
    v.as_array().expect("a list").clone()
}

/// The list entry of `domain` from `source` (`cache`, `operator pin`).
fn entry<'a>(
    list: &'a [serde_json::Value],
    domain: &str,
    source: &str,
) -> Option<&'a serde_json::Value> {
    list.iter()
        .find(|e| e["domain"] == domain && e["source"] == source)
}

fn mx(e: &serde_json::Value) -> Vec<&str> {
    e["mx"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

/// `policy fetch` caches the policy; `list` and `show` show it; a fetch
/// that fails (HTTP 500) exits non-zero naming the TLS-RPT result type and
/// replaces nothing: the good policy stays cached and in force.
#[test]
fn fetch_list_show_and_a_failed_fetch_keeps_the_cache() {
    let w = World::new();
    let server = w.server();
    assert!(list(&server).is_empty());
    let out = ok(&server, &["policy", "list"]);
    assert!(out.contains("no MTA-STS policies"), "{out}");

    let out = ok(&server, &["policy", "fetch", "example.test"]);
    assert!(
        out.contains("fetched example.test") && out.contains("mode enforce"),
        "{out}"
    );
    let l = list(&server);
    let e = entry(&l, "example.test", "cache").expect("example.test cached");
    assert_eq!(e["mode"], "enforce");
    assert_eq!(e["id"], "1");
    assert_eq!(mx(e), ["mx1.example.test", "*.backup.example.test"]);
    assert_eq!(e["max_age"], 86400);
    assert_eq!(e["in_force"], true);
    assert_eq!(e["pinned"], false);
    assert!(e["last_error"].is_null(), "{e}");
    let fetched = e["fetched_at"].as_u64().unwrap();
    assert_eq!(e["expires_at"].as_u64(), Some(fetched + 86400));

    // The human table: the named columns, aligned, one row per policy.
    let table = ok(&server, &["policy", "list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "DOMAIN",
        "MODE",
        "ID",
        "MX",
        "MAX_AGE",
        "FETCHED",
        "EXPIRES",
        "LAST_ERROR",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("example.test") && row.contains("enforce") && row.contains("1d"),
        "{table}"
    );
    assert_eq!(
        header.find("MODE"),
        row.find("enforce"),
        "columns not aligned:\n{table}"
    );

    let show = ok(&server, &["policy", "show", "example.test"]);
    for want in [
        "mode: enforce",
        "mx: *.backup.example.test",
        "max_age: 86400",
        "source",
        "expires",
    ] {
        assert!(show.contains(want), "{want:?} not in:\n{show}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(&server, &["policy", "show", "example.test", "--json"])).unwrap();
    assert_eq!(v["cached"]["id"], "1");
    assert!(v["pin"].is_null());
    assert!(
        v["cached"]["text"]
            .as_str()
            .unwrap()
            .contains("mode: enforce")
    );

    // A domain whose policy host answers 500: nothing is cached for it.
    w.https.push_reply(Reply::status(500));
    let err = fails(&server, &["policy", "fetch", "bad.test"]);
    assert!(
        err.contains("sts-policy-fetch-error")
            && err.contains("mta-sts.bad.test answered HTTP 500"),
        "{err}"
    );
    assert!(entry(&list(&server), "bad.test", "cache").is_none());

    // The cached domain's host now answers 500: the fetch fails and the good
    // policy stays, with the failure noted.
    w.https.set_reply(Reply::status(500));
    let err = fails(&server, &["policy", "fetch", "example.test"]);
    assert!(
        err.contains("sts-policy-fetch-error") && err.contains("500"),
        "{err}"
    );
    assert!(err.contains("stays in force"), "{err}");
    let l = list(&server);
    let e = entry(&l, "example.test", "cache").expect("still cached");
    assert_eq!(
        (e["mode"].as_str(), e["id"].as_str()),
        (Some("enforce"), Some("1"))
    );
    assert_eq!(mx(e), ["mx1.example.test", "*.backup.example.test"]);
    assert_eq!(e["fetched_at"].as_u64(), Some(fetched));
    assert_eq!(e["in_force"], true);
    assert!(
        e["last_error"].as_str().unwrap_or_default().contains("500"),
        "{e}"
    );

    // An invalid policy body is sts-policy-invalid and replaces nothing.
    w.https.set_policy("version: STSv1\nmode: enforce\n");
    let err = fails(&server, &["policy", "fetch", "example.test"]);
    assert!(err.contains("sts-policy-invalid"), "{err}");
    assert_eq!(
        entry(&list(&server), "example.test", "cache").unwrap()["id"],
        "1"
    );

    // No TXT record: a clear error, no result type invented.
    let err = fails(&server, &["policy", "fetch", "nothing.test"]);
    assert!(err.contains("no MTA-STS policy"), "{err}");
}

/// `policy refresh` re-fetches even with the same id: a changed body is
/// "replaced" with its diff, the same body "unchanged"; `evict` forgets.
#[test]
fn refresh_picks_up_a_changed_body_and_evict_forgets() {
    let w = World::new();
    let server = w.server();
    ok(&server, &["policy", "fetch", "example.test"]);

    let out = ok(&server, &["policy", "refresh", "example.test"]);
    assert!(out.contains("example.test: unchanged"), "{out}");

    w.https
        .set_policy("version: STSv1\nmode: enforce\nmx: mx2.example.test\nmax_age: 86400\n");
    let out = ok(&server, &["policy", "refresh", "example.test"]);
    assert!(out.contains("example.test: replaced"), "{out}");
    assert!(out.contains("+mx: mx2.example.test"), "{out}");
    assert!(out.contains("-mx: mx1.example.test"), "{out}");
    let l = list(&server);
    let e = entry(&l, "example.test", "cache").unwrap();
    assert_eq!(mx(e), ["mx2.example.test"]);
    assert_eq!(e["id"], "1");

    // Every policy at once, as JSON.
    let v: serde_json::Value =
        serde_json::from_str(&ok(&server, &["policy", "refresh", "--json"])).unwrap();
    assert_eq!(v[0]["domain"], "example.test");
    assert_eq!(v[0]["outcome"], "unchanged");

    // A failed refresh of one domain exits non-zero; the policy stays.
    w.https.set_reply(Reply::status(503));
    let err = fails(&server, &["policy", "refresh", "example.test"]);
    assert!(err.contains("sts-policy-fetch-error"), "{err}");
    let out = server.cli(&["policy", "refresh"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("example.test: failed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        mx(entry(&list(&server), "example.test", "cache").unwrap()),
        ["mx2.example.test"]
    );

    let out = ok(&server, &["policy", "evict", "example.test"]);
    assert!(out.contains("example.test"), "{out}");
    assert!(list(&server).is_empty());
    let err = fails(&server, &["policy", "evict", "example.test"]);
    assert!(err.contains("no cached MTA-STS policy"), "{err}");
    let err = fails(&server, &["policy", "show", "example.test"]);
    assert!(err.contains("no cached MTA-STS policy"), "{err}");
}

fn tomorrow() -> String {
    portcullis_types::date::ymd(SystemTime::now() + Duration::from_secs(86_400))
}

/// `policy pin` needs a future `--until`, MX patterns unless mode none, and
/// a reason; the pin is listed with its reason and `unpin` removes it.
#[test]
fn pin_and_unpin() {
    let w = World::new();
    let server = w.server();
    let until = tomorrow();
    let out = ok(
        &server,
        &[
            "policy",
            "pin",
            "other.test",
            "--mode",
            "enforce",
            "--mx",
            "mx.other.test",
            "*.mx.other.test",
            "--until",
            &until,
            "--reason",
            "partner",
        ],
    );
    assert!(
        out.contains("pinned other.test") && out.contains("partner"),
        "{out}"
    );
    let l = list(&server);
    let e = entry(&l, "other.test", "operator pin").expect("pin listed");
    assert_eq!(e["pinned"], true);
    assert_eq!(e["pin_reason"], "partner");
    assert_eq!(e["mode"], "enforce");
    assert_eq!(e["in_force"], true);
    assert_eq!(mx(e), ["mx.other.test", "*.mx.other.test"]);
    let table = ok(&server, &["policy", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("other.test") && l.contains("partner")),
        "{table}"
    );
    let show = ok(&server, &["policy", "show", "other.test"]);
    assert!(
        show.contains("partner") && show.contains("mx: mx.other.test"),
        "{show}"
    );
    assert!(
        server
            .logs()
            .iter()
            .any(|l| l.contains("MTA-STS policy pinned by operator") && l.contains("WARN")),
        "the pin is not logged at warn"
    );

    ok(&server, &["policy", "unpin", "other.test"]);
    assert!(list(&server).is_empty());
    let err = fails(&server, &["policy", "unpin", "other.test"]);
    assert!(err.contains("has no operator pin"), "{err}");

    // Mode none needs no MX: the escape hatch for a broken partner.
    ok(
        &server,
        &[
            "policy",
            "pin",
            "broken.test",
            "--mode",
            "none",
            "--until",
            &until,
            "--reason",
            "their certificate expired",
        ],
    );
    assert_eq!(
        entry(&list(&server), "broken.test", "operator pin").unwrap()["mode"],
        "none"
    );

    for (args, want) in [
        (
            vec!["--mode", "enforce", "--until", &until, "--reason", "r"],
            "--mx",
        ),
        (
            vec![
                "--mode",
                "enforce",
                "--mx",
                "mx.x.test",
                "--until",
                "2020-01-01",
                "--reason",
                "r",
            ],
            "not in the future",
        ),
        (
            vec![
                "--mode",
                "enforce",
                "--mx",
                "mx.x.test",
                "--until",
                "next week",
                "--reason",
                "r",
            ],
            "YYYY-MM-DD",
        ),
        (
            vec![
                "--mode",
                "strict",
                "--mx",
                "mx.x.test",
                "--until",
                &until,
                "--reason",
                "r",
            ],
            "strict",
        ),
        (
            vec![
                "--mode",
                "enforce",
                "--mx",
                "*.*.x.test",
                "--until",
                &until,
                "--reason",
                "r",
            ],
            "*.*.x.test",
        ),
        (
            vec![
                "--mode",
                "enforce",
                "--mx",
                "mx.x.test",
                "--until",
                &until,
                "--reason",
                " ",
            ],
            "reason",
        ),
    ] {
        let mut full = vec!["policy", "pin", "x.test"];
        full.extend(args.iter().copied());
        let err = fails(&server, &full);
        assert!(err.contains(want), "{full:?}: {want:?} not in {err}");
    }
    assert!(entry(&list(&server), "x.test", "operator pin").is_none());
}

/// `policy explain` lists the MX hosts DNS gives now, which ones the policy
/// allows and the TLS each must show.
#[test]
fn explain_shows_which_mx_hosts_the_policy_allows() {
    let w = World::new();
    w.dns.add_mx("example.test", 10, "mx1.example.test");
    w.dns
        .add_a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 61));
    w.dns.add_mx("example.test", 20, "mx.elsewhere.test");
    w.dns
        .add_a("mx.elsewhere.test", Ipv4Addr::new(127, 0, 0, 62));
    let server = w.server();

    // Nothing cached yet: explain discovers the policy.
    let text = ok(&server, &["policy", "explain", "example.test", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["policy"]["mode"], "enforce", "{v}");
    let hosts = v["mx_hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{v}");
    assert_eq!(hosts[0]["name"], "mx1.example.test");
    assert_eq!(hosts[0]["preference"], 10);
    assert_eq!(hosts[0]["addrs"][0], "127.0.0.61");
    assert_eq!(hosts[0]["allowed_by_policy"], true);
    assert_eq!(
        hosts[0]["tls_required"],
        "PKIX-valid TLS 1.2+ for mx1.example.test"
    );
    assert_eq!(hosts[1]["name"], "mx.elsewhere.test");
    assert_eq!(hosts[1]["allowed_by_policy"], false);
    // The plan: the decision delivery makes, host by host.
    assert_eq!(v["plan"]["decision"], "try", "{v}");
    assert_eq!(v["plan"]["mta_sts"], "enforce", "{v}");
    assert_eq!(hosts[0]["source"], "mx");
    assert_eq!(hosts[0]["matched_pattern"], "mx1.example.test");
    assert_eq!(hosts[0]["contacted"], true);
    assert_eq!(hosts[1]["contacted"], false);
    assert!(hosts[1]["matched_pattern"].is_null(), "{v}");
    assert_eq!(
        entry(&list(&server), "example.test", "cache").unwrap()["id"],
        "1"
    );

    // Cached now: no further fetch.
    let before = w.https.requests();
    let out = ok(&server, &["policy", "explain", "example.test"]);
    assert_eq!(
        w.https.requests(),
        before,
        "explain re-fetched a cached policy"
    );
    let row = |host: &str| {
        out.lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("{host} not in:\n{out}"))
            .to_owned()
    };
    assert!(row("mx1.example.test").contains("yes"), "{out}");
    assert!(
        row("mx1.example.test").contains("PKIX-valid TLS 1.2+"),
        "{out}"
    );
    assert!(row("mx.elsewhere.test").contains("no"), "{out}");
    assert!(out.contains("enforce"), "{out}");
    assert!(
        out.contains("delivery (MTA-STS enforce): tries mx1.example.test\n"),
        "{out}"
    );
    assert!(
        row("mx.elsewhere.test").contains("not listed in the policy"),
        "{out}"
    );

    // A domain without a policy: every host, opportunistic.
    w.dns.add_mx("plain.test", 10, "mx.plain.test");
    w.dns.add_a("mx.plain.test", Ipv4Addr::new(127, 0, 0, 63));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&server, &["policy", "explain", "plain.test", "--json"])).unwrap();
    assert!(v["policy"].is_null(), "{v}");
    assert_eq!(v["mx_hosts"][0]["allowed_by_policy"], true);
    assert_eq!(v["mx_hosts"][0]["tls_required"], "opportunistic");
    assert_eq!(v["plan"]["mta_sts"], "none", "{v}");
    assert!(
        v["note"].as_str().unwrap().contains("no MTA-STS policy"),
        "{v}"
    );

    // A domain that does not exist: the plan says delivery bounces, as
    // delivery would decide.
    let v: serde_json::Value = serde_json::from_str(&ok(
        &server,
        &["policy", "explain", "nowhere.test", "--json"],
    ))
    .unwrap();
    assert_eq!(v["plan"]["decision"], "fail", "{v}");
    assert_eq!(v["plan"]["status"], "5.1.2", "{v}");
    assert_eq!(v["mx_hosts"], serde_json::json!([]), "{v}");
    let out = ok(&server, &["policy", "explain", "nowhere.test"]);
    assert!(
        out.contains("delivery (MTA-STS none): fails with 5.1.2"),
        "{out}"
    );
}

/// Bad domain arguments are refused with a clear message before anything
/// is sent, and with no server running every policy command says so.
#[test]
fn bad_arguments_and_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[admin]\nsocket = \"{}\"\n",
            dir.path().join("data").display(),
            socket.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| -> Output {
        Command::new(portcullis_bin())
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .expect("run portcullis")
    };
    for bad in ["bad..domain", "exa mple.test", "-", "a_b!.test"] {
        for cmd in ["show", "fetch", "evict", "explain", "unpin", "refresh"] {
            let out = Command::new(portcullis_bin())
                .args(["policy", cmd, "--config"])
                .arg(&config)
                .args(["--", bad])
                .current_dir(dir.path())
                .output()
                .expect("run portcullis");
            assert!(!out.status.success(), "policy {cmd} {bad:?} succeeded");
            let err = stderr(&out);
            assert!(
                err.contains("not a domain name") && err.contains(bad),
                "policy {cmd} {bad:?}: {err}"
            );
        }
    }
    for args in [
        &["policy", "list"][..],
        &["policy", "list", "--json"][..],
        &["policy", "show", "example.test"][..],
        &["policy", "fetch", "example.test"][..],
        &["policy", "refresh"][..],
        &["policy", "explain", "example.test"][..],
        &["policy", "unpin", "example.test"][..],
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?} succeeded with no server");
        let err = stderr(&out);
        assert!(
            err.contains("no portcullis server is running"),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).trim().is_empty(), "{args:?}: {}", stdout(&out));
    }
}
