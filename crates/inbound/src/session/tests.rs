//! Sans-IO tests of the session: every input is fed whole, byte by byte and
//! in random splits, and must give the same replies and the same messages.

use super::*;
use ipnet::IpNet;
use portcullis_config::{BareNewline, Limits, Relay, Role};
use portcullis_submission::lockout::AuthGuard;
use portcullis_submission::rate::SendRate;
use portcullis_types::Domain;
use std::time::Duration;

mod limits;
mod requiretls;
mod screen;
mod smuggling;
mod spool;

fn limits() -> Limits {
    // Small limits where the tests reach them; the reference defaults else.
    Limits {
        max_connections: 100,
        max_connections_per_ip: 10,
        max_line_length: 512,
        max_message_size: 100_000,
        spool_threshold: 262_144,
        ..Limits::default()
    }
}

fn config(role: Role, bare: BareNewline) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        banner: "ESMTP".into(),
        role,
        limits: limits(),
        relay: Relay {
            accepted_domains: vec![
                Domain::parse("example.test").unwrap(),
                Domain::parse("bücher.example").unwrap(),
            ],
            trusted_networks: vec!["10.0.0.0/8".parse::<IpNet>().unwrap()],
        },
        bare_newline: bare,
        tls_available: true,
        verify: VerifyScope::default(),
        screen: ScreenScope::default(),
        auth: role != Role::Smtp,
        submission: Default::default(),
        oauth: role != Role::Smtp,
        guard: Arc::new(AuthGuard::new(Default::default())),
        rate: Arc::new(SendRate::new()),
        tls_required_no: Default::default(),
    })
}

/// A config whose listener verifies mail (SPF at MAIL FROM when
/// `spf_at_mail`), trusted clients skipped.
fn verifying(spf_at_mail: bool) -> Arc<SessionConfig> {
    let mut cfg = (*config(Role::Smtp, BareNewline::Reject)).clone();
    cfg.verify = VerifyScope {
        enabled: true,
        skip_trusted: true,
        spf_at_mail,
    };
    Arc::new(cfg)
}

/// What a run produced.
#[derive(Debug, PartialEq)]
struct Run {
    replies: Vec<String>,
    messages: Vec<(String, Vec<String>, Vec<u8>)>,
    /// Per message: whether the session asked for verification.
    verified: Vec<bool>,
    /// Senders the driver was asked to check at MAIL FROM.
    checked: Vec<String>,
    /// What each MAIL FROM check asked for: (SPF, count the message).
    sender_checks: Vec<(bool, bool)>,
    /// Recipients the driver was asked to check, with the facts:
    /// `recipient sender spf-pass-domain trusted user`.
    rcpt_checks: Vec<String>,
    starttls: bool,
    closed: bool,
    /// Per message: the authenticated user.
    users: Vec<Option<String>>,
    /// Per message: what the session recorded about its arrival.
    arrivals: Vec<Arrival>,
    /// Per message: REQUIRETLS was given.
    require_tls: Vec<bool>,
    /// Messages the session refused at the end of their data, by reason.
    refusals: Vec<&'static str>,
}

/// Feeds `chunks` to a fresh session, playing the driver: stores messages,
/// "completes" STARTTLS, stops at Close.
fn run_chunks(cfg: Arc<SessionConfig>, peer: &str, chunks: &[&[u8]]) -> Run {
    let mut s = Session::new(cfg, peer.parse().unwrap());
    let mut out = Vec::new();
    let mut run = Run {
        replies: vec![],
        messages: vec![],
        verified: vec![],
        checked: vec![],
        sender_checks: vec![],
        rcpt_checks: vec![],
        starttls: false,
        closed: false,
        users: vec![],
        arrivals: vec![],
        require_tls: vec![],
        refusals: vec![],
    };
    if s.config().role == Role::Submissions {
        // Implicit TLS: the driver's handshake came before the greeting.
        s.set_tls(TlsSummary {
            version: "TLSv1.3".into(),
            cipher: "X".into(),
        });
    }
    let mut ids = 0u64;
    'outer: for chunk in chunks {
        s.feed(chunk);
        loop {
            let event = s.step(&mut out);
            run.refusals.extend(s.take_refusals());
            match event {
                Event::NeedInput => break,
                Event::StartTls => {
                    run.starttls = true;
                    s.discard_input();
                    s.tls_started(TlsSummary {
                        version: "TLSv1.3".into(),
                        cipher: "X".into(),
                    });
                    // The rest of this chunk was sent before the handshake.
                    continue 'outer;
                }
                Event::CheckSender(c) => {
                    // The driver's SPF check, played: senders at spf-fail.test
                    // fail, at spf-temp.test the DNS is down.
                    let sender = c.sender.to_string();
                    let refusal = if sender.ends_with("@spf-fail.test") {
                        Some(Reply::new(550, (5, 7, 23), "SPF validation failed"))
                    } else if sender.ends_with("@spf-temp.test") {
                        Some(Reply::new(451, (4, 7, 24), "SPF validation error"))
                    } else {
                        None
                    };
                    run.sender_checks.push((c.spf, c.count_message));
                    if c.spf {
                        run.checked
                            .push(format!("{sender} {} {}", c.helo, c.client_ip));
                    }
                    let (refusal, spf_pass) = played_sender_check(&c, refusal, &run);
                    s.sender_checked(refusal.as_ref(), spf_pass, &mut out);
                }
                Event::CheckRecipient(c) => {
                    run.rcpt_checks.push(format!(
                        "{} {} {} {} {}",
                        c.recipient,
                        c.sender,
                        c.spf_pass.as_ref().map_or("-".into(), |d| d.to_string()),
                        c.trusted,
                        c.authenticated.as_deref().unwrap_or("-"),
                    ));
                    s.recipient_checked(played_screen(&c).as_ref(), &mut out);
                }
                Event::CheckAuth(c) => {
                    let outcome = played_auth_check(*c);
                    s.auth_checked(outcome, &mut out);
                }
                Event::Message(m) => {
                    run.verified.push(m.verify);
                    run.users.push(m.arrival.authenticated.clone());
                    run.arrivals.push(m.arrival.clone());
                    run.require_tls.push(m.require_tls);
                    if m.data.starts_with(b"Subject: reject me") {
                        // The driver's verification refused it.
                        s.message_rejected(&Reply::new(550, (5, 7, 1), "DMARC"), &mut out);
                        continue;
                    }
                    ids += 1;
                    run.messages.push((
                        m.sender.to_string(),
                        m.recipients.iter().map(|r| r.address.to_string()).collect(),
                        m.data,
                    ));
                    s.message_stored(QueueId::generate(ids, 0), &mut out);
                }
                Event::Close => {
                    run.closed = true;
                    break 'outer;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    // Queue ids differ between runs; mask them.
    run.replies = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| match l.find("queued as ") {
            Some(i) => format!("{}queued as ID", &l[..i]),
            None => l.to_string(),
        })
        .collect();
    run
}

/// Runs `input` whole, byte by byte and in pseudo-random splits; asserts
/// all agree and returns the result.
#[track_caller]
fn run_all_ways(cfg: Arc<SessionConfig>, peer: &str, input: &[u8]) -> Run {
    let whole = run_chunks(cfg.clone(), peer, &[input]);
    if whole.starttls {
        // After STARTTLS the split point decides what was "before the
        // handshake", so only the whole form is meaningful.
        return whole;
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run_chunks(cfg.clone(), peer, &bytes),
        whole,
        "byte-by-byte differs"
    );
    let mut seed = 0x9E3779B97F4A7C15u64;
    for _ in 0..20 {
        let mut parts = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = ((seed % 23) as usize + 1).min(rest.len());
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(
            run_chunks(cfg.clone(), peer, &parts),
            whole,
            "random split differs"
        );
    }
    whole
}

fn smtp() -> Arc<SessionConfig> {
    config(Role::Smtp, BareNewline::Reject)
}

const OUTSIDE: &str = "192.0.2.10";

fn codes(run: &Run) -> Vec<&str> {
    run.replies.iter().map(|r| &r[..3]).collect()
}

#[test]
fn a_plain_transaction() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].0, "a@sender.test");
    assert_eq!(r.messages[0].1, vec!["u@example.test"]);
    // Dot-unstuffed, ends with the CRLF before the final dot.
    assert_eq!(r.messages[0].2, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
    assert!(r.replies.iter().any(|l| l == "250 2.0.0 Ok: queued as ID"));
    assert_eq!(
        r.replies.last().unwrap(),
        "221 2.0.0 mx.example.test closing connection"
    );
    assert!(r.closed);
}

#[test]
fn ehlo_lists_extensions_and_size() {
    let r = run_all_ways(smtp(), OUTSIDE, b"EHLO c.test\r\n");
    for ext in [
        "250-PIPELINING",
        "250-SIZE 100000",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250-CHUNKING",
        "250-DSN",
        "250 STARTTLS",
    ] {
        assert!(
            r.replies.iter().any(|l| l == ext),
            "{ext} missing: {:?}",
            r.replies
        );
    }
    let r = run_all_ways(smtp(), OUTSIDE, b"HELO c.test\r\n");
    assert_eq!(r.replies, vec!["250 mx.example.test"]);
}

#[test]
fn misc_commands() {
    let r = run_all_ways(smtp(), OUTSIDE, b"EHLO c.test\r\nVRFY u\r\nEXPN list\r\nHELP\r\nNOOP\r\nRSET\r\nAUTH PLAIN\r\nETRN x.test\r\nFOO\r\n");
    let tail: Vec<_> = codes(&r).into_iter().skip(9).collect();
    assert_eq!(
        tail,
        vec!["252", "502", "214", "250", "250", "502", "502", "500"],
        "{:?}",
        r.replies
    );
}

#[test]
fn sequence_errors() {
    let r = run_all_ways(smtp(), OUTSIDE, b"MAIL FROM:<a@b.test>\r\nEHLO c.test\r\nRCPT TO:<u@example.test>\r\nDATA\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nDATA\r\n");
    let c = codes(&r);
    assert_eq!(c[0], "503");
    assert_eq!(
        &c[10..],
        ["503", "503", "250", "503", "554"],
        "{:?}",
        r.replies
    );
}

#[test]
fn anti_relay_table() {
    // (peer, recipient, expected code)
    let cases: &[(&str, &str, &str)] = &[
        (OUTSIDE, "u@example.test", "250"),
        (OUTSIDE, "u@EXAMPLE.TEST.", "250"),
        (OUTSIDE, "u@xn--bcher-kva.example", "250"),
        (OUTSIDE, "u@elsewhere.test", "554"),
        (OUTSIDE, "u@example.test.elsewhere.test", "554"),
        (OUTSIDE, "u@sub.example.test", "554"),
        // Percent hack: stays a local part of our domain, never relays.
        (OUTSIDE, "u%elsewhere.test@example.test", "250"),
        // Bang path: likewise a local part.
        (OUTSIDE, "elsewhere.test!u@example.test", "250"),
        // Source route: the route is dropped, the final domain decides.
        (OUTSIDE, "@example.test:u@elsewhere.test", "554"),
        (OUTSIDE, "@a.test,@example.test:u@elsewhere.test", "554"),
        // Address literals are never ours.
        (OUTSIDE, "u@[127.0.0.1]", "501"),
        // Trusted networks may relay anywhere.
        ("10.1.2.3", "u@elsewhere.test", "250"),
        ("::ffff:10.1.2.3", "u@elsewhere.test", "250"),
        // Bare postmaster is ours.
        (OUTSIDE, "Postmaster", "250"),
    ];
    for (peer, rcpt, want) in cases {
        let input = format!("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<{rcpt}>\r\n");
        let r = run_all_ways(smtp(), peer, input.as_bytes());
        assert_eq!(
            codes(&r).last().copied(),
            Some(*want),
            "{peer} -> {rcpt}: {:?}",
            r.replies
        );
    }
}

#[test]
fn percent_hack_is_delivered_locally() {
    let r = run_all_ways(smtp(), OUTSIDE, b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u%elsewhere.test@example.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(r.messages[0].1, vec!["u%elsewhere.test@example.test"]);
}

/// SMTP smuggling: every way of faking an end of data that a lenient
/// server might accept. None may end the message; with the default policy
/// the message is refused whole, and the smuggled commands never run.
#[test]
fn smuggling_variants_never_make_a_second_message() {
    let fakes: &[&[u8]] = &[
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r.\r",
        b"\n.\r",
        b"\r\n\x00.\r\n",
    ];
    for fake in fakes {
        let mut input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: one\r\n\r\nfirst".to_vec();
        input.extend_from_slice(fake);
        input.extend_from_slice(b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\nNOOP\r\n");
        let r = run_all_ways(smtp(), OUTSIDE, &input);
        let nul_only = *fake == b"\r\n\x00.\r\n";
        if nul_only {
            // No bare newline at all: one message holding everything.
            assert_eq!(r.messages.len(), 1, "{fake:?}");
            assert!(String::from_utf8_lossy(&r.messages[0].2).contains("smuggled"));
        } else {
            assert!(r.messages.is_empty(), "{fake:?} produced {:?}", r.messages);
            assert!(
                r.replies.iter().any(|l| l.starts_with("550 5.5.2")),
                "{fake:?}: {:?}",
                r.replies
            );
        }
        // The smuggled MAIL FROM never ran as a command: exactly one
        // "Sender OK" (ours) in the transcript.
        assert_eq!(
            r.replies.iter().filter(|l| l.contains("Sender OK")).count(),
            1,
            "{fake:?}: {:?}",
            r.replies
        );
        assert_eq!(
            r.replies.last().map(|l| &l[..3]),
            Some("250"),
            "NOOP after the real end: {:?}",
            r.replies
        );
    }
}

#[test]
fn normalize_policy_turns_bare_newlines_into_crlf_in_one_message() {
    let cfg = config(Role::Smtp, BareNewline::Normalize);
    let r = run_all_ways(cfg, OUTSIDE, b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\na\n.\nMAIL FROM:<e@b.test>\r\nb\r\n.\r\n");
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].2, b"a\r\n.\r\nMAIL FROM:<e@b.test>\r\nb\r\n");
}

#[test]
fn normalized_data_still_fits_the_size_limit() {
    // 60,000 bare LFs are 60,000 octets as sent and 120,000 as stored:
    // over the 100,000-octet limit once normalised.
    let cfg = config(Role::Smtp, BareNewline::Normalize);
    let mut input =
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'\n', 60_000));
    input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let r = run_all_ways(cfg.clone(), OUTSIDE, &input);
    assert!(r.messages.is_empty());
    assert_eq!(
        codes(&r).iter().rev().take(2).collect::<Vec<_>>(),
        [&"250", &"552"]
    );
    assert_eq!(r.refusals, ["message_too_big"]);
    // Half as many fit.
    let mut input =
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'\n', 30_000));
    input.extend_from_slice(b"\r\n.\r\n");
    let r = run_all_ways(cfg, OUTSIDE, &input);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].2.len(), 60_002);
}

#[test]
fn starttls_discards_pipelined_commands() {
    let r = run_chunks(
        smtp(),
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<x@b.test>\r\nRCPT TO:<u@example.test>\r\n",
            b"MAIL FROM:<y@b.test>\r\n",
        ],
    );
    assert!(r.starttls);
    let c = codes(&r);
    // EHLO lines, 220, then MAIL needs a new EHLO after TLS: 503.
    assert_eq!(c.iter().filter(|c| **c == "220").count(), 1);
    assert!(
        !r.replies.iter().any(|l| l.contains("Sender OK")),
        "{:?}",
        r.replies
    );
    assert_eq!(c.last(), Some(&"503"));
}

#[test]
fn starttls_rules() {
    let r = run_chunks(smtp(), OUTSIDE, &[b"STARTTLS\r\n"]);
    assert_eq!(codes(&r), vec!["503"]);
    let r = run_chunks(
        smtp(),
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nSTARTTLS\r\n",
        ],
    );
    assert_eq!(codes(&r).last(), Some(&"503"));
    assert!(
        !r.replies
            .iter()
            .any(|l| l == "250 STARTTLS" || l == "250-STARTTLS")
            || r.replies.iter().filter(|l| l.contains("STARTTLS")).count() == 1
    );
}

#[test]
fn submission_needs_tls_before_mail() {
    let cfg = config(Role::Submission, BareNewline::Reject);
    let r = run_chunks(
        cfg.clone(),
        OUTSIDE,
        &[b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n"],
    );
    assert_eq!(
        r.replies.last().unwrap(),
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    let r = run_chunks(
        cfg,
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n",
        ],
    );
    // After TLS, MAIL needs AUTH (outside trusted networks).
    assert_eq!(
        r.replies.last().unwrap(),
        "530 5.7.0 Authentication required"
    );
    let r = run_chunks(
        config(Role::Submission, BareNewline::Reject),
        "10.9.9.9",
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n",
        ],
    );
    assert_eq!(r.replies.last().unwrap(), "250 2.1.0 Sender OK");
}

#[test]
fn size_limits() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=100001\r\nMAIL FROM:<a@b.test> SIZE=100000\r\n",
    );
    assert_eq!(&codes(&r)[9..], ["552", "250"]);
    let mut input =
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n".to_vec();
    for _ in 0..2000 {
        input.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let r = run_all_ways(smtp(), OUTSIDE, &input);
    assert!(r.messages.is_empty());
    assert_eq!(
        &codes(&r)[r.replies.len() - 2..],
        ["552", "250"],
        "{:?}",
        r.replies
    );
}

#[test]
fn too_many_recipients_get_452() {
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for i in 0..101 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@example.test>\r\n").as_bytes());
    }
    let r = run_all_ways(smtp(), OUTSIDE, &input);
    assert_eq!(r.replies.last().unwrap(), "452 4.5.3 Too many recipients");
    assert_eq!(
        r.replies
            .iter()
            .filter(|l| l.starts_with("250 2.1.5"))
            .count(),
        100
    );
}

#[test]
fn long_lines_and_error_limit() {
    let mut input = b"EHLO c.test\r\n".to_vec();
    input.extend_from_slice(&vec![b'A'; 2000]);
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let r = run_all_ways(smtp(), OUTSIDE, &input);
    assert_eq!(&codes(&r)[9..], ["500", "250"], "{:?}", r.replies);

    let r = run_all_ways(smtp(), OUTSIDE, &b"BOGUS\r\n".repeat(12));
    assert_eq!(codes(&r).len(), 11);
    assert_eq!(
        r.replies.last().unwrap(),
        "421 4.7.0 mx.example.test Too many errors, closing connection"
    );
    assert!(r.closed);
}

#[test]
fn bare_cr_in_a_command_is_refused() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\rMAIL FROM:<a@b.test>\r\nNOOP\r\n",
    );
    assert_eq!(codes(&r), vec!["500", "250"]);
}

#[test]
fn bdat_chunks_and_last() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nBDAT 12\r\nSubject: x\r\nBDAT 8 LAST\r\n\r\nbody\r\nNOOP\r\n",
    );
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].2, b"Subject: x\r\n\r\nbody\r\n");
    assert!(
        r.replies
            .iter()
            .any(|l| l == "250 2.0.0 12 octets received")
    );
    assert_eq!(codes(&r).last(), Some(&"250"));
}

/// BDAT bytes are consumed even when the command is refused, so chunk
/// content can never run as commands.
#[test]
fn refused_bdat_content_is_not_executed() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\r\nBDAT 25 LAST\r\nMAIL FROM:<evil@b.test>\r\nNOOP\r\n",
    );
    assert!(
        !r.replies.iter().any(|l| l.contains("Sender OK")),
        "{:?}",
        r.replies
    );
    assert_eq!(&codes(&r)[9..], ["503", "250"]);
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nBDAT 200000 LAST\r\n",
    );
    assert!(r.messages.is_empty());
}

#[test]
fn bdat_over_the_size_limit_gets_552_after_the_chunk() {
    let mut input =
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nBDAT 100001 LAST\r\n"
            .to_vec();
    input.extend_from_slice(&vec![b'x'; 100_001]);
    input.extend_from_slice(b"NOOP\r\n");
    let r = run_chunks(smtp(), OUTSIDE, &[&input]);
    assert!(r.messages.is_empty());
    assert_eq!(
        &codes(&r)[r.replies.len() - 2..],
        ["552", "250"],
        "{:?}",
        r.replies
    );
}

#[test]
fn dsn_parameters_are_kept() {
    let cfg = smtp();
    let mut s = Session::new(cfg, OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B314159\r\nRCPT TO:<u@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;orig+2Bx@example.test\r\nDATA\r\nx\r\n.\r\n");
    let msg = loop {
        match s.step(&mut out) {
            Event::Message(m) => break m,
            Event::NeedInput => panic!("no message: {}", String::from_utf8_lossy(&out)),
            _ => {}
        }
    };
    assert_eq!(msg.ret, Some(DsnRet::Headers));
    assert_eq!(msg.envid.as_deref(), Some("QQ+314159"));
    let n = msg.recipients[0].notify;
    assert!(n.success && n.delay && !n.failure && !n.never && n.explicit);
    assert_eq!(
        msg.recipients[0].orcpt.as_deref(),
        Some("rfc822;orig+x@example.test")
    );
}

/// Regression test (found by the `dsn` fuzz target): smtp-proto decodes
/// xtext `+HH` to the character U+00HH, not to an octet, so
/// `ORCPT=rfc822;caf+C3+A9@…` was stored as `cafÃ©@…` and relayed as
/// `+C3+83+C2+A9`: the next hop got other octets than the client sent.
/// RFC 3461 §4.2 and §4.4 allow only printable US-ASCII there; anything
/// else (also raw UTF-8 and control characters) is refused with 501 5.5.4.
#[test]
fn dsn_parameters_outside_printable_ascii_are_refused() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        "EHLO c.test\r\n\
         MAIL FROM:<a@b.test> ENVID=caf+C3+A9\r\n\
         MAIL FROM:<a@b.test> ENVID=a+0D+0AX-Injected:+20yes\r\n\
         MAIL FROM:<a@b.test> ENVID=ok+2B1+20x\r\n\
         RCPT TO:<u@example.test> ORCPT=rfc822;caf+C3+A9@example.test\r\n\
         RCPT TO:<u@example.test> ORCPT=rfc822;café@example.test\r\n\
         RCPT TO:<u@example.test> ORCPT=rfc822;a+0Ab@example.test\r\n\
         RCPT TO:<u@example.test> ORCPT=rfc822;o+2Bk@example.test\r\n"
            .as_bytes(),
    );
    assert_eq!(
        &codes(&r)[9..],
        ["501", "501", "250", "501", "501", "501", "250"],
        "{:?}",
        r.replies
    );
}

#[test]
fn smtputf8_rules() {
    let r = run_all_ways(smtp(), OUTSIDE, "EHLO c.test\r\nMAIL FROM:<jösé@b.test>\r\nMAIL FROM:<jösé@b.test> SMTPUTF8\r\nRCPT TO:<ü@bücher.example>\r\n".as_bytes());
    assert_eq!(&codes(&r)[9..], ["553", "250", "250"], "{:?}", r.replies);
}

#[test]
fn unoffered_parameters_are_refused() {
    let r = run_all_ways(smtp(), OUTSIDE, b"EHLO c.test\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\nMAIL FROM:<a@b.test> FOO=BAR\r\n");
    // REQUIRETLS is known but needs TLS: 530 5.7.10 (see tests/requiretls.rs).
    assert_eq!(&codes(&r)[9..], ["555", "530", "555"], "{:?}", r.replies);
}

#[test]
fn shutdown_answers_421_to_the_next_command() {
    let mut s = Session::new(smtp(), OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\n");
    assert!(matches!(s.step(&mut out), Event::NeedInput));
    s.begin_shutdown();
    s.feed(b"NOOP\r\n");
    assert!(matches!(s.step(&mut out), Event::Close));
    assert!(
        String::from_utf8_lossy(&out)
            .ends_with("421 4.3.2 mx.example.test Service shutting down, closing connection\r\n")
    );
}

#[test]
fn verification_is_asked_for_untrusted_clients_only() {
    let input =
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\n";
    assert_eq!(
        run_all_ways(verifying(false), OUTSIDE, input).verified,
        [true]
    );
    // 10.0.0.0/8 is trusted in these tests: skipped.
    assert_eq!(
        run_all_ways(verifying(false), "10.1.2.3", input).verified,
        [false]
    );
    let mut cfg = (*verifying(false)).clone();
    cfg.verify.skip_trusted = false;
    assert_eq!(
        run_all_ways(Arc::new(cfg), "10.1.2.3", input).verified,
        [true]
    );
    // Off by default (and for the submission roles, see builder.rs).
    assert_eq!(run_all_ways(smtp(), OUTSIDE, input).verified, [false]);
    let r = run_all_ways(verifying(false), OUTSIDE, input);
    assert!(r.checked.is_empty(), "{:?}", r.checked);
}

/// `spf_fail = "reject"`: the sender is checked at MAIL FROM; the answer
/// comes in order even with the rest of the transaction pipelined behind
/// it, and a refused sender leaves no transaction (RFC 2920).
#[test]
fn spf_at_mail_from_with_pipelining() {
    let r = run_all_ways(
        verifying(true),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@spf-fail.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n\
MAIL FROM:<a@spf-temp.test>\r\nRCPT TO:<u@example.test>\r\n\
RSET\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        &codes(&r)[9..],
        [
            "550", "503", "503", "451", "503", "250", "250", "250", "354", "250", "221"
        ],
        "{:?}",
        r.replies
    );
    assert!(
        r.replies
            .contains(&"550 5.7.23 SPF validation failed".to_string())
    );
    assert_eq!(
        r.checked,
        [
            "a@spf-fail.test c.test 192.0.2.10",
            "a@spf-temp.test c.test 192.0.2.10",
            " c.test 192.0.2.10",
        ]
    );
    assert_eq!(r.messages.len(), 1);
    // Trusted clients are not checked.
    let r = run_all_ways(
        verifying(true),
        "10.1.2.3",
        b"EHLO c.test\r\nMAIL FROM:<a@spf-fail.test>\r\n",
    );
    assert!(r.checked.is_empty());
    assert_eq!(&codes(&r)[9..], ["250"]);
}

#[test]
fn a_message_refused_by_verification_ends_the_transaction() {
    let r = run_all_ways(
        verifying(false),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: reject me\r\n\r\nx\r\n.\r\nRCPT TO:<u@example.test>\r\nMAIL FROM:<a@b.test>\r\n",
    );
    assert_eq!(
        &codes(&r)[9..],
        ["250", "250", "354", "550", "503", "250"],
        "{:?}",
        r.replies
    );
    assert!(r.messages.is_empty());
}

/// The RFC 7677 §3 example: user "user", password "pencil".
const SCRAM_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const SCRAM_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

/// The driver's checks at MAIL FROM, played: `spf_refusal` when SPF was
/// asked for; SPF passes for senders at spf-pass.test (and for a null
/// sender greeting as spf-pass.test); the message rate allows two
/// counted messages per session (452 4.7.1 for the third).
fn played_sender_check(
    c: &SenderCheck,
    spf_refusal: Option<Reply>,
    run: &Run,
) -> (Option<Reply>, Option<Domain>) {
    let counted = run.sender_checks.iter().filter(|(_, count)| *count).count();
    if c.count_message && counted > 2 {
        return (Some(Reply::new(452, (4, 7, 1), "Too many messages")), None);
    }
    if !c.spf {
        return (None, None);
    }
    let domain = match &c.sender {
        ReversePath::Mailbox(a) => a.domain.clone(),
        ReversePath::Null => match Domain::parse(&c.helo) {
            Ok(d) => d,
            Err(_) => return (spf_refusal, None),
        },
    };
    let pass = (domain.as_str() == "spf-pass.test").then_some(domain);
    (spf_refusal, pass)
}

/// The screen's RCPT decision, played: local part `unknown` is an unknown
/// user (550 5.1.1); `grey` is greylisted (451 4.7.1) unless SPF passed
/// for the sender's domain.
fn played_screen(c: &RecipientCheck) -> Option<Reply> {
    match c.recipient.local.as_str() {
        "unknown" => Some(Reply::new(
            550,
            (5, 1, 1),
            format!(
                "<{}>: Recipient address rejected: user unknown",
                c.recipient
            ),
        )),
        "grey" if c.spf_pass.is_none() => Some(Reply::new(451, (4, 7, 1), "Greylisted")),
        _ => None,
    }
}

/// The driver's checks, played: alice/secret by password; "user"/"pencil"
/// by SCRAM (the RFC 7677 vector, with its server nonce); the bearer token
/// "good-token" belongs to alice, "down" means the endpoint is down.
fn played_auth_check(c: AuthCheck) -> AuthOutcome {
    use base64::Engine;
    use portcullis_submission::scram::ScramSecret;
    let failed = AuthOutcome::Failed {
        challenge: None,
        lockout: None,
    };
    match c {
        AuthCheck::Password { user, password } => {
            if user == "alice" && password == "secret" {
                AuthOutcome::Success { user }
            } else {
                failed
            }
        }
        AuthCheck::ScramStart(first) => {
            let salt = base64::engine::general_purpose::STANDARD
                .decode(SCRAM_SALT)
                .unwrap();
            let secret = if first.username() == "user" {
                ScramSecret::derive_with_salt("pencil", &salt, 4096).unwrap()
            } else {
                ScramSecret::fake(first.username(), b"k")
            };
            let (server, server_first) = first.server_first_with_nonce(&secret, SCRAM_SERVER_NONCE);
            AuthOutcome::ScramChallenge {
                server: Box::new(server),
                server_first,
            }
        }
        AuthCheck::ScramFinal { server, message } => match server.client_final(&message) {
            Ok(server_final) => AuthOutcome::ScramSuccess {
                user: server.username().to_string(),
                server_final,
            },
            Err(_) => failed,
        },
        AuthCheck::Bearer { response, .. } => match response.token.as_str() {
            "down" => AuthOutcome::Temporary { lockout: None },
            "good-token" if response.user.as_deref().is_none_or(|u| u == "alice") => {
                AuthOutcome::Success {
                    user: "alice".into(),
                }
            }
            _ => AuthOutcome::Failed {
                challenge: Some("eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=".into()),
                lockout: None,
            },
        },
    }
}

/// Submissions (implicit TLS) with AUTH; `senders` for alice when given.
fn submissions(senders: &[&str]) -> Arc<SessionConfig> {
    let mut cfg = (*config(Role::Submissions, BareNewline::Reject)).clone();
    if !senders.is_empty() {
        let patterns = senders
            .iter()
            .map(|p| match p.strip_prefix('@') {
                Some(d) => portcullis_config::SenderPattern::Domain(Domain::parse(d).unwrap()),
                None => portcullis_config::SenderPattern::Address(
                    portcullis_types::Address::parse(p).unwrap(),
                ),
            })
            .collect();
        cfg.submission.senders.insert("alice".into(), patterns);
    }
    Arc::new(cfg)
}

/// Every AUTH case of RFC 4954 we answer, fed whole, byte by byte and in
/// random splits: (input after EHLO, the replies after the EHLO reply).
#[test]
fn auth_cases() {
    let cases: &[(&str, &[&str])] = &[
        // PLAIN with an initial response.
        ("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", &["235 2.7.0"]),
        // authzid equal to authcid is fine.
        ("AUTH PLAIN YWxpY2UAYWxpY2UAc2VjcmV0\r\n", &["235 2.7.0"]),
        // PLAIN with the 334 continuation.
        (
            "AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
            &["334 ", "235 2.7.0"],
        ),
        // LOGIN.
        (
            "AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
            &["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0"],
        ),
        // LOGIN with the user name as initial response.
        (
            "AUTH LOGIN YWxpY2U=\r\nc2VjcmV0\r\n",
            &["334 UGFzc3dvcmQ6", "235 2.7.0"],
        ),
        // Bad base64, initial and continued.
        ("AUTH PLAIN !!!notbase64\r\n", &["501 5.5.2"]),
        ("AUTH PLAIN\r\n%%%\r\n", &["334 ", "501 5.5.2"]),
        (
            "AUTH LOGIN\r\nYWxpY2U=\r\n@@\r\n",
            &["334 VXN", "334 UGF", "501 5.5.2"],
        ),
        // No NULs in PLAIN.
        ("AUTH PLAIN bm9udWw=\r\n", &["501 5.5.2"]),
        // Wrong password; acting as another user.
        ("AUTH PLAIN AGFsaWNlAHdyb25n\r\n", &["535 5.7.8"]),
        ("AUTH PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n", &["535 5.7.8"]),
        // `*` cancels.
        ("AUTH PLAIN\r\n*\r\n", &["334 ", "501 5.7.0"]),
        (
            "AUTH LOGIN\r\nYWxpY2U=\r\n*\r\n",
            &["334 VXN", "334 UGF", "501 5.7.0"],
        ),
        // Unknown mechanism (CRAM-MD5 is not offered).
        ("AUTH CRAM-MD5\r\n", &["504 5.5.4"]),
        // AUTH twice.
        (
            "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
            &["235 2.7.0", "503 5.5.1"],
        ),
        // AUTH inside a transaction (after AUTH, so MAIL was accepted).
        (
            "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.test>\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
            &["235 2.7.0", "250 2.1.0", "503 5.5.1"],
        ),
        // MAIL without AUTH on a submission listener.
        ("MAIL FROM:<x@example.test>\r\n", &["530 5.7.0"]),
        // SCRAM-SHA-256, the RFC 7677 exchange: client-first as the initial
        // response, server-first, client-final, server-final, empty, 235.
        (
            "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\nYz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==\r\n\r\n",
            &[
                "334 cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=",
                "334 dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==",
                "235 2.7.0",
            ],
        ),
        // SCRAM without an initial response.
        (
            "AUTH SCRAM-SHA-256\r\nbiwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\n",
            &["334 ", "334 cj1y"],
        ),
        // SCRAM with a wrong proof (the last base64 character changed).
        (
            "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\nYz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZSPQ==\r\n",
            &["334 cj1y", "535 5.7.8"],
        ),
        // SCRAM: channel binding asked for (p=), and garbage.
        (
            "AUTH SCRAM-SHA-256 cD10bHMtdW5pcXVlLCxuPXVzZXIscj1hYmM=\r\n",
            &["501 5.5.2"],
        ),
        ("AUTH SCRAM-SHA-256 Z2FyYmFnZQ==\r\n", &["501 5.5.2"]),
        // SCRAM: anything but an empty line after server-final cancels, and
        // the session is not authenticated.
        (
            "AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=\r\nYz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==\r\n*\r\nMAIL FROM:<user@example.test>\r\n",
            &["334 cj1y", "334 dj02", "501 5.7.0", "530 5.7.0"],
        ),
        // XOAUTH2 and OAUTHBEARER with a good token.
        (
            "AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBnb29kLXRva2VuAQE=\r\n",
            &["235 2.7.0"],
        ),
        (
            "AUTH OAUTHBEARER biw=\r\nbixhPWFsaWNlLAFhdXRoPUJlYXJlciBnb29kLXRva2VuAQE=\r\n",
            &["501 5.5.2", "500 5.5.1"],
        ),
        (
            "AUTH OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJlYXJlciBnb29kLXRva2VuAQE=\r\n",
            &["235 2.7.0"],
        ),
        // A bad token: the 334 error challenge, the client's %x01, 535.
        (
            "AUTH OAUTHBEARER bixhPWFsaWNlLAFhdXRoPUJlYXJlciBiYWQBAQ==\r\nAQ==\r\n",
            &["334 eyJ", "535 5.7.8"],
        ),
        // The endpoint is down: 454 4.7.0, and the session goes on.
        (
            "AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBkb3duAQE=\r\n",
            &["454 4.7.0"],
        ),
        // A failure, then success; commands work after a cancelled exchange.
        (
            "AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN\r\n*\r\nNOOP\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
            &["535 5.7.8", "334 ", "501 5.7.0", "250 2.0.0", "235 2.7.0"],
        ),
    ];
    for (input, want) in cases {
        let full = format!("EHLO c.test\r\n{input}");
        let r = run_all_ways(submissions(&[]), OUTSIDE, full.as_bytes());
        let after: Vec<&String> = r
            .replies
            .iter()
            .skip_while(|l| l.starts_with("250-"))
            .skip(1)
            .collect();
        assert_eq!(after.len(), want.len(), "{input:?}: {:?}", r.replies);
        for (got, want) in after.iter().zip(want.iter()) {
            assert!(got.starts_with(want), "{input:?}: {got:?} is not {want:?}");
        }
    }
}

/// AUTH is advertised only with TLS on a listener that offers it; before
/// TLS it is refused: 530 5.7.0 on `submission` (STARTTLS first), 538
/// 5.7.11 on `smtp` with `auth_on_smtp` (RFC 4954 §4).
#[test]
fn auth_only_after_tls() {
    let sub = config(Role::Submission, BareNewline::Reject);
    let r = run_all_ways(
        sub.clone(),
        OUTSIDE,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    );
    assert!(
        !r.replies
            .iter()
            .any(|l| l.starts_with("250") && l.contains("AUTH ")),
        "{:?}",
        r.replies
    );
    assert!(
        r.replies.last().unwrap().starts_with("530 5.7.0"),
        "{:?}",
        r.replies
    );
    let mut on_smtp = (*smtp()).clone();
    on_smtp.auth = true;
    let r = run_all_ways(
        Arc::new(on_smtp),
        OUTSIDE,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    );
    assert!(
        r.replies.last().unwrap().starts_with("538 5.7.11"),
        "{:?}",
        r.replies
    );
    // After STARTTLS it is offered and works.
    let r = run_chunks(
        sub,
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        ],
    );
    assert!(
        r.replies
            .iter()
            .any(|l| &l[4..] == "AUTH PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2"),
        "{:?}",
        r.replies
    );
    assert!(
        r.replies.last().unwrap().starts_with("235 2.7.0"),
        "{:?}",
        r.replies
    );
    // Implicit TLS: offered at once.
    let r = run_all_ways(submissions(&[]), OUTSIDE, b"EHLO c.test\r\n");
    assert!(
        r.replies
            .iter()
            .any(|l| l.contains("AUTH PLAIN LOGIN SCRAM-SHA-256")),
        "{:?}",
        r.replies
    );
    // Role smtp (auth_on_smtp off): not offered even after TLS, 502.
    let r = run_chunks(
        smtp(),
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        ],
    );
    assert!(
        !r.replies
            .iter()
            .any(|l| l.starts_with("250") && l.contains("AUTH ")),
        "{:?}",
        r.replies
    );
    assert!(
        r.replies.last().unwrap().starts_with("502"),
        "{:?}",
        r.replies
    );
}

/// After `max_auth_failures` (3) failures: 421 4.7.0 and the session ends.
#[test]
fn auth_lockout() {
    let bad = "AUTH PLAIN AGFsaWNlAHdyb25n\r\n";
    let input = format!("EHLO c.test\r\n{bad}{bad}{bad}NOOP\r\n");
    let r = run_all_ways(submissions(&[]), OUTSIDE, input.as_bytes());
    let tail: Vec<_> = codes(&r).into_iter().rev().take(4).collect();
    assert_eq!(tail, ["421", "535", "535", "535"], "{:?}", r.replies);
    assert!(r.replies.last().unwrap().starts_with("421 4.7.0"));
    assert!(r.closed);
}

/// A 454 (the check could not be made) counts as a failed attempt of the
/// session: three of them end it like three wrong passwords would, so a
/// client cannot keep a session retrying for free while the endpoint (or
/// the hashing queue) is overloaded; a temporary answer mixed with
/// failures counts the same.
#[test]
fn auth_temporary_failures_count_for_the_session() {
    let down = "AUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBkb3duAQE=\r\n";
    let bad = "AUTH PLAIN AGFsaWNlAHdyb25n\r\n";
    for input in [
        format!("EHLO c.test\r\n{down}{down}{down}NOOP\r\n"),
        format!("EHLO c.test\r\n{bad}{down}{bad}NOOP\r\n"),
    ] {
        let r = run_all_ways(submissions(&[]), OUTSIDE, input.as_bytes());
        let tail: Vec<_> = codes(&r).into_iter().rev().take(4).collect();
        assert_eq!(tail[0], "421", "{input:?}: {:?}", r.replies);
        assert!(
            r.replies.last().unwrap().starts_with("421 4.7.0"),
            "{:?}",
            r.replies
        );
        assert!(r.closed, "{input:?}");
    }
}

/// Each message comes with the session's record of its arrival (client,
/// HELO, TLS, user, and the origin its envelope will carry), so nothing
/// later reads these from the message's bytes.
#[test]
fn each_message_carries_its_arrival() {
    let message =
        "MAIL FROM:<alice@example.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\n";
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        format!("EHLO c.test\r\n{message}").as_bytes(),
    );
    let relayed = Arrival {
        client_ip: OUTSIDE.parse().unwrap(),
        helo: "c.test".into(),
        esmtp: true,
        tls: None,
        authenticated: None,
        trusted: false,
        may_waive_tls: false,
        origin: portcullis_types::Origin::Relay,
    };
    assert_eq!(r.arrivals, vec![relayed.clone()]);
    let auth = "EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
    let r = run_all_ways(
        submissions(&[]),
        OUTSIDE,
        format!("{auth}{message}").as_bytes(),
    );
    let submitted = Arrival {
        tls: Some(TlsSummary {
            version: "TLSv1.3".into(),
            cipher: "X".into(),
        }),
        authenticated: Some("alice".into()),
        trusted: false,
        may_waive_tls: true,
        origin: portcullis_types::Origin::Submission,
        ..relayed
    };
    assert_eq!(r.arrivals, vec![submitted]);
}

/// Authenticated: relay anywhere, the message names the user; MAIL FROM
/// must be the user's (553 5.7.1 otherwise); unauthenticated relaying is
/// refused.
#[test]
fn authenticated_relay_and_sender_ownership() {
    let auth = "EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
    let r = run_all_ways(
        submissions(&[]),
        OUTSIDE,
        format!("{auth}MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@elsewhere.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n").as_bytes(),
    );
    assert_eq!(r.messages.len(), 1, "{:?}", r.replies);
    assert_eq!(r.users, vec![Some("alice".to_string())]);
    assert_eq!(r.verified, vec![false]);
    // Not alice's address: refused.
    for from in ["bob@example.test", "alice@elsewhere.test"] {
        let r = run_all_ways(
            submissions(&[]),
            OUTSIDE,
            format!("{auth}MAIL FROM:<{from}>\r\n").as_bytes(),
        );
        assert!(
            r.replies.last().unwrap().starts_with("553 5.7.1"),
            "{from}: {:?}",
            r.replies
        );
    }
    // With a senders map: exactly what it lists.
    let cfg = submissions(&["shared@example.test", "@other.test"]);
    for (from, ok) in [
        ("shared@example.test", true),
        ("SHARED@EXAMPLE.TEST", true),
        ("anyone@other.test", true),
        ("alice@example.test", false),
    ] {
        let r = run_all_ways(
            cfg.clone(),
            OUTSIDE,
            format!("{auth}MAIL FROM:<{from}>\r\n").as_bytes(),
        );
        let last = r.replies.last().unwrap();
        assert_eq!(last.starts_with("250"), ok, "{from}: {last}");
    }
    // Without AUTH: no mail at all on a submission listener (it would
    // bypass port 25's verification); on port 25 only accepted domains.
    let r = run_all_ways(
        submissions(&[]),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<alice@example.test>\r\n",
    );
    assert!(
        r.replies.last().unwrap().starts_with("530 5.7.0"),
        "{:?}",
        r.replies
    );
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@elsewhere.test>\r\n",
    );
    assert!(
        r.replies.last().unwrap().starts_with("554 5.7.1"),
        "{:?}",
        r.replies
    );
}

/// Without `[submission.oauth]` the bearer mechanisms are neither
/// advertised nor accepted.
#[test]
fn bearer_mechanisms_only_with_oauth() {
    let mut cfg = (*submissions(&[])).clone();
    cfg.oauth = false;
    let r = run_all_ways(
        Arc::new(cfg),
        OUTSIDE,
        b"EHLO c.test\r\nAUTH XOAUTH2 dXNlcj1hbGljZQFhdXRoPUJlYXJlciBnb29kLXRva2VuAQE=\r\n",
    );
    assert!(
        r.replies
            .iter()
            .any(|l| l == "250 AUTH PLAIN LOGIN SCRAM-SHA-256"),
        "{:?}",
        r.replies
    );
    assert!(r.replies.last().unwrap().starts_with("504 5.5.4"));
}

/// An address locked out by the brute-force defence gets 421 4.7.0 at the
/// AUTH command, before any credential; others are unaffected.
#[test]
fn locked_out_address_is_refused_at_auth() {
    let cfg = submissions(&[]);
    let now = std::time::Instant::now();
    let mut started = None;
    for _ in 0..10 {
        started = cfg
            .guard
            .failure(OUTSIDE.parse().unwrap(), "someone", now)
            .locked;
    }
    assert!(started.is_some());
    let r = run_all_ways(
        cfg.clone(),
        OUTSIDE,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nNOOP\r\n",
    );
    let last = r.replies.last().unwrap();
    assert!(last.starts_with("421 4.7.0"), "{:?}", r.replies);
    assert!(last.contains("try again in 15 minutes"), "{last}");
    assert!(r.closed);
    let other = "192.0.2.200";
    let r = run_all_ways(
        cfg,
        other,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    );
    assert!(
        r.replies.last().unwrap().starts_with("235"),
        "{:?}",
        r.replies
    );
}

/// A lockout started by a failure: 535, then 421 4.7.0 and close.
#[test]
fn failure_that_starts_a_lockout_closes() {
    let cfg = submissions(&[]);
    let mut s = Session::new(cfg, OUTSIDE.parse().unwrap());
    s.set_tls(TlsSummary {
        version: "TLSv1.3".into(),
        cipher: "X".into(),
    });
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    assert!(matches!(s.step(&mut out), Event::CheckAuth(_)));
    let lock = portcullis_submission::lockout::Lock {
        scope: portcullis_submission::lockout::Scope::User,
        remaining: Duration::from_secs(900),
    };
    s.auth_checked(
        AuthOutcome::Failed {
            challenge: None,
            lockout: Some(lock),
        },
        &mut out,
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("535 5.7.8"), "{text}");
    assert!(text.ends_with("try again in 15 minutes\r\n"), "{text}");
    assert!(matches!(s.step(&mut Vec::new()), Event::Close));
}

/// Per-user limits: recipients per message (452 4.7.1 past it, the
/// accepted ones kept) and messages per hour (452 4.7.1 at MAIL FROM once
/// the hour's messages are sent); other users and unauthenticated
/// trusted clients are not limited by them.
#[test]
fn per_user_sending_limits() {
    let mut cfg = (*submissions(&["@example.test"])).clone();
    cfg.submission.limits = portcullis_config::UserLimits {
        messages_per_hour: 2,
        recipients_per_message: 2,
    };
    let cfg = Arc::new(cfg);
    let auth = "EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n";
    let msg = "MAIL FROM:<alice@example.test>\r\nRCPT TO:<a@elsewhere.test>\r\nRCPT TO:<b@elsewhere.test>\r\nRCPT TO:<c@elsewhere.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";
    let r = run_chunks(
        cfg.clone(),
        OUTSIDE,
        &[format!("{auth}{msg}{msg}{msg}").as_bytes()],
    );
    assert_eq!(r.messages.len(), 2, "{:?}", r.replies);
    assert_eq!(r.messages[0].1, ["a@elsewhere.test", "b@elsewhere.test"]);
    let limited: Vec<&String> = r.replies.iter().filter(|l| l.starts_with("452")).collect();
    assert_eq!(limited.len(), 3, "{:?}", r.replies);
    assert!(
        limited[0].starts_with("452 4.7.1 Too many recipients"),
        "{}",
        limited[0]
    );
    assert!(
        limited[2].starts_with("452 4.7.1 Sending limit of 2 messages per hour"),
        "{}",
        limited[2]
    );
    // Trusted, unauthenticated: no per-user limit.
    let r = run_chunks(
        cfg,
        "10.1.2.3",
        &[b"EHLO c.test\r\nMAIL FROM:<x@example.test>\r\nRCPT TO:<a@elsewhere.test>\r\nRCPT TO:<b@elsewhere.test>\r\nRCPT TO:<c@elsewhere.test>\r\n"],
    );
    let tail: Vec<&str> = codes(&r).into_iter().rev().take(4).collect();
    assert_eq!(tail, ["250", "250", "250", "250"], "{:?}", r.replies);
}
