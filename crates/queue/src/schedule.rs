//! The scheduler's decisions as pure functions over the due-index (a set of
//! `(due unix seconds, queue id)`), so they are tested without a loop, a
//! store or a clock (STYLE 7).

use portcullis_types::QueueId;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// The due-index: every message with something left to deliver, ordered by
/// when it is due.
pub type DueIndex = BTreeSet<(u64, QueueId)>;

/// Up to `limit` messages due at `now` that are not already `busy`, most
/// overdue first.
pub fn claim_due(
    index: &DueIndex,
    now: u64,
    busy: &HashSet<QueueId>,
    limit: usize,
) -> Vec<QueueId> {
    index
        .iter()
        .take_while(|(due, _)| *due <= now)
        .filter(|(_, id)| !busy.contains(id))
        .take(limit)
        .map(|(_, id)| *id)
        .collect()
}

/// When the next message not already `busy` is due (unix seconds).
pub fn next_due(index: &DueIndex, busy: &HashSet<QueueId>) -> Option<u64> {
    index
        .iter()
        .find(|(_, id)| !busy.contains(id))
        .map(|(due, _)| *due)
}

/// The wait after attempt number `attempts` (1-based) failed: the
/// schedule's entry for it, the last entry repeating.
pub fn backoff(schedule: &[Duration], attempts: u32) -> Duration {
    let i = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> QueueId {
        QueueId::from_bytes(n.to_be_bytes())
    }

    #[test]
    fn claims_only_due_and_not_busy_oldest_first() {
        let index: DueIndex = [(100, id(1)), (50, id(2)), (200, id(3)), (100, id(4))]
            .into_iter()
            .collect();
        let busy: HashSet<_> = [id(4)].into_iter().collect();
        assert_eq!(claim_due(&index, 100, &busy, 10), vec![id(2), id(1)]);
        assert_eq!(claim_due(&index, 100, &HashSet::new(), 1), vec![id(2)]);
        assert_eq!(claim_due(&index, 49, &HashSet::new(), 10), vec![]);
        assert_eq!(claim_due(&index, 1000, &busy, 10).len(), 3);
    }

    #[test]
    fn next_due_skips_busy() {
        let index: DueIndex = [(100, id(1)), (50, id(2))].into_iter().collect();
        assert_eq!(next_due(&index, &HashSet::new()), Some(50));
        assert_eq!(next_due(&index, &[id(2)].into_iter().collect()), Some(100));
        assert_eq!(next_due(&DueIndex::new(), &HashSet::new()), None);
    }

    #[test]
    fn backoff_follows_the_schedule_and_repeats_the_last() {
        let s: Vec<Duration> = [300, 600, 1200]
            .iter()
            .map(|&x| Duration::from_secs(x))
            .collect();
        assert_eq!(backoff(&s, 1).as_secs(), 300);
        assert_eq!(backoff(&s, 2).as_secs(), 600);
        assert_eq!(backoff(&s, 3).as_secs(), 1200);
        assert_eq!(backoff(&s, 9).as_secs(), 1200);
        assert_eq!(backoff(&[], 1).as_secs(), 300);
    }
}
