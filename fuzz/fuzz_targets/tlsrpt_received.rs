//! A TLS report another provider sends about our domains (RFC 8460 §4.4),
//! gzip or plain JSON, as POSTed to `/tlsrpt` or mailed to our rua
//! address. Nothing may panic; what would be stored is about our domain
//! only, within the store's bounds (one value of at most `RECORD_BUDGET`
//! bytes, at most `MAX_POLICIES` policies and `MAX_FAILURE_DETAILS` rows
//! each), whatever the reporter wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_tlsrpt::received::{
    MAX_FAILURE_DETAILS, MAX_POLICIES, RECORD_BUDGET, decode_report,
};
use portcullis_types::Domain;

fuzz_target!(|data: &[u8]| {
    let ours = [Domain::parse("example.test").expect("domain")];
    let Ok(Some(stored)) = decode_report(data, &ours) else {
        return;
    };
    assert!(stored.policies.len() <= MAX_POLICIES);
    for p in &stored.policies {
        assert_eq!(p.policy_domain, "example.test");
        assert!(p.failure_details.len() <= MAX_FAILURE_DETAILS);
    }
    let json = serde_json::to_vec(&stored).expect("serialisable");
    assert!(json.len() <= RECORD_BUDGET, "{} bytes stored", json.len());
});
