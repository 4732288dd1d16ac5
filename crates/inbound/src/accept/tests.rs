//! The accept pipeline against a real store (sled on disk): what it
//! writes for a message (our Received header first, forged results
//! removed, the envelope made from the session's record of the arrival,
//! never from the message's bytes).

use super::*;
use crate::session::Arrival;
use portcullis_store::Store;
use portcullis_types::{
    Address, BodyType, Notify, Origin, Recipient, ReversePath, SystemClock, TlsSummary,
};

const HOSTNAME: &str = "mx.example.test";

struct Env {
    _dir: tempfile::TempDir,
    queue: Queue,
    pipeline: AcceptPipeline,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = Queue::open(&store).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let pipeline = AcceptPipeline::new(PipelineParts {
        queue: queue.clone(),
        clock: clock.clone(),
        verifier: None,
        dkim: Arc::default(),
        dmarc: None,
        spooler: Spooler::new(queue.clone(), clock, 7),
        read_budget: ReadBudget::new(1024 * 1024),
        metrics: Arc::new(InboundMetrics::default()),
    });
    Env {
        _dir: dir,
        queue,
        pipeline,
    }
}

fn message(data: &str, arrival: Arrival) -> IncomingMessage {
    IncomingMessage {
        sender: ReversePath::parse("alice@example.test").unwrap(),
        recipients: vec![Recipient {
            address: Address::parse("bob@elsewhere.test").unwrap(),
            notify: Notify::default(),
            orcpt: None,
        }],
        ret: None,
        envid: None,
        body_type: BodyType::SevenBit,
        smtputf8: false,
        require_tls: false,
        arrival,
        data: data.as_bytes().to_vec(),
        spooled: None,
        verify: false,
    }
}

/// Submitted mail: stored with the origin, TLS and user the session
/// recorded; the message starts with our Received header and keeps
/// no Authentication-Results claiming to be ours.
#[tokio::test]
async fn stores_what_the_session_recorded() {
    let env = env();
    let tls = TlsSummary {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
    };
    let arrival = Arrival {
        client_ip: "192.0.2.10".parse().unwrap(),
        helo: "client.test".into(),
        esmtp: true,
        tls: Some(tls.clone()),
        authenticated: Some("alice".into()),
        trusted: false,
        may_waive_tls: true,
        origin: Origin::Submission,
    };
    let data = format!("Authentication-Results: {HOSTNAME}; dkim=pass\r\nSubject: x\r\n\r\nhi\r\n");
    let Answer::Stored(id) = env.pipeline.accept(message(&data, arrival), HOSTNAME).await else {
        panic!("not stored");
    };
    let envelope = env.queue.get(id).unwrap().envelope;
    assert_eq!(envelope.origin, Origin::Submission);
    assert_eq!(envelope.tls, Some(tls));
    assert_eq!(envelope.authenticated.as_deref(), Some("alice"));
    assert_eq!(envelope.helo, "client.test");
    assert_eq!(envelope.client_ip.to_string(), "192.0.2.10");
    let stored = String::from_utf8(env.queue.message(id).unwrap()).unwrap();
    assert!(
        stored.starts_with("Received: from client.test ([192.0.2.10])\r\n"),
        "{stored}"
    );
    assert!(stored.contains("with ESMTPSA id"), "{stored}");
    assert!(!stored.contains("Authentication-Results"), "{stored}");
    assert!(stored.ends_with("Subject: x\r\n\r\nhi\r\n"), "{stored}");
    assert_eq!(envelope.size, stored.len() as u64);
}

/// Relayed mail: the origin is the session's (relay), whatever the
/// message claims about itself.
#[tokio::test]
async fn origin_is_never_read_from_the_message() {
    let env = env();
    let arrival = Arrival {
        client_ip: "192.0.2.11".parse().unwrap(),
        helo: "client.test".into(),
        esmtp: false,
        tls: None,
        authenticated: None,
        trusted: false,
        may_waive_tls: false,
        origin: Origin::Relay,
    };
    let data = "Content-Type: multipart/report; report-type=tlsrpt\r\nTLS-Report-Domain: example.test\r\n\r\n{}\r\n";
    let Answer::Stored(id) = env.pipeline.accept(message(data, arrival), HOSTNAME).await else {
        panic!("not stored");
    };
    let envelope = env.queue.get(id).unwrap().envelope;
    assert_eq!(envelope.origin, Origin::Relay);
    assert_eq!(envelope.authenticated, None);
    let stored = String::from_utf8(env.queue.message(id).unwrap()).unwrap();
    assert!(stored.contains("with SMTP id"), "{stored}");
}

/// `TLS-Required: No` is honoured only for a client the session recorded
/// as allowed to waive TLS, and never together with REQUIRETLS, which the
/// envelope keeps.
#[tokio::test]
async fn tls_required_no_follows_the_recorded_client() {
    let env = env();
    let arrival = |may_waive_tls| Arrival {
        client_ip: "192.0.2.12".parse().unwrap(),
        helo: "client.test".into(),
        esmtp: true,
        tls: None,
        authenticated: None,
        trusted: false,
        may_waive_tls,
        origin: Origin::Relay,
    };
    let data = "TLS-Required: No\r\nSubject: x\r\n\r\nhi\r\n";
    let mut stored = Vec::new();
    for (may_waive, require_tls) in [(true, false), (false, false), (true, true)] {
        let mut msg = message(data, arrival(may_waive));
        msg.require_tls = require_tls;
        let Answer::Stored(id) = env.pipeline.accept(msg, HOSTNAME).await else {
            panic!("not stored");
        };
        let envelope = env.queue.get(id).unwrap().envelope;
        stored.push((envelope.tls_optional, envelope.require_tls));
    }
    assert_eq!(stored, vec![(true, false), (false, false), (false, true)]);
    // Without the field nothing is waived, whoever sends.
    let plain = message("Subject: x\r\n\r\nhi\r\n", arrival(true));
    let Answer::Stored(id) = env.pipeline.accept(plain, HOSTNAME).await else {
        panic!("not stored");
    };
    assert!(!env.queue.get(id).unwrap().envelope.tls_optional);
}
