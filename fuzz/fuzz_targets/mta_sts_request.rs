//! The request head of the `mta-sts` HTTPS listener (RFC 9112), as anyone
//! on the Internet may send it. Nothing may panic, and a head that parses
//! is one the routing can trust: origin-form path, an upper-case method,
//! no control character in anything taken from it, never both
//! Content-Length and Transfer-Encoding (request smuggling).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_publish::server::request::parse_head;

fn clean(s: &str) -> bool {
    !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fuzz_target!(|data: &[u8]| {
    let Ok(head) = parse_head(data) else {
        return;
    };
    assert!(head.path.starts_with('/'), "{head:?}");
    assert!(!head.path.contains(['?', '#', ' ']), "{head:?}");
    assert!(!head.method.is_empty() && head.method.bytes().all(|b| b.is_ascii_uppercase()));
    for field in [&head.host, &head.content_type, &head.transfer_encoding]
        .into_iter()
        .flatten()
    {
        assert!(clean(field), "{head:?}");
    }
    assert!(clean(&head.path), "{head:?}");
    assert!(
        head.content_length.is_none() || head.transfer_encoding.is_none(),
        "{head:?}"
    );
});
