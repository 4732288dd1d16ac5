//! Client tests against scripted peers over in-memory streams, and the
//! sans-IO helpers fed whole, byte by byte and in random splits.

use std::time::Duration;

use portcullis_tls::{ClientTls, TlsResultType};
use portcullis_types::{BodyType, Reply};
use rustls::RootCertStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::data::headers_are_ascii;
use super::*;

/// One step of a scripted peer.
#[derive(Debug, Clone)]
enum Step {
    /// Write these bytes at once.
    Say(&'static str),
    /// Write these bytes one at a time.
    Drip(&'static str),
    /// Read one line and check that it starts with this.
    Expect(&'static str),
    /// Read data lines up to and including `.` CRLF.
    ExpectData,
    /// Read exactly this many octets.
    ExpectBytes(usize),
    /// Never do anything again.
    Stall,
}
use Step::*;

/// What the scripted peer read: command lines, and content.
#[derive(Debug, Default)]
struct Heard {
    lines: Vec<String>,
    data: Vec<u8>,
}

async fn peer(io: DuplexStream, steps: Vec<Step>) -> Heard {
    let mut io = BufReader::new(io);
    let mut heard = Heard::default();
    for step in steps {
        match step {
            Say(bytes) => io.get_mut().write_all(bytes.as_bytes()).await.unwrap(),
            Drip(bytes) => {
                for b in bytes.as_bytes() {
                    io.get_mut().write_all(&[*b]).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            Expect(prefix) => {
                let mut line = String::new();
                io.read_line(&mut line).await.unwrap();
                assert!(
                    line.starts_with(prefix),
                    "expected {prefix:?}, got {line:?}"
                );
                heard.lines.push(line.trim_end().to_owned());
            }
            ExpectData => loop {
                let mut line = Vec::new();
                io.read_until(b'\n', &mut line).await.unwrap();
                assert!(!line.is_empty(), "EOF in data");
                heard.data.extend_from_slice(&line);
                if line == b".\r\n" {
                    break;
                }
            },
            ExpectBytes(n) => {
                let mut buf = vec![0u8; n];
                io.read_exact(&mut buf).await.unwrap();
                heard.data.extend_from_slice(&buf);
            }
            Stall => std::future::pending::<()>().await,
        }
    }
    heard
}

fn tx<'a>(message: &'a [u8], rcpts: &[&'a str]) -> Transaction<'a> {
    Transaction {
        mail_from: "a@example.test",
        recipients: rcpts.iter().map(|r| RcptSpec::new(r)).collect(),
        message: message.into(),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        require_tls: false,
    }
}

fn opportunistic() -> TlsDecision {
    TlsDecision::opportunistic(&ClientTls::with_roots(RootCertStore::empty()))
}

/// Runs the client against a scripted peer; returns the report and what the peer heard.
async fn run(
    steps: Vec<Step>,
    tls: TlsDecision,
    tx: &Transaction<'_>,
    timeouts: Timeouts,
) -> (SessionReport, Heard) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer = tokio::spawn(peer(server, steps));
    let report = deliver_session(
        client,
        "mx.example.test",
        "client.example.test",
        tls,
        tx,
        &timeouts,
    )
    .await;
    let heard = peer.await.unwrap();
    (report, heard)
}

const GREETING: Step = Say("220 mx.example.test ESMTP ready\r\n");
const EHLO_PLAIN: Step = Say("250-mx.example.test hello\r\n250 ENHANCEDSTATUSCODES\r\n");

fn short() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(5))
}

#[track_caller]
fn assert_code(reply: Option<&Reply>, code: u16) {
    assert_eq!(reply.map(|r| r.code), Some(code), "{reply:?}");
}

#[tokio::test]
async fn greeting_refusal_is_classified_by_its_code() {
    for (greeting, code, permanent) in [
        (Say("421 4.3.2 mx.example.test busy\r\n"), 421, false),
        (
            Say("554-5.3.2 mx.example.test\r\n554 5.3.2 no SMTP service here\r\n"),
            554,
            true,
        ),
    ] {
        let msg = b"x\r\n";
        let t = tx(msg, &["b@example.test"]);
        let (report, heard) = run(
            vec![greeting, Expect("QUIT"), Say("221 bye\r\n")],
            opportunistic(),
            &t,
            short(),
        )
        .await;
        let Err(SessionError::Greeting(reply)) = &report.result else {
            panic!("{report:?}");
        };
        assert_eq!(reply.code, code);
        assert_eq!(reply.is_permanent(), permanent);
        assert_eq!(
            report.result.as_ref().unwrap_err().is_permanent(),
            permanent
        );
        assert_eq!(report.greeting.as_ref(), Some(reply));
        assert_eq!(report.peer_name.as_deref(), Some("mx.example.test"));
        assert_eq!(report.tls, TlsOutcome::NotAttempted);
        assert_eq!(report.tls.failure(), None);
        assert_eq!(heard.lines, vec!["QUIT"]);
    }
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo_without_extensions() {
    let msg = b"Subject: hi\r\n\r\nbody\r\n";
    let mut t = tx(msg, &["b@example.test"]);
    t.body = BodyType::EightBitMime;
    let (report, heard) = run(
        vec![
            GREETING,
            Expect("EHLO client.example.test"),
            Say("502 5.5.2 what?\r\n"),
            Expect("HELO client.example.test"),
            Say("250 old.example.test\r\n"),
            Expect("MAIL FROM:<a@example.test>\r\n"),
            Say("250 ok\r\n"),
            Expect("RCPT TO:<b@example.test>\r\n"),
            Say("250 ok\r\n"),
            Expect("DATA"),
            Say("354 go\r\n"),
            ExpectData,
            Say("250 queued\r\n"),
            Expect("QUIT"),
            Say("221 bye\r\n"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    let tr = report.result.expect("delivered");
    assert!(tr.delivered(0));
    assert_eq!(report.peer_name.as_deref(), Some("old.example.test"));
    assert!(!report.capabilities.unwrap().esmtp);
    assert_eq!(report.tls, TlsOutcome::NotOffered);
    assert_eq!(heard.data, b"Subject: hi\r\n\r\nbody\r\n.\r\n");
}

#[tokio::test]
async fn ehlo_4xx_ends_the_session() {
    let t = tx(b"x", &["b@example.test"]);
    let (report, _) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            Say("421 4.3.0 try later\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(
        matches!(&report.result, Err(SessionError::Ehlo(r)) if r.code == 421),
        "{report:?}"
    );
    assert!(!report.result.unwrap_err().is_permanent());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_peer_times_out_at_its_stage() {
    for (steps, stage) in [
        (vec![Stall], Stage::Greeting),
        (vec![GREETING, Expect("EHLO"), Stall], Stage::Ehlo),
        (
            vec![GREETING, Expect("EHLO"), EHLO_PLAIN, Expect("MAIL"), Stall],
            Stage::Mail,
        ),
        (
            vec![
                GREETING,
                Expect("EHLO"),
                EHLO_PLAIN,
                Expect("MAIL"),
                Say("250 ok\r\n"),
                Expect("RCPT"),
                Say("250 ok\r\n"),
                Expect("DATA"),
                Say("354 go\r\n"),
                ExpectData,
                Stall,
            ],
            Stage::DataEnd,
        ),
    ] {
        let t = tx(b"x\r\n", &["b@example.test"]);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(peer(server, steps));
        let start = tokio::time::Instant::now();
        let report = deliver_session(
            client,
            "mx.example.test",
            "client.example.test",
            opportunistic(),
            &t,
            &Timeouts::default(),
        )
        .await;
        peer.abort();
        assert_eq!(report.result, Err(SessionError::Timeout { stage }));
        assert!(!report.result.unwrap_err().is_permanent());
        // The RFC 5321 §4.5.3.2 value of that stage, not more.
        let waited = start.elapsed();
        let limit = Timeouts::default().for_stage(stage);
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(1),
            "{stage}: {waited:?}"
        );
    }
}

#[tokio::test]
async fn replies_arriving_byte_by_byte_are_read_whole() {
    let t = tx(b"x\r\n", &["b@example.test", "c@example.test"]);
    let (report, heard) = run(
        vec![
            Drip("220-mx.example.test ESMTP\r\n220 second line\r\n"),
            Expect("EHLO"),
            Drip("250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"),
            Expect("MAIL FROM:<a@example.test> SIZE=3\r\n"),
            Expect("RCPT TO:<b@example.test>"),
            Expect("RCPT TO:<c@example.test>"),
            Expect("DATA"),
            Drip(
                "250 2.1.0 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n250 2.1.5 ok\r\n354 go\r\n",
            ),
            ExpectData,
            Drip("250 2.0.0 queued as X\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    let greeting = report.greeting.unwrap();
    assert_eq!(greeting.lines, vec!["mx.example.test ESMTP", "second line"]);
    let tr = report.result.unwrap();
    assert_eq!(tr.rcpts[0].code, 550);
    assert_eq!(tr.rcpts[0].enhanced, Some((5, 1, 1)));
    assert_eq!(tr.rcpts[0].lines, vec!["no such", "user"]);
    assert!(!tr.delivered(0));
    assert!(tr.delivered(1));
    assert_code(tr.outcome(0), 550);
    assert_code(tr.outcome(1), 250);
    assert_eq!(tr.data.unwrap().enhanced, Some((2, 0, 0)));
    assert_eq!(heard.data, b"x\r\n.\r\n");
}

#[tokio::test]
async fn unparsable_replies_are_protocol_errors() {
    let t = tx(b"x", &["b@example.test"]);
    let (report, _) = run(vec![Say("hello there\r\n")], opportunistic(), &t, short()).await;
    assert!(
        matches!(
            report.result,
            Err(SessionError::Protocol {
                stage: Stage::Greeting,
                ..
            })
        ),
        "{report:?}"
    );
}

#[tokio::test]
async fn bytes_pushed_after_the_starttls_220_abort_the_session() {
    let t = tx(b"x", &["b@example.test"]);
    let (report, _) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            Say("250-mx.example.test\r\n250 STARTTLS\r\n"),
            Expect("STARTTLS"),
            Say("220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(
        matches!(
            report.result,
            Err(SessionError::Protocol {
                stage: Stage::StartTls,
                ..
            })
        ),
        "{report:?}"
    );
    assert!(
        matches!(report.tls, TlsOutcome::Failed { .. }),
        "{:?}",
        report.tls
    );
}

#[tokio::test]
async fn starttls_refused_continues_in_clear_only_when_opportunistic() {
    let steps = |rest: Vec<Step>| {
        let mut v = vec![
            GREETING,
            Expect("EHLO"),
            Say("250-mx.example.test\r\n250 STARTTLS\r\n"),
            Expect("STARTTLS"),
            Say("454 4.7.0 TLS not available\r\n"),
        ];
        v.extend(rest);
        v
    };
    let t = tx(b"x", &["b@example.test"]);
    let (report, heard) = run(
        steps(vec![
            Expect("MAIL"),
            Say("250 ok\r\n"),
            Expect("RCPT"),
            Say("250 ok\r\n"),
            Expect("DATA"),
            Say("354 go\r\n"),
            ExpectData,
            Say("250 ok\r\n"),
            Expect("QUIT"),
        ]),
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(
        report.tls.failure(),
        Some(TlsResultType::StartTlsNotSupported)
    );
    assert_eq!(heard.data, b"x\r\n.\r\n");

    let required = TlsDecision::Required {
        config: ClientTls::with_roots(RootCertStore::empty())
            .opportunistic_config()
            .0,
    };
    let (report, heard) = run(steps(vec![Expect("QUIT")]), required, &t, short()).await;
    assert!(
        matches!(&report.result, Err(SessionError::StartTls(r)) if r.code == 454),
        "{report:?}"
    );
    assert_eq!(
        report.tls.failure(),
        Some(TlsResultType::StartTlsNotSupported)
    );
    assert!(!heard.lines.iter().any(|l| l.starts_with("MAIL")));
}

#[tokio::test]
async fn refused_mail_keeps_the_whole_reply() {
    for (pipelining, steps) in [
        (
            false,
            vec![
                GREETING,
                Expect("EHLO"),
                EHLO_PLAIN,
                Expect("MAIL"),
                Say("550-5.7.1 sender rejected\r\n550 5.7.1 see https://example.test/why\r\n"),
                Expect("QUIT"),
            ],
        ),
        (
            true,
            vec![
                GREETING,
                Expect("EHLO"),
                Say("250-mx.example.test\r\n250 PIPELINING\r\n"),
                Expect("MAIL"),
                Expect("RCPT"),
                Expect("DATA"),
                Say(
                    "550-5.7.1 sender rejected\r\n550 5.7.1 see https://example.test/why\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n",
                ),
                Expect("QUIT"),
            ],
        ),
    ] {
        let t = tx(b"x", &["b@example.test"]);
        let (report, _) = run(steps, opportunistic(), &t, short()).await;
        let Err(e @ SessionError::Mail(reply)) = &report.result else {
            panic!("pipelining {pipelining}: {report:?}");
        };
        assert!(e.is_permanent());
        assert_eq!(e.status(), (5, 7, 1));
        assert_eq!(reply.code, 550);
        assert_eq!(
            reply.lines,
            vec!["sender rejected", "see https://example.test/why"]
        );
    }
}

#[tokio::test]
async fn no_accepted_recipient_means_rset_or_no_data() {
    // Lock-step: RSET instead of DATA.
    let t = tx(b"x", &["b@example.test"]);
    let (report, heard) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            EHLO_PLAIN,
            Expect("MAIL"),
            Say("250 ok\r\n"),
            Expect("RCPT"),
            Say("550 5.1.1 no\r\n"),
            Expect("RSET"),
            Say("250 ok\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    let tr = report.result.unwrap();
    assert_eq!(tr.data, None);
    assert_eq!(tr.accepted(), 0);
    assert_code(tr.outcome(0), 550);
    assert!(!heard.lines.iter().any(|l| l == "DATA"));

    // Pipelined: DATA was in the group; a peer that says 354 anyway gets an
    // empty content.
    let (report, heard) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            Say("250-mx.example.test\r\n250 PIPELINING\r\n"),
            Expect("MAIL"),
            Expect("RCPT"),
            Expect("DATA"),
            Say("250 ok\r\n550 5.1.1 no\r\n354 go anyway\r\n"),
            ExpectData,
            Say("554 5.5.1 no valid recipients\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert_eq!(report.result.unwrap().data, None);
    assert_eq!(heard.data, b".\r\n");
}

#[tokio::test]
async fn refused_data_is_the_outcome_of_accepted_recipients() {
    let t = tx(b"x", &["b@example.test"]);
    let (report, _) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            EHLO_PLAIN,
            Expect("MAIL"),
            Say("250 ok\r\n"),
            Expect("RCPT"),
            Say("250 ok\r\n"),
            Expect("DATA"),
            Say("451 4.3.0 later\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    let tr = report.result.unwrap();
    assert!(!tr.delivered(0));
    assert_code(tr.outcome(0), 451);
}

#[tokio::test]
async fn binarymime_goes_by_bdat_or_not_at_all() {
    let msg = b"bin\x00ary\r\n.\r\n";
    let mut t = tx(msg, &["b@example.test"]);
    t.body = BodyType::BinaryMime;
    let (report, heard) = run(
        vec![
            GREETING,
            Expect("EHLO"),
            Say("250-mx.example.test\r\n250-CHUNKING\r\n250 BINARYMIME\r\n"),
            Expect("MAIL FROM:<a@example.test> BODY=BINARYMIME\r\n"),
            Say("250 ok\r\n"),
            Expect("RCPT"),
            Say("250 ok\r\n"),
            Expect("BDAT 12 LAST\r\n"),
            ExpectBytes(msg.len()),
            Say("250 2.0.0 ok\r\n"),
            Expect("QUIT"),
        ],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(heard.data, msg);

    let (report, heard) = run(
        vec![GREETING, Expect("EHLO"), EHLO_PLAIN, Expect("QUIT")],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    let err = report.result.unwrap_err();
    assert_eq!(err, SessionError::BinaryMimeUnsupported);
    assert!(err.is_permanent());
    assert_eq!(heard.lines.len(), 2);
}

#[tokio::test]
async fn control_characters_in_the_envelope_are_never_written() {
    let mut t = tx(b"x", &["b@example.test\r\nRCPT TO:<evil@example.test>"]);
    let (report, heard) = run(
        vec![GREETING, Expect("EHLO"), EHLO_PLAIN, Expect("QUIT")],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(
        matches!(report.result, Err(SessionError::InvalidEnvelope { .. })),
        "{report:?}"
    );
    assert!(!heard.lines.iter().any(|l| l.contains("evil")));
    t.recipients.clear();
    let (report, _) = run(
        vec![GREETING, Expect("EHLO"), EHLO_PLAIN, Expect("QUIT")],
        opportunistic(),
        &t,
        short(),
    )
    .await;
    assert!(
        matches!(report.result, Err(SessionError::InvalidEnvelope { .. })),
        "{report:?}"
    );
}

#[test]
fn the_session_future_is_send() {
    fn check<F: std::future::Future + Send>(_: F) {}
    let t = tx(b"x", &["b@example.test"]);
    let (client, _server) = tokio::io::duplex(16);
    let timeouts = Timeouts::default();
    check(deliver_session(
        client,
        "mx.example.test",
        "client.example.test",
        TlsDecision::Disabled,
        &t,
        &timeouts,
    ));
}

#[test]
fn capabilities_come_from_smtp_proto() {
    let caps = Capabilities::from_ehlo(
        b"250-mx.example.test greets you\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-STARTTLS\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n",
    );
    assert_eq!(
        caps,
        Capabilities {
            hostname: "mx.example.test".into(),
            esmtp: true,
            starttls: true,
            pipelining: true,
            size: Some(52_428_800),
            eightbitmime: true,
            smtputf8: true,
            dsn: true,
            chunking: true,
            binarymime: false,
            enhanced_status_codes: true,
            requiretls: false,
        }
    );
    let bare = Capabilities::from_ehlo(b"250 mx.example.test\r\n");
    assert_eq!(bare.hostname, "mx.example.test");
    assert!(!bare.starttls && !bare.pipelining && bare.size.is_none());
    // SIZE without a number: no fixed limit (RFC 1870 §4).
    let unlimited = Capabilities::from_ehlo(b"250-mx\r\n250 SIZE\r\n");
    assert_eq!(unlimited.size, Some(0));
    assert_eq!(unlimited.size_limit(), None);
}

#[test]
fn one_bad_ehlo_line_costs_only_itself() {
    let caps = Capabilities::from_ehlo(
        b"250-mx.example.test\r\n250-PIPELINING\r\n251-WEIRD\r\n250-STARTTLS\r\n250 DSN\r\n",
    );
    assert_eq!(caps.hostname, "mx.example.test");
    assert!(caps.pipelining && caps.starttls && caps.dsn, "{caps:?}");
}

/// Feeds `input` whole, byte by byte and in pseudo-random splits; all must agree.
#[track_caller]
fn stuff_every_way(input: &[u8]) -> Vec<u8> {
    let whole = DotStuffer::stuff_all(input);
    let mut bytewise = DotStuffer::new();
    let mut out = Vec::new();
    for b in input {
        bytewise.push(std::slice::from_ref(b), &mut out);
    }
    bytewise.finish(&mut out);
    assert_eq!(out, whole, "byte by byte");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..50 {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = usize::try_from(seed % 7).unwrap().min(rest.len()).max(1);
            s.push(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        s.finish(&mut out);
        assert_eq!(out, whole, "random split");
    }
    whole
}

#[test]
fn dot_stuffing_per_rfc_5321_4_5_2() {
    for (input, want) in [
        (&b""[..], &b".\r\n"[..]),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a.b\r\n.x", b"a.b\r\n..x\r\n.\r\n"),
        // A bare LF or bare CR starts a line too: no smuggled terminator.
        (b"a\n.\r\nb", b"a\n..\r\nb\r\n.\r\n"),
        (b"a\r.\r\nb", b"a\r..\r\nb\r\n.\r\n"),
        (b"a\n", b"a\n\r\n.\r\n"),
        (b"a\r", b"a\r\r\n.\r\n"),
    ] {
        assert_eq!(
            stuff_every_way(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn xtext_per_rfc_3461_4() {
    for (input, want) in [
        ("abc", "abc"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("a b", "a+20b"),
        ("rfc822;x@example.test", "rfc822;x@example.test"),
        ("ü", "+C3+BC"),
        ("\r\n", "+0D+0A"),
    ] {
        assert_eq!(xtext(input), want, "{input:?}");
    }
}

#[test]
fn header_section_ascii_check() {
    assert!(headers_are_ascii(b"Subject: hi\r\n\r\nbody \xc3\xbc"));
    assert!(!headers_are_ascii(b"Subject: \xc3\xbc\r\n\r\nbody"));
    assert!(headers_are_ascii(b"Subject: hi\n\nbody \xc3\xbc"));
    assert!(headers_are_ascii(b""));
}

#[test]
fn permanence_and_status_of_local_errors() {
    for (err, permanent, status) in [
        (
            SessionError::SizeExceeded { size: 2, max: 1 },
            true,
            (5, 3, 4),
        ),
        (SessionError::Smtputf8Unsupported, true, (5, 6, 7)),
        (SessionError::StartTlsRequired, false, (4, 7, 5)),
        (
            SessionError::Tls {
                result_type: TlsResultType::CertificateExpired,
                detail: String::new(),
            },
            false,
            (4, 7, 5),
        ),
        (
            SessionError::Timeout {
                stage: Stage::DataEnd,
            },
            false,
            (4, 4, 2),
        ),
        (
            SessionError::Greeting(Reply::plain(554, "no")),
            true,
            (5, 0, 0),
        ),
        (
            SessionError::Greeting(Reply::plain(421, "busy")),
            false,
            (4, 0, 0),
        ),
        (
            SessionError::Mail(Reply::new(451, (4, 7, 1), "greylisted")),
            false,
            (4, 7, 1),
        ),
        (
            SessionError::Ehlo(Reply::plain(550, "no")),
            false,
            (5, 0, 0),
        ),
    ] {
        assert_eq!(err.is_permanent(), permanent, "{err}");
        assert_eq!(err.status(), status, "{err}");
    }
}

/// REQUIRETLS (RFC 8689) is read from the EHLO reply, also from a reply
/// whose other lines smtp-proto rejects.
#[test]
fn requiretls_is_a_capability() {
    assert!(
        Capabilities::from_ehlo(b"250-mx.test\r\n250-PIPELINING\r\n250 REQUIRETLS\r\n").requiretls
    );
    assert!(
        Capabilities::from_ehlo(b"250-mx.test\r\n250-SIZE abc\r\n250 REQUIRETLS\r\n").requiretls
    );
    assert!(!Capabilities::from_ehlo(b"250-mx.test\r\n250 PIPELINING\r\n").requiretls);
}
