//! When a reminder is due: `in 10m`, `in 1h30m`, `in 2 hours`, `10m` (relative) or
//! `at 21:00` (the next time the clock shows it, in the configured UTC offset), followed
//! by the reminder's text. Free of I/O; every malformed input is an error that says
//! what was expected.

/// Parses `<when> <text>` at `now_ms`: returns the due time and the text.
pub fn parse(
    input: &str,
    now_ms: i64,
    utc_offset_minutes: i32,
    max_ahead_ms: i64,
) -> Result<(i64, String), String> {
    let tokens: Vec<&str> = input.split_whitespace().collect();
    let Some(first) = tokens.first() else {
        return Err("say when: in 10m, in 1h30m or at 21:00".to_owned());
    };
    let (due, used) = if first.eq_ignore_ascii_case("at") {
        let clock = tokens
            .get(1)
            .ok_or("at needs a time of day, like at 21:00")?;
        (at(clock, now_ms, utc_offset_minutes)?, 2)
    } else {
        let start = usize::from(first.eq_ignore_ascii_case("in"));
        let (ms, used) = duration(&tokens[start..])?;
        if ms < 1_000 {
            return Err("the delay must be at least 1 second".to_owned());
        }
        (now_ms.saturating_add(ms), start + used)
    };
    if due - now_ms > max_ahead_ms {
        return Err(format!(
            "that is too far ahead; the most is {} days",
            max_ahead_ms / 86_400_000
        ));
    }
    let text = tokens[used..].join(" ");
    if text.is_empty() {
        return Err("what should I remind you of? Add the text after the time".to_owned());
    }
    Ok((due, text))
}

fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        _ => return None,
    })
}

/// `1h30m` → ms; `None` if the token is not entirely number-unit pairs.
fn compact(token: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = token;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = unit_ms(&rest[..unit_len])?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Reads duration tokens from the front: `10m`, `1h30m`, `2 hours`, `1 h 30 m`.
/// Returns the total and how many tokens it used.
fn duration(tokens: &[&str]) -> Result<(i64, usize), String> {
    let mut total: i64 = 0;
    let mut i = 0;
    while i < tokens.len() {
        if let Some(ms) = compact(tokens[i]) {
            total = total.checked_add(ms).ok_or("that delay is too long")?;
            i += 1;
            continue;
        }
        let number = tokens[i].parse::<i64>().ok().filter(|n| *n < 1_000_000_000);
        match (number, tokens.get(i + 1).and_then(|u| unit_ms(u))) {
            (Some(n), Some(unit)) => {
                total = n
                    .checked_mul(unit)
                    .and_then(|ms| total.checked_add(ms))
                    .ok_or("that delay is too long")?;
                i += 2;
            }
            _ => break,
        }
    }
    if i == 0 {
        let got = tokens.first().copied().unwrap_or("");
        let got: String = got.chars().take(20).collect();
        return Err(format!(
            "I don't understand the time {got:?}; say in 10m, in 1h30m, in 2 hours or at 21:00"
        ));
    }
    Ok((total, i))
}

/// The next moment the clock (at `offset` minutes east of UTC) shows `clock`.
fn at(clock: &str, now_ms: i64, offset_minutes: i32) -> Result<i64, String> {
    let bad = || format!("{clock:?} is not a time of day; say at 21:00 or at 9:05");
    let (h, m) = clock.split_once(':').ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    let offset = i64::from(offset_minutes) * 60_000;
    let local = now_ms + offset;
    let day = local.div_euclid(86_400_000) * 86_400_000;
    let mut due = day + h * 3_600_000 + m * 60_000;
    if due <= local {
        due += 86_400_000;
    }
    Ok(due - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z
    const MAX: i64 = 30 * 86_400_000;

    fn p(s: &str) -> Result<(i64, String), String> {
        parse(s, NOW, 0, MAX)
    }

    #[test]
    fn relative_times_in_every_spelling() {
        assert_eq!(p("in 10m tea").unwrap(), (NOW + 600_000, "tea".into()));
        assert_eq!(p("10m tea").unwrap().0, NOW + 600_000);
        assert_eq!(
            p("in 1h30m call mum").unwrap(),
            (NOW + 5_400_000, "call mum".into())
        );
        assert_eq!(p("in 2 hours x").unwrap().0, NOW + 7_200_000);
        assert_eq!(p("in 1 h 30 min x").unwrap().0, NOW + 5_400_000);
        assert_eq!(p("in 5s x").unwrap().0, NOW + 5_000);
    }

    #[test]
    fn clock_times_are_the_next_occurrence() {
        assert_eq!(
            p("at 21:00 film").unwrap(),
            (NOW + 9 * 3_600_000, "film".into())
        );
        // 11:00 has passed today: tomorrow.
        assert_eq!(p("at 11:00 x").unwrap().0, NOW + 23 * 3_600_000);
        // At UTC+2 it is 14:00 now; 15:30 local is 13:30 UTC.
        assert_eq!(
            parse("at 15:30 x", NOW, 120, MAX).unwrap().0,
            NOW + 90 * 60_000
        );
    }

    #[test]
    fn malformed_times_say_what_was_expected() {
        for (input, part) in [
            ("", "say when"),
            ("in", "I don't understand"),
            ("in 10x tea", "I don't understand the time \"10x\""),
            ("tomorrow tea", "I don't understand"),
            ("in 10m", "Add the text"),
            ("at 25:00 x", "not a time of day"),
            ("at 9 x", "not a time of day"),
            ("at", "needs a time of day"),
            ("in 0s x", "at least 1 second"),
            ("in 99999999999999h x", "I don't understand"),
            ("in 999999999 weeks x", "too far ahead"),
            ("in 40d x", "too far ahead; the most is 30 days"),
        ] {
            let err = p(input).unwrap_err();
            assert!(err.contains(part), "{input:?}: {err}");
        }
    }
}
