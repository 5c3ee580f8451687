//! Times: durations written for people, RFC 3339 text from the database, and the hour
//! and day buckets of the aggregates.
//!
//! All times are unix epoch milliseconds (`i64`), as the host's clock and the events
//! give them.

/// One hour in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A duration in the two largest units: `3d 4h`, `2h 5m`, `4m 3s`, `12s`. Negative
/// durations read as `0s`.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// `mm:ss` or `h:mm:ss` for a media position or length in seconds.
pub fn clock(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0) as i64
    } else {
        0
    };
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{sec:02}")
    } else {
        format!("{m}:{sec:02}")
    }
}

/// Parses RFC 3339 text (`2024-05-01T12:00:00.123Z`, any offset, any fraction) as the
/// SQL service returns timestamps on both databases.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The start of the bucket of `period_ms` holding `ms`, with buckets aligned to
/// `offset_ms` east of UTC (a day bucket in UTC+2 starts at 22:00 UTC).
pub fn floor(ms: i64, period_ms: i64, offset_ms: i64) -> i64 {
    (ms + offset_ms).div_euclid(period_ms) * period_ms - offset_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(-5), "0s");
        assert_eq!(human(12_345), "12s");
        assert_eq!(human(4 * 60_000 + 3_000), "4m 3s");
        assert_eq!(human(2 * HOUR_MS + 5 * 60_000), "2h 5m");
        assert_eq!(human(3 * DAY_MS + 4 * HOUR_MS + 1), "3d 4h");
        assert_eq!(clock(65.7), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(f64::NAN), "0:00");
    }

    #[test]
    fn database_timestamps_parse_in_either_form() {
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00.123Z"),
            Some(1_714_564_800_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00Z"),
            Some(1_714_564_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:00:00+02:00"),
            Some(1_714_564_800_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn buckets_align_to_the_offset() {
        let t = 1_714_564_800_123; // 2024-05-01T12:00:00.123Z
        assert_eq!(floor(t, HOUR_MS, 0), 1_714_564_800_000);
        assert_eq!(floor(t, DAY_MS, 0), 1_714_521_600_000);
        // UTC+2: the local day began at 22:00 UTC the day before.
        assert_eq!(
            floor(t, DAY_MS, 2 * HOUR_MS),
            1_714_521_600_000 - 2 * HOUR_MS
        );
        assert_eq!(floor(-1, HOUR_MS, 0), -HOUR_MS);
    }
}
