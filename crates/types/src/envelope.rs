//! The envelope stored with every accepted message: everything later stages
//! (verification, delivery, DSNs per RFC 3461/3464, TLS-RPT) need to know
//! about how the message arrived.

use crate::address::{Address, ReversePath};
use crate::queue_id::QueueId;
use std::net::IpAddr;

/// `RET=` of RFC 3461 §4.3: how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DsnRet {
    /// Return the whole message.
    Full,
    /// Return only the headers.
    Headers,
}

/// `BODY=` of RFC 6152 / RFC 3030.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum BodyType {
    /// No BODY parameter, or BODY=7BIT.
    #[default]
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
    /// BODY=BINARYMIME (only with BDAT).
    BinaryMime,
}

/// `NOTIFY=` of RFC 3461 §4.1, as the set of events the sender asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    /// NOTIFY=SUCCESS.
    pub success: bool,
    /// NOTIFY=FAILURE (also the default when NOTIFY is absent).
    pub failure: bool,
    /// NOTIFY=DELAY.
    pub delay: bool,
    /// NOTIFY=NEVER.
    pub never: bool,
    /// True when the client sent a NOTIFY parameter at all.
    pub explicit: bool,
}

/// One accepted recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recipient {
    /// The forward path.
    pub address: Address,
    /// NOTIFY as given.
    pub notify: Notify,
    /// ORCPT (RFC 3461 §4.2) as given, `addr-type;xtext` decoded.
    pub orcpt: Option<String>,
}

/// The TLS state of the inbound session, for trace headers and reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsSummary {
    /// e.g. "TLSv1.3".
    pub version: String,
    /// e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher: String,
}

/// Which part of this server made the message, recorded by the code that
/// creates it and never re-derived from the message's bytes (STYLE 8a):
/// anyone can write `report-type=tlsrpt` into a header or an address, so
/// content proves nothing. Only [`Origin::TlsReport`] earns the RFC 8460
/// §5.3 exemption from a recipient's MTA-STS `enforce` mode.
///
/// Serialized in kebab-case (`"relay"`, `"tls-report"`, …); a record
/// written before the field existed has none and decodes as
/// [`Origin::Relay`], the origin with no privileges.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Origin {
    /// Received over SMTP without authentication (port 25, or a client in
    /// `trusted_networks`).
    #[default]
    Relay,
    /// Received from a client that authenticated (SMTP AUTH, RFC 4954).
    Submission,
    /// A delivery status notification we generated (RFC 3464).
    Bounce,
    /// A TLS-RPT aggregate report we generated (RFC 8460 §5.3).
    TlsReport,
    /// A DMARC aggregate report we generated (RFC 7489 §7.2).
    DmarcReport,
}

impl Origin {
    /// The name as serialized and shown by `queue show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Relay => "relay",
            Origin::Submission => "submission",
            Origin::Bounce => "bounce",
            Origin::TlsReport => "tls-report",
            Origin::DmarcReport => "dmarc-report",
        }
    }

    /// True only for our own TLS reports: RFC 8460 §5.3 lets them reach an
    /// MTA-STS `enforce` domain despite TLS failures (broken TLS is what
    /// they report), and RFC 8460 §3 keeps their sessions out of reports.
    pub fn is_tls_report(self) -> bool {
        self == Origin::TlsReport
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope of one accepted message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// The queue id (also in the 250 reply and the Received header).
    pub id: QueueId,
    /// MAIL FROM.
    pub sender: ReversePath,
    /// The accepted recipients, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// RET, if given.
    pub ret: Option<DsnRet>,
    /// ENVID (RFC 3461 §4.4), xtext decoded.
    pub envid: Option<String>,
    /// BODY.
    pub body: BodyType,
    /// SMTPUTF8 was given on MAIL FROM.
    pub smtputf8: bool,
    /// Unix seconds of acceptance.
    pub received_at: u64,
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name the client gave.
    pub helo: String,
    /// TLS on the inbound session, if any.
    pub tls: Option<TlsSummary>,
    /// The user the client authenticated as (SMTP AUTH on submission).
    pub authenticated: Option<String>,
    /// Size of the stored message in octets (with our trace header).
    pub size: u64,
    /// Who made the message; absent in records older than the field, which
    /// then count as [`Origin::Relay`].
    #[serde(default)]
    pub origin: Origin,
    /// `MAIL FROM:<..> REQUIRETLS` (RFC 8689 §4): every hop must be reached
    /// over authenticated TLS (MTA-STS `enforce` or DANE) and advertise
    /// REQUIRETLS, or the message bounces with 5.7.30. Only accepted on a
    /// TLS session; false in records older than the field.
    #[serde(default)]
    pub require_tls: bool,
    /// `TLS-Required: No` (RFC 8689 §5) from a sender allowed to waive TLS
    /// (`[delivery] tls_required_no`): delivery is opportunistic even where
    /// MTA-STS or DANE would refuse. Never set together with
    /// [`Envelope::require_tls`]; false in records older than the field.
    #[serde(default)]
    pub tls_optional: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(origin: Origin) -> Envelope {
        Envelope {
            id: QueueId::generate(1_700_000_000_000, 0),
            sender: ReversePath::Null,
            recipients: vec![],
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            received_at: 1_700_000_000,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            helo: "h.test".into(),
            tls: None,
            authenticated: None,
            size: 0,
            origin,
            require_tls: false,
            tls_optional: false,
        }
    }

    /// Every origin survives the queue's JSON encoding.
    #[test]
    fn origin_round_trips() {
        for origin in [
            Origin::Relay,
            Origin::Submission,
            Origin::Bounce,
            Origin::TlsReport,
        ] {
            let json = serde_json::to_value(envelope(origin)).unwrap();
            assert_eq!(json["origin"], origin.as_str());
            let back: Envelope = serde_json::from_value(json).unwrap();
            assert_eq!(back.origin, origin);
        }
    }

    /// A record written before the field existed is a plain relay: it gets
    /// no exemption it was never given.
    #[test]
    fn a_record_without_origin_is_relay() {
        let mut json = serde_json::to_value(envelope(Origin::TlsReport)).unwrap();
        json.as_object_mut().unwrap().remove("origin");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back.origin, Origin::Relay);
        assert!(!back.origin.is_tls_report());
        assert!(Origin::TlsReport.is_tls_report());
    }

    /// The REQUIRETLS flags survive the queue's JSON encoding, and a record
    /// written before they existed asks for neither.
    #[test]
    fn tls_flags_round_trip_and_default_off() {
        let mut env = envelope(Origin::Relay);
        env.require_tls = true;
        let json = serde_json::to_value(&env).unwrap();
        let back: Envelope = serde_json::from_value(json.clone()).unwrap();
        assert!(back.require_tls && !back.tls_optional);
        let mut old = json;
        let fields = old.as_object_mut().unwrap();
        fields.remove("require_tls");
        fields.remove("tls_optional");
        let back: Envelope = serde_json::from_value(old).unwrap();
        assert!(!back.require_tls && !back.tls_optional);
    }
}
