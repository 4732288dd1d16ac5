//! One mail transaction: checks before MAIL, the envelope (pipelined per
//! RFC 2920 or lock-step), and the content by DATA or, for BINARYMIME, BDAT.

use portcullis_queue::MessageData;
use portcullis_types::{BodyType, DsnRet, Notify, Reply};
use tokio::io::{AsyncRead, AsyncWrite};

use super::data::{DotStuffer, headers_are_ascii, xtext};
use super::ehlo::Capabilities;
use super::error::SessionError;
use super::reply::{Conn, RawReply};
use super::timeouts::{Stage, Timeouts};

/// Message content is stuffed and written in blocks of this many octets,
/// each under [`Timeouts::data_block`].
const BLOCK: usize = 64 * 1024;

/// The mail transaction to run.
#[derive(Debug, Clone)]
pub struct Transaction<'a> {
    /// The reverse path without angle brackets; `""` for the null sender.
    pub mail_from: &'a str,
    /// The recipients, in RCPT order.
    pub recipients: Vec<RcptSpec<'a>>,
    /// The message as stored (CRLF line ends, not dot-stuffed), read block
    /// by block; its length is what `SIZE=` declares.
    pub message: MessageData,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: BodyType,
    /// SMTPUTF8 was given when the message was accepted (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461 §4.3).
    pub ret: Option<DsnRet>,
    /// `ENVID=` (RFC 3461 §4.4), decoded; encoded as xtext on the wire.
    pub envid: Option<&'a str>,
    /// REQUIRETLS (RFC 8689): sent on MAIL FROM; a peer that does not
    /// advertise it gets nothing ([`SessionError::RequireTlsUnsupported`]).
    /// The caller makes sure the session's TLS was authenticated.
    pub require_tls: bool,
}

/// One recipient with its DSN parameters.
#[derive(Debug, Clone)]
pub struct RcptSpec<'a> {
    /// The forward path without angle brackets.
    pub address: &'a str,
    /// `NOTIFY=` (RFC 3461 §4.1); sent only when `explicit`.
    pub notify: Notify,
    /// `ORCPT=` (RFC 3461 §4.2) decoded, as `addr-type;address`
    /// (`rfc822;` is assumed when there is no `;`).
    pub orcpt: Option<&'a str>,
}

impl<'a> RcptSpec<'a> {
    /// A recipient without DSN parameters.
    pub fn new(address: &'a str) -> RcptSpec<'a> {
        RcptSpec {
            address,
            notify: Notify::default(),
            orcpt: None,
        }
    }
}

/// The replies of a transaction that reached the recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionReport {
    /// The (positive) reply to MAIL FROM.
    pub mail: Reply,
    /// One reply per recipient, in the order of [`Transaction::recipients`].
    pub rcpts: Vec<Reply>,
    /// The reply that settled the content for the accepted recipients: a
    /// refusal of DATA itself, or the reply after the final dot (or BDAT).
    /// `None` when no recipient was accepted.
    pub data: Option<Reply>,
}

impl TransactionReport {
    /// The reply that decides recipient `index`: its RCPT reply when that was
    /// negative, else the data reply. `None` for an index out of range.
    pub fn outcome(&self, index: usize) -> Option<&Reply> {
        let rcpt = self.rcpts.get(index)?;
        if rcpt.is_positive() {
            self.data.as_ref().or(Some(rcpt))
        } else {
            Some(rcpt)
        }
    }

    /// True when recipient `index` was accepted and the content was accepted for it.
    pub fn delivered(&self, index: usize) -> bool {
        self.rcpts.get(index).is_some_and(Reply::is_positive)
            && self.data.as_ref().is_some_and(|d| d.code / 100 == 2)
    }

    /// How many recipients RCPT accepted.
    pub fn accepted(&self) -> usize {
        self.rcpts.iter().filter(|r| r.is_positive()).count()
    }
}

/// What the checks before MAIL decided about the transaction.
struct Plan {
    mail: String,
    rcpts: Vec<String>,
    bdat: bool,
}

/// Refuses what the peer cannot take before anything is sent, and builds
/// the commands.
fn plan(caps: &Capabilities, tx: &Transaction<'_>) -> Result<Plan, SessionError> {
    if tx.recipients.is_empty() {
        return Err(SessionError::InvalidEnvelope {
            detail: "no recipients".to_owned(),
        });
    }
    check_path("MAIL FROM", tx.mail_from)?;
    for rcpt in &tx.recipients {
        check_path("RCPT TO", rcpt.address)?;
    }
    let size = usize::try_from(tx.message.len()).unwrap_or(usize::MAX);
    // RFC 1870 §6: do not send what the peer has announced it will refuse.
    if let Some(max) = caps.size_limit()
        && size > max
    {
        return Err(SessionError::SizeExceeded { size, max });
    }
    // RFC 6531 §3.2: a message that needs SMTPUTF8 is not sent to a peer
    // without it (and this client never downgrades it).
    let needs_utf8 = !tx.mail_from.is_ascii()
        || tx.recipients.iter().any(|r| !r.address.is_ascii())
        || (tx.smtputf8 && !headers_are_ascii(tx.message.head()));
    if needs_utf8 && !caps.smtputf8 {
        return Err(SessionError::Smtputf8Unsupported);
    }
    // RFC 3030 §3: BINARYMIME content only travels with BDAT.
    let bdat = tx.body == BodyType::BinaryMime;
    if bdat && !(caps.chunking && caps.binarymime) {
        return Err(SessionError::BinaryMimeUnsupported);
    }
    // RFC 8689 §4.2.1: a REQUIRETLS message only goes to a peer that
    // promises to keep requiring TLS onwards.
    if tx.require_tls && !caps.requiretls {
        return Err(SessionError::RequireTlsUnsupported);
    }

    let mut mail = format!("MAIL FROM:<{}>", tx.mail_from);
    if caps.size.is_some() {
        mail.push_str(&format!(" SIZE={size}"));
    }
    match tx.body {
        BodyType::SevenBit => {}
        BodyType::EightBitMime if caps.eightbitmime => mail.push_str(" BODY=8BITMIME"),
        BodyType::EightBitMime => {
            // RFC 6152 §3: BODY=8BITMIME must not go to a peer without the
            // extension; the content is sent as it is (no conversion).
            tracing::debug!("smtp client: 8-bit content to a peer without 8BITMIME");
        }
        BodyType::BinaryMime => mail.push_str(" BODY=BINARYMIME"),
    }
    if caps.smtputf8 && (tx.smtputf8 || needs_utf8) {
        mail.push_str(" SMTPUTF8");
    }
    if tx.require_tls {
        mail.push_str(" REQUIRETLS");
    }
    if caps.dsn {
        match tx.ret {
            Some(DsnRet::Full) => mail.push_str(" RET=FULL"),
            Some(DsnRet::Headers) => mail.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = tx.envid {
            mail.push_str(" ENVID=");
            mail.push_str(&xtext(envid));
        }
    }
    let rcpts = tx
        .recipients
        .iter()
        .map(|r| rcpt_command(r, caps.dsn))
        .collect();
    Ok(Plan { mail, rcpts, bdat })
}

fn rcpt_command(rcpt: &RcptSpec<'_>, dsn: bool) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.address);
    if !dsn {
        return line;
    }
    let n = rcpt.notify;
    if n.explicit {
        if n.never {
            line.push_str(" NOTIFY=NEVER");
        } else {
            let events: Vec<&str> = [
                (n.success, "SUCCESS"),
                (n.failure, "FAILURE"),
                (n.delay, "DELAY"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            if !events.is_empty() {
                line.push_str(" NOTIFY=");
                line.push_str(&events.join(","));
            }
        }
    }
    if let Some(orcpt) = rcpt.orcpt {
        let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
        line.push_str(" ORCPT=");
        line.push_str(&xtext(kind));
        line.push(';');
        line.push_str(&xtext(address));
    }
    line
}

/// Refuses paths that would break the command line: CR, LF and the other
/// ASCII controls can never be part of an RFC 5321 path.
fn check_path(what: &str, path: &str) -> Result<(), SessionError> {
    if path.chars().any(|c| c.is_ascii_control()) {
        return Err(SessionError::InvalidEnvelope {
            detail: format!("{what} path contains a control character: {path:?}"),
        });
    }
    Ok(())
}

/// Runs the transaction on an open session whose EHLO gave `caps`.
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    caps: &Capabilities,
    tx: &Transaction<'_>,
    t: &Timeouts,
) -> Result<TransactionReport, SessionError> {
    let plan = plan(caps, tx)?;
    let (mail, rcpts, data_init) = if caps.pipelining {
        envelope_pipelined(conn, &plan, t).await?
    } else {
        envelope_lockstep(conn, &plan, t).await?
    };
    let accepted = mail.is_positive() && rcpts.iter().any(Reply::is_positive);
    if !accepted {
        return nothing_accepted(conn, mail, rcpts, data_init, t).await;
    }
    let data = if plan.bdat {
        send_bdat(conn, &tx.message, t).await?
    } else {
        let init = match data_init {
            Some(reply) => reply,
            None => {
                conn.command("DATA", Stage::DataInit, t.data_init)
                    .await?
                    .reply
            }
        };
        if init.code / 100 != 3 {
            init
        } else {
            send_data(conn, &tx.message, t).await?
        }
    };
    Ok(TransactionReport {
        mail,
        rcpts,
        data: Some(data),
    })
}

/// The replies to MAIL, each RCPT and (pipelined) DATA.
type EnvelopeReplies = (Reply, Vec<Reply>, Option<Reply>);

/// RFC 2920 §3.1: MAIL, the RCPTs and DATA (the last command of the
/// group) in one write, then the replies in order.
async fn envelope_pipelined<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    plan: &Plan,
    t: &Timeouts,
) -> Result<EnvelopeReplies, SessionError> {
    let use_data = !plan.bdat;
    let mut group = String::new();
    for line in std::iter::once(&plan.mail).chain(&plan.rcpts) {
        group.push_str(line);
        group.push_str("\r\n");
    }
    if use_data {
        group.push_str("DATA\r\n");
    }
    tracing::debug!(commands = plan.rcpts.len() + 1 + usize::from(use_data), group = %group.trim_end(), "smtp client: send pipelined");
    conn.send(group.as_bytes(), Stage::Mail, t.mail).await?;
    let mail = conn.read_reply(Stage::Mail, t.mail).await?.reply;
    let mut rcpts = Vec::with_capacity(plan.rcpts.len());
    for _ in &plan.rcpts {
        rcpts.push(conn.read_reply(Stage::Rcpt, t.rcpt).await?.reply);
    }
    let data_init = if use_data {
        Some(conn.read_reply(Stage::DataInit, t.data_init).await?.reply)
    } else {
        None
    };
    Ok((mail, rcpts, data_init))
}

/// MAIL, then each RCPT, one at a time; a refused MAIL ends the
/// transaction.
async fn envelope_lockstep<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    plan: &Plan,
    t: &Timeouts,
) -> Result<EnvelopeReplies, SessionError> {
    let mail = conn.command(&plan.mail, Stage::Mail, t.mail).await?.reply;
    if !mail.is_positive() {
        return Err(SessionError::Mail(mail));
    }
    let mut rcpts = Vec::with_capacity(plan.rcpts.len());
    for line in &plan.rcpts {
        rcpts.push(conn.command(line, Stage::Rcpt, t.rcpt).await?.reply);
    }
    Ok((mail, rcpts, None))
}

/// No recipient (or not MAIL) was accepted: keeps the dialogue in step and
/// reports the replies without data.
async fn nothing_accepted<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    mail: Reply,
    rcpts: Vec<Reply>,
    data_init: Option<Reply>,
    t: &Timeouts,
) -> Result<TransactionReport, SessionError> {
    match &data_init {
        // A server that said 354 although nothing was accepted gets an
        // empty content, so that the dialogue stays in step.
        Some(reply) if reply.code / 100 == 3 => {
            conn.send(b".\r\n", Stage::DataBlock, t.data_block).await?;
            conn.read_reply(Stage::DataEnd, t.data_end).await?;
        }
        Some(_) => {}
        None => {
            let rset = conn.command("RSET", Stage::Rset, t.mail).await?;
            tracing::debug!(reply = %rset.reply, "smtp client: no recipient accepted, RSET");
        }
    }
    if !mail.is_positive() {
        return Err(SessionError::Mail(mail));
    }
    Ok(TransactionReport {
        mail,
        rcpts,
        data: None,
    })
}

/// A block of the queued message could not be read: the transaction is
/// abandoned without the terminator (dropping the connection makes the peer
/// discard what it got, RFC 5321 §4.1.1.4), and the message is retried.
fn unreadable(e: std::io::Error) -> SessionError {
    SessionError::Io {
        stage: Stage::DataBlock,
        detail: format!("the queued message could not be read: {e}"),
    }
}

/// Sends the dot-stuffed content and the terminator, then reads the final
/// reply. The message is read block by block: one block (and its stuffed
/// copy) in memory, whatever its size.
async fn send_data<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    message: &MessageData,
    t: &Timeouts,
) -> Result<Reply, SessionError> {
    let mut stuffer = DotStuffer::new();
    let mut out = Vec::with_capacity(BLOCK + BLOCK / 8);
    let mut blocks = message.blocks(BLOCK);
    while let Some(block) = blocks.next().await.map_err(unreadable)? {
        out.clear();
        stuffer.push(&block, &mut out);
        conn.send(&out, Stage::DataBlock, t.data_block).await?;
    }
    out.clear();
    stuffer.finish(&mut out);
    conn.send(&out, Stage::DataBlock, t.data_block).await?;
    tracing::debug!(octets = message.len(), "smtp client: content sent");
    let RawReply { reply, .. } = conn.read_reply(Stage::DataEnd, t.data_end).await?;
    Ok(reply)
}

/// Sends the content as one `BDAT n LAST` chunk (RFC 3030 §2), unstuffed.
async fn send_bdat<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    message: &MessageData,
    t: &Timeouts,
) -> Result<Reply, SessionError> {
    let command = format!("BDAT {} LAST\r\n", message.len());
    tracing::debug!(command = %command.trim_end(), "smtp client: send");
    conn.send(command.as_bytes(), Stage::DataInit, t.data_init)
        .await?;
    let mut blocks = message.blocks(BLOCK);
    while let Some(block) = blocks.next().await.map_err(unreadable)? {
        conn.send(&block, Stage::DataBlock, t.data_block).await?;
    }
    let RawReply { reply, .. } = conn.read_reply(Stage::DataEnd, t.data_end).await?;
    Ok(reply)
}
