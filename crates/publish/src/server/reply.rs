//! The one response a connection gets: status, a plain-text body, and
//! `Connection: close` (one request per connection, RFC 9112 §9.6).

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// An extra header line (without CRLF), e.g. `Allow: GET, HEAD`.
    pub extra_header: Option<&'static str>,
    /// The body; not sent for HEAD.
    pub body: String,
    /// False for HEAD: the head says what GET would send, without it.
    pub send_body: bool,
}

impl Reply {
    /// A plain-text response with `body` (a line end is added).
    pub fn text(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_header: None,
            body: format!("{body}\n"),
            send_body: true,
        }
    }

    /// The status code, for logs.
    pub fn code(&self) -> u16 {
        self.status
            .split(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some(h) = self.extra_header {
            out.push_str(h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if self.send_body {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }

    /// Writes the response and shuts the write side down.
    pub async fn write<S: AsyncWrite + Unpin>(&self, stream: &mut S) -> std::io::Result<()> {
        stream.write_all(&self.to_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_gets_the_length_of_the_body_it_does_not_get() {
        let mut r = Reply::text("200 OK", "abc");
        r.send_body = false;
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 4\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert_eq!(r.code(), 200);
    }
}
