//! Durations as people read them, for the client's output. Flags are parsed with `humantime`.

use std::time::Duration;

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
    fn formats_for_people() {
        assert_eq!(human(Duration::from_micros(850)), "850µs");
        assert_eq!(human(Duration::from_micros(1250)), "1.25ms");
        assert_eq!(human(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
        assert_eq!(human(Duration::from_secs(3)), "3s");
        assert_eq!(human(Duration::from_millis(1520)), "1.52s");
    }
}
