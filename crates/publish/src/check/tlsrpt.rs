//! `tls-rpt record`: `_smtp._tls.<d>` TXT exists and is valid (RFC 8460
//! §3, parsed by mail-auth as the TLS-RPT sender does), and lists every
//! `[publish] tlsrpt_rua` URI, so other providers' reports reach us.

use super::{Check, Judged};
use portcullis_tlsrpt::DestinationLookup;
use portcullis_types::Domain;

/// The check's name.
pub const NAME: &str = "tls-rpt record";

/// Judges the `_smtp._tls` lookup against `rua` (`[publish] tlsrpt_rua`).
/// The record to publish lists `rua` when set; without it, the address a
/// domain conventionally uses, `mailto:tlsrpt@<d>`, which `[publish]
/// tlsrpt_rua` should then name.
pub fn judge(domain: &Domain, lookup: &DestinationLookup, rua: &[String]) -> Judged {
    let name = format!("_smtp._tls.{domain}");
    let wanted: Vec<String> = match rua.is_empty() {
        true => vec![format!("mailto:tlsrpt@{domain}")],
        false => rua.to_vec(),
    };
    let record = format!("{name}. IN TXT \"v=TLSRPTv1; rua={}\"", wanted.join(","));
    let gap = |detail: String| Judged {
        check: Check::gap(NAME, detail),
        publish: Some(record.clone()),
    };
    match lookup {
        DestinationLookup::Found(found) => {
            let listed: Vec<String> = found.iter().map(|d| d.uri()).collect();
            let missing: Vec<&String> = rua
                .iter()
                .filter(|u| !listed.iter().any(|l| same_uri(l, u)))
                .collect();
            if missing.is_empty() {
                return Check::ok(NAME, format!("{name} TXT v=TLSRPTv1, rua={}", listed.join(","))).into();
            }
            let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            gap(format!(
                "{name} lists rua={} but not {} ([publish] tlsrpt_rua): reports sent there never reach us; publish the record below",
                listed.join(","),
                missing.join(", ")
            ))
        }
        DestinationLookup::None(why) => {
            let hint = match rua.is_empty() {
                true => " (set [publish] tlsrpt_rua to the address you read reports at)",
                false => "",
            };
            gap(format!(
                "missing or invalid: {name}: {why}, so no provider reports TLS failures to us; publish the record below{hint}"
            ))
        }
        DestinationLookup::Temporary(e) => Check::temporary(
            NAME,
            format!("temporary DNS failure looking up {name}: {e}; not known whether it is published, try again"),
        )
        .into(),
    }
}

/// URIs compare case-insensitively (the scheme and the host are; local
/// parts of our own addresses are, in practice).
fn same_uri(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}
