//! # daz-plugin-moderation — keeps a channel's chat clean
//!
//! Checks every chat line against the filters (words, regular expressions, links,
//! repeated lines, flooding, all-caps, links from new users) and acts on the first one
//! that trips: a warning by PM, `/smute`, `/mute`, `/kick` or `/ban` — at the bot's live
//! rank. A hit adds a strike; strikes decay after `strike_ttl_ms` and escalate along
//! `ladder`. Users at `exempt_rank` and above are never checked; a user of equal or
//! higher rank than the bot is never acted on; an action the channel's permissions do
//! not grant the bot becomes a milder one (down to a warning), so the bot never sends a
//! frame its rank does not allow. Moderators manage filters in chat (`!filter add`,
//! `!filter remove`, `!filter list`) and lift strikes and mutes with `!pardon`; filters
//! also come from `plugins.toml`. Every action goes to the `moderation_actions` table
//! and the bus (`moderation.action`). Settings in `README.md` and [`Config`].
//!
//! # Layout
//!
//! * [`filter`] — filter definitions, validation, text normalisation, content checks.
//! * [`model`] — users, recent lines, strikes: a line in, the filters it trips out.
//! * [`action`] — actions and the rank rules deciding what the bot may do.
//! * this file — the plugin: events, commands, SQL, the audit.
//!
//! # Persistence
//!
//! Filters added in chat live in `moderation_filters` (loaded when the storage plugin
//! first answers); the audit is queued and written every `flush_interval_ms`. On a hot
//! reload the model (strikes, recent lines, who is present), the live filters and the
//! audit rows not yet written go to the next version.

pub mod action;
pub mod filter;
pub mod model;

use daz_feature_support::{store::Store, text};
use daz_plugin_api::{
    cytube::{ServerEvent, unescape_chat},
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Param, Statement},
};
use serde::{Deserialize, Serialize};

use crate::{
    action::{Action, Decision, Standing, decide},
    filter::{Filter, FilterSpec, Kind, Limits, Line},
    model::{Hit, Model},
};

const TICK: &str = "moderation.tick";
/// The subject every action is published on.
pub const ACTION_SUBJECT: &str = "moderation.action";
/// Longest text looked at, in characters (the server cuts lines at 320 UTF-16 units;
/// its HTML can be about twice that).
const MAX_LINE: usize = 2_000;

/// The `[plugins.moderation.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Users of this rank and above are never checked (2 = moderators).
    pub exempt_rank: f64,
    /// How long a strike counts, ms.
    pub strike_ttl_ms: u64,
    /// The action for the 1st, 2nd, … live strike (the last step repeats). A filter's
    /// own `action` is the least it does.
    pub ladder: Vec<Action>,
    /// The filters from the configuration (added to those moderators add in chat).
    pub filters: Vec<FilterSpec>,
    /// Filters moderators may add in chat, per room.
    pub max_filters: usize,
    /// Longest word or expression, in characters.
    pub max_pattern_len: usize,
    /// Compiled size limit of one regular expression, bytes.
    pub regex_size_limit: usize,
    /// How often queued audit rows go to the database, ms.
    pub flush_interval_ms: u64,
    /// Audit rows kept while the database is away; beyond, the oldest are dropped.
    pub max_pending: usize,
    /// The command router's prefix: `!filter …` lines are never checked (a moderator
    /// adding a filter types the very words it catches).
    pub command_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            exempt_rank: 2.0,
            strike_ttl_ms: 3_600_000,
            ladder: vec![Action::Warn, Action::Warn, Action::Kick, Action::Mute],
            filters: Vec::new(),
            max_filters: 100,
            max_pattern_len: 200,
            regex_size_limit: 256 * 1024,
            flush_interval_ms: 1_000,
            max_pending: 10_000,
            command_prefix: "!".to_owned(),
        }
    }
}

/// A filter a moderator added in chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveFilter {
    /// Its id (`!filter remove <id>`).
    pub id: i64,
    /// The room it applies to.
    pub room: String,
    /// Who added it.
    pub added_by: String,
    /// The definition.
    pub spec: FilterSpec,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Users, recent lines, strikes.
    pub model: Model,
    /// Filters added in chat.
    pub live: Vec<LiveFilter>,
    /// The live filters were read from the database.
    pub loaded: bool,
    /// Audit rows not yet written.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// One action, as published on `moderation.action` and written to the audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEvent {
    /// The room.
    pub room: String,
    /// Who it concerns.
    pub user: String,
    /// The filter that tripped, or the command (`pardon`).
    pub filter: String,
    /// What was asked for (the filter's action or the ladder's step).
    pub requested: String,
    /// What the bot did (`None` when it spared the user).
    pub action: Option<String>,
    /// `done`, `milder: <why>` or `spared: <why>`.
    pub outcome: String,
    /// The reason given.
    pub reason: String,
    /// The user's live strikes after this one.
    pub strikes: usize,
    /// Who did it: `filter` or the moderator's name.
    pub by: String,
    /// When, unix ms.
    pub at: i64,
}

fn migrations() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "filters and audit",
        "CREATE TABLE moderation_filters (\
            id BIGINT PRIMARY KEY, room TEXT NOT NULL, spec TEXT NOT NULL, \
            added_by TEXT NOT NULL, added_at TIMESTAMPTZ NOT NULL);\
         CREATE TABLE moderation_actions (\
            id BIGSERIAL PRIMARY KEY, room TEXT NOT NULL, user_name TEXT NOT NULL, \
            filter TEXT NOT NULL, requested TEXT NOT NULL, action TEXT, outcome TEXT NOT NULL, \
            reason TEXT NOT NULL, strikes INTEGER NOT NULL, message TEXT, by_user TEXT NOT NULL, \
            at TIMESTAMPTZ NOT NULL);\
         CREATE INDEX moderation_actions_user ON moderation_actions (room, user_name, at);",
        "CREATE TABLE moderation_filters (\
            id INTEGER PRIMARY KEY, room TEXT NOT NULL, spec TEXT NOT NULL, \
            added_by TEXT NOT NULL, added_at TEXT NOT NULL);\
         CREATE TABLE moderation_actions (\
            id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, user_name TEXT NOT NULL, \
            filter TEXT NOT NULL, requested TEXT NOT NULL, action TEXT, outcome TEXT NOT NULL, \
            reason TEXT NOT NULL, strikes INTEGER NOT NULL, message TEXT, by_user TEXT NOT NULL, \
            at TEXT NOT NULL);\
         CREATE INDEX moderation_actions_user ON moderation_actions (room, user_name, at);",
    )]
}

/// The plugin instance.
pub struct Moderation {
    host: Host,
    config: Config,
    limits: Limits,
    /// The configuration's filters, compiled.
    configured: Vec<Filter>,
    /// Filters added in chat, compiled, with their records.
    live: Vec<(LiveFilter, Filter)>,
    loaded: bool,
    model: Model,
    store: Store,
}

/// A valid Cytube user name (what `!pardon` accepts).
fn valid_user(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Moderation {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    /// Reads the filters moderators added, once the database answers.
    fn load(&mut self) {
        if self.loaded || !self.store.ready() {
            return;
        }
        let rows = match self.store.query(
            "SELECT id, room, spec, added_by FROM moderation_filters ORDER BY id",
            &[],
        ) {
            Ok(r) => r,
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "cannot read the filters added in chat; will try again",
                    &[("error", e.message())],
                );
                return;
            }
        };
        let mut live = Vec::new();
        for row in rows.iter() {
            let id: i64 = row.get("id").unwrap_or(0);
            let parsed = row
                .get::<String>("spec")
                .ok()
                .and_then(|s| serde_json::from_str::<FilterSpec>(&s).ok());
            let Some(spec) = parsed else {
                self.host.log(
                    Level::Warn,
                    "a stored filter does not decode; it is ignored",
                    &[("id", &id.to_string())],
                );
                continue;
            };
            let record = LiveFilter {
                id,
                room: row.get("room").unwrap_or_default(),
                added_by: row.get("added_by").unwrap_or_default(),
                spec: spec.clone(),
            };
            match Filter::compile(spec, self.limits) {
                Ok(f) => live.push((record, f)),
                Err(e) => self.host.log(
                    Level::Warn,
                    "a stored filter is refused; it is ignored",
                    &[("id", &id.to_string()), ("reason", &e.0)],
                ),
            }
        }
        // Filters added while the database was away (queued) stay too.
        for (rec, f) in std::mem::take(&mut self.live) {
            if !live.iter().any(|(r, _)| r.id == rec.id) {
                live.push((rec, f));
            }
        }
        self.live = live;
        self.loaded = true;
    }

    fn tick(&mut self) {
        self.load();
        self.store.flush();
        let ttl = ms(self.config.strike_ttl_ms);
        self.model.prune(self.host.now_ms(), ttl, 86_400_000);
        let _ = self.host.gauge_set(
            "moderation_pending_writes",
            "Audit rows waiting for the database",
            &[],
            self.store.pending_len() as f64,
        );
    }

    fn audit(&mut self, ev: &ActionEvent, message: Option<&str>) {
        self.store.push(
            "INSERT INTO moderation_actions (room, user_name, filter, requested, action, outcome, \
             reason, strikes, message, by_user, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            vec![
                ev.room.clone().into(),
                ev.user.clone().into(),
                ev.filter.clone().into(),
                ev.requested.clone().into(),
                ev.action.clone().map(Param::from).unwrap_or(Param::Null),
                ev.outcome.clone().into(),
                ev.reason.clone().into(),
                i64::try_from(ev.strikes).unwrap_or(i64::MAX).into(),
                message
                    .map(|m| Param::from(m.chars().take(500).collect::<String>()))
                    .unwrap_or(Param::Null),
                ev.by.clone().into(),
                Param::timestamp_ms(ev.at),
            ],
        );
        if let Err(e) = self.host.publish(
            Message::new(ACTION_SUBJECT, ev)
                .map(|m| m.room(ev.room.clone()).priority(Priority::High))
                .unwrap_or_else(|_| Message::raw(ACTION_SUBJECT, b"{}".to_vec())),
        ) {
            self.host.log(
                Level::Warn,
                "cannot publish the action",
                &[("error", e.message())],
            );
        }
        let _ = self.host.counter_add(
            "moderation_actions_total",
            "Moderation actions, by what was done",
            &[("action", ev.action.as_deref().unwrap_or("spared"))],
            1.0,
        );
    }

    /// The bot's rank, the permissions and the target's rank from the host's room state.
    fn standing(&self, room: &str, user: &str) -> Option<Standing> {
        let v = self.host.room_state(room).ok()?;
        let state = v.get("state")?;
        let bot_rank = state.pointer("/me/rank")?.as_f64()?;
        let permissions = state
            .get("permissions")
            .and_then(|p| p.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|r| (k.clone(), r)))
                    .collect()
            })
            .unwrap_or_default();
        let target_rank = state
            .get("users")
            .and_then(|u| u.as_array())
            .and_then(|users| {
                users.iter().find(|u| {
                    u.get("name")
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| n.eq_ignore_ascii_case(user))
                })
            })
            .and_then(|u| u.get("rank").and_then(|r| r.as_f64()))
            .or_else(|| self.model.present(room, user).map(|p| p.rank));
        Some(Standing {
            bot_rank,
            permissions,
            target_rank,
        })
    }

    /// Learns about a user who chats before the plugin saw them join: the host's room
    /// state already lists them (a chat line travels at a higher priority than the
    /// `addUser` before it, and may overtake it), found by the keyed lookup. A room the
    /// plugin has no user list for (it started after the bot joined) is read whole, once,
    /// with nobody counted as new.
    fn adopt(&mut self, room: &str, user: &str, at: i64) {
        if self.model.rooms.contains_key(room) {
            if let Ok(Some(listed)) = self.host.room_user(room, user) {
                self.model.join(room, &listed.name, listed.rank, at);
            }
            return;
        }
        let Some(users) = self
            .host
            .room_state(room)
            .ok()
            .and_then(|v| v.pointer("/state/users").cloned())
            .and_then(|u| u.as_array().cloned())
        else {
            return;
        };
        self.model.userlist(
            room,
            users.iter().filter_map(|u| {
                Some((
                    u.get("name")?.as_str()?.to_owned(),
                    u.get("rank").and_then(|r| r.as_f64()).unwrap_or(0.0),
                ))
            }),
        );
    }

    /// `!filter …` / `!filters …`: the plugin's own command.
    fn is_filter_command(&self, plain: &str) -> bool {
        let Some(rest) = plain
            .trim_start()
            .strip_prefix(self.config.command_prefix.as_str())
        else {
            return false;
        };
        let name = rest.split(char::is_whitespace).next().unwrap_or("");
        !self.config.command_prefix.is_empty()
            && (name.eq_ignore_ascii_case("filter") || name.eq_ignore_ascii_case("filters"))
    }

    fn on_chat(&mut self, room: &str, user: &str, html: &str, at: i64) -> Result<()> {
        if self.model.present(room, user).is_none() {
            self.adopt(room, user, at);
        }
        let rank = self.model.present(room, user).map_or(0.0, |p| p.rank);
        if rank >= self.config.exempt_rank {
            return Ok(());
        }
        let html: String = html.chars().take(MAX_LINE).collect();
        let plain = unescape_chat(&html);
        if self.is_filter_command(&plain) {
            return Ok(());
        }
        let line = Line::new(&plain, &html);
        let filters: Vec<&Filter> = self
            .configured
            .iter()
            .chain(
                self.live
                    .iter()
                    .filter(|(r, _)| r.room == room)
                    .map(|(_, f)| f),
            )
            .collect();
        let hits = self.model.check(room, user, &line, at, &filters);
        let Some(hit) = hits.into_iter().next() else {
            return Ok(());
        };
        self.act(room, user, &hit, at, &plain)
    }

    fn act(&mut self, room: &str, user: &str, hit: &Hit, at: i64, said: &str) -> Result<()> {
        let ttl = ms(self.config.strike_ttl_ms);
        let (requested, strikes) = self
            .model
            .strike(room, user, hit, at, ttl, &self.config.ladder);
        let decision = match self.standing(room, user) {
            Some(s) => decide(requested, &s),
            None => Decision::Spare("the room's state is not known".to_owned()),
        };
        let (done, outcome) = match decision {
            Decision::Spare(why) => (None, format!("spared: {why}")),
            Decision::Act { action, note } => {
                self.carry_out(room, user, action, hit, strikes)?;
                let outcome = match note {
                    Some(n) => format!("milder: {n}"),
                    None => "done".to_owned(),
                };
                (Some(action), outcome)
            }
        };
        self.host.log(
            Level::Info,
            "moderation action",
            &[
                ("room", room),
                ("user", user),
                ("filter", &hit.filter),
                ("action", done.map_or("none", Action::as_str)),
                ("outcome", &outcome),
            ],
        );
        let ev = ActionEvent {
            room: room.to_owned(),
            user: user.to_owned(),
            filter: hit.filter.clone(),
            requested: requested.as_str().to_owned(),
            action: done.map(|a| a.as_str().to_owned()),
            outcome,
            reason: hit.reason.clone(),
            strikes,
            by: "filter".to_owned(),
            at,
        };
        self.audit(&ev, Some(said));
        Ok(())
    }

    fn carry_out(
        &mut self,
        room: &str,
        user: &str,
        action: Action,
        hit: &Hit,
        strikes: usize,
    ) -> Result<()> {
        match action.command(user, &hit.reason) {
            None => {
                let text = if hit.escalate {
                    format!("Warning: {} (strike {strikes}).", hit.reason)
                } else {
                    format!("Warning: {}.", hit.reason)
                };
                self.host
                    .pm(room, user, &text::fit(&text, text::MAX_CHAT))?;
            }
            Some(line) => {
                self.host.chat(room, &line)?;
                if matches!(action, Action::Mute | Action::Smute) {
                    self.model.set_muted(room, user, true);
                    if action == Action::Mute {
                        let text =
                            format!("You are muted: {}. A moderator can lift it.", hit.reason);
                        self.host
                            .pm(room, user, &text::fit(&text, text::MAX_CHAT))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn filter_command(&mut self, cmd: &Command) -> Result<()> {
        let sub = cmd.args.first().map(|s| s.to_lowercase());
        match sub.as_deref() {
            Some("add") => self.filter_add(cmd),
            Some("remove" | "rm" | "del" | "delete") => self.filter_remove(cmd),
            Some("list") | None => self.filter_list(cmd),
            Some(other) => self.reply(
                cmd,
                &format!(
                    "Unknown subcommand {other:?}. Usage: !filter add <word|regex> <pattern> [warn|smute|mute|kick|ban] · !filter remove <id> · !filter list"
                ),
            ),
        }
    }

    fn filter_add(&mut self, cmd: &Command) -> Result<()> {
        let usage = "Usage: !filter add <word|regex> <pattern> [warn|smute|mute|kick|ban]";
        // The pattern is taken from the line as typed (quotes and backslashes kept).
        let rest = cmd.rest.trim_start();
        let rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r.trim_start());
        let Some((kind_word, pattern)) = rest.split_once(char::is_whitespace) else {
            return self.reply(cmd, usage);
        };
        let kind = match kind_word.to_lowercase().as_str() {
            "word" | "phrase" => Kind::Word,
            "regex" | "re" => Kind::Regex,
            other => {
                return self.reply(
                    cmd,
                    &format!(
                        "Only word and regex filters are added in chat ({other:?} is not one); the others are set in plugins.toml. {usage}"
                    ),
                );
            }
        };
        let mut pattern = pattern.trim();
        let mut action = Action::Warn;
        if let Some((head, last)) = pattern.rsplit_once(char::is_whitespace)
            && let Some(a) = Action::parse(last)
        {
            action = a;
            pattern = head.trim_end();
        }
        for q in ['"', '\''] {
            if pattern.len() >= 2 && pattern.starts_with(q) && pattern.ends_with(q) {
                pattern = &pattern[1..pattern.len() - 1];
            }
        }
        if pattern.is_empty() {
            return self.reply(cmd, usage);
        }
        self.load();
        if !self.loaded {
            return self.reply(
                cmd,
                "Filters cannot be saved while the database is away; try again shortly.",
            );
        }
        let in_room = self.live.iter().filter(|(r, _)| r.room == cmd.room).count();
        if in_room >= self.config.max_filters {
            return self.reply(
                cmd,
                &format!("This room has {in_room} filters, the most allowed; remove one first."),
            );
        }
        let id = self
            .live
            .iter()
            .map(|(r, _)| r.id)
            .max()
            .unwrap_or(0)
            .max(0)
            + 1;
        let spec = FilterSpec {
            name: format!("{}{id}", kind.as_str()),
            kind,
            pattern: pattern.to_owned(),
            lines: None,
            window_ms: None,
            min_letters: None,
            ratio: None,
            allow: Vec::new(),
            action,
            escalate: true,
            reason: String::new(),
        };
        let compiled = match Filter::compile(spec.clone(), self.limits) {
            Ok(f) => f,
            Err(e) => return self.reply(cmd, &format!("Filter refused: {e}.")),
        };
        if self.live.iter().any(|(r, _)| {
            r.room == cmd.room && r.spec.kind == kind && r.spec.pattern == spec.pattern
        }) {
            return self.reply(cmd, "That filter exists already.");
        }
        let record = LiveFilter {
            id,
            room: cmd.room.clone(),
            added_by: cmd.username.clone(),
            spec: spec.clone(),
        };
        let encoded = serde_json::to_string(&spec)
            .map_err(|e| Error::msg(format!("cannot encode the filter: {e}")))?;
        let saved = self.store.exec_now(
            "INSERT INTO moderation_filters (id, room, spec, added_by, added_at) VALUES ($1, $2, $3, $4, $5)",
            vec![
                id.into(),
                cmd.room.clone().into(),
                encoded.into(),
                cmd.username.clone().into(),
                Param::timestamp_ms(cmd.time),
            ],
        );
        let described = compiled.describe();
        self.live.push((record, compiled));
        self.audit(
            &ActionEvent {
                room: cmd.room.clone(),
                user: cmd.username.clone(),
                filter: spec.name.clone(),
                requested: "filter_add".to_owned(),
                action: None,
                outcome: "done".to_owned(),
                reason: described.clone(),
                strikes: 0,
                by: cmd.username.clone(),
                at: cmd.time,
            },
            None,
        );
        let tail = if saved.is_ok() {
            ""
        } else {
            " (saved once the database answers)"
        };
        self.reply(cmd, &format!("Filter #{id} added: {described}{tail}."))
    }

    fn filter_remove(&mut self, cmd: &Command) -> Result<()> {
        let Some(which) = cmd.args.get(1) else {
            return self.reply(cmd, "Usage: !filter remove <id>");
        };
        let which = which.trim_start_matches('#');
        let found = self.live.iter().position(|(r, _)| {
            r.room == cmd.room
                && (which.parse::<i64>().is_ok_and(|id| id == r.id)
                    || r.spec.name.eq_ignore_ascii_case(which))
        });
        let Some(i) = found else {
            let configured = self
                .configured
                .iter()
                .any(|f| f.spec.name.eq_ignore_ascii_case(which));
            let line = if configured {
                format!("Filter {which} comes from plugins.toml; change it there.")
            } else {
                format!("There is no filter {which} in this room; see !filter list.")
            };
            return self.reply(cmd, &text::fit(&line, text::MAX_CHAT));
        };
        self.load();
        let (record, f) = self.live.remove(i);
        let saved = self.store.exec_now(
            "DELETE FROM moderation_filters WHERE id = $1",
            vec![record.id.into()],
        );
        self.audit(
            &ActionEvent {
                room: cmd.room.clone(),
                user: cmd.username.clone(),
                filter: record.spec.name.clone(),
                requested: "filter_remove".to_owned(),
                action: None,
                outcome: "done".to_owned(),
                reason: f.describe(),
                strikes: 0,
                by: cmd.username.clone(),
                at: cmd.time,
            },
            None,
        );
        let tail = if saved.is_ok() {
            ""
        } else {
            " (removed from the database once it answers)"
        };
        self.reply(
            cmd,
            &format!("Filter #{} removed: {}{tail}.", record.id, f.describe()),
        )
    }

    fn filter_list(&mut self, cmd: &Command) -> Result<()> {
        self.load();
        let mut items: Vec<String> = self
            .configured
            .iter()
            .map(|f| format!("{} [config]", f.describe()))
            .collect();
        items.extend(
            self.live
                .iter()
                .filter(|(r, _)| r.room == cmd.room)
                .map(|(r, f)| format!("#{} {}", r.id, f.describe())),
        );
        if items.is_empty() {
            return self.reply(cmd, "No filters.");
        }
        for page in text::pages(
            |n, of| format!("Filters ({n}/{of}): "),
            &items,
            " · ",
            text::MAX_CHAT,
        ) {
            routing::reply(&self.host, cmd, &page)?;
        }
        Ok(())
    }

    fn pardon(&mut self, cmd: &Command) -> Result<()> {
        let Some(who) = cmd.args.first() else {
            return self.reply(cmd, "Usage: !pardon <user>");
        };
        if !valid_user(who) {
            return self.reply(
                cmd,
                "That is not a user name (1–20 letters, digits, _ or -).",
            );
        }
        let (strikes, muted) = self.model.pardon(&cmd.room, who);
        let name = self
            .model
            .present(&cmd.room, who)
            .map_or(who.clone(), |p| p.name.clone());
        if strikes == 0 && !muted {
            return self.reply(cmd, &format!("{name} has no strikes."));
        }
        let mut unmuted = false;
        if muted
            && let Some(Standing {
                bot_rank,
                permissions,
                ..
            }) = self.standing(&cmd.room, who)
            && permissions.get("mute").is_some_and(|m| bot_rank >= *m)
        {
            self.host.chat(&cmd.room, &format!("/unmute {name}"))?;
            unmuted = true;
        }
        self.audit(
            &ActionEvent {
                room: cmd.room.clone(),
                user: name.clone(),
                filter: "pardon".to_owned(),
                requested: "pardon".to_owned(),
                action: None,
                outcome: if unmuted {
                    "done, unmuted".to_owned()
                } else {
                    "done".to_owned()
                },
                reason: format!("{strikes} strikes cleared"),
                strikes: 0,
                by: cmd.username.clone(),
                at: cmd.time,
            },
            None,
        );
        let s = if strikes == 1 { "" } else { "s" };
        let tail = if unmuted { ", unmuted" } else { "" };
        self.reply(
            cmd,
            &format!("{name} pardoned: {strikes} strike{s} cleared{tail}."),
        )
    }

    fn on_cytube(&mut self, event: &Event<'_>, room: &str) -> Result<()> {
        let at = event.timestamp_ms();
        match event.cytube_event()? {
            ServerEvent::Userlist(users) => {
                self.model
                    .userlist(room, users.into_iter().map(|u| (u.name, u.rank)));
            }
            ServerEvent::AddUser(u) => self.model.join(room, &u.name, u.rank, at),
            ServerEvent::UserLeave(l) => self.model.leave(room, &l.name),
            ServerEvent::SetUserRank(r) => self.model.rank(room, &r.name, r.rank),
            ServerEvent::ChatMsg(chat) => {
                if event.is_backlog() || event.is_self() || chat.username.starts_with('[') {
                    return Ok(());
                }
                let at = if chat.time > 0 { chat.time } else { at };
                return self.on_chat(room, &chat.username, &chat.msg, at);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Plugin for Moderation {
    const NAME: &'static str = "moderation";
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "Chat filters with strikes and escalation at the bot's live rank; !filter, !pardon";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.flush_interval_ms == 0 {
            return Err(Error::config("flush_interval_ms must be above 0"));
        }
        if config.ladder.is_empty() {
            return Err(Error::config(
                "ladder needs at least one action (e.g. [\"warn\", \"kick\"])",
            ));
        }
        if config.strike_ttl_ms == 0 {
            return Err(Error::config("strike_ttl_ms must be above 0"));
        }
        let limits = Limits {
            max_pattern_len: config.max_pattern_len.clamp(1, 10_000),
            regex_size_limit: config.regex_size_limit.clamp(1024, 16 * 1024 * 1024),
        };
        let mut configured = Vec::new();
        for spec in &config.filters {
            if configured
                .iter()
                .any(|f: &Filter| f.spec.name.eq_ignore_ascii_case(&spec.name))
            {
                return Err(Error::config(format!(
                    "two filters are named {:?}; names must differ",
                    spec.name
                )));
            }
            let f = Filter::compile(spec.clone(), limits)
                .map_err(|e| Error::config(format!("filter {:?} is refused: {e}", spec.name)))?;
            configured.push(f);
        }
        let previous = previous.unwrap_or_default();
        let mut live = Vec::new();
        for rec in previous.live {
            match Filter::compile(rec.spec.clone(), limits) {
                Ok(f) => live.push((rec, f)),
                Err(e) => host.log(
                    Level::Warn,
                    "a filter handed over is refused by this version; it is ignored",
                    &[("filter", &rec.spec.name), ("reason", &e.0)],
                ),
            }
        }
        for e in ["userlist", "addUser", "userLeave", "setUserRank", "chatMsg"] {
            host.subscribe(&format!("cytube.in.*.{e}"))?;
        }
        host.subscribe(&routing::subject("filter"))?;
        host.subscribe(&routing::subject("pardon"))?;
        host.timer_every(
            TICK,
            &serde_json::json!({}),
            std::time::Duration::from_millis(config.flush_interval_ms),
        )?;
        let store = Store::new(
            host.clone(),
            migrations(),
            config.max_pending,
            previous.pending,
        );
        Ok(Moderation {
            host,
            config,
            limits,
            configured,
            live,
            loaded: previous.loaded,
            model: previous.model,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                usage: "add <word|regex> <pattern> [action] | remove <id> | list".to_owned(),
                aliases: vec!["filters".to_owned()],
                min_rank: 2.0,
                ..CommandSpec::new("filter", "Manage the chat filters")
            })
            .command(CommandSpec {
                usage: "<user>".to_owned(),
                min_rank: 2.0,
                ..CommandSpec::new("pardon", "Clear a user's strikes and lift the bot's mute")
            })
    }

    fn examples() -> Vec<ChatExample> {
        // Run with one configured filter (`links`) and a SQL service that answers.
        vec![
            ChatExample::new("!filter list", "links (link → warn) [config]"),
            ChatExample::new(
                "!filter add word darn",
                "Filter #1 added: word1 (word \"darn\" → warn)",
            ),
            ChatExample::new("!filter add regex \"fr[e3]{2} stuff\" kick", "→ kick)"),
            ChatExample::new(
                "!filter add regex (unclosed",
                "Filter refused: bad regular expression",
            ),
            ChatExample::new("!filter add caps", "Usage: !filter add"),
            ChatExample::new("!filter remove links", "comes from plugins.toml"),
            ChatExample::new("!filter remove 42", "There is no filter 42"),
            ChatExample::new("!pardon bob", "bob has no strikes."),
            ChatExample::new("!pardon <b>x</b>", "That is not a user name"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if routing::is_failure(event) {
            return Ok(());
        }
        let subject = event.subject();
        if subject == TICK {
            self.tick();
            return Ok(());
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return match cmd.command.as_str() {
                "filter" => self.filter_command(&cmd),
                "pardon" => self.pardon(&cmd),
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
            model: self.model.clone(),
            live: self.live.iter().map(|(r, _)| r.clone()).collect(),
            loaded: self.loaded,
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Moderation);

#[cfg(test)]
mod tests;
