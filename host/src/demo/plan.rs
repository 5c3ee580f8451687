//! The demo's plan: which plugins it runs and what its guide user does, read from
//! `demo.toml` beside this file (compiled in), and the `plugins.toml` it writes for the
//! demo host. Adding a plugin to the demo is an edit of `demo.toml`, not of code.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use toml::{Table, Value};

/// The shipped plan.
pub const DEMO_TOML: &str = include_str!("demo.toml");

/// The plugins `daz dev` runs beside the plugin being written.
pub const DEV_TOML: &str = include_str!("dev.toml");

/// The whole plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The login name of the user the demo drives.
    pub guide: String,
    /// The plugins, in load order.
    pub plugins: Vec<DemoPlugin>,
    /// What the guide does once the bot is in the channel.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One plugin of the demo.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoPlugin {
    /// Its name on the bus (the `[plugins.<name>]` table).
    pub name: String,
    /// The cargo package its library is built from.
    pub package: String,
    /// One line on what it does, for the narration.
    #[serde(default)]
    pub about: String,
    /// Its `[plugins.<name>.config]` table (`{dir}` stands for the demo's directory).
    #[serde(default)]
    pub config: Table,
}

impl DemoPlugin {
    /// The library's file name: `lib<package with - as _>.so`.
    pub fn file(&self) -> String {
        format!("lib{}.so", self.package.replace('-', "_"))
    }
}

/// One step of the guide.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Say this in the channel.
    #[serde(default)]
    pub chat: Option<String>,
    /// Send this to the bot as a private message.
    #[serde(default)]
    pub pm: Option<String>,
    /// Hot-swap this plugin, with [`Step::config`] merged into its configuration.
    #[serde(default)]
    pub swap: Option<String>,
    /// For a swap: the keys that change in the plugin's configuration.
    #[serde(default)]
    pub config: Table,
    /// Text the bot's answer to the guide must contain (chat and PM steps).
    #[serde(default)]
    pub expect: Option<String>,
    /// Where that answer comes: `chat` or `pm` (default: where the step spoke).
    #[serde(default)]
    pub reply: Option<Reply>,
    /// Printed before the step.
    #[serde(default)]
    pub note: Option<String>,
    /// Printed once the step succeeded.
    #[serde(default)]
    pub check: Option<String>,
}

/// Where the bot answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// In the channel.
    Chat,
    /// By PM to the guide.
    Pm,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind<'a> {
    /// Chat in the channel, then wait for an answer (in chat unless `reply` says PM)
    /// containing `expect`.
    Chat {
        text: &'a str,
        expect: &'a str,
        reply: Reply,
    },
    /// PM the bot, then wait for an answer (by PM unless `reply` says chat) containing
    /// `expect`.
    Pm {
        text: &'a str,
        expect: &'a str,
        reply: Reply,
    },
    /// Hot-swap a plugin.
    Swap { plugin: &'a str },
}

impl Step {
    /// What the step does (the plan is checked by [`Plan::parse`], so exactly one of
    /// `chat`, `pm`, `swap` is set, with `expect` for the first two).
    pub fn kind(&self) -> StepKind<'_> {
        let expect = self.expect.as_deref().unwrap_or_default();
        match (&self.chat, &self.pm, &self.swap) {
            (Some(text), _, _) => StepKind::Chat {
                text,
                expect,
                reply: self.reply.unwrap_or(Reply::Chat),
            },
            (_, Some(text), _) => StepKind::Pm {
                text,
                expect,
                reply: self.reply.unwrap_or(Reply::Pm),
            },
            (_, _, Some(plugin)) => StepKind::Swap { plugin },
            (None, None, None) => StepKind::Swap { plugin: "" },
        }
    }

    /// A short label for the narration and the report (`!help`, `PM !about`, `swap
    /// example`).
    pub fn label(&self) -> String {
        match self.kind() {
            StepKind::Chat { text, .. } => text.to_owned(),
            StepKind::Pm { text, .. } => format!("PM {text}"),
            StepKind::Swap { plugin } => format!("swap {plugin}"),
        }
    }
}

impl Plan {
    /// The shipped plan.
    pub fn shipped() -> anyhow::Result<Plan> {
        Plan::parse(DEMO_TOML).context("the shipped demo plan (host/src/demo/demo.toml)")
    }

    /// What `daz dev` runs beside the plugin being written (no steps).
    pub fn dev() -> anyhow::Result<Plan> {
        Plan::parse(DEV_TOML).context("the shipped dev plan (host/src/demo/dev.toml)")
    }

    /// Parses and checks a plan.
    pub fn parse(text: &str) -> anyhow::Result<Plan> {
        let plan: Plan = toml::from_str(text)?;
        anyhow::ensure!(!plan.guide.trim().is_empty(), "guide must be a user name");
        anyhow::ensure!(
            !plan.plugins.is_empty(),
            "the demo needs at least one plugin"
        );
        for (i, p) in plan.plugins.iter().enumerate() {
            anyhow::ensure!(
                !p.name.is_empty()
                    && p.name.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '_'
                        || c == '-'),
                "plugin {}: name {:?} must be a-z, 0-9, '-', '_'",
                i + 1,
                p.name
            );
            anyhow::ensure!(
                !plan.plugins[..i].iter().any(|q| q.name == p.name),
                "plugin {:?} is listed twice",
                p.name
            );
        }
        for (i, s) in plan.steps.iter().enumerate() {
            let n = i + 1;
            let set = [s.chat.is_some(), s.pm.is_some(), s.swap.is_some()]
                .into_iter()
                .filter(|b| *b)
                .count();
            anyhow::ensure!(set == 1, "step {n}: set exactly one of chat, pm, swap");
            match s.kind() {
                StepKind::Chat { expect, .. } | StepKind::Pm { expect, .. } => {
                    anyhow::ensure!(
                        !expect.is_empty(),
                        "step {n}: say what the bot's answer contains (expect = \"…\")"
                    );
                }
                StepKind::Swap { plugin } => anyhow::ensure!(
                    plan.plugins.iter().any(|p| p.name == plugin),
                    "step {n}: swap {plugin:?} is not one of the demo's plugins"
                ),
            }
        }
        Ok(plan)
    }

    /// The demo host's `plugins.toml`: plugins from `dir/plugins`, HTTP on a free
    /// loopback port with the token in `dir/admin-token`, one room on the simulator at
    /// `site`. `swapped` holds configuration changes made by swap steps so far.
    pub fn plugins_toml(&self, dir: &Path, site: &str, swapped: &[(String, Table)]) -> String {
        let dir_text = dir.display().to_string();
        let mut plugins = Table::new();
        for p in &self.plugins {
            let mut config = p.config.clone();
            for (name, changes) in swapped {
                if *name == p.name {
                    config.extend(changes.clone());
                }
            }
            let mut table = Table::new();
            table.insert("file".into(), Value::String(p.file()));
            if !config.is_empty() {
                table.insert("config".into(), substitute(Value::Table(config), &dir_text));
            }
            plugins.insert(p.name.clone(), Value::Table(table));
        }
        let mut root = Table::new();
        root.insert("plugins".into(), Value::Table(plugins));
        let plugins = toml::to_string(&root).unwrap_or_default();
        format!(
            r#"# Written by `daz demo`.
[host]
plugin_dir = "plugins"
runtime_dir = "runtime"
preflight = false
watch = false

[http]
listen = "127.0.0.1:0"
token_file = "admin-token"

[[rooms]]
name = "demo"
site = {site:?}
channel = "demo"
username = "bot"
password_file = "bot.password"

{plugins}"#
        )
    }
}

/// `{dir}` replaced by `dir` in every string of `value`.
fn substitute(value: Value, dir: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{dir}", dir)),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| substitute(v, dir)).collect()),
        Value::Table(t) => Value::Table(
            t.into_iter()
                .map(|(k, v)| (k, substitute(v, dir)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_shipped_plan_runs_every_plugin_of_the_default_configuration() {
        let plan = Plan::shipped().unwrap();
        let default = Config::parse(
            include_str!("../../../plugins.toml"),
            Path::new("plugins.toml"),
        )
        .unwrap();
        for name in default.plugins.keys() {
            assert!(
                plan.plugins.iter().any(|p| p.name == *name),
                "the default plugin {name} is missing from demo.toml"
            );
        }
        let labels: Vec<String> = plan.steps.iter().map(Step::label).collect();
        for want in [
            "!help",
            "!seen mod_mia",
            "!np",
            "!stats",
            "PM !about",
            "!hello",
            "swap example",
        ] {
            assert!(labels.iter().any(|l| l == want), "{want} in {labels:?}");
        }
    }

    #[test]
    fn the_written_configuration_is_valid_and_swaps_merge() {
        let plan = Plan::shipped().unwrap();
        let dir = Path::new("/tmp/demo-x");
        let mut changes = Table::new();
        changes.insert("greeting".into(), Value::String("Hi again".into()));
        let text = plan.plugins_toml(dir, "http://127.0.0.1:1", &[("example".into(), changes)]);
        let c = Config::parse(&text, &dir.join("plugins.toml")).unwrap();
        assert_eq!(c.rooms[0].room_name(), "demo");
        assert!(!c.host.preflight);
        assert_eq!(c.plugins.len(), plan.plugins.len());
        assert!(
            text.contains("database_url = \"sqlite:///tmp/demo-x/daz.db\""),
            "{text}"
        );
        assert!(text.contains("greeting = \"Hi again\""), "{text}");
        assert_eq!(plan.plugins[0].file(), "libdaz_plugin_storage.so");
    }

    #[test]
    fn the_dev_plan_has_the_router_and_storage_and_no_steps() {
        let plan = Plan::dev().unwrap();
        let names: Vec<&str> = plan.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["storage", "commands", "builtins"]);
        assert!(plan.steps.is_empty());
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let base =
            "guide = \"g\"\n[[plugins]]\nname = \"example\"\npackage = \"daz-plugin-example\"\n";
        let err =
            |extra: &str| format!("{:#}", Plan::parse(&format!("{base}{extra}")).unwrap_err());
        assert!(err("[[steps]]\nchat = \"!x\"\n").contains("expect"));
        assert!(
            err("[[steps]]\nchat = \"!x\"\npm = \"y\"\nexpect = \"z\"\n").contains("exactly one")
        );
        assert!(err("[[steps]]\nswap = \"nope\"\n").contains("not one of the demo's plugins"));
        assert!(err("[[steps]]\nchatt = \"!x\"\n").contains("chatt"));
    }
}
