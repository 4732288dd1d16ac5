//! What one parsed request gets: the policy (RFC 8461 §3.3), a TLS report
//! taken (RFC 8460 §3), or the error that says why not. Never a redirect
//! (RFC 8461 §3.3: senders must not follow them).

use super::body::{self, BodyError};
use super::reply::Reply;
use super::request::Head;
use crate::metrics::Outcome;
use crate::site::{Lookup, Site};
use portcullis_dns::Resolver;
use portcullis_tlsrpt::received::{Channel, IntakeError, MAX_REPORT_BYTES, ReportIntake};
use std::sync::Arc;
use tokio::io::AsyncRead;

/// RFC 8461 §3.3: where senders fetch the policy.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Where TLS reports are POSTed (the `https:` rua we publish).
pub const REPORT_PATH: &str = "/tlsrpt";
/// RFC 8460 §3: the media types of a report sent over HTTPS.
const REPORT_TYPES: [&str; 2] = ["application/tlsrpt+gzip", "application/tlsrpt+json"];

/// The reply to one request, its outcome for the counters, and what the
/// log line should add.
#[derive(Debug)]
pub struct Answered {
    /// What the client gets.
    pub reply: Reply,
    /// For `portcullis_mta_sts_requests_total`.
    pub outcome: Outcome,
    /// The domain, report id or refusal reason, for the log.
    pub detail: String,
}

fn answered(reply: Reply, outcome: Outcome, detail: impl Into<String>) -> Answered {
    Answered {
        reply,
        outcome,
        detail: detail.into(),
    }
}

/// Answers `head`; for a report POST, reads its body from `rest` (what
/// came after the head) and `stream`.
pub async fn answer<R: Resolver, S: AsyncRead + Unpin>(
    head: &Head,
    rest: Vec<u8>,
    stream: &mut S,
    site: &Site<R>,
    intake: Option<&Arc<dyn ReportIntake>>,
) -> Answered {
    match (head.path.as_str(), head.method.as_str()) {
        (POLICY_PATH, "GET" | "HEAD") => {
            let mut a = policy(head, site).await;
            a.reply.send_body = head.method == "GET";
            a
        }
        (POLICY_PATH, _) => not_allowed("GET, HEAD"),
        (REPORT_PATH, "POST") => report(head, rest, stream, intake).await,
        (REPORT_PATH, _) => not_allowed("POST"),
        (_, "GET" | "HEAD" | "POST") => {
            let mut a = not_found("no such path");
            a.reply.send_body = head.method != "HEAD";
            a
        }
        _ => not_allowed("GET, HEAD, POST"),
    }
}

fn not_found(detail: &str) -> Answered {
    answered(
        Reply::text("404 Not Found", "not found"),
        Outcome::NotFound,
        detail,
    )
}

fn not_allowed(allow: &'static str) -> Answered {
    let mut reply = Reply::text("405 Method Not Allowed", "method not allowed");
    reply.extra_header = Some(match allow {
        "GET, HEAD" => "Allow: GET, HEAD",
        "POST" => "Allow: POST",
        _ => "Allow: GET, HEAD, POST",
    });
    answered(reply, Outcome::MethodNotAllowed, "method not allowed")
}

/// The policy of the domain `Host` names, or 404.
async fn policy<R: Resolver>(head: &Head, site: &Site<R>) -> Answered {
    let Some(host) = head.host.as_deref() else {
        return not_found("no Host");
    };
    match site.policy_for_host(host).await {
        Lookup::Policy(p) => {
            let reply = Reply {
                status: "200 OK",
                // RFC 8461 §3.2: the policy is served as text/plain.
                content_type: "text/plain",
                extra_header: None,
                body: p.text,
                send_body: true,
            };
            answered(reply, Outcome::Policy, format!("{} id={}", p.domain, p.id))
        }
        Lookup::NotOurs => not_found("not one of our mta-sts hosts"),
        Lookup::Unavailable { domain, reason } => answered(
            Reply::text("404 Not Found", "no policy"),
            Outcome::PolicyUnavailable,
            format!("{domain}: {reason}"),
        ),
    }
}

/// A TLS report POST: checked by its head first, so an oversized one is
/// refused before its body is read.
async fn report<S: AsyncRead + Unpin>(
    head: &Head,
    rest: Vec<u8>,
    stream: &mut S,
    intake: Option<&Arc<dyn ReportIntake>>,
) -> Answered {
    let media = head.content_type.as_deref().unwrap_or_default();
    if !REPORT_TYPES.contains(&media) {
        return answered(
            Reply::text(
                "415 Unsupported Media Type",
                "send application/tlsrpt+gzip or application/tlsrpt+json",
            ),
            Outcome::UnsupportedMediaType,
            format!("content type {media:?}"),
        );
    }
    let too_large = |detail: String| {
        answered(
            Reply::text("413 Content Too Large", "a TLS report is at most 1 MiB"),
            Outcome::TooLarge,
            detail,
        )
    };
    let chunked = match (head.content_length, head.transfer_encoding.as_deref()) {
        (Some(length), None) if length > MAX_REPORT_BYTES as u64 => {
            return too_large(format!("{length} bytes announced"));
        }
        (Some(_), None) => false,
        (None, Some("chunked")) => true,
        (None, Some(other)) => {
            return answered(
                Reply::text(
                    "501 Not Implemented",
                    "only chunked transfer coding is taken",
                ),
                Outcome::BadRequest,
                format!("Transfer-Encoding {other:?}"),
            );
        }
        // The head parser refuses both at once.
        (Some(_), Some(_)) | (None, None) => {
            return answered(
                Reply::text("411 Length Required", "Content-Length is required"),
                Outcome::LengthRequired,
                "no Content-Length",
            );
        }
    };
    let Some(intake) = intake else {
        return answered(
            Reply::text("503 Service Unavailable", "reports are not taken here yet"),
            Outcome::ReportUnavailable,
            "no report intake",
        );
    };
    let read = if chunked {
        body::chunked(rest, stream, MAX_REPORT_BYTES).await
    } else {
        body::sized(rest, stream, head.content_length.unwrap_or(0) as usize).await
    };
    let body = match read {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large("chunked body over the cap".into()),
        Err(BodyError::Malformed(why)) => {
            return answered(
                Reply::text("400 Bad Request", "malformed body"),
                Outcome::BadRequest,
                why,
            );
        }
    };
    let intake = intake.clone();
    // The intake parses and writes to the store: off the async threads.
    let taken = tokio::task::spawn_blocking(move || intake.take(&body, Channel::Https)).await;
    match taken {
        Ok(Ok(id)) => answered(
            Reply::text("201 Created", &id),
            Outcome::ReportStored,
            format!("report {id}"),
        ),
        Ok(Err(IntakeError::Invalid(why))) => answered(
            Reply::text("400 Bad Request", "not a usable TLS report"),
            Outcome::ReportInvalid,
            why,
        ),
        Ok(Err(IntakeError::Store(why))) => answered(
            Reply::text("503 Service Unavailable", "try again later"),
            Outcome::ReportUnavailable,
            why,
        ),
        Err(e) => answered(
            Reply::text("503 Service Unavailable", "try again later"),
            Outcome::ReportUnavailable,
            format!("report intake failed: {e}"),
        ),
    }
}
