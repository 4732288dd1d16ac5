//! The verifier against a real DNS server on loopback (STYLE 8): the
//! production resolver, mail-auth on top of it, one row per result. Keys are
//! made here and messages signed here.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use portcullis_auth::{AuthResult, Disposition, Envelope, Verifier};
use portcullis_config::{SpfFail, Verify};
use portcullis_dns::HickoryResolver;
use portcullis_test_support::dns::{FailMode, TestDns};
use portcullis_types::ReversePath;

const LOCALHOST: &str = "127.0.0.1";

async fn setup(config: Verify) -> (TestDns, Verifier) {
    let dns = TestDns::start().await;
    let resolver =
        HickoryResolver::new(&[dns.addr()], Duration::from_millis(200)).expect("resolver");
    let verifier = Verifier::new(&resolver, "mx.example.test", config).expect("verifier");
    (dns, verifier)
}

fn message(from: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <bob@example.test>\r\nSubject: test\r\n\
         Date: Mon, 23 Nov 2026 07:00:00 +0000\r\nMessage-ID: <1@test>\r\n\r\nHello.\r\n"
    )
}

struct Key(Vec<u8>);

impl Key {
    fn new() -> Key {
        Key(Ed25519Key::generate_pkcs8().expect("key"))
    }

    fn record(&self) -> String {
        let public = Ed25519Key::from_pkcs8_der(&self.0)
            .expect("key")
            .public_key();
        format!("v=DKIM1; k=ed25519; p={}", B64.encode(public))
    }

    fn sign(&self, message: &str, domain: &str) -> String {
        let signature = DkimSigner::from_key(Ed25519Key::from_pkcs8_der(&self.0).expect("key"))
            .domain(domain)
            .selector("s")
            .headers(["From", "To", "Subject"])
            .sign(message.as_bytes())
            .expect("sign");
        format!("{}{message}", signature.to_header())
    }
}

async fn verify(v: &Verifier, mail_from: &str, message: &str) -> portcullis_auth::Verdict {
    let sender = ReversePath::parse(mail_from).expect("sender");
    let envelope = Envelope {
        client_ip: LOCALHOST.parse::<IpAddr>().expect("ip"),
        helo: "client.test",
        sender: &sender,
    };
    v.verify(&envelope, std::sync::Arc::new(message.as_bytes().to_vec()))
        .await
}

/// RFC 7208 §2.6: every SPF result, each from its own domain.
#[tokio::test]
async fn spf_results() {
    let (dns, v) = setup(Verify::default()).await;
    let rows: [(&str, Option<&str>, Option<FailMode>, AuthResult); 8] = [
        (
            "pass.test",
            Some("v=spf1 ip4:127.0.0.0/8 -all"),
            None,
            AuthResult::Pass,
        ),
        (
            "fail.test",
            Some("v=spf1 ip4:192.0.2.1 -all"),
            None,
            AuthResult::Fail,
        ),
        ("soft.test", Some("v=spf1 ~all"), None, AuthResult::SoftFail),
        (
            "neutral.test",
            Some("v=spf1 ?all"),
            None,
            AuthResult::Neutral,
        ),
        ("none.test", None, None, AuthResult::None),
        (
            "servfail.test",
            None,
            Some(FailMode::ServFail),
            AuthResult::TempError,
        ),
        (
            "timeout.test",
            None,
            Some(FailMode::Timeout),
            AuthResult::TempError,
        ),
        (
            "perm.test",
            Some("v=spf1 redirect=missing.perm.test"),
            None,
            AuthResult::PermError,
        ),
    ];
    for (domain, record, fail, _) in &rows {
        if let Some(r) = record {
            dns.add_txt(domain, r);
        }
        if let Some(mode) = fail {
            dns.fail(domain, *mode);
        }
    }
    for (domain, _, _, expected) in rows {
        let from = format!("alice@{domain}");
        let verdict = verify(&v, &from, &message(&from)).await;
        assert_eq!(verdict.results.spf.result, expected, "{domain}");
        // SPF alone decides nothing by default, temperror included (no
        // DMARC record cares).
        assert_eq!(verdict.disposition, Disposition::Accept, "{domain}");
        assert!(
            verdict
                .headers
                .contains(&format!("\tspf={expected} smtp.mailfrom=alice@{domain};")),
            "{}",
            verdict.headers
        );
    }
}

#[tokio::test]
async fn dkim_and_dmarc() {
    let (dns, v) = setup(Verify::default()).await;
    let key = Key::new();
    dns.add_txt("s._domainkey.signed.test", &key.record());
    dns.add_txt("_dmarc.signed.test", "v=DMARC1; p=reject");
    let signed = key.sign(&message("alice@signed.test"), "signed.test");

    let ok = verify(&v, "bounce@esp.test", &signed).await;
    assert_eq!(ok.results.dkim.len(), 1);
    assert_eq!(ok.results.dkim[0].result, AuthResult::Pass);
    assert_eq!(ok.results.dkim[0].algorithm, Some("ed25519-sha256"));
    assert_eq!(ok.results.dmarc.result, AuthResult::Pass);
    assert_eq!(ok.disposition, Disposition::Accept);

    let tampered = signed.replace("Hello.", "Hello!");
    let bad = verify(&v, "bounce@esp.test", &tampered).await;
    assert_eq!(bad.results.dkim[0].result, AuthResult::Fail);
    assert_eq!(bad.results.dmarc.result, AuthResult::Fail);
    let reply = bad.disposition.reply().expect("refused").to_string();
    assert!(
        reply.starts_with("550 5.7.1 ") && reply.contains("DMARC"),
        "{reply}"
    );
}

/// A resolver that never answers: the verification is bounded by
/// `[verify] timeout` and ends in 451, not in a verdict.
#[tokio::test]
async fn timeout_gives_451() {
    let config = Verify {
        timeout: Duration::from_millis(300),
        ..Verify::default()
    };
    let (dns, v) = setup(config).await;
    dns.fail("slow.test", FailMode::Timeout);
    dns.fail("_dmarc.slow.test", FailMode::Timeout);
    let started = Instant::now();
    let verdict = verify(&v, "alice@slow.test", &message("alice@slow.test")).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(verdict.results.timed_out);
    let reply = verdict.disposition.reply().expect("deferred");
    assert_eq!(reply.code, 451);
    assert_eq!(reply.enhanced, Some((4, 7, 0)));
}

#[tokio::test]
async fn spf_check_at_mail_from() {
    let config = Verify {
        spf_fail: SpfFail::Reject,
        ..Verify::default()
    };
    let (dns, v) = setup(config).await;
    dns.add_txt("fail.test", "v=spf1 -all");
    dns.fail("down.test", FailMode::ServFail);
    for (sender, code) in [
        ("a@fail.test", Some(550)),
        ("a@down.test", Some(451)),
        ("a@none.test", None),
    ] {
        let sender = ReversePath::parse(sender).expect("sender");
        let envelope = Envelope {
            client_ip: LOCALHOST.parse().expect("ip"),
            helo: "client.test",
            sender: &sender,
        };
        let verdict = v.check_sender(&envelope).await;
        assert_eq!(verdict.reply.map(|r| r.code), code, "{sender}");
    }
}

/// The `bh=` of a real signature of `message` (the body hash does not
/// depend on the key or the signed fields).
fn body_hash(key: &Key, message: &str) -> String {
    let signed = key.sign(message, "any.test");
    let start = signed.find("bh=").expect("bh=") + 3;
    let end = start + signed[start..].find(';').expect("end of bh=");
    signed[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// A DKIM-Signature by `domain` (selector `s`) whose `h=` lists `names`
/// fields (From, then made-up names), with a correct `bh=` and a bogus
/// `b=`, folded so that no line is long: the crafted signature of the
/// issue, which made mail-auth compare names `names`² / 2 times.
fn flood_signature(key: &Key, message: &str, domain: &str, names: usize) -> String {
    let mut h = String::from("From");
    for i in 1..names {
        h.push(':');
        if i % 50 == 0 {
            h.push_str("\r\n\t");
        }
        h.push_str(&format!("X-N{i}"));
    }
    format!(
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d={domain}; s=s;\r\n\
         \th={h};\r\n\tbh={}; b=AAAA\r\n",
        body_hash(key, message)
    )
}

/// Signs `message` for `domain` (selector `s`) listing `names` fields in
/// `h=`: From, To, Subject and then made-up names (signed as absent).
fn sign_listing(key: &Key, message: &str, domain: &str, names: usize) -> String {
    let mut fields: Vec<String> = ["From", "To", "Subject"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    fields.extend((fields.len()..names).map(|i| format!("X-N{i}")));
    let signature = DkimSigner::from_key(Ed25519Key::from_pkcs8_der(&key.0).expect("key"))
        .domain(domain)
        .selector("s")
        .headers(fields)
        .sign(message.as_bytes())
        .expect("sign");
    signature.to_header()
}

/// Regression test: a signature whose `h=` lists 100,000 names (correct
/// `bh=`, bogus `b=`, a key in DNS) was verified, a quadratic loop of
/// seconds of CPU. Now it is not verified: `dkim=policy` with the reason,
/// in the results and in Authentication-Results.
#[tokio::test]
async fn flooded_signature_is_policy() {
    let (dns, v) = setup(Verify::default()).await;
    let key = Key::new();
    dns.add_txt("s._domainkey.flood.test", &key.record());
    let plain = message("alice@flood.test");
    let crafted = format!(
        "{}{plain}",
        flood_signature(&key, &plain, "flood.test", 100_000)
    );
    let verdict = verify(&v, "alice@flood.test", &crafted).await;
    assert_eq!(verdict.results.dkim.len(), 1, "{:?}", verdict.results.dkim);
    let dkim = &verdict.results.dkim[0];
    assert_eq!(
        (dkim.result, dkim.reason, dkim.domain.as_str()),
        (
            AuthResult::Policy,
            Some("too many signed header fields"),
            "flood.test"
        )
    );
    assert!(
        verdict.headers.contains(
            "\tdkim=policy (too many signed header fields) header.d=flood.test header.s=s"
        ),
        "{}",
        verdict.headers
    );
    assert_eq!(verdict.disposition, Disposition::Accept);
}

/// `dkim_max_signed_headers` is inclusive: a real signature listing 64
/// fields passes, one listing 65 is not verified.
#[tokio::test]
async fn signed_headers_bound() {
    let (dns, v) = setup(Verify::default()).await;
    let key = Key::new();
    dns.add_txt("s._domainkey.h64.test", &key.record());
    dns.add_txt("s._domainkey.h65.test", &key.record());
    let plain = message("alice@h64.test");
    let at = format!("{}{plain}", sign_listing(&key, &plain, "h64.test", 64));
    let over = format!("{}{plain}", sign_listing(&key, &plain, "h65.test", 65));
    let r = verify(&v, "alice@h64.test", &at).await.results;
    assert_eq!(r.dkim[0].result, AuthResult::Pass, "{:?}", r.dkim);
    let r = verify(&v, "alice@h64.test", &over).await.results;
    assert_eq!(
        (r.dkim[0].result, r.dkim[0].reason),
        (AuthResult::Policy, Some("too many signed header fields"))
    );
}

/// `dkim_max_signatures` + 1 valid signatures: five verified, one recorded
/// as `dkim=policy (too many signatures)`. The author domain's signature
/// is at the bottom and is still among the verified, so DMARC passes under
/// `p=reject`.
#[tokio::test]
async fn one_signature_over_the_count() {
    let (dns, v) = setup(Verify::default()).await;
    let key = Key::new();
    let author = "author.test";
    dns.add_txt(&format!("s._domainkey.{author}"), &key.record());
    dns.add_txt(&format!("_dmarc.{author}"), "v=DMARC1; p=reject");
    let plain = message(&format!("alice@{author}"));
    let mut signed = key.sign(&plain, author);
    for i in 0..6 {
        let d = format!("relay{i}.test");
        dns.add_txt(&format!("s._domainkey.{d}"), &key.record());
        signed = key.sign(&signed, &d);
    }
    let verdict = verify(&v, "bounce@esp.test", &signed).await;
    let r = &verdict.results;
    let summary: Vec<(AuthResult, &str)> = r
        .dkim
        .iter()
        .map(|d| (d.result, d.domain.as_str()))
        .collect();
    assert_eq!(r.dkim.len(), 7, "{summary:?}");
    assert_eq!(
        r.dkim
            .iter()
            .filter(|d| d.result == AuthResult::Pass)
            .count(),
        5,
        "{summary:?}"
    );
    let skipped: Vec<_> = r
        .dkim
        .iter()
        .filter(|d| d.result == AuthResult::Policy)
        .map(|d| (d.domain.as_str(), d.reason))
        .collect();
    // Newest on top: relay5 … relay0, then the author's. The two oldest
    // relays make way for the author's signature.
    assert_eq!(
        skipped,
        vec![
            ("relay1.test", Some("too many signatures")),
            ("relay0.test", Some("too many signatures")),
        ]
    );
    assert_eq!(r.dmarc.result, AuthResult::Pass);
    assert_eq!(verdict.disposition, Disposition::Accept);
}

/// `max_header_fields` + 1 header fields: a valid signature is not
/// verified (`dkim=policy (too many header fields)`); at the bound it
/// passes.
#[tokio::test]
async fn header_fields_bound() {
    let config = Verify {
        max_header_fields: 20,
        ..Verify::default()
    };
    let (dns, v) = setup(config).await;
    let key = Key::new();
    dns.add_txt("s._domainkey.fields.test", &key.record());
    // DKIM-Signature, the filler, and the five fields of `message`.
    let with_filler = |n: usize| {
        let filler: String = (0..n).map(|i| format!("X-Filler: {i}\r\n")).collect();
        let m = format!("{filler}{}", message("alice@fields.test"));
        key.sign(&m, "fields.test")
    };
    let r = verify(&v, "alice@fields.test", &with_filler(14))
        .await
        .results;
    assert_eq!(r.dkim[0].result, AuthResult::Pass, "{:?}", r.dkim);
    let r = verify(&v, "alice@fields.test", &with_filler(15))
        .await
        .results;
    assert_eq!(
        (r.dkim[0].result, r.dkim[0].reason),
        (AuthResult::Policy, Some("too many header fields"))
    );
}
