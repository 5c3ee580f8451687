//! The template plugin: copy this crate to start a new one.
//!
//! It answers one command (`!hello` by default), typed in chat or sent by PM, with a
//! greeting and a running count of how often it has greeted. A chat line it reads
//! itself (so it answers even in a host without the command router); a PM reaches it
//! from the router as `command.<name>` (the router delivers a command declared for
//! chat and PM both ways) and is answered by PM with [`routing::reply`]. The count is the plugin's state: it is handed to
//! the next version on a hot reload, so swapping the `.so` on a live bot does not reset
//! it.
//!
//! `plugins.toml`:
//!
//! ```toml
//! [plugins.example]
//! file = "libdaz_plugin_example.so"
//! [plugins.example.config]
//! command = "hello"       # answered as !hello (the router's prefix is "!")
//! greeting = "Hello"
//! ```

use daz_plugin_api::{
    prelude::*,
    routing::{self, Command, Via},
};
use serde::{Deserialize, Serialize};

/// The plugin instance.
pub struct Example {
    host: Host,
    config: Config,
    greeted: u64,
}

/// The `[plugins.example.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The command answered, without the `!`.
    pub command: String,
    /// The first word of the answer.
    pub greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            command: "hello".to_owned(),
            greeting: "Hello".to_owned(),
        }
    }
}

/// What survives a hot reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// How many greetings so far.
    pub greeted: u64,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// A Cytube `chatMsg` (only the fields this plugin reads).
#[derive(Deserialize)]
struct ChatMsg {
    username: String,
    msg: String,
}

impl Plugin for Example {
    const NAME: &'static str = "example";
    const DESCRIPTION: &'static str = "Answers !hello with a greeting and a running count";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.command.is_empty() || config.command.contains(char::is_whitespace) {
            return Err(Error::config(format!(
                "command must be one word, got {:?}",
                config.command
            )));
        }
        host.subscribe("cytube.in.*.chatMsg")?;
        host.subscribe(&routing::subject(&config.command))?;
        let greeted = previous.map_or(0, |s| s.greeted);
        Ok(Self {
            host,
            config,
            greeted,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec::new(
            "hello",
            "Greets you and says how many greetings came before",
        ))
    }

    fn examples() -> Vec<ChatExample> {
        vec![
            ChatExample::new("!hello", "Hello, alice! (greeting #1)"),
            ChatExample::new("!HELLO there", "Hello, bob!").by("bob"),
            ChatExample::silent("hello"),
            ChatExample::silent("!help"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if event.subject().starts_with(routing::SUBJECT_PREFIX) {
            // Routed by the command router. Chat lines are answered from the chat event
            // below (the router routes them too: answering both would answer twice);
            // a PM only ever arrives this way.
            let cmd = Command::from_event(event)?;
            if cmd.via != Via::Pm || cmd.command != self.config.command {
                return Ok(());
            }
            let line = self.greet(&cmd.username)?;
            routing::reply(&self.host, &cmd, &line)?;
            return Ok(());
        }
        // Never answer the chat backlog replayed on join, nor the bot's own lines.
        if event.is_backlog() || event.is_self() {
            return Ok(());
        }
        let chat: ChatMsg = event.json()?;
        let Ok(command) = parse_command(&chat.msg, "!", CommandLimits::default()) else {
            return Ok(());
        };
        if command.name != self.config.command {
            return Ok(());
        }
        let room = event.room().unwrap_or_default();
        let line = self.greet(&chat.username)?;
        self.host.chat(room, &line)?;
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            greeted: self.greeted,
        }))
    }
}

impl Example {
    /// Counts one greeting and words it.
    fn greet(&mut self, user: &str) -> Result<String> {
        self.greeted += 1;
        self.host
            .counter_add("greetings_total", "Greetings sent", &[], 1.0)?;
        Ok(format!(
            "{}, {user}! (greeting #{})",
            self.config.greeting, self.greeted
        ))
    }
}

export_plugin!(Example);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::testing::Harness;

    #[test]
    fn declared_examples_hold() {
        let failures = Harness::<Example>::check_chat_examples(serde_json::json!({})).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn count_survives_a_reload() {
        let mut h = Harness::<Example>::new(serde_json::json!({"greeting": "Hi"})).unwrap();
        h.chat("lobby", "alice", "!hello").unwrap();
        h.chat("lobby", "bob", "!hello").unwrap();
        h.reload().unwrap();
        h.chat("lobby", "carol", "!hello").unwrap();
        assert_eq!(
            h.chat_replies(),
            vec![
                "Hi, alice! (greeting #1)",
                "Hi, bob! (greeting #2)",
                "Hi, carol! (greeting #3)"
            ]
        );
        assert_eq!(h.metrics()["greetings_total"], 3.0);
    }

    fn routed_hello(h: &mut Harness<Example>, user: &str, via: Via) {
        use daz_plugin_api::routing::testing::{command_for, feed};
        let now = h.now_ms();
        let mut cmd = command_for::<Example>("!hello", user, 0.0, now).unwrap();
        cmd.via = via;
        cmd.reply = via;
        feed(h, &cmd).unwrap();
    }

    /// Regression: `!help` lists `!hello` (declared for chat and PM), but the plugin
    /// read only chat and a PM `!hello` went unanswered.
    #[test]
    fn hello_by_pm_is_answered_by_pm() {
        let mut h = Harness::<Example>::new(serde_json::json!({})).unwrap();
        routed_hello(&mut h, "bob", Via::Pm);
        assert_eq!(h.pm_replies(), vec!["Hello, bob! (greeting #1)"]);
        // A routed chat line is answered once, from the chat event itself.
        routed_hello(&mut h, "bob", Via::Chat);
        assert!(h.chat_replies().is_empty());
        h.chat("lobby", "bob", "!hello").unwrap();
        assert_eq!(h.chat_replies(), vec!["Hello, bob! (greeting #2)"]);
    }

    #[test]
    fn backlog_and_own_messages_are_ignored() {
        let mut h = Harness::<Example>::new(serde_json::json!({})).unwrap();
        let mut ev = h.event(
            "cytube.in.lobby.chatMsg",
            &serde_json::json!({"username": "x", "msg": "!hello", "time": 0}),
        );
        ev.room = "lobby".into();
        ev.tags = vec!["backlog".into()];
        h.feed(&ev).unwrap();
        ev.tags = vec!["self".into()];
        h.feed(&ev).unwrap();
        assert!(h.chat_replies().is_empty());
    }

    #[test]
    fn bad_config_is_refused_with_the_reason() {
        let err = Harness::<Example>::new(serde_json::json!({"command": "two words"}))
            .err()
            .unwrap();
        assert!(err.message().contains("one word"), "{err}");
        let err = Harness::<Example>::new(serde_json::json!({"colour": 1}))
            .err()
            .unwrap();
        assert!(err.message().contains("unknown field"), "{err}");
    }
}
