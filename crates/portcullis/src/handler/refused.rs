//! How a request is refused, shared by every command group.

use portcullis_admin::Response;

/// Why a request is refused: the error response, with the message the
/// operator sees.
pub(super) type Refused = Response;

/// `domain` parsed, or the refusal naming it.
pub(super) fn parse_domain(domain: &str) -> Result<portcullis_types::Domain, Refused> {
    portcullis_types::Domain::parse(domain)
        .map_err(|e| Response::error(format!("invalid domain {domain:?}: {e}")))
}
