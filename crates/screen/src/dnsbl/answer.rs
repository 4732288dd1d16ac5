//! What a DNS list's A records mean (RFC 5782 §2.1, §5).
//!
//! Only answers inside 127.0.0.0/8 are listings. Anything else is not
//! from the list: a resolver that rewrites NXDOMAIN into the address of an
//! advertising page, or a hijacked one, must not be able to block clients,
//! so such answers are ignored. Spamhaus-style error codes in
//! 127.255.255.0/24 ("query refused through a public resolver", "over the
//! free query limit") say the list did not look the client up: a failure,
//! never a listing. So does dnswl.org's 127.0.0.255 ("your queries are
//! blocked"): read as a listing in an allow list it would allow every
//! client the moment the list stopped answering us.

use std::net::Ipv4Addr;

/// At most this many answers are kept per listing: a list (or whoever
/// answers for it) could send hundreds of A records, and each cached
/// listing must stay small.
pub const MAX_ANSWERS: usize = 8;

/// What a positive DNS answer of a list says about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Listed: the answers inside 127.0.0.0/8 (sorted, without duplicates,
    /// at most [`MAX_ANSWERS`]), and how many answers outside it were
    /// ignored beside them.
    Listed {
        answers: Vec<Ipv4Addr>,
        ignored: usize,
    },
    /// The list refused to answer (an error code in 127.255.255.0/24, or
    /// 127.0.0.255).
    ListError(Ipv4Addr),
    /// Only answers outside 127.0.0.0/8: not from a list; ignored, so the
    /// client is not listed.
    Bogus(Vec<Ipv4Addr>),
}

/// True for the list error codes: 127.255.255.0/24 (Spamhaus and those
/// following it) and 127.0.0.255 (dnswl.org: queries blocked).
fn is_list_error(a: Ipv4Addr) -> bool {
    let [x, y, z, _] = a.octets();
    (x, y, z) == (127, 255, 255) || a == Ipv4Addr::new(127, 0, 0, 255)
}

/// Reads the A records a list answered for a client.
pub(crate) fn read(records: &[Ipv4Addr]) -> Reading {
    if let Some(error) = records.iter().copied().find(|a| is_list_error(*a)) {
        return Reading::ListError(error);
    }
    let (mut answers, bogus): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) =
        records.iter().copied().partition(|a| a.is_loopback());
    if answers.is_empty() {
        let mut bogus = bogus;
        bogus.truncate(MAX_ANSWERS);
        return Reading::Bogus(bogus);
    }
    answers.sort_unstable();
    answers.dedup();
    answers.truncate(MAX_ANSWERS);
    Reading::Listed {
        answers,
        ignored: bogus.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn inside_127_8_is_a_listing() {
        assert_eq!(
            read(&[ip("127.0.0.4"), ip("127.0.0.2"), ip("127.0.0.2")]),
            Reading::Listed {
                answers: vec![ip("127.0.0.2"), ip("127.0.0.4")],
                ignored: 0
            }
        );
        // DNSWL-style codes are listings too.
        assert!(matches!(read(&[ip("127.0.10.3")]), Reading::Listed { .. }));
    }

    /// A hijacking resolver's answer must not block a client.
    #[test]
    fn outside_127_8_is_ignored() {
        assert_eq!(
            read(&[ip("192.0.2.80")]),
            Reading::Bogus(vec![ip("192.0.2.80")])
        );
        assert_eq!(
            read(&[ip("192.0.2.80"), ip("127.0.0.2")]),
            Reading::Listed {
                answers: vec![ip("127.0.0.2")],
                ignored: 1
            }
        );
    }

    /// Spamhaus: 127.255.255.254 "query via public resolver", .255
    /// "excessive number of queries": the list did not answer.
    #[test]
    fn list_error_codes_are_failures() {
        assert_eq!(
            read(&[ip("127.255.255.254")]),
            Reading::ListError(ip("127.255.255.254"))
        );
        assert_eq!(
            read(&[ip("127.0.0.2"), ip("127.255.255.255")]),
            Reading::ListError(ip("127.255.255.255"))
        );
    }

    /// dnswl.org answers 127.0.0.255 once it blocks our queries: in an
    /// allow list, reading it as a listing would let every client past
    /// the screen; it is a failure. 127.0.0.254 and 127.0.1.255 are not
    /// error codes.
    #[test]
    fn dnswl_blocked_code_is_a_failure_not_a_listing() {
        assert_eq!(
            read(&[ip("127.0.0.255")]),
            Reading::ListError(ip("127.0.0.255"))
        );
        assert_eq!(
            read(&[ip("127.0.15.0"), ip("127.0.0.255")]),
            Reading::ListError(ip("127.0.0.255"))
        );
        assert!(matches!(read(&[ip("127.0.0.254")]), Reading::Listed { .. }));
        assert!(matches!(read(&[ip("127.0.1.255")]), Reading::Listed { .. }));
    }

    #[test]
    fn answers_are_bounded() {
        let many: Vec<Ipv4Addr> = (0..=255).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
        match read(&many) {
            Reading::Listed { answers, .. } => assert_eq!(answers.len(), MAX_ANSWERS),
            other => panic!("{other:?}"),
        }
        let bogus: Vec<Ipv4Addr> = (0..=255).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        match read(&bogus) {
            Reading::Bogus(v) => assert_eq!(v.len(), MAX_ANSWERS),
            other => panic!("{other:?}"),
        }
    }
}
