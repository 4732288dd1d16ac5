//! Where a domain wants its reports (RFC 8460 §3): the TXT record
//! `_smtp._tls.<policy domain>`, `v=TLSRPTv1; rua=mailto:…,https://…`,
//! parsed by mail-auth and looked up through our [`Resolver`] when a report
//! is due. A temporary DNS failure is kept apart from "no record" (the
//! report waits and the lookup is retried).

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use portcullis_dns::{DnsError, Resolver};
use serde::{Deserialize, Serialize};

/// One `rua` destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "to", rename_all = "lowercase")]
pub enum Destination {
    /// `mailto:` — the address (RFC 8460 §5.3).
    Mailto(String),
    /// `https:` — the URL to POST to (RFC 8460 §5.2).
    Https(String),
}

impl Destination {
    /// The destination as written in the record (`mailto:a@b`, `https://…`).
    pub fn uri(&self) -> String {
        match self {
            Destination::Mailto(a) => format!("mailto:{a}"),
            Destination::Https(u) => u.clone(),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The outcome of looking up a domain's destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationLookup {
    /// The domain publishes one valid TLS-RPT record with these
    /// destinations.
    Found(Vec<Destination>),
    /// The domain does not want reports (no record, several records, or a
    /// record without a usable `rua`): nothing is sent.
    None(String),
    /// The lookup failed for now: try again later.
    Temporary(DnsError),
}

/// The TXT name of `domain`'s TLS-RPT record.
pub fn record_name(domain: &str) -> String {
    format!("_smtp._tls.{domain}")
}

/// Looks up `domain`'s report destinations.
pub async fn lookup_destinations<R: Resolver>(resolver: &R, domain: &str) -> DestinationLookup {
    let name = record_name(domain);
    match resolver.txt(&name).await {
        Ok(records) => match parse_destinations(&records) {
            Ok(d) => DestinationLookup::Found(d),
            Err(reason) => DestinationLookup::None(reason),
        },
        Err(e) if e.is_temporary() => DestinationLookup::Temporary(e),
        Err(e) => DestinationLookup::None(e.to_string()),
    }
}

/// Picks the TLS-RPT record among a name's TXT records and parses it.
///
/// RFC 8460 §3: records that do not begin with `v=TLSRPTv1` are discarded;
/// if not exactly one remains, the domain does not implement TLS-RPT.
/// Unknown URI schemes are ignored; `mailto:` query parts (`?subject=…`)
/// are dropped.
pub fn parse_destinations(records: &[String]) -> Result<Vec<Destination>, String> {
    let candidates: Vec<&String> = records
        .iter()
        .filter(|r| {
            let r = r.trim_start();
            r.strip_prefix("v=TLSRPTv1").is_some_and(|rest| {
                rest.trim_start().is_empty() || rest.trim_start().starts_with(';')
            })
        })
        .collect();
    let record = match candidates.as_slice() {
        [one] => *one,
        [] => return Err("no v=TLSRPTv1 record".to_owned()),
        _ => {
            return Err(format!(
                "{} v=TLSRPTv1 records (RFC 8460 §3: must be one)",
                candidates.len()
            ));
        }
    };
    let parsed = TlsRpt::parse(record.as_bytes())
        .map_err(|e| format!("invalid TLS-RPT record {record:?}: {e}"))?;
    let mut out: Vec<Destination> = Vec::new();
    for uri in parsed.rua {
        let dest = match uri {
            ReportUri::Mail(addr) => {
                let addr = addr.split('?').next().unwrap_or_default().trim().to_owned();
                match addr.split_once('@') {
                    Some((local, domain))
                        if !local.is_empty()
                            && !domain.is_empty()
                            && !domain.contains('@')
                            && !addr.contains(|c: char| c.is_whitespace() || c.is_control()) =>
                    {
                        Destination::Mailto(addr)
                    }
                    _ => continue,
                }
            }
            ReportUri::Http(url) => {
                let ok = url.len() > "https://".len()
                    && url
                        .get(..8)
                        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
                    && !url.contains(|c: char| c.is_whitespace() || c.is_control());
                if !ok {
                    continue;
                }
                Destination::Https(url)
            }
        };
        if !out.contains(&dest) {
            out.push(dest);
        }
    }
    if out.is_empty() {
        return Err(format!("no usable rua in {record:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_dns::MemoryResolver;

    #[track_caller]
    fn parses(records: &[&str], want: Result<Vec<Destination>, ()>) {
        let records: Vec<String> = records.iter().map(|s| (*s).to_owned()).collect();
        let got = parse_destinations(&records).map_err(|_| ());
        assert_eq!(got, want, "{records:?}");
    }

    #[test]
    fn records_per_rfc_8460_section_3() {
        use Destination::{Https, Mailto};
        parses(
            &["v=TLSRPTv1; rua=mailto:tlsrpt@example.test"],
            Ok(vec![Mailto("tlsrpt@example.test".into())]),
        );
        parses(
            &["v=TLSRPTv1;rua=mailto:a@example.test,https://r.example.test/v1"],
            Ok(vec![
                Mailto("a@example.test".into()),
                Https("https://r.example.test/v1".into()),
            ]),
        );
        // Other TXT records at the name are ignored.
        parses(
            &["v=spf1 -all", "v=TLSRPTv1; rua=https://r.example.test/"],
            Ok(vec![Https("https://r.example.test/".into())]),
        );
        // Two TLS-RPT records: the domain does not implement TLS-RPT.
        parses(
            &[
                "v=TLSRPTv1; rua=mailto:a@example.test",
                "v=TLSRPTv1; rua=mailto:b@example.test",
            ],
            Err(()),
        );
        parses(&["v=TLSRPTv2; rua=mailto:a@example.test"], Err(()));
        parses(&["v=TLSRPTv1"], Err(()));
        parses(&["v=TLSRPTv1; rua=mailto:not-an-address"], Err(()));
        parses(&[], Err(()));
    }

    #[tokio::test]
    async fn temporary_failures_are_not_an_absent_record() {
        let r = MemoryResolver::new()
            .txt("_smtp._tls.a.test", "v=TLSRPTv1; rua=mailto:r@a.test")
            .temp_fail("_smtp._tls.b.test");
        assert_eq!(
            lookup_destinations(&r, "a.test").await,
            DestinationLookup::Found(vec![Destination::Mailto("r@a.test".into())])
        );
        assert!(matches!(
            lookup_destinations(&r, "b.test").await,
            DestinationLookup::Temporary(_)
        ));
        assert!(matches!(
            lookup_destinations(&r, "c.test").await,
            DestinationLookup::None(_)
        ));
    }
}
