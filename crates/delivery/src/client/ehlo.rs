//! EHLO (with the RFC 5321 §3.2 HELO fallback) and the capabilities it reveals.

use smtp_proto::EhloResponse;
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::SessionError;
use super::reply::Conn;
use super::timeouts::{Stage, Timeouts};

/// What the peer advertised in its reply to EHLO (RFC 5321 §4.1.1.1), as far
/// as this client uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The first word of the EHLO (or HELO) reply: the name the peer gives itself.
    pub hostname: String,
    /// False when the peer refused EHLO and the session fell back to HELO.
    pub esmtp: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(0)` when advertised without a limit.
    pub size: Option<usize>,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// BINARYMIME (RFC 3030).
    pub binarymime: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// REQUIRETLS (RFC 8689).
    pub requiretls: bool,
}

impl Capabilities {
    /// Parses the raw bytes of a 250 reply to EHLO with `smtp-proto`. A line
    /// that `smtp-proto` rejects (say `SIZE abc`) costs only that extension:
    /// the lines are then parsed one by one.
    pub fn from_ehlo(raw: &[u8]) -> Capabilities {
        match EhloResponse::parse(&mut raw.iter()) {
            Ok(response) => Capabilities::from_response(&response),
            Err(_) => {
                let mut lines = raw.split(|&b| b == b'\n');
                let mut caps = match lines.next() {
                    Some(first) => {
                        let mut one = first.to_vec();
                        one.push(b'\n');
                        if let Some(sep) = one.get_mut(3) {
                            *sep = b' ';
                        }
                        match EhloResponse::parse(&mut one.iter()) {
                            Ok(response) => Capabilities::from_response(&response),
                            Err(_) => Capabilities::default(),
                        }
                    }
                    None => Capabilities::default(),
                };
                for line in lines {
                    let Some(keyword) = line.get(4..).filter(|k| !k.is_empty()) else {
                        continue;
                    };
                    let mut two = b"250-x\r\n250 ".to_vec();
                    two.extend_from_slice(keyword);
                    two.push(b'\n');
                    if let Ok(response) = EhloResponse::parse(&mut two.iter()) {
                        caps.merge(&Capabilities::from_response(&response));
                    }
                }
                caps.esmtp = true;
                caps
            }
        }
    }

    fn from_response(response: &EhloResponse<String>) -> Capabilities {
        let has = |flag: u32| response.capabilities & flag != 0;
        Capabilities {
            hostname: response.hostname.clone(),
            esmtp: true,
            starttls: has(smtp_proto::EXT_START_TLS),
            pipelining: has(smtp_proto::EXT_PIPELINING),
            size: has(smtp_proto::EXT_SIZE).then_some(response.size),
            eightbitmime: has(smtp_proto::EXT_8BIT_MIME),
            smtputf8: has(smtp_proto::EXT_SMTP_UTF8),
            dsn: has(smtp_proto::EXT_DSN),
            chunking: has(smtp_proto::EXT_CHUNKING),
            binarymime: has(smtp_proto::EXT_BINARY_MIME),
            enhanced_status_codes: has(smtp_proto::EXT_ENHANCED_STATUS_CODES),
            requiretls: has(smtp_proto::EXT_REQUIRE_TLS),
        }
    }

    fn merge(&mut self, other: &Capabilities) {
        self.starttls |= other.starttls;
        self.pipelining |= other.pipelining;
        if other.size.is_some() {
            self.size = other.size;
        }
        self.eightbitmime |= other.eightbitmime;
        self.smtputf8 |= other.smtputf8;
        self.dsn |= other.dsn;
        self.chunking |= other.chunking;
        self.binarymime |= other.binarymime;
        self.enhanced_status_codes |= other.enhanced_status_codes;
        self.requiretls |= other.requiretls;
    }

    /// The size limit to respect, if the peer declared a non-zero one.
    pub fn size_limit(&self) -> Option<usize> {
        self.size.filter(|&n| n > 0)
    }
}

/// Says EHLO; on a 5xx falls back to HELO (RFC 5321 §3.2), which leaves no
/// extensions. A 4xx to EHLO, or a refused HELO, ends the session.
pub(crate) async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    helo_name: &str,
    timeouts: &Timeouts,
) -> Result<Capabilities, SessionError> {
    let reply = conn
        .command(&format!("EHLO {helo_name}"), Stage::Ehlo, timeouts.ehlo)
        .await?;
    if reply.reply.code == 250 {
        return Ok(Capabilities::from_ehlo(&reply.raw));
    }
    if reply.reply.code / 100 == 2 {
        return Ok(Capabilities {
            hostname: first_word(&reply.reply),
            esmtp: true,
            ..Capabilities::default()
        });
    }
    if !reply.reply.is_permanent() {
        return Err(SessionError::Ehlo(reply.reply));
    }
    tracing::debug!(reply = %reply.reply, "smtp client: EHLO refused, trying HELO");
    let helo = conn
        .command(&format!("HELO {helo_name}"), Stage::Ehlo, timeouts.ehlo)
        .await?;
    if helo.reply.code / 100 != 2 {
        return Err(SessionError::Ehlo(helo.reply));
    }
    Ok(Capabilities {
        hostname: first_word(&helo.reply),
        esmtp: false,
        ..Capabilities::default()
    })
}

/// The first word of a reply's first line (the host name in a greeting or
/// HELO reply), empty when there is none.
pub(crate) fn first_word(reply: &portcullis_types::Reply) -> String {
    reply
        .lines
        .first()
        .and_then(|line| line.split_ascii_whitespace().next())
        .unwrap_or("")
        .to_owned()
}
