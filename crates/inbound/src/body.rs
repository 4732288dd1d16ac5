//! Bare CR / bare LF handling for message data (RFC 5321 §2.3.8: lines end
//! in CRLF only). A bare LF followed by `.` is how SMTP smuggling hides a
//! second message from a lenient hop, so such data is never passed on as is.

use memchr::memchr2_iter;

/// True when `data` has a CR not followed by LF, or an LF not preceded by CR.
pub fn has_bare_newline(data: &[u8]) -> bool {
    memchr2_iter(b'\r', b'\n', data).any(|i| match data[i] {
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        _ => i == 0 || data[i - 1] != b'\r',
    })
}

/// Rewrites every bare CR and bare LF as CRLF.
pub fn normalize(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_kind() {
        for (data, bare) in [
            (&b"a\r\nb\r\n"[..], false),
            (b"", false),
            (b"a\nb\r\n", true),
            (b"\n", true),
            (b"a\rb\r\n", true),
            (b"a\r", true),
            (b"a\r\r\n", true),
        ] {
            assert_eq!(
                has_bare_newline(data),
                bare,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn normalizes_to_crlf() {
        assert_eq!(
            normalize(b"a\nb\rc\r\nd\r\r\n"),
            b"a\r\nb\r\nc\r\nd\r\n\r\n"
        );
        assert!(!has_bare_newline(&normalize(b"x\n.\ny\r\r")));
    }
}
