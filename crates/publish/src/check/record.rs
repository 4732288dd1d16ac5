//! `mta-sts record`: `_mta-sts.<d>` TXT exists, is valid (RFC 8461 §3.1,
//! the policy crate's parser) and carries the id of the policy we serve.

use super::{Check, Judged};
use crate::policy::OwnPolicy;
use portcullis_policy::{NoPolicyReason, RecordLookup};
use portcullis_types::Domain;

/// The check's name.
pub const NAME: &str = "mta-sts record";

/// Judges the `_mta-sts` lookup against `ours`; every gap comes with our
/// record as the line to publish (replacing whatever `v=STSv1` record is
/// there: §3.1 allows exactly one).
pub fn judge(domain: &Domain, lookup: &RecordLookup, ours: &OwnPolicy) -> Judged {
    let name = format!("_mta-sts.{domain}");
    let gap = |detail: String| Judged {
        check: Check::gap(NAME, detail),
        publish: Some(ours.zone_line()),
    };
    match lookup {
        RecordLookup::Found(r) if r.id == ours.id => {
            Check::ok(NAME, format!("{name} TXT v=STSv1, id={} (ours)", r.id)).into()
        }
        RecordLookup::Found(r) => gap(format!(
            "{name} has id={} but the policy we serve has id={}: senders that cached the old policy never fetch ours; publish the record below",
            r.id, ours.id
        )),
        RecordLookup::NoPolicy(NoPolicyReason::NoRecord) => gap(format!(
            "missing: no v=STSv1 TXT record at {name}, so senders never look for our policy; publish the record below"
        )),
        RecordLookup::NoPolicy(NoPolicyReason::MultipleRecords(n)) => gap(format!(
            "{n} v=STSv1 TXT records at {name}: senders treat that as no policy (RFC 8461 §3.1); keep only the record below"
        )),
        RecordLookup::NoPolicy(NoPolicyReason::InvalidRecord(why)) => gap(format!(
            "invalid v=STSv1 TXT record at {name} ({why}): senders treat that as no policy; replace it with the record below"
        )),
        RecordLookup::NoPolicy(other) => gap(format!("{name}: {other}")),
        RecordLookup::Temporary(e) => Check::temporary(
            NAME,
            format!("temporary DNS failure looking up {name}: {e}; not known whether it is published, try again"),
        )
        .into(),
    }
}
