//! Session lifetime limits: commands that make no progress (`[limits]
//! max_junk_commands`, Postfix's `smtpd_junk_command_limit`) and the end of
//! `max_session_duration` as the driver signals it. Every input runs
//! whole, byte by byte and in random splits ([`run_all_ways`]).

use super::*;

const JUNK_LIMIT: u32 = 5;

/// The smtp listener's config with a junk limit of [`JUNK_LIMIT`] and an
/// error limit high enough not to interfere.
fn junky(base: Arc<SessionConfig>) -> Arc<SessionConfig> {
    let mut cfg = (*base).clone();
    cfg.limits.max_junk_commands = JUNK_LIMIT;
    cfg.limits.max_errors = 1000;
    Arc::new(cfg)
}

const JUNK_CLOSE: &str =
    "421 4.7.0 mx.example.test Too many commands without progress, closing connection";
const TOO_LONG: &str = "421 4.4.2 mx.example.test Session too long, closing connection";

/// The replies after the 9-line EHLO reply.
fn after_ehlo(r: &Run) -> Vec<&str> {
    r.replies.iter().skip(9).map(String::as_str).collect()
}

/// A NOOP flood: the fifth NOOP is answered and followed by 421 4.7.0;
/// everything pipelined behind it is left unanswered.
#[test]
fn a_noop_flood_is_closed_at_the_limit() {
    let mut input = b"EHLO c.test\r\n".to_vec();
    input.extend_from_slice(&b"NOOP\r\n".repeat(20));
    let r = run_all_ways(junky(smtp()), OUTSIDE, &input);
    assert_eq!(
        after_ehlo(&r),
        ["250 2.0.0 OK"; 5]
            .into_iter()
            .chain([JUNK_CLOSE])
            .collect::<Vec<_>>()
    );
    assert!(r.closed);
}

/// One below the limit the session stays open.
#[test]
fn fewer_junk_commands_than_the_limit_leave_the_session_open() {
    let mut input = b"EHLO c.test\r\n".to_vec();
    input.extend_from_slice(&b"NOOP\r\n".repeat(JUNK_LIMIT as usize - 1));
    let r = run_all_ways(junky(smtp()), OUTSIDE, &input);
    assert_eq!(codes(&r).len(), 9 + JUNK_LIMIT as usize - 1);
    assert!(!r.closed);
}

/// One row per kind of command that makes no progress: four of them are
/// answered, the fifth closes the session whatever its kind.
#[test]
fn every_kind_of_junk_counts() {
    let rows: &[(&str, &str)] = &[
        ("NOOP", "250"),
        ("RSET", "250"),
        ("VRFY u", "252"),
        ("EXPN list", "502"),
        ("HELP", "214"),
        // A greeting again: the first one was the EHLO before these.
        ("HELO c.test", "250"),
        // Refused commands of any kind.
        ("FOO", "500"),
        ("RCPT TO:<u@example.test>", "503"),
        ("DATA", "503"),
        ("MAIL FROM:<a@b.test> FOO=BAR", "555"),
        ("ETRN x.test", "502"),
    ];
    for (cmd, code) in rows {
        let input = format!("EHLO c.test\r\n{}", format!("{cmd}\r\n").repeat(6));
        let r = run_all_ways(junky(smtp()), OUTSIDE, input.as_bytes());
        let c: Vec<_> = codes(&r).into_iter().skip(9).collect();
        assert_eq!(
            c,
            [*code, *code, *code, *code, *code, "421"],
            "{cmd}: {:?}",
            r.replies
        );
        assert_eq!(r.replies.last().unwrap(), JUNK_CLOSE, "{cmd}");
        assert!(r.closed, "{cmd}");
    }
}

/// An empty BDAT chunk that is not LAST (RFC 3030 allows it) adds nothing:
/// a stream of them inside a transaction is junk.
#[test]
fn empty_bdat_chunks_are_junk() {
    let input = format!(
        "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\n{}",
        "BDAT 0\r\n".repeat(6)
    );
    let r = run_all_ways(junky(smtp()), OUTSIDE, input.as_bytes());
    let c: Vec<_> = codes(&r).into_iter().skip(9).collect();
    assert_eq!(
        c,
        ["250", "250", "250", "250", "250", "250", "250", "421"],
        "{:?}",
        r.replies
    );
    assert!(r.closed);
}

/// Recipients refused for relaying (554 5.7.1, not an error reply that
/// ends the session on its own) are junk: a dictionary or relay probe
/// cannot go on for ever.
#[test]
fn refused_recipients_count() {
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for i in 0..10 {
        input.extend_from_slice(format!("RCPT TO:<u{i}@elsewhere.test>\r\n").as_bytes());
    }
    let r = run_all_ways(junky(smtp()), OUTSIDE, &input);
    let c: Vec<_> = codes(&r).into_iter().skip(9).collect();
    assert_eq!(
        c,
        ["250", "554", "554", "554", "554", "554", "421"],
        "{:?}",
        r.replies
    );
    assert!(r.closed);
}

/// A successful MAIL or RCPT is not junk but does not wipe the count
/// either: MAIL, RCPT, RSET over and over is closed like a NOOP flood.
#[test]
fn a_transaction_that_never_sends_makes_no_progress() {
    let mut input = b"EHLO c.test\r\n".to_vec();
    input.extend_from_slice(
        &b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nRSET\r\n".repeat(10),
    );
    let r = run_all_ways(junky(smtp()), OUTSIDE, &input);
    // Five rounds: the fifth RSET closes.
    assert_eq!(codes(&r).len(), 9 + 5 * 3 + 1, "{:?}", r.replies);
    assert_eq!(r.replies.last().unwrap(), JUNK_CLOSE);
    assert!(r.closed);
}

/// An accepted message is progress: the count starts again after it.
#[test]
fn an_accepted_message_resets_the_count() {
    let four_noops = "NOOP\r\n".repeat(JUNK_LIMIT as usize - 1);
    let message = "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nx\r\n.\r\n";
    let bdat = "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nBDAT 3 LAST\r\nx\r\n";
    let input =
        format!("EHLO c.test\r\n{four_noops}{message}{four_noops}{bdat}{four_noops}QUIT\r\n");
    let r = run_all_ways(junky(smtp()), OUTSIDE, input.as_bytes());
    assert_eq!(r.messages.len(), 2, "{:?}", r.replies);
    assert!(
        !r.replies.iter().any(|l| l.starts_with("421")),
        "{:?}",
        r.replies
    );
    assert_eq!(
        r.replies.last().unwrap(),
        "221 2.0.0 mx.example.test closing connection"
    );
    // Without the messages the same NOOPs close the session.
    let input = format!("EHLO c.test\r\n{four_noops}{four_noops}QUIT\r\n");
    let r = run_all_ways(junky(smtp()), OUTSIDE, input.as_bytes());
    assert_eq!(r.replies.last().unwrap(), JUNK_CLOSE);
}

/// Refusals that come back from the driver count too: a sender refused by
/// SPF at MAIL FROM, a message refused by verification after its data.
#[test]
fn refusals_from_the_driver_count() {
    let mut cfg = (*verifying(true)).clone();
    cfg.limits.max_junk_commands = JUNK_LIMIT;
    let cfg = Arc::new(cfg);
    let input = format!(
        "EHLO c.test\r\n{}",
        "MAIL FROM:<a@spf-fail.test>\r\n".repeat(6)
    );
    let r = run_all_ways(cfg.clone(), OUTSIDE, input.as_bytes());
    let c: Vec<_> = codes(&r).into_iter().skip(9).collect();
    assert_eq!(
        c,
        ["550", "550", "550", "550", "550", "421"],
        "{:?}",
        r.replies
    );

    let rejected = "MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: reject me\r\n\r\nx\r\n.\r\n";
    let input = format!("EHLO c.test\r\n{}", rejected.repeat(6));
    let r = run_all_ways(cfg, OUTSIDE, input.as_bytes());
    assert!(r.messages.is_empty());
    assert_eq!(r.replies.last().unwrap(), JUNK_CLOSE, "{:?}", r.replies);
    assert_eq!(r.replies.iter().filter(|l| l.starts_with("550")).count(), 5);
}

/// The greetings the protocol needs are not junk: one EHLO before
/// STARTTLS and one after it.
#[test]
fn the_needed_greetings_are_not_junk() {
    let mut cfg = (*smtp()).clone();
    cfg.limits.max_junk_commands = 2;
    let r = run_all_ways(
        Arc::new(cfg),
        OUTSIDE,
        b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\nNOOP\r\nQUIT\r\n",
    );
    assert!(r.starttls);
    assert!(
        !r.replies.iter().any(|l| l.starts_with("421")),
        "{:?}",
        r.replies
    );
}

/// The junk limit is about what the client sends, not about errors: a
/// session of syntax errors still ends at `max_errors` when that comes
/// first, with one 421 and not two.
#[test]
fn the_error_limit_and_the_junk_limit_close_once() {
    let mut cfg = (*smtp()).clone();
    cfg.limits.max_junk_commands = 3;
    cfg.limits.max_errors = 3;
    let r = run_all_ways(Arc::new(cfg), OUTSIDE, &b"BOGUS\r\n".repeat(5));
    assert_eq!(codes(&r), ["500", "500", "500", "421"], "{:?}", r.replies);
}

/// Plays the driver at `max_session_duration`: the next command gets
/// 421 4.4.2 instead of its answer, pipelined or not.
#[test]
fn an_expired_session_answers_the_next_command_with_421() {
    for chunks in [
        vec![&b"EHLO c.test\r\n"[..], b"NOOP\r\nMAIL FROM:<a@b.test>\r\n"],
        vec![b"EHLO c.test\r\n", b"NO", b"OP\r\n"],
    ] {
        let mut s = Session::new(smtp(), OUTSIDE.parse().unwrap());
        let mut out = Vec::new();
        s.feed(chunks[0]);
        assert!(matches!(s.step(&mut out), Event::NeedInput));
        out.clear();
        s.expire();
        let mut closed = false;
        for chunk in &chunks[1..] {
            s.feed(chunk);
            closed = matches!(s.step(&mut out), Event::Close);
        }
        assert!(closed);
        assert_eq!(String::from_utf8_lossy(&out), format!("{TOO_LONG}\r\n"));
        assert_eq!(s.close_outcome(), crate::metrics::SessionOutcome::TooLong);
    }
}

/// Data under way when the session expires is received to its end and
/// answered; the command after it gets the 421.
#[test]
fn data_in_progress_finishes_before_the_421() {
    let mut s = Session::new(smtp(), OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n");
    assert!(matches!(s.step(&mut out), Event::NeedInput));
    assert!(s.in_data());
    s.expire();
    s.feed(b"\r\nbody\r\n.\r\nNOOP\r\n");
    let Event::Message(m) = s.step(&mut out) else {
        panic!("no message: {}", String::from_utf8_lossy(&out));
    };
    assert_eq!(m.data, b"Subject: x\r\n\r\nbody\r\n");
    s.message_stored(QueueId::generate(1, 0), &mut out);
    assert!(matches!(s.step(&mut out), Event::Close));
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[lines.len() - 2].starts_with("250 2.0.0 Ok: queued as "),
        "{text}"
    );
    assert_eq!(lines[lines.len() - 1], TOO_LONG);
}

/// The driver's path when nothing is pending: the 421 goes out at once.
#[test]
fn an_idle_expired_session_is_closed_at_once() {
    let mut s = Session::new(smtp(), OUTSIDE.parse().unwrap());
    let mut out = Vec::new();
    s.feed(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert!(matches!(s.step(&mut out), Event::NeedInput));
    out.clear();
    s.close_expired(&mut out);
    assert!(s.is_closed());
    assert_eq!(String::from_utf8_lossy(&out), format!("{TOO_LONG}\r\n"));
    assert!(matches!(s.step(&mut out), Event::Close));
}
