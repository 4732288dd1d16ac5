//! `[queue]`: the retry schedule and how long a message may wait.

use crate::check::Checker;
use crate::duration::parse_duration;
use serde::Deserialize;
use std::time::Duration;

/// `[queue]`: retry schedule and lifetime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    /// `retry`: waits between attempts; the last one repeats.
    pub retry: Option<Vec<String>>,
    /// `max_age`: then the message bounces (default `"5d"`).
    pub max_age: Option<String>,
    /// `delay_warning`: one delay DSN after this long (default `"4h"`).
    pub delay_warning: Option<String>,
}

/// Retry schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Queue {
    /// Waits between attempts; the last repeats.
    pub retry: Vec<Duration>,
    /// Lifetime before a bounce.
    pub max_age: Duration,
    /// When one delay DSN is sent.
    pub delay_warning: Duration,
}

impl Default for Queue {
    /// 5m, 10m, 20m, 40m, then every hour; bounce after 5 days; one delay
    /// warning after 4 hours.
    fn default() -> Queue {
        Queue {
            retry: [5, 10, 20, 40, 60]
                .iter()
                .map(|m| Duration::from_secs(m * 60))
                .collect(),
            max_age: Duration::from_secs(5 * 86_400),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }
}

/// `[queue]`: a schedule of non-zero waits, and a delay warning before the
/// message expires.
pub(crate) fn build(f: &QueueFile, c: &mut Checker) -> Queue {
    let d = Queue::default();
    let queue = Queue {
        retry: match &f.retry {
            None => d.retry,
            Some(list) => retry(list, c),
        },
        max_age: c.duration("queue.max_age", &f.max_age, d.max_age),
        delay_warning: c.duration("queue.delay_warning", &f.delay_warning, d.delay_warning),
    };
    if queue.delay_warning >= queue.max_age {
        c.fail(
            "queue.delay_warning",
            "delay_warning must be shorter than max_age",
        );
    }
    queue
}

/// `queue.retry` as written: at least one wait, none of them zero.
fn retry(list: &[String], c: &mut Checker) -> Vec<Duration> {
    if list.is_empty() {
        c.fail("queue.retry", "the retry schedule needs at least one wait");
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, t)| match parse_duration(t) {
            Ok(d) if d.is_zero() => {
                c.fail(
                    format!("queue.retry[{i}]"),
                    "a retry wait of zero would spin",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                c.fail(format!("queue.retry[{i}]"), e);
                None
            }
        })
        .collect()
}
