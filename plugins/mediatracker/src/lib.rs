//! # daz-plugin-mediatracker — what plays, who queued it, how much was watched
//!
//! Follows each room's playlist and playback: plays (start, end, seconds watched,
//! completed at 90 % or more) go to the core table `media_plays`; every `queue` and
//! `delete` goes to the plugin's own `mediatracker_queue` (queue history: who queued
//! what, when, and when it left the playlist). `!np` tells what is playing; `!stats`
//! tells today's numbers: the media part from here, the chat part from the analytics
//! plugin (`analytics.summary`) when it runs. Settings in `README.md` and [`Config`].
//!
//! # Layout
//!
//! * [`model`] — playlist, plays and today's counts without I/O.
//! * this file — the plugin: event decoding, SQL, `!np`, `!stats`.

pub mod model;

use std::time::Duration;

use daz_feature_support::{
    store::Store,
    text, time,
    tracker::{self, Setup, Tracked},
};
use daz_plugin_api::cytube::{PlaylistItem, ServerEvent};
use daz_plugin_api::{
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Param},
};
use serde::Deserialize;

use crate::model::{Item, Media, Tracker, Write};

const FLUSH: &str = "mediatracker.flush";

/// The `[plugins.mediatracker.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often queued writes go to the database, ms.
    pub flush_interval_ms: u64,
    /// Writes kept while the database is away.
    pub max_pending: usize,
    /// Where "today" begins: minutes east of UTC.
    pub utc_offset_minutes: i64,
    /// How long `!stats` waits for the analytics plugin, ms.
    pub analytics_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            flush_interval_ms: 2_000,
            max_pending: 20_000,
            utc_offset_minutes: 0,
            analytics_timeout_ms: 2_000,
        }
    }
}

/// What a hot reload hands over: the model and the writes not yet in the database.
pub type State = Tracked<Tracker>;

/// The plugin's own tables.
pub fn migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "queue history",
        "CREATE TABLE mediatracker_queue (
            id         BIGSERIAL PRIMARY KEY,
            room       TEXT NOT NULL,
            uid        BIGINT NOT NULL,
            media_id   TEXT NOT NULL,
            media_type TEXT NOT NULL,
            title      TEXT,
            seconds    BIGINT,
            queued_by  TEXT,
            temp       BOOLEAN NOT NULL DEFAULT FALSE,
            queued_at  TIMESTAMPTZ NOT NULL,
            removed_at TIMESTAMPTZ
        );
        CREATE INDEX mediatracker_queue_room_time ON mediatracker_queue (room, queued_at);
        CREATE INDEX mediatracker_queue_by ON mediatracker_queue (room, queued_by);",
        "CREATE TABLE mediatracker_queue (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            room       TEXT NOT NULL,
            uid        INTEGER NOT NULL,
            media_id   TEXT NOT NULL,
            media_type TEXT NOT NULL,
            title      TEXT,
            seconds    INTEGER,
            queued_by  TEXT,
            temp       INTEGER NOT NULL DEFAULT 0,
            queued_at  TEXT NOT NULL,
            removed_at TEXT
        );
        CREATE INDEX mediatracker_queue_room_time ON mediatracker_queue (room, queued_at);
        CREATE INDEX mediatracker_queue_by ON mediatracker_queue (room, queued_by);",
    )]
}

/// The plugin instance.
pub struct MediaTracker {
    host: Host,
    config: Config,
    tracker: Tracker,
    store: Store,
}

fn ts(ms: i64) -> Param {
    Param::timestamp_ms(ms)
}

fn media_of(m: &daz_plugin_api::cytube::Media) -> Media {
    Media {
        id: m.id.clone(),
        kind: m.media_type.clone(),
        title: m.title.clone(),
        seconds: m.seconds,
    }
}

fn item_of(i: &PlaylistItem) -> Item {
    Item {
        media: media_of(&i.media),
        queued_by: i.queueby.clone(),
        temp: i.temp,
    }
}

/// Today's chat numbers from the analytics plugin.
#[derive(Debug, Deserialize)]
struct Summary {
    day: Counts,
}

#[derive(Debug, Deserialize)]
struct Counts {
    messages: i64,
    chatters: i64,
    joins: i64,
    commands: i64,
}

impl MediaTracker {
    fn day_ms(&self, now: i64) -> i64 {
        time::floor(now, time::DAY_MS, self.config.utc_offset_minutes * 60_000)
    }

    fn write(&mut self, writes: Vec<Write>) {
        for w in writes {
            match w {
                Write::PlayStarted { room, play } => self.store.push(
                    "INSERT INTO media_plays (room, media_id, media_type, title, seconds, \
                     queued_by, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    vec![
                        room.into(),
                        play.media.id.into(),
                        play.media.kind.into(),
                        play.media.title.into(),
                        (play.media.seconds.round() as i64).into(),
                        play.queued_by.into(),
                        ts(play.started_ms),
                    ],
                ),
                Write::PlayEnded {
                    room,
                    play,
                    ended_ms,
                    watched,
                    completed,
                } => self.store.push(
                    "UPDATE media_plays SET ended_at = $1, watched_seconds = $2, completed = $3 \
                     WHERE room = $4 AND media_type = $5 AND media_id = $6 AND started_at = $7 \
                     AND ended_at IS NULL",
                    vec![
                        ts(ended_ms),
                        watched.into(),
                        completed.into(),
                        room.into(),
                        play.media.kind.into(),
                        play.media.id.into(),
                        ts(play.started_ms),
                    ],
                ),
                Write::Queued {
                    room,
                    uid,
                    item,
                    at,
                } => self.store.push(
                    "INSERT INTO mediatracker_queue (room, uid, media_id, media_type, title, \
                     seconds, queued_by, temp, queued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    vec![
                        room.into(),
                        Param::Int(i64::try_from(uid).unwrap_or(i64::MAX)),
                        item.media.id.into(),
                        item.media.kind.into(),
                        item.media.title.into(),
                        (item.media.seconds.round() as i64).into(),
                        item.queued_by.into(),
                        item.temp.into(),
                        ts(at),
                    ],
                ),
                Write::Removed { room, uid, at } => self.store.push(
                    "UPDATE mediatracker_queue SET removed_at = $1 WHERE room = $2 AND uid = $3 \
                     AND removed_at IS NULL",
                    vec![
                        ts(at),
                        room.into(),
                        Param::Int(i64::try_from(uid).unwrap_or(i64::MAX)),
                    ],
                ),
            }
        }
    }

    fn np(&self, cmd: &Command) -> Result<()> {
        let now = self.host.now_ms();
        let line = match self.tracker.now_playing(&cmd.room) {
            Some(p) => {
                let mut line = format!("Now playing: {}", p.media.title);
                if p.media.seconds > 0.0 {
                    line.push_str(&format!(
                        " [{} / {}]",
                        time::clock(p.position_at(now)),
                        time::clock(p.media.seconds)
                    ));
                }
                if let Some(by) = &p.queued_by {
                    line.push_str(&format!(", queued by {by}"));
                }
                line.push('.');
                line
            }
            // Not followed since it started (loaded mid-play): the host's room state.
            None => match self.host.room_state(&cmd.room).ok().and_then(|s| {
                let np = s["state"]["now_playing"].clone();
                np["media"]["title"].as_str().map(|t| {
                    format!(
                        "Now playing: {t} [{} / {}].",
                        time::clock(np["current_time"].as_f64().unwrap_or(0.0)),
                        time::clock(np["media"]["seconds"].as_f64().unwrap_or(0.0))
                    )
                })
            }) {
                Some(line) => line,
                None => "Nothing is playing.".to_owned(),
            },
        };
        routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        Ok(())
    }

    /// `(plays, completed, top title and its plays)` today, from the database when it
    /// answers (it has every run's plays), else from memory.
    fn media_today(&mut self, room: &str, now: i64) -> (i64, i64, Option<(String, i64)>) {
        let day = self.day_ms(now);
        if self.store.ready() {
            // Queued plays count too: flush them first.
            self.store.flush();
            let counts = self.store.query(
                "SELECT COUNT(*) AS plays, \
                 SUM(CASE WHEN completed THEN 1 ELSE 0 END) AS completed \
                 FROM media_plays WHERE room = $1 AND started_at >= $2",
                &[room.into(), ts(day)],
            );
            let top = self.store.query(
                "SELECT title, COUNT(*) AS n FROM media_plays WHERE room = $1 AND started_at >= $2 \
                 GROUP BY media_type, media_id, title ORDER BY n DESC, title LIMIT 1",
                &[room.into(), ts(day)],
            );
            if let (Ok(counts), Ok(top)) = (counts, top) {
                let row = counts.row(0);
                let plays = row.and_then(|r| r.get::<Option<i64>>("plays").ok().flatten());
                let completed = row.and_then(|r| r.get::<Option<i64>>("completed").ok().flatten());
                let top = top.row(0).and_then(|r| {
                    Some((
                        r.get::<Option<String>>("title").ok().flatten()?,
                        r.get::<i64>("n").ok()?,
                    ))
                });
                return (plays.unwrap_or(0), completed.unwrap_or(0), top);
            }
        }
        let t = self.tracker.today(room, day);
        let top = t
            .titles
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(t, n)| (t.clone(), i64::try_from(*n).unwrap_or(i64::MAX)));
        (
            i64::try_from(t.plays).unwrap_or(i64::MAX),
            i64::try_from(t.completed).unwrap_or(i64::MAX),
            top,
        )
    }

    fn stats(&mut self, cmd: &Command) -> Result<()> {
        let now = self.host.now_ms();
        let (plays, completed, top) = self.media_today(&cmd.room, now);
        let chat = self
            .host
            .request(
                Message::new("analytics.summary", &serde_json::json!({"room": cmd.room}))?,
                Duration::from_millis(self.config.analytics_timeout_ms),
            )
            .and_then(|r| r.json::<Summary>());
        let mut line = String::from("Today: ");
        if let Ok(s) = &chat {
            let d = &s.day;
            line.push_str(&format!(
                "{} messages from {} chatters, {} joins, {} commands; ",
                d.messages, d.chatters, d.joins, d.commands
            ));
        }
        line.push_str(&format!(
            "{plays} {} ({completed} completed)",
            if plays == 1 { "play" } else { "plays" }
        ));
        if let Some((title, n)) = top {
            line.push_str(&format!(", most played: {title} ({n}×)"));
        }
        line.push('.');
        routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        Ok(())
    }

    fn on_cytube(&mut self, event: &Event<'_>, room: &str) -> Result<()> {
        let now = event.timestamp_ms();
        let writes = match event.cytube_event()? {
            ServerEvent::Playlist(items) => {
                self.tracker
                    .playlist(room, items.iter().map(|i| (i.uid.0, item_of(i))).collect());
                if items.is_empty() {
                    self.tracker.end(room, now)
                } else {
                    Vec::new()
                }
            }
            ServerEvent::Queue(q) => self
                .tracker
                .queued(room, q.item.uid.0, item_of(&q.item), now),
            ServerEvent::Delete(d) => self.tracker.deleted(room, d.uid.0, now),
            ServerEvent::SetCurrent(uid) => {
                self.tracker.set_current(room, uid.0);
                Vec::new()
            }
            ServerEvent::ChangeMedia(c) => {
                let day = self.day_ms(now);
                // The host tags `repeat` the changeMedia a rejoin repeats for the play
                // in progress: not a new play.
                let change = if event.is_repeat() {
                    Tracker::repeated
                } else {
                    Tracker::change
                };
                let w = change(
                    &mut self.tracker,
                    room,
                    media_of(&c.media),
                    c.current_time,
                    c.paused,
                    now,
                    day,
                );
                if w.iter().any(|w| matches!(w, Write::PlayStarted { .. })) {
                    let _ = self.host.counter_add(
                        "mediatracker_plays_total",
                        "Plays started, by room",
                        &[("room", room)],
                        1.0,
                    );
                }
                w
            }
            ServerEvent::MediaUpdate(u) => {
                self.tracker.update(room, u.current_time, u.paused, now);
                Vec::new()
            }
            _ => Vec::new(),
        };
        self.write(writes);
        Ok(())
    }
}

impl Plugin for MediaTracker {
    const NAME: &'static str = "mediatracker";
    // Its `create` asks the storage plugin for its schema: start after it.
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "Plays per room (watched fraction, completion), queue history, current media; !np, !stats";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.utc_offset_minutes.abs() > 14 * 60 {
            return Err(Error::config(format!(
                "utc_offset_minutes must be within ±840, got {}",
                config.utc_offset_minutes
            )));
        }
        let previous = previous.unwrap_or_default();
        let store = tracker::start(
            &host,
            Setup {
                events: &[
                    "playlist",
                    "queue",
                    "delete",
                    "setCurrent",
                    "changeMedia",
                    "mediaUpdate",
                ],
                flush_subject: FLUSH,
                flush_interval_ms: config.flush_interval_ms,
                max_pending: config.max_pending,
                migrations: migrations(),
            },
            previous.pending,
        )?;
        host.subscribe(&routing::subject("np"))?;
        host.subscribe(&routing::subject("stats"))?;
        Ok(MediaTracker {
            host,
            config,
            tracker: previous.tracker,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                aliases: vec!["nowplaying".to_owned()],
                user_cooldown_ms: 3_000,
                ..CommandSpec::new("np", "What is playing, how far in, and who queued it")
            })
            .command(CommandSpec {
                user_cooldown_ms: 10_000,
                ..CommandSpec::new("stats", "Today's numbers: chat, joins, commands, plays")
            })
    }

    fn examples() -> Vec<ChatExample> {
        // Run after `tests::a_play` (alice queued "Never Gonna Give You Up", 1:30 in).
        vec![
            ChatExample::new(
                "!np",
                "Now playing: Never Gonna Give You Up [1:30 / 3:33], queued by alice.",
            ),
            ChatExample::new("!nowplaying", "Never Gonna Give You Up"),
            ChatExample::new(
                "!stats",
                "Today: 1 play (0 completed), most played: Never Gonna Give You Up (1×).",
            ),
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
            self.store.flush();
            let _ = self.host.gauge_set(
                "mediatracker_pending_writes",
                "Writes waiting for the database",
                &[],
                self.store.pending_len() as f64,
            );
            return Ok(());
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return match cmd.command.as_str() {
                "np" => self.np(&cmd),
                "stats" => self.stats(&cmd),
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
        Ok(Some(Tracked::export(self.tracker.clone(), &mut self.store)))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(MediaTracker);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{
        routing::testing::{ROOM, check_command_examples, command_for, feed},
        testing::Harness,
    };

    /// alice queued a video; it started and played 90 s.
    fn a_play(h: &mut Harness<MediaTracker>) {
        let media = serde_json::json!({"id": "dQw4w9WgXcQ", "type": "yt", "title": "Never Gonna Give You Up", "seconds": 213, "duration": "03:33"});
        h.publish(
            &format!("cytube.in.{ROOM}.queue"),
            &serde_json::json!({"item": {"media": media, "uid": 4, "temp": false, "queueby": "alice"}, "after": "prepend"}),
        )
        .unwrap();
        h.publish(&format!("cytube.in.{ROOM}.setCurrent"), &4)
            .unwrap();
        let mut change = media.clone();
        change["currentTime"] = serde_json::json!(-3);
        change["paused"] = serde_json::json!(true);
        h.publish(&format!("cytube.in.{ROOM}.changeMedia"), &change)
            .unwrap();
        h.advance(Duration::from_secs(3)).unwrap();
        h.publish(
            &format!("cytube.in.{ROOM}.mediaUpdate"),
            &serde_json::json!({"currentTime": 0, "paused": false}),
        )
        .unwrap();
        h.advance(Duration::from_secs(90)).unwrap();
    }

    fn say(h: &mut Harness<MediaTracker>, line: &str) -> String {
        let now = h.now_ms();
        let cmd = command_for::<MediaTracker>(line, "bob", 0.0, now).unwrap();
        feed(h, &cmd).unwrap();
        h.chat_replies().last().cloned().unwrap_or_default()
    }

    /// Issue: the server repeats `changeMedia` at `currentTime` 0 for a live item on
    /// every join of the bot; each rejoin counted as a new play. The frames of a join
    /// as the real server sends them, three times over, give one play.
    #[test]
    fn a_live_item_repeated_on_every_rejoin_is_one_play() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        let media = serde_json::json!({"id": "somechannel", "type": "tw", "title": "Live", "seconds": 0, "duration": "00:00"});
        let item = serde_json::json!({"media": media, "uid": 9, "temp": false, "queueby": "alice"});
        let mut change = media.clone();
        change["currentTime"] = serde_json::json!(0);
        change["paused"] = serde_json::json!(false);
        let join = |h: &mut Harness<MediaTracker>| {
            h.publish(
                &format!("cytube.in.{ROOM}.playlist"),
                &serde_json::json!([item]),
            )
            .unwrap();
            h.publish(&format!("cytube.in.{ROOM}.setCurrent"), &9)
                .unwrap();
            h.publish(&format!("cytube.in.{ROOM}.changeMedia"), &change)
                .unwrap();
            h.publish(&format!("cytube.in.{ROOM}.setCurrent"), &9)
                .unwrap();
        };
        let plays = |h: &Harness<MediaTracker>| {
            h.metrics()
                .iter()
                .filter(|(k, _)| k.starts_with("mediatracker_plays_total"))
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        join(&mut h);
        assert_eq!(plays(&h), 1.0);
        for _ in 0..3 {
            h.advance(Duration::from_secs(600)).unwrap();
            join(&mut h);
        }
        assert_eq!(plays(&h), 1.0, "{:?}", h.metrics());
    }

    /// A recorded item the bot rejoins in its lead-in (position −1): only the host's
    /// `repeat` tag tells it from a new play.
    #[test]
    fn a_changemedia_tagged_repeat_is_not_a_new_play() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        let media = serde_json::json!({"id": "v", "type": "yt", "title": "Song", "seconds": 600, "duration": "10:00"});
        let subject = format!("cytube.in.{ROOM}.changeMedia");
        let mut change = media.clone();
        change["currentTime"] = serde_json::json!(-3);
        change["paused"] = serde_json::json!(true);
        h.publish(&subject, &change).unwrap();
        change["currentTime"] = serde_json::json!(-1);
        let mut ev = h.event(&subject, &change);
        ev.tags.push(daz_plugin_api::TAG_REPEAT.to_owned());
        h.feed(&ev).unwrap();
        let plays: f64 = h
            .metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("mediatracker_plays_total"))
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(plays, 1.0, "{:?}", h.metrics());
        assert!(say(&mut h, "!stats").contains("1 play"));
    }

    #[test]
    fn declared_examples_hold() {
        let failures =
            check_command_examples::<MediaTracker>(serde_json::json!({}), a_play).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn plays_and_queue_history_are_written() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "postgres", "connected": true}))
        });
        h.respond("sql.migrate", |req| {
            assert_eq!(req["plugin"], "mediatracker");
            Ok(serde_json::json!({"dialect": "postgres", "applied": [1], "current": 1}))
        });
        h.respond("sql.batch", move |req| {
            seen.lock()
                .unwrap()
                .extend(req["statements"].as_array().cloned().unwrap_or_default());
            Ok(serde_json::json!({"results": []}))
        });
        a_play(&mut h);
        // The next video starts: the first play ends, 93 s watched of 213: a skip.
        h.publish(
            &format!("cytube.in.{ROOM}.changeMedia"),
            &serde_json::json!({"id": "x", "type": "yt", "title": "Next", "seconds": 10, "currentTime": -3, "paused": true}),
        )
        .unwrap();
        h.publish(
            &format!("cytube.in.{ROOM}.delete"),
            &serde_json::json!({"uid": 4}),
        )
        .unwrap();
        h.advance(Duration::from_secs(2)).unwrap();
        let stmts = log.lock().unwrap().clone();
        let sql: Vec<&str> = stmts.iter().map(|s| s["sql"].as_str().unwrap()).collect();
        assert!(
            sql[0].starts_with("INSERT INTO mediatracker_queue"),
            "{sql:?}"
        );
        assert_eq!(stmts[0]["params"][6]["value"], "alice");
        assert!(sql[1].starts_with("INSERT INTO media_plays"));
        assert_eq!(stmts[1]["params"][5]["value"], "alice");
        let ended = stmts
            .iter()
            .find(|s| s["sql"].as_str().unwrap().starts_with("UPDATE media_plays"))
            .unwrap();
        let watched = ended["params"][1]["value"].as_f64().unwrap();
        assert!((watched - 90.0).abs() < 0.01, "{watched}");
        assert_eq!(ended["params"][2]["value"], false);
        assert!(
            sql.iter()
                .any(|s| s.starts_with("UPDATE mediatracker_queue SET removed_at"))
        );
    }

    #[test]
    fn stats_include_the_analytics_summary_when_it_answers() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        a_play(&mut h);
        h.respond("analytics.summary", |req| {
            assert_eq!(req["room"], ROOM);
            Ok(serde_json::json!({"day": {"messages": 12, "chatters": 3, "joins": 2, "plays": 1, "commands": 4}}))
        });
        assert_eq!(
            say(&mut h, "!stats"),
            "Today: 12 messages from 3 chatters, 2 joins, 4 commands; 1 play (0 completed), most played: Never Gonna Give You Up (1×)."
        );
    }

    #[test]
    fn np_without_history_reads_the_room_state() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        assert_eq!(say(&mut h, "!np"), "Nothing is playing.");
        h.set_room_state(
            ROOM,
            serde_json::json!({"state": {"now_playing": {"media": {"title": "Live", "seconds": 65}, "current_time": 5}}}),
        );
        assert_eq!(say(&mut h, "!np"), "Now playing: Live [0:05 / 1:05].");
    }

    #[test]
    fn the_play_survives_a_reload() {
        let mut h = Harness::<MediaTracker>::new(serde_json::json!({})).unwrap();
        a_play(&mut h);
        h.reload().unwrap();
        assert!(say(&mut h, "!np").contains("queued by alice"));
    }
}
