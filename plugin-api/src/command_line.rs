//! Parsing chat commands (`!name arg "quoted arg"`).

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    /// The command name, lowercased, without the prefix.
    pub name: String,
    /// The arguments, with quotes removed.
    pub args: Vec<String>,
    /// Everything after the name, trimmed, as typed.
    pub rest: String,
}

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    /// Longest accepted input, in characters.
    pub max_len: usize,
    /// Most arguments accepted.
    pub max_args: usize,
}

impl Default for CommandLimits {
    fn default() -> Self {
        Self {
            max_len: 500,
            max_args: 32,
        }
    }
}

/// Why a text is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotACommand {
    /// It does not start with the prefix (or is only the prefix).
    NoPrefix,
    /// It is longer than the limit.
    TooLong,
    /// It has more arguments than the limit.
    TooManyArgs,
    /// A quote was opened and never closed.
    UnclosedQuote,
}

/// Parses `text` (already HTML-unescaped) as a command with the given prefix.
///
/// Arguments are split on whitespace; `"double"` or `'single'` quotes group words and a
/// backslash escapes the next character inside quotes.
pub fn parse_command(
    text: &str,
    prefix: &str,
    limits: CommandLimits,
) -> Result<ParsedCommand, NotACommand> {
    let text = text.trim();
    if text.chars().count() > limits.max_len {
        return Err(NotACommand::TooLong);
    }
    let body = text.strip_prefix(prefix).ok_or(NotACommand::NoPrefix)?;
    let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() {
        return Err(NotACommand::NoPrefix);
    }
    let rest = body[name_end..].trim();
    let args = split_args(rest, limits.max_args)?;
    Ok(ParsedCommand {
        name: name.to_lowercase(),
        args,
        rest: rest.to_owned(),
    })
}

fn split_args(rest: &str, max_args: usize) -> Result<Vec<String>, NotACommand> {
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut arg = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        arg.push(escaped);
                    }
                } else if c == first {
                    closed = true;
                    break;
                } else {
                    arg.push(c);
                }
            }
            if !closed {
                return Err(NotACommand::UnclosedQuote);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        if args.len() == max_args {
            return Err(NotACommand::TooManyArgs);
        }
        args.push(arg);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ParsedCommand, NotACommand> {
        parse_command(text, "!", CommandLimits::default())
    }

    #[test]
    fn plain_command_with_args() {
        let c = parse("!Seen alice bob").unwrap();
        assert_eq!(c.name, "seen");
        assert_eq!(c.args, vec!["alice", "bob"]);
        assert_eq!(c.rest, "alice bob");
    }

    #[test]
    fn quoted_arguments_group_words() {
        let c = parse(r#"!poll "best film" 'a b' "say \"hi\"""#).unwrap();
        assert_eq!(c.args, vec!["best film", "a b", "say \"hi\""]);
    }

    #[test]
    fn not_commands() {
        assert_eq!(parse("hello"), Err(NotACommand::NoPrefix));
        assert_eq!(parse("!"), Err(NotACommand::NoPrefix));
        assert_eq!(parse("! x"), Err(NotACommand::NoPrefix));
        assert_eq!(parse("!x \"open"), Err(NotACommand::UnclosedQuote));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = CommandLimits {
            max_len: 10,
            max_args: 2,
        };
        assert_eq!(
            parse_command("!abcdefghijk", "!", limits),
            Err(NotACommand::TooLong)
        );
        assert_eq!(
            parse_command("!a b c d", "!", limits),
            Err(NotACommand::TooManyArgs)
        );
        assert!(parse_command("!a b c", "!", limits).is_ok());
    }

    #[test]
    fn multi_character_prefix() {
        let c = parse_command("$$np", "$$", CommandLimits::default()).unwrap();
        assert_eq!(c.name, "np");
        assert!(c.args.is_empty());
    }
}
