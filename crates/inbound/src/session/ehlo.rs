//! EHLO and HELO (RFC 5321 §4.1.1.1): greet, reset the transaction and list
//! the extensions this listener offers.

use super::{Session, reply};
use portcullis_config::Role;
use std::io::Write;

/// True for a domain name or an address literal as RFC 5321 §4.1.3 allows
/// in EHLO. We are lenient about what the name is (many clients send
/// unqualified names) but not about which characters it uses.
fn plausible_helo(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return ip.parse::<std::net::IpAddr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl Session {
    pub(super) fn ehlo(&mut self, host: &str, esmtp: bool, out: &mut Vec<u8>) {
        if !plausible_helo(host) {
            self.stats.syntax_errors += 1;
            self.error(out, 501, (5, 5, 4), "Invalid domain name in EHLO/HELO");
            return;
        }
        self.tx = None;
        self.helo = Some(host.to_string());
        self.esmtp = esmtp;
        let hostname = &self.cfg.hostname;
        if !esmtp {
            let _ = write!(out, "250 {hostname}\r\n");
            return;
        }
        let _ = write!(out, "250-{hostname} greets {host}\r\n");
        let offer_starttls =
            self.cfg.tls_available && self.tls.is_none() && self.cfg.role != Role::Submissions;
        let mut lines: Vec<&[u8]> = vec![
            b"PIPELINING",
            b"8BITMIME",
            b"SMTPUTF8",
            b"ENHANCEDSTATUSCODES",
            b"CHUNKING",
            b"DSN",
        ];
        if offer_starttls {
            lines.push(b"STARTTLS");
        }
        // RFC 8689 §4.1: REQUIRETLS only means something over TLS, so it is
        // offered only there (after STARTTLS, or on `submissions`).
        if self.tls.is_some() {
            lines.push(b"REQUIRETLS");
        }
        // RFC 4954 §4 with RFC 8314: credentials only over TLS, so AUTH is
        // not even advertised before it.
        if self.auth_offered() {
            lines.push(self.auth_mechanisms());
        }
        let _ = write!(out, "250-SIZE {}\r\n", self.cfg.limits.max_message_size);
        for (i, ext) in lines.iter().enumerate() {
            out.extend_from_slice(if i + 1 == lines.len() {
                b"250 "
            } else {
                b"250-"
            });
            out.extend_from_slice(ext);
            out.extend_from_slice(b"\r\n");
        }
    }

    pub(super) fn starttls(&mut self, out: &mut Vec<u8>) -> Option<super::Event> {
        if self.tls.is_some() {
            self.error(out, 503, (5, 5, 1), "TLS already active");
        } else if !self.cfg.tls_available || self.cfg.role == Role::Submissions {
            self.error(out, 502, (5, 5, 1), "STARTTLS not available");
        } else if self.helo.is_none() {
            self.error(out, 503, (5, 5, 1), "Send EHLO first");
        } else {
            reply(out, 220, (2, 0, 0), "Ready to start TLS");
            return Some(super::Event::StartTls);
        }
        self.closed_event()
    }
}

#[cfg(test)]
mod tests {
    use super::plausible_helo;

    #[test]
    fn helo_names() {
        for ok in [
            "mx.example.test",
            "localhost",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "host_1",
        ] {
            assert!(plausible_helo(ok), "{ok}");
        }
        for bad in ["", "a b", "[not-an-ip]", "x\u{7f}", "semi;colon"] {
            assert!(!plausible_helo(bad), "{bad:?}");
        }
    }
}
