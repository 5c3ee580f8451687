//! Chat commands as the command router hands them to plugins: the [`Command`] payload
//! published on `command.<name>`, [`reply`] to answer where the command came from, and
//! [`is_failure`] / [`failure_origin`] to tell the host's failure reports apart.
//!
//! The router (the `commands` plugin) reads every chat line and private message, parses
//! the ones that start with its prefix, checks the caller's rank and the cooldowns
//! against what the owning plugin declared in its [`crate::Manifest`], and publishes a
//! [`Command`] on `command.<canonical name>` (also when an alias was typed). A plugin that
//! answers commands subscribes to `command.<name>` for each name it declares:
//!
//! ```
//! use daz_plugin_api::prelude::*;
//! use daz_plugin_api::routing::{self, Command};
//!
//! struct Dice { host: Host }
//! impl Plugin for Dice {
//!     const NAME: &'static str = "dice";
//!     type Config = NoConfig;
//!     type State = NoState;
//!     fn create(host: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
//!         host.subscribe("command.roll")?;
//!         Ok(Dice { host })
//!     }
//!     fn manifest() -> Manifest {
//!         Manifest::default().command(CommandSpec::new("roll", "Rolls a die"))
//!     }
//!     fn examples() -> Vec<ChatExample> {
//!         vec![ChatExample::new("!roll", "alice rolls 4")]
//!     }
//!     fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
//!         // A reply the host could not deliver comes back as `cytube.out.<room>.failed`
//!         // (the retry plugin sees it too and redoes it).
//!         if routing::is_failure(event) {
//!             return Ok(());
//!         }
//!         let cmd = Command::from_event(event)?;
//!         routing::reply(&self.host, &cmd, &format!("{} rolls 4", cmd.username))?;
//!         Ok(())
//!     }
//! }
//!
//! // The examples go through a small in-process router (feature `testing`):
//! let failures = routing::testing::check_command_examples::<Dice>(serde_json::json!({}), |_| {}).unwrap();
//! assert!(failures.is_empty(), "{failures:?}");
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Event, Host, Message, Priority, Published, Result};

/// Prefix of the subjects the router publishes commands on.
pub const SUBJECT_PREFIX: &str = "command.";

/// The subject a command is published on: `command.<name>`.
pub fn subject(name: &str) -> String {
    format!("{SUBJECT_PREFIX}{name}")
}

/// Whether `name` can be a command name: it must be one subject token (no dots, no
/// whitespace, no wildcards), at most 32 characters, and not empty.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 32
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>'))
}

/// Where a command came from, or where its answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The channel's chat.
    #[default]
    Chat,
    /// A private message to the bot.
    Pm,
}

impl Via {
    /// `chat` or `pm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Chat => "chat",
            Via::Pm => "pm",
        }
    }
}

/// The payload of `command.<name>`: one command a user typed, parsed and allowed.
///
/// The field names follow Cytube's own payloads (`username`, `msg`, `time`) so that the
/// storage plugin's event log fills its user and message columns for command events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The canonical command name (the declared name, also when an alias was typed).
    pub command: String,
    /// The name as typed, lowercased (the name or one of its aliases).
    pub invoked: String,
    /// The arguments, quotes removed (`!seen "some one"` → `["some one"]`).
    pub args: Vec<String>,
    /// Everything after the name, trimmed, as typed.
    pub rest: String,
    /// Who typed it.
    pub username: String,
    /// The caller's channel rank from the live room state (0 guest, 1 registered, 2
    /// moderator, 3 channel admin, …); 0 when the user is not in the user list.
    pub rank: f64,
    /// The caller is on the router's admin list.
    #[serde(default)]
    pub admin: bool,
    /// The room (bus name) it was typed in.
    pub room: String,
    /// Chat or private message.
    pub via: Via,
    /// Where the answer should go (the router's per-command setting; by default where
    /// the command came from).
    pub reply: Via,
    /// The whole line, HTML-unescaped.
    pub msg: String,
    /// When the server accepted the line, unix ms.
    pub time: i64,
    /// The id of the chat or PM event it came from.
    #[serde(default)]
    pub event_id: String,
}

impl Command {
    /// Decodes a `command.<name>` event.
    pub fn from_event(event: &Event<'_>) -> Result<Command> {
        serde_json::from_slice(event.payload()).map_err(|e| {
            Error::msg(format!(
                "{} from {} is not a command payload ({e}); it should come from the commands \
                 router",
                event.subject(),
                event.source()
            ))
        })
    }

    /// The rank the caller acts with: admins on the router's list count as owners (rank
    /// 5 and above pass every check).
    pub fn effective_rank(&self) -> f64 {
        if self.admin {
            self.rank.max(ADMIN_RANK)
        } else {
            self.rank
        }
    }

    /// The message to publish for this command.
    pub fn to_message(&self) -> Result<Message> {
        Ok(Message::new(subject(&self.command), self)?
            .room(self.room.clone())
            .priority(Priority::High)
            .correlation_id(self.event_id.clone()))
    }
}

/// The rank an admin on the router's list acts with.
pub const ADMIN_RANK: f64 = 255.0;

/// Answers a command where [`Command::reply`] says: in the room's chat, or by private
/// message to the caller. The host's governor splits text longer than 320 characters.
pub fn reply(host: &Host, cmd: &Command, text: &str) -> Result<Published> {
    match cmd.reply {
        Via::Chat => host.chat(&cmd.room, text),
        Via::Pm => host.pm(&cmd.room, &cmd.username, text),
    }
}

/// Whether an event is a failure report (`<…>.failed`).
///
/// The host publishes `cytube.out.<room>.failed` when it cannot deliver a request
/// (`{original: {event, subject, payload, source, id, correlation_id}, reason, code,
/// part, parts}`). Every subscriber of a matching pattern receives it — the retry plugin
/// subscribes to `cytube.out.*.failed` and redoes the operation — and so does the plugin
/// whose request failed, once, whether or not it subscribes to failure subjects.
/// Nothing needs forwarding: a plugin that receives a failure report may simply ignore
/// it.
pub fn is_failure(event: &Event<'_>) -> bool {
    event.subject().ends_with(".failed")
}

/// The plugin whose request a failure report is about (`original.source`), or `None`
/// when `event` is not a failure report or carries no origin. A plugin that subscribes to
/// failure subjects but only cares about its own requests compares it with
/// [`Host::plugin_name`].
pub fn failure_origin(event: &Event<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct Report {
        original: Original,
    }
    #[derive(Deserialize)]
    struct Original {
        source: String,
    }
    if !is_failure(event) {
        return None;
    }
    serde_json::from_slice::<Report>(event.payload())
        .ok()
        .map(|r| r.original.source)
}

/// Running a command plugin's [`crate::Plugin::examples`] through a small in-process
/// router (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing {
    use super::{Command, Via, subject};
    use crate::{
        Plugin, Result,
        command_line::{CommandLimits, parse_command},
        testing::Harness,
    };

    /// The room examples are typed in.
    pub const ROOM: &str = "testroom";

    /// Builds the [`Command`] the router would publish for `line` typed by `user` with
    /// `rank`, if `line` names one of `P`'s declared commands (by name or alias).
    pub fn command_for<P: Plugin>(line: &str, user: &str, rank: f64, now: i64) -> Option<Command> {
        let parsed = parse_command(line, "!", CommandLimits::default()).ok()?;
        let spec = P::manifest()
            .commands
            .into_iter()
            .find(|s| s.name == parsed.name || s.aliases.contains(&parsed.name))?;
        Some(Command {
            command: spec.name,
            invoked: parsed.name,
            args: parsed.args,
            rest: parsed.rest,
            username: user.to_owned(),
            rank,
            admin: false,
            room: ROOM.to_owned(),
            via: Via::Chat,
            reply: Via::Chat,
            msg: line.to_owned(),
            time: now,
            event_id: String::new(),
        })
    }

    /// Publishes `cmd` to the plugin in the harness, as the router would.
    pub fn feed<P: Plugin>(h: &mut Harness<P>, cmd: &Command) -> Result<bool> {
        h.publish(&subject(&cmd.command), cmd)
    }

    /// Runs `P`'s examples: for each, a fresh harness (prepared by `setup`, e.g. to
    /// register responders for the requests the plugin makes), the example's line turned
    /// into a command as the router would (lines that are not one of `P`'s commands
    /// reach nobody, as with the router), and the replies checked — in chat when typed
    /// in chat, and again by PM when the command's scope allows PMs (the router routes
    /// a PM command the same way and the answer goes back by PM). The caller has rank 0:
    /// rank checks are the router's job, so the plugin answers anyway. Also fails for
    /// every declared command the plugin does not subscribe to. Returns a description of
    /// every failure (empty when all pass).
    pub fn check_command_examples<P: Plugin>(
        config: serde_json::Value,
        setup: impl Fn(&mut Harness<P>),
    ) -> Result<Vec<String>> {
        let mut failures = {
            let mut h = Harness::<P>::new(config.clone())?;
            setup(&mut h);
            crate::testing::undelivered_commands(&h)
        };
        let manifest = P::manifest();
        for example in P::examples() {
            for via in [Via::Chat, Via::Pm] {
                let mut h = Harness::<P>::new(config.clone())?;
                setup(&mut h);
                h.take_published();
                let now = h.now_ms();
                let cmd = command_for::<P>(&example.chat, &example.user, 0.0, now);
                let scope = cmd.as_ref().and_then(|c| {
                    manifest
                        .commands
                        .iter()
                        .find(|s| s.name == c.command)
                        .map(|s| s.scope)
                });
                let allowed = match (scope, via) {
                    (Some(crate::CommandScope::Both), _) => true,
                    (Some(crate::CommandScope::Chat), v) => v == Via::Chat,
                    (Some(crate::CommandScope::Pm), v) => v == Via::Pm,
                    // Not a command: the router routes nothing, whichever way it came.
                    (None, v) => v == Via::Chat,
                };
                if !allowed {
                    continue;
                }
                if let Some(mut cmd) = cmd {
                    cmd.via = via;
                    cmd.reply = via;
                    if let Err(e) = feed(&mut h, &cmd) {
                        failures.push(format!(
                            "example {:?} by {}: the plugin failed: {e}",
                            example.chat,
                            via.as_str()
                        ));
                        continue;
                    }
                }
                let replies = match via {
                    Via::Chat => h.chat_replies(),
                    Via::Pm => h.pm_replies(),
                };
                failures.extend(
                    crate::testing::example_failure(&example, &replies)
                        .map(|f| format!("{f} (by {})", via.as_str())),
                );
            }
        }
        Ok(failures)
    }

    /// The former name of [`check_command_examples`], kept for plugins
    /// written against SDK 0.1.
    #[doc(hidden)]
    pub fn run_examples<P: Plugin>(
        config: serde_json::Value,
        setup: impl Fn(&mut Harness<P>),
    ) -> Result<Vec<String>> {
        check_command_examples(config, setup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoConfig, NoState, Plugin, testing::Harness};

    #[test]
    fn command_names_must_be_one_subject_token() {
        assert!(valid_name("seen"));
        assert!(valid_name("np2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a.b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("*"));
        assert!(!valid_name(&"x".repeat(33)));
    }

    #[test]
    fn payload_round_trips_with_cytube_field_names() {
        let cmd = Command {
            command: "seen".into(),
            invoked: "lastseen".into(),
            args: vec!["bob".into()],
            rest: "bob".into(),
            username: "alice".into(),
            rank: 2.0,
            admin: false,
            room: "lobby".into(),
            via: Via::Pm,
            reply: Via::Pm,
            msg: "!lastseen bob".into(),
            time: 5,
            event_id: "e1".into(),
        };
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["username"], "alice");
        assert_eq!(json["via"], "pm");
        assert_eq!(json["msg"], "!lastseen bob");
        let back: Command = serde_json::from_value(json).unwrap();
        assert_eq!(back, cmd);
        let m = cmd.to_message().unwrap();
        assert_eq!(m.subject(), "command.seen");
    }

    #[test]
    fn admins_act_with_the_highest_rank() {
        let mut cmd: Command = serde_json::from_value(serde_json::json!({
            "command": "x", "invoked": "x", "args": [], "rest": "", "username": "a",
            "rank": 1.0, "room": "r", "via": "chat", "reply": "chat", "msg": "!x", "time": 0
        }))
        .unwrap();
        assert_eq!(cmd.effective_rank(), 1.0);
        cmd.admin = true;
        assert_eq!(cmd.effective_rank(), ADMIN_RANK);
    }

    #[test]
    fn failure_reports_name_their_origin() {
        let mut h = Harness::<NoopPlugin>::new(serde_json::json!({})).unwrap();
        let ev = h.event(
            "cytube.out.lobby.failed",
            &serde_json::json!({"original": {"event": "chatMsg", "source": "dice"}, "code": "cooldown"}),
        );
        ev.with_event(|e| {
            assert!(is_failure(&e));
            assert_eq!(failure_origin(&e).as_deref(), Some("dice"));
        });
        let ev = h.event("cytube.out.lobby.failed", &serde_json::json!({"code": "x"}));
        ev.with_event(|e| assert_eq!(failure_origin(&e), None));
        let ev = h.event(
            "cytube.in.lobby.chatMsg",
            &serde_json::json!({"original": {"source": "dice"}}),
        );
        ev.with_event(|e| {
            assert!(!is_failure(&e));
            assert_eq!(failure_origin(&e), None);
        });
    }

    /// The shape of the `!hello` bug: a command declared for chat and PM, answered by
    /// reading raw chat. The routed examples must report it.
    struct RawChatGreeter {
        host: Host,
    }
    impl Plugin for RawChatGreeter {
        const NAME: &'static str = "rawgreeter";
        type Config = NoConfig;
        type State = NoState;
        fn create(host: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
            host.subscribe("cytube.in.*.chatMsg")?;
            Ok(RawChatGreeter { host })
        }
        fn manifest() -> crate::Manifest {
            crate::Manifest::default().command(crate::CommandSpec::new("hi", "Greets"))
        }
        fn examples() -> Vec<crate::ChatExample> {
            vec![crate::ChatExample::new("!hi", "hi there")]
        }
        fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
            // Answers whatever reaches it, in chat, as a raw-chat reader does.
            self.host
                .chat(event.room().unwrap_or_default(), "hi there")?;
            Ok(())
        }
    }

    #[cfg(feature = "testing")]
    #[test]
    fn a_declared_command_answered_from_raw_chat_fails_the_contract() {
        let failures =
            testing::run_examples::<RawChatGreeter>(serde_json::json!({}), |_| {}).unwrap();
        assert!(
            failures
                .iter()
                .any(|f| f.contains("does not subscribe to command.hi")),
            "{failures:#?}"
        );
        assert!(
            failures.iter().any(|f| f.contains("(by pm)")),
            "the PM run expects a PM answer: {failures:#?}"
        );
    }

    struct NoopPlugin;
    impl Plugin for NoopPlugin {
        const NAME: &'static str = "noop";
        type Config = NoConfig;
        type State = NoState;
        fn create(_: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
            Ok(NoopPlugin)
        }
        fn on_event(&mut self, _: &Event<'_>) -> Result<()> {
            Ok(())
        }
    }
}
