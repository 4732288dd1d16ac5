//! The end-of-data scanner against the literal reading of RFC 5321
//! §4.1.1.4/§4.5.2 (`reference::scan_whole`): arbitrary octets in
//! arbitrary splits must give the same end and the same content.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_inbound::session::dot::{DotScanner, reference};

mod split;

fuzz_target!(|data: &[u8]| {
    let chunks = split::chunks(data);
    let input: Vec<u8> = chunks.concat();
    let mut scanner = DotScanner::new();
    let mut content = Vec::new();
    let mut consumed = 0;
    let mut end = None;
    for chunk in &chunks {
        let s = scanner.scan(chunk, Some(&mut content));
        consumed += s.consumed;
        if s.done {
            end = Some(consumed);
            break;
        }
        assert_eq!(s.consumed, chunk.len(), "stopped early without the marker");
    }
    match reference::scan_whole(&input) {
        Some((want, at)) => {
            assert_eq!(end, Some(at), "end of data");
            assert_eq!(content, want, "content");
        }
        None => assert_eq!(end, None, "ended without <CRLF>.<CRLF>"),
    }
});
