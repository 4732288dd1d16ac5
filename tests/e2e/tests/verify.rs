//! Sender verification end to end: the real binary, a real DNS server on
//! loopback (`[dns] nameservers`), messages DKIM-signed and ARC-sealed in
//! the test with keys made in the test, a raw SMTP client on 127.0.0.1.
//! One row per behaviour of SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC
//! 7489), ARC (RFC 8617) and Authentication-Results (RFC 8601); every row
//! uses its own domains, so the resolver's cache cannot mix rows.

use std::net::Ipv4Addr;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};
use portcullis_test_support::dns::{FailMode, TestDns};
use portcullis_test_support::keys::{dkim_rsa_key, pkcs8_der};
use portcullis_test_support::server::Portcullis;
use portcullis_test_support::smtp::{Client, queued_id};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use portcullis_test_support::dns::BackgroundDns as Dns;

/// Signing keys made for this test run.
struct Keys {
    ed25519: Vec<u8>,
    ed25519_public: String,
    rsa: Vec<u8>,
    rsa_public: String,
}

impl Keys {
    fn make(dir: &Path) -> Keys {
        let ed25519 = Ed25519Key::generate_pkcs8().expect("ed25519 key");
        let ed25519_public = B64.encode(
            Ed25519Key::from_pkcs8_der(&ed25519)
                .expect("ed25519 key")
                .public_key(),
        );
        let (rsa, rsa_public) = rsa_key(dir);
        Keys {
            ed25519,
            ed25519_public,
            rsa,
            rsa_public,
        }
    }

    /// The DKIM key record for the Ed25519 key (RFC 8463).
    fn ed25519_record(&self) -> String {
        format!("v=DKIM1; k=ed25519; p={}", self.ed25519_public)
    }

    /// The DKIM key record for the RSA key.
    fn rsa_record(&self) -> String {
        format!("v=DKIM1; k=rsa; p={}", self.rsa_public)
    }

    fn ed25519(&self) -> Ed25519Key {
        Ed25519Key::from_pkcs8_der(&self.ed25519).expect("ed25519 key")
    }

    fn rsa(&self) -> RsaKey<Sha256> {
        RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.rsa.clone(),
        )))
        .expect("rsa key")
    }
}

/// A 2048-bit RSA key from `openssl` (ring cannot generate RSA keys): the
/// PKCS#8 DER and the SubjectPublicKeyInfo in base64.
fn rsa_key(dir: &Path) -> (Vec<u8>, String) {
    let pem = dir.join("rsa.pem");
    let public = dkim_rsa_key(&pem);
    (pkcs8_der(&pem), public)
}

/// A plain message from `from`.
fn message(from: &str, subject: &str) -> String {
    format!(
        "From: Sender <{from}>\r\n\
         To: <bob@example.test>\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 07:00:00 +0000\r\n\
         Message-ID: <{}@test>\r\n\
         \r\n\
         Hello Bob,\r\n\
         this is {subject}.\r\n",
        subject.replace(' ', "-")
    )
}

const SIGNED: [&str; 5] = ["From", "To", "Subject", "Date", "Message-ID"];

fn sign_ed25519(keys: &Keys, message: &str, domain: &str, selector: &str) -> String {
    let signature = DkimSigner::from_key(keys.ed25519())
        .domain(domain)
        .selector(selector)
        .headers(SIGNED)
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header())
}

fn sign_rsa(keys: &Keys, message: &str, domain: &str, selector: &str) -> String {
    let signature = DkimSigner::from_key(keys.rsa())
        .domain(domain)
        .selector(selector)
        .headers(SIGNED)
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header())
}

/// Adds an ARC set (i=1) sealed by `domain` with the Ed25519 key.
fn arc_seal(keys: &Keys, message: &str, domain: &str, selector: &str) -> String {
    let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parse");
    let results = AuthenticationResults::new(domain);
    let set = ArcSealer::from_key(keys.ed25519())
        .domain(domain)
        .selector(selector)
        .headers(["From", "To", "Subject", "DKIM-Signature"])
        .seal(&parsed, &results, &ArcOutput::default())
        .expect("seal");
    format!("{}{message}", set.to_header())
}

/// What a row sends and expects.
struct Row {
    name: &'static str,
    /// MAIL FROM address, "" for null.
    mail_from: String,
    helo: &'static str,
    message: String,
    /// The reply to the end of data.
    code: u16,
    /// Substrings of that reply.
    reply: Vec<&'static str>,
    /// Substrings the stored header section must have (when accepted).
    has: Vec<String>,
    /// Substrings it must not have.
    lacks: Vec<String>,
}

impl Row {
    fn new(name: &'static str, mail_from: &str, message: String, code: u16) -> Row {
        Row {
            name,
            mail_from: mail_from.to_owned(),
            helo: "client.test",
            message,
            code,
            reply: vec![],
            has: vec![],
            lacks: vec![],
        }
    }

    fn has(mut self, s: impl Into<String>) -> Row {
        self.has.push(s.into());
        self
    }

    fn lacks(mut self, s: impl Into<String>) -> Row {
        self.lacks.push(s.into());
        self
    }

    fn reply(mut self, s: &'static str) -> Row {
        self.reply.push(s);
        self
    }

    fn helo(mut self, helo: &'static str) -> Row {
        self.helo = helo;
        self
    }
}

fn queued_senders(server: &Portcullis) -> Vec<String> {
    server
        .queue_list()
        .iter()
        .map(|m| m["sender"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Sends the row's message; returns the queue id when it was accepted.
#[track_caller]
fn run(server: &Portcullis, row: &Row) -> Option<String> {
    let mut c = Client::connect(server.smtp());
    c.ehlo(row.helo);
    c.cmd(&format!("MAIL FROM:<{}>", row.mail_from), 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(row.message.as_bytes());
    assert_eq!(r.code, row.code, "{}: {}", row.name, r.text);
    for s in &row.reply {
        assert!(r.text.contains(s), "{}: {:?} lacks {s:?}", row.name, r.text);
    }
    c.cmd("QUIT", 221);
    if r.code != 250 {
        return None;
    }
    let id = queued_id(&r);
    let headers = server.stored_headers(&id);
    // Ours comes right after our Received field, once.
    assert!(
        headers.starts_with("Received: from "),
        "{}: {headers}",
        row.name
    );
    assert_eq!(
        headers
            .matches("Authentication-Results: mx.example.test;")
            .count(),
        1,
        "{}: {headers}",
        row.name
    );
    assert_eq!(headers.matches("Received-SPF: ").count(), 1, "{}", row.name);
    for s in &row.has {
        assert!(
            headers.contains(s.as_str()),
            "{}: stored headers lack {s:?}:\n{headers}",
            row.name
        );
    }
    for s in &row.lacks {
        assert!(
            !headers.contains(s.as_str()),
            "{}: stored headers have {s:?}:\n{headers}",
            row.name
        );
    }
    Some(id)
}

fn config(dns: &TestDns, verify: &str) -> String {
    format!(
        r#"
hostname = "mx.example.test"
[[listen]]
address = "127.0.0.1:0"
role = "smtp"
[relay]
accepted_domains = ["example.test"]
[dns]
nameservers = ["{}"]
timeout = "300ms"
[admin]
socket = "{{dir}}/admin.sock"
metrics = "127.0.0.1:0"
[verify]
{verify}
"#,
        dns.addr()
    )
}

fn ar(line: &str) -> String {
    format!("\t{line}")
}

/// The table of the issue: SPF, DKIM, DMARC, ARC and Authentication-Results
/// through the real server with the defaults of `[verify]`.
#[test]
fn verification_table() {
    let dns = Dns::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::make(dir.path());
    let server = Portcullis::start(&config(&dns, "exceptions = [\"forwarder.test\"]"));
    let ip4 = "v=spf1 ip4:127.0.0.1 -all";
    let other = "v=spf1 ip4:192.0.2.1 -all";

    let mut rows = Vec::new();

    // SPF (RFC 7208 §2.6): recorded, never decisive by default.
    dns.add_txt("spf-pass.test", ip4);
    rows.push(
        Row::new(
            "spf pass",
            "alice@spf-pass.test",
            message("alice@spf-pass.test", "spf pass"),
            250,
        )
        .has(ar("spf=pass smtp.mailfrom=alice@spf-pass.test;"))
        .has("Received-SPF: pass (mx.example.test: domain of alice@spf-pass.test designates 127.0.0.1 as permitted sender)")
        .has("identity=mailfrom;")
        .has(ar("dkim=none;"))
        .has(ar("dmarc=none header.from=spf-pass.test;"))
        .has(ar("arc=none\r\n")),
    );
    dns.add_txt("spf-fail.test", other);
    rows.push(
        Row::new(
            "spf fail is recorded",
            "alice@spf-fail.test",
            message("alice@spf-fail.test", "spf fail"),
            250,
        )
        .has(ar("spf=fail smtp.mailfrom=alice@spf-fail.test;"))
        .has("Received-SPF: fail "),
    );
    dns.add_txt("spf-soft.test", "v=spf1 ip4:192.0.2.1 ~all");
    rows.push(
        Row::new(
            "spf softfail",
            "alice@spf-soft.test",
            message("alice@spf-soft.test", "spf softfail"),
            250,
        )
        .has(ar("spf=softfail smtp.mailfrom=alice@spf-soft.test;")),
    );
    dns.add_txt("spf-neutral.test", "v=spf1 ?all");
    rows.push(
        Row::new(
            "spf neutral",
            "alice@spf-neutral.test",
            message("alice@spf-neutral.test", "spf neutral"),
            250,
        )
        .has(ar("spf=neutral smtp.mailfrom=alice@spf-neutral.test;")),
    );
    dns.add_a("spf-none.test", Ipv4Addr::new(192, 0, 2, 9));
    rows.push(
        Row::new(
            "spf none",
            "alice@spf-none.test",
            message("alice@spf-none.test", "spf none"),
            250,
        )
        .has(ar("spf=none smtp.mailfrom=alice@spf-none.test;")),
    );
    dns.fail("spf-servfail.test", FailMode::ServFail);
    rows.push(
        Row::new(
            "spf temperror (SERVFAIL) is recorded when DMARC does not care",
            "alice@spf-servfail.test",
            message("alice@spf-servfail.test", "spf servfail"),
            250,
        )
        .has(ar("spf=temperror smtp.mailfrom=alice@spf-servfail.test;"))
        .has("Received-SPF: temperror "),
    );
    dns.fail("spf-timeout.test", FailMode::Timeout);
    rows.push(
        Row::new(
            "spf temperror (timeout)",
            "alice@spf-timeout.test",
            message("alice@spf-timeout.test", "spf timeout"),
            250,
        )
        .has(ar("spf=temperror smtp.mailfrom=alice@spf-timeout.test;")),
    );
    dns.add_txt("spf-perm.test", "v=spf1 include:missing.spf-perm.test -all");
    rows.push(
        Row::new(
            "spf permerror",
            "alice@spf-perm.test",
            message("alice@spf-perm.test", "spf permerror"),
            250,
        )
        .has(ar("spf=permerror smtp.mailfrom=alice@spf-perm.test;")),
    );
    dns.add_txt("helo-pass.test", ip4);
    rows.push(
        Row::new(
            "null sender: the HELO identity (RFC 7208 §2.4)",
            "",
            message("mailer-daemon@helo-pass.test", "helo identity"),
            250,
        )
        .helo("helo-pass.test")
        .has(ar("spf=pass smtp.helo=helo-pass.test;"))
        .has("identity=helo;"),
    );

    // DKIM (RFC 6376): one result per signature.
    dns.add_txt("ed._domainkey.dkim-ed.test", &keys.ed25519_record());
    rows.push(
        Row::new(
            "dkim ed25519-sha256 pass",
            "alice@dkim-ed.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-ed.test", "dkim ed25519"),
                "dkim-ed.test",
                "ed",
            ),
            250,
        )
        .has(ar(
            "dkim=pass header.d=dkim-ed.test header.s=ed header.a=ed25519-sha256;",
        )),
    );
    dns.add_txt("rsa._domainkey.dkim-rsa.test", &keys.rsa_record());
    rows.push(
        Row::new(
            "dkim rsa-sha256 pass",
            "alice@dkim-rsa.test",
            sign_rsa(
                &keys,
                &message("alice@dkim-rsa.test", "dkim rsa"),
                "dkim-rsa.test",
                "rsa",
            ),
            250,
        )
        .has(ar(
            "dkim=pass header.d=dkim-rsa.test header.s=rsa header.a=rsa-sha256;",
        )),
    );
    dns.add_txt("ed._domainkey.dkim-body.test", &keys.ed25519_record());
    rows.push(
        Row::new(
            "dkim body tampered",
            "alice@dkim-body.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-body.test", "dkim body"),
                "dkim-body.test",
                "ed",
            )
            .replace("Hello Bob", "Hello Eve"),
            250,
        )
        .has(ar(
            "dkim=fail (body hash did not verify) header.d=dkim-body.test header.s=ed",
        )),
    );
    dns.add_txt("ed._domainkey.dkim-header.test", &keys.ed25519_record());
    rows.push(
        Row::new(
            "dkim header tampered",
            "alice@dkim-header.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-header.test", "dkim header"),
                "dkim-header.test",
                "ed",
            )
            .replace("Subject: dkim header", "Subject: dkim forged"),
            250,
        )
        .has(ar(
            "dkim=fail (signature did not verify) header.d=dkim-header.test header.s=ed",
        )),
    );
    rows.push(
        Row::new(
            "dkim key missing",
            "alice@dkim-nokey.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-nokey.test", "dkim no key"),
                "dkim-nokey.test",
                "ed",
            ),
            250,
        )
        .has(ar(
            "dkim=permerror (no key) header.d=dkim-nokey.test header.s=ed",
        )),
    );
    dns.add_txt("ed._domainkey.dkim-revoked.test", "v=DKIM1; k=ed25519; p=");
    rows.push(
        Row::new(
            "dkim key revoked (empty p=)",
            "alice@dkim-revoked.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-revoked.test", "dkim revoked"),
                "dkim-revoked.test",
                "ed",
            ),
            250,
        )
        .has(ar(
            "dkim=permerror (key revoked) header.d=dkim-revoked.test header.s=ed",
        )),
    );

    // DMARC (RFC 7489): alignment, policies, pct.
    dns.add_txt("dmarc-spf.test", ip4);
    dns.add_txt("_dmarc.dmarc-spf.test", "v=DMARC1; p=reject");
    rows.push(
        Row::new(
            "dmarc pass via SPF only",
            "alice@dmarc-spf.test",
            message("alice@dmarc-spf.test", "dmarc via spf"),
            250,
        )
        .has(ar(
            "dmarc=pass (p=reject dis=none) header.from=dmarc-spf.test;",
        )),
    );
    dns.add_txt("_dmarc.dmarc-dkim.test", "v=DMARC1; p=reject");
    dns.add_txt("ed._domainkey.dmarc-dkim.test", &keys.ed25519_record());
    rows.push(
        Row::new(
            "dmarc pass via DKIM only (the legitimate signed message)",
            "bounce@esp-dkim.test",
            sign_ed25519(
                &keys,
                &message("alice@dmarc-dkim.test", "dmarc via dkim"),
                "dmarc-dkim.test",
                "ed",
            ),
            250,
        )
        .has(
            "Authentication-Results: mx.example.test;\r\n\
             \tspf=none smtp.mailfrom=bounce@esp-dkim.test;\r\n\
             \tdkim=pass header.d=dmarc-dkim.test header.s=ed header.a=ed25519-sha256;\r\n\
             \tdmarc=pass (p=reject dis=none) header.from=dmarc-dkim.test;\r\n\
             \tarc=none\r\n\
             Received-SPF: none",
        ),
    );
    dns.add_txt("mail.relaxed.test", ip4);
    dns.add_txt("_dmarc.relaxed.test", "v=DMARC1; p=reject");
    rows.push(
        Row::new(
            "dmarc relaxed alignment: MAIL FROM in a subdomain",
            "bounce@mail.relaxed.test",
            message("alice@relaxed.test", "dmarc relaxed"),
            250,
        )
        .has(ar(
            "dmarc=pass (p=reject dis=none) header.from=relaxed.test;",
        )),
    );
    dns.add_txt("mail.strict.test", ip4);
    dns.add_txt("_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s");
    rows.push(
        Row::new(
            "dmarc strict alignment: the same subdomain does not align",
            "bounce@mail.strict.test",
            message("alice@strict.test", "dmarc strict"),
            550,
        )
        .reply("5.7.1")
        .reply("DMARC")
        .reply("strict.test"),
    );
    dns.add_txt("_dmarc.sp.test", "v=DMARC1; p=none; sp=reject");
    dns.add_a("sub.sp.test", Ipv4Addr::new(192, 0, 2, 7));
    rows.push(
        Row::new(
            "dmarc sp= applies to a subdomain",
            "alice@elsewhere-sp.test",
            message("alice@sub.sp.test", "dmarc sp subdomain"),
            550,
        )
        .reply("5.7.1")
        .reply("sub.sp.test"),
    );
    rows.push(
        Row::new(
            "dmarc p= applies to the domain itself",
            "alice@elsewhere-sp-org.test",
            message("alice@sp.test", "dmarc sp org"),
            250,
        )
        .has(ar("dmarc=fail (p=none dis=none) header.from=sp.test;")),
    );
    dns.add_txt("_dmarc.pct0.test", "v=DMARC1; p=reject; pct=0");
    rows.push(
        Row::new(
            "dmarc pct=0: reject becomes quarantine",
            "alice@elsewhere-pct.test",
            message("alice@pct0.test", "dmarc pct"),
            250,
        )
        .has(ar(
            "dmarc=fail (p=reject pct=0 dis=quarantine) header.from=pct0.test;",
        ))
        .has("X-Portcullis-Quarantine: dmarc; p=quarantine; header.from=pct0.test\r\n"),
    );
    dns.add_txt("_dmarc.pnone.test", "v=DMARC1; p=none");
    rows.push(
        Row::new(
            "dmarc p=none failure is only recorded",
            "alice@elsewhere-none.test",
            message("alice@pnone.test", "dmarc none"),
            250,
        )
        .has(ar("dmarc=fail (p=none dis=none) header.from=pnone.test;"))
        .lacks("X-Portcullis-Quarantine"),
    );
    dns.add_txt("_dmarc.pquar.test", "v=DMARC1; p=quarantine");
    rows.push(
        Row::new(
            "dmarc p=quarantine failure is tagged",
            "alice@elsewhere-quar.test",
            message("alice@pquar.test", "dmarc quarantine"),
            250,
        )
        .has(ar(
            "dmarc=fail (p=quarantine dis=quarantine) header.from=pquar.test;",
        ))
        .has("X-Portcullis-Quarantine: dmarc; p=quarantine; header.from=pquar.test\r\n"),
    );
    dns.add_txt("bank.test", "v=spf1 ip4:192.0.2.1 -all");
    dns.add_txt("_dmarc.bank.test", "v=DMARC1; p=reject");
    rows.push(
        Row::new(
            "spoofed sender under p=reject is refused",
            "ceo@bank.test",
            message("ceo@bank.test", "wire the money"),
            550,
        )
        .reply("550 5.7.1")
        .reply("DMARC")
        .reply("bank.test"),
    );
    dns.add_txt("_dmarc.spoofed-exc.test", "v=DMARC1; p=reject");
    dns.add_txt("forwarder.test", ip4);
    rows.push(
        Row::new(
            "an exception (SPF-authenticated forwarder) is never refused",
            "bounce@forwarder.test",
            message("alice@spoofed-exc.test", "forwarded"),
            250,
        )
        .has(ar(
            "dmarc=fail (p=reject dis=none) header.from=spoofed-exc.test;",
        )),
    );
    rows.push(
        Row::new(
            "an exception's name in MAIL FROM without SPF pass is nothing",
            "bounce@mail.forwarder.test",
            message("alice@spoofed-exc.test", "not forwarded"),
            550,
        )
        .reply("DMARC"),
    );
    dns.fail("_dmarc.dmarc-timeout.test", FailMode::Timeout);
    rows.push(
        Row::new(
            "a DNS timeout on the DMARC record gives 451, never a false reject",
            "alice@elsewhere-timeout.test",
            message("alice@dmarc-timeout.test", "dmarc timeout"),
            451,
        )
        .reply("451 4.7.0")
        .reply("DMARC"),
    );
    dns.add_txt(
        "spf-tmp-rej.test",
        "v=spf1 include:spf-tmp-rej-inc.test -all",
    );
    dns.fail("spf-tmp-rej-inc.test", FailMode::ServFail);
    dns.add_txt("_dmarc.spf-tmp-rej.test", "v=DMARC1; p=reject");
    rows.push(
        Row::new(
            "an aligned SPF temperror under p=reject gives 451",
            "alice@spf-tmp-rej.test",
            message("alice@spf-tmp-rej.test", "spf temp under reject"),
            451,
        )
        .reply("4.7.0"),
    );

    dns.fail("ed._domainkey.dkim-temp.test", FailMode::ServFail);
    dns.add_txt("_dmarc.dkim-temp.test", "v=DMARC1; p=reject");
    rows.push(
        Row::new(
            "an aligned DKIM key lookup that fails for now under p=reject gives 451",
            "alice@elsewhere-dkim-temp.test",
            sign_ed25519(
                &keys,
                &message("alice@dkim-temp.test", "dkim temp under reject"),
                "dkim-temp.test",
                "ed",
            ),
            451,
        )
        .reply("4.7.0"),
    );

    // ARC (RFC 8617).
    dns.add_txt("ed._domainkey.arc-origin.test", &keys.ed25519_record());
    dns.add_txt("arc._domainkey.arc-fwd.test", &keys.ed25519_record());
    let signed = sign_ed25519(
        &keys,
        &message("alice@arc-origin.test", "arc"),
        "arc-origin.test",
        "ed",
    );
    let sealed = arc_seal(&keys, &signed, "arc-fwd.test", "arc");
    rows.push(
        Row::new("arc pass", "bounce@arc-fwd.test", sealed.clone(), 250)
            .has(ar("arc=pass (d=arc-fwd.test) smtp.remote-ip=127.0.0.1\r\n")),
    );
    rows.push(
        Row::new(
            "arc broken chain",
            "bounce@arc-fwd.test",
            sealed.replace("Subject: arc", "Subject: arc changed"),
            250,
        )
        .has(ar("arc=fail (")),
    );

    // RFC 8601 §5: a forged verdict under our name is removed, others kept.
    dns.add_txt("_dmarc.forged-ar.test", "v=DMARC1; p=none");
    let forged = format!(
        "Authentication-Results: mx.example.test; dmarc=pass header.from=forged-ar.test\r\n\
         Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@forged-ar.test\r\n\
         authentication-results :\r\n MX.EXAMPLE.TEST.;\r\n\tdkim=pass header.d=forged-ar.test\r\n\
         X-Portcullis-Quarantine: none\r\n{}",
        message("alice@forged-ar.test", "forged results")
    );
    rows.push(
        Row::new(
            "forged Authentication-Results",
            "alice@forged-ar.test",
            forged,
            250,
        )
        .has(
            "Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@forged-ar.test\r\n",
        )
        .has(ar(
            "dmarc=fail (p=none dis=none) header.from=forged-ar.test;",
        ))
        .lacks("dmarc=pass header.from=forged-ar.test")
        .lacks("MX.EXAMPLE.TEST.")
        .lacks("X-Portcullis-Quarantine"),
    );

    let mut refused = Vec::new();
    for row in &rows {
        if run(&server, row).is_none() {
            refused.push(format!("<{}>", row.mail_from));
        }
    }

    // Nothing refused was queued.
    let queued = queued_senders(&server);
    for sender in &refused {
        assert!(!queued.contains(sender), "{sender} was queued: {queued:?}");
    }
    assert_eq!(queued.len(), rows.iter().filter(|r| r.code == 250).count());

    // One log line per message with every verdict.
    let verified = server.log_events("message verified");
    assert_eq!(verified.len(), rows.len(), "{verified:#?}");
    let spoof = verified
        .iter()
        .find(|v| v["from"] == "<ceo@bank.test>")
        .expect("log line for the spoof");
    assert_eq!(spoof["spf"], "fail");
    assert_eq!(spoof["dkim"], "none");
    assert_eq!(spoof["dmarc"], "fail");
    assert_eq!(spoof["arc"], "none");
    assert_eq!(spoof["verdict"], "reject");
    assert!(spoof["queue_id"].as_str().is_some_and(|id| id.len() == 16));
    let exc = verified
        .iter()
        .find(|v| v["from"] == "<bounce@forwarder.test>")
        .expect("log line for the forwarder");
    assert_eq!(exc["verdict"], "accept");
    assert_eq!(exc["exception"], "forwarder.test");

    // Metrics per result.
    let text = server.metrics_page();
    for (line, at_least) in [
        (
            "portcullis_auth_results_total{method=\"spf\",result=\"pass\"}",
            5,
        ),
        (
            "portcullis_auth_results_total{method=\"dkim\",result=\"pass\"}",
            3,
        ),
        (
            "portcullis_auth_results_total{method=\"dmarc\",result=\"fail\"}",
            8,
        ),
        (
            "portcullis_auth_results_total{method=\"arc\",result=\"pass\"}",
            1,
        ),
        ("portcullis_auth_verdicts_total{verdict=\"reject\"}", 4),
        ("portcullis_auth_verdicts_total{verdict=\"tempfail\"}", 2),
        ("portcullis_rejections_total{reason=\"dmarc\"}", 4),
    ] {
        let value: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"));
        assert!(
            value >= at_least,
            "{line} = {value}, expected >= {at_least}"
        );
    }
}

/// `spf_fail = "reject"`: a failing sender is refused at MAIL FROM with
/// 550 5.7.23 (RFC 7372), a temporary failure deferred with 451 4.7.24;
/// `dmarc_quarantine = "reject"` refuses quarantine failures.
#[test]
fn spf_reject_at_mail_from_and_quarantine_reject() {
    let dns = Dns::start();
    let server = Portcullis::start(&config(
        &dns,
        "spf_fail = \"reject\"\ndmarc_quarantine = \"reject\"",
    ));
    dns.add_txt("b-fail.test", "v=spf1 ip4:192.0.2.1 -all");
    dns.add_txt("b-pass.test", "v=spf1 ip4:127.0.0.1 -all");
    dns.fail("b-temp.test", FailMode::ServFail);
    dns.add_txt("_dmarc.b-quar.test", "v=DMARC1; p=quarantine");

    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    let r = c.cmd("MAIL FROM:<alice@b-fail.test>", 550);
    assert!(r.text.starts_with("550 5.7.23 "), "{}", r.text);
    assert!(r.text.contains("b-fail.test"), "{}", r.text);
    c.cmd("RCPT TO:<bob@example.test>", 503);
    let r = c.cmd("MAIL FROM:<alice@b-temp.test>", 451);
    assert!(r.text.starts_with("451 4.7.24 "), "{}", r.text);
    c.cmd("MAIL FROM:<alice@b-pass.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(message("alice@b-quar.test", "quarantine rejected").as_bytes());
    assert_eq!(r.code, 550, "{}", r.text);
    assert!(
        r.text.contains("5.7.1") && r.text.contains("DMARC"),
        "{}",
        r.text
    );
    c.cmd("MAIL FROM:<alice@b-pass.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(message("alice@b-pass.test", "fine").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queued_id(&r);
    c.cmd("QUIT", 221);
    let headers = server.stored_headers(&id);
    assert!(
        headers.contains("\tspf=pass smtp.mailfrom=alice@b-pass.test;"),
        "{headers}"
    );
    assert_eq!(server.log_events("sender refused by SPF").len(), 2);
    assert_eq!(queued_senders(&server), ["<alice@b-pass.test>"]);
    let text = server.metrics_page();
    assert!(
        text.contains("portcullis_rejections_total{reason=\"spf\"} 1"),
        "{text}"
    );
}

/// An exception matched by a forward-confirmed reverse name (iprev): the
/// resolver answers 127.0.0.1 with `localhost` (RFC 6761 §6.3), which
/// resolves back to 127.0.0.1, so the client is authenticated as
/// `localhost`; its SPF failure and its DMARC failure under `p=reject` are
/// recorded, not acted on.
#[test]
fn exception_by_forward_confirmed_reverse_name() {
    let dns = Dns::start();
    let server = Portcullis::start(&config(
        &dns,
        "spf_fail = \"reject\"\nexceptions = [\"localhost\"]",
    ));
    dns.add_txt("c-fail.test", "v=spf1 ip4:192.0.2.1 -all");
    dns.add_txt("_dmarc.c-fail.test", "v=DMARC1; p=reject");
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@c-fail.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(message("alice@c-fail.test", "excepted").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    let headers = server.stored_headers(&queued_id(&r));
    c.cmd("QUIT", 221);
    assert!(
        headers.contains("\tspf=fail smtp.mailfrom=alice@c-fail.test;"),
        "{headers}"
    );
    assert!(
        headers.contains("\tdmarc=fail (p=reject dis=none) header.from=c-fail.test;"),
        "{headers}"
    );
    let verified = server.log_events("message verified");
    assert_eq!(verified[0]["exception"], "localhost");
    assert_eq!(
        server
            .log_events("SPF result excused by an exception")
            .len(),
        1
    );
}

/// `skip_trusted` (default): a trusted client's mail is not verified and
/// gets neither Authentication-Results nor Received-SPF from us (it is our
/// own outbound mail; its headers are passed on as they are).
#[test]
fn trusted_networks_skip_verification() {
    let dns = Dns::start();
    let text = config(&dns, "").replace(
        "accepted_domains = [\"example.test\"]",
        "accepted_domains = [\"example.test\"]\ntrusted_networks = [\"127.0.0.0/8\"]",
    );
    let server = Portcullis::start(&text);
    dns.add_txt("_dmarc.trusted-spoof.test", "v=DMARC1; p=reject");
    let mut c = Client::connect(server.smtp());
    c.ehlo("client.test");
    c.cmd("MAIL FROM:<alice@trusted-spoof.test>", 250);
    c.cmd("RCPT TO:<bob@example.test>", 250);
    let r = c.data(message("alice@trusted-spoof.test", "outbound").as_bytes());
    assert_eq!(r.code, 250, "{}", r.text);
    let headers = server.stored_headers(&queued_id(&r));
    c.cmd("QUIT", 221);
    assert!(!headers.contains("Authentication-Results"), "{headers}");
    assert!(!headers.contains("Received-SPF"), "{headers}");
    assert!(server.log_events("message verified").is_empty());
}
