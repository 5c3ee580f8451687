//! # daz-plugin-builtins — the built-in commands
//!
//! * `help [command|page]` — the commands the caller may use (their rank, chat or PM),
//!   in pages that each fit one chat message; or one command explained.
//! * `about` — the host's version and uptime, the loaded plugins and their versions.
//! * `uptime` — how long the host has been running.
//! * `ping` — answers `pong` (a liveness check through the whole pipeline).
//! * `plugins` (admin) — every configured plugin with its state and version.
//! * `reload <plugin>`, `enable <plugin>`, `disable <plugin>` (admin) — steer the host
//!   through its control plane (`host.plugins.*` requests).
//!
//! Commands arrive from the router (`command.<name>`), which has already checked the
//! caller's rank: the admin commands declare `min_rank` 3 (channel admin), and an
//! operator changes that in the router's `overrides` table (see `README.md`). Answers go
//! where the router says (chat or PM).
//!
//! The command list comes from the router (`commands.list`), so `help` shows exactly
//! what the router enforces, overrides included.

use std::{collections::BTreeMap, time::Duration};

use daz_feature_support::{text, time};
use daz_plugin_api::{
    prelude::*,
    routing::{self, Command},
};
use serde::{Deserialize, Serialize};

/// The rank the admin commands declare (channel admin).
pub const ADMIN_RANK: f64 = 3.0;

/// The `[plugins.builtins.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a request to the host or the router may take, ms.
    pub request_timeout_ms: u64,
    /// How long `reload` waits for the host to swap a plugin, ms.
    pub reload_timeout_ms: u64,
    /// The bot's name in `about`.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_timeout_ms: 3_000,
            reload_timeout_ms: 15_000,
            name: "daz".to_owned(),
        }
    }
}

/// What a hot reload keeps: how often each command was answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Answers per command.
    pub answered: BTreeMap<String, u64>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

/// The plugin instance.
pub struct Builtins {
    host: Host,
    config: Config,
    answered: BTreeMap<String, u64>,
}

/// One command of the router's `commands.list` reply.
#[derive(Debug, Deserialize)]
struct Listed {
    #[serde(flatten)]
    spec: CommandSpec,
}

#[derive(Debug, Deserialize)]
struct ListReply {
    prefix: String,
    commands: Vec<Listed>,
}

#[derive(Debug, Deserialize)]
struct HostInfo {
    version: String,
    uptime_ms: i64,
}

/// One plugin of `host.plugins.list`, as far as these commands read it.
#[derive(Debug, Deserialize)]
struct PluginLine {
    name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

impl PluginLine {
    fn version(&self) -> Option<String> {
        self.version.clone().or_else(|| {
            self.meta
                .as_ref()
                .and_then(|m| m["version"].as_str().map(str::to_owned))
        })
    }

    fn state(&self) -> String {
        match (&self.state, self.enabled) {
            (_, Some(false)) => "disabled".to_owned(),
            (Some(s), _) => s.clone(),
            (None, _) => "unknown".to_owned(),
        }
    }
}

impl Builtins {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn say(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    fn request(&self, subject: &str, payload: &serde_json::Value) -> Result<Reply> {
        self.host
            .request(Message::new(subject, payload)?, self.timeout())
    }

    fn plugin_list(&self) -> Result<Vec<PluginLine>> {
        #[derive(Deserialize)]
        struct List {
            plugins: Vec<PluginLine>,
        }
        let list: List = self
            .request("host.plugins.list", &serde_json::json!({}))?
            .json()?;
        Ok(list.plugins)
    }

    fn help(&self, cmd: &Command) -> Result<()> {
        let reply = self.request(
            "commands.list",
            &serde_json::json!({"rank": cmd.effective_rank(), "via": cmd.via}),
        );
        let list: ListReply = match reply.and_then(|r| r.json()) {
            Ok(l) => l,
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "help: the router's command list is not available",
                    &[("error", e.message())],
                );
                return self.say(cmd, "The command list is not available right now.");
            }
        };
        let p = &list.prefix;
        let arg = cmd
            .args
            .first()
            .map(|a| a.trim_start_matches(p.as_str()).to_lowercase());
        let page: Option<usize> = arg.as_deref().and_then(|a| a.parse().ok());
        if let (Some(name), None) = (&arg, page) {
            let found = list
                .commands
                .iter()
                .find(|c| c.spec.name == *name || c.spec.aliases.iter().any(|a| a == name));
            let line = match found {
                None => format!("There is no command {p}{name} you can use."),
                Some(c) => {
                    let s = &c.spec;
                    let mut line = format!("{p}{}", s.name);
                    if !s.usage.is_empty() {
                        line.push(' ');
                        line.push_str(&s.usage);
                    }
                    line.push_str(" — ");
                    line.push_str(if s.description.is_empty() {
                        "no description"
                    } else {
                        &s.description
                    });
                    if !s.aliases.is_empty() {
                        let aliases: Vec<String> =
                            s.aliases.iter().map(|a| format!("{p}{a}")).collect();
                        line.push_str(&format!(" (also {})", aliases.join(", ")));
                    }
                    match s.scope {
                        CommandScope::Chat => line.push_str(" [chat only]"),
                        CommandScope::Pm => line.push_str(" [PM only]"),
                        CommandScope::Both => {}
                    }
                    line
                }
            };
            return self.say(cmd, &line);
        }
        let names: Vec<String> = list
            .commands
            .iter()
            .map(|c| format!("{p}{}", c.spec.name))
            .collect();
        if names.is_empty() {
            return self.say(cmd, "No commands are available to you.");
        }
        let pages = text::pages(
            |n, of| format!("Commands ({n}/{of}, {p}help <command> for more): "),
            &names,
            ", ",
            text::MAX_CHAT,
        );
        let want = page.unwrap_or(1).clamp(1, pages.len());
        self.say(cmd, &pages[want - 1])
    }

    fn host_info(&self) -> Result<HostInfo> {
        self.request("host.info", &serde_json::json!({}))?.json()
    }

    fn about(&self, cmd: &Command) -> Result<()> {
        let info = self.host_info();
        let plugins = self.plugin_list();
        let head = match &info {
            Ok(i) => format!(
                "{} {}, up {}. ",
                self.config.name,
                i.version,
                time::human(i.uptime_ms)
            ),
            Err(_) => format!("{}. ", self.config.name),
        };
        let line = match plugins {
            Ok(list) => {
                let items: Vec<String> = list
                    .iter()
                    .filter(|p| p.state() == "serving")
                    .map(|p| match p.version() {
                        Some(v) => format!("{} {v}", p.name),
                        None => p.name.clone(),
                    })
                    .collect();
                text::join_fitting(&format!("{head}Plugins: "), &items, ", ", text::MAX_CHAT)
            }
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "about: the plugin list is not available",
                    &[("error", e.message())],
                );
                format!("{head}The plugin list is not available right now.")
            }
        };
        self.say(cmd, &line)
    }

    fn uptime(&self, cmd: &Command) -> Result<()> {
        match self.host_info() {
            Ok(i) => self.say(cmd, &format!("Up {}.", time::human(i.uptime_ms))),
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "uptime: host.info is not available",
                    &[("error", e.message())],
                );
                self.say(cmd, "The uptime is not available right now.")
            }
        }
    }

    fn plugins(&self, cmd: &Command) -> Result<()> {
        let list = match self.plugin_list() {
            Ok(l) => l,
            Err(e) => return self.say(cmd, &format!("Cannot list the plugins: {e}")),
        };
        let items: Vec<String> = list
            .iter()
            .map(|p| match p.version() {
                Some(v) => format!("{} {v} {}", p.name, p.state()),
                None => format!("{} {}", p.name, p.state()),
            })
            .collect();
        let pages = text::pages(
            |n, of| {
                if of > 1 {
                    format!("Plugins ({n}/{of}): ")
                } else {
                    "Plugins: ".to_owned()
                }
            },
            &items,
            ", ",
            text::MAX_CHAT,
        );
        for page in pages {
            self.say(cmd, &page)?;
        }
        Ok(())
    }

    /// `reload`, `enable` or `disable` a plugin through the host's control plane.
    fn control(&self, cmd: &Command, action: &str) -> Result<()> {
        let Some(target) = cmd.args.first() else {
            return self.say(cmd, &format!("Usage: !{action} <plugin>"));
        };
        let subject = format!("host.plugins.{action}");
        let payload = serde_json::json!({ "name": target });
        let timeout = if action == "reload" {
            Duration::from_millis(self.config.reload_timeout_ms)
        } else {
            self.timeout()
        };
        let answer = self
            .host
            .request(Message::new(subject, &payload)?, timeout)
            .and_then(|r| r.json::<serde_json::Value>());
        let line = match answer {
            Ok(v) => {
                let detail = match &v["detail"] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "done".to_owned(),
                    other => other.to_string(),
                };
                format!("{action} {target}: {detail}")
            }
            Err(e) => format!("{action} {target} failed: {}", e.message()),
        };
        self.host.log(
            Level::Info,
            "admin command",
            &[
                ("action", action),
                ("plugin", target),
                ("by", &cmd.username),
                ("room", &cmd.room),
            ],
        );
        self.say(cmd, &line)
    }
}

impl Plugin for Builtins {
    const NAME: &'static str = "builtins";
    const DESCRIPTION: &'static str =
        "Built-in commands: help, about, uptime, ping, plugins, reload, enable, disable";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        for c in Self::manifest().commands {
            host.subscribe(&routing::subject(&c.name))?;
        }
        Ok(Builtins {
            host,
            config,
            answered: previous.map(|s| s.answered).unwrap_or_default(),
        })
    }

    fn manifest() -> Manifest {
        let admin = |name: &str, description: &str| CommandSpec {
            usage: "<plugin>".to_owned(),
            min_rank: ADMIN_RANK,
            ..CommandSpec::new(name, description)
        };
        Manifest::default()
            .command(CommandSpec {
                usage: "[command|page]".to_owned(),
                aliases: vec!["commands".to_owned()],
                user_cooldown_ms: 3_000,
                ..CommandSpec::new("help", "Lists the commands you can use, or explains one")
            })
            .command(CommandSpec {
                user_cooldown_ms: 5_000,
                ..CommandSpec::new("about", "Version, uptime and the loaded plugins")
            })
            .command(CommandSpec::new(
                "uptime",
                "How long the bot has been running",
            ))
            .command(CommandSpec::new("ping", "Answers pong"))
            .command(CommandSpec {
                usage: String::new(),
                ..admin("plugins", "Lists the plugins with their state and version")
            })
            .command(admin("reload", "Reloads a plugin from its file"))
            .command(admin("enable", "Starts a disabled plugin"))
            .command(admin("disable", "Stops a plugin"))
    }

    fn examples() -> Vec<ChatExample> {
        // Run with the responders of `tests::fake_host`.
        vec![
            ChatExample::new("!ping", "pong"),
            ChatExample::new("!uptime", "Up 2h 5m."),
            ChatExample::new("!about", "daz 0.1.0, up 2h 5m. Plugins: builtins 0.1.0"),
            ChatExample::new(
                "!help",
                "Commands (1/1, !help <command> for more): !help, !ping",
            ),
            ChatExample::new("!help ping", "!ping — Answers pong"),
            ChatExample::new(
                "!plugins",
                "Plugins: builtins 0.1.0 serving, old 0.0.9 disabled",
            ),
            ChatExample::new("!reload", "Usage: !reload <plugin>"),
            ChatExample::new("!reload example", "reload example: example 0.2.0 serving"),
            ChatExample::silent("!nosuchcommand"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        // Our requests the host could not deliver: the retry plugin, which subscribes to
        // failure reports, redoes them.
        if routing::is_failure(event) {
            return Ok(());
        }
        let cmd = Command::from_event(event)?;
        match cmd.command.as_str() {
            "help" => self.help(&cmd)?,
            "about" => self.about(&cmd)?,
            "uptime" => self.uptime(&cmd)?,
            "ping" => self.say(&cmd, "pong")?,
            "plugins" => self.plugins(&cmd)?,
            "reload" | "enable" | "disable" => self.control(&cmd, &cmd.command)?,
            _ => return Ok(()),
        }
        *self.answered.entry(cmd.command).or_default() += 1;
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            answered: self.answered.clone(),
        }))
    }
}

export_plugin!(Builtins);

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{
        routing::testing::{check_command_examples, command_for, feed},
        testing::Harness,
    };

    /// Responders playing the host's control plane and the router.
    fn fake_host(h: &mut Harness<Builtins>) {
        h.respond("host.info", |_| {
            Ok(serde_json::json!({"version": "0.1.0", "started_ms": 0, "uptime_ms": 7_500_000}))
        });
        h.respond("host.plugins.list", |_| {
            Ok(serde_json::json!({"plugins": [
                {"name": "builtins", "enabled": true, "state": "serving", "version": "0.1.0"},
                {"name": "old", "enabled": false, "state": "stopped", "meta": {"version": "0.0.9"}}
            ]}))
        });
        h.respond("host.plugins.reload", |req| {
            let name = req["name"].as_str().unwrap_or_default().to_owned();
            Ok(serde_json::json!({"ok": true, "detail": format!("{name} 0.2.0 serving (was 0.1.0)")}))
        });
        h.respond("host.plugins.disable", |req| {
            Err(Error::msg(format!(
                "no plugin named {} is configured",
                req["name"].as_str().unwrap_or_default()
            )))
        });
        h.respond("commands.list", |req| {
            let rank = req["rank"].as_f64().unwrap_or(0.0);
            let mut commands = vec![
                serde_json::json!({"plugin": "builtins", "name": "help", "aliases": ["commands"], "usage": "[command|page]", "description": "Lists the commands you can use, or explains one"}),
                serde_json::json!({"plugin": "builtins", "name": "ping", "description": "Answers pong"}),
            ];
            if rank >= 3.0 {
                commands.push(serde_json::json!({"plugin": "builtins", "name": "reload", "usage": "<plugin>", "min_rank": 3.0, "description": "Reloads a plugin from its file", "scope": "pm"}));
            }
            Ok(serde_json::json!({"prefix": "!", "commands": commands}))
        });
    }

    fn run(h: &mut Harness<Builtins>, line: &str, rank: f64) -> Vec<String> {
        let now = h.now_ms();
        let cmd = command_for::<Builtins>(line, "alice", rank, now).unwrap();
        feed(h, &cmd).unwrap();
        h.chat_replies()
    }

    #[test]
    fn declared_examples_hold() {
        let failures =
            check_command_examples::<Builtins>(serde_json::json!({}), fake_host).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn help_shows_what_the_callers_rank_allows() {
        let mut h = Harness::<Builtins>::new(serde_json::json!({})).unwrap();
        fake_host(&mut h);
        let r = run(&mut h, "!help", 3.0);
        assert!(r[0].contains("!reload"), "{r:?}");
        let r = run(&mut h, "!help reload", 3.0);
        assert_eq!(
            r[1],
            "!reload <plugin> — Reloads a plugin from its file [PM only]"
        );
        let r = run(&mut h, "!commands !commands", 0.0);
        assert!(r[2].contains("(also !commands)"), "{r:?}");
        let r = run(&mut h, "!help reload", 0.0);
        assert_eq!(r[3], "There is no command !reload you can use.");
    }

    #[test]
    fn help_pages_fit_one_message_each() {
        let mut h = Harness::<Builtins>::new(serde_json::json!({})).unwrap();
        h.respond("commands.list", |_| {
            let commands: Vec<serde_json::Value> = (0..60)
                .map(|i| serde_json::json!({"plugin": "p", "name": format!("command{i:02}")}))
                .collect();
            Ok(serde_json::json!({"prefix": "!", "commands": commands}))
        });
        let first = run(&mut h, "!help", 0.0)[0].clone();
        assert!(first.starts_with("Commands (1/"), "{first}");
        let pages: usize = first["Commands (1/".len()..]
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pages >= 2);
        let mut seen = String::new();
        for page in 1..=pages {
            let r = run(&mut h, &format!("!help {page}"), 0.0);
            let line = r.last().unwrap();
            assert!(text::chat_len(line) <= text::MAX_CHAT, "{line}");
            seen.push_str(line);
        }
        for i in 0..60 {
            assert!(seen.contains(&format!("!command{i:02}")), "command{i:02}");
        }
        // A page past the end shows the last one.
        let r = run(&mut h, "!help 99", 0.0);
        assert!(
            r.last()
                .unwrap()
                .starts_with(&format!("Commands ({pages}/{pages}"))
        );
    }

    #[test]
    fn failures_are_told_not_hidden() {
        let mut h = Harness::<Builtins>::new(serde_json::json!({})).unwrap();
        fake_host(&mut h);
        let r = run(&mut h, "!disable nosuch", 3.0);
        assert!(
            r[0].starts_with("disable nosuch failed: ") && r[0].contains("no plugin named nosuch"),
            "{r:?}"
        );
        let mut bare = Harness::<Builtins>::new(serde_json::json!({})).unwrap();
        let r = run(&mut bare, "!help", 0.0);
        assert_eq!(r[0], "The command list is not available right now.");
        let r = run(&mut bare, "!uptime", 0.0);
        assert_eq!(r[1], "The uptime is not available right now.");
        let r = run(&mut bare, "!about", 0.0);
        assert_eq!(r[2], "daz. The plugin list is not available right now.");
    }

    #[test]
    fn answers_follow_the_routers_reply_choice_and_counts_survive_a_reload() {
        let mut h = Harness::<Builtins>::new(serde_json::json!({})).unwrap();
        let now = h.now_ms();
        let mut cmd = command_for::<Builtins>("!ping", "bob", 0.0, now).unwrap();
        cmd.reply = routing::Via::Pm;
        feed(&mut h, &cmd).unwrap();
        let out = h.take_published();
        assert_eq!(out[0].subject, "cytube.out.testroom.pm");
        assert_eq!(out[0].payload["to"], "bob");
        assert_eq!(out[0].payload["msg"], "pong");
        h.reload().unwrap();
        feed(&mut h, &cmd).unwrap();
        let state: serde_json::Value = serde_json::from_slice(&h.export_state().unwrap()).unwrap();
        assert_eq!(state["data"]["answered"]["ping"], 2);
    }
}
