//! The Received trace header we prepend (RFC 5321 §4.4, RFC 3848 protocol
//! names, TLS details in a comment as Postfix writes them).

use portcullis_types::{QueueId, Recipient, TlsSummary};
use std::net::IpAddr;
use std::time::SystemTime;

/// Everything the trace header says about the session.
pub struct TraceInfo<'a> {
    /// The HELO/EHLO argument.
    pub helo: &'a str,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Our host name.
    pub hostname: &'a str,
    /// True after EHLO (ESMTP), false after HELO.
    pub esmtp: bool,
    /// TLS, if any.
    pub tls: Option<&'a TlsSummary>,
    /// True when the client authenticated.
    pub authenticated: bool,
    /// True when SMTPUTF8 was used.
    pub smtputf8: bool,
    /// The queue id.
    pub id: QueueId,
    /// Recipients (named only when there is exactly one, for privacy).
    pub recipients: &'a [Recipient],
    /// Time of acceptance.
    pub now: SystemTime,
}

/// The protocol keyword of RFC 3848 / RFC 6531 for the session.
pub fn protocol(esmtp: bool, tls: bool, auth: bool, utf8: bool) -> &'static str {
    match (esmtp, utf8, tls, auth) {
        (false, _, _, _) => "SMTP",
        (true, true, true, true) => "UTF8SMTPSA",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, false, false) => "UTF8SMTP",
        (true, false, true, true) => "ESMTPSA",
        (true, false, true, false) => "ESMTPS",
        (true, false, false, true) => "ESMTPA",
        (true, false, false, false) => "ESMTP",
    }
}

/// Formats the header, folded, ending in CRLF.
pub fn received_header(t: &TraceInfo<'_>) -> String {
    let ip = match t.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPv6:{v6}"),
        },
    };
    let mut h = format!("Received: from {} ([{ip}])\r\n", t.helo);
    if let Some(tls) = t.tls {
        h.push_str(&format!(
            "\t(using {} with cipher {})\r\n",
            tls.version, tls.cipher
        ));
    }
    h.push_str(&format!(
        "\tby {} (Portcullis) with {} id {}",
        t.hostname,
        protocol(t.esmtp, t.tls.is_some(), t.authenticated, t.smtputf8),
        t.id
    ));
    if let [only] = t.recipients {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!(
        ";\r\n\t{}\r\n",
        portcullis_types::date::rfc5322(t.now)
    ));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_types::{Address, Notify};

    #[test]
    fn esmtps_with_cipher_and_single_recipient() {
        let rcpt = [Recipient {
            address: Address::parse("u@example.test").unwrap(),
            notify: Notify::default(),
            orcpt: None,
        }];
        let tls = TlsSummary {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        };
        let h = received_header(&TraceInfo {
            helo: "client.test",
            client_ip: "::ffff:192.0.2.1".parse().unwrap(),
            hostname: "mx.example.test",
            esmtp: true,
            tls: Some(&tls),
            authenticated: false,
            smtputf8: false,
            id: QueueId::generate(0, 0),
            recipients: &rcpt,
            now: SystemTime::UNIX_EPOCH,
        });
        assert!(h.starts_with("Received: from client.test ([192.0.2.1])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\tby mx.example.test (Portcullis) with ESMTPS id "), "{h}");
        assert!(
            h.ends_with("for <u@example.test>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"),
            "{h}"
        );
        assert_eq!(protocol(true, true, false, false), "ESMTPS");
        assert_eq!(protocol(true, false, false, false), "ESMTP");
        assert_eq!(protocol(true, true, true, true), "UTF8SMTPSA");
        assert_eq!(protocol(false, true, false, false), "SMTP");
    }
}
