//! `!poll` arguments: the sub-commands (`close`, `last`), and
//! `<title> | <option> | <option> [| <timeout>]` checked against the configured bounds
//! before anything is sent to the server.

use crate::Config;

/// What a `!poll` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `!poll`: the open poll and its counts.
    Status,
    /// `!poll close`: close the open poll.
    Close,
    /// `!poll last`: the results of the last closed poll.
    Last,
    /// `!poll <title> | <option> | … [| <timeout>]`: open a poll.
    Open(NewPollRequest),
}

/// A poll to open, already within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPollRequest {
    /// The question, as typed (control characters turned into spaces).
    pub title: String,
    /// The options, as typed, in order.
    pub options: Vec<String>,
    /// Seconds until the server closes it; `None`: until someone closes it.
    pub timeout_s: Option<u64>,
}

/// The usage line every refusal ends with.
pub const USAGE: &str = "Usage: !poll <title> | <option> | <option> [| 2m]";

/// The longest a server accepts for a poll (Cytube's `newPoll` timeout, seconds).
pub const MAX_TIMEOUT_S: u64 = 86_400;

/// Control characters become spaces (the server would show them as garbage), and the
/// ends are trimmed.
fn clean(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Reads a timeout such as `30s`, `2m`, `1.5h`, `10 minutes`. `None` when `text` does
/// not look like a duration at all (it is then an option: `!poll pick | 1 | 2` has no
/// timeout); `Some(Err)` when it does but is out of range or not a number.
pub fn parse_timeout(text: &str) -> Option<Result<u64, String>> {
    let t = text.trim().to_lowercase();
    let (sign, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let scale = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600.0,
        _ => return None,
    };
    if number.is_empty() || !number.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let range = || {
        format!(
            "A poll stays open from 1 second to 24 hours; “{}” is not in that range.",
            text.trim()
        )
    };
    let Ok(value) = number.parse::<f64>() else {
        return Some(Err(format!(
            "“{}” is not a duration; try 30s, 2m or 1h.",
            text.trim()
        )));
    };
    let seconds = (value * scale).round();
    if sign || !seconds.is_finite() || !(1.0..=MAX_TIMEOUT_S as f64).contains(&seconds) {
        return Some(Err(range()));
    }
    Some(Ok(seconds as u64))
}

/// Length as the server counts it (UTF-16 units; it cuts titles and options at 255).
fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Parses what follows `!poll`. `Err` is the answer for the user.
pub fn parse(rest: &str, config: &Config) -> Result<Request, String> {
    let rest = rest.trim();
    if !rest.contains('|') {
        return match rest.to_lowercase().as_str() {
            "" => Ok(Request::Status),
            "close" | "end" | "stop" => Ok(Request::Close),
            "last" | "results" => Ok(Request::Last),
            _ => Err(format!(
                "A poll needs at least two options. {USAGE} (or !poll close, !poll last)"
            )),
        };
    }
    let mut parts: Vec<String> = rest.split('|').map(clean).collect();
    let title = parts.remove(0);
    if title.is_empty() {
        return Err(format!("A poll needs a title. {USAGE}"));
    }
    // Empty parts (a trailing `|`, `a || b`) are left out rather than refused.
    parts.retain(|p| !p.is_empty());
    let timeout_s = match parts.last().and_then(|p| parse_timeout(p)) {
        Some(Ok(s)) => {
            parts.pop();
            Some(s)
        }
        Some(Err(why)) => return Err(why),
        None => config.default_timeout_s.filter(|s| *s > 0),
    };
    let options = parts;
    if options.len() < 2 {
        return Err(format!("A poll needs at least two options. {USAGE}"));
    }
    if options.len() > config.max_options {
        return Err(format!(
            "That is {} options; a poll has at most {}.",
            options.len(),
            config.max_options
        ));
    }
    let title_len = title.chars().count();
    if title_len > config.max_title_chars || units(&title) > 255 {
        return Err(format!(
            "The title is {title_len} characters long; the most is {}.",
            config.max_title_chars
        ));
    }
    for (i, o) in options.iter().enumerate() {
        let len = o.chars().count();
        if len > config.max_option_chars || units(o) > 255 {
            return Err(format!(
                "Option {} is {len} characters long; the most is {}.",
                i + 1,
                config.max_option_chars
            ));
        }
    }
    for (i, o) in options.iter().enumerate() {
        if options[..i]
            .iter()
            .any(|p| p.to_lowercase() == o.to_lowercase())
        {
            return Err(format!("“{o}” is there twice; every option must differ."));
        }
    }
    Ok(Request::Open(NewPollRequest {
        title,
        options,
        timeout_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rest: &str) -> NewPollRequest {
        match parse(rest, &Config::default()) {
            Ok(Request::Open(p)) => p,
            other => panic!("{rest}: {other:?}"),
        }
    }

    fn refused(rest: &str) -> String {
        parse(rest, &Config::default()).expect_err(rest)
    }

    #[test]
    fn timeouts_take_units_and_stay_in_range() {
        assert_eq!(parse_timeout("30s"), Some(Ok(30)));
        assert_eq!(parse_timeout(" 2m "), Some(Ok(120)));
        assert_eq!(parse_timeout("1.5h"), Some(Ok(5_400)));
        assert_eq!(parse_timeout("10 Minutes"), Some(Ok(600)));
        assert_eq!(parse_timeout("24h"), Some(Ok(86_400)));
        for bad in ["0s", "25h", "-5m", "0.2s", "99999999999999999999999h"] {
            assert!(matches!(parse_timeout(bad), Some(Err(_))), "{bad}");
        }
        assert!(matches!(parse_timeout("1.2.3m"), Some(Err(_))));
        // Not durations at all: options.
        for option in ["5", "yes", "5 apples", "m", "s5", ".5m", "1d"] {
            assert_eq!(parse_timeout(option), None, "{option}");
        }
    }

    #[test]
    fn a_poll_is_a_title_and_options_with_an_optional_timeout() {
        let p = open("Best pizza? | margherita | pepperoni | 2m");
        assert_eq!(p.title, "Best pizza?");
        assert_eq!(p.options, vec!["margherita", "pepperoni"]);
        assert_eq!(p.timeout_s, Some(120));
        let p = open("pick | 1 | 2 | 3");
        assert_eq!(p.options, vec!["1", "2", "3"]);
        assert_eq!(p.timeout_s, None);
        let p = open("t | a || b |");
        assert_eq!(p.options, vec!["a", "b"]);
        let p = open("<b>Q</b> | ünï | 🍕\u{7}");
        assert_eq!(p.title, "<b>Q</b>");
        assert_eq!(p.options, vec!["ünï", "🍕"]);
    }

    #[test]
    fn sub_commands_and_bad_input() {
        let c = Config::default();
        assert_eq!(parse("", &c), Ok(Request::Status));
        assert_eq!(parse(" CLOSE ", &c), Ok(Request::Close));
        assert_eq!(parse("last", &c), Ok(Request::Last));
        assert!(refused("lunch?").contains("at least two options"));
        assert!(refused("lunch? | pasta").contains("at least two options"));
        assert!(refused("lunch? | pasta | 5m").contains("at least two options"));
        assert!(refused(" | a | b").contains("needs a title"));
        assert!(refused("t | a | b | 0s").contains("1 second to 24 hours"));
        assert!(refused("t | a | b | 48h").contains("1 second to 24 hours"));
        assert!(refused("t | a | A").contains("twice"));
        let many = format!(
            "t | {}",
            (0..11)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(refused(&many).contains("at most 10"));
        let long = format!("t | a | {}", "x".repeat(101));
        assert_eq!(
            refused(&long),
            "Option 2 is 101 characters long; the most is 100."
        );
        let long = format!("{} | a | b", "é".repeat(201));
        assert!(refused(&long).contains("title is 201 characters"));
        // Emoji count two units each on the server's side.
        let c = Config {
            max_option_chars: 255,
            ..Config::default()
        };
        let wide = format!("t | a | {}", "🍕".repeat(200));
        assert!(parse(&wide, &c).is_err());
    }

    #[test]
    fn the_configured_default_timeout_applies_when_none_is_typed() {
        let c = Config {
            default_timeout_s: Some(300),
            ..Config::default()
        };
        match parse("t | a | b", &c) {
            Ok(Request::Open(p)) => assert_eq!(p.timeout_s, Some(300)),
            other => panic!("{other:?}"),
        }
    }
}
