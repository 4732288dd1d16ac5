//! From the bytes a sender handed us to an RFC 8460 report: gunzip when
//! the body is gzip (RFC 8460 §5.1 compresses; §5.2 and §5.3 allow plain
//! JSON too), never past [`MAX_REPORT_BYTES`] of output, then mail-auth's
//! parser, which tolerates the optional fields being left out.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::GzDecoder;
use mail_auth::report::tlsrpt::TlsReport;

use super::{IntakeError, MAX_REPORT_BYTES};

/// The two bytes every gzip member starts with (RFC 1952 §2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The JSON of `body`: itself, or its gzip content. Refused when the body
/// or its decompressed form is over [`MAX_REPORT_BYTES`] (the decoder is
/// stopped one byte past the cap, so a small bomb costs at most 1 MiB).
pub(super) fn json_of(body: &[u8]) -> Result<Cow<'_, [u8]>, IntakeError> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(IntakeError::Invalid(format!(
            "{} bytes, over the {MAX_REPORT_BYTES}-byte cap",
            body.len()
        )));
    }
    if !body.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    GzDecoder::new(body)
        .take(MAX_REPORT_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IntakeError::Invalid(format!("bad gzip: {e}")))?;
    if out.len() > MAX_REPORT_BYTES {
        return Err(IntakeError::Invalid(format!(
            "over {MAX_REPORT_BYTES} bytes once decompressed"
        )));
    }
    Ok(Cow::Owned(out))
}

/// The report in `json` (RFC 8460 §4.4), or why it is not one.
pub(super) fn parse(json: &[u8]) -> Result<TlsReport, IntakeError> {
    TlsReport::parse_json(json)
        .map_err(|e| IntakeError::Invalid(format!("not RFC 8460 JSON: {e:?}")))
}
