//! The operator-facing edges of Portcullis: the admin API types, the admin
//! socket server and its CLI client, and the Prometheus metrics endpoint.
//!
//! The admin protocol is newline-delimited JSON over a Unix stream socket:
//! the client writes one [`Request`] line, the server answers with one
//! [`Response`] line and closes. The socket is created with mode 0600, so
//! the file system decides who may administer the server; no further
//! authentication happens here. The metrics endpoint speaks a deliberately
//! small, strict subset of HTTP/1.x (RFC 9112) and serves the Prometheus text
//! exposition format 0.0.4.
//!
//! Threat model: anything arriving on either socket is untrusted input. Bad
//! input (over-long lines, malformed JSON, oversized or slow HTTP heads) gets
//! a clear error reply and a closed connection, never a panic, and every read
//! is bounded in size and time. This crate holds no business logic: the
//! binary implements [`Handler`] and hands the endpoint a function that
//! draws the page (each crate renders its own metrics through
//! `portcullis_metrics::MetricsWriter`).

#![forbid(unsafe_code)]

mod client;
mod cluster;
mod conn;
mod dmarc;
mod error;
mod metrics_http;
mod own;
mod protocol;
mod received;
mod screen;
mod server;
mod table;

pub use client::{CALL_TIMEOUT, call, call_as};
pub use cluster::{ClusterMigrated, ClusterNode, ClusterShow, ClusterVersion};
pub use dmarc::{DmarcEntry, DmarcOutcome, DmarcSendResult};
pub use error::AdminError;
pub use metrics_http::{MetricsListener, bind_metrics};
pub use own::{OwnCheck, OwnDomain, PolicyOwn};
pub use protocol::{
    Answer, AttemptEntry, ExplainHost, ExplainPlan, ListenerStatus, PolicyEntry, PolicyEvicted,
    PolicyExplain, PolicyRefresh, PolicyShow, PolicyUnpinned, QueueDeleted, QueueDetail,
    QueueEntry, QueueEnvelope, QueueRetried, RecipientEntry, RecipientStateEntry, ReloadReport,
    Request, Response, StatusReport, TlsrptEntry, TlsrptOutcome, TlsrptSendResult,
};
pub use received::{ReceivedEntry, ReceivedFailureShow, ReceivedPolicyShow, ReceivedShow};
pub use screen::{
    ScreenCleared, ScreenGreylistLine, ScreenListLine, ScreenRateLine, ScreenShow, ScreenTarget,
};
pub use server::{AdminListener, Handler, MAX_REQUEST_LINE, bind, serve};
pub use table::render_table;
