//! # daz-plugin-usertracker — who is in each room, and who was
//!
//! Follows the Cytube events of every room: sessions (join, leave, AFK time, rank,
//! chat lines), the last time each user was seen, and per-user totals (messages,
//! sessions). Everything is written through the storage plugin to the core tables
//! `user_sessions` and `user_activity`; `!seen <user>` answers from memory and the
//! database. Settings in `README.md` and [`Config`].
//!
//! # Layout
//!
//! * [`model`] — the tracker without I/O: events in, [`model::Write`]s out.
//! * this file — the plugin: event decoding, SQL for each write, flushing, `seen`.
//!
//! # Persistence
//!
//! Writes are queued and flushed every `flush_interval_ms` in one atomic batch (a chat
//! line costs no database round trip). On a hot reload the model and the queued
//! writes go to the next version. After a host restart, the first user list of a room
//! settles the sessions the previous run left open: users still there continue their
//! stay, the others' sessions end at their last activity. The user list the server
//! sends on every (re)join is the ground truth.

pub mod model;

use daz_feature_support::{
    store::Store,
    text, time,
    tracker::{self, Setup, Tracked},
};
use daz_plugin_api::{
    cytube::{ServerEvent, User},
    prelude::*,
    routing::{self, Command},
    sql::Param,
};
use serde::Deserialize;

use crate::model::{Listed, Session, Tracker, Write};

const FLUSH: &str = "usertracker.flush";

/// The `[plugins.usertracker.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often queued writes go to the database, ms.
    pub flush_interval_ms: u64,
    /// Writes kept while the database is away; beyond, the oldest are dropped.
    pub max_pending: usize,
    /// Last-seen entries kept in memory (the database keeps all).
    pub max_remembered: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            flush_interval_ms: 2_000,
            max_pending: 20_000,
            max_remembered: 50_000,
        }
    }
}

/// What a hot reload hands over: the model and the writes not yet in the database.
pub type State = Tracked<Tracker>;

/// The plugin instance.
pub struct UserTracker {
    host: Host,
    config: Config,
    tracker: Tracker,
    store: Store,
}

fn ts(ms: i64) -> Param {
    Param::timestamp_ms(ms)
}

fn listed(u: &User) -> Listed {
    Listed {
        name: u.name.clone(),
        rank: u.rank,
        afk: u.meta.afk,
    }
}

impl UserTracker {
    fn write(&mut self, writes: Vec<Write>) {
        for w in writes {
            match w {
                Write::Open { room, session } => self.store.push(
                    "INSERT INTO user_sessions (room, user_name, rank, joined_at, messages, afk_seconds) \
                     VALUES ($1, $2, $3, $4, 0, 0)",
                    vec![
                        room.into(),
                        session.name.into(),
                        session.rank.into(),
                        ts(session.joined_ms),
                    ],
                ),
                Write::Update { room, session, now } => self.store.push(
                    "UPDATE user_sessions SET rank = $1, last_activity_at = $2, messages = $3, \
                     afk_seconds = $4 WHERE room = $5 AND user_name = $6 AND joined_at = $7 \
                     AND left_at IS NULL",
                    vec![
                        session.rank.into(),
                        session.last_activity_ms.map(ts).unwrap_or(Param::Null),
                        session.messages.into(),
                        session.afk_seconds(now).into(),
                        room.into(),
                        session.name.into(),
                        ts(session.joined_ms),
                    ],
                ),
                Write::Close {
                    room,
                    session,
                    left_ms,
                } => self.store.push(
                    "UPDATE user_sessions SET left_at = $1, rank = $2, last_activity_at = $3, \
                     messages = $4, afk_seconds = $5 WHERE room = $6 AND user_name = $7 \
                     AND joined_at = $8 AND left_at IS NULL",
                    vec![
                        ts(left_ms),
                        session.rank.into(),
                        session.last_activity_ms.map(ts).unwrap_or(Param::Null),
                        session.messages.into(),
                        session.afk_seconds(left_ms).into(),
                        room.into(),
                        session.name.into(),
                        ts(session.joined_ms),
                    ],
                ),
                Write::Discard { room, session } => self.store.push(
                    "DELETE FROM user_sessions WHERE room = $1 AND user_name = $2 \
                     AND joined_at = $3 AND left_at IS NULL",
                    vec![room.into(), session.name.into(), ts(session.joined_ms)],
                ),
                Write::Activity { room, delta } => self.store.push(
                    // Portable upsert (PostgreSQL and SQLite 3.24+): totals add up.
                    "INSERT INTO user_activity (room, user_name, first_seen_at, last_seen_at, \
                     messages, sessions, rank) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (room, user_name) DO UPDATE SET \
                     last_seen_at = excluded.last_seen_at, \
                     messages = user_activity.messages + excluded.messages, \
                     sessions = user_activity.sessions + excluded.sessions, \
                     rank = COALESCE(excluded.rank, user_activity.rank)",
                    vec![
                        room.into(),
                        delta.name.into(),
                        ts(delta.first_ms),
                        ts(delta.last_ms),
                        delta.messages.into(),
                        delta.sessions.into(),
                        delta.rank.into(),
                    ],
                ),
            }
        }
    }

    /// Settles the sessions a previous run left open, for rooms not settled yet.
    fn reconcile(&mut self, room: &str) {
        if !self.store.ready() {
            return;
        }
        let rows = match self.store.query(
            "SELECT user_name, rank, joined_at, last_activity_at, messages, afk_seconds \
             FROM user_sessions WHERE room = $1 AND left_at IS NULL",
            &[room.into()],
        ) {
            Ok(r) => r,
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "cannot read the sessions left open; will try again",
                    &[("room", room), ("error", e.message())],
                );
                return;
            }
        };
        let mut stored = Vec::new();
        for row in rows.iter() {
            let name: String = row.get("user_name").unwrap_or_default();
            let joined = row
                .get::<String>("joined_at")
                .ok()
                .and_then(|t| time::parse_rfc3339_ms(&t));
            let Some(joined) = joined else { continue };
            let mut s = Session::new(
                &name,
                row.get::<Option<f64>>("rank").ok().flatten().unwrap_or(0.0),
                joined,
            );
            s.last_activity_ms = row
                .get::<Option<String>>("last_activity_at")
                .ok()
                .flatten()
                .and_then(|t| time::parse_rfc3339_ms(&t));
            s.messages = row.get::<i64>("messages").unwrap_or(0);
            s.afk_ms = row.get::<i64>("afk_seconds").unwrap_or(0) * 1000;
            stored.push(s);
        }
        let now = self.host.now_ms();
        let writes = self.tracker.reconcile(room, stored, now);
        self.write(writes);
    }

    fn flush(&mut self) {
        let now = self.host.now_ms();
        for room in self.tracker.unreconciled() {
            self.reconcile(&room);
        }
        let writes = self.tracker.drain_activity(now);
        self.write(writes);
        self.store.flush();
        self.tracker.trim_seen(self.config.max_remembered);
        for (room, r) in &self.tracker.rooms {
            let _ = self.host.gauge_set(
                "usertracker_users",
                "Users present, by room",
                &[("room", room)],
                r.sessions.len() as f64,
            );
        }
        let _ = self.host.gauge_set(
            "usertracker_pending_writes",
            "Writes waiting for the database",
            &[],
            self.store.pending_len() as f64,
        );
    }

    fn seen(&mut self, cmd: &Command) -> Result<()> {
        let Some(who) = cmd.args.first() else {
            routing::reply(&self.host, cmd, "Usage: !seen <user>")?;
            return Ok(());
        };
        let now = self.host.now_ms();
        let line = if let Some(s) = self.tracker.present(&cmd.room, who) {
            let afk = if s.afk_since.is_some() { ", AFK" } else { "" };
            format!(
                "{} is here now (for {}{afk}).",
                s.name,
                time::human(now - s.joined_ms)
            )
        } else {
            let memory = self.tracker.last_seen(&cmd.room, who).cloned();
            let stored = self.stored_activity(&cmd.room, who);
            let (name, at, messages) = match (memory, stored) {
                (Some(m), Some((_, at, msgs))) => (m.name, m.at.max(at), Some(msgs)),
                (Some(m), None) => (m.name, m.at, None),
                (None, Some((n, at, msgs))) => (n, at, Some(msgs)),
                (None, None) => {
                    let line = format!("I have not seen {who}.");
                    routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
                    return Ok(());
                }
            };
            match messages {
                Some(m) => format!(
                    "{name} was last seen {} ago ({m} messages).",
                    time::human(now - at)
                ),
                None => format!("{name} was last seen {} ago.", time::human(now - at)),
            }
        };
        routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        Ok(())
    }

    /// `(name, last seen, messages)` from `user_activity`, with what is still queued
    /// added.
    fn stored_activity(&mut self, room: &str, who: &str) -> Option<(String, i64, i64)> {
        if !self.store.ready() {
            return None;
        }
        let rows = self
            .store
            .query(
                "SELECT user_name, last_seen_at, messages FROM user_activity \
                 WHERE room = $1 AND lower(user_name) = lower($2)",
                &[room.into(), who.into()],
            )
            .ok()?;
        let row = rows.row(0)?;
        let name: String = row.get("user_name").ok()?;
        let at = time::parse_rfc3339_ms(&row.get::<String>("last_seen_at").ok()?)?;
        let queued = self
            .tracker
            .activity
            .values()
            .filter(|d| d.name.eq_ignore_ascii_case(who))
            .map(|d| d.messages)
            .sum::<i64>();
        Some((name, at, row.get::<i64>("messages").unwrap_or(0) + queued))
    }

    fn on_cytube(&mut self, event: &Event<'_>, room: &str) -> Result<()> {
        let now = event.timestamp_ms();
        let writes = match event.cytube_event()? {
            ServerEvent::Userlist(users) => {
                // The bot is not a visitor: it is in the list when its login finished
                // first (every rejoin as a guest).
                let me = self.host.room_me(room).ok().and_then(|m| m.name);
                let users: Vec<Listed> = users
                    .iter()
                    .filter(|u| {
                        !me.as_deref()
                            .is_some_and(|m| m.eq_ignore_ascii_case(&u.name))
                    })
                    .map(listed)
                    .collect();
                let w = self.tracker.userlist(room, &users, now);
                self.write(w);
                if self.tracker.rooms.get(room).is_some_and(|r| !r.reconciled) {
                    self.reconcile(room);
                }
                return Ok(());
            }
            // The bot's own arrival and departure (tagged `self` by the host, on every
            // rejoin) are not a visit.
            ServerEvent::AddUser(_) | ServerEvent::UserLeave(_) if event.is_self() => {
                return Ok(());
            }
            ServerEvent::AddUser(user) => self.tracker.join(room, &listed(&user), now),
            ServerEvent::UserLeave(leave) => self.tracker.leave(room, &leave.name, now),
            ServerEvent::SetAfk(afk) => {
                self.tracker.afk(room, &afk.name, afk.afk, now);
                Vec::new()
            }
            ServerEvent::SetUserRank(r) => {
                self.tracker.rank(room, &r.name, r.rank, now);
                Vec::new()
            }
            ServerEvent::ChatMsg(chat) => {
                if event.is_backlog() || event.is_self() || chat.username.starts_with('[') {
                    return Ok(());
                }
                self.tracker.chat(room, &chat.username, now);
                let _ = self.host.counter_add(
                    "usertracker_messages_total",
                    "Chat lines counted, by room",
                    &[("room", room)],
                    1.0,
                );
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.write(writes);
        Ok(())
    }
}

impl Plugin for UserTracker {
    const NAME: &'static str = "usertracker";
    // Its `create` asks the storage plugin for its schema: start after it.
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "Sessions per room (join, leave, AFK, activity), last seen, message counts; !seen";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        let previous = previous.unwrap_or_default();
        let store = tracker::start(
            &host,
            Setup {
                events: &[
                    "userlist",
                    "addUser",
                    "userLeave",
                    "setAFK",
                    "setUserRank",
                    "chatMsg",
                ],
                flush_subject: FLUSH,
                flush_interval_ms: config.flush_interval_ms,
                max_pending: config.max_pending,
                migrations: Vec::new(),
            },
            previous.pending,
        )?;
        host.subscribe("host.room.*.disconnected")?;
        host.subscribe(&routing::subject("seen"))?;
        Ok(UserTracker {
            host,
            config,
            tracker: previous.tracker,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec {
            usage: "<user>".to_owned(),
            aliases: vec!["lastseen".to_owned()],
            user_cooldown_ms: 2_000,
            ..CommandSpec::new("seen", "When a user was last seen in this room")
        })
    }

    fn examples() -> Vec<ChatExample> {
        // Run after `tests::some_history` (bob is here, carol left).
        vec![
            ChatExample::new("!seen", "Usage: !seen <user>"),
            ChatExample::new("!seen BOB", "bob is here now (for 1m 0s)."),
            ChatExample::new("!lastseen carol", "carol was last seen 30s ago."),
            ChatExample::new("!seen dave", "I have not seen dave."),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        // Our requests the host could not deliver: the retry plugin, which subscribes to
        // failure reports, redoes them.
        if routing::is_failure(event) {
            return Ok(());
        }
        let subject = event.subject();
        if subject == FLUSH {
            self.flush();
            return Ok(());
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return self.seen(&cmd);
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        match tokens.as_slice() {
            ["cytube", "in", room, _] => self.on_cytube(event, room),
            ["host", "room", room, "disconnected"] => {
                self.tracker.disconnected(room, event.timestamp_ms());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        // Whatever the database has not taken yet goes to the next version with the
        // model; nothing is written twice or lost.
        let now = self.host.now_ms();
        let writes = self.tracker.drain_activity(now);
        self.write(writes);
        Ok(Some(Tracked::export(self.tracker.clone(), &mut self.store)))
    }

    fn shutdown(&mut self) -> Result<()> {
        let now = self.host.now_ms();
        let writes = self.tracker.drain_activity(now);
        if !writes.is_empty() {
            self.write(writes);
        }
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(UserTracker);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use daz_plugin_api::{
        routing::testing::{ROOM, check_command_examples, command_for, feed},
        testing::Harness,
    };

    /// bob joined a minute ago and is still here; carol joined and left 30 s ago.
    fn some_history(h: &mut Harness<UserTracker>) {
        h.publish(
            &format!("cytube.in.{ROOM}.userlist"),
            &serde_json::json!([{"name": "bob", "rank": 1, "meta": {"afk": false}}]),
        )
        .unwrap();
        h.publish(
            &format!("cytube.in.{ROOM}.addUser"),
            &serde_json::json!({"name": "carol", "rank": 0}),
        )
        .unwrap();
        h.advance(Duration::from_secs(30)).unwrap();
        h.publish(
            &format!("cytube.in.{ROOM}.userLeave"),
            &serde_json::json!({"name": "carol"}),
        )
        .unwrap();
        h.advance(Duration::from_secs(30)).unwrap();
    }

    fn seen(h: &mut Harness<UserTracker>, line: &str) -> String {
        let now = h.now_ms();
        let cmd = command_for::<UserTracker>(line, "alice", 0.0, now).unwrap();
        feed(h, &cmd).unwrap();
        h.chat_replies().last().cloned().unwrap_or_default()
    }

    /// A fake SQL service that records statements and answers the two queries.
    fn sql_service(
        h: &mut Harness<UserTracker>,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let batches = log.clone();
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "sqlite", "connected": true}))
        });
        h.respond("sql.batch", move |req| {
            batches
                .lock()
                .unwrap()
                .extend(req["statements"].as_array().cloned().unwrap_or_default());
            Ok(serde_json::json!({"results": []}))
        });
        h.respond("sql.query", |req| {
            let sql = req["sql"].as_str().unwrap_or_default();
            if sql.contains("FROM user_activity") {
                Ok(serde_json::json!({
                    "columns": [{"name": "user_name", "db_type": "TEXT"}, {"name": "last_seen_at", "db_type": "TEXT"}, {"name": "messages", "db_type": "INTEGER"}],
                    "rows": [["Zed", "2023-11-14T20:13:20.000Z", 41]]
                }))
            } else {
                Ok(serde_json::json!({
                    "columns": [{"name": "user_name", "db_type": "TEXT"}, {"name": "rank", "db_type": "REAL"}, {"name": "joined_at", "db_type": "TEXT"}, {"name": "last_activity_at", "db_type": "TEXT"}, {"name": "messages", "db_type": "INTEGER"}, {"name": "afk_seconds", "db_type": "INTEGER"}],
                    "rows": [["ghost", 0.0, "2023-11-14T00:00:00.000Z", "2023-11-14T01:00:00.000Z", 3, 0]]
                }))
            }
        });
        log
    }

    #[test]
    fn declared_examples_hold() {
        let failures =
            check_command_examples::<UserTracker>(serde_json::json!({}), some_history).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn sessions_and_totals_are_written_in_batches() {
        let mut h = Harness::<UserTracker>::new(serde_json::json!({})).unwrap();
        let log = sql_service(&mut h);
        some_history(&mut h);
        h.chat(ROOM, "bob", "hi").unwrap();
        h.chat(ROOM, "bob", "there").unwrap();
        h.advance(Duration::from_secs(2)).unwrap();
        let stmts = log.lock().unwrap().clone();
        let sql: Vec<&str> = stmts.iter().map(|s| s["sql"].as_str().unwrap()).collect();
        // The stay a previous run left open (ghost) was closed at its last activity.
        let ghost = stmts
            .iter()
            .find(|s| {
                s["sql"].as_str().unwrap().contains("SET left_at")
                    && s["params"][6]["value"] == "ghost"
            })
            .expect("ghost's session closed");
        assert_eq!(ghost["params"][0]["value"], "2023-11-14T01:00:00.000Z");
        assert_eq!(
            sql.iter()
                .filter(|s| s.starts_with("INSERT INTO user_sessions"))
                .count(),
            2
        );
        let carol_closed = stmts
            .iter()
            .find(|s| {
                s["sql"].as_str().unwrap().contains("SET left_at")
                    && s["params"][6]["value"] == "carol"
            })
            .expect("carol's session closed");
        assert_eq!(
            carol_closed["params"][0]["value"],
            serde_json::json!(daz_plugin_api::sql::rfc3339_from_ms(h.now_ms() - 32_000))
        );
        let bob: Vec<&serde_json::Value> = stmts
            .iter()
            .filter(|s| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .starts_with("INSERT INTO user_activity")
                    && s["params"][1]["value"] == "bob"
            })
            .collect();
        let total = |i: usize| {
            bob.iter()
                .map(|s| s["params"][i]["value"].as_i64().unwrap())
                .sum::<i64>()
        };
        assert_eq!(total(4), 2, "two messages");
        assert_eq!(total(5), 1, "one session");
        assert!(
            sql.iter()
                .any(|s| s.starts_with("UPDATE user_sessions SET rank"))
        );
    }

    #[test]
    fn seen_combines_memory_and_the_database() {
        let mut h = Harness::<UserTracker>::new(serde_json::json!({})).unwrap();
        sql_service(&mut h);
        let r = seen(&mut h, "!seen zed");
        assert!(
            r.starts_with("Zed was last seen ") && r.ends_with("(41 messages)."),
            "{r}"
        );
    }

    #[test]
    fn the_model_and_queued_writes_survive_a_reload() {
        let mut h = Harness::<UserTracker>::new(serde_json::json!({})).unwrap();
        some_history(&mut h);
        h.chat(ROOM, "bob", "hi").unwrap();
        let state: serde_json::Value = serde_json::from_slice(&h.export_state().unwrap()).unwrap();
        assert!(
            !state["data"]["pending"].as_array().unwrap().is_empty(),
            "no database: writes wait"
        );
        h.reload().unwrap();
        assert!(seen(&mut h, "!seen bob").starts_with("bob is here now"));
        assert!(seen(&mut h, "!seen carol").starts_with("carol was last seen"));
        // The queued writes went to the new version and reach the database once it answers.
        let log = sql_service(&mut h);
        h.advance(Duration::from_secs(2)).unwrap();
        let n = log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .starts_with("INSERT INTO user_sessions")
            })
            .count();
        assert_eq!(n, 2);
    }

    /// Issue: the bot's own rejoins counted as joins; the bot is not a visitor.
    #[test]
    fn the_bots_own_joins_are_not_visits() {
        let mut h = Harness::<UserTracker>::new(serde_json::json!({})).unwrap();
        let log = sql_service(&mut h);
        h.set_room_state(ROOM, serde_json::json!({"state": {"me": {"name": "DazBot", "logged_in": true, "guest": false, "rank": 2.0}}}));
        for _ in 0..3 {
            // A rejoin: the user list (with the bot when its login finished first),
            // the bot's own addUser (tagged self by the host), and a real visitor.
            h.publish(
                &format!("cytube.in.{ROOM}.userlist"),
                &serde_json::json!([{"name": "dazbot", "rank": 2}, {"name": "bob", "rank": 1}]),
            )
            .unwrap();
            let mut me = h.event(
                &format!("cytube.in.{ROOM}.addUser"),
                &serde_json::json!({"name": "DazBot", "rank": 2}),
            );
            me.tags = vec!["self".into()];
            h.feed(&me).unwrap();
            let mut bye = h.event(
                &format!("cytube.in.{ROOM}.userLeave"),
                &serde_json::json!({"name": "DazBot"}),
            );
            bye.tags = vec!["self".into()];
            h.feed(&bye).unwrap();
        }
        h.advance(Duration::from_secs(2)).unwrap();
        let stmts = log.lock().unwrap().clone();
        let sessions: Vec<String> = stmts
            .iter()
            .filter(|s| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .starts_with("INSERT INTO user_sessions")
            })
            .map(|s| s["params"].to_string().to_lowercase())
            .collect();
        assert!(!sessions.is_empty(), "bob's stay is written: {stmts:?}");
        assert!(
            sessions.iter().all(|p| !p.contains("dazbot")),
            "{sessions:?}"
        );
    }

    #[test]
    fn backlog_and_own_lines_do_not_count() {
        let mut h = Harness::<UserTracker>::new(serde_json::json!({})).unwrap();
        let mut ev = h.event(
            &format!("cytube.in.{ROOM}.chatMsg"),
            &serde_json::json!({"username": "old", "msg": "x", "time": 1}),
        );
        ev.tags = vec!["backlog".into()];
        h.feed(&ev).unwrap();
        assert_eq!(seen(&mut h, "!seen old"), "I have not seen old.");
    }
}
