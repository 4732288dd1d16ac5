//! Sans-IO helpers for the transaction: dot-stuffing (RFC 5321 §4.5.2) and
//! xtext (RFC 3461 §4).

use std::fmt::Write;

/// Dot-stuffs message content for DATA (RFC 5321 §4.5.2), chunk by chunk.
///
/// A line is taken to start at the beginning of the content, after every LF
/// and after every CR: a CRLF pair is one line end, but a bare LF or bare CR
/// counts too, so that stored content with a stray line end can never
/// produce a `<LF>.<CR><LF>` or `<CR>.<CR><LF>` that a lenient receiver
/// would take as the end of data (SMTP smuggling). Every line that starts
/// with `.` gets one more. [`finish`](DotStuffer::finish) ends the content
/// with CRLF if it does not already, then writes the `.` CRLF terminator.
/// Splitting the input differently never changes the output.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    last: [u8; 2],
    seen: usize,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the content.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            last: [0, 0],
            seen: 0,
        }
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 1);
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n' || b == b'\r';
            self.last = [self.last[1], b];
        }
        self.seen += input.len();
    }

    /// Appends the end of the content to `out`: CRLF unless the content was
    /// empty or already ended with CRLF, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.seen > 0 && self.last != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// The whole stuffed content and terminator of `message` at once.
    pub fn stuff_all(message: &[u8]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        stuffer.push(message, &mut out);
        stuffer.finish(&mut out);
        out
    }
}

/// Encodes `value` as xtext (RFC 3461 §4): `!` to `~` stay as they are except
/// `+` and `=`, every other octet becomes `+HH` (upper-case hex).
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// True when the header section of `message` (everything before the first
/// empty line) is pure ASCII.
pub(crate) fn headers_are_ascii(message: &[u8]) -> bool {
    let mut line_start = 0;
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' {
            let line = &message[line_start..i];
            if line.is_empty() || line == b"\r" {
                return true;
            }
            line_start = i + 1;
        } else if !b.is_ascii() {
            return false;
        }
    }
    true
}
