//! Client tests against the scriptable SMTP sink of the test-support crate:
//! real sockets on loopback, real TLS with the test PKI. Every test asserts
//! the TLS outcome as TLS-RPT would record it (STYLE 18), not only the mail.

use std::time::Duration;

use portcullis_test_support::pki::{Issued, TestPki};
use portcullis_test_support::sink::{Sink, SinkConfig, SinkTls};
use portcullis_tls::{ClientTls, TlsResultType};
use portcullis_types::{BodyType, DsnRet, Notify};
use tokio::net::TcpStream;

use super::*;

const MX: &str = "mx.example.test";

fn tx<'a>(message: &'a [u8], rcpts: &[&'a str]) -> Transaction<'a> {
    Transaction {
        mail_from: "sender@example.org",
        recipients: rcpts.iter().map(|r| RcptSpec::new(r)).collect(),
        message: message.into(),
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        require_tls: false,
    }
}

const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: test\r\n\r\nHello.\r\n";

async fn deliver_with(
    sink: &Sink,
    tls: TlsDecision,
    tx: &Transaction<'_>,
    timeouts: Timeouts,
) -> SessionReport {
    let stream = TcpStream::connect(sink.addr())
        .await
        .expect("connect to sink");
    deliver_session(stream, MX, "client.example.org", tls, tx, &timeouts).await
}

async fn deliver(sink: &Sink, tls: TlsDecision, tx: &Transaction<'_>) -> SessionReport {
    deliver_with(sink, tls, tx, Timeouts::uniform(Duration::from_secs(10))).await
}

/// A trust store with only the test CA.
fn client_tls(pki: &TestPki) -> ClientTls {
    ClientTls::with_roots(pki.root_store())
}

fn opportunistic(pki: &TestPki) -> TlsDecision {
    TlsDecision::opportunistic(&client_tls(pki))
}

fn required(pki: &TestPki) -> TlsDecision {
    TlsDecision::required(&client_tls(pki)).expect("PKIX config")
}

fn tls_sink(cert: Issued) -> Sink {
    Sink::start(SinkConfig {
        tls: SinkTls::Cert(cert),
        ..SinkConfig::default()
    })
}

#[track_caller]
fn assert_no_mail(sink: &Sink) {
    let commands = sink.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
        "MAIL was sent: {commands:?}"
    );
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn plain_delivery_without_starttls() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig::default());
    let t = tx(MESSAGE, &["rcpt@example.test"]);
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    let tr = report.result.expect("delivered");
    assert!(tr.delivered(0));
    assert_eq!(report.tls, TlsOutcome::NotOffered);
    assert_eq!(
        report.tls.failure(),
        Some(TlsResultType::StartTlsNotSupported)
    );
    assert_eq!(report.peer_name.as_deref(), Some("sink.example.test"));
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].helo, "client.example.org");
    assert_eq!(got[0].mail_from, "sender@example.org");
    assert_eq!(got[0].rcpts, vec!["rcpt@example.test".to_owned()]);
    assert_eq!(got[0].data, MESSAGE);
    assert_eq!(got[0].tls, None);
    assert_eq!(sink.commands().last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn disabled_tls_ignores_an_offered_starttls() {
    let pki = TestPki::new();
    let sink = tls_sink(pki.issue(&[MX]));
    let report = deliver(
        &sink,
        TlsDecision::Disabled,
        &tx(MESSAGE, &["r@example.test"]),
    )
    .await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(report.tls, TlsOutcome::Disabled);
    assert_eq!(report.tls.failure(), None);
    assert_eq!(sink.received()[0].tls, None);
    assert!(!sink.commands().iter().any(|c| c == "STARTTLS"));
}

#[tokio::test]
async fn pipelining_when_offered_lock_step_otherwise() {
    for pipelining in [true, false] {
        let pki = TestPki::new();
        let sink = Sink::start(SinkConfig {
            pipelining,
            ..SinkConfig::default()
        });
        let t = tx(
            MESSAGE,
            &["a@example.test", "b@example.test", "c@example.test"],
        );
        let report = deliver(&sink, opportunistic(&pki), &t).await;
        let tr = report.result.expect("delivered");
        assert_eq!(tr.accepted(), 3);
        assert!((0..3).all(|i| tr.delivered(i)));
        assert_eq!(sink.received()[0].rcpts.len(), 3);
        let pipelined = sink.pipelined_commands();
        if pipelining {
            // RFC 2920: everything after MAIL up to DATA came in the same write.
            assert!(pipelined.iter().any(|c| c == "DATA"), "{pipelined:?}");
            assert!(
                pipelined.iter().any(|c| c.starts_with("RCPT")),
                "{pipelined:?}"
            );
        } else {
            assert!(pipelined.is_empty(), "lock-step expected: {pipelined:?}");
        }
    }
}

#[tokio::test]
async fn opportunistic_starttls_with_a_good_certificate_is_verified() {
    let pki = TestPki::new();
    let sink = tls_sink(pki.issue(&[MX]));
    let report = deliver(
        &sink,
        opportunistic(&pki),
        &tx(MESSAGE, &["r@example.test"]),
    )
    .await;
    assert!(report.result.expect("delivered").delivered(0));
    let TlsOutcome::Established {
        version,
        cipher,
        verified,
        failure,
        code,
    } = &report.tls
    else {
        panic!("{:?}", report.tls);
    };
    assert!(version.starts_with("TLSv1."), "{version}");
    assert!(!cipher.is_empty());
    assert!(verified);
    assert_eq!(*failure, None);
    assert_eq!(*code, None);
    assert_eq!(report.tls.failure(), None);
    assert_eq!(sink.received()[0].tls.as_deref(), Some(version.as_str()));
    // RFC 3207 §4.2: EHLO again after TLS; the new capabilities have no STARTTLS.
    assert_eq!(
        sink.commands()
            .iter()
            .filter(|c| c.starts_with("EHLO"))
            .count(),
        2
    );
    assert!(!report.capabilities.unwrap().starttls);
}

#[tokio::test]
async fn opportunistic_tls_records_what_pkix_would_have_said() {
    let pki = TestPki::new();
    for (name, cert, want, code) in [
        (
            "self-signed",
            TestPki::self_signed(&[MX]),
            TlsResultType::CertificateNotTrusted,
            "UnknownIssuer",
        ),
        (
            "wrong name",
            pki.issue(&["other.example.test"]),
            TlsResultType::CertificateHostMismatch,
            "NotValidForNameContext",
        ),
        (
            "expired",
            pki.issue_expired(&[MX]),
            TlsResultType::CertificateExpired,
            "ExpiredContext",
        ),
    ] {
        let sink = tls_sink(cert);
        let report = deliver(
            &sink,
            opportunistic(&pki),
            &tx(MESSAGE, &["r@example.test"]),
        )
        .await;
        assert!(report.result.expect(name).delivered(0), "{name}");
        assert!(
            matches!(
                &report.tls,
                TlsOutcome::Established { verified: false, failure: Some(f), .. } if *f == want
            ),
            "{name}: {:?}",
            report.tls
        );
        assert_eq!(report.tls.failure(), Some(want), "{name}");
        // TLS-RPT's failure-reason-code: the verifier's error by name.
        assert_eq!(report.tls.reason_code(), Some(code), "{name}");
        assert!(
            sink.received()[0].tls.is_some(),
            "{name}: delivered over TLS"
        );
    }
}

#[tokio::test]
async fn required_tls_delivers_with_a_valid_certificate() {
    let pki = TestPki::new();
    let sink = tls_sink(pki.issue(&[MX]));
    let report = deliver(&sink, required(&pki), &tx(MESSAGE, &["r@example.test"])).await;
    assert!(report.result.expect("delivered").delivered(0));
    assert!(
        matches!(
            report.tls,
            TlsOutcome::Established {
                verified: true,
                failure: None,
                ..
            }
        ),
        "{:?}",
        report.tls
    );
    assert!(sink.received()[0].tls.is_some());
}

/// RFC 8461 §5 (no downgrade): every way a required TLS session can fail
/// ends the session before MAIL, classified for TLS-RPT (RFC 8460 §4.3.1).
#[tokio::test]
async fn required_tls_failures_never_send_mail() {
    let pki = TestPki::new();
    for (name, tls, want) in [
        (
            "wrong name",
            SinkTls::Cert(pki.issue(&["other.example.test"])),
            TlsResultType::CertificateHostMismatch,
        ),
        (
            "expired",
            SinkTls::Cert(pki.issue_expired(&[MX])),
            TlsResultType::CertificateExpired,
        ),
        (
            "self-signed",
            SinkTls::Cert(TestPki::self_signed(&[MX])),
            TlsResultType::CertificateNotTrusted,
        ),
        (
            "no STARTTLS",
            SinkTls::None,
            TlsResultType::StartTlsNotSupported,
        ),
    ] {
        let sink = Sink::start(SinkConfig {
            tls: tls.clone(),
            ..SinkConfig::default()
        });
        let report = deliver(&sink, required(&pki), &tx(MESSAGE, &["r@example.test"])).await;
        let err = report.result.as_ref().expect_err(name);
        assert!(!err.is_permanent(), "{name}: {err}");
        match &tls {
            SinkTls::None => {
                assert_eq!(*err, SessionError::StartTlsRequired, "{name}");
                assert_eq!(report.tls, TlsOutcome::NotOffered, "{name}");
            }
            SinkTls::Cert(_) => {
                assert!(
                    matches!(err, SessionError::Tls { result_type, .. } if *result_type == want),
                    "{name}: {err:?}"
                );
                assert!(
                    matches!(&report.tls, TlsOutcome::Failed { result_type, .. } if *result_type == want),
                    "{name}: {:?}",
                    report.tls
                );
                // Nothing, not even QUIT, after the failed handshake.
                assert_eq!(
                    sink.commands().last().map(String::as_str),
                    Some("STARTTLS"),
                    "{name}"
                );
            }
        }
        assert_eq!(report.tls.failure(), Some(want), "{name}");
        assert_no_mail(&sink);
    }
}

#[tokio::test]
async fn one_refused_recipient_among_accepted_ones() {
    let pki = TestPki::new();
    for pipelining in [true, false] {
        let sink = Sink::start(SinkConfig {
            pipelining,
            rcpt_replies: vec![("bad@example.test".into(), "550 5.1.1 no such user".into())],
            ..SinkConfig::default()
        });
        let t = tx(
            MESSAGE,
            &["a@example.test", "bad@example.test", "c@example.test"],
        );
        let report = deliver(&sink, opportunistic(&pki), &t).await;
        let tr = report.result.expect("transaction");
        let codes: Vec<u16> = tr.rcpts.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![250, 550, 250]);
        assert_eq!(tr.rcpts[1].enhanced, Some((5, 1, 1)));
        assert_eq!(tr.rcpts[1].lines, vec!["no such user"]);
        assert!(tr.delivered(0) && !tr.delivered(1) && tr.delivered(2));
        assert_eq!(tr.outcome(1), Some(&tr.rcpts[1]));
        assert_eq!(
            sink.received()[0].rcpts,
            vec!["a@example.test".to_owned(), "c@example.test".to_owned()]
        );
    }
}

#[tokio::test]
async fn size_is_declared_and_a_too_big_message_is_not_sent() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig {
        size: Some(100),
        ..SinkConfig::default()
    });
    let small = tx(MESSAGE, &["r@example.test"]);
    let report = deliver(&sink, opportunistic(&pki), &small).await;
    assert!(report.result.unwrap().delivered(0));
    assert!(
        sink.received()[0]
            .raw_mail_line
            .contains(&format!(" SIZE={}", MESSAGE.len())),
        "{}",
        sink.received()[0].raw_mail_line
    );

    let big = vec![b'x'; 101];
    let sink = Sink::start(SinkConfig {
        size: Some(100),
        ..SinkConfig::default()
    });
    let report = deliver(&sink, opportunistic(&pki), &tx(&big, &["r@example.test"])).await;
    let err = report.result.unwrap_err();
    assert_eq!(
        err,
        SessionError::SizeExceeded {
            size: 101,
            max: 100
        }
    );
    assert!(err.is_permanent());
    assert_no_mail(&sink);
}

#[tokio::test]
async fn smtputf8_is_required_when_the_message_needs_it() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig {
        smtputf8: false,
        ..SinkConfig::default()
    });
    let report = deliver(
        &sink,
        opportunistic(&pki),
        &tx(MESSAGE, &["jörg@example.test"]),
    )
    .await;
    let err = report.result.unwrap_err();
    assert_eq!(err, SessionError::Smtputf8Unsupported);
    assert!(err.is_permanent());
    assert_no_mail(&sink);

    // Non-ASCII headers on an SMTPUTF8 message need it as well ...
    let utf8_headers = "Subject: Grüße\r\n\r\nHallo\r\n".as_bytes();
    let mut t = tx(utf8_headers, &["r@example.test"]);
    t.smtputf8 = true;
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    assert_eq!(
        report.result.unwrap_err(),
        SessionError::Smtputf8Unsupported
    );

    // ... but an all-ASCII one that merely asked for it goes through.
    let mut t = tx(MESSAGE, &["r@example.test"]);
    t.smtputf8 = true;
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    assert!(report.result.unwrap().delivered(0));
    assert!(!sink.received()[0].raw_mail_line.contains("SMTPUTF8"));

    let sink = Sink::start(SinkConfig::default());
    let report = deliver(
        &sink,
        opportunistic(&pki),
        &tx(MESSAGE, &["jörg@example.test"]),
    )
    .await;
    assert!(report.result.unwrap().delivered(0));
    let got = sink.received();
    assert!(
        got[0].raw_mail_line.ends_with(" SMTPUTF8"),
        "{}",
        got[0].raw_mail_line
    );
    assert_eq!(got[0].rcpts, vec!["jörg@example.test".to_owned()]);
}

#[tokio::test]
async fn eight_bit_and_dsn_parameters_only_when_offered() {
    let pki = TestPki::new();
    let mut t = tx(MESSAGE, &["r@example.test"]);
    t.body = BodyType::EightBitMime;
    t.ret = Some(DsnRet::Headers);
    t.envid = Some("id 1+x");
    t.recipients[0].notify = Notify {
        success: true,
        failure: true,
        delay: false,
        never: false,
        explicit: true,
    };
    t.recipients[0].orcpt = Some("rfc822;r+tag@example.test");

    let sink = Sink::start(SinkConfig::default());
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(
        sink.received()[0].raw_mail_line,
        "MAIL FROM:<sender@example.org> BODY=8BITMIME RET=HDRS ENVID=id+201+2Bx"
    );
    assert!(
        sink.commands().contains(
            &"RCPT TO:<r@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r+2Btag@example.test"
                .to_owned()
        ),
        "{:?}",
        sink.commands()
    );

    let sink = Sink::start(SinkConfig {
        dsn: false,
        eightbitmime: false,
        ..SinkConfig::default()
    });
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(
        sink.received()[0].raw_mail_line,
        "MAIL FROM:<sender@example.org>"
    );
    assert!(
        sink.commands()
            .contains(&"RCPT TO:<r@example.test>".to_owned())
    );
}

#[tokio::test]
async fn null_sender_is_sent_as_empty_path() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig::default());
    let mut t = tx(MESSAGE, &["r@example.test"]);
    t.mail_from = "";
    let report = deliver(&sink, opportunistic(&pki), &t).await;
    assert!(report.result.unwrap().delivered(0));
    assert_eq!(sink.received()[0].mail_from, "");
}

#[tokio::test]
async fn temporary_greeting_refusal_from_the_sink() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig {
        greeting: 421,
        ..SinkConfig::default()
    });
    let report = deliver(&sink, required(&pki), &tx(MESSAGE, &["r@example.test"])).await;
    let err = report.result.unwrap_err();
    assert!(
        matches!(&err, SessionError::Greeting(r) if r.code == 421),
        "{err:?}"
    );
    assert!(!err.is_permanent());
    assert_eq!(report.tls, TlsOutcome::NotAttempted);
    assert_no_mail(&sink);
}

#[tokio::test]
async fn dot_stuffing_round_trips_through_the_sink() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig::default());
    let message: &[u8] =
        b"Subject: dots\r\n\r\n.\r\n..\r\n...leading\r\nmiddle . dot\r\nbare lf\n.\r\nend\r\n.";
    let report = deliver(
        &sink,
        opportunistic(&pki),
        &tx(message, &["r@example.test"]),
    )
    .await;
    assert!(report.result.unwrap().delivered(0));
    let mut want = message.to_vec();
    want.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&sink.received()[0].data),
        String::from_utf8_lossy(&want)
    );

    // And through TLS, where the content is written in the same blocks.
    let sink = tls_sink(pki.issue(&[MX]));
    let big: Vec<u8> = (0..200_000)
        .map(|i| match i % 97 {
            0 => b'.',
            96 => b'\n',
            95 => b'\r',
            _ => b'a',
        })
        .collect();
    let report = deliver(&sink, required(&pki), &tx(&big, &["r@example.test"])).await;
    assert!(report.result.unwrap().delivered(0));
    let mut want = big.clone();
    want.extend_from_slice(b"\r\n");
    assert!(
        sink.received()[0].data == want,
        "200 kB content changed in transit"
    );
}

#[tokio::test]
async fn a_sink_that_stalls_after_data_times_out_at_data_end() {
    let pki = TestPki::new();
    let sink = Sink::start(SinkConfig {
        stall_after_data: true,
        ..SinkConfig::default()
    });
    let timeouts = Timeouts {
        data_end: Duration::from_millis(300),
        ..Timeouts::uniform(Duration::from_secs(10))
    };
    let report = deliver_with(
        &sink,
        opportunistic(&pki),
        &tx(MESSAGE, &["r@example.test"]),
        timeouts,
    )
    .await;
    let err = report.result.unwrap_err();
    assert_eq!(
        err,
        SessionError::Timeout {
            stage: Stage::DataEnd
        }
    );
    assert!(!err.is_permanent());
    assert_eq!(sink.stalled(), 1);
    assert!(sink.received().is_empty());
}
