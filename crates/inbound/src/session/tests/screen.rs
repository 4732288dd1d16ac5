//! The session's side of the screen: which commands it hands to the
//! driver (MAIL for SPF and the message rate, RCPT for the screen's
//! decision), with which facts, in which order, and what a refusal leaves
//! of the transaction. The driver is played (`played_sender_check`,
//! `played_screen`).

use super::*;

/// An `smtp` listener whose screen checks RCPT and counts messages;
/// greylisting on (`spf`: SPF at MAIL FROM for the domain it passed for)
/// with a verifier when `greylist`.
fn screening(greylist: bool) -> Arc<SessionConfig> {
    let mut cfg = (*verifying(false)).clone();
    cfg.verify.enabled = greylist;
    cfg.screen = ScreenScope {
        messages: true,
        spf: greylist,
        recipients: true,
    };
    Arc::new(cfg)
}

/// Each RCPT that passes anti-relay is checked, one by one and in order,
/// even when the client pipelines them; a refused recipient is not in the
/// message, a relay attempt never reaches the screen.
#[test]
fn pipelined_recipients_are_checked_in_order() {
    let r = run_all_ways(
        screening(false),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\n\
RCPT TO:<x@elsewhere.test>\r\nRCPT TO:<unknown@example.test>\r\nRCPT TO:<v@example.test>\r\n\
DATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        &codes(&r)[9..],
        ["250", "250", "554", "550", "250", "354", "250", "221"],
        "{:?}",
        r.replies
    );
    assert!(r.replies.contains(
        &"550 5.1.1 <unknown@example.test>: Recipient address rejected: user unknown".to_string()
    ));
    assert_eq!(
        r.rcpt_checks,
        [
            "u@example.test a@b.test - false -",
            "unknown@example.test a@b.test - false -",
            "v@example.test a@b.test - false -",
        ]
    );
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].1, ["u@example.test", "v@example.test"]);
}

/// While a recipient waits for the screen, nothing behind it is read: the
/// next RCPT and DATA stay buffered, no reply is written, and step keeps
/// asking for input until the driver answers.
#[test]
fn nothing_is_read_past_a_pending_recipient_check() {
    let mut s = Session::new(screening(false), OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    loop {
        match s.step(&mut out) {
            Event::NeedInput => break,
            Event::CheckSender(c) => {
                assert!(!c.spf && c.count_message, "{c:?}");
                s.sender_checked(None, None, &mut out);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out.clear();
    let pipelined: &[u8] =
        b"RCPT TO:<unknown@example.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n";
    s.feed(pipelined);
    let Event::CheckRecipient(first) = s.step(&mut out) else {
        panic!("the first RCPT is to be checked");
    };
    assert_eq!(first.recipient.to_string(), "unknown@example.test");
    let rest = pipelined.len() - b"RCPT TO:<unknown@example.test>\r\n".len();
    for _ in 0..3 {
        assert!(matches!(s.step(&mut out), Event::NeedInput));
        assert_eq!(s.buffered(), rest, "read past the pending check");
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }
    s.recipient_checked(played_screen(&first).as_ref(), &mut out);
    assert!(out.starts_with(b"550 5.1.1 <unknown@example.test>"));
    assert_eq!(s.stats().screen_refused, 1);
    let Event::CheckRecipient(second) = s.step(&mut out) else {
        panic!("the second RCPT is to be checked");
    };
    assert_eq!(second.recipient.to_string(), "u@example.test");
    s.recipient_checked(None, &mut out);
    assert!(matches!(s.step(&mut out), Event::NeedInput));
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        text.ends_with("250 2.1.5 Recipient OK\r\n354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n"),
        "{text}"
    );
    assert_eq!(s.stats().screen_refused, 1);
}

/// An answer with no recipient waiting changes nothing and writes nothing.
#[test]
fn an_unasked_recipient_answer_is_ignored() {
    let mut s = Session::new(screening(false), OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.recipient_checked(None, &mut out);
    s.recipient_checked(Some(&Reply::new(550, (5, 1, 1), "user unknown")), &mut out);
    assert!(out.is_empty());
    assert_eq!(s.stats().screen_refused, 0);
    s.feed(b"RCPT TO:<u@example.test>\r\n");
    assert!(matches!(s.step(&mut out), Event::NeedInput));
    assert!(out.starts_with(b"503 5.5.1 Need MAIL command first"));
}

/// Refusals leave the transaction open for other recipients; with none
/// taken, DATA is refused; RSET ends it and a new MAIL starts again.
#[test]
fn refusals_then_rset_and_a_new_transaction() {
    let r = run_all_ways(
        screening(false),
        OUTSIDE,
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<unknown@example.test>\r\n\
RCPT TO:<grey@example.test>\r\nDATA\r\nRSET\r\nMAIL FROM:<a@b.test>\r\n\
RCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(
        &codes(&r)[9..],
        [
            "250", "550", "451", "554", "250", "250", "250", "354", "250"
        ],
        "{:?}",
        r.replies
    );
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].1, ["u@example.test"]);
    assert_eq!(r.rcpt_checks.len(), 3);
}

/// A permanent refusal by the screen is an error: a client guessing
/// addresses is closed at `[limits] max_errors`; temporary ones are not.
#[test]
fn unknown_recipients_end_a_dictionary_attack() {
    let max = limits().max_errors as usize;
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for _ in 0..max + 5 {
        input.extend_from_slice(b"RCPT TO:<unknown@example.test>\r\n");
    }
    let r = run_all_ways(screening(false), OUTSIDE, &input);
    assert!(r.closed);
    assert_eq!(r.rcpt_checks.len(), max);
    assert_eq!(
        r.replies.last().unwrap(),
        "421 4.7.0 mx.example.test Too many errors, closing connection"
    );

    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for _ in 0..max + 5 {
        input.extend_from_slice(b"RCPT TO:<grey@example.test>\r\n");
    }
    let r = run_all_ways(screening(false), OUTSIDE, &input);
    assert!(!r.closed, "{:?}", r.replies);
    assert_eq!(r.rcpt_checks.len(), max + 5);
}

/// With greylisting on, SPF is checked at MAIL FROM even though it
/// refuses nothing, and the domain it passed for (the MAIL FROM domain,
/// the HELO name for a null sender) reaches the RCPT check; a sender it
/// did not pass for carries none.
#[test]
fn the_spf_pass_domain_reaches_the_recipient_check() {
    // Three messages: more than the played message rate allows.
    let mut cfg = (*screening(true)).clone();
    cfg.screen.messages = false;
    let r = run_all_ways(
        Arc::new(cfg),
        OUTSIDE,
        b"EHLO spf-pass.test\r\nMAIL FROM:<a@spf-pass.test>\r\nRCPT TO:<grey@example.test>\r\n\
RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<grey@example.test>\r\n\
RSET\r\nMAIL FROM:<>\r\nRCPT TO:<grey@example.test>\r\n",
    );
    assert_eq!(
        &codes(&r)[9..],
        ["250", "250", "250", "250", "451", "250", "250", "250"],
        "{:?}",
        r.replies
    );
    assert_eq!(r.sender_checks, [(true, false); 3]);
    assert_eq!(
        r.rcpt_checks,
        [
            "grey@example.test a@spf-pass.test spf-pass.test false -",
            "grey@example.test a@b.test - false -",
            "grey@example.test  spf-pass.test false -",
        ]
    );
}

/// Trusted clients are not counted or SPF-checked for the screen, but
/// their recipients are still checked (verification), with the fact
/// that they are trusted; a screen that does not check RCPT asks nothing.
#[test]
fn trusted_clients_are_checked_as_trusted() {
    let input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<unknown@example.test>\r\n\
RCPT TO:<x@elsewhere.test>\r\n";
    let r = run_all_ways(screening(true), "10.1.2.3", input);
    assert!(r.sender_checks.is_empty(), "{:?}", r.sender_checks);
    assert_eq!(
        r.rcpt_checks,
        [
            "unknown@example.test a@b.test - true -",
            "x@elsewhere.test a@b.test - true -",
        ]
    );
    assert_eq!(&codes(&r)[9..], ["250", "550", "250"], "{:?}", r.replies);

    let r = run_all_ways(smtp(), OUTSIDE, input);
    assert!(r.sender_checks.is_empty() && r.rcpt_checks.is_empty());
    assert_eq!(&codes(&r)[9..], ["250", "250", "554"], "{:?}", r.replies);
}

/// The message rate: every MAIL of a screened client is counted; a
/// refusal (452) leaves no transaction, so what was pipelined behind it
/// is refused as out of order, and the client may try again later.
#[test]
fn a_message_over_the_rate_is_refused_at_mail() {
    let one = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\n";
    let mut input = b"EHLO c.test\r\n".to_vec();
    for _ in 0..3 {
        input.extend_from_slice(one);
    }
    let r = run_all_ways(screening(false), OUTSIDE, &input);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.sender_checks, [(false, true); 3]);
    assert_eq!(
        &codes(&r)[17..],
        ["452", "503", "503", "500", "500"],
        "{:?}",
        r.replies
    );
    assert!(
        r.replies
            .contains(&"452 4.7.1 Too many messages".to_string())
    );
}

/// An authenticated client on a submission listener is not counted, and
/// its recipients are checked with its user, for verification only.
#[test]
fn authenticated_submission_is_checked_with_its_user() {
    let mut cfg = (*config(Role::Submission, BareNewline::Reject)).clone();
    cfg.screen = ScreenScope {
        messages: false,
        spf: false,
        recipients: true,
    };
    let r = run_chunks(
        Arc::new(cfg),
        OUTSIDE,
        &[
            b"EHLO c.test\r\nSTARTTLS\r\n",
            b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.test>\r\n\
RCPT TO:<x@elsewhere.test>\r\n",
        ],
    );
    assert!(r.sender_checks.is_empty(), "{:?}", r.sender_checks);
    assert_eq!(
        r.rcpt_checks,
        ["x@elsewhere.test alice@example.test - false alice"]
    );
    assert_eq!(r.replies.last().unwrap(), "250 2.1.5 Recipient OK");
}
