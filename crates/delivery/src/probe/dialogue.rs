//! One probe connection: opened by the outbound client's own session start
//! (greeting, EHLO, STARTTLS as the route's TLS demands), then asked
//! `MAIL FROM:<>`, `RCPT TO:<recipient>`, `RSET` as many times as it stays
//! in step. Nothing here is a second SMTP client: commands and replies go
//! through the client's [`Conn`], under its per-stage timeouts.

use crate::client::{
    Capabilities, Conn, Progress, Ready, SessionError, Stage, Timeouts, TlsDecision, establish,
};
use portcullis_types::Reply;
use tokio::io::{AsyncRead, AsyncWrite};

/// A stream a probe connection runs on: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open, greeted session with a route, between transactions.
pub(crate) struct ProbeConn {
    conn: Conn<Box<dyn Io>>,
    caps: Capabilities,
}

impl ProbeConn {
    /// Greets `server_name` over `stream` as `helo_name` with the TLS of
    /// `decision`.
    pub(crate) async fn open(
        stream: tokio::net::TcpStream,
        server_name: &str,
        helo_name: &str,
        decision: TlsDecision,
        t: &Timeouts,
    ) -> Result<ProbeConn, SessionError> {
        let mut progress = Progress::new();
        let boxed: Box<dyn Io> = Box::new(stream);
        let ready = establish(boxed, server_name, helo_name, decision, t, &mut progress).await?;
        Ok(match ready {
            Ready::Clear(conn, caps) => ProbeConn { conn, caps },
            Ready::Tls(conn, caps) => ProbeConn {
                conn: conn.map_stream(|tls| Box::new(tls) as Box<dyn Io>),
                caps,
            },
        })
    }

    /// `MAIL FROM:<>`, `RCPT TO:<rcpt>` and `RSET` (one write when the
    /// route offers PIPELINING, RFC 2920): the reply to RCPT, and whether
    /// the connection is in step for another probe. `Err` (MAIL refused,
    /// a timeout, a broken connection) means it is not.
    pub(crate) async fn ask(
        &mut self,
        rcpt: &str,
        t: &Timeouts,
    ) -> Result<(Reply, bool), SessionError> {
        if rcpt.chars().any(|c| c.is_ascii_control()) {
            return Err(SessionError::InvalidEnvelope {
                detail: format!("RCPT TO path contains a control character: {rcpt:?}"),
            });
        }
        // RFC 6531 §3.4: a non-ASCII address goes only with SMTPUTF8.
        let mail = match (rcpt.is_ascii(), self.caps.smtputf8) {
            (true, _) => "MAIL FROM:<>",
            (false, true) => "MAIL FROM:<> SMTPUTF8",
            (false, false) => return Err(SessionError::Smtputf8Unsupported),
        };
        let rcpt_line = format!("RCPT TO:<{rcpt}>");
        let (mail, rcpt, rset) = if self.caps.pipelining {
            let group = format!("{mail}\r\n{rcpt_line}\r\nRSET\r\n");
            self.conn
                .send(group.as_bytes(), Stage::Mail, t.mail)
                .await?;
            let mail = self.conn.read_reply(Stage::Mail, t.mail).await?.reply;
            let rcpt = self.conn.read_reply(Stage::Rcpt, t.rcpt).await?.reply;
            let rset = self.conn.read_reply(Stage::Rset, t.mail).await?.reply;
            (mail, rcpt, rset)
        } else {
            let mail = self.conn.command(mail, Stage::Mail, t.mail).await?.reply;
            if !mail.is_positive() {
                return Err(SessionError::Mail(mail));
            }
            let rcpt = self.conn.command(&rcpt_line, Stage::Rcpt, t.rcpt).await?;
            let rset = self.conn.command("RSET", Stage::Rset, t.mail).await?;
            (mail, rcpt.reply, rset.reply)
        };
        if !mail.is_positive() {
            return Err(SessionError::Mail(mail));
        }
        // 421 (closing) or anything but 250 to RSET: not in step any more.
        let reusable = rset.code == 250 && rcpt.code != 421;
        Ok((rcpt, reusable))
    }

    /// Says QUIT (briefly) and closes.
    pub(crate) async fn quit(mut self, t: &Timeouts) {
        let _ = self.conn.command("QUIT", Stage::Quit, t.quit).await;
        self.conn.shutdown(t.quit).await;
    }
}
