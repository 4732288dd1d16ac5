//! Times as the CLI prints and reads them (UTC, Unix seconds), on the
//! calendar of `portcullis_types::date`.

use portcullis_types::date::{civil_from_days, days_from_civil};

/// The current time in Unix seconds.
pub fn now_secs() -> u64 {
    use portcullis_types::Clock;
    portcullis_types::SystemClock.unix_secs()
}

/// `YYYY-MM-DD HH:MM` (UTC) for tables.
pub fn format_time(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60
    )
}

/// RFC 3339 in UTC, e.g. `2026-03-01T12:00:00Z`.
pub fn format_rfc3339(secs: u64) -> String {
    portcullis_types::date::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Parses `YYYY-MM-DD` (the start of that day) or `YYYY-MM-DDTHH:MM:SSZ`,
/// both UTC, into Unix seconds.
pub fn parse_utc(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time) = match s.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time)),
        None => (s, None),
    };
    let [y, m, d] = fields(date, '-', [4, 2, 2]).ok_or_else(bad)?;
    let (y, m, d) = (y as i64, m as u32, d as u32);
    let days = days_from_civil(y, m, d);
    if !(1..=12).contains(&m) || civil_from_days(days) != (y, m, d) || days < 0 {
        return Err(bad());
    }
    let secs_of_day = match time {
        None => 0,
        Some(t) => {
            let t = t.strip_suffix(['Z', 'z']).ok_or_else(bad)?;
            let [h, mi, se] = fields(t, ':', [2, 2, 2]).ok_or_else(bad)?;
            if h > 23 || mi > 59 || se > 59 {
                return Err(bad());
            }
            h * 3600 + mi * 60 + se
        }
    };
    Ok(days as u64 * 86_400 + secs_of_day)
}

/// Exactly three fields of ASCII digits separated by `sep`, of the given
/// lengths, as numbers; `None` for anything else.
fn fields(text: &str, sep: char, lens: [usize; 3]) -> Option<[u64; 3]> {
    let mut parts = text.split(sep);
    let mut out = [0u64; 3];
    for (slot, len) in out.iter_mut().zip(lens) {
        let p = parts.next()?;
        if p.len() != len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_bad_dates_are_refused() {
        assert_eq!(parse_utc("1970-01-01"), Ok(0));
        assert_eq!(parse_utc("2000-02-29"), Ok(951_782_400));
        assert_eq!(parse_utc("2026-11-23T06:55:47Z"), Ok(1_795_416_947));
        assert_eq!(format_rfc3339(1_795_416_947), "2026-11-23T06:55:47Z");
        assert_eq!(format_time(1_795_416_947), "2026-11-23 06:55");
        for bad in [
            "",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "2026-1-01",
            "tomorrow",
            "2026-01-01T25:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00Z",
            "1969-12-31",
            "+026-01-01",
        ] {
            let err = parse_utc(bad).unwrap_err();
            assert!(err.contains("YYYY-MM-DD"), "{bad}: {err}");
        }
    }
}
