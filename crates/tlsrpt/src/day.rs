//! UTC days: the unit of TLS-RPT aggregation (RFC 8460 §4.1: "the
//! reporting period is one day", 00:00:00 to 23:59:59 UTC). The calendar
//! arithmetic is `portcullis_types::date`'s.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_types::date::{civil_from_days, days_from_civil};

/// Seconds in a UTC day (leap seconds do not exist in Unix time).
const DAY_SECS: i64 = 86_400;

/// A UTC calendar day, written `YYYY-MM-DD`. Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The UTC day containing `t` (days before 1970 count as 1970-01-01).
    pub fn of(t: SystemTime) -> Day {
        let secs = portcullis_types::date::unix_secs(t);
        Day(i64::try_from(secs / 86_400).unwrap_or(i64::MAX / DAY_SECS))
    }

    /// The day `n` days after the Unix epoch.
    pub fn from_days_since_epoch(n: i64) -> Day {
        Day(n)
    }

    /// Days since the Unix epoch.
    pub fn days_since_epoch(self) -> i64 {
        self.0
    }

    /// The day before.
    pub fn prev(self) -> Day {
        Day(self.0 - 1)
    }

    /// The day after.
    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    /// 00:00:00 UTC of this day, in seconds since the epoch.
    pub fn start_timestamp(self) -> i64 {
        self.0 * DAY_SECS
    }

    /// 23:59:59 UTC of this day, in seconds since the epoch (the
    /// `end-datetime` of RFC 8460 §4.4's example).
    pub fn end_timestamp(self) -> i64 {
        self.start_timestamp() + DAY_SECS - 1
    }

    /// 00:00:00 UTC of this day.
    pub fn start(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(self.start_timestamp()).unwrap_or(0))
    }

    /// 00:00:00 UTC of the next day: when this day is over.
    pub fn end(self) -> SystemTime {
        self.next().start()
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A string that is not a `YYYY-MM-DD` date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date (YYYY-MM-DD)")]
pub struct BadDay(pub String);

impl FromStr for Day {
    type Err = BadDay;

    fn from_str(s: &str) -> Result<Day, BadDay> {
        let bad = || BadDay(s.to_owned());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, BadDay> {
            let part = s.get(r).ok_or_else(bad)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<u32>().map_err(|_| bad())
        };
        let (y, m, d) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(bad());
        }
        Ok(Day(days_from_civil(y, m, d)))
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_bound_the_utc_day() {
        for s in ["1970-01-01", "2000-02-29", "2026-11-23", "2100-12-31"] {
            let day: Day = s.parse().expect(s);
            assert_eq!(day.to_string(), s);
            assert_eq!(Day::of(day.start()), day);
            assert_eq!(Day::of(day.end() - Duration::from_secs(1)), day);
            assert_eq!(Day::of(day.end()), day.next());
        }
        let t = UNIX_EPOCH + Duration::from_secs(1_795_416_947);
        assert_eq!(Day::of(t).to_string(), portcullis_types::date::ymd(t));
    }

    #[test]
    fn malformed_days_are_refused() {
        for s in [
            "",
            "2026-1-01",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026/01/01",
            "+026-01-01",
            "2026-01-01x",
        ] {
            assert!(s.parse::<Day>().is_err(), "{s:?} accepted");
        }
    }
}
