//! Actions and the rank rules that decide what the bot may actually do: a requested
//! action is carried out at the bot's live rank — never against a user of equal or
//! higher rank, and never as a frame the channel's permissions do not grant the bot
//! (a refused kick becomes a mute, a refused mute a warning). Free of I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the bot does to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A private message saying what was wrong.
    Warn,
    /// `/smute`: the user's lines are shown only to themselves and moderators.
    Smute,
    /// `/mute`.
    Mute,
    /// `/kick <user> <reason>`.
    Kick,
    /// `/ban <user> <reason>` (a name ban).
    Ban,
}

impl Action {
    /// The name used in `plugins.toml`, chat and the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Smute => "smute",
            Action::Mute => "mute",
            Action::Kick => "kick",
            Action::Ban => "ban",
        }
    }

    /// Parses a name typed in chat.
    pub fn parse(text: &str) -> Option<Action> {
        match text.to_ascii_lowercase().as_str() {
            "warn" => Some(Action::Warn),
            "smute" | "shadowmute" => Some(Action::Smute),
            "mute" => Some(Action::Mute),
            "kick" => Some(Action::Kick),
            "ban" => Some(Action::Ban),
            _ => None,
        }
    }

    /// The channel permission the action needs, if any.
    fn permission(self) -> Option<&'static str> {
        match self {
            Action::Warn => None,
            Action::Smute | Action::Mute => Some("mute"),
            Action::Kick => Some("kick"),
            Action::Ban => Some("ban"),
        }
    }

    /// The next milder action.
    fn milder(self) -> Option<Action> {
        match self {
            Action::Ban => Some(Action::Kick),
            Action::Kick => Some(Action::Mute),
            Action::Mute | Action::Smute => Some(Action::Warn),
            Action::Warn => None,
        }
    }

    /// The chat line that carries it out (`None` for a warning, which is a PM).
    pub fn command(self, user: &str, reason: &str) -> Option<String> {
        // The server reads the reason up to the end of the line; keep it on one line.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(120)
            .collect();
        match self {
            Action::Warn => None,
            Action::Smute => Some(format!("/smute {user}")),
            Action::Mute => Some(format!("/mute {user}")),
            Action::Kick => Some(format!("/kick {user} {reason}").trim_end().to_owned()),
            Action::Ban => Some(format!("/ban {user} {reason}").trim_end().to_owned()),
        }
    }
}

/// What the bot knows of the room when it decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Standing {
    /// The bot's own rank (−1 while it is not logged in).
    pub bot_rank: f64,
    /// The channel's permission thresholds (`setPermissions`).
    pub permissions: BTreeMap<String, f64>,
    /// The target's rank, if the target is in the user list.
    pub target_rank: Option<f64>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Do `action` (possibly milder than asked; `note` says why).
    Act {
        /// What to do.
        action: Action,
        /// Why it is milder than requested, when it is.
        note: Option<String>,
    },
    /// Do nothing; the reason goes to the audit.
    Spare(String),
}

/// Decides what the bot does about `requested` given the room.
pub fn decide(requested: Action, s: &Standing) -> Decision {
    if s.bot_rank < 0.0 {
        return Decision::Spare("the bot is not logged in".to_owned());
    }
    let target = s.target_rank.unwrap_or(0.0);
    if target >= s.bot_rank {
        return Decision::Spare(format!(
            "the user's rank {target} is not below the bot's rank {}",
            s.bot_rank
        ));
    }
    let mut action = requested;
    let mut note = None;
    while let Some(perm) = action.permission() {
        match s.permissions.get(perm) {
            Some(needed) if s.bot_rank >= *needed => break,
            needed => {
                if note.is_none() {
                    note = Some(match needed {
                        Some(n) => format!(
                            "{} needs rank {n}; the bot has rank {}",
                            requested.as_str(),
                            s.bot_rank
                        ),
                        None => format!(
                            "the channel does not allow {} (unregistered channel?)",
                            requested.as_str()
                        ),
                    });
                }
                match action.milder() {
                    Some(m) => action = m,
                    None => break,
                }
            }
        }
    }
    Decision::Act { action, note }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(bot: f64, target: f64) -> Standing {
        Standing {
            bot_rank: bot,
            permissions: [("mute", 1.5), ("kick", 1.5), ("ban", 2.0)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            target_rank: Some(target),
        }
    }

    #[test]
    fn never_against_equal_or_higher_rank() {
        for (bot, target) in [(2.0, 2.0), (2.0, 3.0), (1.0, 1.0), (3.0, 255.0)] {
            assert!(
                matches!(
                    decide(Action::Warn, &standing(bot, target)),
                    Decision::Spare(_)
                ),
                "bot {bot} target {target}"
            );
        }
        assert!(matches!(
            decide(Action::Kick, &standing(-1.0, 0.0)),
            Decision::Spare(_)
        ));
    }

    #[test]
    fn milder_actions_when_the_rank_does_not_allow() {
        assert_eq!(
            decide(Action::Ban, &standing(3.0, 1.0)),
            Decision::Act {
                action: Action::Ban,
                note: None
            }
        );
        let Decision::Act { action, note } = decide(Action::Ban, &standing(1.5, 0.0)) else {
            panic!("spared");
        };
        assert_eq!(action, Action::Kick);
        assert!(note.unwrap().contains("ban needs rank 2"));
        let Decision::Act { action, .. } = decide(Action::Kick, &standing(1.0, 0.0)) else {
            panic!("spared");
        };
        assert_eq!(action, Action::Warn);
        // An unregistered channel has no mute/kick/ban permission at all.
        let mut s = standing(3.0, 0.0);
        s.permissions.clear();
        let Decision::Act { action, note } = decide(Action::Smute, &s) else {
            panic!("spared");
        };
        assert_eq!(action, Action::Warn);
        assert!(note.unwrap().contains("does not allow smute"));
    }

    #[test]
    fn commands_stay_on_one_line() {
        assert_eq!(
            Action::Kick.command("bob", "spam\nand more").as_deref(),
            Some("/kick bob spam and more")
        );
        assert_eq!(
            Action::Mute.command("bob", "x").as_deref(),
            Some("/mute bob")
        );
        assert_eq!(Action::Warn.command("bob", "x"), None);
        assert_eq!(Action::Ban.command("bob", "").as_deref(), Some("/ban bob"));
    }
}
