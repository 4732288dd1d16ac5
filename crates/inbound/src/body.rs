//! Bare CR / bare LF handling for message data (RFC 5321 §2.3.8: lines end
//! in CRLF only). A bare LF followed by `.` is how SMTP smuggling hides a
//! second message from a lenient hop, so such data is never passed on as is.

use memchr::memchr2_iter;

/// True when `data` has a CR not followed by LF, or an LF not preceded by
/// CR: the whole-message reading, the oracle for [`NewlineFilter`].
#[cfg(test)]
pub fn has_bare_newline(data: &[u8]) -> bool {
    memchr2_iter(b'\r', b'\n', data).any(|i| match data[i] {
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        _ => i == 0 || data[i - 1] != b'\r',
    })
}

/// Rewrites every bare CR and bare LF as CRLF: the whole-message reading,
/// the oracle for [`NewlineFilter::normalize`].
#[cfg(test)]
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

/// [`has_bare_newline`] and [`normalize`] for data that arrives in pieces:
/// the one octet of state that matters across a boundary (was the last
/// octet a CR?) is carried, so a CRLF split between two pieces is a line
/// ending and a CR at the end of one piece is judged by the next.
/// Use one filter per message (`default()` is the start of one), in one
/// of the two modes.
#[derive(Debug, Default, Clone)]
pub struct NewlineFilter {
    /// The last octet seen was a CR.
    prev_cr: bool,
}

impl NewlineFilter {
    /// True when `piece`, read after everything given before, has a bare
    /// CR or LF. A CR that ends the piece is judged with the next piece or
    /// by [`NewlineFilter::ends_bare`].
    pub fn find_bare(&mut self, piece: &[u8]) -> bool {
        let Some(&first) = piece.first() else {
            return false;
        };
        if self.prev_cr && first != b'\n' {
            return true;
        }
        let bare = memchr2_iter(b'\r', b'\n', piece).any(|i| match piece[i] {
            b'\r' => piece.get(i + 1).is_some_and(|&b| b != b'\n'),
            _ => {
                !(if i == 0 {
                    self.prev_cr
                } else {
                    piece[i - 1] == b'\r'
                })
            }
        });
        self.prev_cr = piece.last() == Some(&b'\r');
        bare
    }

    /// True when the data ended in a CR that no LF followed (a bare CR).
    pub fn ends_bare(&self) -> bool {
        self.prev_cr
    }

    /// Appends `piece` to `out` with every bare CR and bare LF written as
    /// CRLF, as [`normalize`] does for the whole message: every CR becomes
    /// CRLF, and an LF right after a CR (even one in the previous piece)
    /// is the LF already written.
    pub fn normalize(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut run = 0;
        for i in memchr2_iter(b'\r', b'\n', piece) {
            let after_cr = if i == 0 {
                self.prev_cr
            } else {
                piece[i - 1] == b'\r'
            };
            out.extend_from_slice(&piece[run..i]);
            run = i + 1;
            match piece[i] {
                b'\r' => out.extend_from_slice(b"\r\n"),
                _ if after_cr => {}
                _ => out.extend_from_slice(b"\r\n"),
            }
        }
        out.extend_from_slice(&piece[run..]);
        if let Some(&last) = piece.last() {
            self.prev_cr = last == b'\r';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split of each input into two and three pieces finds the same
    /// bare newlines and normalises to the same octets as the whole-message
    /// functions: a CRLF cut in two is still a line ending, a CR at the end
    /// of a piece is judged by the next one.
    #[test]
    fn pieces_agree_with_the_whole_message_at_every_split() {
        let inputs: &[&[u8]] = &[
            b"a\r\nb\r\n",
            b"a\nb\r\n",
            b"a\rb\r\n",
            b"a\r",
            b"\n",
            b"\r",
            b"\r\n",
            b"a\r\r\n",
            b"\r\n\r\n.\r\n",
            b"x\n.\ny\r\r",
            b"\r\r\n\n\r",
            b"abc\r\ndef\r\n\r\nbody\rmore\n",
            b"",
        ];
        for &input in inputs {
            let bare = has_bare_newline(input);
            let normal = normalize(input);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let pieces = [&input[..i], &input[i..j], &input[j..]];
                    let mut f = NewlineFilter::default();
                    let mut found = false;
                    for p in pieces {
                        found |= f.find_bare(p);
                    }
                    found |= f.ends_bare();
                    assert_eq!(found, bare, "{input:?} split at {i}, {j}");
                    let mut f = NewlineFilter::default();
                    let mut out = Vec::new();
                    for p in pieces {
                        f.normalize(p, &mut out);
                    }
                    assert_eq!(out, normal, "{input:?} split at {i}, {j}");
                }
            }
        }
    }

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
