//! Durations as operators write them: `"500ms"`, `"90s"`, `"5m"`, `"4h"`, `"5d"`.

use std::time::Duration;

/// Parses a duration written as a whole number followed by one unit
/// (`ms`, `s`, `m`, `h`, `d`). Returns a message naming the problem otherwise.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("duration {input:?} has no unit (write e.g. \"90s\", \"5m\", \"4h\", \"5d\")")
    })?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration {input:?} does not start with a whole number"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        other => {
            return Err(format!(
                "duration {input:?} has unknown unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("duration {input:?} is too large"))
}

/// Formats a duration in the largest unit that divides it, the inverse of
/// [`parse_duration`], for `config check` output.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size && s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for (text, secs) in [
            ("90s", 90),
            ("5m", 300),
            ("4h", 14_400),
            ("5d", 432_000),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(secs)))
                    .unwrap()
                    .as_secs(),
                secs
            );
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
