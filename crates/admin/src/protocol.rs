//! The admin protocol's message types, shared by the server and the CLI.
//!
//! One JSON object per line. A request is tagged by `op`
//! (`{"op":"queue_show","id":"..."}`), a response by `status`
//! (`{"status":"ok","body":...}` or `{"status":"error","message":"..."}`).
//! The body of a successful response is one [`Answer`]: the server builds
//! it from typed values and the client decodes it into the same types
//! ([`Answer::decode`]), so neither side picks fields out of JSON by hand.

use crate::cluster::{ClusterMigrated, ClusterShow};
use crate::dmarc::{DmarcEntry, DmarcSendResult};
use crate::own::PolicyOwn;
use crate::received::{ReceivedEntry, ReceivedShow};
use crate::screen::{ScreenCleared, ScreenShow, ScreenTarget};
use portcullis_types::Envelope;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One admin request, written by the CLI and handled by the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The server's [`StatusReport`].
    Status,
    /// Every queued message, as a list of [`QueueEntry`].
    QueueList,
    /// One queued message, as a [`QueueDetail`].
    QueueShow {
        /// The queue id.
        id: String,
    },
    /// Make queued messages due now.
    QueueRetry {
        /// The queue id; `None` retries every message.
        #[serde(default)]
        id: Option<String>,
    },
    /// Remove a message from the queue.
    QueueDelete {
        /// The queue id.
        id: String,
        /// Send a non-delivery report to the sender first.
        bounce: bool,
    },
    /// Every cached MTA-STS policy and every active pin, as a list of
    /// [`PolicyEntry`].
    PolicyList,
    /// One domain's cached policy and pin, as a [`PolicyShow`].
    PolicyShow {
        /// The policy domain.
        domain: String,
    },
    /// Discovers and fetches a domain's policy now, as a [`PolicyEntry`];
    /// the cache is replaced only on success.
    PolicyFetch {
        /// The policy domain.
        domain: String,
    },
    /// Re-fetches cached policies (even with an unchanged id), as a list of
    /// [`PolicyRefresh`].
    PolicyRefresh {
        /// The policy domain; `None` refreshes every unexpired cached policy.
        #[serde(default)]
        domain: Option<String>,
    },
    /// Removes a domain's cached policy.
    PolicyEvict {
        /// The policy domain.
        domain: String,
    },
    /// The MX hosts of a domain as DNS gives them now and what the policy
    /// in force demands of each, as a [`PolicyExplain`].
    PolicyExplain {
        /// The policy domain.
        domain: String,
    },
    /// Pins a policy for a domain until a time, with a reason, as a
    /// [`PolicyEntry`].
    PolicyPin {
        /// The policy domain.
        domain: String,
        /// `enforce`, `testing` or `none`.
        mode: String,
        /// MX patterns (`mx.example.com`, `*.example.com`); may be empty
        /// only for mode `none`.
        mx: Vec<String>,
        /// Unix seconds until which the pin wins; must be in the future.
        until: u64,
        /// Why (logged and shown by `policy list`).
        reason: String,
    },
    /// Removes a domain's operator pin.
    PolicyUnpin {
        /// The policy domain.
        domain: String,
    },
    /// Checks what we publish for our own domains from the outside in
    /// (TXT records, the policy served, MX coverage and certificates), as a
    /// [`PolicyOwn`].
    PolicyOwn {
        /// One accepted domain; `None`: every accepted domain.
        #[serde(default)]
        domain: Option<String>,
    },
    /// Every TLS-RPT report known (per UTC day and policy domain: session
    /// counts, destinations, sending state), newest day first, as a list of
    /// [`TlsrptEntry`].
    TlsrptList,
    /// One report's RFC 8460 JSON exactly as it is (or would be) sent.
    TlsrptShow {
        /// The policy domain.
        domain: String,
        /// The UTC day, `YYYY-MM-DD`; `None`: the latest day with data.
        #[serde(default)]
        day: Option<String>,
    },
    /// Sends every report that is due now, ignoring the random delay of
    /// the send window (a day still being collected is never sent), as a
    /// [`TlsrptSendResult`].
    TlsrptSend,
    /// The TLS reports other providers sent about our domains, newest
    /// received first, as a list of [`ReceivedEntry`].
    TlsrptReceivedList {
        /// Only reports about this policy domain.
        #[serde(default)]
        domain: Option<String>,
        /// Only reports whose period ends on or after this UTC day
        /// (`YYYY-MM-DD`).
        #[serde(default)]
        since: Option<String>,
    },
    /// One received TLS report, everything stored, as a [`ReceivedShow`].
    TlsrptReceivedShow {
        /// Our id of the report.
        id: String,
    },
    /// The DMARC aggregates not yet reported, oldest day first, as a list
    /// of [`DmarcEntry`].
    DmarcList,
    /// Sends every DMARC report of a finished day now, ignoring the random
    /// delay (nothing is sent twice), as a [`DmarcSendResult`].
    DmarcSend,
    /// Creates or upgrades the cluster's shared schema (`[cluster]`), as a
    /// [`ClusterMigrated`]; refused without `[cluster]` or when the
    /// database cannot be reached.
    ClusterMigrate,
    /// Re-reads the whole config file the server was started with and puts
    /// it in force (as SIGHUP does), as a [`ReloadReport`]; a file with an
    /// error is refused with the error (key and line) and changes nothing.
    Reload,
    /// Why a client is treated as it is by the screen (DNS lists, rates,
    /// greylist entries), as a [`ScreenShow`]; its lists are looked up
    /// afresh when no answer is cached.
    ScreenShow {
        /// The client.
        ip: IpAddr,
    },
    /// Forgets what the screen holds about a client or a sender domain, as
    /// a [`ScreenCleared`].
    ScreenClear {
        /// The client or the domain.
        target: ScreenTarget,
    },
}

/// The answer to one [`Request`].
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded; `body` depends on the request.
    Ok {
        /// The request's result (a [`StatusReport`], a list of
        /// [`QueueEntry`], ...).
        body: serde_json::Value,
    },
    /// The request failed.
    Error {
        /// A message for the operator.
        message: String,
    },
}

impl Response {
    /// A successful response whose body is `body` serialized to JSON; a
    /// value that cannot be serialized becomes [`Response::Error`].
    pub fn ok<T: Serialize>(body: &T) -> Self {
        match serde_json::to_value(body) {
            Ok(body) => Response::Ok { body },
            Err(e) => Response::Error {
                message: format!("cannot serialize the response: {e}"),
            },
        }
    }

    /// A failed response carrying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        Response::Error {
            message: message.into(),
        }
    }
}

/// The body of a successful [`Response`], one variant per [`Request`].
///
/// On the wire it is the inner value alone (no tag): the request says which
/// variant to expect, see [`Answer::decode`].
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Answer {
    /// To [`Request::Status`].
    Status(StatusReport),
    /// To [`Request::QueueList`].
    QueueList(Vec<QueueEntry>),
    /// To [`Request::QueueShow`].
    QueueShow(Box<QueueDetail>),
    /// To [`Request::QueueRetry`].
    QueueRetry(QueueRetried),
    /// To [`Request::QueueDelete`].
    QueueDelete(QueueDeleted),
    /// To [`Request::PolicyList`].
    PolicyList(Vec<PolicyEntry>),
    /// To [`Request::PolicyShow`].
    PolicyShow(Box<PolicyShow>),
    /// To [`Request::PolicyFetch`]: the policy now cached.
    PolicyFetch(Box<PolicyEntry>),
    /// To [`Request::PolicyRefresh`].
    PolicyRefresh(Vec<PolicyRefresh>),
    /// To [`Request::PolicyEvict`].
    PolicyEvict(PolicyEvicted),
    /// To [`Request::PolicyExplain`].
    PolicyExplain(Box<PolicyExplain>),
    /// To [`Request::PolicyPin`]: the pin now in force.
    PolicyPin(Box<PolicyEntry>),
    /// To [`Request::PolicyUnpin`].
    PolicyUnpin(PolicyUnpinned),
    /// To [`Request::PolicyOwn`].
    PolicyOwn(PolicyOwn),
    /// To [`Request::TlsrptList`].
    TlsrptList(Vec<TlsrptEntry>),
    /// To [`Request::TlsrptShow`]: the RFC 8460 report JSON itself, kept
    /// as a JSON value because it is the content (exactly what is sent).
    TlsrptShow(serde_json::Value),
    /// To [`Request::TlsrptSend`].
    TlsrptSend(TlsrptSendResult),
    /// To [`Request::TlsrptReceivedList`].
    TlsrptReceivedList(Vec<ReceivedEntry>),
    /// To [`Request::TlsrptReceivedShow`].
    TlsrptReceivedShow(Box<ReceivedShow>),
    /// To [`Request::DmarcList`].
    DmarcList(Vec<DmarcEntry>),
    /// To [`Request::DmarcSend`].
    DmarcSend(DmarcSendResult),
    /// To [`Request::ClusterMigrate`].
    ClusterMigrate(ClusterMigrated),
    /// To [`Request::Reload`].
    Reload(ReloadReport),
    /// To [`Request::ScreenShow`].
    ScreenShow(Box<ScreenShow>),
    /// To [`Request::ScreenClear`].
    ScreenClear(ScreenCleared),
}

impl Answer {
    /// Decodes `body`, the answer to `request`, into the variant that
    /// request promises; an error when the body does not have its shape.
    pub fn decode(request: &Request, body: serde_json::Value) -> Result<Answer, serde_json::Error> {
        use serde_json::from_value as v;
        Ok(match request {
            Request::Status => Answer::Status(v(body)?),
            Request::QueueList => Answer::QueueList(v(body)?),
            Request::QueueShow { .. } => Answer::QueueShow(v(body)?),
            Request::QueueRetry { .. } => Answer::QueueRetry(v(body)?),
            Request::QueueDelete { .. } => Answer::QueueDelete(v(body)?),
            Request::PolicyList => Answer::PolicyList(v(body)?),
            Request::PolicyShow { .. } => Answer::PolicyShow(v(body)?),
            Request::PolicyFetch { .. } => Answer::PolicyFetch(v(body)?),
            Request::PolicyRefresh { .. } => Answer::PolicyRefresh(v(body)?),
            Request::PolicyEvict { .. } => Answer::PolicyEvict(v(body)?),
            Request::PolicyExplain { .. } => Answer::PolicyExplain(v(body)?),
            Request::PolicyPin { .. } => Answer::PolicyPin(v(body)?),
            Request::PolicyUnpin { .. } => Answer::PolicyUnpin(v(body)?),
            Request::PolicyOwn { .. } => Answer::PolicyOwn(v(body)?),
            Request::TlsrptList => Answer::TlsrptList(v(body)?),
            Request::TlsrptShow { .. } => Answer::TlsrptShow(body),
            Request::TlsrptSend => Answer::TlsrptSend(v(body)?),
            Request::TlsrptReceivedList { .. } => Answer::TlsrptReceivedList(v(body)?),
            Request::TlsrptReceivedShow { .. } => Answer::TlsrptReceivedShow(v(body)?),
            Request::DmarcList => Answer::DmarcList(v(body)?),
            Request::DmarcSend => Answer::DmarcSend(v(body)?),
            Request::ClusterMigrate => Answer::ClusterMigrate(v(body)?),
            Request::Reload => Answer::Reload(v(body)?),
            Request::ScreenShow { .. } => Answer::ScreenShow(v(body)?),
            Request::ScreenClear { .. } => Answer::ScreenClear(v(body)?),
        })
    }

    /// False when the server answered but part of the work failed: a
    /// refresh of every policy where one refresh failed, a `tlsrpt send`
    /// where a report could not be delivered now, a `policy own` with a
    /// gap or a check that could not be made (the CLI then exits non-zero
    /// after printing the answer).
    pub fn all_succeeded(&self) -> bool {
        match self {
            Answer::PolicyRefresh(items) => items.iter().all(|i| i.outcome != "failed"),
            Answer::TlsrptSend(result) => result
                .outcomes
                .iter()
                .all(|o| o.outcome != "retry" && o.outcome != "gave-up"),
            Answer::PolicyOwn(own) => own.all_ok(),
            Answer::DmarcSend(result) => result
                .outcomes
                .iter()
                .all(|o| o.outcome != "failed" && o.outcome != "gave-up"),
            _ => true,
        }
    }
}

impl From<Answer> for Response {
    fn from(answer: Answer) -> Response {
        Response::ok(&answer)
    }
}

/// What a successful reload changed: the new config is in force, except
/// the settings in `needs_restart`, which stay as the server started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ReloadReport {
    /// The config file that was read (`None`: the development defaults).
    pub config: Option<String>,
    /// The sections whose new values are in force (`relay`, `routes`,
    /// `limits`, ...); empty when the file said what was in force.
    pub changed: Vec<String>,
    /// Settings that changed in the file but take effect only at a
    /// restart (`listen`, `data_dir`, `admin`, `dns`, ...).
    pub needs_restart: Vec<String>,
    /// The certificate in force after the reload (its files are read
    /// again at every reload).
    pub certificate: String,
}

/// What `portcullis status` shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The server's version.
    pub version: String,
    /// The hostname it announces.
    pub hostname: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The listeners, SMTP and `mta-sts`.
    pub listeners: Vec<ListenerStatus>,
    /// SMTP sessions currently open.
    pub open_sessions: u64,
    /// Messages in the queue.
    pub queue_size: u64,
    /// The data directory.
    pub data_dir: String,
    /// The cluster as this node sees it; absent without `[cluster]` (and
    /// from older servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterShow>,
}

/// One listener in a [`StatusReport`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListenerStatus {
    /// The bound address, e.g. `127.0.0.1:2525`.
    pub address: String,
    /// `smtp`, `submission`, `submissions` or `mta-sts`.
    pub role: String,
    /// When the certificate the listener presents expires (`notAfter`,
    /// Unix seconds); absent from older servers.
    #[serde(default)]
    pub certificate_not_after: Option<u64>,
}

/// One queued message, as listed by `portcullis queue list`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// The queue id.
    pub id: String,
    /// The envelope sender; `<>` for the null sender.
    pub sender: String,
    /// The recipients and their states.
    pub recipients: Vec<RecipientEntry>,
    /// The message size in bytes.
    pub size: u64,
    /// When the message was received, in Unix seconds.
    pub received_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due, in Unix seconds, if one is scheduled.
    pub next_attempt: Option<u64>,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
}

/// One recipient of a [`QueueEntry`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecipientEntry {
    /// The recipient address.
    pub address: String,
    /// `queued`, `delivered`, `deferred` or `failed`.
    pub state: String,
}

/// One queued message in detail, as shown by `portcullis queue show`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueDetail {
    /// The summary.
    pub entry: QueueEntry,
    /// The stored envelope with the delivery state the queue keeps.
    pub envelope: QueueEnvelope,
    /// The message's header section.
    pub headers: String,
}

/// The envelope of a queued message as `queue show` gives it: the stored
/// [`Envelope`]'s fields, with the attempt history and the per-recipient
/// states beside them (one JSON object, as operators' scripts read it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueEnvelope {
    /// The envelope as accepted.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The attempts kept (the first ones and the last ones), oldest first.
    pub history: Vec<AttemptEntry>,
    /// Says how many attempts the history leaves out, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_note: Option<String>,
    /// One state per envelope recipient, same order.
    pub recipient_states: Vec<RecipientStateEntry>,
    /// Why the message's body cannot be read (the record is shown anyway:
    /// that is how the operator finds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
}

/// One delivery attempt in a [`QueueEnvelope`]'s history.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AttemptEntry {
    /// Its number (1 for the first); 0 in records older than numbering.
    #[serde(default)]
    pub number: u32,
    /// When it started, in Unix seconds.
    pub at: u64,
    /// Per-recipient outcomes as text (`rcpt: outcome`), once finished.
    pub outcomes: Vec<String>,
}

/// Where one recipient of a [`QueueEnvelope`] stands.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RecipientStateEntry {
    /// `queued`, `deferred`, `delivered` or `failed`.
    pub status: String,
    /// The last remote reply or local error, whole.
    pub last_reply: Option<String>,
    /// The host that gave it.
    #[serde(default)]
    pub remote_mta: Option<String>,
}

/// What `portcullis queue retry` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueRetried {
    /// Messages made due now.
    pub scheduled: u64,
}

/// What `portcullis queue delete` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct QueueDeleted {
    /// The queue id removed.
    pub deleted: String,
    /// True when a non-delivery report went to the sender first.
    pub bounced: bool,
}

/// What `portcullis policy evict` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyEvicted {
    /// The domain whose cached policy was removed.
    pub evicted: String,
}

/// What `portcullis policy unpin` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyUnpinned {
    /// The domain whose operator pin was removed.
    pub unpinned: String,
}

/// One MTA-STS policy as `portcullis policy list` shows it: a cached
/// policy, or a pin (`pinned`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyEntry {
    /// The policy domain.
    pub domain: String,
    /// `cache`, `operator pin` or `file pin`.
    pub source: String,
    /// `enforce`, `testing` or `none`.
    pub mode: String,
    /// The TXT record id it was fetched under (`pinned` for a pin).
    pub id: String,
    /// The MX patterns.
    pub mx: Vec<String>,
    /// `max_age` in seconds.
    pub max_age: u64,
    /// When it was fetched (a pin: set or loaded), in Unix seconds.
    pub fetched_at: u64,
    /// When it stops applying, in Unix seconds; `None`: never (a file pin
    /// lasts as long as its file).
    pub expires_at: Option<u64>,
    /// True once `expires_at` has passed.
    pub expired: bool,
    /// True when this entry decides deliveries now (an active pin wins over
    /// the cache; an expired entry applies to nothing).
    pub in_force: bool,
    /// The error of the latest failed fetch or refresh since `fetched_at`.
    pub last_error: Option<String>,
    /// When DNS or the policy host was last consulted, in Unix seconds.
    pub last_checked: Option<u64>,
    /// True for a pin.
    pub pinned: bool,
    /// Why it was pinned.
    pub pin_reason: Option<String>,
    /// Until when an operator pin wins, in Unix seconds.
    pub pin_until: Option<u64>,
    /// The file of a file pin.
    pub pin_file: Option<String>,
    /// The policy text (as served, or rendered from the pin).
    pub text: String,
}

/// `portcullis policy show DOMAIN`: the pin (which wins) and the cached
/// policy of one domain.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyShow {
    /// The policy domain.
    pub domain: String,
    /// The active pin, if any.
    pub pin: Option<PolicyEntry>,
    /// The cached policy, expired or not, if any.
    pub cached: Option<PolicyEntry>,
}

/// The outcome of refreshing one domain's policy.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyRefresh {
    /// The policy domain.
    pub domain: String,
    /// `unchanged`, `replaced` or `failed`.
    pub outcome: String,
    /// The policy now cached (on success).
    pub policy: Option<PolicyEntry>,
    /// The line diff old → new (`-`/`+` lines) when replaced.
    pub diff: Option<String>,
    /// Why the refresh failed (the cached policy stays in force).
    pub error: Option<String>,
    /// The TLS-RPT result type of the failure, e.g. `sts-policy-fetch-error`.
    pub result_type: Option<String>,
}

/// `portcullis policy explain DOMAIN`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PolicyExplain {
    /// The policy domain.
    pub domain: String,
    /// The policy in force (a pin or the cache), if any.
    pub policy: Option<PolicyEntry>,
    /// The mail hosts as DNS (or a route) gives them now, in the order
    /// delivery tries them.
    pub mx_hosts: Vec<ExplainHost>,
    /// What applies overall (no policy, a route, a DNS failure, ...).
    pub note: String,
    /// What delivery does now: the same decision delivery makes.
    #[serde(default)]
    pub plan: ExplainPlan,
}

/// The decision of a [`PolicyExplain`] for the domain as a whole.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ExplainPlan {
    /// `try` (the hosts marked `contacted`, in order), `defer` or `fail`.
    pub decision: String,
    /// For `fail`: the RFC 3463 status the recipients bounce with, e.g.
    /// `5.1.10`.
    pub status: Option<String>,
    /// For `defer` and `fail`: why, as the queue records it.
    pub reason: Option<String>,
    /// How MTA-STS applies: `enforce`, `testing`, `none`, `not applied`
    /// (a route, or one of our domains), `waived for a TLS report` or
    /// `unavailable`.
    pub mta_sts: String,
}

/// One mail host in a [`PolicyExplain`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ExplainHost {
    /// The host name (or an IP literal for a route).
    pub name: String,
    /// The MX preference, when it came from an MX record.
    pub preference: Option<u16>,
    /// The port it is contacted on.
    pub port: u16,
    /// Its addresses, in the order they are tried.
    pub addrs: Vec<String>,
    /// Why it has no address, if it has none.
    pub error: Option<String>,
    /// True when the policy lets delivery use this host (always true
    /// without a policy in `enforce` or `testing` mode).
    pub allowed_by_policy: bool,
    /// What TLS the host must show: `PKIX-valid TLS 1.2+ for <name>`,
    /// `opportunistic`, or `not contacted` (not listed in an enforced
    /// policy).
    pub tls_required: String,
    /// Why the host is in the plan: `route`, `mx` or `implicit mx`.
    #[serde(default)]
    pub source: String,
    /// The policy's `mx` pattern that lists the host, if one does.
    #[serde(default)]
    pub matched_pattern: Option<String>,
    /// True when delivery contacts the host.
    #[serde(default)]
    pub contacted: bool,
    /// Addresses left out because they are this server's own listeners.
    #[serde(default)]
    pub myself: Vec<String>,
    /// The rule that governs the host's TLS: `DANE`, `MTA-STS`, `pin`,
    /// `route` or `none`.
    #[serde(default)]
    pub rule: String,
    /// The DNSSEC status DANE saw: `secure`, `insecure`, `bogus`, `TLSA
    /// lookup failed` or `not checked`.
    #[serde(default)]
    pub dnssec: String,
    /// The host's TLSA records in presentation form (`3 1 1 <hex>`), each
    /// followed by ` (unusable)` when SMTP cannot use it.
    #[serde(default)]
    pub tlsa: Vec<String>,
}

/// One line of `portcullis tlsrpt list`: a (UTC day, policy domain) with
/// sessions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TlsrptEntry {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// Sessions that negotiated TLS as the policy demanded.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
    /// The report destinations (`mailto:`, `https:`), once looked up.
    pub destinations: Vec<String>,
    /// `collecting` (the day is not over), `pending`, `sent`,
    /// `no-destination`, `failed`, or `disabled` (reporting is off).
    pub state: String,
    /// The last failure (lookup or send), if any.
    pub last_error: Option<String>,
}

/// What `portcullis tlsrpt send` did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TlsrptSendResult {
    /// One item per report or destination acted on; empty: nothing was due.
    pub outcomes: Vec<TlsrptOutcome>,
    /// Reports of the current UTC day, still being collected (not sent
    /// before the day is over).
    pub collecting: u64,
}

/// One outcome of a send pass.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TlsrptOutcome {
    /// The UTC day.
    pub day: String,
    /// The policy domain.
    pub domain: String,
    /// The destination URI; `None` for the `_smtp._tls` lookup.
    pub destination: Option<String>,
    /// `mailto`, `https` or `dns`.
    pub transport: String,
    /// `sent`, `retry`, `gave-up` or `no-destination`.
    pub outcome: String,
    /// The queue id or HTTP status (sent), or why not.
    pub detail: Option<String>,
    /// The next attempt (retry), in Unix seconds.
    pub next_try: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_wire_form() {
        let cases = [
            (Request::Status, r#"{"op":"status"}"#),
            (Request::QueueList, r#"{"op":"queue_list"}"#),
            (
                Request::QueueShow { id: "A1".into() },
                r#"{"op":"queue_show","id":"A1"}"#,
            ),
            (
                Request::QueueRetry { id: None },
                r#"{"op":"queue_retry","id":null}"#,
            ),
            (
                Request::QueueDelete {
                    id: "A1".into(),
                    bounce: true,
                },
                r#"{"op":"queue_delete","id":"A1","bounce":true}"#,
            ),
            (Request::PolicyList, r#"{"op":"policy_list"}"#),
            (
                Request::PolicyRefresh { domain: None },
                r#"{"op":"policy_refresh","domain":null}"#,
            ),
            (
                Request::PolicyPin {
                    domain: "a.test".into(),
                    mode: "enforce".into(),
                    mx: vec!["*.a.test".into()],
                    until: 5,
                    reason: "r".into(),
                },
                r#"{"op":"policy_pin","domain":"a.test","mode":"enforce","mx":["*.a.test"],"until":5,"reason":"r"}"#,
            ),
            (
                Request::PolicyExplain {
                    domain: "a.test".into(),
                },
                r#"{"op":"policy_explain","domain":"a.test"}"#,
            ),
            (
                Request::PolicyOwn { domain: None },
                r#"{"op":"policy_own","domain":null}"#,
            ),
            (
                Request::PolicyOwn {
                    domain: Some("a.test".into()),
                },
                r#"{"op":"policy_own","domain":"a.test"}"#,
            ),
            (Request::TlsrptList, r#"{"op":"tlsrpt_list"}"#),
            (
                Request::TlsrptShow {
                    domain: "a.test".into(),
                    day: Some("2026-01-02".into()),
                },
                r#"{"op":"tlsrpt_show","domain":"a.test","day":"2026-01-02"}"#,
            ),
            (Request::TlsrptSend, r#"{"op":"tlsrpt_send"}"#),
            (Request::DmarcList, r#"{"op":"dmarc_list"}"#),
            (Request::DmarcSend, r#"{"op":"dmarc_send"}"#),
            (
                Request::TlsrptReceivedList {
                    domain: Some("a.test".into()),
                    since: None,
                },
                r#"{"op":"tlsrpt_received_list","domain":"a.test","since":null}"#,
            ),
            (
                Request::TlsrptReceivedShow { id: "ab12".into() },
                r#"{"op":"tlsrpt_received_show","id":"ab12"}"#,
            ),
            (
                Request::ScreenShow {
                    ip: "2001:db8::1".parse().unwrap(),
                },
                r#"{"op":"screen_show","ip":"2001:db8::1"}"#,
            ),
            (
                Request::ScreenClear {
                    target: ScreenTarget::Ip("192.0.2.1".parse().unwrap()),
                },
                r#"{"op":"screen_clear","target":{"ip":"192.0.2.1"}}"#,
            ),
            (
                Request::ScreenClear {
                    target: ScreenTarget::Domain("example.test".into()),
                },
                r#"{"op":"screen_clear","target":{"domain":"example.test"}}"#,
            ),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), req);
        }
    }

    #[test]
    fn tlsrpt_show_without_day_means_the_latest() {
        let req: Request =
            serde_json::from_str(r#"{"op":"tlsrpt_show","domain":"a.test"}"#).unwrap();
        assert_eq!(
            req,
            Request::TlsrptShow {
                domain: "a.test".into(),
                day: None
            }
        );
    }

    #[test]
    fn retry_without_id_means_all() {
        let req: Request = serde_json::from_str(r#"{"op":"queue_retry"}"#).unwrap();
        assert_eq!(req, Request::QueueRetry { id: None });
    }

    /// `queue show --json` prints the body as the server sent it: the
    /// stored envelope's fields beside `history` and `recipient_states`,
    /// `history_note` and `body_error` only when there is something to say.
    /// The typed form must read it back whole.
    #[test]
    fn queue_detail_round_trips_in_the_flat_envelope_form() {
        use portcullis_types::{
            Address, BodyType, Notify, Origin, QueueId, Recipient, ReversePath,
        };
        let envelope = Envelope {
            id: QueueId::generate(1_700_000_000_000, 7),
            sender: ReversePath::Mailbox(Address::parse("a@b.test").unwrap()),
            recipients: vec![Recipient {
                address: Address::parse("c@d.test").unwrap(),
                notify: Notify::default(),
                orcpt: None,
            }],
            ret: None,
            envid: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            received_at: 1_700_000_000,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "h.test".into(),
            tls: None,
            authenticated: None,
            size: 10,
            origin: Origin::Bounce,
            require_tls: false,
            tls_optional: false,
        };
        let detail = QueueDetail {
            entry: QueueEntry {
                id: envelope.id.to_string(),
                sender: "<a@b.test>".into(),
                recipients: vec![],
                size: 10,
                received_at: 1_700_000_000,
                attempts: 1,
                next_attempt: Some(1_700_000_300),
                last_error: None,
            },
            envelope: QueueEnvelope {
                envelope,
                history: vec![AttemptEntry {
                    number: 1,
                    at: 1_700_000_001,
                    outcomes: vec!["c@d.test: deferred: 451 later".into()],
                }],
                history_note: None,
                recipient_states: vec![RecipientStateEntry {
                    status: "deferred".into(),
                    last_reply: Some("451 later".into()),
                    remote_mta: None,
                }],
                body_error: None,
            },
            headers: "Subject: x\r\n".into(),
        };
        let wire = serde_json::to_value(&detail).unwrap();
        let env = &wire["envelope"];
        assert_eq!(env["origin"], "bounce");
        assert_eq!(env["client_ip"], "192.0.2.1");
        assert_eq!(env["history"][0]["number"], 1);
        assert_eq!(env["recipient_states"][0]["status"], "deferred");
        assert!(env.get("history_note").is_none() && env.get("body_error").is_none());
        let request = Request::QueueShow { id: "x".into() };
        let back = Answer::decode(&request, wire).unwrap();
        assert_eq!(back, Answer::QueueShow(Box::new(detail)));
        assert!(Answer::decode(&Request::Status, serde_json::json!([1])).is_err());
    }

    /// The server never guesses what a `screen` request is about: a
    /// malformed address, or a target that does not say whether it is an
    /// address or a domain, does not decode.
    #[test]
    fn screen_requests_are_strict() {
        for bad in [
            r#"{"op":"screen_show","ip":"192.0.2.256"}"#,
            r#"{"op":"screen_show","ip":"example.test"}"#,
            r#"{"op":"screen_show"}"#,
            r#"{"op":"screen_clear","target":"192.0.2.1"}"#,
            r#"{"op":"screen_clear","target":{"ip":"example.test"}}"#,
            r#"{"op":"screen_clear","target":{"host":"example.test"}}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    /// `screen show --json` prints the body as the server sent it; the
    /// typed form reads it back whole.
    #[test]
    fn screen_answers_round_trip() {
        use crate::screen::{ScreenGreylistLine, ScreenListLine, ScreenRateLine};
        let show = ScreenShow {
            ip: "192.0.2.1".parse().unwrap(),
            rate_key: "192.0.2.1".into(),
            trusted: false,
            dnsbl_score: 2,
            dnsbl_threshold: 1,
            lists: vec![ScreenListLine {
                zone: "bl.example.test".into(),
                weight: 2,
                outcome: "listed".into(),
                answers: vec!["127.0.0.2".into()],
            }],
            rates: vec![ScreenRateLine {
                kind: "connections".into(),
                count: 3,
                limit: 60,
            }],
            greylist: vec![ScreenGreylistLine {
                key: "192.0.2.0/24 a@b.test -> c@d.test".into(),
                state: "waiting".into(),
                first_seen: 1_700_000_000,
                expires: 1_700_014_400,
            }],
            summary: "refused at RCPT".into(),
        };
        let wire = serde_json::to_value(&show).unwrap();
        assert_eq!(wire["ip"], "192.0.2.1");
        assert_eq!(wire["lists"][0]["answers"][0], "127.0.0.2");
        let request = Request::ScreenShow { ip: show.ip };
        let back = Answer::decode(&request, wire).unwrap();
        assert_eq!(back, Answer::ScreenShow(Box::new(show)));

        let cleared = ScreenCleared {
            target: ScreenTarget::Domain("b.test".into()),
            rates: 0,
            lists: 0,
            greylist: 4,
        };
        let wire = serde_json::to_value(&cleared).unwrap();
        assert_eq!(wire["target"]["domain"], "b.test");
        let request = Request::ScreenClear {
            target: cleared.target.clone(),
        };
        let back = Answer::decode(&request, wire).unwrap();
        assert_eq!(back, Answer::ScreenClear(cleared));
    }

    #[test]
    fn responses_are_tagged_by_status() {
        let ok = serde_json::to_string(&Response::ok(&vec![1, 2])).unwrap();
        assert_eq!(ok, r#"{"status":"ok","body":[1,2]}"#);
        let err = serde_json::to_string(&Response::error("nope")).unwrap();
        assert_eq!(err, r#"{"status":"error","message":"nope"}"#);
    }
}
