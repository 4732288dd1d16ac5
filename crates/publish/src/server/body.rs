//! The body of a report POST: `Content-Length` bytes, or a chunked body
//! (RFC 9112 §7.1) decoded under the same cap, never more than
//! `MAX_REPORT_BYTES` kept.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// The longest chunk-size or trailer line read (extensions included).
const MAX_LINE: u64 = 1024;
/// The most trailer bytes read after the last chunk.
const MAX_TRAILERS: usize = 8 * 1024;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// More than the cap.
    TooLarge,
    /// Not valid chunked coding, or the body ended early.
    Malformed(String),
}

/// Reads a `Content-Length` body of `length` bytes (at most `cap`, which
/// the caller checked): `rest` (read with the head) first, then `stream`.
pub async fn sized<S: AsyncRead + Unpin>(
    mut rest: Vec<u8>,
    stream: &mut S,
    length: usize,
) -> Result<Vec<u8>, BodyError> {
    rest.truncate(length);
    let have = rest.len();
    rest.resize(length, 0);
    if let Some(missing) = rest.get_mut(have..) {
        stream
            .read_exact(missing)
            .await
            .map_err(|e| BodyError::Malformed(format!("the body ended early: {e}")))?;
    }
    Ok(rest)
}

/// Decodes a chunked body from `rest` then `stream`, keeping at most
/// `cap` bytes of data; chunk extensions and trailers are read and
/// dropped.
pub async fn chunked<S: AsyncRead + Unpin>(
    rest: Vec<u8>,
    stream: &mut S,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut reader = BufReader::new(AsyncReadExt::chain(&rest[..], stream));
    let mut body = Vec::new();
    loop {
        let line = read_line(&mut reader).await?;
        let size_text = line
            .split(';')
            .next()
            .unwrap_or_default()
            .trim_end_matches([' ', '\t']);
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BodyError::Malformed(format!(
                "bad chunk size {size_text:?}"
            )));
        }
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| BodyError::Malformed("bad chunk size".into()))?;
        if size == 0 {
            break;
        }
        if size > (cap - body.len()) as u64 {
            return Err(BodyError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        if let Some(chunk) = body.get_mut(start..) {
            reader
                .read_exact(chunk)
                .await
                .map_err(|e| BodyError::Malformed(format!("a chunk ended early: {e}")))?;
        }
        let mut end = [0u8; 2];
        reader
            .read_exact(&mut end)
            .await
            .map_err(|e| BodyError::Malformed(format!("a chunk ended early: {e}")))?;
        if &end != b"\r\n" {
            return Err(BodyError::Malformed(
                "a chunk does not end with CRLF".into(),
            ));
        }
    }
    // RFC 9112 §7.1.2: trailer fields, then the empty line.
    let mut trailers = 0usize;
    loop {
        let line = read_line(&mut reader).await?;
        if line.is_empty() {
            return Ok(body);
        }
        trailers += line.len() + 2;
        if trailers > MAX_TRAILERS {
            return Err(BodyError::Malformed("trailers too long".into()));
        }
    }
}

/// One line without its CRLF, at most [`MAX_LINE`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<String, BodyError> {
    let mut line = Vec::new();
    (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| BodyError::Malformed(format!("reading the chunked body: {e}")))?;
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(BodyError::Malformed(
            "a chunk line is too long or not ended by CRLF".into(),
        ));
    };
    String::from_utf8(line.to_vec())
        .map_err(|_| BodyError::Malformed("a chunk line is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode(rest: &[u8], more: &[u8], cap: usize) -> Result<Vec<u8>, BodyError> {
        let mut stream = more;
        chunked(rest.to_vec(), &mut stream, cap).await
    }

    #[tokio::test]
    async fn chunks_are_joined_across_what_came_with_the_head() {
        let body = decode(
            b"5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
            100,
        )
        .await
        .unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(decode(b"", b"0\r\n\r\n", 100).await.unwrap(), b"");
    }

    #[tokio::test]
    async fn the_cap_and_the_grammar_are_enforced() {
        assert!(matches!(
            decode(b"", b"b\r\nhello world\r\n0\r\n\r\n", 10).await,
            Err(BodyError::TooLarge)
        ));
        assert!(matches!(
            decode(b"", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 10).await,
            Err(BodyError::TooLarge)
        ));
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhel",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b"0\r\n",
        ] {
            assert!(
                matches!(decode(b"", bad, 100).await, Err(BodyError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(2000));
        assert!(matches!(
            decode(b"", long.as_bytes(), 100).await,
            Err(BodyError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_sized_body_takes_what_came_with_the_head_first() {
        let mut more: &[u8] = b"lo and more";
        assert_eq!(
            sized(b"hel".to_vec(), &mut more, 5).await.unwrap(),
            b"hello"
        );
        let mut more: &[u8] = b"";
        assert_eq!(
            sized(b"hello!".to_vec(), &mut more, 5).await.unwrap(),
            b"hello"
        );
        let mut short: &[u8] = b"lo";
        assert!(sized(b"hel".to_vec(), &mut short, 9).await.is_err());
    }
}
