//! REQUIRETLS (RFC 8689 §4.1) on the receiving side: offered only over
//! TLS, refused in clear with 530 5.7.10, recorded with the message when
//! given over TLS; and who may waive TLS with `TLS-Required: No`.

use super::*;
use portcullis_config::TlsRequiredNo;

const MESSAGE: &str = "RCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n";

fn offers_requiretls(run: &Run) -> bool {
    run.replies
        .iter()
        .any(|l| l == "250-REQUIRETLS" || l == "250 REQUIRETLS")
}

/// In clear: not advertised, and `MAIL FROM ... REQUIRETLS` is refused
/// with 530 5.7.10 (no transaction begins).
#[test]
fn refused_before_tls() {
    let r = run_all_ways(
        smtp(),
        OUTSIDE,
        format!("EHLO c.test\r\nMAIL FROM:<a@sender.test> REQUIRETLS\r\n{MESSAGE}").as_bytes(),
    );
    assert!(!offers_requiretls(&r), "{:?}", r.replies);
    assert!(
        r.replies
            .contains(&"530 5.7.10 REQUIRETLS needs a TLS session".to_string()),
        "{:?}",
        r.replies
    );
    assert!(r.messages.is_empty());
}

/// After STARTTLS: advertised, accepted, and recorded with the message;
/// a message without it records false.
#[test]
fn accepted_and_recorded_after_starttls() {
    for (param, want) in [(" REQUIRETLS", true), ("", false)] {
        let r = run_chunks(
            smtp(),
            OUTSIDE,
            &[
                b"EHLO c.test\r\nSTARTTLS\r\n",
                format!("EHLO c.test\r\nMAIL FROM:<a@sender.test>{param}\r\n{MESSAGE}QUIT\r\n")
                    .as_bytes(),
            ],
        );
        assert!(offers_requiretls(&r), "{:?}", r.replies);
        assert_eq!(r.require_tls, vec![want], "{:?}", r.replies);
    }
}

/// On `submissions` (implicit TLS) it is offered from the start.
#[test]
fn offered_on_submissions() {
    let r = run_all_ways(
        submissions(&[]),
        OUTSIDE,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<alice@example.test> REQUIRETLS\r\nRCPT TO:<u@elsewhere.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert!(offers_requiretls(&r), "{:?}", r.replies);
    assert_eq!(r.require_tls, vec![true], "{:?}", r.replies);
}

/// Who may waive TLS is recorded from the session's facts (trusted
/// network, authentication) under each `tls_required_no` setting.
#[test]
fn who_may_waive_tls() {
    let send = |policy, peer: &str| {
        let mut cfg = (*smtp()).clone();
        cfg.tls_required_no = policy;
        let input = format!("EHLO c.test\r\nMAIL FROM:<a@sender.test>\r\n{MESSAGE}");
        let r = run_all_ways(Arc::new(cfg), peer, input.as_bytes());
        r.arrivals
            .iter()
            .map(|a| a.may_waive_tls)
            .collect::<Vec<_>>()
    };
    let trusted = "10.1.2.3";
    assert_eq!(send(TlsRequiredNo::Trusted, trusted), vec![true]);
    assert_eq!(send(TlsRequiredNo::Trusted, OUTSIDE), vec![false]);
    assert_eq!(send(TlsRequiredNo::Anyone, OUTSIDE), vec![true]);
    assert_eq!(send(TlsRequiredNo::Never, trusted), vec![false]);
}
