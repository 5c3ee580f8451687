//! # daz-plugin-greeter — greets users who join
//!
//! A user who joins a room is greeted with the `first_time` template the first time the
//! bot sees them there, and with `returning` afterwards — at most once per
//! `cooldown_ms`. Only `addUser` greets: the user list the bot receives when it (re)joins
//! greets nobody, nor does the bot's own arrival, so reconnects and the join backlog stay
//! quiet. Users opt out (and back in) with `!greet off` / `!greet on`. Who was greeted
//! when, and who opted out, live in the plugin's table `greeter_users`; the cache and
//! the writes not yet in the database go to the next version on a hot reload. Settings
//! in `README.md` and [`Config`].

use std::collections::BTreeMap;

use daz_feature_support::{store::Store, text};
use daz_plugin_api::{
    cytube::ServerEvent,
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Statement},
};
use serde::{Deserialize, Serialize};

const FLUSH: &str = "greeter.flush";

/// The `[plugins.greeter.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The greeting for someone the bot never saw here; `{user}` is their name.
    pub first_time: String,
    /// The greeting for someone coming back.
    pub returning: String,
    /// The least time between two greetings of one user, ms.
    pub cooldown_ms: i64,
    /// Greet guests (rank 0) too.
    pub greet_guests: bool,
    /// How often writes go to the database, ms.
    pub flush_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            first_time: "Welcome to the channel, {user}!".to_owned(),
            returning: "Welcome back, {user}!".to_owned(),
            cooldown_ms: 6 * 3_600_000,
            greet_guests: true,
            flush_interval_ms: 2_000,
        }
    }
}

/// What the plugin knows of one user in one room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Known {
    /// Last greeted, ms (0: never).
    pub greeted_ms: i64,
    /// Asked not to be greeted.
    pub opted_out: bool,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Users by `room\0lowercase name`.
    pub known: BTreeMap<String, Known>,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

fn migrations() -> Vec<Migration> {
    vec![Migration::both(
        1,
        "greeted users",
        "CREATE TABLE greeter_users (room TEXT NOT NULL, user_name TEXT NOT NULL, \
         greeted_ms BIGINT NOT NULL, opted_out BOOLEAN NOT NULL, PRIMARY KEY (room, user_name))",
    )]
}

fn key(room: &str, name: &str) -> String {
    format!("{room}\0{}", name.to_lowercase())
}

/// The plugin instance.
pub struct Greeter {
    host: Host,
    config: Config,
    known: BTreeMap<String, Known>,
    store: Store,
}

impl Greeter {
    /// The user's record: from memory, else from the database (`None` when never seen).
    fn lookup(&mut self, room: &str, name: &str) -> Option<Known> {
        if let Some(k) = self.known.get(&key(room, name)) {
            return Some(*k);
        }
        let rows = self
            .store
            .query(
                "SELECT greeted_ms, opted_out FROM greeter_users WHERE room = $1 AND user_name = $2",
                &[room.into(), name.to_lowercase().into()],
            )
            .ok()?;
        let row = rows.row(0)?;
        let k = Known {
            greeted_ms: row.get("greeted_ms").unwrap_or(0),
            opted_out: row
                .value("opted_out")
                .is_some_and(|v| v == &serde_json::json!(true) || v == &serde_json::json!(1)),
        };
        self.known.insert(key(room, name), k);
        Some(k)
    }

    fn remember(&mut self, room: &str, name: &str, k: Known) {
        self.known.insert(key(room, name), k);
        self.store.push(
            "INSERT INTO greeter_users (room, user_name, greeted_ms, opted_out) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room, user_name) DO UPDATE SET greeted_ms = excluded.greeted_ms, \
             opted_out = excluded.opted_out",
            vec![
                room.into(),
                name.to_lowercase().into(),
                k.greeted_ms.into(),
                k.opted_out.into(),
            ],
        );
    }

    fn joined(&mut self, room: &str, name: &str, rank: f64, now: i64) -> Result<()> {
        if rank < 0.0 || (rank < 1.0 && !self.config.greet_guests) {
            return Ok(());
        }
        let me = self.host.room_me(room).ok().and_then(|m| m.name);
        if me.is_some_and(|m| m.eq_ignore_ascii_case(name)) {
            return Ok(());
        }
        let known = self.lookup(room, name);
        let template = match known {
            Some(k) if k.opted_out => return Ok(()),
            Some(k) if k.greeted_ms > 0 && now - k.greeted_ms < self.config.cooldown_ms => {
                return Ok(());
            }
            Some(k) if k.greeted_ms > 0 => self.config.returning.clone(),
            _ => self.config.first_time.clone(),
        };
        let line = template.replace("{user}", name);
        self.host.chat(room, &text::fit(&line, text::MAX_CHAT))?;
        self.remember(
            room,
            name,
            Known {
                greeted_ms: now,
                opted_out: false,
            },
        );
        Ok(())
    }

    fn greet_command(&mut self, cmd: &Command) -> Result<()> {
        let choice = cmd.args.first().map(|s| s.to_lowercase());
        let mut k = self.lookup(&cmd.room, &cmd.username).unwrap_or_default();
        let line = match choice.as_deref() {
            Some("off" | "no" | "stop") => {
                k.opted_out = true;
                self.remember(&cmd.room, &cmd.username, k);
                format!("OK {}, no more greetings.", cmd.username)
            }
            Some("on" | "yes") => {
                k.opted_out = false;
                self.remember(&cmd.room, &cmd.username, k);
                format!("OK {}, I'll greet you again.", cmd.username)
            }
            _ => format!(
                "Greetings are {} for you. Usage: !greet off | on",
                if k.opted_out { "off" } else { "on" }
            ),
        };
        self.store.flush();
        routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        Ok(())
    }
}

impl Plugin for Greeter {
    const NAME: &'static str = "greeter";
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "Greets first-time and returning users; cooldown; !greet off to opt out";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.flush_interval_ms == 0 || config.cooldown_ms < 0 {
            return Err(Error::config(
                "flush_interval_ms must be above 0 and cooldown_ms not negative",
            ));
        }
        for (name, t) in [
            ("first_time", &config.first_time),
            ("returning", &config.returning),
        ] {
            if t.trim().is_empty() || t.chars().count() > 250 {
                return Err(Error::config(format!(
                    "{name} must be 1–250 characters ({{user}} is the name)"
                )));
            }
        }
        let previous = previous.unwrap_or_default();
        host.subscribe("cytube.in.*.addUser")?;
        host.subscribe(&routing::subject("greet"))?;
        host.timer_every(
            FLUSH,
            &serde_json::json!({}),
            std::time::Duration::from_millis(config.flush_interval_ms),
        )?;
        let store = Store::new(host.clone(), migrations(), 10_000, previous.pending);
        Ok(Greeter {
            host,
            config,
            known: previous.known,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec {
            usage: "off | on".to_owned(),
            aliases: vec!["greeting".to_owned()],
            user_cooldown_ms: 2_000,
            ..CommandSpec::new("greet", "Turn the greeting you get on joining off or on")
        })
    }

    fn examples() -> Vec<ChatExample> {
        vec![
            ChatExample::new("!greet off", "OK alice, no more greetings."),
            ChatExample::new("!greet on", "OK alice, I'll greet you again."),
            ChatExample::new("!greet", "Greetings are on for you."),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if routing::is_failure(event) {
            return Ok(());
        }
        let subject = event.subject();
        if subject == FLUSH {
            self.store.flush();
            return Ok(());
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return self.greet_command(&cmd);
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        if let ["cytube", "in", room, _] = tokens.as_slice()
            && !event.is_backlog()
            && let ServerEvent::AddUser(u) = event.cytube_event()?
        {
            let now = self.host.now_ms();
            self.joined(room, &u.name, u.rank, now)?;
        }
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            known: self.known.clone(),
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Greeter);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use daz_plugin_api::{routing::testing::check_command_examples, testing::Harness};
    use serde_json::json;

    use super::*;

    const ROOM: &str = "lobby";

    fn join(h: &mut Harness<Greeter>, name: &str, rank: f64) {
        h.publish(
            &format!("cytube.in.{ROOM}.addUser"),
            &json!({"name": name, "rank": rank}),
        )
        .unwrap();
    }

    fn harness(config: serde_json::Value) -> Harness<Greeter> {
        let mut h = Harness::<Greeter>::new(config).unwrap();
        h.set_room_state(ROOM, json!({"state": {"me": {"name": "bot", "rank": 2}}}));
        h
    }

    #[test]
    fn chat_examples() {
        let failures = check_command_examples::<Greeter>(json!({}), |_| {}).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn first_time_then_returning_after_the_cooldown() {
        let mut h = harness(json!({"cooldown_ms": 60_000}));
        join(&mut h, "Bob", 1.0);
        join(&mut h, "bob", 1.0);
        h.advance(Duration::from_secs(61)).unwrap();
        join(&mut h, "bob", 1.0);
        join(&mut h, "bot", 2.0);
        assert_eq!(
            h.chat_replies(),
            vec!["Welcome to the channel, Bob!", "Welcome back, bob!"]
        );
    }

    #[test]
    fn opt_out_and_guests_and_reload() {
        let mut h = harness(json!({"cooldown_ms": 0, "greet_guests": false}));
        join(&mut h, "guest1", 0.0);
        assert!(h.chat_replies().is_empty());
        let cmd =
            daz_plugin_api::routing::testing::command_for::<Greeter>("!greet off", "carol", 1.0, 0)
                .unwrap();
        // The room in the command is the test room; use it for the joins too.
        let room = cmd.room.clone();
        daz_plugin_api::routing::testing::feed(&mut h, &cmd).unwrap();
        h.reload().unwrap();
        h.publish(
            &format!("cytube.in.{room}.addUser"),
            &json!({"name": "carol", "rank": 1}),
        )
        .unwrap();
        assert_eq!(h.chat_replies(), vec!["OK carol, no more greetings."]);
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Harness::<Greeter>::new(json!({"first_time": ""})).is_err());
        assert!(Harness::<Greeter>::new(json!({"cooldown_ms": -1})).is_err());
    }

    #[test]
    fn the_default_configuration_starts() {
        Harness::<Greeter>::new(daz_testkit::default_config("greeter")).unwrap();
    }
}
