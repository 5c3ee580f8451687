//! # daz-plugin-tell — `!tell` and `!remind`
//!
//! `!tell <user> <message>` keeps a message for a user and delivers it in the room the
//! next time that user chats or joins. `!remind <in 10m | at 21:00> <text>` tells the
//! caller the text when the time comes (or, if they are away then, as soon as they are
//! back). Both are kept in the plugin's own tables through the storage plugin, handed to
//! the next version on a hot reload and read back after a restart; per-user limits keep
//! them bounded. Settings in `README.md` and [`Config`].
//!
//! # Layout
//!
//! * [`when`] — parsing `in 10m` / `at 21:00`.
//! * this file — the plugin: commands, delivery, the SQL.

pub mod when;

use daz_feature_support::{store::Store, text, time};
use daz_plugin_api::{
    cytube::ServerEvent,
    prelude::*,
    routing::{self, Command, Via},
    sql::{Migration, Param, Statement},
};
use serde::{Deserialize, Serialize};

const TICK: &str = "tell.tick";

/// The `[plugins.tell.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Messages one user may have waiting for others, per room.
    pub max_tells_per_sender: usize,
    /// Messages one user may have waiting for them, per room.
    pub max_tells_per_recipient: usize,
    /// Reminders one user may have waiting, per room.
    pub max_reminders_per_user: usize,
    /// Longest message or reminder text, in characters.
    pub max_text_chars: usize,
    /// How far ahead a reminder may be set, ms.
    pub max_ahead_ms: i64,
    /// The clock `at 21:00` is read in, minutes east of UTC.
    pub utc_offset_minutes: i32,
    /// Deliver `!tell` messages by PM instead of in the room's chat.
    pub deliver_by_pm: bool,
    /// How often due reminders are looked for and writes go to the database, ms.
    pub tick_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_tells_per_sender: 5,
            max_tells_per_recipient: 20,
            max_reminders_per_user: 10,
            max_text_chars: 300,
            max_ahead_ms: 30 * 86_400_000,
            utc_offset_minutes: 0,
            deliver_by_pm: false,
            tick_ms: 1_000,
        }
    }
}

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// Unique id (the command's event id).
    pub id: String,
    /// The room.
    pub room: String,
    /// Who left it.
    pub from: String,
    /// For whom.
    pub to: String,
    /// The message.
    pub text: String,
    /// When it was left, ms.
    pub created_ms: i64,
}

/// A reminder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reminder {
    /// Unique id.
    pub id: String,
    /// The room.
    pub room: String,
    /// For whom.
    pub user: String,
    /// The text.
    pub text: String,
    /// When it is due, ms.
    pub due_ms: i64,
    /// Set by PM: delivered by PM.
    pub by_pm: bool,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Messages not delivered.
    pub notes: Vec<Note>,
    /// Reminders not delivered.
    pub reminders: Vec<Reminder>,
    /// The database's undelivered rows were read.
    pub loaded: bool,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
    /// For ids when a command carries no event id.
    pub seq: u64,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

fn migrations() -> Vec<Migration> {
    let table = |ts: &str| {
        format!(
            "CREATE TABLE tell_messages (id TEXT PRIMARY KEY, room TEXT NOT NULL, \
             sender TEXT NOT NULL, recipient TEXT NOT NULL, message TEXT NOT NULL, \
             created_at {ts} NOT NULL, delivered_at {ts});\
             CREATE INDEX tell_messages_waiting ON tell_messages (delivered_at);\
             CREATE TABLE tell_reminders (id TEXT PRIMARY KEY, room TEXT NOT NULL, \
             user_name TEXT NOT NULL, message TEXT NOT NULL, by_pm BOOLEAN NOT NULL, \
             due_at {ts} NOT NULL, created_at {ts} NOT NULL, delivered_at {ts});\
             CREATE INDEX tell_reminders_waiting ON tell_reminders (delivered_at);"
        )
    };
    vec![Migration::new(
        1,
        "messages and reminders",
        table("TIMESTAMPTZ"),
        table("TEXT"),
    )]
}

/// A valid Cytube user name.
fn valid_user(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The plugin instance.
pub struct Tell {
    host: Host,
    config: Config,
    notes: Vec<Note>,
    reminders: Vec<Reminder>,
    loaded: bool,
    seq: u64,
    store: Store,
}

impl Tell {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    fn new_id(&mut self, cmd: &Command) -> String {
        if cmd.event_id.is_empty() {
            self.seq += 1;
            format!("{}-{}-{}", self.host.now_ms(), cmd.username, self.seq)
        } else {
            cmd.event_id.clone()
        }
    }

    /// Reads what the database still holds undelivered (after a restart).
    fn load(&mut self) {
        if self.loaded || !self.store.ready() {
            return;
        }
        let notes = self.store.query(
            "SELECT id, room, sender, recipient, message, created_at FROM tell_messages \
             WHERE delivered_at IS NULL ORDER BY created_at",
            &[],
        );
        let reminders = self.store.query(
            "SELECT id, room, user_name, message, by_pm, due_at FROM tell_reminders \
             WHERE delivered_at IS NULL ORDER BY due_at",
            &[],
        );
        let (notes, reminders) = match (notes, reminders) {
            (Ok(n), Ok(r)) => (n, r),
            (Err(e), _) | (_, Err(e)) => {
                self.host.log(
                    Level::Warn,
                    "cannot read the waiting messages; will try again",
                    &[("error", e.message())],
                );
                return;
            }
        };
        for row in notes.iter() {
            let id: String = row.get("id").unwrap_or_default();
            if id.is_empty() || self.notes.iter().any(|n| n.id == id) {
                continue;
            }
            self.notes.push(Note {
                id,
                room: row.get("room").unwrap_or_default(),
                from: row.get("sender").unwrap_or_default(),
                to: row.get("recipient").unwrap_or_default(),
                text: row.get("message").unwrap_or_default(),
                created_ms: row
                    .get::<String>("created_at")
                    .ok()
                    .and_then(|t| time::parse_rfc3339_ms(&t))
                    .unwrap_or(0),
            });
        }
        for row in reminders.iter() {
            let id: String = row.get("id").unwrap_or_default();
            if id.is_empty() || self.reminders.iter().any(|r| r.id == id) {
                continue;
            }
            let by_pm = row
                .value("by_pm")
                .is_some_and(|v| v == &serde_json::json!(true) || v == &serde_json::json!(1));
            self.reminders.push(Reminder {
                id,
                room: row.get("room").unwrap_or_default(),
                user: row.get("user_name").unwrap_or_default(),
                text: row.get("message").unwrap_or_default(),
                due_ms: row
                    .get::<String>("due_at")
                    .ok()
                    .and_then(|t| time::parse_rfc3339_ms(&t))
                    .unwrap_or(0),
                by_pm,
            });
        }
        self.loaded = true;
    }

    fn tell(&mut self, cmd: &Command) -> Result<()> {
        let usage = "Usage: !tell <user> <message>";
        let (Some(to), Some(_)) = (cmd.args.first(), cmd.args.get(1)) else {
            return self.reply(cmd, usage);
        };
        if !valid_user(to) {
            return self.reply(
                cmd,
                "That is not a user name (1–20 letters, digits, _ or -).",
            );
        }
        if to.eq_ignore_ascii_case(&cmd.username) {
            return self.reply(cmd, "You can tell yourself that.");
        }
        if self
            .host
            .room_me(&cmd.room)
            .ok()
            .and_then(|me| me.name)
            .is_some_and(|me| me.eq_ignore_ascii_case(to))
        {
            return self.reply(cmd, "I heard you.");
        }
        // The message as typed, after the name.
        let message = cmd
            .rest
            .trim_start()
            .split_once(char::is_whitespace)
            .map_or("", |(_, m)| m.trim());
        let chars = message.chars().count();
        if chars > self.config.max_text_chars {
            return self.reply(
                cmd,
                &format!(
                    "That message is {chars} characters long; the most is {}.",
                    self.config.max_text_chars
                ),
            );
        }
        let from_sender = self
            .notes
            .iter()
            .filter(|n| n.room == cmd.room && n.from.eq_ignore_ascii_case(&cmd.username))
            .count();
        if from_sender >= self.config.max_tells_per_sender {
            return self.reply(
                cmd,
                &format!(
                    "You have {from_sender} messages waiting to be delivered, the most allowed."
                ),
            );
        }
        let for_recipient = self
            .notes
            .iter()
            .filter(|n| n.room == cmd.room && n.to.eq_ignore_ascii_case(to))
            .count();
        if for_recipient >= self.config.max_tells_per_recipient {
            return self.reply(cmd, &format!("{to} has too many messages waiting."));
        }
        let note = Note {
            id: self.new_id(cmd),
            room: cmd.room.clone(),
            from: cmd.username.clone(),
            to: to.clone(),
            text: message.to_owned(),
            created_ms: cmd.time,
        };
        self.store.push(
            "INSERT INTO tell_messages (id, room, sender, recipient, message, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                note.id.clone().into(),
                note.room.clone().into(),
                note.from.clone().into(),
                note.to.clone().into(),
                note.text.clone().into(),
                Param::timestamp_ms(note.created_ms),
            ],
        );
        self.store.flush();
        self.notes.push(note);
        self.reply(cmd, &format!("I'll tell {to} when they next chat or join."))
    }

    fn remind(&mut self, cmd: &Command) -> Result<()> {
        let now = self.host.now_ms();
        let (due, text) = match when::parse(
            &cmd.rest,
            now,
            self.config.utc_offset_minutes,
            self.config.max_ahead_ms,
        ) {
            Ok(v) => v,
            Err(why) => {
                return self.reply(
                    cmd,
                    &format!("Sorry, {why}. Usage: !remind <in 10m | at 21:00> <text>"),
                );
            }
        };
        let chars = text.chars().count();
        if chars > self.config.max_text_chars {
            return self.reply(
                cmd,
                &format!(
                    "That reminder is {chars} characters long; the most is {}.",
                    self.config.max_text_chars
                ),
            );
        }
        let mine = self
            .reminders
            .iter()
            .filter(|r| r.room == cmd.room && r.user.eq_ignore_ascii_case(&cmd.username))
            .count();
        if mine >= self.config.max_reminders_per_user {
            return self.reply(
                cmd,
                &format!("You have {mine} reminders waiting, the most allowed."),
            );
        }
        let r = Reminder {
            id: self.new_id(cmd),
            room: cmd.room.clone(),
            user: cmd.username.clone(),
            text,
            due_ms: due,
            by_pm: cmd.via == Via::Pm,
        };
        self.store.push(
            "INSERT INTO tell_reminders (id, room, user_name, message, by_pm, due_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                r.id.clone().into(),
                r.room.clone().into(),
                r.user.clone().into(),
                r.text.clone().into(),
                r.by_pm.into(),
                Param::timestamp_ms(r.due_ms),
                Param::timestamp_ms(now),
            ],
        );
        self.store.flush();
        self.reminders.push(r);
        self.reply(
            cmd,
            &format!(
                "OK {}, I'll remind you in {}.",
                cmd.username,
                time::human(due - now + 999)
            ),
        )
    }

    /// Delivers the messages waiting for `user` in `room`.
    fn deliver_notes(&mut self, room: &str, user: &str, now: i64) -> Result<()> {
        let (mine, rest): (Vec<Note>, Vec<Note>) = std::mem::take(&mut self.notes)
            .into_iter()
            .partition(|n| n.room == room && n.to.eq_ignore_ascii_case(user));
        self.notes = rest;
        for n in mine {
            let line = format!(
                "{user}, {} said {} ago: {}",
                n.from,
                time::human(now - n.created_ms),
                n.text
            );
            let line = text::fit(&line, text::MAX_CHAT);
            if self.config.deliver_by_pm {
                self.host.pm(room, user, &line)?;
            } else {
                self.host.chat(room, &line)?;
            }
            self.store.push(
                "UPDATE tell_messages SET delivered_at = $1 WHERE id = $2",
                vec![Param::timestamp_ms(now), n.id.into()],
            );
        }
        Ok(())
    }

    /// Delivers the due reminders of users who are present (all of them, or only
    /// `only` when it is given: a user who just came back).
    fn deliver_reminders(&mut self, now: i64, only: Option<(&str, &str)>) -> Result<()> {
        let mut kept = Vec::new();
        for r in std::mem::take(&mut self.reminders) {
            let due = r.due_ms <= now;
            let here = match only {
                Some((room, user)) => r.room == room && r.user.eq_ignore_ascii_case(user),
                None => matches!(self.host.room_user(&r.room, &r.user), Ok(Some(_))),
            };
            if !(due && here) {
                kept.push(r);
                continue;
            }
            let late = now - r.due_ms;
            let line = if late > 60_000 {
                format!(
                    "{}, reminder (due {} ago): {}",
                    r.user,
                    time::human(late),
                    r.text
                )
            } else {
                format!("{}, reminder: {}", r.user, r.text)
            };
            let line = text::fit(&line, text::MAX_CHAT);
            let sent = if r.by_pm {
                self.host.pm(&r.room, &r.user, &line)
            } else {
                self.host.chat(&r.room, &line)
            };
            if let Err(e) = sent {
                self.host.log(
                    Level::Warn,
                    "cannot deliver a reminder; will try again",
                    &[("error", e.message())],
                );
                kept.push(r);
                continue;
            }
            self.store.push(
                "UPDATE tell_reminders SET delivered_at = $1 WHERE id = $2",
                vec![Param::timestamp_ms(now), r.id.into()],
            );
        }
        self.reminders = kept;
        Ok(())
    }

    fn tick(&mut self) -> Result<()> {
        self.load();
        let now = self.host.now_ms();
        self.deliver_reminders(now, None)?;
        self.store.flush();
        let _ = self.host.gauge_set(
            "tell_waiting",
            "Messages and reminders waiting",
            &[],
            (self.notes.len() + self.reminders.len()) as f64,
        );
        Ok(())
    }

    fn on_cytube(&mut self, event: &Event<'_>, room: &str) -> Result<()> {
        let now = self.host.now_ms();
        let user = match event.cytube_event()? {
            ServerEvent::AddUser(u) => u.name,
            ServerEvent::ChatMsg(chat) => {
                if event.is_backlog() || event.is_self() || chat.username.starts_with('[') {
                    return Ok(());
                }
                chat.username
            }
            _ => return Ok(()),
        };
        self.deliver_notes(room, &user, now)?;
        self.deliver_reminders(now, Some((room, &user)))?;
        Ok(())
    }
}

impl Plugin for Tell {
    const NAME: &'static str = "tell";
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "Messages for absent users (!tell) and reminders (!remind), kept across restarts";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.tick_ms == 0 {
            return Err(Error::config("tick_ms must be above 0"));
        }
        if config.max_ahead_ms < 1_000 {
            return Err(Error::config("max_ahead_ms must be at least 1000"));
        }
        if !(-14 * 60..=14 * 60).contains(&config.utc_offset_minutes) {
            return Err(Error::config(
                "utc_offset_minutes must be between -840 and 840",
            ));
        }
        let previous = previous.unwrap_or_default();
        host.subscribe("cytube.in.*.addUser")?;
        host.subscribe("cytube.in.*.chatMsg")?;
        host.subscribe(&routing::subject("tell"))?;
        host.subscribe(&routing::subject("remind"))?;
        host.timer_every(
            TICK,
            &serde_json::json!({}),
            std::time::Duration::from_millis(config.tick_ms),
        )?;
        let store = Store::new(host.clone(), migrations(), 10_000, previous.pending);
        Ok(Tell {
            host,
            config,
            notes: previous.notes,
            reminders: previous.reminders,
            loaded: previous.loaded,
            seq: previous.seq,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                usage: "<user> <message>".to_owned(),
                user_cooldown_ms: 2_000,
                ..CommandSpec::new(
                    "tell",
                    "Leave a message for a user, delivered when they are back",
                )
            })
            .command(CommandSpec {
                usage: "<in 10m | at 21:00> <text>".to_owned(),
                aliases: vec!["remindme".to_owned()],
                user_cooldown_ms: 2_000,
                ..CommandSpec::new("remind", "Remind you of something later")
            })
    }

    fn examples() -> Vec<ChatExample> {
        vec![
            ChatExample::new(
                "!tell bob the film starts at 9",
                "I'll tell bob when they next chat or join.",
            ),
            ChatExample::new("!tell bob", "Usage: !tell <user> <message>"),
            ChatExample::new("!tell <b>bob</b> hi", "That is not a user name"),
            ChatExample::new("!tell alice hi", "You can tell yourself that."),
            ChatExample::new("!remind in 10m tea", "OK alice, I'll remind you in 10m 0s."),
            ChatExample::new("!remind at 21:00 film", "OK alice, I'll remind you in"),
            ChatExample::new(
                "!remind in 10 parsecs tea",
                "Sorry, I don't understand the time \"10\"",
            ),
            ChatExample::new("!remind at 25:61 x", "is not a time of day"),
            ChatExample::new("!remind in 90d x", "too far ahead"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if routing::is_failure(event) {
            return Ok(());
        }
        let subject = event.subject();
        if subject == TICK {
            return self.tick();
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return match cmd.command.as_str() {
                "tell" => self.tell(&cmd),
                "remind" => self.remind(&cmd),
                _ => Ok(()),
            };
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            ["cytube", "in", room, _] => self.on_cytube(event, room),
            _ => Ok(()),
        }
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            notes: self.notes.clone(),
            reminders: self.reminders.clone(),
            loaded: self.loaded,
            pending: self.store.hand_over(),
            seq: self.seq,
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Tell);

#[cfg(test)]
mod tests;
