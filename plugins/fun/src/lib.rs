//! # daz-plugin-fun — `!roll`, `!choose`, `!8ball`
//!
//! Three small games in one plugin: dice in the usual `NdM+K` notation, a random pick
//! among options separated by `|` (or commas, or `or`), and the magic 8-ball. Every
//! argument is bounded (dice, sides, options, lengths) and answered with a usage line
//! when it does not parse. No state and no tables: a hot reload changes nothing users
//! can see. Settings in `README.md` and [`Config`].

use daz_feature_support::text;
use daz_plugin_api::{
    prelude::*,
    routing::{self, Command},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;

/// The `[plugins.fun.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Most dice in one roll.
    pub max_dice: u32,
    /// Most sides of a die.
    pub max_sides: u64,
    /// Most options for `!choose`.
    pub max_options: usize,
    /// A fixed random seed (for tests and demos); unset, every instance seeds itself
    /// from the operating system.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_dice: 100,
            max_sides: 1_000_000,
            max_options: 50,
            seed: None,
        }
    }
}

/// The classic twenty answers.
pub const EIGHT_BALL: [&str; 20] = [
    "It is certain.",
    "It is decidedly so.",
    "Without a doubt.",
    "Yes, definitely.",
    "You may rely on it.",
    "As I see it, yes.",
    "Most likely.",
    "Outlook good.",
    "Yes.",
    "Signs point to yes.",
    "Reply hazy, try again.",
    "Ask again later.",
    "Better not tell you now.",
    "Cannot predict now.",
    "Concentrate and ask again.",
    "Don't count on it.",
    "My reply is no.",
    "My sources say no.",
    "Outlook not so good.",
    "Very doubtful.",
];

/// A parsed dice expression `NdM+K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dice {
    /// How many dice.
    pub count: u32,
    /// Sides per die.
    pub sides: u64,
    /// Added to the sum (may be negative).
    pub modifier: i64,
}

/// Parses `d20`, `2d6`, `3d8+2`, `1d10-1` or a bare number of sides (`20`); nothing
/// means one six-sided die.
pub fn parse_dice(text: &str, max_dice: u32, max_sides: u64) -> std::result::Result<Dice, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Ok(Dice {
            count: 1,
            sides: 6,
            modifier: 0,
        });
    }
    let usage = || "Usage: !roll [NdM+K], e.g. !roll 2d6 or !roll d20+3".to_owned();
    let (body, modifier) = match t.find(['+', '-']) {
        Some(i) => {
            let m: i64 = t[i + 1..].parse().map_err(|_| usage())?;
            if m > 1_000_000 {
                return Err(usage());
            }
            (&t[..i], if &t[i..=i] == "-" { -m } else { m })
        }
        None => (t.as_str(), 0),
    };
    let (count, sides) = match body.split_once('d') {
        Some((c, s)) => {
            let count: u64 = if c.is_empty() {
                1
            } else {
                c.parse().map_err(|_| usage())?
            };
            (count, s.parse::<u64>().map_err(|_| usage())?)
        }
        None => (1, body.parse::<u64>().map_err(|_| usage())?),
    };
    if count == 0 || sides < 2 {
        return Err("A roll needs at least one die with at least 2 sides.".to_owned());
    }
    if count > u64::from(max_dice) || sides > max_sides {
        return Err(format!(
            "At most {max_dice} dice of at most {max_sides} sides."
        ));
    }
    Ok(Dice {
        count: u32::try_from(count).unwrap_or(max_dice),
        sides,
        modifier,
    })
}

/// Splits `!choose` options: by `|` if there is one, else by commas, else by ` or `.
pub fn options(text: &str) -> Vec<String> {
    let sep: &[&str] = if text.contains('|') {
        &["|"]
    } else if text.contains(',') {
        &[","]
    } else {
        &[" or "]
    };
    let mut parts = vec![text.to_owned()];
    for s in sep {
        parts = parts
            .iter()
            .flat_map(|p| p.split(s).map(str::to_owned).collect::<Vec<_>>())
            .collect();
    }
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The plugin instance.
pub struct Fun {
    host: Host,
    config: Config,
    rng: StdRng,
}

impl Fun {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    fn roll(&mut self, cmd: &Command) -> Result<()> {
        let dice = match parse_dice(&cmd.rest, self.config.max_dice, self.config.max_sides) {
            Ok(d) => d,
            Err(why) => return self.reply(cmd, &why),
        };
        let rolls: Vec<u64> = (0..dice.count)
            .map(|_| self.rng.random_range(1..=dice.sides))
            .collect();
        let sum: i64 = rolls
            .iter()
            .map(|r| i64::try_from(*r).unwrap_or(i64::MAX))
            .sum::<i64>()
            + dice.modifier;
        let line = if dice.count == 1 && dice.modifier == 0 {
            format!("{} rolls {sum} (d{}).", cmd.username, dice.sides)
        } else {
            let shown: Vec<String> = rolls.iter().take(10).map(u64::to_string).collect();
            let more = if rolls.len() > 10 { " + …" } else { "" };
            let m = match dice.modifier {
                0 => String::new(),
                m if m > 0 => format!(" + {m}"),
                m => format!(" - {}", -m),
            };
            let spec = match dice.modifier {
                0 => format!("{}d{}", dice.count, dice.sides),
                m if m > 0 => format!("{}d{}+{m}", dice.count, dice.sides),
                m => format!("{}d{}{m}", dice.count, dice.sides),
            };
            format!(
                "{} rolls {spec}: {}{more}{m} = {sum}.",
                cmd.username,
                shown.join(" + ")
            )
        };
        self.reply(cmd, &line)
    }

    fn choose(&mut self, cmd: &Command) -> Result<()> {
        let opts = options(&cmd.rest);
        if opts.len() < 2 {
            return self.reply(
                cmd,
                "Usage: !choose tea | coffee | juice (two options or more)",
            );
        }
        if opts.len() > self.config.max_options {
            return self.reply(
                cmd,
                &format!("At most {} options, please.", self.config.max_options),
            );
        }
        let pick = &opts[self.rng.random_range(0..opts.len())];
        self.reply(cmd, &format!("{}: {pick}", cmd.username))
    }

    fn eight_ball(&mut self, cmd: &Command) -> Result<()> {
        if cmd.rest.trim().is_empty() {
            return self.reply(cmd, "Ask me a question: !8ball will it rain?");
        }
        let answer = EIGHT_BALL[self.rng.random_range(0..EIGHT_BALL.len())];
        self.reply(cmd, &format!("{}: 🎱 {answer}", cmd.username))
    }
}

impl Plugin for Fun {
    const NAME: &'static str = "fun";
    const DESCRIPTION: &'static str = "!roll dice, !choose between options, !8ball";
    type Config = Config;
    type State = NoState;

    fn create(host: Host, config: Config, _previous: Option<NoState>) -> Result<Self> {
        if config.max_dice == 0 || config.max_sides < 2 || config.max_options < 2 {
            return Err(Error::config(
                "max_dice must be above 0, max_sides at least 2, max_options at least 2",
            ));
        }
        for c in ["roll", "choose", "8ball"] {
            host.subscribe(&routing::subject(c))?;
        }
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Ok(Fun { host, config, rng })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                usage: "[NdM+K]".to_owned(),
                aliases: vec!["dice".to_owned()],
                user_cooldown_ms: 2_000,
                ..CommandSpec::new("roll", "Roll dice (2d6, d20+3, …)")
            })
            .command(CommandSpec {
                usage: "<a> | <b> [| …]".to_owned(),
                aliases: vec!["pick".to_owned()],
                user_cooldown_ms: 2_000,
                ..CommandSpec::new("choose", "Pick one of the options")
            })
            .command(CommandSpec {
                usage: "<question>".to_owned(),
                user_cooldown_ms: 2_000,
                ..CommandSpec::new("8ball", "Ask the magic 8-ball")
            })
    }

    fn examples() -> Vec<ChatExample> {
        vec![
            ChatExample::new("!roll", "alice rolls "),
            ChatExample::new("!roll 3d1", "at least 2 sides"),
            ChatExample::new("!dice 2d6+3", "alice rolls 2d6+3: "),
            ChatExample::new("!roll 1000d6", "At most 100 dice"),
            ChatExample::new("!roll banana", "Usage: !roll [NdM+K]"),
            ChatExample::new("!choose tea | tea", "alice: tea"),
            ChatExample::new("!pick 🍕, 🍕", "alice: 🍕"),
            ChatExample::new("!choose one", "Usage: !choose"),
            ChatExample::new("!8ball will it rain?", "alice: 🎱 "),
            ChatExample::new("!8ball", "Ask me a question"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if routing::is_failure(event) || !event.subject().starts_with(routing::SUBJECT_PREFIX) {
            return Ok(());
        }
        let cmd = Command::from_event(event)?;
        match cmd.command.as_str() {
            "roll" => self.roll(&cmd),
            "choose" => self.choose(&cmd),
            "8ball" => self.eight_ball(&cmd),
            _ => Ok(()),
        }
    }
}

export_plugin!(Fun);

#[cfg(test)]
mod tests {
    use daz_plugin_api::{
        routing::testing::{check_command_examples, command_for, feed},
        testing::Harness,
    };
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_examples() {
        let failures = check_command_examples::<Fun>(json!({}), |_| {}).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn dice_notation() {
        let p = |s| parse_dice(s, 100, 1000);
        assert_eq!(
            p("").unwrap(),
            Dice {
                count: 1,
                sides: 6,
                modifier: 0
            }
        );
        assert_eq!(
            p("d20").unwrap(),
            Dice {
                count: 1,
                sides: 20,
                modifier: 0
            }
        );
        assert_eq!(
            p("20").unwrap(),
            Dice {
                count: 1,
                sides: 20,
                modifier: 0
            }
        );
        assert_eq!(
            p("3D8+2").unwrap(),
            Dice {
                count: 3,
                sides: 8,
                modifier: 2
            }
        );
        assert_eq!(
            p("1d10-1").unwrap(),
            Dice {
                count: 1,
                sides: 10,
                modifier: -1
            }
        );
        for bad in [
            "0d6",
            "2d1",
            "d",
            "2d",
            "x",
            "2d6+",
            "2d6+x",
            "99999999999999999999d6",
            "1d1001",
            "101d6",
            "-5",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_split_on_bars_commas_or_or() {
        assert_eq!(options("a | b|c"), vec!["a", "b", "c"]);
        assert_eq!(options("tea, coffee"), vec!["tea", "coffee"]);
        assert_eq!(options("tea or coffee"), vec!["tea", "coffee"]);
        assert_eq!(options("a, b | c"), vec!["a, b", "c"]);
        assert_eq!(options(" | | "), Vec::<String>::new());
    }

    #[test]
    fn rolls_stay_in_range_and_sum_up() {
        let mut h = Harness::<Fun>::new(json!({"seed": 7})).unwrap();
        for _ in 0..200 {
            let cmd = command_for::<Fun>("!roll 3d4+1", "bob", 0.0, 0).unwrap();
            feed(&mut h, &cmd).unwrap();
        }
        for line in h.chat_replies() {
            let (dice, total) = line
                .trim_start_matches("bob rolls 3d4+1: ")
                .trim_end_matches('.')
                .split_once(" = ")
                .unwrap();
            let parts: Vec<i64> = dice.split(" + ").map(|d| d.parse().unwrap()).collect();
            assert_eq!(parts.len(), 4, "{line}");
            assert!(parts[..3].iter().all(|d| (1..=4).contains(d)), "{line}");
            assert_eq!(
                parts.iter().sum::<i64>(),
                total.parse::<i64>().unwrap(),
                "{line}"
            );
        }
        // Every option comes up.
        let mut h = Harness::<Fun>::new(json!({})).unwrap();
        for _ in 0..200 {
            let cmd = command_for::<Fun>("!choose a | b | c", "bob", 0.0, 0).unwrap();
            feed(&mut h, &cmd).unwrap();
        }
        let replies = h.chat_replies();
        for o in ["bob: a", "bob: b", "bob: c"] {
            assert!(replies.iter().any(|r| r == o), "{o} never came up");
        }
    }

    #[test]
    fn long_rolls_and_long_options_fit_one_line() {
        let mut h = Harness::<Fun>::new(json!({})).unwrap();
        let cmd = command_for::<Fun>("!roll 100d1000000", "bob", 0.0, 0).unwrap();
        feed(&mut h, &cmd).unwrap();
        let long = format!("!choose {} | {}", "x".repeat(400), "y".repeat(400));
        let cmd = Command {
            rest: long.trim_start_matches("!choose ").to_owned(),
            ..command_for::<Fun>("!choose a | b", "bob", 0.0, 0).unwrap()
        };
        feed(&mut h, &cmd).unwrap();
        for line in h.chat_replies() {
            assert!(text::chat_len(&line) <= text::MAX_CHAT, "{line}");
        }
        assert!(
            h.chat_replies()[0].contains(" + … = "),
            "{:?}",
            h.chat_replies()
        );
    }

    #[test]
    fn the_default_configuration_starts() {
        Harness::<Fun>::new(daz_testkit::default_config("fun")).unwrap();
        assert!(Harness::<Fun>::new(json!({"max_dice": 0})).is_err());
    }
}
