//! One row per section: a bad value is reported with its key, its line
//! and the words of its message; the defaults an empty file gets are the
//! runtime types' `Default`s; `[tlsrpt]` on and off.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

#[track_caller]
fn ok(text: &str) -> Config {
    parse(text, None, "h.example.test").unwrap_or_else(|e| panic!("{e}"))
}

/// `text` is refused with exactly these (key, line, words of the message).
#[track_caller]
fn refused(text: &str, want: &[(&str, usize, &str)]) {
    let issues = match parse(text, Some(Path::new("x.toml")), "h.example.test") {
        Ok(_) => panic!("accepted: {text}"),
        Err(ConfigError::Invalid { issues, .. }) => issues,
        Err(e) => panic!("{e}"),
    };
    let got: Vec<_> = issues
        .iter()
        .map(|i| (i.key.as_str(), i.line.unwrap_or(0)))
        .collect();
    let keys: Vec<_> = want.iter().map(|(k, l, _)| (*k, *l)).collect();
    assert_eq!(got, keys, "{issues:#?}");
    for (issue, (_, _, words)) in issues.iter().zip(want) {
        assert!(issue.message.contains(words), "{issue:?} lacks {words:?}");
    }
}

#[test]
fn hostname_must_be_fully_qualified() {
    refused(
        "hostname = \"mx\"\n",
        &[("hostname", 1, "not a fully qualified host name")],
    );
    assert_eq!(ok("hostname = \"localhost\"\n").hostname, "localhost");
}

/// The missing half of the pair has no line: the error points at `[tls]`.
#[test]
fn tls_certificate_and_key_come_as_a_pair() {
    refused(
        "[tls]\ncertificate = \"/c.pem\"\n",
        &[("tls.private_key", 1, "tls.private_key is not")],
    );
    refused(
        "\n[tls]\nprivate_key = \"/k.pem\"\n",
        &[("tls.certificate", 2, "tls.certificate is not")],
    );
    let c = ok("[tls]\ncertificate = \"/c\"\nprivate_key = \"/k\"\n");
    assert_eq!(c.tls.files, Some(("/c".into(), "/k".into())));
    assert_eq!(ok("").tls.files, None);
}

/// The key names the route's domain; as a domain has dots, the line
/// found for it is the `[routes]` header's.
#[test]
fn routes_name_the_domain_in_the_key() {
    refused(
        "\n[routes]\n\"a.test\" = \"nohop\"\n\"bad..test\" = \"h.test:25\"\n",
        &[
            ("routes.a.test", 2, "is not host:port"),
            ("routes.bad..test", 2, "invalid domain name"),
        ],
    );
}

/// A route may be a table: `tls = "verify"` with `tls_name` defaulting to
/// the next hop's host name; required for an IP next hop; problems name
/// the field.
#[test]
fn routes_as_tables_with_verified_tls() {
    let c = ok(concat!(
        "[routes]\n",
        "\"plain.test\" = \"relay.plain.test:25\"\n",
        "\"table.test\" = { next_hop = \"relay.table.test:2525\" }\n",
        "\"partner.test\" = { next_hop = \"Relay.Partner.test:25\", tls = \"verify\" }\n",
        "\"ip.test\" = { next_hop = \"[::1]:25\", tls = \"verify\", tls_name = \"mx.ip.test\" }\n",
    ));
    let tls_of = |d: &str| {
        let d = portcullis_types::Domain::parse(d).unwrap();
        c.routes.iter().find(|r| r.domain == d).unwrap().tls.clone()
    };
    assert_eq!(tls_of("plain.test"), RouteTls::Opportunistic);
    assert_eq!(tls_of("table.test"), RouteTls::Opportunistic);
    assert_eq!(
        tls_of("partner.test"),
        RouteTls::Verify {
            name: "relay.partner.test".into()
        }
    );
    assert_eq!(
        tls_of("ip.test"),
        RouteTls::Verify {
            name: "mx.ip.test".into()
        }
    );
    refused(
        concat!(
            "[routes]\n",
            "\"a.test\" = { next_hop = \"192.0.2.1:25\", tls = \"verify\" }\n",
            "\"b.test\" = { next_hop = \"h.test:25\", tls = \"strict\" }\n",
            "\"c.test\" = { next_hop = \"h.test:25\", tls_name = \"h.test\" }\n",
            "\"d.test\" = { next_hop = \"h.test:25\", tsl = \"verify\" }\n",
            "\"e.test\" = 25\n",
        ),
        &[
            (
                "routes.a.test.tls_name",
                1,
                "required with tls = \"verify\"",
            ),
            (
                "routes.b.test.tls",
                1,
                "is not \"opportunistic\" or \"verify\"",
            ),
            ("routes.c.test.tls_name", 1, "only with tls = \"verify\""),
            ("routes.d.test", 1, "unknown field `tsl`"),
            ("routes.e.test", 1, "a route is"),
        ],
    );
}

/// `[delivery] dane_only`: domains, each checked.
#[test]
fn delivery_dane_only_domains() {
    let c = ok("[delivery]\ndane_only = [\"Bank.test\", \"pay.test\"]\n");
    let names: Vec<&str> = c.delivery.dane_only.iter().map(|d| d.as_str()).collect();
    assert_eq!(names, ["bank.test", "pay.test"]);
    assert!(ok("").delivery.dane_only.is_empty());
    refused(
        "[delivery]\ndane_only = [\"ok.test\", \"bad..test\"]\n",
        &[("delivery.dane_only[1]", 2, "invalid domain name")],
    );
}

#[test]
fn dns_nameservers_and_timeout() {
    refused(
        "[dns]\nnameservers = [\"192.0.2.1\", \"nowhere\"]\ntimeout = \"5\"\n",
        &[
            ("dns.nameservers[1]", 2, "not an ip:port address"),
            ("dns.timeout", 3, "has no unit"),
        ],
    );
    let d = ok("[dns]\nnameservers = [\"192.0.2.1\"]\ntimeout = \"2s\"\n").dns;
    assert_eq!(d.nameservers, ["192.0.2.1:53".parse().unwrap()]);
    assert_eq!(d.timeout, Duration::from_secs(2));
}

/// `[dns] dnssec`: validate by default; `trust-ad` only with loopback
/// nameservers (none given is the system's: refused too).
#[test]
fn dns_dnssec_modes() {
    refused(
        "[dns]\ndnssec = \"maybe\"\n",
        &[("dns.dnssec", 2, "is not \"off\"")],
    );
    refused(
        "[dns]\nnameservers = [\"127.0.0.1:53\", \"192.0.2.1\"]\ndnssec = \"trust-ad\"\n",
        &[("dns.dnssec", 3, "on loopback")],
    );
    refused(
        "[dns]\ndnssec = \"trust-ad\"\n",
        &[("dns.dnssec", 2, "on loopback")],
    );
    let d =
        ok("[dns]\nnameservers = [\"127.0.0.1:53\", \"[::1]:53\"]\ndnssec = \"trust-ad\"\n").dns;
    assert_eq!(d.dnssec, Dnssec::TrustAd);
    let d = ok("[dns]\ndnssec = \"off\"\ntrust_anchors = [\"/etc/a.key\"]\n").dns;
    assert_eq!(d.dnssec, Dnssec::Off);
    assert_eq!(d.trust_anchors, vec![PathBuf::from("/etc/a.key")]);
    assert_eq!(ok("").dns.dnssec, Dnssec::Validate);
}

#[test]
fn delivery_counts_must_not_be_zero() {
    refused(
        "[delivery]\nmax_concurrent = 0\nper_domain = 0\nconnect_timeout = \"x\"\n",
        &[
            ("delivery.max_concurrent", 2, "greater than zero"),
            ("delivery.per_domain", 3, "greater than zero"),
            ("delivery.connect_timeout", 4, "whole number"),
        ],
    );
    let d = ok("[delivery]\nport = 2525\nper_domain = 2\n").delivery;
    assert_eq!((d.port, d.per_domain, d.max_concurrent), (2525, 2, 50));
}

#[test]
fn queue_delay_warning_comes_before_max_age() {
    refused(
        "[queue]\nmax_age = \"1h\"\ndelay_warning = \"2h\"\n",
        &[("queue.delay_warning", 3, "shorter than max_age")],
    );
    refused(
        "[queue]\nretry = []\n",
        &[("queue.retry", 2, "at least one wait")],
    );
}

#[test]
fn mta_sts_fetch_timeout_and_pins_dir() {
    refused(
        "[mta_sts]\nfetch_timeout = \"1y\"\n",
        &[("mta_sts.fetch_timeout", 2, "unknown unit")],
    );
    let m = ok("[mta_sts]\nhttps_port = 8443\npins_dir = \"/pins\"\n").mta_sts;
    assert_eq!((m.https_port, m.pins_dir), (8443, Some("/pins".into())));
}

#[test]
fn admin_socket_defaults_into_data_dir() {
    refused(
        "[admin]\nmetrics = \"nope\"\n",
        &[("admin.metrics", 2, "not an ip:port address")],
    );
    let c = ok("data_dir = \"/var/lib/p\"\n");
    assert_eq!(c.admin.socket, PathBuf::from("/var/lib/p/admin.sock"));
    assert_eq!(c.admin.metrics, None);
}

#[test]
fn smtp_and_log_choices() {
    refused(
        "[smtp]\nbare_newline = \"keep\"\n[log]\nformat = \"xml\"\n",
        &[
            (
                "smtp.bare_newline",
                2,
                "\"keep\" is not \"reject\" or \"normalize\"",
            ),
            ("log.format", 4, "\"xml\" is not \"text\" or \"json\""),
        ],
    );
    let c = ok(
        "[smtp]\nbare_newline = \"normalize\"\nbanner = \"hi\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
    );
    assert_eq!(c.bare_newline, BareNewline::Normalize);
    assert_eq!(c.banner, "hi");
    assert_eq!(
        (c.log_format, c.log_level.as_str()),
        (LogFormat::Json, "debug")
    );
}

/// `[delivery] tls_required_no`: the three names, `trusted` by default,
/// anything else refused with its line.
#[test]
fn tls_required_no_choices() {
    refused(
        "[delivery]\ntls_required_no = \"everyone\"\n",
        &[(
            "delivery.tls_required_no",
            2,
            "\"everyone\" is not \"trusted\", \"anyone\" or \"never\"",
        )],
    );
    assert_eq!(ok("").delivery.tls_required_no, TlsRequiredNo::Trusted);
    for (name, want) in [
        ("trusted", TlsRequiredNo::Trusted),
        ("anyone", TlsRequiredNo::Anyone),
        ("never", TlsRequiredNo::Never),
    ] {
        let c = ok(&format!("[delivery]\ntls_required_no = \"{name}\"\n"));
        assert_eq!(c.delivery.tls_required_no, want);
    }
    assert!(TlsRequiredNo::Trusted.allows(true, false));
    assert!(TlsRequiredNo::Trusted.allows(false, true));
    assert!(!TlsRequiredNo::Trusted.allows(false, false));
    assert!(TlsRequiredNo::Anyone.allows(false, false));
    assert!(!TlsRequiredNo::Never.allows(true, true));
}

/// The defaults are applied once, in validation, from the runtime types'
/// `Default`s: an empty file gets exactly those.
#[test]
fn an_empty_file_gets_every_sections_default() {
    let c = ok("");
    assert_eq!(c.dns, Dns::default());
    assert_eq!(c.delivery, Delivery::default());
    assert_eq!(c.queue, Queue::default());
    assert_eq!(c.mta_sts, MtaSts::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.verify, Verify::default());
    assert_eq!(c.submission, Submission::default());
    assert_eq!(c.tlsrpt, TlsRpt::default());
    assert_eq!(
        c.queue.retry,
        ["5m", "10m", "20m", "40m", "1h"].map(|t| parse_duration(t).unwrap())
    );
    assert_eq!(c.banner, "ESMTP Portcullis");
    assert_eq!(
        (c.log_format, c.log_level.as_str()),
        (LogFormat::Text, "info")
    );
}

const REPORTER: &str =
    "organization = \"Org\"\ncontact = \"mailto:p@example.test\"\nsubmitter = \"example.test\"\n";

/// `enabled = true`: every key sending takes, present, no `Option` left.
#[test]
fn tlsrpt_on_holds_every_sending_key() {
    let c = ok(&format!(
        "[tlsrpt]\nenabled = true\n{REPORTER}from = \"r@example.test\"\n\
dkim_selector = \"s\"\ndkim_key = \"/k.pem\"\nsend_window = \"1h\"\n"
    ));
    let s = c.tlsrpt.sending().expect("reports are sent");
    assert_eq!(s.reporter.organization, "Org");
    assert_eq!(s.reporter.submitter, "example.test");
    assert_eq!(s.from, "r@example.test");
    assert_eq!(
        (s.dkim_selector.as_str(), s.dkim_key.as_path()),
        ("s", Path::new("/k.pem"))
    );
    assert_eq!(s.send_window, Duration::from_secs(3600));
    assert_eq!(c.tlsrpt.reporter().as_ref(), Some(&s.reporter));
}

/// Off: nothing is sent; the reporter is known only when all three keys
/// naming it are set.
#[test]
fn tlsrpt_off_names_a_reporter_only_when_complete() {
    let c = ok(&format!("[tlsrpt]\n{REPORTER}"));
    assert!(c.tlsrpt.sending().is_none());
    assert_eq!(
        c.tlsrpt.reporter().map(|r| r.contact),
        Some("mailto:p@example.test".into())
    );
    let c = ok("[tlsrpt]\norganization = \"Org\"\n");
    assert!(c.tlsrpt.sending().is_none() && c.tlsrpt.reporter().is_none());
    assert!(ok("").tlsrpt.reporter().is_none());
}

#[test]
fn tlsrpt_on_requires_every_sending_key() {
    refused(
        "[tlsrpt]\nenabled = true\norganization = \"Org\"\nsend_window = \"4x\"\n",
        &[
            ("tlsrpt.contact", 1, "required when tlsrpt.enabled = true"),
            ("tlsrpt.submitter", 1, "required"),
            ("tlsrpt.from", 1, "required"),
            ("tlsrpt.dkim_selector", 1, "required"),
            ("tlsrpt.dkim_key", 1, "required"),
            ("tlsrpt.send_window", 4, "unknown unit"),
        ],
    );
}

/// `[recipients]`: the choices, a file only for an accepted domain and
/// one that exists; the defaults verify nothing.
#[test]
fn recipients_choices_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("example.test");
    std::fs::write(&file, "a@example.test\n").unwrap();
    let base = "[relay]\naccepted_domains = [\"example.test\"]\n";
    refused(
        &format!("{base}[recipients]\nverify = \"rout\"\nunreachable = \"drop\"\n"),
        &[
            (
                "recipients.verify",
                4,
                "\"rout\" is not \"off\" or \"route\"",
            ),
            (
                "recipients.unreachable",
                5,
                "is not \"tempfail\" or \"accept\"",
            ),
        ],
    );
    refused(
        &format!(
            "{base}[recipients]\nfiles = {{ \"other.test\" = {:?} }}\n",
            file.display().to_string()
        ),
        &[(
            "recipients.files.other.test",
            4,
            "not in relay.accepted_domains",
        )],
    );
    refused(
        &format!("{base}[recipients]\nfiles = {{ \"example.test\" = \"/nonexistent/x\" }}\n"),
        &[("recipients.files.example.test", 4, "/nonexistent/x")],
    );
    refused(
        &format!("{base}[recipients]\ncache_negative = \"soon\"\n"),
        &[("recipients.cache_negative", 4, "")],
    );
    let c = ok(&format!(
        "{base}[recipients]\nverify = \"route\"\nunreachable = \"accept\"\nfiles = {{ \"Example.TEST\" = {:?} }}\n",
        file.display().to_string()
    ));
    assert_eq!(c.recipients.verify, RecipientVerify::Route);
    assert_eq!(c.recipients.unreachable, Unreachable::Accept);
    assert_eq!(c.recipients.files.len(), 1);
    assert!(c.recipients.enabled());
    let d = ok("");
    assert_eq!(d.recipients.verify, RecipientVerify::Off);
    assert!(!d.recipients.enabled());
    assert_eq!(d.recipients.cache_positive, Duration::from_secs(3600));
}

/// `[[dnsbl]]`: a zone is required, a domain, named once, weighted not
/// zero; negative weights are allow lists.
#[test]
fn dnsbl_zones_and_weights() {
    refused(
        "[[dnsbl]]\nweight = 2\n[[dnsbl]]\nzone = \"bl..test\"\n[[dnsbl]]\nzone = \"bl.test\"\nweight = 0\n",
        &[
            ("dnsbl[0].zone", 1, "missing"),
            ("dnsbl[1].zone", 4, "invalid domain name"),
            ("dnsbl[2].weight", 7, "must not be zero"),
        ],
    );
    refused(
        "[[dnsbl]]\nzone = \"bl.test\"\n[[dnsbl]]\nzone = \"BL.test\"\n",
        &[("dnsbl[1].zone", 4, "listed twice")],
    );
    let c = ok("[[dnsbl]]\nzone = \"bl.test\"\n[[dnsbl]]\nzone = \"wl.test\"\nweight = -2\n");
    assert_eq!(c.dnsbl.len(), 2);
    assert_eq!(c.dnsbl[0].weight, 1);
    assert!(!c.dnsbl[0].is_allowlist());
    assert!(c.dnsbl[1].is_allowlist());
}

/// `[screen]` and `[greylist]`: a threshold below 1 and a retry window not
/// longer than the delay are refused; defaults: no rate limit, greylisting
/// off.
#[test]
fn screen_threshold_and_greylist_window() {
    refused(
        "[screen]\ndnsbl_threshold = 0\n",
        &[("screen.dnsbl_threshold", 2, "must be 1 or more")],
    );
    refused(
        "[greylist]\ndelay = \"2d\"\nretry_window = \"1d\"\ntrust_after = 0\n",
        &[
            ("greylist.retry_window", 3, "longer than greylist.delay"),
            ("greylist.trust_after", 4, "greater than zero"),
        ],
    );
    let d = ok("");
    assert!(!d.screen.rates_limited());
    assert!(!d.greylist.enabled);
    assert_eq!(d.greylist.delay, Duration::from_secs(300));
    let c = ok("[screen]\nmessages_per_minute = 5\n[greylist]\nenabled = true\ndelay = \"1s\"\n");
    assert!(c.screen.rates_limited());
    assert!(c.greylist.enabled);
    assert_eq!(c.greylist.delay, Duration::from_secs(1));
}

/// `role = "mta-sts"` is a listener like the others (its share of the
/// connections); its own certificate comes as a pair and only on it.
#[test]
fn an_mta_sts_listener_may_have_its_own_certificate() {
    let c = ok(concat!(
        "[[listen]]\naddress = \"127.0.0.1:25\"\n",
        "[[listen]]\naddress = \"127.0.0.1:443\"\nrole = \"mta-sts\"\n",
        "certificate = \"/sts.pem\"\nprivate_key = \"/sts.key\"\n",
    ));
    assert_eq!(c.listeners[1].role, Role::MtaSts);
    assert_eq!(c.listeners[1].role.as_str(), "mta-sts");
    assert!(!Role::MtaSts.is_smtp() && Role::Smtp.is_smtp());
    assert_eq!(
        c.listeners[1].certificate,
        Some(("/sts.pem".into(), "/sts.key".into()))
    );
    assert_eq!(c.listeners[0].certificate, None);
    assert!(c.listeners[1].max_connections > 0);
    refused(
        "[[listen]]\naddress = \"127.0.0.1:443\"\nrole = \"mta-sts\"\ncertificate = \"/c\"\n",
        &[("listen[0].private_key", 1, "private_key is not")],
    );
    refused(
        "[[listen]]\naddress = \"127.0.0.1:25\"\ncertificate = \"/c\"\nprivate_key = \"/k\"\n",
        &[("listen[0].certificate", 3, "only an mta-sts listener")],
    );
    refused(
        "[[listen]]\naddress = \"127.0.0.1:25\"\nrole = \"https\"\n",
        &[("listen[0].role", 3, "mta-sts")],
    );
}

/// `[dmarc_reports]`: off by default; on, each missing key is named, and
/// the keys of `[tlsrpt]` fill the gaps (`from` only with `[tlsrpt]`'s key).
#[test]
fn dmarc_reports_borrow_from_tlsrpt_and_name_what_is_missing() {
    assert_eq!(ok("").dmarc_reports, DmarcReports::Off);
    refused(
        "[dmarc_reports]\nenabled = true\norganization = \"Org\"\n",
        &[
            ("dmarc_reports.contact", 1, "required"),
            ("dmarc_reports.from", 1, "required"),
            ("dmarc_reports.dkim_selector", 1, "required"),
            ("dmarc_reports.dkim_key", 1, "required"),
        ],
    );
    let tlsrpt = "[tlsrpt]\norganization = \"Org\"\ncontact = \"mailto:pm@example.test\"\n\
                  from = \"reports@example.test\"\ndkim_selector = \"s1\"\ndkim_key = \"/k.pem\"\n";
    let c = ok(&format!("{tlsrpt}[dmarc_reports]\nenabled = true\n"));
    let on = c.dmarc_reports.sending().expect("on");
    assert_eq!(on.organization, "Org");
    assert_eq!(on.contact, "pm@example.test");
    assert_eq!(on.from, "reports@example.test");
    assert_eq!(on.dkim_selector, "s1");
    assert_eq!(on.dkim_key, PathBuf::from("/k.pem"));
    assert_eq!(on.send_window, Duration::from_secs(4 * 3600));
    // A key of its own: the From is not borrowed.
    refused(
        &format!(
            "{tlsrpt}[dmarc_reports]\nenabled = true\ndkim_selector = \"d1\"\ndkim_key = \"/d.pem\"\n"
        ),
        &[("dmarc_reports.from", 7, "required")],
    );
    refused(
        &format!("{tlsrpt}[dmarc_reports]\nenabled = true\nfrom = \"nobody\"\n"),
        &[("dmarc_reports.from", 9, "not an address")],
    );
    let c = ok(&format!(
        "{tlsrpt}[dmarc_reports]\nenabled = true\nsend_window = \"10m\"\ncontact = \"dmarc@example.test\"\n"
    ));
    let on = c.dmarc_reports.sending().expect("on");
    assert_eq!(on.send_window, Duration::from_secs(600));
    assert_eq!(on.contact, "dmarc@example.test");
}

/// `[cluster]`: absent is `None`; present, `database` is required, must
/// be a PostgreSQL URL and may not carry a password (named with where it
/// belongs); defaults: node = hostname, verify-full, 8 connections, 2 s.
#[test]
fn cluster_needs_a_database_url_without_a_password() {
    assert_eq!(ok("").cluster, None);
    let c = ok("[cluster]\ndatabase = \"postgresql://p@db.example.test:5432/p\"\n");
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.database, "postgresql://p@db.example.test:5432/p");
    assert_eq!(cl.node, "h.example.test");
    assert_eq!(cl.tls, ClusterTls::VerifyFull);
    assert_eq!(cl.tls_ca, None);
    assert_eq!(cl.password_file, None);
    assert_eq!(cl.pool_size, 8);
    assert_eq!(cl.timeout, Duration::from_secs(2));
    assert_eq!(cl.sync_interval, Duration::from_secs(10));
    let cl = ok("[cluster]\ndatabase = \"postgres://p@127.0.0.1/p\"\nsync_interval = \"250ms\"\n")
        .cluster
        .expect("cluster");
    assert_eq!(cl.sync_interval, Duration::from_millis(250));
    refused(
        "[cluster]\ndatabase = \"postgres://p@127.0.0.1/p\"\nsync_interval = \"50ms\"\n",
        &[("cluster.sync_interval", 3, "between 100ms and 1h")],
    );
    let cl = ok("[cluster]\ndatabase = \"postgres://p@127.0.0.1/p\"\nnode = \"a\"\ntls = \"disable\"\npassword_file = \"/pw\"\ntls_ca = \"/ca.pem\"\npool_size = 3\ntimeout = \"5s\"\n")
        .cluster
        .expect("cluster");
    assert_eq!(
        (cl.node.as_str(), cl.tls, cl.pool_size, cl.timeout),
        ("a", ClusterTls::Disable, 3, Duration::from_secs(5))
    );
    assert_eq!(cl.password_file, Some(PathBuf::from("/pw")));
    assert_eq!(cl.tls_ca, Some(PathBuf::from("/ca.pem")));

    refused(
        "[cluster]\nnode = \"a\"\n",
        &[("cluster.database", 1, "required")],
    );
    refused(
        "[cluster]\ndatabase = \"postgresql://p:secret@db/p\"\n",
        &[(
            "cluster.database",
            2,
            "put it in PGPASSWORD or password_file",
        )],
    );
    refused(
        "[cluster]\ndatabase = \"postgresql://p@db/p?password=secret\"\n",
        &[(
            "cluster.database",
            2,
            "put it in PGPASSWORD or password_file",
        )],
    );
    refused(
        "[cluster]\ndatabase = \"mysql://p@db/p\"\n",
        &[("cluster.database", 2, "not a postgresql://")],
    );
    refused(
        "[cluster]\ndatabase = \"postgresql://p@db/p\"\ntls = \"prefer\"\n",
        &[("cluster.tls", 3, "\"disable\" or \"verify-full\"")],
    );
}
