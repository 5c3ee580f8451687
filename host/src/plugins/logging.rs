//! Plugin log lines through the host's `tracing`, with the plugin's name as the target.
//!
//! `tracing` wants `'static` metadata, normally produced by its macros at compile time.
//! Plugin names are only known at run time, so this module builds one callsite per
//! (plugin, level) on first use and leaks it: a handful of small allocations per plugin
//! for the life of the process. Registering the callsite lets `RUST_LOG`-style filters
//! select plugins by name (`RUST_LOG=info,example=debug`).
//!
//! `[plugins.<name>] log_level` ([`apply_levels`]) is enforced twice: as a directive in
//! the host's own filter ([`crate::telemetry::set_plugin_levels`], which lets a plugin's
//! debug lines through when the rest of the host logs at info), and here, as an upper
//! bound, so it also holds under a subscriber the host did not install.

use std::{collections::HashMap, sync::OnceLock};

use parking_lot::RwLock;

use crate::config::{Config, PluginLogLevel};
use tracing::{
    Level, Metadata,
    callsite::{Callsite, Identifier},
    field::{FieldSet, Value},
    level_filters::LevelFilter,
    metadata::Kind,
    subscriber::Interest,
};

struct PluginCallsite {
    meta: OnceLock<&'static Metadata<'static>>,
}

impl Callsite for PluginCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        // Set right after the callsite is leaked and before it is registered or used.
        self.meta
            .get()
            .copied()
            .unwrap_or_else(|| unreachable_meta())
    }
}

fn unreachable_meta() -> &'static Metadata<'static> {
    // Only reachable if `metadata` were called before `meta` was set, which the
    // construction order in `callsite_for` rules out; keep a harmless fallback anyway.
    static FALLBACK: OnceLock<&'static Metadata<'static>> = OnceLock::new();
    FALLBACK.get_or_init(|| {
        let cs: &'static PluginCallsite = Box::leak(Box::new(PluginCallsite {
            meta: OnceLock::new(),
        }));
        Box::leak(Box::new(Metadata::new(
            "plugin log",
            "daz::plugin",
            Level::INFO,
            None,
            None,
            None,
            FieldSet::new(FIELDS, Identifier(cs)),
            Kind::EVENT,
        )))
    })
}

const FIELDS: &[&str] = &["message", "plugin", "fields"];

type Key = (String, Level);

fn registry() -> &'static RwLock<HashMap<Key, &'static Metadata<'static>>> {
    static REG: OnceLock<RwLock<HashMap<Key, &'static Metadata<'static>>>> = OnceLock::new();
    REG.get_or_init(|| RwLock::new(HashMap::new()))
}

fn callsite_for(plugin: &str, level: Level) -> &'static Metadata<'static> {
    let key = (plugin.to_owned(), level);
    if let Some(meta) = registry().read().get(&key) {
        return meta;
    }
    let mut reg = registry().write();
    if let Some(meta) = reg.get(&key) {
        return meta;
    }
    let target: &'static str = Box::leak(plugin.to_owned().into_boxed_str());
    let cs: &'static PluginCallsite = Box::leak(Box::new(PluginCallsite {
        meta: OnceLock::new(),
    }));
    let meta: &'static Metadata<'static> = Box::leak(Box::new(Metadata::new(
        "plugin log",
        target,
        level,
        None,
        None,
        Some(target),
        FieldSet::new(FIELDS, Identifier(cs)),
        Kind::EVENT,
    )));
    let _ = cs.meta.set(meta);
    tracing::callsite::register(cs);
    reg.insert(key, meta);
    meta
}

/// Maps an ABI log level to a `tracing` level.
pub fn level_from_abi(level: u8) -> Level {
    use daz_plugin_abi::{LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN};
    match level {
        LOG_ERROR => Level::ERROR,
        LOG_WARN => Level::WARN,
        LOG_INFO => Level::INFO,
        LOG_DEBUG => Level::DEBUG,
        _ => Level::TRACE,
    }
}

fn levels() -> &'static RwLock<HashMap<String, LevelFilter>> {
    static LEVELS: OnceLock<RwLock<HashMap<String, LevelFilter>>> = OnceLock::new();
    LEVELS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Applies the `log_level` of every plugin in `config` (plugins without one follow
/// `RUST_LOG`). Called at start and on every configuration change.
pub fn apply_levels(config: &Config) {
    let set: Vec<(String, PluginLogLevel)> = config
        .plugins
        .iter()
        .filter_map(|(name, p)| p.log_level.map(|l| (name.clone(), l)))
        .collect();
    *levels().write() = set.iter().map(|(n, l)| (n.clone(), l.filter())).collect();
    let directives: Vec<(String, &str)> =
        set.iter().map(|(n, l)| (n.clone(), l.as_str())).collect();
    crate::telemetry::set_plugin_levels(&directives);
}

/// Whether `plugin`'s configured level lets a line at `level` through.
fn allowed(plugin: &str, level: Level) -> bool {
    levels().read().get(plugin).is_none_or(|max| level <= *max)
}

/// Emits one plugin log line.
pub fn emit(plugin: &str, level: Level, message: &str, fields: &[(&str, &str)]) {
    if !allowed(plugin, level) {
        return;
    }
    let meta = callsite_for(plugin, level);
    tracing::dispatcher::get_default(|dispatch| {
        if !dispatch.enabled(meta) {
            return;
        }
        let rendered: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let fs = meta.fields();
        let (Some(f_msg), Some(f_plugin), Some(f_fields)) =
            (fs.field("message"), fs.field("plugin"), fs.field("fields"))
        else {
            return;
        };
        let msg = format_args!("{message}");
        let rendered = tracing::field::display(rendered);
        let values: [(&tracing::field::Field, Option<&dyn Value>); 3] = [
            (&f_msg, Some(&msg as &dyn Value)),
            (&f_plugin, Some(&plugin as &dyn Value)),
            (
                &f_fields,
                if fields.is_empty() {
                    None
                } else {
                    Some(&rendered as &dyn Value)
                },
            ),
        ];
        let vs = fs.value_set(&values);
        dispatch.event(&tracing::Event::new(meta, &vs));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plugin_lines_carry_the_plugin_as_target_and_obey_filters() {
        let cap = Capture::default();
        let writer = cap.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,loud=debug"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            emit("loud", Level::DEBUG, "debug line", &[("k", "v")]);
            emit("quiet", Level::INFO, "filtered out", &[]);
            emit("quiet", Level::WARN, "warn line", &[]);
        });
        let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("loud") && out.contains("debug line"), "{out}");
        assert!(out.contains("k=\"v\""), "{out}");
        assert!(!out.contains("filtered out"), "{out}");
        assert!(out.contains("warn line"), "{out}");
    }
}
