//! The `[plugins.commands.config]` table: the prefix and parsing limits, what to ignore,
//! the admin list, per-command overrides of what plugins declare, and canned responses.

use std::collections::BTreeMap;

use daz_plugin_api::{
    CommandScope, Error, Result, command_line::CommandLimits, routing::valid_name,
};
use serde::{Deserialize, Serialize};

/// The router's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What a command starts with.
    pub prefix: String,
    /// Longest line parsed as a command, in characters.
    pub max_len: usize,
    /// Most arguments a command may have.
    pub max_args: usize,
    /// Lines older than this (by the server's timestamp) are ignored, ms: a bot that
    /// reconnects must not act on commands typed while it was away.
    pub max_age_ms: u64,
    /// Users who pass every rank check and skip cooldowns (case-insensitive).
    pub admins: Vec<String>,
    /// Tell a caller whose rank is too low (at most once per `deny_interval_ms`).
    pub deny_message: bool,
    /// Least time between two refusals told to one user, ms.
    pub deny_interval_ms: u64,
    /// How often the registry is rebuilt from `host.plugins.list`, ms (the
    /// `host.plugin.*` events keep it current in between).
    pub refresh_ms: u64,
    /// How long a `host.*` request may take, ms.
    pub request_timeout_ms: u64,
    /// Per-command changes to what the owning plugin declared, by command name.
    pub overrides: BTreeMap<String, Override>,
    /// Commands the router answers itself with a fixed text, by name.
    pub responses: BTreeMap<String, Response>,
}

impl Default for Config {
    fn default() -> Self {
        let limits = CommandLimits::default();
        Self {
            prefix: "!".to_owned(),
            max_len: limits.max_len,
            max_args: limits.max_args,
            max_age_ms: 60_000,
            admins: Vec::new(),
            deny_message: true,
            deny_interval_ms: 10_000,
            refresh_ms: 60_000,
            request_timeout_ms: 2_000,
            overrides: BTreeMap::new(),
            responses: BTreeMap::new(),
        }
    }
}

/// Where answers to a command go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyTo {
    /// Where the command came from.
    #[default]
    Same,
    /// Always in the channel's chat.
    Chat,
    /// Always by private message.
    Pm,
}

/// Changes to one declared command. Unset fields keep the declaration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Override {
    /// Minimum rank.
    pub min_rank: Option<f64>,
    /// More names for it.
    pub aliases: Vec<String>,
    /// Per-user cooldown, ms.
    pub user_cooldown_ms: Option<u64>,
    /// Channel-wide cooldown, ms.
    pub global_cooldown_ms: Option<u64>,
    /// Chat, PM or both.
    pub scope: Option<CommandScope>,
    /// Where the answers go.
    pub reply: Option<ReplyTo>,
    /// Switch the command off.
    pub disabled: bool,
}

/// A command the router answers with a fixed text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// The answer.
    pub text: String,
    /// One line for `!help`.
    #[serde(default)]
    pub description: String,
    /// Other names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Minimum rank.
    #[serde(default)]
    pub min_rank: f64,
    /// Per-user cooldown, ms.
    #[serde(default)]
    pub user_cooldown_ms: u64,
    /// Channel-wide cooldown, ms.
    #[serde(default)]
    pub global_cooldown_ms: u64,
}

impl Config {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.prefix.is_empty() || self.prefix.chars().any(char::is_whitespace) {
            return Err(Error::config(format!(
                "prefix must be non-empty and without spaces, got {:?}",
                self.prefix
            )));
        }
        if self.max_len == 0 || self.max_args == 0 {
            return Err(Error::config("max_len and max_args must be above 0"));
        }
        if self.refresh_ms < 1_000 {
            return Err(Error::config(format!(
                "refresh_ms must be at least 1000, got {}",
                self.refresh_ms
            )));
        }
        for (name, r) in &self.responses {
            for n in std::iter::once(name).chain(&r.aliases) {
                if !valid_name(n) {
                    return Err(Error::config(format!(
                        "responses.{name}: {n:?} is not a valid command name (one word, no dots \
                         or wildcards, at most 32 characters)"
                    )));
                }
            }
            if r.text.trim().is_empty() {
                return Err(Error::config(format!("responses.{name}: text is empty")));
            }
        }
        for (name, o) in &self.overrides {
            if let Some(bad) = o.aliases.iter().find(|a| !valid_name(a)) {
                return Err(Error::config(format!(
                    "overrides.{name}: alias {bad:?} is not a valid command name"
                )));
            }
        }
        Ok(())
    }

    /// The parsing limits.
    pub fn limits(&self) -> CommandLimits {
        CommandLimits {
            max_len: self.max_len,
            max_args: self.max_args,
        }
    }

    /// Whether `user` is on the admin list.
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a.eq_ignore_ascii_case(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c: Config = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(c.prefix, "!");
        assert_eq!(c.max_age_ms, 60_000);
        assert!(c.deny_message);
        c.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_refused_with_the_key() {
        let c: Config = serde_json::from_value(serde_json::json!({"prefix": ""})).unwrap();
        assert!(c.validate().unwrap_err().message().contains("prefix"));
        let c: Config = serde_json::from_value(serde_json::json!({
            "responses": {"a.b": {"text": "x"}}
        }))
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .contains("responses.a.b")
        );
        let c: Config = serde_json::from_value(serde_json::json!({
            "overrides": {"reload": {"aliases": ["r r"]}}
        }))
        .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .contains("overrides.reload")
        );
        let e = serde_json::from_value::<Config>(serde_json::json!({"prefx": "!"})).unwrap_err();
        assert!(e.to_string().contains("unknown field"));
        let e = serde_json::from_value::<Config>(serde_json::json!({
            "overrides": {"x": {"reply": "email"}}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn admins_match_without_case() {
        let c: Config = serde_json::from_value(serde_json::json!({"admins": ["Alice"]})).unwrap();
        assert!(c.is_admin("alice"));
        assert!(!c.is_admin("bob"));
    }
}
