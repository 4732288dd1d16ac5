//! The request head of one HTTP/1.x request (RFC 9112 §2–§6), read and
//! parsed strictly: at most [`MAX_HEAD`] bytes, origin-form targets, one
//! `Host`, one `Content-Length`, no obsolete line folding.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request head read, in bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: String,
    /// The path of the target, without its query.
    pub path: String,
    /// The `Host` header field's value.
    pub host: Option<String>,
    /// The media type of `Content-Type`, lower-cased, without parameters.
    pub content_type: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding`, lower-cased, when sent (only `chunked` is
    /// taken).
    pub transfer_encoding: Option<String>,
}

/// How reading the head ended.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// The head's bytes (up to and without the empty line) and the bytes
    /// read past it (the start of the body).
    Complete(Vec<u8>, Vec<u8>),
    /// [`MAX_HEAD`] bytes without the end of the head.
    TooLarge,
    /// The peer closed before a complete head.
    Closed,
}

/// Reads until the empty line that ends the head, at most [`MAX_HEAD`]
/// bytes of head.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<HeadRead> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(HeadRead::Closed);
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(at) = find_end(&buf, searched_from) {
            if at > MAX_HEAD {
                return Ok(HeadRead::TooLarge);
            }
            let rest = buf.split_off(at + 4);
            buf.truncate(at);
            return Ok(HeadRead::Complete(buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Ok(HeadRead::TooLarge);
        }
    }
}

fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + from)
}

/// Parses a head (without its final empty line); the error says what is
/// wrong, for the 400 body and the log.
pub fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "request head is not UTF-8")?;
    // RFC 9112 §2.2: a bare CR (or LF) is refused, not taken as a line end;
    // no other control character (tab aside) belongs in a head either, so
    // nothing that reaches the routing or the log carries one.
    if text
        .split("\r\n")
        .any(|line| line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f))
    {
        return Err("control character in the request head");
    }
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken");
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method");
    }
    // RFC 9112 §3.2.1: origin-form is what a server sees from clients
    // that do not speak to a proxy.
    if !target.starts_with('/') {
        return Err("request target is not origin-form");
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let mut head = Head {
        method: method.to_string(),
        path: path.to_string(),
        host: None,
        content_type: None,
        content_length: None,
        transfer_encoding: None,
    };
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // RFC 9112 §5.2: obs-fold may be rejected with 400.
            return Err("obsolete line folding");
        }
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        if name.is_empty() || name.ends_with([' ', '\t']) {
            // RFC 9112 §5.1: no whitespace between name and colon.
            return Err("malformed header name");
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            if head.host.replace(value.to_string()).is_some() {
                return Err("more than one Host");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("malformed Content-Length")?;
            if head.content_length.replace(n).is_some_and(|old| old != n) {
                return Err("conflicting Content-Length");
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let media = value.split(';').next().unwrap_or_default().trim();
            head.content_type = Some(media.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && head
                .transfer_encoding
                .replace(value.to_ascii_lowercase())
                .is_some()
        {
            return Err("more than one Transfer-Encoding");
        }
    }
    if head.transfer_encoding.is_some() && head.content_length.is_some() {
        // RFC 9112 §6.1: both at once is a smuggling attempt.
        return Err("Transfer-Encoding with Content-Length");
    }
    if version == "HTTP/1.1" && head.host.is_none() {
        // RFC 9112 §3.2: a 1.1 request without Host gets 400.
        return Err("no Host");
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parsed(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[track_caller]
    fn refused(text: &str, words: &str) {
        match parse_head(text.as_bytes()) {
            Ok(h) => panic!("accepted {text:?}: {h:?}"),
            Err(e) => assert!(e.contains(words), "{e:?} lacks {words:?}"),
        }
    }

    #[test]
    fn a_get_and_a_post_parse() {
        let h = parsed(
            "GET /.well-known/mta-sts.txt?x=1 HTTP/1.1\r\nHost: MTA-STS.example.test:443\r\nUser-Agent: t",
        );
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/.well-known/mta-sts.txt");
        assert_eq!(h.host.as_deref(), Some("MTA-STS.example.test:443"));
        let h = parsed(
            "POST /tlsrpt HTTP/1.1\r\nhost: x\r\nContent-Type: Application/TLSRPT+gzip; charset=x\r\ncontent-length: 12",
        );
        assert_eq!(h.content_type.as_deref(), Some("application/tlsrpt+gzip"));
        assert_eq!(h.content_length, Some(12));
        assert_eq!(h.transfer_encoding, None);
        assert_eq!(parsed("GET / HTTP/1.0").host, None);
    }

    #[test]
    fn malformed_heads_are_refused_with_the_reason() {
        refused("GET /\r\nHost: x", "request line");
        for bad in ["\n", "\r", "\0", "\x1b", "\x7f"] {
            refused(
                &format!("GET / HTTP/1.1\r\nHost: a{bad}b"),
                "control character",
            );
            refused(
                &format!("GET /{bad} HTTP/1.1\r\nHost: a"),
                "control character",
            );
        }
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: a\r\nX:\tb").host.as_deref(),
            Some("a")
        );
        refused("GET / HTTP/2\r\nHost: x", "HTTP/1.0");
        refused("get / HTTP/1.1\r\nHost: x", "method");
        refused("GET http://x/ HTTP/1.1\r\nHost: x", "origin-form");
        refused("GET / HTTP/1.1", "no Host");
        refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b", "more than one Host");
        refused("GET / HTTP/1.1\r\nHost: a\r\n folded", "folding");
        refused("GET / HTTP/1.1\r\nHost : a", "header name");
        refused("GET / HTTP/1.1\r\nHost: a\r\nnocolon", "colon");
        refused(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5",
            "Content-Length",
        );
        refused(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6",
            "conflicting",
        );
        refused(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding",
        );
    }

    #[test]
    fn a_head_that_is_not_utf8_is_refused() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: \xff"),
            Err("request head is not UTF-8")
        );
    }

    #[tokio::test]
    async fn the_head_ends_at_the_empty_line_and_the_rest_is_kept() {
        let mut input: &[u8] = b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\n\r\nbody";
        match read_head(&mut input).await.unwrap() {
            HeadRead::Complete(head, rest) => {
                assert_eq!(head, b"POST /tlsrpt HTTP/1.1\r\nHost: a");
                assert_eq!(rest, b"body");
            }
            other => panic!("{other:?}"),
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let mut input = big.as_bytes();
        assert_eq!(read_head(&mut input).await.unwrap(), HeadRead::TooLarge);
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(read_head(&mut input).await.unwrap(), HeadRead::Closed);
    }
}
