//! # daz-plugin-commands — the command router
//!
//! Reads every chat line and private message, turns the ones that start with the
//! prefix into commands, checks them against what the plugins declared, and publishes
//! each allowed command as a [`daz_plugin_api::routing::Command`] on
//! `command.<canonical name>` for the plugin that answers it. Unknown commands are
//! ignored. The settings are documented in `README.md` and [`config::Config`].
//!
//! # Layout
//!
//! * [`config`] — the plugin's settings: prefix, limits, admin list, overrides, canned
//!   responses.
//! * [`registry`] — declarations by plugin, overrides applied, indexed by name and alias.
//! * this file — the plugin: what it ignores, rank checks against the live room state,
//!   cooldowns, publishing, keeping the registry current.
//!
//! # Keeping the registry current
//!
//! At start (on a timer, once the instance serves) and every `refresh_ms` it rebuilds
//! the registry from `host.plugins.list`; in between it follows the host's
//! `host.plugin.<name>.loaded` (declarations of the version now serving: load, hot
//! reload, rollback, re-enable) and `.stopped` / `.quarantined` (the plugin's commands
//! disappear). A hot reload of the router hands the registry and the cooldowns over.
//!
//! # What is ignored
//!
//! Lines replayed from the channel's backlog on join (tag `backlog`), the bot's own
//! lines (tag `self`), lines older than `max_age_ms` by the server's clock, lines that
//! do not parse (too long, too many arguments, an unclosed quote), unknown commands,
//! disabled commands, and commands used where their scope does not allow (a chat-only
//! command by PM).

pub mod config;
pub mod registry;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use daz_feature_support::rank;
use daz_plugin_api::{
    cytube::{ServerEvent, unescape_chat},
    prelude::*,
    routing::{self, Command, Via},
};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, ReplyTo},
    registry::{Declarations, Entry, Registry},
};

/// Subject of the refresh timer.
const REFRESH: &str = "commands.refresh";
/// Subject of the registry request other plugins (`help`) make.
pub const LIST_SUBJECT: &str = "commands.list";

/// The plugin instance.
pub struct Router {
    host: Host,
    config: Config,
    registry: Registry,
    /// Last use, unix ms, by `room\0command` (global) and `room\0command\0user`.
    cooldowns: HashMap<String, i64>,
    /// Last refusal told, unix ms, by `room\0user`.
    denied: HashMap<String, i64>,
    refreshes: u64,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The declarations the registry was built from.
    pub declarations: Declarations,
    /// Cooldown clocks.
    pub cooldowns: Vec<(String, i64)>,
    /// When refusals were last told.
    pub denied: Vec<(String, i64)>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// The `commands.list` request: filters are optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListRequest {
    /// Only commands this rank may use.
    pub rank: Option<f64>,
    /// Only commands usable this way.
    pub via: Option<Via>,
}

/// One command in the `commands.list` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    /// The plugin that answers it.
    pub plugin: String,
    /// The declaration with the overrides applied.
    #[serde(flatten)]
    pub spec: CommandSpec,
}

/// The `commands.list` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    /// The prefix commands start with.
    pub prefix: String,
    /// The commands, by name.
    pub commands: Vec<Listed>,
}

/// Payload of `host.plugin.<name>.loaded` (the fields the router reads).
#[derive(Deserialize)]
struct Loaded {
    name: String,
    #[serde(default)]
    manifest: Manifest,
}

/// What a line came as.
struct Line<'a> {
    room: &'a str,
    user: String,
    text: String,
    time: i64,
    via: Via,
    event_id: &'a str,
}

impl Router {
    fn count(&self, name: &str, help: &str, labels: &[(&str, &str)]) {
        let _ = self.host.counter_add(name, help, labels, 1.0);
    }

    fn outcome(&self, command: &str, outcome: &str) {
        self.count(
            "commands_total",
            "Commands typed, by command and what the router did",
            &[("command", command), ("outcome", outcome)],
        );
    }

    fn ignored(&self, reason: &str) {
        self.count(
            "commands_ignored_total",
            "Lines that looked like commands but were ignored, by reason",
            &[("reason", reason)],
        );
    }

    fn rebuild(&mut self) {
        for problem in self.registry.rebuild(&self.config) {
            self.host.warn(&problem);
        }
        let _ = self.host.gauge_set(
            "commands_registered",
            "Commands in the router's registry",
            &[],
            self.registry.len() as f64,
        );
    }

    /// Rebuilds the registry from `host.plugins.list`.
    fn refresh(&mut self) -> Result<()> {
        self.refreshes += 1;
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let reply = self.host.request(
            Message::new("host.plugins.list", &serde_json::json!({}))?,
            timeout,
        )?;
        let list: serde_json::Value = reply.json()?;
        let mut plugins = BTreeMap::new();
        for p in list["plugins"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let Some(name) = p["name"].as_str() else {
                continue;
            };
            let serving = p["state"].as_str().is_none_or(|s| s == "serving")
                && p["enabled"].as_bool().unwrap_or(true);
            if !serving || name == self.host.plugin_name() {
                continue;
            }
            let manifest = p
                .get("manifest")
                .filter(|m| !m.is_null())
                .or_else(|| p.get("meta").and_then(|m| m.get("manifest")))
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let manifest: Manifest = serde_json::from_value(manifest).unwrap_or_default();
            plugins.insert(name.to_owned(), manifest.commands);
        }
        if self.registry.replace_all(plugins) {
            self.rebuild();
        }
        Ok(())
    }

    fn on_lifecycle(&mut self, event: &Event<'_>) -> Result<()> {
        // host.plugin.<name>.<what>
        let tokens: Vec<&str> = event.subject().split('.').collect();
        let [_, _, name, what] = tokens.as_slice() else {
            return Ok(());
        };
        if *name == self.host.plugin_name() {
            return Ok(());
        }
        let changed = match *what {
            "loaded" => {
                let loaded: Loaded = event.json()?;
                self.registry.set(&loaded.name, loaded.manifest.commands)
            }
            "stopped" | "quarantined" => self.registry.remove(name),
            _ => false,
        };
        if changed {
            self.rebuild();
        }
        Ok(())
    }

    fn list(&self, req: &ListRequest) -> ListReply {
        let commands = self
            .registry
            .entries()
            .filter(|e| req.rank.is_none_or(|r| r >= e.spec.min_rank))
            .filter(|e| match (req.via, e.spec.scope) {
                (None, _) | (_, CommandScope::Both) => true,
                (Some(Via::Chat), s) => s == CommandScope::Chat,
                (Some(Via::Pm), s) => s == CommandScope::Pm,
            })
            .map(|e| Listed {
                plugin: e.plugin.clone(),
                spec: e.spec.clone(),
            })
            .collect();
        ListReply {
            prefix: self.config.prefix.clone(),
            commands,
        }
    }

    /// The caller's rank from the host's live room state; 0 when unknown (an
    /// anonymous viewer, a room the host does not know). A keyed lookup of one user:
    /// its cost does not grow with the room.
    fn rank_of(&self, room: &str, user: &str) -> f64 {
        self.host
            .user_rank(room, user)
            .ok()
            .flatten()
            .unwrap_or(0.0)
    }

    fn on_line(&mut self, line: Line<'_>) -> Result<()> {
        let now = self.host.now_ms();
        if line.time > 0
            && now - line.time > i64::try_from(self.config.max_age_ms).unwrap_or(i64::MAX)
        {
            if line.text.trim_start().starts_with(&self.config.prefix) {
                self.ignored("stale");
            }
            return Ok(());
        }
        let parsed = match parse_command(&line.text, &self.config.prefix, self.config.limits()) {
            Ok(p) => p,
            Err(daz_plugin_api::command_line::NotACommand::NoPrefix) => return Ok(()),
            Err(daz_plugin_api::command_line::NotACommand::TooLong) => {
                self.ignored("too_long");
                return Ok(());
            }
            Err(daz_plugin_api::command_line::NotACommand::TooManyArgs) => {
                self.ignored("too_many_args");
                return Ok(());
            }
            Err(daz_plugin_api::command_line::NotACommand::UnclosedQuote) => {
                self.ignored("unclosed_quote");
                return Ok(());
            }
        };
        let Some(entry) = self.registry.lookup(&parsed.name).cloned() else {
            self.ignored("unknown");
            return Ok(());
        };
        let name = entry.spec.name.clone();
        let scope_ok = match (entry.spec.scope, line.via) {
            (CommandScope::Both, _) => true,
            (CommandScope::Chat, via) => via == Via::Chat,
            (CommandScope::Pm, via) => via == Via::Pm,
        };
        if !scope_ok {
            self.outcome(&name, "wrong_scope");
            return Ok(());
        }
        let admin = self.config.is_admin(&line.user);
        let rank = self.rank_of(line.room, &line.user);
        let reply = match entry.reply {
            ReplyTo::Same => line.via,
            ReplyTo::Chat => Via::Chat,
            ReplyTo::Pm => Via::Pm,
        };
        let cmd = Command {
            command: name.clone(),
            invoked: parsed.name,
            args: parsed.args,
            rest: parsed.rest,
            username: line.user,
            rank,
            admin,
            room: line.room.to_owned(),
            via: line.via,
            reply,
            msg: line.text,
            time: if line.time > 0 { line.time } else { now },
            event_id: line.event_id.to_owned(),
        };
        if !admin && rank < entry.spec.min_rank {
            self.outcome(&name, "denied_rank");
            self.tell_denied(&cmd, &entry, now)?;
            return Ok(());
        }
        if !admin && self.on_cooldown(&cmd, &entry, now) {
            self.outcome(&name, "cooldown");
            return Ok(());
        }
        if let Some(text) = &entry.text {
            routing::reply(&self.host, &cmd, text)?;
            self.outcome(&name, "answered");
            return Ok(());
        }
        let published = self.host.publish(cmd.to_message()?)?;
        if published.delivered == 0 {
            self.outcome(&name, "no_subscriber");
            self.host.log(
                Level::Warn,
                "a declared command reached no plugin; does its plugin subscribe to command.<name>?",
                &[("command", &name), ("plugin", &entry.plugin)],
            );
        } else {
            self.outcome(&name, "published");
        }
        Ok(())
    }

    fn tell_denied(&mut self, cmd: &Command, entry: &Entry, now: i64) -> Result<()> {
        if !self.config.deny_message {
            return Ok(());
        }
        let key = format!("{}\0{}", cmd.room, cmd.username.to_lowercase());
        let interval = i64::try_from(self.config.deny_interval_ms).unwrap_or(i64::MAX);
        if self
            .denied
            .get(&key)
            .is_some_and(|&last| now - last < interval)
        {
            return Ok(());
        }
        self.denied.insert(key, now);
        let text = format!(
            "{}, {}{} is for {} and above.",
            cmd.username,
            self.config.prefix,
            entry.spec.name,
            rank::name(entry.spec.min_rank)
        );
        routing::reply(&self.host, cmd, &text)?;
        Ok(())
    }

    /// Whether a cooldown blocks `cmd`; records the use when none does.
    fn on_cooldown(&mut self, cmd: &Command, entry: &Entry, now: i64) -> bool {
        let global_key = format!("{}\0{}", cmd.room, entry.spec.name);
        let user_key = format!("{global_key}\0{}", cmd.username.to_lowercase());
        let within = |map: &HashMap<String, i64>, key: &str, ms: u64| {
            ms > 0
                && map
                    .get(key)
                    .is_some_and(|&last| now - last < i64::try_from(ms).unwrap_or(i64::MAX))
        };
        if within(&self.cooldowns, &global_key, entry.spec.global_cooldown_ms)
            || within(&self.cooldowns, &user_key, entry.spec.user_cooldown_ms)
        {
            return true;
        }
        if entry.spec.global_cooldown_ms > 0 {
            self.cooldowns.insert(global_key, now);
        }
        if entry.spec.user_cooldown_ms > 0 {
            self.cooldowns.insert(user_key, now);
        }
        false
    }

    /// Forgets cooldown and refusal clocks too old to matter.
    fn prune(&mut self, now: i64) {
        let longest = self
            .registry
            .entries()
            .map(|e| e.spec.user_cooldown_ms.max(e.spec.global_cooldown_ms))
            .max()
            .unwrap_or(0);
        let keep = i64::try_from(longest).unwrap_or(i64::MAX);
        self.cooldowns.retain(|_, &mut t| now - t < keep);
        let deny = i64::try_from(self.config.deny_interval_ms).unwrap_or(i64::MAX);
        self.denied.retain(|_, &mut t| now - t < deny);
    }
}

impl Plugin for Router {
    const NAME: &'static str = "commands";
    const DESCRIPTION: &'static str = "Command router: parses chat and PM commands, checks ranks and cooldowns, publishes command.<name>";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        config.validate()?;
        for s in [
            "cytube.in.*.chatMsg",
            "cytube.in.*.pm",
            "host.plugin.*.loaded",
            "host.plugin.*.stopped",
            "host.plugin.*.quarantined",
            LIST_SUBJECT,
        ] {
            host.subscribe(s)?;
        }
        let previous = previous.unwrap_or_default();
        let (registry, problems) = Registry::new(previous.declarations, &config);
        for p in problems {
            host.warn(&p);
        }
        // The first refresh runs once this instance serves (a request from inside
        // `create` could wait on the host while it is busy loading plugins).
        host.timer_once(REFRESH, &serde_json::json!({}), Duration::ZERO)?;
        host.timer_every(
            REFRESH,
            &serde_json::json!({}),
            Duration::from_millis(config.refresh_ms),
        )?;
        Ok(Router {
            host,
            config,
            registry,
            cooldowns: previous.cooldowns.into_iter().collect(),
            denied: previous.denied.into_iter().collect(),
            refreshes: 0,
        })
    }

    fn examples() -> Vec<ChatExample> {
        // With the README's example configuration (see the unit test).
        vec![
            ChatExample::new("!rules", "Be kind"),
            ChatExample::new("!RULES", "Be kind").by("bob"),
            ChatExample::new("!r", "Be kind"),
            ChatExample::new("!modnote", "alice, !modnote is for moderators and above."),
            ChatExample::silent("!nosuchcommand"),
            ChatExample::silent("rules"),
            ChatExample::silent("!rules \"unclosed"),
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
            let now = self.host.now_ms();
            self.prune(now);
            if let Err(e) = self.refresh() {
                // The first refresh may come before the host's control plane answers;
                // the lifecycle events and the next refresh fill the registry.
                let level = if self.refreshes <= 1 {
                    Level::Debug
                } else {
                    Level::Warn
                };
                self.host.log(
                    level,
                    "cannot read the plugin list; the registry follows lifecycle events until the next refresh",
                    &[("error", e.message())],
                );
            }
            return Ok(());
        }
        if subject == LIST_SUBJECT {
            let req: ListRequest = serde_json::from_slice(event.payload()).unwrap_or_default();
            return self.host.reply(event, &self.list(&req));
        }
        if subject.starts_with("host.plugin.") {
            return self.on_lifecycle(event);
        }
        if event.is_backlog() || event.is_self() {
            return Ok(());
        }
        let Some(room) = event.room() else {
            return Ok(());
        };
        let line = match event.cytube_event()? {
            ServerEvent::ChatMsg(chat) => Line {
                room,
                user: chat.username,
                text: unescape_chat(&chat.msg),
                time: chat.time,
                via: Via::Chat,
                event_id: event.id(),
            },
            ServerEvent::Pm(pm) => Line {
                room,
                user: pm.username,
                text: unescape_chat(&pm.msg),
                time: pm.time,
                via: Via::Pm,
                event_id: event.id(),
            },
            _ => return Ok(()),
        };
        // Cytube's pseudo-users ([server], [voteskip]) never command the bot.
        if line.user.starts_with('[') {
            return Ok(());
        }
        self.on_line(line)
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            declarations: self.registry.declarations().clone(),
            cooldowns: self
                .cooldowns
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            denied: self.denied.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }))
    }
}

export_plugin!(Router);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{OwnedEvent, testing::Harness};

    /// The configuration of the README's example.
    fn example_config() -> serde_json::Value {
        serde_json::json!({
            "admins": ["root"],
            "responses": {
                "rules": {"text": "Be kind, no spoilers.", "aliases": ["r"], "description": "The channel rules"},
                "modnote": {"text": "Mods: check the queue.", "min_rank": 2}
            },
            "overrides": {"reload": {"min_rank": 2, "reply": "pm"}}
        })
    }

    fn room_with(users: &[(&str, f64)]) -> serde_json::Value {
        let users: Vec<serde_json::Value> = users
            .iter()
            .map(|(n, r)| serde_json::json!({"name": n, "rank": r}))
            .collect();
        serde_json::json!({"room": "lobby", "state": {"users": users}})
    }

    fn loaded(h: &mut Harness<Router>, plugin: &str, commands: serde_json::Value) {
        h.publish(
            &format!("host.plugin.{plugin}.loaded"),
            &serde_json::json!({"name": plugin, "version": "0.1.0", "manifest": {"commands": commands}}),
        )
        .unwrap();
    }

    fn router() -> Harness<Router> {
        let mut h = Harness::<Router>::new(example_config()).unwrap();
        h.set_room_state(
            "lobby",
            room_with(&[("alice", 0.0), ("mod", 2.0), ("boss", 3.0)]),
        );
        loaded(
            &mut h,
            "builtins",
            serde_json::json!([
                {"name": "ping", "description": "pong"},
                {"name": "reload", "min_rank": 3, "usage": "<plugin>"},
                {"name": "help", "aliases": ["h", "commands"], "user_cooldown_ms": 5000},
                {"name": "uptime", "global_cooldown_ms": 10000},
                {"name": "pmonly", "scope": "pm"}
            ]),
        );
        h.take_published();
        h
    }

    fn commands_out(h: &mut Harness<Router>) -> Vec<Command> {
        h.take_published()
            .into_iter()
            .filter(|m| m.subject.starts_with("command."))
            .map(|m| serde_json::from_value(m.payload).unwrap())
            .collect()
    }

    fn pm(h: &mut Harness<Router>, user: &str, msg: &str) {
        let time = h.now_ms();
        let mut ev = h.event(
            "cytube.in.lobby.pm",
            &serde_json::json!({"username": user, "msg": msg, "meta": {}, "time": time, "to": "bot"}),
        );
        ev.room = "lobby".into();
        h.feed(&ev).unwrap();
    }

    fn chat_event(h: &mut Harness<Router>, user: &str, msg: &str, time: i64) -> OwnedEvent {
        let mut ev = h.event(
            "cytube.in.lobby.chatMsg",
            &serde_json::json!({"username": user, "msg": msg, "meta": {}, "time": time}),
        );
        ev.room = "lobby".into();
        ev
    }

    #[test]
    fn declared_examples_hold() {
        let failures = Harness::<Router>::check_chat_examples(example_config()).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_command_is_published_parsed_with_the_callers_rank() {
        let mut h = router();
        h.chat("lobby", "Mod", "!H &quot;two words&quot; x")
            .unwrap();
        let out = commands_out(&mut h);
        assert_eq!(out.len(), 1);
        let c = &out[0];
        assert_eq!(c.command, "help");
        assert_eq!(c.invoked, "h");
        assert_eq!(c.args, vec!["two words", "x"]);
        assert_eq!(c.rest, "\"two words\" x");
        assert_eq!(c.msg, "!H \"two words\" x");
        assert_eq!((c.username.as_str(), c.rank), ("Mod", 2.0));
        assert_eq!(
            (c.room.as_str(), c.via, c.reply),
            ("lobby", Via::Chat, Via::Chat)
        );
        assert!(!c.admin);
        assert_eq!(
            h.metrics()["commands_total,command=help,outcome=published"],
            1.0
        );
    }

    #[test]
    fn unknown_commands_and_plain_chat_reach_nobody() {
        let mut h = router();
        h.chat("lobby", "alice", "!nosuch").unwrap();
        h.chat("lobby", "alice", "just chatting").unwrap();
        h.chat("lobby", "[server]", "!ping").unwrap();
        assert!(h.take_published().is_empty());
        assert_eq!(h.metrics()["commands_ignored_total,reason=unknown"], 1.0);
    }

    #[test]
    fn backlog_own_and_stale_lines_are_ignored() {
        let mut h = router();
        let now = h.now_ms();
        let mut ev = chat_event(&mut h, "alice", "!ping", now);
        ev.tags = vec!["backlog".into()];
        h.feed(&ev).unwrap();
        ev.tags = vec!["self".into()];
        h.feed(&ev).unwrap();
        let old = chat_event(&mut h, "alice", "!ping", now - 61_000);
        h.feed(&old).unwrap();
        assert!(h.take_published().is_empty());
        assert_eq!(h.metrics()["commands_ignored_total,reason=stale"], 1.0);
        // A line just inside the age limit goes through.
        let recent = chat_event(&mut h, "alice", "!ping", now - 59_000);
        h.feed(&recent).unwrap();
        assert_eq!(commands_out(&mut h).len(), 1);
    }

    #[test]
    fn ranks_come_from_the_live_room_state() {
        let mut h = router();
        h.chat("lobby", "alice", "!reload example").unwrap();
        // Not published; the override lowered reload to moderators, and alice is told
        // in a PM (the override sends reload's answers by PM).
        let out = h.take_published();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].subject, "cytube.out.lobby.pm");
        assert_eq!(
            out[0].payload["msg"],
            "alice, !reload is for moderators and above."
        );
        // Promoted in the room: now allowed.
        h.set_room_state("lobby", room_with(&[("alice", 2.0)]));
        h.chat("lobby", "alice", "!reload example").unwrap();
        let out = commands_out(&mut h);
        assert_eq!(out[0].reply, Via::Pm);
        assert_eq!(out[0].args, vec!["example"]);
        // Someone not in the user list counts as a guest.
        h.chat("lobby", "ghost", "!modnote").unwrap();
        assert_eq!(h.chat_replies().len(), 1);
    }

    #[test]
    fn rank_checks_use_the_keyed_user_lookup_not_the_whole_room() {
        let mut h = router();
        let before = h.room_reads();
        for _ in 0..5 {
            h.chat("lobby", "boss", "!reload example").unwrap();
        }
        assert_eq!(commands_out(&mut h).len(), 5);
        let (whole, keyed) = h.room_reads();
        assert_eq!(whole, before.0, "no whole-room JSON read per command");
        assert_eq!(keyed - before.1, 5, "one keyed lookup per command");
    }

    #[test]
    fn refusals_are_told_at_most_once_per_interval() {
        let mut h = router();
        h.chat("lobby", "alice", "!modnote").unwrap();
        h.chat("lobby", "alice", "!modnote").unwrap();
        assert_eq!(h.chat_replies().len(), 1);
        h.advance(Duration::from_millis(10_001)).unwrap();
        h.chat("lobby", "alice", "!modnote").unwrap();
        assert_eq!(h.chat_replies().len(), 2);
    }

    #[test]
    fn admins_pass_rank_checks_and_cooldowns() {
        let mut h = router();
        h.chat("lobby", "ROOT", "!reload x").unwrap();
        h.chat("lobby", "root", "!uptime").unwrap();
        h.chat("lobby", "root", "!uptime").unwrap();
        let out = commands_out(&mut h);
        assert_eq!(out.len(), 3);
        assert!(out[0].admin);
        assert_eq!(out[0].effective_rank(), routing::ADMIN_RANK);
    }

    #[test]
    fn cooldowns_per_user_and_per_channel() {
        let mut h = router();
        h.chat("lobby", "alice", "!help").unwrap();
        h.chat("lobby", "alice", "!commands").unwrap();
        h.chat("lobby", "mod", "!help").unwrap();
        assert_eq!(
            commands_out(&mut h).len(),
            2,
            "alice's second help waits 5 s"
        );
        h.chat("lobby", "alice", "!uptime").unwrap();
        h.chat("lobby", "mod", "!uptime").unwrap();
        assert_eq!(
            commands_out(&mut h).len(),
            1,
            "uptime waits 10 s channel-wide"
        );
        h.advance(Duration::from_millis(10_000)).unwrap();
        h.chat("lobby", "mod", "!uptime").unwrap();
        h.chat("lobby", "alice", "!help").unwrap();
        assert_eq!(commands_out(&mut h).len(), 2);
        assert_eq!(
            h.metrics()["commands_total,command=uptime,outcome=cooldown"],
            1.0
        );
    }

    #[test]
    fn pm_commands_are_answered_by_pm_and_scopes_hold() {
        let mut h = router();
        pm(&mut h, "alice", "!rules");
        let out = h.take_published();
        assert_eq!(out[0].subject, "cytube.out.lobby.pm");
        assert_eq!(out[0].payload["to"], "alice");
        pm(&mut h, "alice", "!pmonly");
        let out = commands_out(&mut h);
        assert_eq!((out[0].via, out[0].reply), (Via::Pm, Via::Pm));
        h.chat("lobby", "alice", "!pmonly").unwrap();
        assert!(h.take_published().is_empty());
    }

    #[test]
    fn declarations_follow_load_reload_and_unload() {
        let mut h = router();
        h.chat("lobby", "alice", "!seen bob").unwrap();
        assert!(commands_out(&mut h).is_empty());
        loaded(&mut h, "usertracker", serde_json::json!([{"name": "seen"}]));
        h.chat("lobby", "alice", "!seen bob").unwrap();
        assert_eq!(commands_out(&mut h)[0].command, "seen");
        // A new version declares another name: the old one is gone.
        loaded(
            &mut h,
            "usertracker",
            serde_json::json!([{"name": "lastseen"}]),
        );
        h.chat("lobby", "alice", "!seen bob").unwrap();
        h.chat("lobby", "alice", "!lastseen bob").unwrap();
        assert_eq!(commands_out(&mut h).len(), 1);
        h.publish(
            "host.plugin.usertracker.stopped",
            &serde_json::json!({"name": "usertracker", "reason": "disabled"}),
        )
        .unwrap();
        h.chat("lobby", "alice", "!lastseen bob").unwrap();
        assert!(commands_out(&mut h).is_empty());
        loaded(&mut h, "usertracker", serde_json::json!([{"name": "seen"}]));
        h.publish(
            "host.plugin.usertracker.quarantined",
            &serde_json::json!({"name": "usertracker", "error": "panics"}),
        )
        .unwrap();
        h.chat("lobby", "alice", "!seen bob").unwrap();
        assert!(commands_out(&mut h).is_empty());
    }

    #[test]
    fn the_registry_is_rebuilt_from_the_plugin_list() {
        let mut h = Harness::<Router>::new(serde_json::json!({})).unwrap();
        h.respond("host.plugins.list", |_| {
            Ok(serde_json::json!({"plugins": [
                {"name": "builtins", "enabled": true, "state": "serving",
                 "meta": {"manifest": {"commands": [{"name": "ping"}]}}},
                {"name": "usertracker", "enabled": true, "state": "serving",
                 "manifest": {"commands": [{"name": "seen"}]}},
                {"name": "gone", "enabled": false, "state": "stopped",
                 "meta": {"manifest": {"commands": [{"name": "old"}]}}}
            ]}))
        });
        assert_eq!(h.advance(Duration::ZERO).unwrap(), 1);
        for line in ["!ping", "!seen x", "!old"] {
            h.chat("lobby", "alice", line).unwrap();
        }
        let names: Vec<String> = commands_out(&mut h)
            .into_iter()
            .map(|c| c.command)
            .collect();
        assert_eq!(names, vec!["ping", "seen"]);
    }

    #[test]
    fn the_list_request_filters_by_rank_and_way() {
        let mut h = router();
        let reply = h
            .request(LIST_SUBJECT, &serde_json::json!({"rank": 0, "via": "chat"}))
            .unwrap()
            .unwrap();
        let list: ListReply = serde_json::from_value(reply.payload).unwrap();
        let names: Vec<&str> = list.commands.iter().map(|c| c.spec.name.as_str()).collect();
        assert_eq!(names, vec!["help", "ping", "rules", "uptime"]);
        assert_eq!(list.prefix, "!");
        let reply = h
            .request(LIST_SUBJECT, &serde_json::json!({}))
            .unwrap()
            .unwrap();
        let list: ListReply = serde_json::from_value(reply.payload).unwrap();
        assert_eq!(list.commands.len(), 7);
        let reload = list
            .commands
            .iter()
            .find(|c| c.spec.name == "reload")
            .unwrap();
        assert_eq!(
            (reload.plugin.as_str(), reload.spec.min_rank),
            ("builtins", 2.0)
        );
    }

    #[test]
    fn registry_and_cooldowns_survive_a_reload() {
        let mut h = router();
        h.chat("lobby", "alice", "!help").unwrap();
        assert_eq!(commands_out(&mut h).len(), 1);
        h.reload().unwrap();
        h.chat("lobby", "alice", "!help").unwrap();
        assert!(
            commands_out(&mut h).is_empty(),
            "the cooldown was handed over"
        );
        h.chat("lobby", "alice", "!ping").unwrap();
        assert_eq!(
            commands_out(&mut h).len(),
            1,
            "the registry was handed over"
        );
    }

    #[test]
    fn failure_reports_are_left_to_the_retry_plugin() {
        let mut h = router();
        let mut ev = h.event(
            "cytube.out.lobby.failed",
            &serde_json::json!({"original": {"event": "chatMsg", "payload": {"msg": "Be kind"}}, "code": "cooldown"}),
        );
        ev.source = "cytube:lobby".into();
        h.feed(&ev).unwrap();
        assert!(h.take_published().is_empty());
    }
}
