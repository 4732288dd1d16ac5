//! The `_mta-sts` TXT record (RFC 8461 §3.1), parsed from the DNS answer a
//! stranger controls: each input line is one TXT string of the answer.
//! Nothing may panic, and a record is found only when exactly one string
//! begins with `v=STSv1` and its `id` is 1 to 32 letters and digits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::{NoPolicyReason, RecordLookup, StsRecord, record::select_record};

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// §3.1: a string is an STSv1 record when it begins with `v=STSv1` followed
/// by the field delimiter, white space or nothing.
fn is_sts(r: &str) -> bool {
    r.strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let records: Vec<String> = text.split('\n').map(str::to_owned).collect();
    for r in &records {
        if let Ok(rec) = StsRecord::parse(r) {
            assert!(valid_id(&rec.id), "id {:?} accepted from {r:?}", rec.id);
            assert!(is_sts(r), "a record not beginning with v=STSv1: {r:?}");
        }
    }
    let sts = records.iter().filter(|r| is_sts(r)).count();
    match select_record(&records) {
        RecordLookup::Found(rec) => {
            assert!(valid_id(&rec.id));
            assert_eq!(sts, 1, "found a record among {sts} v=STSv1 strings");
        }
        RecordLookup::NoPolicy(NoPolicyReason::MultipleRecords(n)) => {
            assert!(
                n >= 2 && n <= sts,
                "{n} records counted, {sts} begin with v=STSv1"
            );
        }
        RecordLookup::NoPolicy(_) | RecordLookup::Temporary(_) => {}
    }
});
