//! The certificate an MX host shows after STARTTLS, for `policy own`
//! (checking our own MX hosts from the outside, as a remote sender sees
//! them): the same greeting, EHLO, STARTTLS and handshake as delivery
//! ([`establish`] with an opportunistic decision), then QUIT without a
//! transaction.

use portcullis_tls::{ClientTls, VerificationRecord, WouldVerify};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::SessionError;
use super::reply::Conn;
use super::session::{Progress, Ready, establish};
use super::timeouts::{Stage, Timeouts};
use super::tls::{TlsDecision, TlsOutcome};

/// What one STARTTLS handshake showed of a host.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    /// What TLS happened: `Established` with the version and cipher,
    /// `NotOffered` when the host does not advertise STARTTLS, `Failed`
    /// when it refused the command.
    pub tls: TlsOutcome,
    /// The certificate chain the host sent, leaf first; empty without TLS.
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether the chain passes PKIX validation for the server name under
    /// the trust anchors and clock of the [`ClientTls`] given; `None`
    /// without TLS.
    pub verification: Option<WouldVerify>,
}

/// Greets the host on `stream` (connected to the host named
/// `server_name`, also the SNI and the name the certificate must match)
/// as `helo_name`, negotiates STARTTLS accepting any certificate while
/// recording what PKIX under `tls` says of it, and says QUIT. A failed
/// handshake or a broken dialogue is the error.
pub async fn starttls_certificate<S>(
    stream: S,
    server_name: &str,
    helo_name: &str,
    tls: &ClientTls,
    timeouts: &Timeouts,
) -> Result<PeerCertificate, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // A fresh configuration per connection: the record holds the outcome
    // of this handshake only (no session resumption across hosts).
    let (config, record): (_, VerificationRecord) = tls.opportunistic_config();
    let decision = TlsDecision::Opportunistic {
        config,
        record: record.clone(),
    };
    let mut p = Progress::new();
    match establish(stream, server_name, helo_name, decision, timeouts, &mut p).await? {
        Ready::Clear(mut conn, _) => {
            quit(&mut conn, timeouts).await;
            Ok(PeerCertificate {
                tls: p.tls,
                chain: Vec::new(),
                verification: None,
            })
        }
        Ready::Tls(conn, _) => {
            let (stream, _) = conn.into_parts();
            let chain = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default();
            let mut conn = Conn::new(stream);
            quit(&mut conn, timeouts).await;
            Ok(PeerCertificate {
                tls: p.tls,
                chain,
                verification: record.get(),
            })
        }
    }
}

/// QUIT (its reply changes nothing), then close.
async fn quit<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, t: &Timeouts) {
    let _ = conn.command("QUIT", Stage::Quit, t.quit).await;
    conn.shutdown(t.quit).await;
}
