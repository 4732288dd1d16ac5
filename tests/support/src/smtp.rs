//! A small blocking SMTP client for raw-socket tests: send exact bytes, read
//! whole replies, upgrade to TLS with rustls.

use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// One reply: code and all lines (with codes), joined by "\n".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The full text of all lines.
    pub text: String,
}

/// The TLS stream type the client upgrades to.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A client over any stream.
pub struct Client<S: Read + Write> {
    stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    /// Connects without reading the greeting.
    pub fn connect_raw(addr: SocketAddr) -> Client<TcpStream> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects from the local address `source` (e.g. 127.0.0.2: tests
    /// that need clients at different addresses) without reading the
    /// greeting.
    pub fn connect_raw_from(addr: SocketAddr, source: std::net::IpAddr) -> Client<TcpStream> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket.connect(&addr.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and checks the 220 greeting.
    pub fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let mut c = Self::connect_raw(addr);
        let r = c.read_reply();
        assert_eq!(r.code, 220, "greeting: {}", r.text);
        c
    }

    /// Connects with implicit TLS (role `submissions`) and reads the greeting.
    pub fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Client<TlsStream> {
        let c = Self::connect_raw(addr);
        let mut t = c.into_tls(config, name);
        let r = t.read_reply();
        assert_eq!(r.code, 220, "greeting: {}", r.text);
        t
    }

    /// Sends STARTTLS (expects 220) and upgrades.
    pub fn starttls(mut self, config: Arc<rustls::ClientConfig>, name: &str) -> Client<TlsStream> {
        self.cmd("STARTTLS", 220);
        self.into_tls(config, name)
    }

    /// Wraps the socket in TLS now (handshake happens on first I/O).
    pub fn into_tls(self, config: Arc<rustls::ClientConfig>, name: &str) -> Client<TlsStream> {
        let server = ServerName::try_from(name.to_string()).expect("server name");
        let conn = rustls::ClientConnection::new(config, server).expect("client connection");
        let mut stream = rustls::StreamOwned::new(conn, self.stream);
        // Drive the handshake so errors show up here.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("tls handshake");
        }
        Client {
            stream,
            buf: self.buf,
        }
    }

    /// The socket, for setting timeouts or shutting down.
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }
}

impl Client<TlsStream> {
    /// Negotiated protocol version, e.g. "TLSv1_3".
    pub fn tls_version(&self) -> String {
        format!(
            "{:?}",
            self.stream.conn.protocol_version().expect("version")
        )
    }
}

impl<S: Read + Write> Client<S> {
    /// Writes bytes exactly as given.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Reads one complete (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .expect("connection closed before a reply")
    }

    /// Reads one reply; `None` at EOF (or reset) before a full reply.
    pub fn try_read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let done = line.len() < 4 || line.as_bytes()[3] == b' ';
            lines.push(line);
            if done {
                break;
            }
        }
        let code = lines[0].get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        Some(Reply {
            code,
            text: lines.join("\n"),
        })
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `line` + CRLF and asserts the reply code.
    #[track_caller]
    pub fn cmd(&mut self, line: &str, expect: u16) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        let r = self.read_reply();
        assert_eq!(r.code, expect, "{line} -> {}", r.text);
        r
    }

    /// EHLO, returning the extension lines.
    #[track_caller]
    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.cmd(&format!("EHLO {name}"), 250)
    }

    /// Sends DATA, the message (dot-stuffing not applied: the caller's bytes
    /// go as they are) and the terminator; returns the final reply.
    #[track_caller]
    pub fn data(&mut self, message: &[u8]) -> Reply {
        self.cmd("DATA", 354);
        self.send(message);
        self.send(b"\r\n.\r\n");
        self.read_reply()
    }

    /// True when the server has closed the connection (EOF on read).
    pub fn is_closed(&mut self) -> bool {
        self.try_read_reply().is_none()
    }
}

/// The queue id in a "250 2.0.0 Ok: queued as ID" reply.
pub fn queued_id(reply: &Reply) -> String {
    reply
        .text
        .rsplit("queued as ")
        .next()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 16)
        .unwrap_or_else(|| panic!("no queue id in {:?}", reply.text))
}
