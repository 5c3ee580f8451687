//! The command registry: what every serving plugin declares, with the operator's
//! overrides applied, indexed by name and alias.
//!
//! Invariants:
//! * every key of the index is a lowercase, valid command name;
//! * a name or alias belongs to one command: when two plugins declare the same name,
//!   the plugin whose name sorts first keeps it (deterministic across restarts) and the
//!   conflict is reported by [`Registry::rebuild`];
//! * the router's own canned responses are registered under [`ROUTER`] and, on a
//!   conflict, give way to a plugin.

use std::collections::{BTreeMap, HashMap};

use daz_plugin_api::{CommandScope, CommandSpec, routing::valid_name};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ReplyTo};

/// The owner name of the router's canned responses.
pub const ROUTER: &str = "commands";

/// One command as the router enforces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The plugin that answers it.
    pub plugin: String,
    /// The declaration, overrides applied.
    pub spec: CommandSpec,
    /// Where the answer goes.
    pub reply: ReplyTo,
    /// The fixed answer of a canned response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What plugins declared, by plugin; the input of the index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Declarations {
    /// Commands per plugin.
    pub plugins: BTreeMap<String, Vec<CommandSpec>>,
}

/// The registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    declared: Declarations,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Registry {
    /// A registry holding `declared`, indexed with `config`'s overrides and responses.
    /// Returns it with the conflicts found.
    pub fn new(declared: Declarations, config: &Config) -> (Self, Vec<String>) {
        let mut r = Registry {
            declared,
            ..Registry::default()
        };
        let conflicts = r.rebuild(config);
        (r, conflicts)
    }

    /// What plugins declared.
    pub fn declarations(&self) -> &Declarations {
        &self.declared
    }

    /// Replaces what `plugin` declares. Returns whether anything changed.
    pub fn set(&mut self, plugin: &str, commands: Vec<CommandSpec>) -> bool {
        if plugin == ROUTER {
            return false;
        }
        if commands.is_empty() {
            return self.remove(plugin);
        }
        let old = self.declared.plugins.insert(plugin.to_owned(), commands);
        old.as_ref() != self.declared.plugins.get(plugin)
    }

    /// Forgets `plugin`'s commands. Returns whether it had any.
    pub fn remove(&mut self, plugin: &str) -> bool {
        self.declared.plugins.remove(plugin).is_some()
    }

    /// Replaces every declaration (from `host.plugins.list`). Returns whether anything
    /// changed.
    pub fn replace_all(&mut self, plugins: BTreeMap<String, Vec<CommandSpec>>) -> bool {
        let plugins: BTreeMap<String, Vec<CommandSpec>> = plugins
            .into_iter()
            .filter(|(p, c)| p != ROUTER && !c.is_empty())
            .collect();
        if plugins == self.declared.plugins {
            return false;
        }
        self.declared.plugins = plugins;
        true
    }

    /// Rebuilds the index from the declarations and `config`. Returns a description of
    /// every declaration that could not be indexed (invalid names, conflicts).
    pub fn rebuild(&mut self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        for (plugin, specs) in &self.declared.plugins {
            for spec in specs {
                let mut spec = spec.clone();
                spec.name = spec.name.to_lowercase();
                spec.aliases = spec.aliases.iter().map(|a| a.to_lowercase()).collect();
                let mut reply = ReplyTo::Same;
                if let Some(o) = config.overrides.get(&spec.name) {
                    if o.disabled {
                        continue;
                    }
                    if let Some(r) = o.min_rank {
                        spec.min_rank = r;
                    }
                    for a in &o.aliases {
                        let a = a.to_lowercase();
                        if !spec.aliases.contains(&a) {
                            spec.aliases.push(a);
                        }
                    }
                    if let Some(c) = o.user_cooldown_ms {
                        spec.user_cooldown_ms = c;
                    }
                    if let Some(c) = o.global_cooldown_ms {
                        spec.global_cooldown_ms = c;
                    }
                    if let Some(s) = o.scope {
                        spec.scope = s;
                    }
                    if let Some(r) = o.reply {
                        reply = r;
                    }
                }
                entries.push(Entry {
                    plugin: plugin.clone(),
                    spec,
                    reply,
                    text: None,
                });
            }
        }
        for (name, r) in &config.responses {
            entries.push(Entry {
                plugin: ROUTER.to_owned(),
                spec: CommandSpec {
                    name: name.to_lowercase(),
                    aliases: r.aliases.iter().map(|a| a.to_lowercase()).collect(),
                    description: r.description.clone(),
                    usage: String::new(),
                    min_rank: r.min_rank,
                    user_cooldown_ms: r.user_cooldown_ms,
                    global_cooldown_ms: r.global_cooldown_ms,
                    scope: CommandScope::Both,
                },
                reply: ReplyTo::Same,
                text: Some(r.text.clone()),
            });
        }
        let mut kept = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in entries {
            if !valid_name(&entry.spec.name) {
                problems.push(format!(
                    "{} declares command {:?}, which is not a valid command name; ignored",
                    entry.plugin, entry.spec.name
                ));
                continue;
            }
            if let Some(&i) = index.get(&entry.spec.name) {
                let owner: &Entry = &kept[i];
                problems.push(format!(
                    "{} declares command {:?}, which {} already answers; {} keeps it",
                    entry.plugin, entry.spec.name, owner.plugin, owner.plugin
                ));
                continue;
            }
            let i = kept.len();
            index.insert(entry.spec.name.clone(), i);
            let mut aliases = Vec::new();
            for alias in &entry.spec.aliases {
                if !valid_name(alias) {
                    problems.push(format!(
                        "{}: alias {alias:?} of {} is not a valid command name; ignored",
                        entry.plugin, entry.spec.name
                    ));
                    continue;
                }
                match index.get(alias) {
                    Some(&j) if j != i => problems.push(format!(
                        "{}: alias {alias:?} of {} is already taken by {}; ignored",
                        entry.plugin, entry.spec.name, kept[j].spec.name
                    )),
                    Some(_) => {}
                    None => {
                        index.insert(alias.clone(), i);
                        aliases.push(alias.clone());
                    }
                }
            }
            let mut entry = entry;
            entry.spec.aliases = aliases;
            kept.push(entry);
        }
        self.entries = kept;
        self.index = index;
        problems
    }

    /// The command `name` (lowercase) or an alias resolves to.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// Every command, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        let mut v: Vec<&Entry> = self.entries.iter().collect();
        v.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        v.into_iter()
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No commands.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> CommandSpec {
        CommandSpec::new(name, format!("does {name}"))
    }

    fn config(v: serde_json::Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn names_and_aliases_resolve_to_the_canonical_command() {
        let mut d = Declarations::default();
        let mut seen = spec("Seen");
        seen.aliases = vec!["lastseen".into()];
        d.plugins.insert("usertracker".into(), vec![seen]);
        let (r, problems) = Registry::new(d, &Config::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r.lookup("seen").unwrap().spec.name, "seen");
        assert_eq!(r.lookup("lastseen").unwrap().spec.name, "seen");
        assert_eq!(r.lookup("lastseen").unwrap().plugin, "usertracker");
        assert!(r.lookup("nope").is_none());
    }

    #[test]
    fn conflicts_are_settled_by_plugin_name_and_reported() {
        let mut d = Declarations::default();
        d.plugins.insert("zeta".into(), vec![spec("np")]);
        d.plugins.insert("alpha".into(), vec![spec("np")]);
        let (r, problems) = Registry::new(d, &Config::default());
        assert_eq!(r.lookup("np").unwrap().plugin, "alpha");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("alpha keeps it"), "{problems:?}");
    }

    #[test]
    fn overrides_change_rank_aliases_reply_and_can_disable() {
        let mut d = Declarations::default();
        let mut reload = spec("reload");
        reload.min_rank = 3.0;
        d.plugins
            .insert("builtins".into(), vec![reload, spec("ping"), spec("about")]);
        let c = config(serde_json::json!({"overrides": {
            "reload": {"min_rank": 2, "aliases": ["rl"], "reply": "pm"},
            "about": {"disabled": true}
        }}));
        let (r, _) = Registry::new(d, &c);
        let e = r.lookup("rl").unwrap();
        assert_eq!((e.spec.name.as_str(), e.spec.min_rank), ("reload", 2.0));
        assert_eq!(e.reply, ReplyTo::Pm);
        assert!(r.lookup("about").is_none());
        assert!(r.lookup("ping").is_some());
    }

    #[test]
    fn canned_responses_give_way_to_plugins() {
        let c = config(serde_json::json!({"responses": {
            "rules": {"text": "Be kind", "aliases": ["r"]},
            "ping": {"text": "canned pong"}
        }}));
        let mut d = Declarations::default();
        d.plugins.insert("builtins".into(), vec![spec("ping")]);
        let (r, problems) = Registry::new(d, &c);
        assert_eq!(r.lookup("ping").unwrap().plugin, "builtins");
        assert_eq!(r.lookup("r").unwrap().text.as_deref(), Some("Be kind"));
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn declarations_follow_set_remove_and_replace() {
        let (mut r, _) = Registry::new(Declarations::default(), &Config::default());
        assert!(r.set("a", vec![spec("x")]));
        assert!(!r.set("a", vec![spec("x")]));
        r.rebuild(&Config::default());
        assert!(r.lookup("x").is_some());
        assert!(r.remove("a"));
        r.rebuild(&Config::default());
        assert!(r.lookup("x").is_none());
        let mut all = BTreeMap::new();
        all.insert("b".to_owned(), vec![spec("y")]);
        all.insert("empty".to_owned(), vec![]);
        assert!(r.replace_all(all.clone()));
        assert!(!r.replace_all(all));
        r.rebuild(&Config::default());
        assert_eq!(r.len(), 1);
        // The router's own name cannot be taken over by a declaration.
        assert!(!r.set(ROUTER, vec![spec("z")]));
    }

    #[test]
    fn invalid_names_are_refused() {
        let mut d = Declarations::default();
        d.plugins
            .insert("p".into(), vec![spec("a.b"), spec("ok"), spec("")]);
        let (r, problems) = Registry::new(d, &Config::default());
        assert_eq!(r.len(), 1);
        assert_eq!(problems.len(), 2);
    }
}
