//! The DANE verifier's reading of what a hostile MX sends (its certificate
//! chain) under what a DNS zone publishes (TLSA records): any bytes as
//! certificates, any records, and the matching and the designated trust
//! anchors are worked out without a panic, within bounds (never more
//! anchors than TA records plus presented certificates).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_tls::inspect_chain;
use portcullis_types::Tlsa;

fuzz_target!(|data: &[u8]| {
    // Layout: count of records (1 octet), then per record usage,
    // selector, matching, length (1 octet each) and the data; the rest is
    // the chain, certificates separated by a 0xff 0x00 0xff marker.
    let Some((&n, mut rest)) = data.split_first() else {
        return;
    };
    let mut records = Vec::new();
    for _ in 0..(n % 8) {
        let [usage, selector, matching, len, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(*len).min(tail.len());
        records.push(Tlsa {
            usage: *usage % 4,
            selector: *selector % 3,
            matching: *matching % 4,
            data: tail[..len].to_vec(),
        });
        rest = &tail[len..];
    }
    let chain: Vec<Vec<u8>> = rest
        .split(|&b| b == 0xff)
        .map(<[u8]>::to_vec)
        .take(16)
        .collect();
    let (matched, anchors) = inspect_chain(&chain, &records);
    assert!(matched <= records.len());
    let ta = records.iter().filter(|r| r.usable() && r.usage == 2).count();
    assert!(anchors <= ta * (chain.len() + 1), "{anchors} anchors from {ta} records");
});
