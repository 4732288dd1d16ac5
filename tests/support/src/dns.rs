//! A real, authoritative DNS server on loopback (STYLE 8, 16) for tests that
//! run the production resolver: hickory-server's [`Server`] with our own
//! in-memory [`RequestHandler`] rather than hickory's zone machinery, so a
//! test can change records and inject failures while it runs.
//!
//! Answers (RFC 1035 §4.3.2, simplified for a server authoritative for
//! every name): the records of the asked type; else, for a name with a
//! CNAME, the CNAME chain followed inside the server (like an authoritative
//! server whose zone holds the target); else NOERROR with no answer for a
//! name that has other records; else NXDOMAIN. Negative answers carry an SOA
//! with a 1 s minimum, and every record has a [`TTL`] of 1 s, so changes are
//! seen by a caching resolver after about a second (unless a test chooses
//! other TTLs: [`TestDns::add_a_ttl`], [`TestDns::set_negative_ttl`]).
//!
//! DNS lists (RFC 5782): [`TestDns::list`] puts a client's address in a
//! block or allow list zone (`2.0.0.127.bl.example.test`, IPv6 in
//! nibbles, see [`list_name`]); every other address of the zone is
//! NXDOMAIN, and [`TestDns::fail_zone`] makes a whole zone answer SERVFAIL
//! or nothing at all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

use crate::dnssec::Dnssec;

/// The TTL of every record the server hands out, in seconds.
pub const TTL: u32 = 1;

/// How many CNAMEs the server follows before giving up (loops are a test bug).
const MAX_CNAME_CHAIN: usize = 8;

/// How a name fails, see [`TestDns::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer SERVFAIL (RCODE 2).
    ServFail,
    /// Never answer: the resolver times out.
    Timeout,
}

/// The records and failures the server holds, keyed by lowercase name
/// without the trailing dot.
#[derive(Debug, Default)]
struct Zone {
    records: HashMap<String, Vec<Record>>,
    failures: HashMap<String, FailMode>,
    /// Failures of every name at or under a zone ([`TestDns::fail_zone`]).
    zone_failures: HashMap<String, FailMode>,
    /// The SOA minimum of negative answers; `None`: [`TTL`].
    negative_ttl: Option<u32>,
    holds: HashMap<String, Arc<HoldState>>,
    /// Signing, once a test asked for DNSSEC ([`TestDns::sign_zone`],
    /// [`TestDns::trust_anchor`]); only queries with DO get signatures.
    dnssec: Option<Dnssec>,
    /// Names whose answers carry the AD bit ([`TestDns::set_authentic`]).
    authentic: std::collections::HashSet<String>,
}

/// The shared state of a [`Hold`]: how many queries arrived, and whether
/// they may be answered.
#[derive(Debug)]
struct HoldState {
    asked: Mutex<usize>,
    arrived: Condvar,
    open: tokio::sync::watch::Sender<bool>,
}

impl HoldState {
    /// Counts a query, then waits until the hold is released.
    async fn pass(&self) {
        let mut open = self.open.subscribe();
        *self.asked.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.arrived.notify_all();
        // An error means the sender is gone: nothing holds the query then.
        let _ = open.wait_for(|o| *o).await;
    }
}

/// Queries for one name wait, unanswered, until [`Hold::release`] (or
/// until the `Hold` is dropped): a test can tell that the server under test
/// is in the middle of a lookup, and do something before it goes on. Made
/// by [`TestDns::hold`].
#[derive(Debug)]
pub struct Hold {
    name: String,
    state: Arc<HoldState>,
}

impl Hold {
    /// Blocks until a query for the name has arrived (and is being held);
    /// panics after `timeout`.
    #[track_caller]
    pub fn wait_for_query(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut asked = self
            .state
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *asked == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "TestDns: no query for {} within {timeout:?}",
                self.name
            );
            asked = self
                .state
                .arrived
                .wait_timeout(asked, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// How many queries for the name have arrived so far.
    pub fn queries(&self) -> usize {
        *self
            .state
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the held queries, and every later one at once.
    pub fn release(&self) {
        self.state.open.send_replace(true);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the handler does with a query.
enum Outcome {
    /// Send nothing.
    Drop,
    /// A response with this code, these answers and, for negative answers,
    /// an SOA.
    Answer {
        code: ResponseCode,
        answers: Vec<Record>,
        soa: Option<Box<Record>>,
    },
    /// A DNSSEC response: code, answers, authority section.
    Signed {
        code: ResponseCode,
        answers: Vec<Record>,
        authority: Vec<Record>,
    },
}

impl Zone {
    /// [`Zone::answer`], signed for a query with DO when DNSSEC is on.
    fn respond(&self, qname: &str, qtype: RecordType, dnssec_ok: bool) -> Outcome {
        let plain = self.answer(qname, qtype);
        let Some(dnssec) = self.dnssec.as_ref().filter(|_| dnssec_ok) else {
            return plain;
        };
        if let Outcome::Answer {
            code: ResponseCode::ServFail,
            ..
        }
        | Outcome::Drop = plain
        {
            return plain;
        }
        let name = fqdn(qname);
        if let Some(answers) = dnssec.special(&name, qtype) {
            return signed(ResponseCode::NoError, answers, Vec::new());
        }
        if qtype == RecordType::DS
            && let Some((answers, authority)) = dnssec.ds(&name)
        {
            return signed(ResponseCode::NoError, answers, authority);
        }
        let Outcome::Answer { code, answers, .. } = plain else {
            return plain;
        };
        let negative = code != ResponseCode::NoError || answers.is_empty();
        let authority = if negative {
            let last = answers.last().map_or(name.clone(), |r| match &r.data {
                RData::CNAME(CNAME(target)) => target.clone(),
                _ => r.name.clone(),
            });
            let present = (code == ResponseCode::NoError).then(|| {
                self.records
                    .get(&key(&last.to_ascii()))
                    .map(|rs| rs.iter().map(Record::record_type).collect())
                    .unwrap_or_default()
            });
            dnssec.negative(&last, present, self.negative_ttl.unwrap_or(TTL))
        } else {
            Vec::new()
        };
        signed(code, dnssec.signed(answers), authority)
    }

    /// How `name` fails: its own failure, else that of the closest zone
    /// above it (or of itself) set with [`TestDns::fail_zone`].
    fn failure(&self, name: &str) -> Option<FailMode> {
        if let Some(mode) = self.failures.get(name) {
            return Some(*mode);
        }
        let mut rest = name;
        loop {
            if let Some(mode) = self.zone_failures.get(rest) {
                return Some(*mode);
            }
            rest = rest.split_once('.')?.1;
        }
    }

    fn answer(&self, qname: &str, qtype: RecordType) -> Outcome {
        let mut answers = Vec::new();
        let mut current = qname.to_owned();
        let negative_ttl = self.negative_ttl.unwrap_or(TTL);
        for _ in 0..MAX_CNAME_CHAIN {
            match self.failure(&current) {
                Some(FailMode::Timeout) => return Outcome::Drop,
                Some(FailMode::ServFail) => {
                    return Outcome::Answer {
                        code: ResponseCode::ServFail,
                        answers: Vec::new(),
                        soa: None,
                    };
                }
                None => {}
            }
            let Some(records) = self.records.get(&current) else {
                // RFC 6604: the RCODE describes the last name in the chain.
                return negative(ResponseCode::NXDomain, answers, negative_ttl);
            };
            let matching: Vec<Record> = records
                .iter()
                .filter(|r| r.record_type() == qtype)
                .cloned()
                .collect();
            if !matching.is_empty() {
                answers.extend(matching);
                return Outcome::Answer {
                    code: ResponseCode::NoError,
                    answers,
                    soa: None,
                };
            }
            let cname = records.iter().find_map(|r| match &r.data {
                RData::CNAME(CNAME(target)) if qtype != RecordType::CNAME => {
                    Some((r.clone(), key(&target.to_ascii())))
                }
                _ => None,
            });
            match cname {
                Some((record, target)) => {
                    answers.push(record);
                    current = target;
                }
                None => return negative(ResponseCode::NoError, answers, negative_ttl),
            }
        }
        Outcome::Answer {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            soa: None,
        }
    }
}

/// A negative answer (NXDOMAIN or NODATA) with the SOA that bounds its
/// negative caching (RFC 2308 §5: the smaller of the SOA record's TTL and
/// its minimum, both `ttl` here).
fn negative(code: ResponseCode, answers: Vec<Record>, ttl: u32) -> Outcome {
    let soa = SOA::new(
        Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root()),
        Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root()),
        1,
        60,
        60,
        600,
        ttl,
    );
    Outcome::Answer {
        code,
        answers,
        soa: Some(Box::new(Record::from_rdata(
            Name::root(),
            ttl,
            RData::SOA(soa),
        ))),
    }
}

/// A signed response.
fn signed(code: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Outcome {
    Outcome::Signed {
        code,
        answers,
        authority,
    }
}

/// Lowercase, without the trailing dot.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// An absolute [`Name`] for a name given by a test; panics on names no DNS
/// server could serve (a test bug).
pub(crate) fn fqdn(name: &str) -> Name {
    let mut parsed =
        Name::from_str(name).unwrap_or_else(|e| panic!("TestDns: invalid name {name:?}: {e}"));
    parsed.set_fqdn(true);
    parsed
}

#[derive(Clone)]
struct Handler {
    zone: Arc<Mutex<Zone>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut authentic = false;
        let outcome = match request.request_info() {
            Ok(info) => {
                let qname = key(&info.query.name().to_string());
                let qtype = info.query.query_type();
                let hold = lock(&self.zone).holds.get(&qname).cloned();
                if let Some(hold) = hold {
                    hold.pass().await;
                }
                let dnssec_ok = request
                    .edns
                    .as_ref()
                    .is_some_and(|edns| edns.flags().dnssec_ok);
                let zone = lock(&self.zone);
                // RFC 6840 §5.7: AD only for a query that set AD or DO.
                authentic = zone.authentic.contains(&qname)
                    && (request.metadata.authentic_data || dnssec_ok);
                zone.respond(&qname, qtype, dnssec_ok)
            }
            Err(_) => Outcome::Answer {
                code: ResponseCode::FormErr,
                answers: Vec::new(),
                soa: None,
            },
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        let (code, answers, soa, authority) = match outcome {
            Outcome::Drop => {
                metadata.response_code = ResponseCode::ServFail;
                return header_only(metadata);
            }
            Outcome::Answer { code, answers, soa } => (code, answers, soa, Vec::new()),
            Outcome::Signed {
                code,
                answers,
                authority,
            } => (code, answers, None, authority),
        };
        metadata.authoritative = code != ResponseCode::ServFail;
        metadata.authentic_data = authentic && code != ResponseCode::ServFail;
        metadata.response_code = code;

        // RFC 6891 §6.1.1: a request with OPT gets OPT back; its payload size
        // lets a long TXT record go over UDP.
        let mut edns = Edns::new();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(request_edns) = &request.edns {
            edns.set_max_payload(request_edns.max_payload().max(512));
            edns.set_dnssec_ok(request_edns.flags().dnssec_ok);
            builder.edns(&edns);
        }
        let response = builder.build(
            metadata,
            answers.iter(),
            authority.iter(),
            soa.as_deref(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "TestDns: sending a response failed");
                metadata.response_code = ResponseCode::ServFail;
                header_only(metadata)
            }
        }
    }
}

fn header_only(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

fn lock(zone: &Mutex<Zone>) -> MutexGuard<'_, Zone> {
    // A test that panicked elsewhere must not take the server down with it.
    zone.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An authoritative DNS server on 127.0.0.1:<ephemeral> (UDP and TCP on the
/// same port) serving records the test sets, changeable while it runs.
///
/// Names are compared case-insensitively, a trailing dot is optional. The
/// server stops when the value is dropped.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    // Dropping the server aborts its tasks.
    _server: Server<Handler>,
}

impl std::fmt::Debug for TestDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

impl TestDns {
    /// Binds UDP and TCP on the same ephemeral loopback port and starts
    /// serving (an empty zone: every name is NXDOMAIN).
    pub async fn start() -> TestDns {
        let zone = Arc::new(Mutex::new(Zone::default()));
        for _ in 0..50 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("TestDns: bind UDP on loopback");
            let addr = udp.local_addr().expect("TestDns: UDP local address");
            // The same port may be taken for TCP; then try another one.
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let mut server = Server::new(Handler { zone: zone.clone() });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 32);
            return TestDns {
                addr,
                zone,
                _server: server,
            };
        }
        panic!("TestDns: found no port free for both UDP and TCP");
    }

    /// The address to put in `[dns] nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn add(&self, name: &str, data: RData) {
        self.add_with_ttl(name, data, TTL);
    }

    fn add_with_ttl(&self, name: &str, data: RData, ttl: u32) {
        let record = Record::from_rdata(fqdn(name), ttl, data);
        lock(&self.zone)
            .records
            .entry(key(name))
            .or_default()
            .push(record);
    }

    /// Adds an MX record; `exchange` `"."` is the null MX (RFC 7505).
    pub fn add_mx(&self, name: &str, pref: u16, exchange: &str) {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            fqdn(exchange)
        };
        self.add(name, RData::MX(MX::new(pref, exchange)));
    }

    /// Adds an A record.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Adds an A record with a TTL of `ttl` seconds (rather than [`TTL`]).
    pub fn add_a_ttl(&self, name: &str, ip: Ipv4Addr, ttl: u32) {
        self.add_with_ttl(name, RData::A(A(ip)), ttl);
    }

    /// Puts `client` on the DNS list `zone` (RFC 5782 §2.1): an A record
    /// `answer` (`127.0.0.2` for a plain listing; any address, to test how
    /// a bogus answer is treated) at [`list_name`]`(zone, client)`, with a
    /// TTL of `ttl` seconds. Addresses not listed are NXDOMAIN. Several
    /// calls for one client give several A records.
    pub fn list(&self, zone: &str, client: IpAddr, answer: Ipv4Addr, ttl: u32) {
        self.add_a_ttl(&list_name(zone, client), answer, ttl);
    }

    /// Takes `client` off the DNS list `zone` (NXDOMAIN again).
    pub fn unlist(&self, zone: &str, client: IpAddr) {
        self.remove(&list_name(zone, client), "*");
    }

    /// Sets the negative TTL (the SOA minimum of NXDOMAIN and no-records
    /// answers, RFC 2308 §5) to `ttl` seconds, for every name.
    pub fn set_negative_ttl(&self, ttl: u32) {
        lock(&self.zone).negative_ttl = Some(ttl);
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.add(name, RData::AAAA(AAAA(ip)));
    }

    /// Adds a TXT record holding `text`, split into 255-byte
    /// `<character-string>`s (RFC 1035 §3.3.14) when it is longer.
    pub fn add_txt(&self, name: &str, text: &str) {
        let chunks: Vec<&[u8]> = if text.is_empty() {
            vec![&[]]
        } else {
            text.as_bytes().chunks(255).collect()
        };
        self.add(name, RData::TXT(TXT::from_bytes(chunks)));
    }

    /// Adds a CNAME record: `name` is an alias for `target`.
    pub fn add_cname(&self, name: &str, target: &str) {
        self.add(name, RData::CNAME(CNAME(fqdn(target))));
    }

    /// Adds a PTR record for `ip` (under `in-addr.arpa` / `ip6.arpa`).
    pub fn add_ptr(&self, ip: std::net::IpAddr, target: &str) {
        let reverse = Name::from(ip).to_ascii();
        self.add(
            &reverse,
            RData::PTR(hickory_server::proto::rr::rdata::PTR(fqdn(target))),
        );
    }

    /// Removes the records of type `rtype` (`"MX"`, `"A"`, `"AAAA"`,
    /// `"TXT"`, `"CNAME"`, `"PTR"`, or `"*"` for all, which also clears a
    /// [`fail`](Self::fail)) from `name`. A name left without records is
    /// answered with NXDOMAIN.
    pub fn remove(&self, name: &str, rtype: &str) {
        let key = key(name);
        let mut zone = lock(&self.zone);
        if rtype == "*" {
            zone.records.remove(&key);
            zone.failures.remove(&key);
            return;
        }
        let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
            .unwrap_or_else(|_| panic!("TestDns::remove: unknown record type {rtype:?}"));
        if let Some(records) = zone.records.get_mut(&key) {
            records.retain(|r| r.record_type() != rtype);
            if records.is_empty() {
                zone.records.remove(&key);
            }
        }
    }

    /// Makes every query for `name` fail with `mode` until
    /// [`clear_fail`](Self::clear_fail) (or `remove(name, "*")`).
    pub fn fail(&self, name: &str, mode: FailMode) {
        lock(&self.zone).failures.insert(key(name), mode);
    }

    /// Makes `name` answer normally again.
    pub fn clear_fail(&self, name: &str) {
        lock(&self.zone).failures.remove(&key(name));
    }

    /// Makes every query for `zone` and every name under it (a whole DNS
    /// list: [`FailMode::ServFail`] or no answer at all,
    /// [`FailMode::Timeout`]) fail with `mode` until
    /// [`clear_fail_zone`](Self::clear_fail_zone).
    pub fn fail_zone(&self, zone: &str, mode: FailMode) {
        lock(&self.zone).zone_failures.insert(key(zone), mode);
    }

    /// Makes `zone` and the names under it answer normally again.
    pub fn clear_fail_zone(&self, zone: &str) {
        lock(&self.zone).zone_failures.remove(&key(zone));
    }

    /// Signs `zone` (and every name under it not in a zone signed below
    /// it) with a key of its own, its DS published by the server's signed
    /// root; turns DNSSEC on (see [`TestDns::trust_anchor`]). Queries with
    /// DO get RRSIGs; names of other zones stay provably insecure.
    pub fn sign_zone(&self, zone: &str) {
        lock(&self.zone)
            .dnssec
            .get_or_insert_with(Dnssec::default)
            .sign_zone(zone);
    }

    /// The server root's DNSKEY in presentation format (a trust anchor
    /// file for `[dns] trust_anchors`); turns DNSSEC on.
    pub fn trust_anchor(&self) -> String {
        lock(&self.zone)
            .dnssec
            .get_or_insert_with(Dnssec::default)
            .trust_anchor()
    }

    /// Makes the signatures of `name`'s records fail to verify (a bogus
    /// answer); turns DNSSEC on.
    pub fn break_signature(&self, name: &str) {
        lock(&self.zone)
            .dnssec
            .get_or_insert_with(Dnssec::default)
            .break_signature(name);
    }

    /// Sets the AD bit on every answer for `name`, as a validating
    /// resolver does for secure data (RFC 4035 §3.2.3), to test
    /// `[dns] dnssec = "trust-ad"`. As a real resolver (RFC 6840 §5.7),
    /// only when the query set AD or DO: a client that asks for neither
    /// never sees it.
    pub fn set_authentic(&self, name: &str) {
        lock(&self.zone).authentic.insert(key(name));
    }

    /// Adds a TLSA record (RFC 6698 §2.1) at `name`
    /// (`_25._tcp.<host>`).
    pub fn add_tlsa(&self, name: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) {
        use hickory_server::proto::rr::rdata::TLSA;
        let tlsa = TLSA::new(
            usage.into(),
            selector.into(),
            matching.into(),
            data.to_vec(),
        );
        self.add(name, RData::TLSA(tlsa));
    }

    /// Holds every query for `name` (any type) unanswered until the
    /// returned [`Hold`] is released or dropped; then they get the answers
    /// the records have at that moment. Set the resolver's timeout longer
    /// than the hold, or it gives up first.
    pub fn hold(&self, name: &str) -> Hold {
        let state = Arc::new(HoldState {
            asked: Mutex::new(0),
            arrived: Condvar::new(),
            open: tokio::sync::watch::Sender::new(false),
        });
        lock(&self.zone).holds.insert(key(name), state.clone());
        Hold {
            name: key(name),
            state,
        }
    }
}

/// The name `client` is looked up at in the DNS list `zone` (RFC 5782
/// §2.1, §2.4): the octets of an IPv4 address reversed
/// (`2.0.0.127.bl.example.test`), the 32 nibbles of an IPv6 address
/// reversed (`1.0.0.0.[...].8.b.d.0.1.0.0.2.bl.example.test`), an
/// IPv4-mapped IPv6 address as its IPv4 address. Built from hickory's
/// reverse names, independently of the server's own code, so a test that
/// lists with it checks the server's names.
pub fn list_name(zone: &str, client: IpAddr) -> String {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    let reverse = key(&Name::from(client).to_ascii());
    let labels = reverse
        .strip_suffix(".in-addr.arpa")
        .or_else(|| reverse.strip_suffix(".ip6.arpa"))
        .unwrap_or_else(|| panic!("list_name: unexpected reverse name {reverse}"));
    format!("{labels}.{}", key(zone))
}

/// A [`TestDns`] for synchronous tests, with the runtime it serves on
/// (kept alive as long as the server is used). Derefs to the server.
pub struct BackgroundDns {
    dns: TestDns,
    _rt: tokio::runtime::Runtime,
}

impl BackgroundDns {
    /// Starts a test DNS server on its own one-worker runtime.
    pub fn start() -> BackgroundDns {
        let rt = crate::server::background_runtime();
        let dns = rt.block_on(TestDns::start());
        BackgroundDns { dns, _rt: rt }
    }
}

impl std::ops::Deref for BackgroundDns {
    type Target = TestDns;
    fn deref(&self) -> &TestDns {
        &self.dns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome_code(zone: &Zone, name: &str, qtype: RecordType) -> Option<(ResponseCode, usize)> {
        match zone.answer(name, qtype) {
            Outcome::Drop => None,
            Outcome::Answer { code, answers, .. } | Outcome::Signed { code, answers, .. } => {
                Some((code, answers.len()))
            }
        }
    }

    #[test]
    fn zone_answers() {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let handler = Handler { zone: zone.clone() };
        {
            let mut z = lock(&handler.zone);
            z.records.insert(
                "a.test".into(),
                vec![Record::from_rdata(
                    fqdn("a.test"),
                    TTL,
                    RData::A(A(Ipv4Addr::LOCALHOST)),
                )],
            );
            z.records.insert(
                "alias.test".into(),
                vec![Record::from_rdata(
                    fqdn("alias.test"),
                    TTL,
                    RData::CNAME(CNAME(fqdn("A.test"))),
                )],
            );
            z.failures.insert("slow.test".into(), FailMode::Timeout);
            z.failures.insert("bad.test".into(), FailMode::ServFail);
        }
        let z = lock(&zone);
        assert_eq!(
            outcome_code(&z, "a.test", RecordType::A),
            Some((ResponseCode::NoError, 1))
        );
        assert_eq!(
            outcome_code(&z, "a.test", RecordType::MX),
            Some((ResponseCode::NoError, 0))
        );
        assert_eq!(
            outcome_code(&z, "alias.test", RecordType::A),
            Some((ResponseCode::NoError, 2))
        );
        assert_eq!(
            outcome_code(&z, "alias.test", RecordType::CNAME),
            Some((ResponseCode::NoError, 1))
        );
        assert_eq!(
            outcome_code(&z, "nope.test", RecordType::A),
            Some((ResponseCode::NXDomain, 0))
        );
        assert_eq!(
            outcome_code(&z, "bad.test", RecordType::A),
            Some((ResponseCode::ServFail, 0))
        );
        assert_eq!(outcome_code(&z, "slow.test", RecordType::A), None);
    }

    #[test]
    fn list_names() {
        let v4: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(
            list_name("BL.example.test.", v4),
            "99.2.0.192.bl.example.test"
        );
        let mapped: IpAddr = "::ffff:192.0.2.99".parse().unwrap();
        assert_eq!(
            list_name("bl.example.test", mapped),
            "99.2.0.192.bl.example.test"
        );
        // RFC 5782 §2.4's example.
        let v6: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            list_name("ugly.example.com", v6),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
        );
    }

    /// A zone's failure covers the names under it, not its neighbours; a
    /// name's own failure wins.
    #[test]
    fn zone_failures_and_negative_ttl() {
        let mut z = Zone::default();
        z.zone_failures.insert("bl.test".into(), FailMode::ServFail);
        z.zone_failures
            .insert("slow.test".into(), FailMode::Timeout);
        z.failures.insert("1.bl.test".into(), FailMode::Timeout);
        assert_eq!(z.failure("2.0.0.127.bl.test"), Some(FailMode::ServFail));
        assert_eq!(z.failure("bl.test"), Some(FailMode::ServFail));
        assert_eq!(z.failure("1.bl.test"), Some(FailMode::Timeout));
        assert_eq!(z.failure("x.slow.test"), Some(FailMode::Timeout));
        assert_eq!(z.failure("notbl.test"), None);
        assert_eq!(z.failure("test"), None);
        z.negative_ttl = Some(300);
        match z.answer("nope.test", RecordType::A) {
            Outcome::Answer {
                code: ResponseCode::NXDomain,
                soa: Some(soa),
                ..
            } => {
                assert_eq!(soa.ttl, 300);
                assert!(matches!(&soa.data, RData::SOA(s) if s.minimum == 300));
            }
            _ => panic!("expected NXDOMAIN with an SOA"),
        }
    }

    #[tokio::test]
    async fn starts_and_edits() {
        let dns = TestDns::start().await;
        assert!(dns.addr().ip().is_loopback());
        dns.add_a("Host.Test.", Ipv4Addr::LOCALHOST);
        dns.add_txt("t.test", &"x".repeat(600));
        dns.add_mx("null.test", 0, ".");
        dns.add_ptr(Ipv4Addr::LOCALHOST.into(), "host.test");
        {
            let z = lock(&dns.zone);
            assert!(z.records.contains_key("host.test"));
            match &z.records["t.test"][0].data {
                RData::TXT(txt) => {
                    let lens: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
                    assert_eq!(lens, vec![255, 255, 90]);
                }
                other => panic!("{other:?}"),
            }
            assert!(z.records.contains_key("1.0.0.127.in-addr.arpa"));
        }
        let hold = dns.hold("held.test");
        assert_eq!(hold.queries(), 0);
        assert!(!*lock(&dns.zone).holds["held.test"].open.borrow());
        hold.release();
        assert!(*lock(&dns.zone).holds["held.test"].open.borrow());
        dns.remove("host.test", "a");
        dns.fail("t.test", FailMode::ServFail);
        dns.remove("t.test", "*");
        let z = lock(&dns.zone);
        assert!(!z.records.contains_key("host.test"));
        assert!(!z.failures.contains_key("t.test"));
    }
}
