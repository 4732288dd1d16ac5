//! Mail loop detection by counting `Received:` fields (RFC 5321 §6.3: a
//! server that sees too many trace fields should conclude that the
//! message is looping and refuse it, with 554 5.4.6, RFC 3463).
//!
//! Only the header section is read (up to the first empty line, RFC 5322
//! §2.1), and the count stops as soon as it passes the limit: a large body
//! costs nothing and a header section of a million fields costs one pass.

/// The field name we count, compared without regard to case (RFC 5322 §1.2.2).
const RECEIVED: &[u8] = b"received";

/// True when the header section of `message` has more than `limit`
/// `Received:` fields. A folded field (continuation lines start with WSP,
/// RFC 5322 §2.2.3) counts once; a `Received:` line in the body does not
/// count.
pub fn too_many_received(message: &[u8], limit: u32) -> bool {
    let mut count = 0u32;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            // The empty line that ends the header section.
            return false;
        }
        if is_received(line) {
            count += 1;
            if count > limit {
                return true;
            }
        }
    }
    false
}

/// True when `line` starts a `Received` field: the name, optional WSP
/// (obsolete syntax, RFC 5322 §4.5), then the colon.
fn is_received(line: &[u8]) -> bool {
    line.len() > RECEIVED.len()
        && line[..RECEIVED.len()].eq_ignore_ascii_case(RECEIVED)
        && line[RECEIVED.len()..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            == Some(&b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: usize, extra_header: &str, body: &str) -> Vec<u8> {
        let mut m = String::new();
        for i in 0..fields {
            m.push_str(&format!("Received: from h{i}.test by mx.test; date\r\n"));
        }
        m.push_str(extra_header);
        m.push_str("Subject: s\r\n\r\n");
        m.push_str(body);
        m.into_bytes()
    }

    #[test]
    fn counts_to_the_limit_and_no_further() {
        assert!(!too_many_received(&message(100, "", "x\r\n"), 100));
        assert!(too_many_received(&message(101, "", "x\r\n"), 100));
        assert!(!too_many_received(&message(0, "", ""), 100));
        assert!(too_many_received(&message(1, "", ""), 0));
        assert!(!too_many_received(b"", 0));
    }

    #[test]
    fn names_compare_without_case_and_allow_space_before_the_colon() {
        let extra = "RECEIVED: a\r\nreceived : b\r\nReceived\t:c\r\n";
        assert!(!too_many_received(&message(97, extra, ""), 100));
        assert!(too_many_received(&message(98, extra, ""), 100));
    }

    #[test]
    fn only_whole_field_names_in_the_header_section_count() {
        // Folded continuation lines, look-alike names and body lines.
        let extra = "Received-SPF: pass\r\nX-Received: x\r\nReceivedx: y\r\nReceived\r\n \tReceived: folded\r\n";
        let body = "Received: in the body\r\n".repeat(10);
        assert!(!too_many_received(&message(100, extra, &body), 100));
        assert!(too_many_received(&message(101, extra, &body), 100));
        // A message that starts with its body has no header section.
        assert!(!too_many_received(b"\r\nReceived: x\r\nReceived: y\r\n", 1));
    }
}
