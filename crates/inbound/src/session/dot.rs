//! The end of DATA (RFC 5321 §4.1.1.4) and dot-unstuffing (§4.5.2), as an
//! incremental scanner that carries its state between reads.
//!
//! Lines end in CRLF and nothing else (§2.3.8). Mail data ends only at the
//! five octets `<CRLF>.<CRLF>`; the start of the data counts as the start
//! of a line, so `.<CRLF>` right after the 354 ends an empty message. A
//! line that begins with `.` loses that first dot. A dot after a bare CR
//! or a bare LF is not at the start of a line: it is content, and never
//! ends the data (SMTP smuggling hides a second message behind exactly
//! such a "terminator" for servers that accept one).
//!
//! Why our own: smtp-proto 0.2's receiver also ends data at
//! `<CRLF>.<CR><CRLF>` and starts as if in the middle of a line.

/// Where the scanner is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line: the start of the data or after CRLF.
    LineStart,
    /// Inside a line; the last octet was not a CR.
    Mid,
    /// The last octet was a CR (kept in the content).
    Cr,
    /// A dot at the start of a line, not kept: it is either the end of
    /// the data or a stuffed dot.
    Dot,
    /// A dot at the start of a line, then a CR that is held back until
    /// the next octet says whether this is the end.
    DotCr,
    /// `<CRLF>.<CRLF>` was seen: the data is complete.
    Done,
}

/// An incremental end-of-data scanner. It gives the same content and stops
/// at the same octet however the input is split across calls.
#[derive(Debug, Clone)]
pub struct DotScanner {
    at: At,
}

/// What one call to [`DotScanner::scan`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Octets of the input consumed: all of it, or up to and including the
    /// end-of-data marker (what follows is the next command).
    pub consumed: usize,
    /// True once the end-of-data marker has been consumed.
    pub done: bool,
}

impl Default for DotScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DotScanner {
    /// A scanner at the start of the data, which is the start of a line.
    pub fn new() -> DotScanner {
        DotScanner { at: At::LineStart }
    }

    /// True once the end of the data has been seen.
    pub fn is_done(&self) -> bool {
        self.at == At::Done
    }

    /// Scans `input`, appending the dot-unstuffed content to `out` (or
    /// dropping it when `out` is `None`, for data read only to find its
    /// end). The content keeps the CRLF that precedes the final dot and
    /// never includes the `.<CRLF>` itself. Once done, consumes nothing.
    pub fn scan(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> Scanned {
        let mut emit = |bytes: &[u8]| {
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(bytes);
            }
        };
        // Content octets are copied in runs: `run` is where the current
        // verbatim run starts; a dropped dot or a held-back CR ends it.
        let mut run = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.at {
                At::Done => break,
                At::Mid => match memchr::memchr(b'\r', &input[i..]) {
                    Some(k) => {
                        i += k + 1;
                        self.at = At::Cr;
                    }
                    None => i = input.len(),
                },
                At::Cr => {
                    i += 1;
                    self.at = match b {
                        b'\n' => At::LineStart,
                        b'\r' => At::Cr,
                        _ => At::Mid,
                    };
                }
                At::LineStart => {
                    i += 1;
                    self.at = match b {
                        b'.' => {
                            // RFC 5321 §4.5.2: the first dot of a line is
                            // never content (end marker or stuffing).
                            emit(&input[run..i - 1]);
                            run = i;
                            At::Dot
                        }
                        b'\r' => At::Cr,
                        _ => At::Mid,
                    };
                }
                At::Dot => {
                    if b == b'\r' {
                        i += 1;
                        run = i;
                        self.at = At::DotCr;
                    } else {
                        // A stuffed dot: `b` is ordinary content, even a
                        // bare LF (which starts no line).
                        self.at = At::Mid;
                    }
                }
                At::DotCr => {
                    if b == b'\n' {
                        // RFC 5321 §4.1.1.4: `<CRLF>.<CRLF>`, exactly.
                        i += 1;
                        run = i;
                        self.at = At::Done;
                    } else {
                        // `.<CR>x`: a line with more than the dot, so the
                        // dot was stuffing and the CR is content; `b` is
                        // looked at again after that CR.
                        emit(b"\r");
                        self.at = At::Cr;
                    }
                }
            }
        }
        emit(&input[run..i]);
        Scanned {
            consumed: i,
            done: self.at == At::Done,
        }
    }
}

/// The test oracle: RFC 5321 §4.1.1.4 and §4.5.2 read literally over the
/// whole input at once. Public only so that the fuzz targets can compare
/// [`DotScanner`] with it; not for production use.
#[doc(hidden)]
pub mod reference {
    /// Splits `input` into CRLF-terminated lines: the line `.` ends the
    /// data; any other line starting with `.` loses that dot. Returns the
    /// content and the octets up to and including the end marker, or
    /// `None` when the marker is not in `input`.
    pub fn scan_whole(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut content = Vec::new();
        let mut pos = 0;
        loop {
            let len = input[pos..].windows(2).position(|w| w == b"\r\n")?;
            let line = &input[pos..pos + len];
            pos += len + 2;
            if line == b"." {
                return Some((content, pos));
            }
            content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            content.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reference::scan_whole;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Runs `input` through a fresh scanner in the given chunk sizes
    /// (cycled); returns the content and, once done, the octets consumed.
    fn incremental(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<usize>) {
        let mut scanner = DotScanner::new();
        let mut content = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = sizes[i % sizes.len()].clamp(1, input.len() - pos);
            i += 1;
            let s = scanner.scan(&input[pos..pos + n], Some(&mut content));
            pos += s.consumed;
            if s.done {
                assert!(scanner.is_done());
                return (content, Some(pos));
            }
            assert_eq!(s.consumed, n, "consumed less than given without finishing");
        }
        (content, None)
    }

    /// One row per RFC case: (input, content, octets up to the end).
    #[test]
    fn rfc_cases() {
        let cases: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b".\r\nMAIL", b"", Some(3)),
            (b"a\r\n.\r\nX", b"a\r\n", Some(6)),
            (b"..x\r\n.\r\n", b".x\r\n", Some(8)),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10)),
            (b"\r\n.\r\n", b"\r\n", Some(5)),
            // Smuggling candidates: content, never an end.
            (b"a\r\n.\r\r\n", b"a\r\n\r\r\n", None),
            (b"a\n.\r\n", b"a\n.\r\n", None),
            (b"a\r.\r\n", b"a\r.\r\n", None),
            (b"a\r\n.\n", b"a\r\n\n", None),
            (b"a\r\n.\r", b"a\r\n", None),
            (b"\n.\r\n", b"\n.\r\n", None),
            (b".\n", b"\n", None),
            (b".\rx", b"\rx", None),
        ];
        for &(input, content, end) in cases {
            for sizes in [&[usize::MAX][..], &[1], &[2, 1], &[3]] {
                assert_eq!(
                    incremental(input, sizes),
                    (content.to_vec(), end),
                    "{:?} in chunks of {sizes:?}",
                    String::from_utf8_lossy(input)
                );
            }
            if let Some(end) = end {
                assert_eq!(scan_whole(input), Some((content.to_vec(), end)));
            } else {
                assert_eq!(scan_whole(input), None);
            }
        }
    }

    /// Once done, the scanner consumes nothing more.
    #[test]
    fn stops_at_the_marker() {
        let mut s = DotScanner::new();
        assert_eq!(
            s.scan(b".\r\nMORE", None),
            Scanned {
                consumed: 3,
                done: true
            }
        );
        assert_eq!(
            s.scan(b"MORE", None),
            Scanned {
                consumed: 0,
                done: true
            }
        );
    }

    /// Differential test: random strings over CR, LF, dot and letters, in
    /// random splits, against the literal reading of RFC 5321 in
    /// [`scan_whole`]: same end, same content.
    #[test]
    fn agrees_with_the_reference_in_random_splits() {
        let mut rng = StdRng::seed_from_u64(0x05EE_DD07);
        let alphabet: [&[u8]; 6] = [b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n."];
        let mut ended = 0;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng.random_range(0..24) {
                input.extend_from_slice(alphabet[rng.random_range(0..alphabet.len())]);
            }
            let sizes: Vec<usize> = (0..4).map(|_| rng.random_range(1..8)).collect();
            let got = incremental(&input, &sizes);
            match scan_whole(&input) {
                Some((content, end)) => {
                    ended += 1;
                    assert_eq!(got, (content, Some(end)), "{input:?} split {sizes:?}");
                }
                None => assert_eq!(got.1, None, "{input:?} split {sizes:?}"),
            }
            // Discarding finds the same end.
            let mut s = DotScanner::new();
            let mut pos = 0;
            for chunk in input.chunks(sizes[0]) {
                let r = s.scan(chunk, None);
                pos += r.consumed;
                if r.done {
                    break;
                }
            }
            assert_eq!(s.is_done().then_some(pos), got.1, "{input:?} discarded");
        }
        // The generator must reach both outcomes often.
        assert!(ended > 2_000 && ended < 18_000, "{ended}");
    }
}
