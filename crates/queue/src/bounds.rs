//! Keeps queue records bounded whatever remote servers say and however
//! long a message is retried: reply texts are cut (on a character boundary,
//! with a marker), each attempt's outcome list is capped, the history keeps
//! the first and the last attempts ([`QueueRecord::push_attempt`]), and a
//! record that is still too large is trimmed harder before it is written.
//!
//! Threat model: a remote MTA chooses its reply text (multi-line replies can
//! be long) and a sender chooses the recipients' ORCPT; neither may make a
//! record grow without bound (each record is rewritten on every attempt).

use crate::QueueRecord;

/// Longest remote reply or local error text kept in a record (octets).
pub const REPLY_LIMIT: usize = 1024;

/// Octets of per-recipient outcome text kept per attempt in the history;
/// the recipients' current states are kept whole in
/// [`QueueRecord::recipients`].
pub const OUTCOMES_LIMIT: usize = 8 * 1024;

/// Largest encoded record written (octets). Records over
/// [`portcullis_store::MAX_VALUE`] are stored in chunks; this bound keeps
/// a pathological one (tens of thousands of recipients) from being
/// rewritten in full on every attempt.
pub const RECORD_LIMIT: usize = 4 * 1024 * 1024;

/// Marker appended to cut text.
const CUT: &str = " [...cut]";

/// `text` cut to at most `max` octets on a character boundary, with a
/// marker when anything was cut.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(CUT.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT}", &text[..end])
}

/// Caps a list of outcome lines at [`OUTCOMES_LIMIT`] octets in total,
/// replacing the rest with a count.
pub fn cap_outcomes(outcomes: Vec<String>) -> Vec<String> {
    let mut used = 0;
    let total = outcomes.len();
    let mut kept = Vec::new();
    for line in outcomes {
        let line = truncate_text(&line, REPLY_LIMIT);
        if used + line.len() > OUTCOMES_LIMIT {
            break;
        }
        used += line.len();
        kept.push(line);
    }
    if kept.len() < total {
        let more = total - kept.len();
        kept.push(format!(
            "... and {more} more (each recipient's last reply is in its state)"
        ));
    }
    kept
}

/// Encodes `record` within [`RECORD_LIMIT`], trimming harder when it does
/// not fit: first the history's middle (the first and the last attempt
/// stay), then every kept text down to 128 octets. A record whose envelope
/// alone is too large is an error, never a panic.
pub fn encode_within_limit(record: &mut QueueRecord) -> Result<Vec<u8>, usize> {
    let bytes = record.encode();
    if bytes.len() <= RECORD_LIMIT {
        return Ok(bytes);
    }
    if record.history.len() > 2 {
        let last = record.history.len() - 1;
        record.history.drain(1..last);
    }
    for attempt in &mut record.history {
        attempt.outcomes = cap_short(&attempt.outcomes);
    }
    for state in &mut record.recipients {
        if let Some(reply) = &mut state.last_reply {
            *reply = truncate_text(reply, 128);
        }
    }
    if let Some(e) = &mut record.last_error {
        *e = truncate_text(e, 128);
    }
    let bytes = record.encode();
    if bytes.len() <= RECORD_LIMIT {
        Ok(bytes)
    } else {
        Err(bytes.len())
    }
}

fn cap_short(outcomes: &[String]) -> Vec<String> {
    outcomes
        .iter()
        .take(4)
        .map(|o| truncate_text(o, 128))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_cuts_on_a_char_boundary() {
        assert_eq!(truncate_text("250 ok", 1024), "250 ok");
        let long = "é".repeat(1000); // 2000 octets
        let cut = truncate_text(&long, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with(CUT));
        assert!(cut.starts_with("éé"));
        assert_eq!(truncate_text(&"x".repeat(1025), 1024).len(), 1024);
    }

    #[test]
    fn outcomes_are_capped_with_a_count() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("{i}: {}", "x".repeat(500)))
            .collect();
        let capped = cap_outcomes(lines);
        let total: usize = capped.iter().map(String::len).sum();
        assert!(total <= OUTCOMES_LIMIT + 100, "{total}");
        assert!(capped.last().unwrap().contains("more"), "{capped:?}");
        assert_eq!(cap_outcomes(vec!["a".into()]), vec!["a".to_string()]);
    }
}
