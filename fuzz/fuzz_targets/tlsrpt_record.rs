//! The `_smtp._tls` TXT record (RFC 8460 §3) that says where TLS reports
//! go: each input line is one TXT string of the answer. Nothing may panic,
//! and every destination we would send a report to is one usable address
//! or HTTPS URL, without white space or control characters (a report must
//! not become a header injection or a request to somewhere else).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_tlsrpt::{Destination, parse_destinations};

fn clean(s: &str) -> bool {
    !s.contains(|c: char| c.is_whitespace() || c.is_control())
}

/// RFC 8460 §3: a string is a TLS-RPT record when it begins with
/// `v=TLSRPTv1` followed by the field delimiter (white space allowed).
fn is_tlsrpt(r: &str) -> bool {
    r.trim_start()
        .strip_prefix("v=TLSRPTv1")
        .is_some_and(|rest| {
            let rest = rest.trim_start();
            rest.is_empty() || rest.starts_with(';')
        })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let records: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let Ok(dests) = parse_destinations(&records) else {
        return;
    };
    assert!(!dests.is_empty(), "Ok with no destination");
    let tlsrpt = records.iter().filter(|r| is_tlsrpt(r)).count();
    assert_eq!(tlsrpt, 1, "destinations from {tlsrpt} v=TLSRPTv1 records");
    for (i, d) in dests.iter().enumerate() {
        assert!(!dests[..i].contains(d), "duplicate destination {d:?}");
        match d {
            Destination::Mailto(addr) => {
                assert!(clean(addr), "mailto {addr:?}");
                let (local, domain) = addr.split_once('@').expect("an @");
                assert!(!local.is_empty() && !domain.is_empty() && !domain.contains('@'));
                assert!(!addr.contains('?'), "query kept in {addr:?}");
            }
            Destination::Https(url) => {
                assert!(clean(url), "https {url:?}");
                assert!(
                    url.get(..8)
                        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
                );
            }
        }
        assert!(clean(&d.uri()), "uri {:?}", d.uri());
    }
});
