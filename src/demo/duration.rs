//! Human durations for flags: `250ms`, `3s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.

use std::time::Duration;

/// Why a duration flag could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{0}` is not a duration: use e.g. 250ms, 3s, 1.5s, 2m or 1h")]
    Invalid(String),
    #[error("`{0}` is too long")]
    TooLong(String),
}

/// Parses `250ms`, `3s`, `1.5s`, `2m`, `1h` or a bare number of seconds (`10`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| DurationError::Invalid(text.to_string()))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::Invalid(text.to_string())),
    };
    Duration::try_from_secs_f64(number * scale)
        .map_err(|_| DurationError::TooLong(text.to_string()))
}

/// Formats a duration for people: `850µs`, `1.25ms`, `12.3ms`, `300ms`, `3s`, `1.52s`.
pub fn human(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0}µs")
    } else if micros < 10_000.0 {
        format!("{:.2}ms", micros / 1000.0)
    } else if micros < 100_000.0 {
        format!("{:.1}ms", micros / 1000.0)
    } else if micros < 1_000_000.0 {
        format!("{:.0}ms", micros / 1000.0)
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.2}s", micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(" 5 s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("fast"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("3 days"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("-3s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("1.2.3s"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("1e300h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(human(Duration::from_micros(850)), "850µs");
        assert_eq!(human(Duration::from_micros(1250)), "1.25ms");
        assert_eq!(human(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_secs(3)), "3s");
        assert_eq!(human(Duration::from_millis(1520)), "1.52s");
    }
}
