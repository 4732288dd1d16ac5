//! TLS-RPT (RFC 8460) end to end inside the policy crate: sessions recorded
//! in sled over a driven clock, the §4.4 JSON checked field by field,
//! restarts, no report loops (§3), the §5.3 mail (headers, subject, file
//! name, content types, gzip body, a DKIM signature verified by mail-auth
//! against a key published in a real DNS server on loopback), and the §5.2
//! HTTPS POST to a real rustls server on loopback, retried after a 500 and
//! sent once, never twice.

use std::collections::{BTreeSet, VecDeque};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mail_auth::report::tlsrpt::TlsReport;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mail_parser::{MessageParser, MimeHeaders};
use portcullis_auth::{DkimSigner, SignerError, SignerKeyType};
use portcullis_dns::{HickoryResolver, MemoryResolver};
use portcullis_store::Store;
use portcullis_test_support::dns::TestDns;
use portcullis_test_support::pki::TestPki;
use portcullis_tls::{ClientTls, TlsResultType};
use portcullis_tls::{ReportPolicy, ReportPolicyType};
use portcullis_tlsrpt::{
    Day, HttpsPoster, ReportInfo, ReportMailer, ReportParts, ReportSender, ReportSettings,
    ReportState, SendOutcome, TlsRptError, TlsRptRecorder, report_signer, report_signer_from_file,
};
use portcullis_tlsrpt::{TlsResultSink, TlsSessionResult};
use portcullis_types::{Clock, Domain};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: &str = "2026-03-10";
const SUBMITTER: &str = "sender.test";
const FROM: &str = "tlsrpt-noreply@sender.test";
const SELECTOR: &str = "tlsrpt";
const POLICY: [&str; 5] = [
    "version: STSv1",
    "mode: enforce",
    "mx: mx1.example.test",
    "mx: *.example.test",
    "max_age: 86400",
];

/// A clock the test moves by hand.
#[derive(Debug)]
struct HandClock(AtomicU64);

impl HandClock {
    fn at(t: SystemTime) -> Arc<HandClock> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        Arc::new(HandClock(AtomicU64::new(secs)))
    }
    fn set(&self, t: SystemTime) {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        self.0.store(secs, Ordering::SeqCst);
    }
}

impl Clock for HandClock {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// Records what would have been queued.
#[derive(Debug, Default)]
struct FakeQueue {
    submitted: Mutex<Vec<(String, String, Vec<u8>)>>,
    refuse: Mutex<Option<String>>,
    /// Never answer (a crash while submitting, once the future is dropped).
    hang: std::sync::atomic::AtomicBool,
}

impl ReportMailer for FakeQueue {
    async fn submit(&self, from: &str, to: &str, message: Vec<u8>) -> Result<String, String> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if let Some(e) = self.refuse.lock().expect("lock").clone() {
            return Err(e);
        }
        let mut s = self.submitted.lock().expect("lock");
        s.push((from.to_owned(), to.to_owned(), message));
        Ok(format!("Q{}", s.len()))
    }
}

impl FakeQueue {
    fn submitted(&self) -> Vec<(String, String, Vec<u8>)> {
        self.submitted.lock().expect("lock").clone()
    }
}

fn day() -> Day {
    DAY.parse().expect("day")
}

fn info() -> ReportInfo {
    ReportInfo {
        organization: "Sender Org".into(),
        contact: "mailto:postmaster@sender.test".into(),
        submitter: SUBMITTER.into(),
    }
}

fn sts(domain: &str) -> ReportPolicy {
    ReportPolicy {
        policy_type: ReportPolicyType::Sts,
        policy_domain: Domain::parse(domain).expect("domain"),
        policy_string: POLICY.iter().map(|s| (*s).to_owned()).collect(),
        mx_host: vec!["mx1.example.test".into(), "*.example.test".into()],
        failure: None,
    }
}

fn no_policy(domain: &str) -> ReportPolicy {
    ReportPolicy {
        policy_type: ReportPolicyType::NoPolicyFound,
        policy_domain: Domain::parse(domain).expect("domain"),
        policy_string: Vec::new(),
        mx_host: Vec::new(),
        failure: None,
    }
}

fn session(
    policy: ReportPolicy,
    mx: &str,
    ip: &str,
    helo: Option<&str>,
    failure: Option<TlsResultType>,
    detail: &str,
) -> TlsSessionResult {
    TlsSessionResult {
        policy,
        sending_ip: Some("198.51.100.7".parse::<IpAddr>().expect("ip")),
        mx_host: mx.into(),
        receiving_ip: ip.parse::<IpAddr>().expect("ip"),
        receiving_helo: helo.map(str::to_owned),
        failure,
        detail: detail.into(),
        // The code the TLS client gives an expired certificate.
        reason_code: (failure == Some(TlsResultType::CertificateExpired))
            .then(|| "ExpiredContext".to_owned()),
        is_report: false,
    }
}

fn ok(policy: ReportPolicy) -> TlsSessionResult {
    session(policy, "mx1.example.test", "192.0.2.10", None, None, "")
}

/// A day of mixed traffic: example.test (MTA-STS) 5 good, 2 expired
/// certificates on mx1, 1 missing STARTTLS on mx2, plus a report session;
/// plain.test (no policy) 3 good, 1 validation failure; loop.test only
/// report sessions.
fn record_day(rec: &TlsRptRecorder) {
    for _ in 0..5 {
        rec.record(ok(sts("example.test")));
    }
    for _ in 0..2 {
        rec.record(session(
            sts("example.test"),
            "mx1.example.test",
            "192.0.2.10",
            Some("mx1.example.test"),
            Some(TlsResultType::CertificateExpired),
            "certificate expired",
        ));
    }
    rec.record(session(
        sts("example.test"),
        "mx2.example.test",
        "192.0.2.11",
        None,
        Some(TlsResultType::StartTlsNotSupported),
        "STARTTLS not offered",
    ));
    let mut report = ok(sts("example.test"));
    report.is_report = true;
    rec.record(report);
    for _ in 0..3 {
        rec.record(ok(no_policy("plain.test")));
    }
    rec.record(session(
        no_policy("plain.test"),
        "mx.plain.test",
        "2001:db8::25",
        Some("mail.plain.test"),
        Some(TlsResultType::ValidationFailure),
        "handshake failed: protocol version",
    ));
    for _ in 0..2 {
        let mut r = ok(no_policy("loop.test"));
        r.is_report = true;
        rec.record(r);
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: Store,
    clock: Arc<HandClock>,
    recorder: TlsRptRecorder,
    resolver: Arc<MemoryResolver>,
    queue: Arc<FakeQueue>,
    pki: TestPki,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let clock = HandClock::at(day().start() + Duration::from_secs(3600));
        let recorder = TlsRptRecorder::new(&store, clock.clone()).expect("recorder");
        Env {
            dir,
            store,
            clock,
            recorder,
            resolver: Arc::new(MemoryResolver::new()),
            queue: Arc::new(FakeQueue::default()),
            pki: TestPki::new(),
        }
    }

    fn sender(
        &self,
        signer: Option<DkimSigner>,
    ) -> ReportSender<Arc<MemoryResolver>, Arc<FakeQueue>> {
        let poster = HttpsPoster::builder(self.resolver.clone())
            .tls(ClientTls::with_roots(self.pki.root_store()))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("poster");
        let parts = ReportParts {
            store: self.store.clone(),
            recorder: self.recorder.clone(),
            resolver: self.resolver.clone(),
            mailer: self.queue.clone(),
            poster,
        };
        let mut b = ReportSender::builder(parts, ReportSettings::new(info(), FROM))
            .send_window(Duration::from_secs(4 * 3600))
            .backoff(vec![Duration::from_secs(600)]);
        if let Some(s) = signer {
            b = b.signer(s);
        }
        b.build().expect("sender")
    }
}

/// The keys of a JSON object.
#[track_caller]
fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}
const RSA_PKCS1: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAzs/tYmwLwHCJ083EI4FbthIZrqEdJMiF/fjvkkZDNGXy87GY\n\
pjLZGcRlGXZFkg7F+ftZZ6VEZaBCn+MQg96+57+W0hJSP6T/pld+GXxEtJtxS9so\n\
ryVXiEaIfiBNQnNuULejJWru+8lq0wTqXxsr5ZVYvdHZpF65G3PQwOmG9FbWEEwI\n\
l3haB+VBBxsytCALVRJRJV1HMZ76IFfuNp6M69dXOqZJDcfETQYmM4FFUyzERD5O\n\
/ow/s+K7aQfN40DfsGuZKnuucA5f2W7pXIxOa/lJB9RO1HRQ69gA1nDO1/oTo9V7\n\
JJcLPp2gw4kpZUkgN1ghsyfnkp9CfmJhBdo+kQIDAQABAoIBAFcMFIYPJRkgJRsF\n\
qi8plPD7CF1Eyg//6Mn/u9KNCV9mI87nqvEVSOS8EbOYYOr7ld/EqBpkaPf/btt+\n\
RqbCnAbOUMxl0sGgEMyyWcyfTgnYvWSov6SMqp2c1nmD3hEApeeKi7xFmIZY/kII\n\
eR+Dv8O3yyzGRX2WMwJ3il+QS3HO0kl+jT8LveW+7Kk7tDUgpyb08z0PDsRVA0qp\n\
jgvexjcuOit6PrtHXWk2WCiWkl/BVWhBkWJ0llOTcssdW1muvKf+P/4Txg46Qirz\n\
Vnl3BH4AMwX+cTBIdmuBojYOw7MfRSpnW0GEbIfHLt037Qj4cOvzdmRKf98nOhe0\n\
Ufj2oFsCgYEA/mOrweZ1MwIA+9r2XoR4KZ/vBCMfeICeQvNOim4uj63Kkxelfbab\n\
R6wh51o8hMW1cB0nA47oa5fSIcHpx2ms4FPeqwOIjpBJZvskgQQyh8rhzxL8Aw4X\n\
EVOhvACipGJtyNL2rvn3vZ3HL3z7WNUjEoADKQZAI9Rx5gBYKE0EcqMCgYEA0B8j\n\
/QtnvF7q0FoL/W0LHvL1oRmWrzZ1oYzxjPm5PqEL2UkGwoAkWJPO6SEaSzvcMEEt\n\
zauQnEpEAHshb6yr59/5PUZ5LTEUCMmGe0BhCKC97YtPqTpoOudOIJHOihGWVMbo\n\
S3IzoSuNa+5Pwy5zx4YFSjLBY0/Iqi9wXKddETsCgYAnqJA5TV1OE2zl1q/78jjt\n\
fFJ92Z/pYFvL4jSHXkACBD0Fi3UwUQyKMuqiL64poMz1aoYPhvLy+xs2Sg3RGcdq\n\
vYiELqvWVeYrmNGLD4V1KArmBnalX0f3WotnTM4ORI4K9eChTLTzqapI2/ovUiMC\n\
mlRjy+ap70/GZJ1ZwxADcwKBgFAtrw+tdSl857mc90GK4N3re/W0hfi6Ylb6lZRa\n\
IKOgJ5BuMcx80YPObcgimJ6jURDGC39QuUV81vXYeekr/I44Gy0gGU7vuWgpO0YA\n\
Z2GLi6AYK3hmqAEJW2/wvEE0xVWjy5pFRN6yiKksBk6Lds9HMoKDSz2XXxcxb3hC\n\
gfhBAoGBAMBzp7ky46GW6cFjpaOLdPLeAcCGEa/6b00Q+ee77xUeqlLL28gVWbRe\n\
YORVNkeWL3OsmDwzDLt1Azq6EZTAjn6UsRvl05rrDiRU4t59WkipI/MIVEYydG8+\n\
OGGipcOmHiB9eR8DYus8YfCXixRWgG4QV2qRjIR9ILVWzIt3H0t8\n\
-----END RSA PRIVATE KEY-----\n\
";
const RSA_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDOz+1ibAvAcInT\n\
zcQjgVu2EhmuoR0kyIX9+O+SRkM0ZfLzsZimMtkZxGUZdkWSDsX5+1lnpURloEKf\n\
4xCD3r7nv5bSElI/pP+mV34ZfES0m3FL2yivJVeIRoh+IE1Cc25Qt6Mlau77yWrT\n\
BOpfGyvllVi90dmkXrkbc9DA6Yb0VtYQTAiXeFoH5UEHGzK0IAtVElElXUcxnvog\n\
V+42nozr11c6pkkNx8RNBiYzgUVTLMREPk7+jD+z4rtpB83jQN+wa5kqe65wDl/Z\n\
bulcjE5r+UkH1E7UdFDr2ADWcM7X+hOj1Xsklws+naDDiSllSSA3WCGzJ+eSn0J+\n\
YmEF2j6RAgMBAAECggEAVwwUhg8lGSAlGwWqLymU8PsIXUTKD//oyf+70o0JX2Yj\n\
zueq8RVI5LwRs5hg6vuV38SoGmRo9/9u235GpsKcBs5QzGXSwaAQzLJZzJ9OCdi9\n\
ZKi/pIyqnZzWeYPeEQCl54qLvEWYhlj+Qgh5H4O/w7fLLMZFfZYzAneKX5BLcc7S\n\
SX6NPwu95b7sqTu0NSCnJvTzPQ8OxFUDSqmOC97GNy46K3o+u0ddaTZYKJaSX8FV\n\
aEGRYnSWU5Nyyx1bWa68p/4//hPGDjpCKvNWeXcEfgAzBf5xMEh2a4GiNg7Dsx9F\n\
KmdbQYRsh8cu3TftCPhw6/N2ZEp/3yc6F7RR+PagWwKBgQD+Y6vB5nUzAgD72vZe\n\
hHgpn+8EIx94gJ5C806Kbi6PrcqTF6V9tptHrCHnWjyExbVwHScDjuhrl9IhwenH\n\
aazgU96rA4iOkElm+ySBBDKHyuHPEvwDDhcRU6G8AKKkYm3I0vau+fe9nccvfPtY\n\
1SMSgAMpBkAj1HHmAFgoTQRyowKBgQDQHyP9C2e8XurQWgv9bQse8vWhGZavNnWh\n\
jPGM+bk+oQvZSQbCgCRYk87pIRpLO9wwQS3Nq5CcSkQAeyFvrKvn3/k9RnktMRQI\n\
yYZ7QGEIoL3ti0+pOmg6504gkc6KEZZUxuhLcjOhK41r7k/DLnPHhgVKMsFjT8iq\n\
L3Bcp10ROwKBgCeokDlNXU4TbOXWr/vyOO18Un3Zn+lgW8viNIdeQAIEPQWLdTBR\n\
DIoy6qIvrimgzPVqhg+G8vL7GzZKDdEZx2q9iIQuq9ZV5iuY0YsPhXUoCuYGdqVf\n\
R/dai2dMzg5Ejgr14KFMtPOpqkjb+i9SIwKaVGPL5qnvT8ZknVnDEANzAoGAUC2v\n\
D611KXznuZz3QYrg3et79bSF+LpiVvqVlFogo6AnkG4xzHzRg85tyCKYnqNREMYL\n\
f1C5RXzW9dh56Sv8jjgbLSAZTu+5aCk7RgBnYYuLoBgreGaoAQlbb/C8QTTFVaPL\n\
mkVE3rKIqSwGTot2z0cygoNLPZdfFzFveEKB+EECgYEAwHOnuTLjoZbpwWOlo4t0\n\
8t4BwIYRr/pvTRD557vvFR6qUsvbyBVZtF5g5FU2R5Yvc6yYPDMMu3UDOroRlMCO\n\
fpSxG+XTmusOJFTi3n1aSKkj8whURjJ0bz44YaKlw6YeIH15HwNi6zxh8JeLFFaA\n\
bhBXapGMhH0gtVbMi3cfS3w=\n\
-----END PRIVATE KEY-----\n\
";
const ED25519_PKCS8_V1: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIPduBFJ69OEeWd+/xMmq0/T5phXuEgLE//1Bjm6QGn5G\n\
-----END PRIVATE KEY-----\n\
";
const EC_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIKadoQzMoGhd97lRjj983xcCxEWWHRhhZvbAfJ1Sq9GEoAoGCCqGSM49\n\
AwEHoUQDQgAEQ7MzNW6qErSWxwtMRXSOpJITE1cjhdthgKiNf5FXZxSUtODrPHUC\n\
galqYNJSQaVr3CAjPlj5VCWtQZKZtRqmlA==\n\
-----END EC PRIVATE KEY-----\n\
";

/// RFC 8460 §4.4: a day of mixed sessions becomes one report per policy
/// domain, each field named and counted as the RFC says; report sessions
/// are not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_sessions_becomes_the_rfc_8460_report() {
    let env = Env::new();
    record_day(&env.recorder);
    let sender = env.sender(None);

    // While the day runs, its reports are still collecting.
    let list = sender.list().expect("list");
    let domains: Vec<(&str, ReportState)> =
        list.iter().map(|s| (s.domain.as_str(), s.state)).collect();
    assert_eq!(
        domains,
        [
            ("example.test", ReportState::Collecting),
            ("plain.test", ReportState::Collecting)
        ]
    );

    env.clock.set(day().end() + Duration::from_secs(60));
    let json = sender.show("example.test", Some(day())).expect("show");
    assert_eq!(
        keys(&json),
        BTreeSet::from([
            "organization-name",
            "date-range",
            "contact-info",
            "report-id",
            "policies"
        ])
    );
    assert_eq!(json["organization-name"], "Sender Org");
    assert_eq!(json["contact-info"], "mailto:postmaster@sender.test");
    assert_eq!(
        json["date-range"],
        json!({"start-datetime": "2026-03-10T00:00:00Z", "end-datetime": "2026-03-10T23:59:59Z"})
    );
    let id = json["report-id"].as_str().expect("report-id").to_owned();
    assert!(
        id.starts_with("2026-03-10.example.test.") && id.ends_with("@sender.test"),
        "{id}"
    );
    // The id is fixed once the day is over.
    assert_eq!(
        sender.show("EXAMPLE.test.", None).expect("show")["report-id"],
        id.as_str()
    );

    let policies = json["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 1);
    let p = &policies[0];
    assert_eq!(
        keys(p),
        BTreeSet::from(["policy", "summary", "failure-details"])
    );
    assert_eq!(
        p["policy"],
        json!({
            "policy-type": "sts",
            "policy-string": POLICY,
            "policy-domain": "example.test",
            "mx-host": ["mx1.example.test", "*.example.test"],
        })
    );
    assert_eq!(
        p["summary"],
        json!({"total-successful-session-count": 5, "total-failure-session-count": 3}),
        "the report session is not counted"
    );
    assert_eq!(
        p["failure-details"],
        json!([
            {
                "result-type": "certificate-expired",
                "sending-mta-ip": "198.51.100.7",
                "receiving-mx-hostname": "mx1.example.test",
                "receiving-mx-helo": "mx1.example.test",
                "receiving-ip": "192.0.2.10",
                "failed-session-count": 2,
                "additional-information": "certificate expired",
                "failure-reason-code": "ExpiredContext",
            },
            {
                "result-type": "starttls-not-supported",
                "sending-mta-ip": "198.51.100.7",
                "receiving-mx-hostname": "mx2.example.test",
                "receiving-ip": "192.0.2.11",
                "failed-session-count": 1,
                "additional-information": "STARTTLS not offered",
            },
        ])
    );

    let plain = sender.show("plain.test", Some(day())).expect("show");
    assert_eq!(
        plain["policies"],
        json!([{
            "policy": {"policy-type": "no-policy-found", "policy-domain": "plain.test"},
            "summary": {"total-successful-session-count": 3, "total-failure-session-count": 1},
            "failure-details": [{
                "result-type": "validation-failure",
                "sending-mta-ip": "198.51.100.7",
                "receiving-mx-hostname": "mx.plain.test",
                "receiving-mx-helo": "mail.plain.test",
                "receiving-ip": "2001:db8::25",
                "failed-session-count": 1,
                "additional-information": "handshake failed: protocol version",
            }],
        }])
    );

    // mail-auth, as a report receiver, reads it back.
    let parsed = TlsReport::parse_json(&serde_json::to_vec(&json).expect("json")).expect("parse");
    assert_eq!(parsed.report_id, id);
    assert_eq!(parsed.policies[0].summary.total_success, 5);
    assert_eq!(parsed.policies[0].failure_details.len(), 2);

    // A domain that saw only report sessions has no report (RFC 8460 §3).
    assert!(matches!(
        sender.show("loop.test", Some(day())),
        Err(TlsRptError::NoData { .. })
    ));
}

/// A policy change during the day gives the report one `policies[]` entry
/// per policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_of_the_day_is_its_own_entry() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    let mut changed = sts("example.test");
    changed.policy_string[1] = "mode: testing".into();
    env.recorder.record(ok(changed.clone()));
    env.recorder.record(ok(changed));
    let sender = env.sender(None);
    env.clock.set(day().end());
    let json = sender.show("example.test", Some(day())).expect("show");
    let mut counts: Vec<u64> = json["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| {
            p["summary"]["total-successful-session-count"]
                .as_u64()
                .expect("n")
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 2]);
}

/// Counts are in sled: reopening the store (a restart) keeps them, and
/// counting continues on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_restart() {
    let Env {
        dir,
        store,
        clock,
        recorder,
        ..
    } = Env::new();
    record_day(&recorder);
    store.commit().await.expect("commit");
    drop(recorder);
    drop(store);
    // sled's lock is released once every handle is dropped.
    let store = Store::open_when_released(dir.path(), Duration::from_secs(10))
        .await
        .expect("reopen");
    let recorder = TlsRptRecorder::new(&store, clock.clone()).expect("recorder");
    let aggs = recorder.aggregates(day(), "example.test").expect("aggs");
    assert_eq!(aggs.len(), 1);
    assert_eq!((aggs[0].successful, aggs[0].failed()), (5, 3));
    recorder.record(ok(sts("example.test")));
    let aggs = recorder.aggregates(day(), "example.test").expect("aggs");
    assert_eq!((aggs[0].successful, aggs[0].failed()), (6, 3));
    // The next day is counted apart.
    clock.set(day().end());
    recorder.record(ok(sts("example.test")));
    assert_eq!(
        recorder
            .aggregates(day().next(), "example.test")
            .expect("aggs")[0]
            .successful,
        1
    );
}

/// RFC 8460 §3: sessions that carried reports are never counted, and a
/// domain that only received reports gets none back, even if it publishes
/// a TLS-RPT record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_sessions_are_never_counted_and_get_no_report() {
    let env = Env::new();
    record_day(&env.recorder);
    env.resolver
        .add_txt("_smtp._tls.loop.test", "v=TLSRPTv1; rua=mailto:r@loop.test");
    let reports = env.recorder.reports().expect("reports");
    assert!(reports.iter().all(|(_, d)| d != "loop.test"), "{reports:?}");
    let sender = env.sender(Some(
        report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key"),
    ));
    env.clock.set(day().end() + Duration::from_secs(60));
    let outcomes = sender.send_now().await;
    assert!(
        outcomes
            .iter()
            .all(|o| !format!("{o:?}").contains("loop.test")),
        "{outcomes:?}"
    );
    assert!(env.queue.submitted().is_empty());
}

/// RFC 8460 §5.3 over mail, for each supported key type: headers, subject,
/// file name, content types, the gzip JSON, and a DKIM signature that
/// mail-auth verifies against the key published in DNS. Sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailto_reports_are_signed_rfc_8460_messages_sent_once() {
    let dns = TestDns::start().await;
    let hickory = HickoryResolver::new(&[dns.addr()], Duration::from_secs(2)).expect("resolver");
    let verifier = MessageAuthenticator(hickory.inner().clone());
    for (name, pem, key_type) in [
        ("rsa-pkcs1", RSA_PKCS1, SignerKeyType::Rsa),
        ("rsa-pkcs8", RSA_PKCS8, SignerKeyType::Rsa),
        ("ed25519-pkcs8", ED25519_PKCS8_V1, SignerKeyType::Ed25519),
    ] {
        let selector = format!("tlsrpt-{name}");
        let signer = report_signer(pem.as_bytes(), SUBMITTER, &selector).expect(name);
        assert_eq!(signer.key_type(), key_type, "{name}");
        let record = signer.dns_record(Some("tlsrpt"));
        assert!(record.contains("s=tlsrpt"), "{record}");
        dns.add_txt(&signer.dns_name(), &record);

        let env = Env::new();
        record_day(&env.recorder);
        env.resolver.add_txt(
            "_smtp._tls.example.test",
            "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
        );
        let sender = env.sender(Some(signer));

        // Not before the day is over.
        assert!(
            sender
                .send_due(day().end() - Duration::from_secs(1))
                .await
                .is_empty()
        );
        // Within the send window after midnight, everything is due.
        let at = day().end() + Duration::from_secs(4 * 3600);
        env.clock.set(at);
        let expected_json = sender.show("example.test", Some(day())).expect("show");
        let outcomes = sender.send_due(at).await;
        let kinds: BTreeSet<(String, &str)> = outcomes
            .iter()
            .map(|o| match o {
                SendOutcome::Sent { domain, .. } | SendOutcome::NoDestination { domain, .. } => {
                    (domain.clone(), o.kind())
                }
                other => panic!("{name}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                ("example.test".to_owned(), "sent"),
                ("plain.test".to_owned(), "no-destination"),
            ]),
            "{name}"
        );
        let submitted = env.queue.submitted();
        assert_eq!(submitted.len(), 1, "{name}");
        let (from, to, raw) = &submitted[0];
        assert_eq!(from, "", "null reverse-path");
        assert_eq!(to, "tlsrpt@example.test");

        let msg = MessageParser::default().parse(raw).expect("parse");
        let id = expected_json["report-id"].as_str().expect("id");
        assert_eq!(
            msg.subject(),
            Some(
                format!("Report Domain: example.test Submitter: sender.test Report-ID: <{id}>")
                    .as_str()
            )
        );
        assert_eq!(
            msg.header("TLS-Report-Domain").and_then(|h| h.as_text()),
            Some("example.test")
        );
        assert_eq!(
            msg.header("TLS-Report-Submitter").and_then(|h| h.as_text()),
            Some("sender.test")
        );
        assert_eq!(
            msg.from().and_then(|a| a.first()).and_then(|a| a.address()),
            Some(FROM)
        );
        let ct = msg.content_type().expect("content-type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("tlsrpt"));
        // What delivery looks for to tell report sessions apart.
        let text = String::from_utf8_lossy(raw);
        assert!(text.contains("report-type=\"tlsrpt\""), "{text}");
        let att = msg.attachment(0).expect("attachment");
        let act = att.content_type().expect("attachment content-type");
        assert_eq!(
            (act.ctype(), act.subtype()),
            ("application", Some("tlsrpt+gzip"))
        );
        let filename = att.attachment_name().expect("filename");
        let parts: Vec<&str> = filename.split('!').collect();
        assert_eq!(parts.len(), 5, "{filename}");
        assert_eq!(parts[0], "sender.test");
        assert_eq!(parts[1], "example.test");
        assert_eq!(parts[2], day().start_timestamp().to_string());
        assert_eq!(parts[3], day().end_timestamp().to_string());
        let unique = parts[4].strip_suffix(".json.gz").expect(".json.gz");
        assert!(
            !unique.is_empty() && unique.chars().all(|c| c.is_ascii_alphanumeric()),
            "{filename}"
        );
        let body: Value = serde_json::from_slice(&gunzip(att.contents())).expect("json");
        assert_eq!(body, expected_json, "{name}");

        // mail-auth as a receiver reads the report out of the message.
        let report = TlsReport::parse_rfc5322(raw, 1 << 20).expect("mail-auth parse");
        assert_eq!(report.report_id, id);

        // The DKIM signature verifies against the published key.
        let am = AuthenticatedMessage::parse(raw).expect("authenticated message");
        let results = verifier.verify_dkim(&am).await;
        assert_eq!(results.len(), 1, "{name}");
        assert_eq!(
            results[0].result(),
            &DkimResult::Pass,
            "{name}: {results:?}"
        );
        let sig = results[0].signature().expect("signature");
        assert_eq!(
            (sig.d.as_str(), sig.s.as_str()),
            (SUBMITTER, selector.as_str())
        );
        // …and would not verify had the message been altered.
        let tampered = text.replace("This is an aggregate", "This is a forged");
        let am = AuthenticatedMessage::parse(tampered.as_bytes()).expect("parse");
        let results = verifier.verify_dkim(&am).await;
        assert_ne!(
            results[0].result(),
            &DkimResult::Pass,
            "{name}: tampered passed"
        );

        // Never twice: later passes and `tlsrpt send` send nothing.
        assert!(
            sender
                .send_due(at + Duration::from_secs(86_400))
                .await
                .is_empty()
        );
        assert!(sender.send_now().await.is_empty());
        assert_eq!(env.queue.submitted().len(), 1);
        let state = sender
            .state(day(), "example.test")
            .expect("state")
            .expect("record");
        assert_eq!(state.state, ReportState::Sent);
        let list = sender.list().expect("list");
        let line = list
            .iter()
            .find(|s| s.domain == "example.test")
            .expect("listed");
        assert_eq!(
            (line.successful, line.failed, line.state),
            (5, 3, ReportState::Sent)
        );
        assert_eq!(line.destinations, ["mailto:tlsrpt@example.test"]);
    }
}

/// RFC 8460 §5.3 requires signed report mail: without a DKIM key a mailto
/// destination is given up, not sent unsigned. Key files that cannot sign
/// are refused with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_unsigned_report_mail_and_clear_key_errors() {
    let env = Env::new();
    record_day(&env.recorder);
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    let sender = env.sender(None);
    env.clock.set(day().end() + Duration::from_secs(60));
    let outcomes = sender.send_now().await;
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, SendOutcome::GaveUp { error, .. } if error.contains("DKIM"))),
        "{outcomes:?}"
    );
    assert!(env.queue.submitted().is_empty());
    assert_eq!(
        sender
            .state(day(), "example.test")
            .expect("state")
            .expect("record")
            .state,
        ReportState::Failed
    );

    for (name, pem) in [
        ("ec", EC_SEC1),
        ("garbage", "not a key"),
        ("certificate", env.pki.ca_pem().as_str()),
    ] {
        match report_signer(pem.as_bytes(), SUBMITTER, SELECTOR) {
            Err(TlsRptError::Signer(SignerError::KeyUnsupported { reason, .. })) => {
                assert!(!reason.is_empty())
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let missing = env.dir.path().join("missing.pem");
    assert!(matches!(
        report_signer_from_file(&missing, SUBMITTER, SELECTOR),
        Err(TlsRptError::Signer(SignerError::KeyRead { .. }))
    ));
    let bad_selector = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, "bad selector");
    assert!(matches!(
        bad_selector,
        Err(TlsRptError::Signer(SignerError::Setting {
            key: "dkim_selector",
            ..
        }))
    ));
}

/// A temporary DNS failure of `_smtp._tls` means "later", not "nobody to
/// tell".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_dns_failure_delays_the_report() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    env.resolver.set_temp_fail("_smtp._tls.example.test", true);
    let signer = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key");
    let sender = env.sender(Some(signer));
    let at = day().end() + Duration::from_secs(4 * 3600);
    let outcomes = sender.send_due(at).await;
    assert!(
        matches!(
            outcomes.as_slice(),
            [SendOutcome::Retry {
                destination: None,
                ..
            }]
        ),
        "{outcomes:?}"
    );
    env.resolver.set_temp_fail("_smtp._tls.example.test", false);
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    // Still backing off.
    assert!(
        sender
            .send_due(at + Duration::from_secs(60))
            .await
            .is_empty()
    );
    let outcomes = sender.send_due(at + Duration::from_secs(600)).await;
    assert!(
        matches!(outcomes.as_slice(), [SendOutcome::Sent { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(env.queue.submitted().len(), 1);
}

/// One request as the test HTTPS receiver saw it.
#[derive(Debug, Clone)]
struct Posted {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A tiny HTTPS report receiver on loopback: rustls with a certificate
/// from the test CA, one request per connection, statuses scripted.
struct Receiver {
    port: u16,
    posted: Arc<Mutex<Vec<Posted>>>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(pki: &TestPki, name: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.issue(&[name]).server_config());
        let posted: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let statuses: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let (p, s) = (posted.clone(), statuses.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, p, s) = (acceptor.clone(), p.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let method = first.next().unwrap_or_default().to_owned();
                    let path = first.next().unwrap_or_default().to_owned();
                    let mut content_type = None;
                    let mut length = 0usize;
                    for line in lines {
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-type") {
                                content_type = Some(v.trim().to_owned());
                            }
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    while buf.len() < head_end + length {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + length].to_vec();
                    p.lock().expect("lock").push(Posted {
                        method,
                        path,
                        content_type,
                        body,
                    });
                    let status = s.lock().expect("lock").pop_front().unwrap_or(200);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Receiver {
            port,
            posted,
            statuses,
            task,
        }
    }

    fn posted(&self) -> Vec<Posted> {
        self.posted.lock().expect("lock").clone()
    }
}

/// RFC 8460 §5.2 over HTTPS: a POST of the gzip JSON as
/// `application/tlsrpt+gzip` to a real rustls server; a 500 is retried
/// after the backoff, and once accepted the report is never sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_reports_are_posted_retried_after_failure_and_sent_once() {
    let env = Env::new();
    let host = "reports.example.test";
    let receiver = Receiver::start(&env.pki, host).await;
    receiver.statuses.lock().expect("lock").push_back(500);
    env.resolver.add_a(host, Ipv4Addr::LOCALHOST);
    let url = format!("https://{host}:{}/v1/tlsrpt", receiver.port);
    env.resolver
        .add_txt("_smtp._tls.example.test", &format!("v=TLSRPTv1; rua={url}"));
    record_day(&env.recorder);
    let sender = env.sender(None);
    let at = day().end() + Duration::from_secs(4 * 3600);
    env.clock.set(at);
    let expected = sender.show("example.test", Some(day())).expect("show");

    let outcomes = sender.send_due(at).await;
    let retry: Vec<&SendOutcome> = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Retry { .. }))
        .collect();
    assert_eq!(retry.len(), 1, "{outcomes:?}");
    assert_eq!(retry[0].transport(), "https");
    assert!(format!("{:?}", retry[0]).contains("500"), "{retry:?}");
    assert_eq!(receiver.posted().len(), 1);

    // Backing off: nothing before the wait is over.
    assert!(
        sender
            .send_due(at + Duration::from_secs(60))
            .await
            .is_empty()
    );
    assert_eq!(receiver.posted().len(), 1);

    let outcomes = sender.send_due(at + Duration::from_secs(600)).await;
    assert!(
        matches!(outcomes.as_slice(), [SendOutcome::Sent { destination, detail, .. }] if *destination == url && detail == "HTTP 200"),
        "{outcomes:?}"
    );
    let posted = receiver.posted();
    assert_eq!(posted.len(), 2);
    for p in &posted {
        assert_eq!(p.method, "POST");
        assert_eq!(p.path, "/v1/tlsrpt");
        assert_eq!(p.content_type.as_deref(), Some("application/tlsrpt+gzip"));
        let json: Value = serde_json::from_slice(&gunzip(&p.body)).expect("json");
        assert_eq!(json, expected, "the same report, retried");
    }

    // Never twice.
    assert!(
        sender
            .send_due(at + Duration::from_secs(7200))
            .await
            .is_empty()
    );
    assert!(sender.send_now().await.is_empty());
    assert_eq!(receiver.posted().len(), 2);
    let state = sender
        .state(day(), "example.test")
        .expect("state")
        .expect("record");
    assert_eq!(state.state, ReportState::Sent);
    let dest = &state.destinations.expect("destinations")[0];
    assert_eq!((dest.attempts, dest.sent_at.is_some()), (2, true));
}

/// `tlsrpt send` ignores the random delay after midnight; the loop does
/// not send before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_now_ignores_the_random_delay() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    let signer = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key");
    let sender = env.sender(Some(signer));
    // Just after midnight: before the random send time (almost surely;
    // the delay is stored, so check against it).
    let at = day().end();
    env.clock.set(at);
    let before = sender.send_due(at).await;
    if before.is_empty() {
        let outcomes = sender.send_now().await;
        assert!(
            matches!(outcomes.as_slice(), [SendOutcome::Sent { .. }]),
            "{outcomes:?}"
        );
    }
    assert_eq!(env.queue.submitted().len(), 1);
}

/// A run loop sends due reports and stops on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_sends_and_stops_on_shutdown() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    env.clock.set(day().end() + Duration::from_secs(4 * 3600));
    let signer = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key");
    let sender = Arc::new(env.sender(Some(signer)));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(portcullis_tlsrpt::run(sender, shutdown.clone()));
    for _ in 0..100 {
        if !env.queue.submitted().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.queue.submitted().len(), 1);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("loop stops")
        .expect("no panic");
}

/// A refused submission to the queue is retried; the report goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_submission_is_retried() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    *env.queue.refuse.lock().expect("lock") = Some("queue full".into());
    let signer = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key");
    let sender = env.sender(Some(signer));
    let at = day().end() + Duration::from_secs(4 * 3600);
    let outcomes = sender.send_due(at).await;
    assert!(
        matches!(outcomes.as_slice(), [SendOutcome::Retry { error, .. }] if error.contains("queue full")),
        "{outcomes:?}"
    );
    *env.queue.refuse.lock().expect("lock") = None;
    assert!(matches!(
        sender
            .send_due(at + Duration::from_secs(600))
            .await
            .as_slice(),
        [SendOutcome::Sent { .. }]
    ));
    assert!(
        sender
            .send_due(at + Duration::from_secs(6000))
            .await
            .is_empty()
    );
    assert_eq!(env.queue.submitted().len(), 1);
}

/// Regression guard for "at most once": an attempt interrupted half way
/// (the process died while the queue was taking the report) is recorded
/// before it starts, and a later pass gives that destination up instead of
/// risking a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempt_is_never_repeated() {
    let env = Env::new();
    env.recorder.record(ok(sts("example.test")));
    env.resolver.add_txt(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.test",
    );
    env.queue.hang.store(true, Ordering::SeqCst);
    let signer = report_signer(RSA_PKCS1.as_bytes(), SUBMITTER, SELECTOR).expect("key");
    let sender = env.sender(Some(signer));
    let at = day().end() + Duration::from_secs(4 * 3600);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sender.send_due(at))
            .await
            .is_err(),
        "the submission hangs"
    );
    env.queue.hang.store(false, Ordering::SeqCst);
    let outcomes = sender.send_due(at + Duration::from_secs(3600)).await;
    assert!(
        matches!(outcomes.as_slice(), [SendOutcome::GaveUp { error, .. }] if error.contains("interrupted")),
        "{outcomes:?}"
    );
    assert!(env.queue.submitted().is_empty());
    assert!(sender.send_now().await.is_empty());
}
