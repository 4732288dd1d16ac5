//! The end of DATA through the whole session (RFC 5321 §4.1.1.4, §4.5.2):
//! a table generated from the grammar of fake and real terminators, the
//! SMTP smuggling reproduction of issue 11, empty messages, dot-stuffed
//! first lines and loop detection. Every input runs whole, byte by byte
//! and in random splits ([`run_all_ways`]).

use super::*;
use crate::body;

/// What comes before the dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    /// The dot is the first octet of the data.
    Nothing,
    Cr,
    Lf,
    Crlf,
}

/// What comes after the dot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Cr,
    Lf,
    Crlf,
}

fn before_bytes(b: Before) -> &'static [u8] {
    match b {
        Before::Nothing => b"",
        Before::Cr => b"\r",
        Before::Lf => b"\n",
        Before::Crlf => b"\r\n",
    }
}

fn after_bytes(a: After) -> &'static [u8] {
    match a {
        After::Cr => b"\r",
        After::Lf => b"\n",
        After::Crlf => b"\r\n",
    }
}

/// The commands a smuggler hides behind a fake terminator, and the real
/// end of the data.
const TAIL: &[u8] =
    b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n.\r\nNOOP\r\n";
const HEAD: &[u8] = b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n";

/// Every combination of {nothing, CR, LF, CRLF} before a dot (nothing only
/// at the start of the data), `.` or `..`, and {CR, LF, CRLF} after it, at
/// the start of DATA and after a first line, in both bare-newline modes.
/// Only `<CRLF>.<CRLF>` (or `.<CRLF>` as the first line) ends the data;
/// anything else is content, the data goes on to the real end, and the
/// client gets exactly one reply to it: the commands hidden behind a fake
/// terminator never run.
#[test]
fn every_candidate_terminator_from_the_grammar() {
    let befores = [Before::Nothing, Before::Cr, Before::Lf, Before::Crlf];
    let afters = [After::Cr, After::Lf, After::Crlf];
    let mut rows = 0;
    for mode in [BareNewline::Reject, BareNewline::Normalize] {
        for at_start in [true, false] {
            for before in befores {
                if before == Before::Nothing && !at_start {
                    continue;
                }
                for dots in [&b"."[..], b".."] {
                    for after in afters {
                        rows += 1;
                        check_row(mode, at_start, before, dots, after);
                    }
                }
            }
        }
    }
    assert_eq!(rows, 2 * (4 + 3) * 2 * 3);
}

#[track_caller]
fn check_row(mode: BareNewline, at_start: bool, before: Before, dots: &[u8], after: After) {
    let prefix: &[u8] = if at_start {
        b""
    } else {
        b"Subject: t\r\n\r\nHi"
    };
    let mut data = prefix.to_vec();
    data.extend_from_slice(before_bytes(before));
    data.extend_from_slice(dots);
    data.extend_from_slice(after_bytes(after));
    let mut input = HEAD.to_vec();
    input.extend_from_slice(&data);
    input.extend_from_slice(TAIL);
    let row = format!(
        "{mode:?} at_start={at_start} {before:?} {:?} {after:?}",
        String::from_utf8_lossy(dots)
    );
    let r = run_all_ways(config(Role::Smtp, mode), OUTSIDE, &input);

    let line_start = before == Before::Crlf || before == Before::Nothing;
    let terminator = line_start && dots == b"." && after == After::Crlf;
    if terminator {
        // A real end: the first message ends here, and what follows is a
        // second, ordinary transaction with its own DATA.
        assert_eq!(
            codes(&r),
            [
                "250", "250", "250", "354", "250", "250", "250", "354", "250", "250"
            ],
            "{row}: {:?}",
            r.replies
        );
        assert_eq!(r.messages.len(), 2, "{row}");
        let mut first = prefix.to_vec();
        first.extend_from_slice(before_bytes(before));
        assert_eq!(r.messages[0].2, first, "{row}");
        assert_eq!(r.messages[1].0, "evil@b.test", "{row}");
        return;
    }
    // Not an end: everything up to the real end is one message.
    let mut content = prefix.to_vec();
    content.extend_from_slice(before_bytes(before));
    // RFC 5321 §4.5.2: a line that starts with a dot loses it; a dot after
    // a bare CR or LF is not at the start of a line.
    content.extend_from_slice(if line_start { &dots[1..] } else { dots });
    content.extend_from_slice(after_bytes(after));
    content.extend_from_slice(
        b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n",
    );
    let bare = matches!(before, Before::Cr | Before::Lf) || after != After::Crlf;
    let final_reply = match (bare, mode) {
        (true, BareNewline::Reject) => "550",
        _ => "250",
    };
    assert_eq!(
        codes(&r),
        ["250", "250", "250", "354", final_reply, "250"],
        "{row}: {:?}",
        r.replies
    );
    if final_reply == "550" {
        assert!(r.messages.is_empty(), "{row}");
        assert!(r.replies[4].starts_with("550 5.5.2 "), "{row}");
        return;
    }
    assert_eq!(r.messages.len(), 1, "{row}");
    assert_eq!(r.messages[0].0, "a@b.test", "{row}");
    let expected = if bare {
        body::normalize(&content)
    } else {
        content
    };
    assert_eq!(
        String::from_utf8_lossy(&r.messages[0].2),
        String::from_utf8_lossy(&expected),
        "{row}"
    );
}

/// Regression test (issue 11, SMTP smuggling): `<CRLF>.<CR><CRLF>` ended
/// the data (smtp-proto's receiver), so the bytes after it ran as a second
/// transaction from `<a@b>`: 550, then 250 Sender OK, 250, 354 and 250
/// queued. Now the whole input is one message: one 550 in reject mode,
/// one 250 holding the smuggled text in normalize mode.
#[test]
fn issue_11_reproduction_is_one_message() {
    let input = b"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\nSubject: t\r\n\r\nHi\r\n.\r\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n";
    let after_ehlo = |r: &Run| -> Vec<String> {
        let i = r
            .replies
            .iter()
            .position(|l| l.starts_with("250 "))
            .unwrap();
        r.replies[i + 1..].to_vec()
    };
    let r = run_all_ways(smtp(), OUTSIDE, input);
    assert!(r.messages.is_empty(), "{:?}", r.messages);
    let rest = after_ehlo(&r);
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert!(rest[3].starts_with("550 5.5.2 "), "{rest:?}");
    assert_eq!(r.refusals, ["bare_newline"]);

    let r = run_all_ways(config(Role::Smtp, BareNewline::Normalize), OUTSIDE, input);
    let rest = after_ehlo(&r);
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert_eq!(rest[3], "250 2.0.0 Ok: queued as ID");
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].1, ["x@example.test"]);
    assert_eq!(
        String::from_utf8_lossy(&r.messages[0].2),
        "Subject: t\r\n\r\nHi\r\n\r\n\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x2@example.test>\r\nDATA\r\nsmuggled\r\n"
    );
}

/// Regression test: the data began as if in the middle of a line, so
/// `DATA` then `.<CRLF>` never ended (the client waited for the timeout)
/// and a first line `..x` was kept as `..x`.
#[test]
fn the_first_line_of_data_is_at_the_start_of_a_line() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n.\r\nNOOP\r\n",
    );
    assert_eq!(codes(&r), ["250", "250", "250", "354", "250", "250"]);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.messages[0].2, b"");

    let r = run_all_ways(smtp(), OUTSIDE, b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n..x\r\n..\r\n.\r\n");
    assert_eq!(r.messages[0].2, b".x\r\n.\r\n");
}

/// Over the size limit the data is read to its real end without being
/// kept, and a fake terminator inside the discarded part does not end it.
#[test]
fn discarded_data_ends_only_at_the_real_terminator() {
    let mut input = HEAD.to_vec();
    input.extend_from_slice(&vec![b'x'; 100_001]);
    input.extend_from_slice(b"\r\n.\r\r\n");
    input.extend_from_slice(TAIL);
    let r = run_chunks(smtp(), OUTSIDE, &[&input]);
    assert_eq!(
        codes(&r),
        ["250", "250", "250", "354", "552", "250"],
        "{:?}",
        r.replies
    );
    assert!(r.messages.is_empty());
}

fn with_hop_limit(limit: u32) -> Arc<SessionConfig> {
    let mut cfg = (*smtp()).clone();
    cfg.limits.max_received_headers = limit;
    Arc::new(cfg)
}

fn received_fields(n: usize) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..n {
        m.extend_from_slice(format!("Received: from h{i}.test by mx{i}.test; date\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: loop\r\n\r\nbody\r\n");
    m
}

/// RFC 5321 §6.3: more `Received:` fields than the limit is a loop: 554
/// 5.4.6 at the end of DATA and at the last BDAT chunk, nothing handed on,
/// the session goes on.
#[test]
fn too_many_received_fields_are_a_loop() {
    for (fields, refused) in [(5, false), (6, true)] {
        let mut input = HEAD.to_vec();
        input.extend_from_slice(&received_fields(fields));
        input.extend_from_slice(b".\r\nNOOP\r\n");
        let r = run_all_ways(with_hop_limit(5), OUTSIDE, &input);
        let last_two: Vec<&str> = r.replies[4..].iter().map(String::as_str).collect();
        if refused {
            assert_eq!(last_two, ["554 5.4.6 Too many hops", "250 2.0.0 OK"]);
            assert!(r.messages.is_empty());
            assert_eq!(r.refusals, ["mail_loop"]);
        } else {
            assert_eq!(last_two[0], "250 2.0.0 Ok: queued as ID");
            assert_eq!(r.messages.len(), 1);
        }

        let data = received_fields(fields);
        let (one, two) = data.split_at(40);
        let mut input =
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\n".to_vec();
        input.extend_from_slice(format!("BDAT {}\r\n", one.len()).as_bytes());
        input.extend_from_slice(one);
        input.extend_from_slice(format!("BDAT {} LAST\r\n", two.len()).as_bytes());
        input.extend_from_slice(two);
        let r = run_all_ways(with_hop_limit(5), OUTSIDE, &input);
        let last = r.replies.last().unwrap();
        if refused {
            assert_eq!(last, "554 5.4.6 Too many hops");
            assert!(r.messages.is_empty());
        } else {
            assert_eq!(last, "250 2.0.0 Ok: queued as ID");
        }
    }
}
