//! SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463), as
//! values that can be written to the wire or quoted whole in a DSN.

use std::fmt;

/// One SMTP reply: a three-digit code, an optional enhanced status code and
/// one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// The basic reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code (class, subject, detail), e.g. (5, 7, 1).
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text lines (without codes or CRLF).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: (u8, u16, u16), text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// True for 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// True for 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// True for 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the reply in wire form (`code-text` lines, last `code text`,
    /// CRLF line ends). Control characters in the text are replaced so a
    /// reply can never inject a line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let n = self.lines.len().max(1);
        for i in 0..n {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some((c, s, d)) = self.enhanced {
                let _ = write!(out, "{c}.{s}.{d} ");
            }
            out.extend(
                text.bytes()
                    .map(|b| if b.is_ascii_control() { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    /// All lines joined with " / ", codes included: for logs and DSNs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        Reply::new(250, (2, 0, 0), "ok").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 ok\r\n");
        let mut out = Vec::new();
        Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a".into(), "b\r\nX".into()],
        }
        .write_to(&mut out);
        assert_eq!(out, b"250-a\r\n250 b  X\r\n");
    }
}
