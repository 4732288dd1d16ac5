//! The session: greeting, EHLO, STARTTLS as decided, the transaction, QUIT.

use portcullis_types::Reply;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use super::ehlo::{Capabilities, ehlo, first_word};
use super::error::SessionError;
use super::reply::Conn;
use super::timeouts::{Stage, Timeouts};
use super::tls::{TlsDecision, TlsOutcome, established, handshake};
use super::transaction::{self, Transaction, TransactionReport};
use portcullis_tls::TlsResultType;
use rustls::ClientConfig;
use std::sync::Arc;
use tokio_rustls::client::TlsStream;

/// Everything a session produced, whatever its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// What TLS happened, for TLS-RPT and logs.
    pub tls: TlsOutcome,
    /// The greeting, when one was read.
    pub greeting: Option<Reply>,
    /// The name the peer gave itself: the first word of its last EHLO/HELO
    /// reply, else of its greeting.
    pub peer_name: Option<String>,
    /// What the peer advertised in its last EHLO reply (after TLS, when TLS
    /// was established).
    pub capabilities: Option<Capabilities>,
    /// The transaction's replies, or why there are none.
    pub result: Result<TransactionReport, SessionError>,
}

/// What the session has learnt so far; becomes the [`SessionReport`].
pub(crate) struct Progress {
    pub(crate) tls: TlsOutcome,
    greeting: Option<Reply>,
    peer_name: Option<String>,
    capabilities: Option<Capabilities>,
}

impl Progress {
    /// Nothing learnt yet.
    pub(crate) fn new() -> Progress {
        Progress {
            tls: TlsOutcome::NotAttempted,
            greeting: None,
            peer_name: None,
            capabilities: None,
        }
    }

    fn learn(&mut self, caps: &Capabilities) {
        if !caps.hostname.is_empty() {
            self.peer_name = Some(caps.hostname.clone());
        }
        self.capabilities = Some(caps.clone());
    }
}

/// Runs one SMTP session over `stream`, already connected to the host named
/// `server_name` (the name the certificate must match and the SNI sent), as
/// `helo_name`, with the TLS the caller decided, delivering `tx`.
///
/// Never panics on peer input and never returns early without a report: the
/// [`SessionReport`] always says what TLS happened, even when the session
/// failed.
pub async fn deliver_session<S>(
    stream: S,
    server_name: &str,
    helo_name: &str,
    tls: TlsDecision,
    tx: &Transaction<'_>,
    timeouts: &Timeouts,
) -> SessionReport
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let span = tracing::debug_span!("smtp_client", server = server_name);
    async move {
        let mut progress = Progress::new();
        let result = run(
            stream,
            server_name,
            helo_name,
            tls,
            tx,
            timeouts,
            &mut progress,
        )
        .await;
        match &result {
            Ok(report) => tracing::debug!(
                tls = ?progress.tls,
                accepted = report.accepted(),
                data = ?report.data.as_ref().map(|r| r.code),
                "smtp client: session done"
            ),
            Err(e) => tracing::debug!(
                tls = ?progress.tls,
                error = %e,
                permanent = e.is_permanent(),
                "smtp client: session failed"
            ),
        }
        SessionReport {
            tls: progress.tls,
            greeting: progress.greeting,
            peer_name: progress.peer_name,
            capabilities: progress.capabilities,
            result,
        }
    }
    .instrument(span)
    .await
}

async fn run<S>(
    stream: S,
    server_name: &str,
    helo_name: &str,
    decision: TlsDecision,
    tx: &Transaction<'_>,
    t: &Timeouts,
    p: &mut Progress,
) -> Result<TransactionReport, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match establish(stream, server_name, helo_name, decision, t, p).await? {
        Ready::Clear(conn, caps) => transact(conn, &caps, tx, t).await,
        Ready::Tls(conn, caps) => transact(*conn, &caps, tx, t).await,
    }
}

/// A session ready for a mail transaction: greeted, EHLO said, TLS as
/// the caller decided.
pub(crate) enum Ready<S> {
    /// In clear (TLS disabled, not offered, or refused where allowed).
    Clear(Conn<S>, Capabilities),
    /// Over TLS, after the second EHLO (boxed: a TLS stream is large).
    Tls(Box<Conn<TlsStream<S>>>, Capabilities),
}

/// Greeting, EHLO and STARTTLS as `decision` demands: the part of a
/// session before any transaction, shared by delivery and the recipient
/// probe. What was learnt goes into `p`; a failure has already ended the
/// session (politely when the dialogue was intact).
pub(crate) async fn establish<S>(
    stream: S,
    server_name: &str,
    helo_name: &str,
    decision: TlsDecision,
    t: &Timeouts,
    p: &mut Progress,
) -> Result<Ready<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if helo_name.is_empty() || helo_name.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(SessionError::Protocol {
            stage: Stage::Ehlo,
            detail: format!("unusable HELO name {helo_name:?}"),
        });
    }
    let (conn, caps) = open(stream, helo_name, t, p).await?;
    let (config, record) = match decision {
        TlsDecision::Disabled => {
            p.tls = TlsOutcome::Disabled;
            return Ok(Ready::Clear(conn, caps));
        }
        TlsDecision::Opportunistic { config, record } => (config, Some(record)),
        TlsDecision::Required { config } => (config, None),
    };
    let required = record.is_none();
    if !caps.starttls {
        p.tls = TlsOutcome::NotOffered;
        if required {
            // RFC 8461 §5: no downgrade; nothing of the transaction is sent.
            return end(conn, Err(SessionError::StartTlsRequired), t).await;
        }
        return Ok(Ready::Clear(conn, caps));
    }
    let secured = starttls(conn, server_name, config, required, t, p).await?;
    let tls_stream = match secured {
        Secured::Tls(tls_stream) => *tls_stream,
        Secured::Clear(conn) => return Ok(Ready::Clear(conn, caps)),
    };
    p.tls = established(&tls_stream, record.as_ref());
    tracing::debug!(tls = ?p.tls, "smtp client: TLS established");

    // RFC 3207 §4.2: discard all knowledge from before TLS and say EHLO again.
    p.capabilities = None;
    let (conn, caps) = hello(Conn::new(tls_stream), helo_name, t, p).await?;
    Ok(Ready::Tls(Box::new(conn), caps))
}

/// Reads the greeting and says EHLO (HELO when refused).
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    helo_name: &str,
    t: &Timeouts,
    p: &mut Progress,
) -> Result<(Conn<S>, Capabilities), SessionError> {
    let mut conn = Conn::new(stream);
    let greeting = conn.read_reply(Stage::Greeting, t.greeting).await?.reply;
    p.greeting = Some(greeting.clone());
    let name = first_word(&greeting);
    if !name.is_empty() {
        p.peer_name = Some(name);
    }
    // RFC 5321 §3.1: 554 (or 421) instead of 220 means no service here.
    if greeting.code / 100 != 2 {
        return end(conn, Err(SessionError::Greeting(greeting)), t).await;
    }
    hello(conn, helo_name, t, p).await
}

/// Says EHLO (HELO when refused) and learns what the peer offers.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    helo_name: &str,
    t: &Timeouts,
    p: &mut Progress,
) -> Result<(Conn<S>, Capabilities), SessionError> {
    match ehlo(&mut conn, helo_name, t).await {
        Ok(caps) => {
            p.learn(&caps);
            Ok((conn, caps))
        }
        Err(e) => end(conn, Err(e), t).await,
    }
}

/// Where STARTTLS left the session.
enum Secured<S> {
    /// TLS is up (boxed: a TLS stream is large).
    Tls(Box<TlsStream<S>>),
    /// The peer refused STARTTLS and TLS is not required: RFC 3207 §4, the
    /// session is still in its post-EHLO state and may continue in clear.
    Clear(Conn<S>),
}

/// STARTTLS and the handshake. A failure under a requirement, a failed
/// handshake or bytes pushed after the 220 end the session.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    server_name: &str,
    config: Arc<ClientConfig>,
    required: bool,
    t: &Timeouts,
    p: &mut Progress,
) -> Result<Secured<S>, SessionError> {
    let reply = conn
        .command("STARTTLS", Stage::StartTls, t.starttls)
        .await?
        .reply;
    if reply.code != 220 {
        p.tls = TlsOutcome::Failed {
            result_type: TlsResultType::StartTlsNotSupported,
            detail: format!("STARTTLS refused: {reply}"),
            code: Some(format!("StartTlsRefused:{}", reply.code)),
        };
        if required {
            return end(conn, Err(SessionError::StartTls(reply)), t).await;
        }
        return Ok(Secured::Clear(conn));
    }
    let (stream, pushed) = conn.into_parts();
    if !pushed.is_empty() {
        // RFC 3207 §4.2 / CVE-2011-0411 in reverse: bytes sent after the 220
        // could only be injected replies; never read them.
        let detail = format!(
            "peer sent {} octets after its 220 to STARTTLS",
            pushed.len()
        );
        p.tls = TlsOutcome::Failed {
            result_type: TlsResultType::ValidationFailure,
            detail: detail.clone(),
            code: Some("DataAfterStartTlsReply".to_owned()),
        };
        return Err(SessionError::Protocol {
            stage: Stage::StartTls,
            detail,
        });
    }
    match handshake(stream, server_name, config, t.tls_handshake).await {
        Ok(tls_stream) => Ok(Secured::Tls(Box::new(tls_stream))),
        Err((result_type, detail, code)) => {
            tracing::debug!(%result_type, %detail, required, "smtp client: TLS handshake failed");
            p.tls = TlsOutcome::Failed {
                result_type,
                detail: detail.clone(),
                code,
            };
            // Nothing more is said on this connection, in clear or otherwise.
            Err(SessionError::Tls {
                result_type,
                detail,
            })
        }
    }
}

/// Runs the transaction, then ends the session.
async fn transact<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    caps: &Capabilities,
    tx: &Transaction<'_>,
    t: &Timeouts,
) -> Result<TransactionReport, SessionError> {
    let result = transaction::run(&mut conn, caps, tx, t).await;
    end(conn, result, t).await
}

/// Says QUIT when the dialogue is still in step (its reply is waited for only
/// briefly and changes nothing), then closes; a broken session is just dropped.
async fn end<S: AsyncRead + AsyncWrite + Unpin, T>(
    mut conn: Conn<S>,
    result: Result<T, SessionError>,
    t: &Timeouts,
) -> Result<T, SessionError> {
    let polite = match &result {
        Ok(_) => true,
        Err(e) => e.dialogue_intact(),
    };
    if polite {
        let _ = conn.command("QUIT", Stage::Quit, t.quit).await;
        conn.shutdown(t.quit).await;
    }
    result
}
