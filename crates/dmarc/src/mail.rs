//! The report as mail (RFC 7489 §7.2.1.1): the gzip XML attached as
//! `receiver!policy-domain!begin-timestamp!end-timestamp.xml.gz`
//! (`application/gzip`), the subject
//! `Report Domain: <domain> Submitter: <submitter> Report-ID: <<id>>`, a
//! short text part, DKIM-signed with the server's one signer
//! ([`portcullis_auth::DkimSigner`]) for the domain of the From address.
//!
//! Built here with mail-builder (the MIME builder mail-auth's own
//! `Report::write_rfc5322` uses) so that the Date comes from our clock and
//! the Message-ID is ours.

use std::time::SystemTime;

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use portcullis_auth::DkimSigner;
use portcullis_tlsrpt::Day;

use crate::DmarcError;

/// The headers the DKIM signature of a report covers.
pub const REPORT_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Auto-Submitted",
];

/// The attachment's file name (RFC 7489 §7.2.1.1):
/// `receiver!policy-domain!begin-timestamp!end-timestamp.xml.gz`.
pub fn report_filename(submitter: &str, domain: &str, day: Day) -> String {
    format!(
        "{submitter}!{domain}!{}!{}.xml.gz",
        day.start_timestamp(),
        day.end_timestamp()
    )
}

/// What a report message carries besides the gzip body.
#[derive(Debug, Clone, Copy)]
pub struct ReportMessage<'a> {
    /// The policy domain.
    pub domain: &'a str,
    /// The submitter (our domain).
    pub submitter: &'a str,
    /// The report-id.
    pub report_id: &'a str,
    /// The From address.
    pub from: &'a str,
    /// The To address (one destination).
    pub to: &'a str,
    /// The Date.
    pub date: SystemTime,
    /// The day reported on.
    pub day: Day,
}

/// Builds and signs the message carrying `gz` (the gzip XML) to `m.to`.
pub fn build_report_message(
    m: ReportMessage<'_>,
    gz: &[u8],
    signer: &DkimSigner,
) -> Result<Vec<u8>, DmarcError> {
    let date = m
        .date
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let message_id = format!(
        "dmarc.{}@{}",
        mail_builder::mime::make_boundary("."),
        m.submitter
    );
    let text = format!(
        "This is a DMARC aggregate report (RFC 7489) from {submitter}.\r\n\r\n\
         Report Domain: {domain}\r\n\
         Submitter: {submitter}\r\n\
         Report-ID: <{id}>\r\n",
        submitter = m.submitter,
        domain = m.domain,
        id = m.report_id,
    );
    let message = MessageBuilder::new()
        .from(m.from)
        .to(m.to)
        .date(date)
        .message_id(message_id)
        .subject(format!(
            "Report Domain: {} Submitter: {} Report-ID: <{}>",
            m.domain, m.submitter, m.report_id
        ))
        .header(
            "Auto-Submitted",
            HeaderType::Text(Text::new("auto-generated")),
        )
        .header("MIME-Version", HeaderType::Text(Text::new("1.0")))
        .body(MimePart::new(
            ContentType::new("multipart/mixed"),
            BodyPart::Multipart(vec![
                MimePart::new(ContentType::new("text/plain"), BodyPart::Text(text.into())),
                MimePart::new(
                    ContentType::new("application/gzip"),
                    BodyPart::Binary(gz.to_vec().into()),
                )
                .attachment(report_filename(m.submitter, m.domain, m.day)),
            ]),
        ))
        .write_to_vec()
        .map_err(|e| DmarcError::Build(format!("MIME: {e}")))?;
    Ok(signer.sign(&message)?)
}
