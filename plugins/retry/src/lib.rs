//! # daz-plugin-retry — failed operations, redone
//!
//! Listens to failure reports (`<…>.failed` carrying the original operation: the host's
//! `cytube.out.<room>.failed` for an outbound chat, PM or queue request the governor
//! could not deliver, or any plugin's report of the same shape) and redoes the
//! operation — publishes the original message again — under a per-kind policy (max
//! attempts, initial and max delay, multiplier, jitter). Entries live in the core table
//! `retry_queue` (keyed by the idempotency key) so they survive restarts; after the
//! last attempt, or at once for a failure retrying cannot fix, they move to
//! `dead_letters` with the reason. Admins list them (`!deadletters`,
//! `retry.dead.list`) and replay them (`!replay <id>|all`, `retry.dead.replay`).
//! Settings in `README.md` and [`Config`].
//!
//! The host publishes every failure report on its subject, so subscribing to
//! `cytube.out.*.failed` sees the failures of every plugin's requests (the plugin whose
//! request failed gets its own copy; nobody forwards). A redo is published by this
//! plugin, so a failure of the redo comes back here as well, once, with the idempotency
//! key as its correlation id.
//!
//! # Layout
//!
//! * [`policy`] — policies and the wait before each attempt.
//! * [`queue`] — the queue and the dead letters without I/O.
//! * this file — the plugin: decoding reports, redoing, SQL, loading after a restart,
//!   the admin commands and requests.

pub mod policy;
pub mod queue;

use std::{collections::BTreeMap, time::Duration};

use daz_feature_support::{store::Store, text, time};
use daz_plugin_api::{
    prelude::*,
    routing::{self, Command},
    sql::{Param, Statement},
};
use serde::{Deserialize, Serialize};

use crate::{
    policy::Policy,
    queue::{Change, Dead, Entry, Operation, Phase, Queue},
};

const TICK: &str = "retry.tick";
/// Request: list the dead letters.
pub const DEAD_LIST: &str = "retry.dead.list";
/// Request: replay dead letters (`{id}` or `{id: "all"}`).
pub const DEAD_REPLAY: &str = "retry.dead.replay";
/// The tag on every redo.
pub const TAG_RETRY: &str = "retry";
/// Admin rank of the commands.
pub const ADMIN_RANK: f64 = 3.0;

/// The `[plugins.retry.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Failure subjects to listen to (reports sent straight to this plugin always
    /// arrive).
    pub subjects: Vec<String>,
    /// Failure codes retrying cannot fix: the operation dies at once.
    pub permanent_codes: Vec<String>,
    /// After a redo, how long to wait for a failure report before counting it
    /// delivered, ms. Keep it above the rooms' outbound `ttl_ms`.
    pub confirm_ms: u64,
    /// How often due entries are checked, ms.
    pub tick_ms: u64,
    /// The policy of kinds without their own.
    pub default: Policy,
    /// Policies by kind (`chatMsg`, `pm`, `queue`, …).
    pub policies: BTreeMap<String, Policy>,
    /// Dead letters kept in memory for listing (the database keeps all).
    pub max_dead_in_memory: usize,
    /// Writes kept while the database is away.
    pub max_pending: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            subjects: vec!["cytube.out.*.failed".to_owned()],
            permanent_codes: ["refused", "kick_worthy", "anonymous", "too_large"]
                .map(str::to_owned)
                .to_vec(),
            confirm_ms: 130_000,
            tick_ms: 200,
            default: Policy::default(),
            policies: BTreeMap::new(),
            max_dead_in_memory: 1_000,
            max_pending: 10_000,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<()> {
        self.default.validate("default").map_err(Error::config)?;
        for (kind, p) in &self.policies {
            p.validate(&format!("policies.{kind}"))
                .map_err(Error::config)?;
        }
        if self.tick_ms == 0 {
            return Err(Error::config("tick_ms must be above 0"));
        }
        for s in &self.subjects {
            if !s.ends_with(".failed") {
                return Err(Error::config(format!(
                    "subjects: {s:?} is not a failure subject (it must end with .failed)"
                )));
            }
        }
        Ok(())
    }

    fn policy(&self, kind: &str) -> &Policy {
        self.policies.get(kind).unwrap_or(&self.default)
    }
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The queue and the dead letters.
    pub queue: Queue,
    /// The rows were read back from the database.
    pub loaded: bool,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// How an operation is stored in the `operation` column.
#[derive(Debug, Serialize, Deserialize)]
struct StoredOp {
    #[serde(flatten)]
    op: Operation,
    #[serde(default = "waiting")]
    phase: Phase,
}

fn waiting() -> Phase {
    Phase::Waiting
}

/// One dead letter in the `retry.dead.list` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLine {
    /// Idempotency key.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Room.
    pub room: Option<String>,
    /// Subject.
    pub subject: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why.
    pub reason: String,
    /// When it died (unix ms).
    pub failed_ms: i64,
}

/// The plugin instance.
pub struct Retry {
    host: Host,
    config: Config,
    queue: Queue,
    store: Store,
    loaded: bool,
}

fn ts(ms: i64) -> Param {
    Param::timestamp_ms(ms)
}

fn short(key: &str) -> &str {
    let n = key.chars().count();
    if n <= 8 {
        key
    } else {
        let start = key.char_indices().nth(n - 8).map_or(0, |(i, _)| i);
        &key[start..]
    }
}

impl Retry {
    fn persist(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Upsert(e) => {
                    let op = serde_json::to_value(StoredOp {
                        op: e.op.clone(),
                        phase: e.phase,
                    })
                    .unwrap_or(serde_json::Value::Null);
                    self.store.push(
                        "INSERT INTO retry_queue (id, kind, operation, attempts, max_attempts, \
                         next_attempt_at, last_error, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (id) DO UPDATE SET operation = excluded.operation, \
                         attempts = excluded.attempts, max_attempts = excluded.max_attempts, \
                         next_attempt_at = excluded.next_attempt_at, \
                         last_error = excluded.last_error, updated_at = excluded.updated_at",
                        vec![
                            e.key.into(),
                            e.kind.into(),
                            Param::Json(op),
                            e.attempts.into(),
                            e.max_attempts.into(),
                            ts(e.next_ms),
                            e.last_error.into(),
                            ts(e.created_ms),
                            ts(self.host.now_ms()),
                        ],
                    );
                }
                Change::Delete(key) => self
                    .store
                    .push("DELETE FROM retry_queue WHERE id = $1", vec![key.into()]),
                Change::Died(d) => {
                    let op = serde_json::to_value(&d.op).unwrap_or(serde_json::Value::Null);
                    self.store.push(
                        "DELETE FROM retry_queue WHERE id = $1",
                        vec![d.key.clone().into()],
                    );
                    self.store.push(
                        "INSERT INTO dead_letters (id, kind, operation, attempts, reason, failed_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (id) DO UPDATE SET operation = excluded.operation, \
                         attempts = excluded.attempts, reason = excluded.reason, \
                         failed_at = excluded.failed_at, replayed_at = NULL",
                        vec![
                            d.key.clone().into(),
                            d.kind.clone().into(),
                            Param::Json(op),
                            d.attempts.into(),
                            d.reason.clone().into(),
                            ts(d.failed_ms),
                        ],
                    );
                    self.host.log(
                        Level::Warn,
                        "an operation failed for good; it is a dead letter now (list: !deadletters, replay: !replay <id>)",
                        &[("key", &d.key), ("kind", &d.kind), ("reason", &d.reason)],
                    );
                    self.count(
                        "retry_dead_letters_total",
                        "Operations that became dead letters",
                        &d.kind,
                    );
                }
                Change::Replayed { key, at } => self.store.push(
                    "UPDATE dead_letters SET replayed_at = $1 WHERE id = $2",
                    vec![ts(at), key.into()],
                ),
            }
        }
    }

    fn count(&self, name: &str, help: &str, kind: &str) {
        let _ = self.host.counter_add(name, help, &[("kind", kind)], 1.0);
    }

    /// Reads the queue and the recent dead letters a previous run left, once.
    fn load(&mut self) {
        if self.loaded || !self.store.ready() {
            return;
        }
        let queue = self.store.query(
            "SELECT id, kind, operation, attempts, max_attempts, next_attempt_at, last_error, \
             created_at FROM retry_queue",
            &[],
        );
        let dead = self.store.query(
            "SELECT id, kind, operation, attempts, reason, failed_at FROM dead_letters \
             WHERE replayed_at IS NULL ORDER BY failed_at DESC LIMIT $1",
            &[i64::try_from(self.config.max_dead_in_memory)
                .unwrap_or(i64::MAX)
                .into()],
        );
        let (queue, dead) = match (queue, dead) {
            (Ok(q), Ok(d)) => (q, d),
            (Err(e), _) | (_, Err(e)) => {
                self.host.log(
                    Level::Warn,
                    "cannot read the retry queue; will try again",
                    &[("error", e.message())],
                );
                return;
            }
        };
        let mut restored = 0;
        for row in queue.iter() {
            let Ok(key) = row.get::<String>("id") else {
                continue;
            };
            if self.queue.entries.contains_key(&key) {
                continue;
            }
            let Ok(stored) = row.json::<StoredOp>("operation") else {
                self.host.log(
                    Level::Warn,
                    "a retry_queue row does not hold an operation; skipped",
                    &[("key", &key)],
                );
                continue;
            };
            let when = |col: &str| {
                row.get::<String>(col)
                    .ok()
                    .and_then(|t| time::parse_rfc3339_ms(&t))
                    .unwrap_or(0)
            };
            self.queue.entries.insert(
                key.clone(),
                Entry {
                    key,
                    kind: row.get("kind").unwrap_or_default(),
                    op: stored.op,
                    attempts: row.get("attempts").unwrap_or(0),
                    max_attempts: row.get("max_attempts").unwrap_or(0),
                    next_ms: when("next_attempt_at"),
                    last_error: row
                        .get::<Option<String>>("last_error")
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    created_ms: when("created_at"),
                    phase: stored.phase,
                },
            );
            restored += 1;
        }
        for row in dead.iter() {
            let Ok(key) = row.get::<String>("id") else {
                continue;
            };
            let Ok(op) = row.json::<Operation>("operation") else {
                continue;
            };
            self.queue.dead.entry(key.clone()).or_insert(Dead {
                key,
                kind: row.get("kind").unwrap_or_default(),
                op,
                attempts: row.get("attempts").unwrap_or(0),
                reason: row.get("reason").unwrap_or_default(),
                failed_ms: row
                    .get::<String>("failed_at")
                    .ok()
                    .and_then(|t| time::parse_rfc3339_ms(&t))
                    .unwrap_or(0),
                replayed_ms: None,
            });
        }
        self.loaded = true;
        if restored > 0 {
            self.host.log(
                Level::Info,
                "restored operations waiting for another attempt",
                &[("count", &restored.to_string())],
            );
        }
    }

    fn tick(&mut self) -> Result<()> {
        self.load();
        let now = self.host.now_ms();
        let confirm = i64::try_from(self.config.confirm_ms).unwrap_or(i64::MAX / 2);
        let (redo, mut changes) = self.queue.due(now, confirm);
        for (key, op) in redo {
            let kind = self
                .queue
                .entries
                .get(&key)
                .map(|e| e.kind.clone())
                .unwrap_or_default();
            let mut message = Message::new(op.subject.clone(), &op.payload)?
                .priority(op.priority)
                .correlation_id(key.clone())
                .tag(TAG_RETRY);
            if let Some(room) = &op.room {
                message = message.room(room.clone());
            }
            match self.host.publish(message) {
                Ok(p) if p.delivered > 0 => {
                    self.count("retry_attempts_total", "Operations redone", &kind);
                }
                Ok(_) | Err(_) => {
                    // Nobody took it (the room is gone, a plugin is down): that is this
                    // attempt's failure.
                    let f = queue::Failure {
                        key: key.clone(),
                        kind: kind.clone(),
                        op,
                        reason: "nobody took the redone message".to_owned(),
                        code: "undelivered".to_owned(),
                        ours: true,
                    };
                    let policy = self.config.policy(&kind).clone();
                    changes.extend(self.queue.on_failure(f, &policy, false, now));
                }
            }
        }
        let deleted = changes
            .iter()
            .filter(|c| matches!(c, Change::Delete(_)))
            .count();
        for _ in 0..deleted {
            self.count(
                "retry_delivered_total",
                "Redone operations that went through",
                "all",
            );
        }
        self.persist(changes);
        self.queue.trim_dead(self.config.max_dead_in_memory);
        self.store.flush();
        let _ = self.host.gauge_set(
            "retry_queue_length",
            "Operations waiting for another attempt",
            &[],
            self.queue.entries.len() as f64,
        );
        Ok(())
    }

    fn on_failure(&mut self, event: &Event<'_>) -> Result<()> {
        let report: serde_json::Value = event.json()?;
        let Some(f) = queue::decode(&report, self.host.plugin_name(), event.room()) else {
            self.host.log(
                Level::Warn,
                "a failure report carries no operation to redo; ignored",
                &[("subject", event.subject()), ("from", event.source())],
            );
            return Ok(());
        };
        let permanent = self.config.permanent_codes.contains(&f.code);
        let policy = self.config.policy(&f.kind).clone();
        let kind = f.kind.clone();
        let changes = self
            .queue
            .on_failure(f, &policy, permanent, self.host.now_ms());
        if !changes.is_empty() {
            self.count("retry_failures_total", "Failure reports taken", &kind);
        }
        self.persist(changes);
        // Failures are rare and must survive a crash: write now.
        self.store.flush();
        Ok(())
    }

    fn dead_lines(&self, id: &str) -> Vec<DeadLine> {
        self.queue
            .find_dead(id)
            .into_iter()
            .map(|d| DeadLine {
                id: d.key.clone(),
                kind: d.kind.clone(),
                room: d.op.room.clone(),
                subject: d.op.subject.clone(),
                attempts: d.attempts,
                reason: d.reason.clone(),
                failed_ms: d.failed_ms,
            })
            .collect()
    }

    fn replay(&mut self, id: &str) -> usize {
        let keys: Vec<String> = self
            .queue
            .find_dead(id)
            .into_iter()
            .map(|d| d.key.clone())
            .collect();
        let now = self.host.now_ms();
        let config = self.config.clone();
        let changes = self
            .queue
            .replay(&keys, |kind| config.policy(kind).clone(), now);
        self.persist(changes);
        self.store.flush();
        keys.len()
    }

    fn command(&mut self, cmd: &Command) -> Result<()> {
        let now = self.host.now_ms();
        let lines: Vec<String> = match cmd.command.as_str() {
            "deadletters" => {
                let dead = self.dead_lines("all");
                if dead.is_empty() {
                    vec!["No dead letters.".to_owned()]
                } else {
                    let items: Vec<String> = dead
                        .iter()
                        .map(|d| {
                            format!(
                                "{} {}{} {} ago: {}",
                                short(&d.id),
                                d.kind,
                                d.room
                                    .as_deref()
                                    .map(|r| format!(" in {r}"))
                                    .unwrap_or_default(),
                                time::human(now - d.failed_ms),
                                d.reason
                            )
                        })
                        .collect();
                    let n = dead.len();
                    text::pages(
                        |p, of| {
                            let s = if n == 1 { "" } else { "s" };
                            if of > 1 {
                                format!("{n} dead letter{s} ({p}/{of}): ")
                            } else {
                                format!("{n} dead letter{s}: ")
                            }
                        },
                        &items,
                        " | ",
                        text::MAX_CHAT,
                    )
                    .into_iter()
                    .take(3)
                    .collect()
                }
            }
            "replay" => match cmd.args.first() {
                None => vec!["Usage: !replay <id>|all".to_owned()],
                Some(id) => {
                    let found = self.queue.find_dead(id).len();
                    if id != "all" && found > 1 {
                        vec![format!(
                            "{id} matches {found} dead letters; give more of the id, or all."
                        )]
                    } else {
                        match self.replay(id) {
                            0 => vec![format!("No dead letter matches {id}.")],
                            1 => vec!["Replayed 1 dead letter.".to_owned()],
                            n => vec![format!("Replayed {n} dead letters.")],
                        }
                    }
                }
            },
            _ => return Ok(()),
        };
        for line in lines {
            routing::reply(&self.host, cmd, &text::fit(&line, text::MAX_CHAT))?;
        }
        Ok(())
    }
}

impl Plugin for Retry {
    const NAME: &'static str = "retry";
    const DESCRIPTION: &'static str =
        "Redoes failed operations under per-kind policies; persisted queue, dead letters, replay";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        config.validate()?;
        for s in &config.subjects {
            host.subscribe(s)?;
        }
        host.subscribe(DEAD_LIST)?;
        host.subscribe(DEAD_REPLAY)?;
        host.subscribe(&routing::subject("deadletters"))?;
        host.subscribe(&routing::subject("replay"))?;
        host.timer_every(
            TICK,
            &serde_json::json!({}),
            Duration::from_millis(config.tick_ms),
        )?;
        let previous = previous.unwrap_or_default();
        let store = Store::new(
            host.clone(),
            Vec::new(),
            config.max_pending,
            previous.pending,
        );
        Ok(Retry {
            host,
            config,
            queue: previous.queue,
            store,
            loaded: previous.loaded,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                aliases: vec!["dead".to_owned()],
                min_rank: ADMIN_RANK,
                ..CommandSpec::new("deadletters", "Lists operations that failed for good")
            })
            .command(CommandSpec {
                usage: "<id>|all".to_owned(),
                min_rank: ADMIN_RANK,
                ..CommandSpec::new("replay", "Tries dead letters again")
            })
    }

    fn examples() -> Vec<ChatExample> {
        // Run after `tests::one_dead_letter` (a chat line refused as too large).
        vec![
            ChatExample::new(
                "!deadletters",
                "1 dead letter: 0000001A chatMsg in testroom 0s ago: too_large: longer than the server accepts",
            ),
            ChatExample::new("!replay", "Usage: !replay <id>|all"),
            ChatExample::new("!replay 1A", "Replayed 1 dead letter."),
            ChatExample::new("!replay all", "Replayed 1 dead letter."),
            ChatExample::new("!replay zzz", "No dead letter matches zzz."),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        let subject = event.subject();
        if subject == TICK {
            return self.tick();
        }
        if routing::is_failure(event) {
            return self.on_failure(event);
        }
        if subject == DEAD_LIST {
            return self
                .host
                .reply(event, &serde_json::json!({"dead": self.dead_lines("all")}));
        }
        if subject == DEAD_REPLAY {
            #[derive(Deserialize)]
            struct Req {
                id: String,
            }
            return match event.json::<Req>() {
                Ok(r) => {
                    let n = self.replay(&r.id);
                    self.host.reply(event, &serde_json::json!({"replayed": n}))
                }
                Err(e) => self.host.reply_error(
                    event,
                    &format!("{DEAD_REPLAY} expects {{\"id\": \"<id>|all\"}}: {e}"),
                ),
            };
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return self.command(&cmd);
        }
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            queue: self.queue.clone(),
            loaded: self.loaded,
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Retry);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{
        routing::testing::{ROOM, check_command_examples, command_for, feed},
        testing::Harness,
    };

    fn failure(h: &mut Harness<Retry>, id: &str, code: &str, source: &str) {
        let mut ev = h.event(
            &format!("cytube.out.{ROOM}.failed"),
            &serde_json::json!({
                "original": {"event": "chatMsg", "subject": format!("cytube.out.{ROOM}.chatMsg"),
                             "payload": {"msg": "pong", "meta": {}}, "source": source, "id": id,
                             "correlation_id": id},
                "reason": if code == "too_large" { "longer than the server accepts" } else { "new accounts may not chat yet" },
                "code": code, "part": 1, "parts": 1
            }),
        );
        ev.room = ROOM.into();
        ev.source = format!("cytube:{ROOM}");
        h.feed(&ev).unwrap();
    }

    fn one_dead_letter(h: &mut Harness<Retry>) {
        failure(h, "0000000000000000000000001A", "too_large", "builtins");
    }

    fn redone(h: &mut Harness<Retry>) -> Vec<serde_json::Value> {
        h.take_published()
            .into_iter()
            .filter(|m| m.subject == format!("cytube.out.{ROOM}.chatMsg"))
            .map(|m| {
                assert_eq!(m.tags, vec![TAG_RETRY]);
                m.payload
            })
            .collect()
    }

    fn say(h: &mut Harness<Retry>, line: &str) -> String {
        let now = h.now_ms();
        let cmd = command_for::<Retry>(line, "admin", 3.0, now).unwrap();
        feed(h, &cmd).unwrap();
        h.chat_replies().last().cloned().unwrap_or_default()
    }

    fn config() -> serde_json::Value {
        serde_json::json!({
            "confirm_ms": 1000,
            "tick_ms": 100,
            "policies": {"chatMsg": {"max_attempts": 2, "initial_delay_ms": 500, "max_delay_ms": 5000, "multiplier": 2.0, "jitter": 0.0}}
        })
    }

    #[test]
    fn declared_examples_hold() {
        let failures =
            check_command_examples::<Retry>(serde_json::json!({}), one_dead_letter).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_failed_chat_is_redone_after_the_policys_delay() {
        let mut h = Harness::<Retry>::new(config()).unwrap();
        failure(&mut h, "01A", "spam_filtered", "builtins");
        h.advance(Duration::from_millis(400)).unwrap();
        assert!(redone(&mut h).is_empty());
        h.advance(Duration::from_millis(100)).unwrap();
        let r = redone(&mut h);
        assert_eq!(r, vec![serde_json::json!({"msg": "pong", "meta": {}})]);
        // No failure report within the confirm window: delivered, the queue is empty.
        h.advance(Duration::from_millis(1_100)).unwrap();
        assert_eq!(h.metrics()["retry_queue_length"], 0.0);
        assert_eq!(h.metrics()["retry_delivered_total,kind=all"], 1.0);
    }

    #[test]
    fn the_redo_failing_again_waits_longer_then_dies() {
        let mut h = Harness::<Retry>::new(config()).unwrap();
        failure(&mut h, "01A", "spam_filtered", "builtins");
        h.advance(Duration::from_millis(500)).unwrap();
        assert_eq!(redone(&mut h).len(), 1);
        failure(&mut h, "01A", "spam_filtered", "retry");
        h.advance(Duration::from_millis(900)).unwrap();
        assert!(redone(&mut h).is_empty());
        h.advance(Duration::from_millis(100)).unwrap();
        assert_eq!(redone(&mut h).len(), 1, "second attempt 1000 ms after");
        failure(&mut h, "01A", "spam_filtered", "retry");
        let list = h
            .request(DEAD_LIST, &serde_json::json!({}))
            .unwrap()
            .unwrap();
        let dead = list.payload["dead"].as_array().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0]["attempts"], 2);
        assert!(
            dead[0]["reason"]
                .as_str()
                .unwrap()
                .contains("gave up after 2 attempts")
        );
        // Replayed by an admin: redone at the next tick.
        let r = h
            .request(DEAD_REPLAY, &serde_json::json!({"id": "all"}))
            .unwrap()
            .unwrap();
        assert_eq!(r.payload["replayed"], 1);
        h.advance(Duration::from_millis(100)).unwrap();
        assert_eq!(redone(&mut h).len(), 1);
    }

    #[test]
    fn duplicates_are_ignored_by_their_key() {
        let mut h = Harness::<Retry>::new(config()).unwrap();
        failure(&mut h, "01A", "cooldown", "builtins");
        failure(&mut h, "01A", "cooldown", "builtins");
        h.advance(Duration::from_millis(500)).unwrap();
        assert_eq!(redone(&mut h).len(), 1);
    }

    #[test]
    fn the_queue_is_persisted_and_read_back_after_a_restart() {
        let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
        let mut h = Harness::<Retry>::new(config()).unwrap();
        let seen = rows.clone();
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "sqlite", "connected": true}))
        });
        h.respond("sql.batch", move |req| {
            seen.lock()
                .unwrap()
                .extend(req["statements"].as_array().cloned().unwrap_or_default());
            Ok(serde_json::json!({"results": []}))
        });
        h.respond("sql.query", |_| {
            Ok(serde_json::json!({"columns": [], "rows": []}))
        });
        failure(&mut h, "01A", "expired", "builtins");
        let stmts = rows.lock().unwrap().clone();
        let upsert = stmts
            .iter()
            .find(|s| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .starts_with("INSERT INTO retry_queue")
            })
            .unwrap();
        assert_eq!(upsert["params"][0]["value"], "01A");
        assert_eq!(
            upsert["params"][2]["value"]["subject"],
            format!("cytube.out.{ROOM}.chatMsg")
        );
        assert_eq!(upsert["params"][2]["value"]["phase"], "waiting");

        // A fresh instance (a restart: no state) finds the row and redoes it.
        let mut fresh = Harness::<Retry>::new(config()).unwrap();
        let op = upsert["params"][2]["value"].to_string();
        fresh.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "sqlite", "connected": true}))
        });
        fresh.respond("sql.batch", |_| Ok(serde_json::json!({"results": []})));
        let due = daz_plugin_api::sql::rfc3339_from_ms(fresh.now_ms());
        let columns: Vec<serde_json::Value> = [
            "id",
            "kind",
            "operation",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
        ]
        .iter()
        .map(|c| serde_json::json!({"name": c, "db_type": "TEXT"}))
        .collect();
        fresh.respond("sql.query", move |req| {
            if req["sql"].as_str().unwrap().contains("FROM retry_queue") {
                Ok(serde_json::json!({
                    "columns": columns,
                    "rows": [["01A", "chatMsg", op, 0, 2, due, "expired", due]]
                }))
            } else {
                Ok(serde_json::json!({"columns": [], "rows": []}))
            }
        });
        fresh.advance(Duration::from_millis(100)).unwrap();
        assert_eq!(redone(&mut fresh).len(), 1);
    }

    #[test]
    fn the_queue_survives_a_reload() {
        let mut h = Harness::<Retry>::new(config()).unwrap();
        failure(&mut h, "01A", "cooldown", "builtins");
        h.reload().unwrap();
        h.advance(Duration::from_millis(500)).unwrap();
        assert_eq!(redone(&mut h).len(), 1);
        assert_eq!(say(&mut h, "!deadletters"), "No dead letters.");
    }

    #[test]
    fn bad_policies_are_refused() {
        let err = Harness::<Retry>::new(serde_json::json!({"policies": {"pm": {"jitter": 3.0}}}))
            .err()
            .unwrap();
        assert!(err.message().contains("policies.pm: jitter"), "{err}");
        let err = Harness::<Retry>::new(serde_json::json!({"subjects": ["cytube.out.*.chatMsg"]}))
            .err()
            .unwrap();
        assert!(err.message().contains("not a failure subject"), "{err}");
    }
}
