//! The report as mail (RFC 8460 §5.3): a `multipart/report;
//! report-type="tlsrpt"` message with a short text part and the gzip JSON
//! as `application/tlsrpt+gzip`, named
//! `submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz`,
//! with the `TLS-Report-Domain` and `TLS-Report-Submitter` headers and the
//! subject `Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>`,
//! DKIM-signed (RFC 8460 §5.3: report mail MUST be DKIM-signed) by the
//! domain of the `From` address with the server's one signer
//! ([`portcullis_auth::DkimSigner`]).
//!
//! mail-auth's own `TlsReport::write_rfc5322` leaves the unique-id out of
//! the file name and takes the date from the system clock, so the message
//! is built here with the same MIME builder (mail-builder) instead.

use std::path::Path;
use std::time::SystemTime;

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use portcullis_auth::DkimSigner;

use crate::{Day, ReportJson, TlsRptError};

/// The headers the DKIM signature of a report covers.
pub const REPORT_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "Auto-Submitted",
];

/// The DKIM signer of report mail from the PEM key in `path` (the
/// `[tlsrpt] dkim_key`): `d=` `domain`, the domain of the `from` address,
/// `s=` `selector`, over [`REPORT_HEADERS`]. Publish its key with
/// `signer.dns_record(Some("tlsrpt"))` (RFC 8460 §5.3).
pub fn report_signer_from_file(
    path: &Path,
    domain: &str,
    selector: &str,
) -> Result<DkimSigner, TlsRptError> {
    Ok(DkimSigner::from_pem_file(
        path,
        domain,
        selector,
        &REPORT_HEADERS,
    )?)
}

/// Like [`report_signer_from_file`], from the PEM text.
pub fn report_signer(pem: &[u8], domain: &str, selector: &str) -> Result<DkimSigner, TlsRptError> {
    Ok(DkimSigner::from_pem(
        pem,
        domain,
        selector,
        &REPORT_HEADERS,
    )?)
}

/// The attachment's file name (RFC 8460 §5.3):
/// `submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.json.gz`,
/// the unique-id being the letters and digits of the report-id's left-hand
/// side (at most 64, the last ones: they carry its random part).
pub fn report_filename(submitter: &str, domain: &str, day: Day, report_id: &str) -> String {
    let left = report_id.split('@').next().unwrap_or_default();
    let alnum: Vec<char> = left.chars().filter(char::is_ascii_alphanumeric).collect();
    let unique: String = alnum[alnum.len().saturating_sub(64)..].iter().collect();
    format!(
        "{submitter}!{domain}!{}!{}!{unique}.json.gz",
        day.start_timestamp(),
        day.end_timestamp()
    )
}

/// What a report message needs besides the report.
#[derive(Debug, Clone, Copy)]
pub struct MessageParts<'a> {
    /// The policy domain (`TLS-Report-Domain`).
    pub domain: &'a str,
    /// The submitter domain (`TLS-Report-Submitter`).
    pub submitter: &'a str,
    /// The `From` address.
    pub from: &'a str,
    /// The `To` address (one `mailto:` destination).
    pub to: &'a str,
    /// The `Date`.
    pub date: SystemTime,
    /// The day reported on.
    pub day: Day,
}

/// Builds and signs the RFC 8460 §5.3 message carrying `report` (its gzip
/// body `gz`) to one `mailto:` destination.
pub fn build_report_message(
    report: &ReportJson,
    gz: &[u8],
    parts: MessageParts<'_>,
    signer: &DkimSigner,
) -> Result<Vec<u8>, TlsRptError> {
    let id = report.report_id();
    let filename = report_filename(parts.submitter, parts.domain, parts.day, id);
    let date = parts
        .date
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let message_id = format!(
        "{}.{}@{}",
        id.split('@').next().unwrap_or_default(),
        mail_builder::mime::make_boundary("."),
        parts.submitter
    );
    let text = format!(
        "This is an aggregate TLS report (RFC 8460) from {submitter}.\r\n\r\n\
         Report Domain: {domain}\r\n\
         Submitter: {submitter}\r\n\
         Report-ID: <{id}>\r\n",
        submitter = parts.submitter,
        domain = parts.domain,
    );
    let message = MessageBuilder::new()
        .from(parts.from)
        .to(parts.to)
        .date(date)
        .message_id(message_id)
        .subject(format!(
            "Report Domain: {} Submitter: {} Report-ID: <{id}>",
            parts.domain, parts.submitter
        ))
        .header(
            "TLS-Report-Domain",
            HeaderType::Text(Text::new(parts.domain.to_owned())),
        )
        .header(
            "TLS-Report-Submitter",
            HeaderType::Text(Text::new(parts.submitter.to_owned())),
        )
        .header(
            "Auto-Submitted",
            HeaderType::Text(Text::new("auto-generated")),
        )
        .header("MIME-Version", HeaderType::Text(Text::new("1.0")))
        .body(MimePart::new(
            ContentType::new("multipart/report").attribute("report-type", "tlsrpt"),
            BodyPart::Multipart(vec![
                MimePart::new(ContentType::new("text/plain"), BodyPart::Text(text.into())),
                MimePart::new(
                    ContentType::new("application/tlsrpt+gzip"),
                    BodyPart::Binary(gz.to_vec().into()),
                )
                .attachment(filename),
            ]),
        ))
        .write_to_vec()
        .map_err(|e| TlsRptError::Build(format!("MIME: {e}")))?;
    Ok(signer.sign(&message)?)
}
