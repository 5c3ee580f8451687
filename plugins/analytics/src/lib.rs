//! # daz-plugin-analytics — hourly and daily numbers per room
//!
//! Computes, per room, for each hour and each day: chat messages, unique chatters,
//! joins, media plays and commands used. The numbers come from the storage plugin's
//! event log (`event_log`), so they cover every run of the bot and any plugin mix; they
//! are kept in the plugin's tables `analytics_hourly` and `analytics_daily`, exposed as
//! metrics (`daz_plugin_analytics_*{room, window}`), answered on the bus
//! (`analytics.summary`, used by `!stats`) and in chat (`!activity`).
//!
//! What is counted (rows of `event_log` by `event`, in the window, without the
//! `backlog`, `self` and `repeat` tags): `chatMsg` → messages and chatters (distinct
//! lowercase names; not the pseudo-users `[server]`, `[voteskip]`), `addUser` → joins
//! (the host tags the bot's own `addUser`, on every rejoin, `self`: the bot is not a
//! visitor), `changeMedia` → plays (the host tags `repeat` the `changeMedia` the server
//! repeats on every rejoin of the bot for the play still in progress, at `currentTime`
//! 0 again for live media: a play is counted once), subjects `command.*` → commands.
//! The storage plugin logs chat, joins, media and commands (`command.>`) by default;
//! custom storage rules must keep a rule for `command.>` (see `README.md`).
//!
//! Every `refresh_ms` the current and previous hour and the current and previous day
//! of every known room are recomputed (idempotent upserts: late rows are picked up, a
//! restart loses nothing). Rooms become known from `host.room.*` events, user lists,
//! the configuration and the rows already stored.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use daz_feature_support::{store::Store, text, time};
use daz_plugin_api::{
    TAG_BACKLOG, TAG_REPEAT, TAG_SELF,
    prelude::*,
    routing::{self, Command},
    sql::{Dialect, Migration, Param, Statement},
};
use serde::{Deserialize, Serialize};

const REFRESH: &str = "analytics.refresh";
/// Subject of the summary request.
pub const SUMMARY: &str = "analytics.summary";

/// The `[plugins.analytics.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often the aggregates are recomputed, ms.
    pub refresh_ms: u64,
    /// Where hours and days begin: minutes east of UTC.
    pub utc_offset_minutes: i64,
    /// Rooms to aggregate even before any event names them.
    pub rooms: Vec<String>,
    /// Writes kept while the database is away.
    pub max_pending: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            refresh_ms: 60_000,
            utc_offset_minutes: 0,
            rooms: Vec::new(),
            max_pending: 5_000,
        }
    }
}

/// One window's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Chat messages.
    pub messages: i64,
    /// Distinct chatters.
    pub chatters: i64,
    /// Users who joined.
    pub joins: i64,
    /// Media plays.
    pub plays: i64,
    /// Commands used.
    pub commands: i64,
}

/// The `analytics.summary` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Room.
    pub room: String,
    /// Start of the current hour (unix ms).
    pub hour_start_ms: i64,
    /// The current hour.
    pub hour: Counts,
    /// Start of the current day (unix ms).
    pub day_start_ms: i64,
    /// The current day.
    pub day: Counts,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Rooms known.
    pub rooms: BTreeSet<String>,
    /// The last summary per room (the metrics' values).
    pub last: BTreeMap<String, Summary>,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// The plugin's own tables.
pub fn migrations() -> Vec<Migration> {
    let table = |name: &str, start: &str, ts: &str| {
        format!(
            "CREATE TABLE {name} (
                room        TEXT NOT NULL,
                {start}     {ts} NOT NULL,
                messages    BIGINT NOT NULL,
                chatters    BIGINT NOT NULL,
                joins       BIGINT NOT NULL,
                plays       BIGINT NOT NULL,
                commands    BIGINT NOT NULL,
                computed_at {ts} NOT NULL,
                PRIMARY KEY (room, {start})
            );"
        )
    };
    let both = |ts: &str| {
        format!(
            "{}\n{}",
            table("analytics_hourly", "hour_start", ts),
            table("analytics_daily", "day_start", ts)
        )
    };
    vec![Migration::new(
        1,
        "hourly and daily aggregates",
        both("TIMESTAMPTZ"),
        both("TEXT"),
    )]
}

/// The plugin instance.
pub struct Analytics {
    host: Host,
    config: Config,
    store: Store,
    rooms: BTreeSet<String>,
    last: BTreeMap<String, Summary>,
    /// Rooms already read back from the tables this run.
    loaded_rooms: bool,
}

/// The aggregate query for a dialect: `$1` room, `$2`..`$3` the window.
fn aggregate_sql(dialect: Dialect) -> String {
    // Backlog replays, the bot's own lines and arrivals, and what the server repeats on
    // the bot's rejoins are not activity. Tags are a text array on PostgreSQL and a JSON
    // array in text on SQLite.
    let not_tagged = [TAG_BACKLOG, TAG_SELF, TAG_REPEAT]
        .iter()
        .map(|t| match dialect {
            Dialect::Postgres => format!("NOT ('{t}' = ANY(tags))"),
            Dialect::Sqlite => format!("tags NOT LIKE '%\"{t}\"%'"),
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    // Lines of Cytube's pseudo-users (`[server]` whispers to moderators: "X joined",
    // "X kicked Y"; `[voteskip]`) are nobody's chat. Real names never start with `[`.
    let chat = "event = 'chatMsg' AND COALESCE(user_name, '') NOT LIKE '[%'";
    format!(
        "SELECT \
         COALESCE(SUM(CASE WHEN {chat} THEN 1 ELSE 0 END), 0) AS messages, \
         COUNT(DISTINCT CASE WHEN {chat} THEN lower(user_name) END) AS chatters, \
         COALESCE(SUM(CASE WHEN event = 'addUser' THEN 1 ELSE 0 END), 0) AS joins, \
         COALESCE(SUM(CASE WHEN event = 'changeMedia' THEN 1 ELSE 0 END), 0) AS plays, \
         COALESCE(SUM(CASE WHEN subject LIKE 'command.%' THEN 1 ELSE 0 END), 0) AS commands \
         FROM event_log WHERE room = $1 AND received_at >= $2 AND received_at < $3 AND {not_tagged}"
    )
}

impl Analytics {
    fn offset_ms(&self) -> i64 {
        self.config.utc_offset_minutes * 60_000
    }

    fn count(&mut self, room: &str, from: i64, to: i64) -> Result<Counts> {
        let Some(dialect) = self.store.dialect() else {
            bail!("the SQL service is not available; is the storage plugin loaded?");
        };
        let rows = self.store.query(
            &aggregate_sql(dialect),
            &[
                room.into(),
                Param::timestamp_ms(from),
                Param::timestamp_ms(to),
            ],
        )?;
        let Some(row) = rows.row(0) else {
            return Ok(Counts::default());
        };
        Ok(Counts {
            messages: row.get("messages")?,
            chatters: row.get("chatters")?,
            joins: row.get("joins")?,
            plays: row.get("plays")?,
            commands: row.get("commands")?,
        })
    }

    fn upsert(
        &mut self,
        table: &str,
        start_col: &str,
        room: &str,
        start: i64,
        c: Counts,
        now: i64,
    ) {
        self.store.push(
            &format!(
                "INSERT INTO {table} (room, {start_col}, messages, chatters, joins, plays, commands, computed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (room, {start_col}) DO UPDATE SET messages = excluded.messages, \
                 chatters = excluded.chatters, joins = excluded.joins, plays = excluded.plays, \
                 commands = excluded.commands, computed_at = excluded.computed_at"
            ),
            vec![
                room.into(),
                Param::timestamp_ms(start),
                c.messages.into(),
                c.chatters.into(),
                c.joins.into(),
                c.plays.into(),
                c.commands.into(),
                Param::timestamp_ms(now),
            ],
        );
    }

    /// Computes the current hour and day of `room` (and, with `previous`, the hour and
    /// day before), stores them and updates the metrics.
    fn compute(&mut self, room: &str, previous: bool) -> Result<Summary> {
        let now = self.host.now_ms();
        let off = self.offset_ms();
        let hour = time::floor(now, time::HOUR_MS, off);
        let day = time::floor(now, time::DAY_MS, off);
        let h = self.count(room, hour, hour + time::HOUR_MS)?;
        let d = self.count(room, day, day + time::DAY_MS)?;
        self.upsert("analytics_hourly", "hour_start", room, hour, h, now);
        self.upsert("analytics_daily", "day_start", room, day, d, now);
        if previous {
            let ph = self.count(room, hour - time::HOUR_MS, hour)?;
            self.upsert(
                "analytics_hourly",
                "hour_start",
                room,
                hour - time::HOUR_MS,
                ph,
                now,
            );
            let pd = self.count(room, day - time::DAY_MS, day)?;
            self.upsert(
                "analytics_daily",
                "day_start",
                room,
                day - time::DAY_MS,
                pd,
                now,
            );
        }
        let summary = Summary {
            room: room.to_owned(),
            hour_start_ms: hour,
            hour: h,
            day_start_ms: day,
            day: d,
        };
        for (window, c) in [("hour", h), ("day", d)] {
            for (name, help, v) in [
                (
                    "analytics_messages",
                    "Chat messages in the current window",
                    c.messages,
                ),
                (
                    "analytics_chatters",
                    "Distinct chatters in the current window",
                    c.chatters,
                ),
                ("analytics_joins", "Joins in the current window", c.joins),
                (
                    "analytics_plays",
                    "Media plays in the current window",
                    c.plays,
                ),
                (
                    "analytics_commands",
                    "Commands used in the current window",
                    c.commands,
                ),
            ] {
                let _ = self.host.gauge_set(
                    name,
                    help,
                    &[("room", room), ("window", window)],
                    v as f64,
                );
            }
        }
        self.last.insert(room.to_owned(), summary.clone());
        Ok(summary)
    }

    fn learn_room(&mut self, room: &str) {
        if !room.is_empty() && !self.rooms.contains(room) {
            self.rooms.insert(room.to_owned());
        }
    }

    fn refresh(&mut self) {
        if !self.store.ready() {
            return;
        }
        if !self.loaded_rooms {
            match self
                .store
                .query("SELECT DISTINCT room FROM analytics_daily", &[])
            {
                Ok(rows) => {
                    for r in rows.iter() {
                        if let Ok(room) = r.get::<String>("room") {
                            self.learn_room(&room);
                        }
                    }
                    self.loaded_rooms = true;
                }
                Err(e) => self.host.log(
                    Level::Warn,
                    "cannot read the rooms already aggregated",
                    &[("error", e.message())],
                ),
            }
        }
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        for room in rooms {
            if let Err(e) = self.compute(&room, true) {
                self.host.log(
                    Level::Warn,
                    "aggregating the event log failed; will try again",
                    &[("room", &room), ("error", e.message())],
                );
                break;
            }
        }
        self.store.flush();
    }

    fn summary(&mut self, room: &str) -> Result<Summary> {
        self.learn_room(room);
        if !self.store.ready() {
            bail!("the event log is not available (is the storage plugin loaded?)");
        }
        let s = self.compute(room, false)?;
        self.store.flush();
        Ok(s)
    }

    fn activity(&mut self, cmd: &Command) -> Result<()> {
        let line = match self.summary(&cmd.room) {
            Ok(s) => format!(
                "This hour: {} messages from {} chatters, {} joins. Today: {} messages from {} chatters, {} joins, {} plays, {} commands.",
                s.hour.messages,
                s.hour.chatters,
                s.hour.joins,
                s.day.messages,
                s.day.chatters,
                s.day.joins,
                s.day.plays,
                s.day.commands
            ),
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "activity: no numbers",
                    &[("error", e.message())],
                );
                "The numbers are not available right now.".to_owned()
            }
        };
        routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        Ok(())
    }
}

impl Plugin for Analytics {
    const NAME: &'static str = "analytics";
    // Its `create` asks the storage plugin for its schema: start after it.
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str = "Hourly and daily aggregates per room from the event log; metrics, analytics.summary, !activity";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.refresh_ms < 1_000 {
            return Err(Error::config(format!(
                "refresh_ms must be at least 1000, got {}",
                config.refresh_ms
            )));
        }
        if config.utc_offset_minutes.abs() > 14 * 60 {
            return Err(Error::config(format!(
                "utc_offset_minutes must be within ±840, got {}",
                config.utc_offset_minutes
            )));
        }
        host.subscribe("host.room.*.*")?;
        host.subscribe("cytube.in.*.userlist")?;
        host.subscribe(SUMMARY)?;
        host.subscribe(&routing::subject("activity"))?;
        host.timer_once(REFRESH, &serde_json::json!({}), Duration::ZERO)?;
        host.timer_every(
            REFRESH,
            &serde_json::json!({}),
            Duration::from_millis(config.refresh_ms),
        )?;
        let previous = previous.unwrap_or_default();
        let mut rooms = previous.rooms;
        rooms.extend(config.rooms.iter().cloned());
        let store = Store::new(
            host.clone(),
            migrations(),
            config.max_pending,
            previous.pending,
        );
        Ok(Analytics {
            host,
            config,
            store,
            rooms,
            last: previous.last,
            loaded_rooms: false,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec {
            aliases: vec!["today".to_owned()],
            user_cooldown_ms: 10_000,
            ..CommandSpec::new(
                "activity",
                "This hour's and today's messages, chatters, joins, plays and commands",
            )
        })
    }

    fn examples() -> Vec<ChatExample> {
        // Run with `tests::event_log` answering the queries.
        vec![
            ChatExample::new(
                "!activity",
                "This hour: 7 messages from 2 chatters, 1 joins. Today: 7 messages from 2 chatters, 1 joins, 3 plays, 4 commands.",
            ),
            ChatExample::new("!today", "Today: 7 messages"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        // Our requests the host could not deliver: the retry plugin, which subscribes to
        // failure reports, redoes them.
        if routing::is_failure(event) {
            return Ok(());
        }
        let subject = event.subject();
        if subject == REFRESH {
            self.refresh();
            return Ok(());
        }
        if subject == SUMMARY {
            #[derive(Deserialize)]
            struct Req {
                room: String,
            }
            let req: Req = match event.json() {
                Ok(r) => r,
                Err(e) => return self.host.reply_error(event, e.message()),
            };
            return match self.summary(&req.room) {
                Ok(s) => self.host.reply(event, &s),
                Err(e) => self.host.reply_error(event, e.message()),
            };
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return self.activity(&cmd);
        }
        let tokens: Vec<&str> = subject.split('.').collect();
        if let ["host", "room", room, _] | ["cytube", "in", room, _] = tokens.as_slice() {
            self.learn_room(room);
        }
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            rooms: self.rooms.clone(),
            last: self.last.clone(),
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Analytics);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{
        routing::testing::{ROOM, check_command_examples, command_for, feed},
        testing::Harness,
    };
    use std::sync::{Arc, Mutex};

    /// A fake SQL service whose event log holds 7 chat lines by 2 people, a join, 3
    /// plays and 4 commands today (all in the current hour). Returns the statements
    /// and queries it saw.
    fn event_log(h: &mut Harness<Analytics>) -> Arc<Mutex<Vec<serde_json::Value>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (q, b) = (seen.clone(), seen.clone());
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "postgres", "connected": true}))
        });
        h.respond("sql.migrate", |_| {
            Ok(serde_json::json!({"dialect": "postgres", "applied": [1], "current": 1}))
        });
        h.respond("sql.query", move |req| {
            q.lock().unwrap().push(req.clone());
            let sql = req["sql"].as_str().unwrap_or_default();
            if sql.contains("DISTINCT room") {
                return Ok(serde_json::json!({"columns": [{"name": "room", "db_type": "TEXT"}], "rows": [["archived"]]}));
            }
            let cols: Vec<serde_json::Value> = ["messages", "chatters", "joins", "plays", "commands"]
                .iter()
                .map(|c| serde_json::json!({"name": c, "db_type": "INT8"}))
                .collect();
            Ok(serde_json::json!({"columns": cols, "rows": [[7, 2, 1, 3, 4]]}))
        });
        h.respond("sql.batch", move |req| {
            b.lock()
                .unwrap()
                .extend(req["statements"].as_array().cloned().unwrap_or_default());
            Ok(serde_json::json!({"results": []}))
        });
        seen
    }

    #[test]
    fn declared_examples_hold() {
        let failures = check_command_examples::<Analytics>(serde_json::json!({}), |h| {
            event_log(h);
        })
        .unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn every_known_room_is_aggregated_and_stored() {
        let mut h = Harness::<Analytics>::new(serde_json::json!({"rooms": ["lobby"]})).unwrap();
        let seen = event_log(&mut h);
        h.publish("host.room.second.joined", &serde_json::json!({}))
            .unwrap();
        assert_eq!(h.advance(Duration::ZERO).unwrap(), 1);
        let seen = seen.lock().unwrap().clone();
        let windows: Vec<(String, String)> = seen
            .iter()
            .filter(|s| s["sql"].as_str().unwrap().contains("FROM event_log"))
            .map(|s| {
                (
                    s["params"][0]["value"].as_str().unwrap().to_owned(),
                    s["params"][1]["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        // archived (from the stored rows), lobby (config), second (lifecycle event):
        // four windows each.
        assert_eq!(windows.len(), 12, "{windows:?}");
        assert!(windows.iter().any(|(r, _)| r == "archived"));
        // The current hour of the fake clock (2023-11-14T22:13:20Z).
        assert!(windows.contains(&("lobby".into(), "2023-11-14T22:00:00.000Z".into())));
        assert!(windows.contains(&("lobby".into(), "2023-11-13T00:00:00.000Z".into())));
        let upserts = seen
            .iter()
            .filter(|s| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .starts_with("INSERT INTO analytics_")
            })
            .count();
        assert_eq!(upserts, 12);
        let sql = seen
            .iter()
            .find(|s| s["sql"].as_str().unwrap().contains("FROM event_log"))
            .unwrap()["sql"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(sql.contains("ANY(tags)"), "postgres tag filter: {sql}");
        let m = h.metrics();
        assert_eq!(m["analytics_messages,room=lobby,window=day"], 7.0);
        assert_eq!(m["analytics_chatters,room=second,window=hour"], 2.0);
    }

    #[test]
    fn the_summary_request_is_answered_or_refused_with_the_reason() {
        let mut h = Harness::<Analytics>::new(serde_json::json!({})).unwrap();
        let r = h
            .request(SUMMARY, &serde_json::json!({"room": ROOM}))
            .unwrap()
            .unwrap();
        assert!(r.is_error);
        assert!(
            r.payload["error"]
                .as_str()
                .unwrap()
                .contains("storage plugin"),
            "{r:?}"
        );
        event_log(&mut h);
        let r = h
            .request(SUMMARY, &serde_json::json!({"room": ROOM}))
            .unwrap()
            .unwrap();
        let s: Summary = serde_json::from_value(r.payload).unwrap();
        assert_eq!(s.day.commands, 4);
        assert_eq!(s.hour_start_ms % time::HOUR_MS, 0);
    }

    #[test]
    fn sqlite_filters_tags_in_json_text() {
        let sql = aggregate_sql(Dialect::Sqlite);
        assert!(sql.contains(r#"tags NOT LIKE '%"backlog"%'"#), "{sql}");
        // Issue: plays grew on every rejoin of the bot (the repeated changeMedia).
        assert!(sql.contains(r#"tags NOT LIKE '%"repeat"%'"#), "{sql}");
        // The [server] whispers a moderator bot gets on every join are nobody's chat.
        assert!(sql.contains("NOT LIKE '[%'"), "{sql}");
        let pg = aggregate_sql(Dialect::Postgres);
        assert!(pg.contains("NOT ('repeat' = ANY(tags))"), "{pg}");
    }

    #[test]
    fn rooms_and_metrics_survive_a_reload() {
        let mut h = Harness::<Analytics>::new(serde_json::json!({})).unwrap();
        h.publish("cytube.in.lobby.userlist", &serde_json::json!([]))
            .unwrap();
        h.reload().unwrap();
        let state: serde_json::Value = serde_json::from_slice(&h.export_state().unwrap()).unwrap();
        assert_eq!(state["data"]["rooms"], serde_json::json!(["lobby"]));
        let now = h.now_ms();
        let cmd = command_for::<Analytics>("!activity", "a", 0.0, now).unwrap();
        feed(&mut h, &cmd).unwrap();
        assert_eq!(
            h.chat_replies().last().unwrap(),
            "The numbers are not available right now."
        );
    }
}
