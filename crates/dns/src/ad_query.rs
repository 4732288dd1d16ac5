//! The secured lookups of `[dns] dnssec = "trust-ad"`, asked straight of
//! the configured (loopback) validating resolver.
//!
//! Why not hickory-resolver: with its own validation off it sends neither
//! DO nor AD, and a validating resolver sets AD in a response only when
//! the query had one of them (RFC 6840 §5.7), so every answer would look
//! insecure and DANE would never apply. So the lookups that decide DANE
//! (`mx_secured`, `addresses_secured`, `tlsa`) build their own query with
//! hickory-proto: RD=1, AD=1, EDNS0 with DO=1 (RFC 3225), a random id; over
//! UDP, again over TCP when the answer is truncated (RFC 7766 §5).
//!
//! What an answer must be to count (the threat model of the crate): the
//! id, the opcode and the question match what was asked, else it is not
//! our answer (a UDP datagram that does not match is ignored, a TCP one
//! fails the exchange). SERVFAIL, REFUSED, a timeout or an I/O error is a
//! temporary failure — the next server is tried, and when none answers the
//! lookup fails temporarily, never "no record". NXDOMAIN and NOERROR
//! without records of the type are "not found" as for every other lookup.
//! CNAMEs are followed inside the answer (the resolver already chased
//! them), at most [`MAX_CNAMES`] deep. The AD bit of the response decides
//! secure versus insecure.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tracing::debug;

use crate::{DnsError, DnsSecurity, Secured, name_to_string};

/// How deep a CNAME chain inside one answer is followed.
pub(crate) const MAX_CNAMES: usize = 8;

/// The EDNS0 UDP payload size we advertise (the DNS flag day 2020 value:
/// no IP fragmentation).
const UDP_PAYLOAD: u16 = 1232;

/// The largest UDP datagram read; anything longer is cut off by the
/// kernel and fails to parse, which only costs a retry.
const UDP_BUFFER: usize = 4096;

/// One query to the configured resolvers per lookup, each tried in turn
/// up to `attempts` rounds, each exchange bounded by `timeout`.
#[derive(Debug, Clone)]
pub(crate) struct AdQuery {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: usize,
}

/// Why one exchange with one server gave no usable answer.
type ExchangeError = String;

impl AdQuery {
    /// Asks `servers` (in order), each exchange waiting at most `timeout`,
    /// `attempts` rounds over the list.
    pub(crate) fn new(servers: Vec<SocketAddr>, timeout: Duration, attempts: usize) -> AdQuery {
        AdQuery {
            servers,
            timeout,
            attempts: attempts.max(1),
        }
    }

    /// The records of type `rtype` at `name` (CNAMEs of the answer
    /// followed), secure exactly when the resolver set AD.
    pub(crate) async fn lookup(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Secured<Vec<RData>>, DnsError> {
        let shown = name_to_string(name);
        let temporary = |reason: String| DnsError::Temporary {
            name: shown.clone(),
            reason,
        };
        if self.servers.is_empty() {
            return Err(temporary("trust-ad: no nameservers configured".into()));
        }
        let mut last = String::from("no answer");
        for _ in 0..self.attempts {
            for server in &self.servers {
                match self.exchange(*server, name, rtype).await {
                    Ok(response) => match response.metadata.response_code {
                        ResponseCode::NoError | ResponseCode::NXDomain => {
                            return answer(&response, name, rtype);
                        }
                        code => {
                            last = format!("{server}: {code}");
                            debug!(name = %shown, %rtype, %server, %code, "trust-ad query failed");
                        }
                    },
                    Err(reason) => {
                        debug!(name = %shown, %rtype, %server, %reason, "trust-ad query failed");
                        last = format!("{server}: {reason}");
                    }
                }
            }
        }
        Err(temporary(last))
    }

    /// One query to `server`: UDP, then TCP when the answer is truncated;
    /// the response is ours (id, opcode, question) or an error.
    async fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, ExchangeError> {
        let request = request(name, rtype);
        let id = request.metadata.id;
        let bytes = request.to_vec().map_err(|e| format!("encoding: {e}"))?;
        let udp = tokio::time::timeout(self.timeout, udp_exchange(server, &bytes, id, name, rtype))
            .await
            .map_err(|_| "timed out (UDP)".to_owned())??;
        if !udp.metadata.truncation {
            return Ok(udp);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(server, &bytes, id, name, rtype))
            .await
            .map_err(|_| "timed out (TCP)".to_owned())?
    }
}

/// The query: recursion desired, AD=1 and DO=1 so that a validating
/// resolver reports what it validated (RFC 6840 §5.7, RFC 3225).
fn request(name: &Name, rtype: RecordType) -> Message {
    // `Message::query` draws the id from the thread's CSPRNG: an off-path
    // attacker must not guess it.
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.metadata.authentic_data = true;
    message.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    edns.set_dnssec_ok(true);
    message.set_edns(edns);
    message
}

/// True when `response` answers the query with `id` for `name`/`rtype`.
fn is_ours(response: &Message, id: u16, name: &Name, rtype: RecordType) -> bool {
    response.metadata.id == id
        && response.metadata.message_type == MessageType::Response
        && response.metadata.op_code == OpCode::Query
        && matches!(response.queries.as_slice(), [q]
            if q.query_type() == rtype
                && q.query_class() == DNSClass::IN
                && same_name(q.name(), name))
}

/// Names compared as DNS does: case-insensitively.
fn same_name(a: &Name, b: &Name) -> bool {
    name_to_string(a) == name_to_string(b)
}

/// Sends `bytes` over UDP from an ephemeral port connected to `server`
/// (datagrams from elsewhere never reach us) and waits for our answer;
/// datagrams that do not parse or are not ours are ignored, so a spoofed
/// one cannot cut the wait short.
async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> Result<Message, ExchangeError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP bind: {e}"))?;
    socket
        .connect(server)
        .await
        .map_err(|e| format!("UDP connect: {e}"))?;
    socket
        .send(bytes)
        .await
        .map_err(|e| format!("UDP send: {e}"))?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    loop {
        let len = socket
            .recv(&mut buffer)
            .await
            .map_err(|e| format!("UDP receive: {e}"))?;
        let Some(datagram) = buffer.get(..len) else {
            continue;
        };
        match Message::from_vec(datagram) {
            Ok(response) if is_ours(&response, id, name, rtype) => return Ok(response),
            Ok(_) => debug!(%server, "trust-ad: ignored a datagram that is not our answer"),
            Err(e) => debug!(%server, error = %e, "trust-ad: ignored a malformed datagram"),
        }
    }
}

/// Sends `bytes` over TCP (two-byte length prefix, RFC 1035 §4.2.2) and
/// reads one response, which must be ours.
async fn tcp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> Result<Message, ExchangeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_owned())?;
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(|e| format!("TCP connect: {e}"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| format!("TCP send: {e}"))?;
    let mut prefix = [0u8; 2];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|e| format!("TCP receive: {e}"))?;
    // At most 64 KiB: the two-byte prefix bounds what a server makes us read.
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream
        .read_exact(&mut response)
        .await
        .map_err(|e| format!("TCP receive: {e}"))?;
    let message = Message::from_vec(&response).map_err(|e| format!("malformed response: {e}"))?;
    if is_ours(&message, id, name, rtype) {
        Ok(message)
    } else {
        Err("the TCP response does not answer our query".to_owned())
    }
}

/// The records of type `rtype` in a NOERROR or NXDOMAIN `response` for
/// `name`, the CNAME chain of the answer followed; "not found" as the
/// response says when there are none.
fn answer(
    response: &Message,
    name: &Name,
    rtype: RecordType,
) -> Result<Secured<Vec<RData>>, DnsError> {
    let shown = name_to_string(name);
    if response.metadata.response_code == ResponseCode::NXDomain {
        // RFC 6604: the RCODE describes the last name of a CNAME chain;
        // either way there is nothing of the type.
        return Err(DnsError::NxDomain { name: shown });
    }
    let mut current = name.clone();
    let mut found = Vec::new();
    for _ in 0..=MAX_CNAMES {
        found.extend(
            response
                .answers
                .iter()
                .filter(|r| r.record_type() == rtype && same_name(&r.name, &current))
                .map(|r| r.data.clone()),
        );
        if !found.is_empty() || rtype == RecordType::CNAME {
            break;
        }
        let next = response.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if same_name(&r.name, &current) => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) => current = target,
            None => break,
        }
    }
    if found.is_empty() {
        return Err(DnsError::NoRecords {
            name: shown,
            rtype: crate::hickory::rtype_name(rtype),
        });
    }
    let security = if response.metadata.authentic_data {
        DnsSecurity::Secure
    } else {
        DnsSecurity::Insecure
    };
    Ok(Secured {
        value: found,
        security,
    })
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::rr::Record;
    use hickory_resolver::proto::rr::rdata::{A, CNAME};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response(code: ResponseCode, ad: bool, answers: Vec<Record>) -> Message {
        let mut m = Message::response(7, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.authentic_data = ad;
        m.add_query(Query::query(name("a.test."), RecordType::A));
        m.add_answers(answers);
        m
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, last))))
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
    }

    #[test]
    fn the_ad_bit_decides_security() {
        let q = name("a.test.");
        let secure = answer(
            &response(ResponseCode::NoError, true, vec![a("a.test.", 1)]),
            &q,
            RecordType::A,
        )
        .unwrap();
        assert_eq!(secure.security, DnsSecurity::Secure);
        let insecure = answer(
            &response(ResponseCode::NoError, false, vec![a("a.test.", 1)]),
            &q,
            RecordType::A,
        )
        .unwrap();
        assert_eq!(insecure.security, DnsSecurity::Insecure);
    }

    #[test]
    fn cnames_in_the_answer_are_followed_and_strays_ignored() {
        let q = name("a.test.");
        let found = answer(
            &response(
                ResponseCode::NoError,
                false,
                vec![
                    cname("A.test.", "b.test."),
                    a("elsewhere.test.", 9),
                    a("b.test.", 2),
                ],
            ),
            &q,
            RecordType::A,
        )
        .unwrap();
        assert_eq!(found.value, vec![RData::A(A(Ipv4Addr::new(192, 0, 2, 2)))]);
    }

    #[test]
    fn a_cname_loop_is_no_records_not_a_hang() {
        let q = name("a.test.");
        let err = answer(
            &response(
                ResponseCode::NoError,
                false,
                vec![cname("a.test.", "b.test."), cname("b.test.", "a.test.")],
            ),
            &q,
            RecordType::A,
        )
        .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
    }

    #[test]
    fn negative_answers() {
        let q = name("a.test.");
        let nx = answer(
            &response(ResponseCode::NXDomain, true, vec![]),
            &q,
            RecordType::A,
        );
        assert!(matches!(nx, Err(DnsError::NxDomain { .. })), "{nx:?}");
        let nodata = answer(
            &response(ResponseCode::NoError, true, vec![]),
            &q,
            RecordType::A,
        );
        assert!(
            matches!(nodata, Err(DnsError::NoRecords { rtype: "A", .. })),
            "{nodata:?}"
        );
    }

    #[test]
    fn only_our_answer_counts() {
        let q = name("a.test.");
        let ours = response(ResponseCode::NoError, false, vec![]);
        assert!(is_ours(&ours, 7, &q, RecordType::A));
        assert!(is_ours(&ours, 7, &name("A.TEST."), RecordType::A));
        assert!(!is_ours(&ours, 8, &q, RecordType::A), "another id");
        assert!(!is_ours(&ours, 7, &q, RecordType::AAAA), "another type");
        assert!(!is_ours(&ours, 7, &name("b.test."), RecordType::A));
        let mut query = ours.clone();
        query.metadata.message_type = MessageType::Query;
        assert!(!is_ours(&query, 7, &q, RecordType::A), "not a response");
    }

    #[test]
    fn the_query_asks_for_authenticated_data() {
        let m = request(&name("a.test."), RecordType::TLSA);
        assert!(m.metadata.recursion_desired && m.metadata.authentic_data);
        let edns = m.edns.as_ref().unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), UDP_PAYLOAD);
    }
}
