//! Watching the plugin directory and `plugins.toml`.
//!
//! Any event on a plugin file counts as "maybe changed": cargo replaces its outputs by
//! unlink + hard link (no close-after-write event), `install` and cross-device `mv` fire
//! a create before the data is written. So the watcher only debounces and names the
//! plugin; the loader decides whether the file is stable and new (two equal `stat`s, a
//! hash not already loaded or rejected, a complete ELF).
//!
//! `plugins.toml` is re-read once its writer is done with it: on close after writing
//! (an editor or `echo >` writing in place), on create or rename into place (an atomic
//! replace), or on removal. A bare "data modified" event is not enough: `fs::write`
//! truncates first and writes after, and reading between the two would apply an empty
//! or half-written file — valid TOML that removes every plugin it does not reach yet.
//!
//! A changed `plugins.toml` is re-read and validated; an invalid file is refused with
//! the reason and the running configuration stays in force (plugins and rooms alike). A
//! valid one is applied: only plugins whose `[plugins.<name>]` table changed are
//! reloaded, and the Cytube rooms follow their `[[rooms]]` tables (added ones start,
//! removed ones stop, changed ones restart, the others are not touched).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{
    Event, EventKind, RecursiveMode,
    event::{AccessKind, AccessMode, ModifyKind},
};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use super::{PluginManager, ReloadOutcome, Trigger};
use crate::config::Config;

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    _thread: std::thread::JoinHandle<()>,
}

/// Starts watching the plugin directory and the configuration file (if any).
pub fn start(
    manager: Arc<PluginManager>,
    config_path: Option<PathBuf>,
    debounce: Duration,
) -> anyhow::Result<Watcher> {
    let config = manager.config();
    let plugin_dir = config.host.plugin_dir.clone();
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<Event>>();
    let mut debouncer =
        new_debouncer(
            debounce,
            None,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let events: Vec<Event> = events.into_iter().map(|e| e.event).collect();
                    if !events.is_empty() {
                        let _ = tx.send(events);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "file watcher error");
                    }
                }
            },
        )?;
    debouncer
        .watch(&plugin_dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot watch the plugin directory {}: {e}",
                plugin_dir.display()
            )
        })?;
    let config_file = config_path
        .as_ref()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()));
    if let Some(cfg) = &config_file
        && let Some(dir) = cfg.parent()
        && dir != plugin_dir
    {
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    }
    let thread = std::thread::Builder::new()
        .name("daz-watcher".to_owned())
        .spawn(move || {
            for events in rx {
                handle(&manager, config_file.as_deref(), events);
            }
        })?;
    tracing::info!(dir = %plugin_dir.display(), config = ?config_path, "watching for plugin and configuration changes");
    Ok(Watcher {
        _debouncer: debouncer,
        _thread: thread,
    })
}

/// Whether an event path names the configuration file. The file may be gone (an editor
/// replacing it), so compare its name and its directory's canonical path.
fn is_config(p: &Path, config_file: &Path) -> bool {
    let dir = |x: &Path| x.parent().and_then(|d| d.canonicalize().ok());
    p.file_name() == config_file.file_name() && dir(p) == dir(config_file)
}

/// Whether an event on `plugins.toml` means its writer is done (see the module docs).
fn config_written(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

fn handle(manager: &PluginManager, config_file: Option<&Path>, events: Vec<Event>) {
    let mut plugins = BTreeSet::new();
    let mut config_changed = false;
    for event in &events {
        for p in &event.paths {
            if config_file.is_some_and(|c| is_config(p, c)) {
                config_changed |= config_written(&event.kind);
            } else if let Some(name) = manager.plugin_for_path(p) {
                plugins.insert(name);
            }
        }
    }
    if config_changed && let Some(cfg) = config_file {
        apply_config_file(manager, cfg);
    }
    for name in plugins {
        let path = {
            let c = manager.config();
            c.plugins.get(&name).map(|pc| c.plugin_path(pc))
        };
        if path.as_ref().is_some_and(|p| !p.exists()) {
            tracing::warn!(plugin = %name, "plugin file removed; the loaded version keeps serving");
            continue;
        }
        match manager.reload(&name, Trigger::FileChanged) {
            Ok(
                ReloadOutcome::Swapped(_)
                | ReloadOutcome::Unchanged { .. }
                | ReloadOutcome::PreviouslyRejected { .. },
            ) => {}
            // Already logged by the manager, with the reason.
            Err(_) => {}
        }
    }
}

/// Re-reads `plugins.toml` and applies it, or refuses it and keeps the running one.
pub fn apply_config_file(manager: &PluginManager, path: &Path) {
    let reloads = &manager.services().metrics.config_reloads;
    match Config::load(path) {
        Ok(new) => {
            reloads.with_label_values(&["applied"]).inc();
            let new = keep_runtime_overrides(&manager.config(), new);
            for (name, result) in manager.apply(new, Trigger::ConfigChanged) {
                if let Err(e) = result {
                    tracing::error!(plugin = %name, error = %e, "plugin not reloaded after the configuration change");
                }
            }
        }
        Err(e) => {
            reloads.with_label_values(&["refused"]).inc();
            tracing::error!(error = %e, "configuration change refused; the running configuration stays in force")
        }
    }
}

/// Settings given on the command line or by a test harness that the file does not carry.
fn keep_runtime_overrides(old: &Config, mut new: Config) -> Config {
    if new.host.preflight_exe.is_none() {
        new.host.preflight_exe = old.host.preflight_exe.clone();
    }
    new
}
