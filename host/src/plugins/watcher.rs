//! Watching the plugin directory and `plugins.toml`.
//!
//! Any event on a plugin file counts as "maybe changed": cargo replaces its outputs by
//! unlink + hard link (no close-after-write event), `install` and cross-device `mv` fire
//! a create before the data is written. So the watcher only debounces and names the
//! plugin; the loader decides whether the file is stable and new (two equal `stat`s, a
//! hash not already loaded or rejected, a complete ELF).
//!
//! Every path is compared in its canonical form (see [`crate::config::canonical_dir`]):
//! the configuration carries it from [`Config::load`], the watcher watches those
//! directories, so an event names a file exactly as the configuration does, whether the
//! host was started with `plugins.toml`, `./plugins.toml` or an absolute path.
//!
//! Only events on the configuration file and on configured plugin files get past the
//! debouncer's callback; the rest (a SQLite database beside `plugins.toml`, logs, the
//! host reading a plugin file to hash it) cost a path lookup and count nothing. Reading
//! a file is not a change: without that filter the host's own read of a plugin file
//! fired the next reload, forever.
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
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use notify::{
    Event, EventKind, RecursiveMode,
    event::{AccessKind, AccessMode, MetadataKind, ModifyKind},
};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use parking_lot::{Mutex, RwLock};

use super::{PluginManager, ReloadOutcome, Trigger};
use crate::config::{Config, canonical_file};

type FsDebouncer = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// A running watcher; dropping it stops watching (the handling thread ends when the
/// debouncer, and with it the channel, is gone; a reload it is running finishes).
pub struct Watcher {
    _debouncer: Arc<Mutex<FsDebouncer>>,
    _thread: std::thread::JoinHandle<()>,
}

/// The files whose events matter, in canonical form, and the directories watched for
/// them. Rebuilt when the configuration changes.
#[derive(Default)]
struct Targets {
    config: Option<PathBuf>,
    /// Configured plugin file → plugin (table) name.
    plugins: HashMap<PathBuf, String>,
}

impl Targets {
    fn of(config: &Config, config_file: Option<&Path>) -> Targets {
        Targets {
            config: config_file.map(Path::to_owned),
            plugins: config
                .plugins
                .iter()
                .filter(|(_, pc)| pc.enabled)
                .map(|(name, pc)| (config.plugin_path(pc), name.clone()))
                .collect(),
        }
    }

    fn dirs(&self, plugin_dir: &Path) -> BTreeSet<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = self
            .plugins
            .keys()
            .chain(&self.config)
            .filter_map(|p| p.parent().map(Path::to_owned))
            .collect();
        dirs.insert(plugin_dir.to_owned());
        dirs
    }

    /// Whether an event matters: a write to the configuration file or a possible change
    /// of a configured plugin file.
    fn wants(&self, event: &Event) -> bool {
        event.paths.iter().any(|p| {
            (self.config.as_deref() == Some(p.as_path()) && config_written(&event.kind))
                || (self.plugins.contains_key(p) && plugin_maybe_changed(&event.kind))
        })
    }
}

/// Starts watching the plugin files' directories and the configuration file (if any).
pub fn start(
    manager: Arc<PluginManager>,
    config_path: Option<PathBuf>,
    debounce: Duration,
) -> anyhow::Result<Watcher> {
    let config = manager.config();
    let config_file = config_path.as_deref().map(canonical_file);
    let targets = Arc::new(RwLock::new(Targets::of(&config, config_file.as_deref())));
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<Event>>();
    let filter = targets.clone();
    let debouncer = new_debouncer(
        debounce,
        None,
        move |result: DebounceEventResult| match result {
            Ok(events) => {
                let targets = filter.read();
                let events: Vec<Event> = events
                    .into_iter()
                    .map(|e| e.event)
                    .filter(|e| targets.wants(e))
                    .collect();
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
    let debouncer = Arc::new(Mutex::new(debouncer));
    let mut watched = BTreeSet::new();
    let dirs = targets.read().dirs(&config.host.plugin_dir);
    rewatch(&Arc::downgrade(&debouncer), &mut watched, dirs);
    if watched.is_empty() {
        anyhow::bail!(
            "cannot watch the plugin directory {} nor the configuration's directory",
            config.host.plugin_dir.display()
        );
    }
    tracing::info!(dirs = ?watched, config = ?config_file, "watching for plugin and configuration changes");
    let weak = Arc::downgrade(&debouncer);
    let thread = std::thread::Builder::new()
        .name("daz-watcher".to_owned())
        .spawn(move || {
            for events in rx {
                handle(&manager, &targets, config_file.as_deref(), events);
                // The configuration may have moved plugin files elsewhere.
                let config = manager.config();
                let next = Targets::of(&config, config_file.as_deref());
                let dirs = next.dirs(&config.host.plugin_dir);
                *targets.write() = next;
                rewatch(&weak, &mut watched, dirs);
            }
        })?;
    Ok(Watcher {
        _debouncer: debouncer,
        _thread: thread,
    })
}

/// Watches `wanted` and stops watching the directories no longer in it.
fn rewatch(
    debouncer: &Weak<Mutex<FsDebouncer>>,
    watched: &mut BTreeSet<PathBuf>,
    wanted: BTreeSet<PathBuf>,
) {
    let Some(debouncer) = debouncer.upgrade() else {
        return;
    };
    let mut d = debouncer.lock();
    for gone in watched.difference(&wanted) {
        let _ = d.unwatch(gone);
    }
    watched.retain(|dir| wanted.contains(dir));
    for dir in wanted.difference(&watched.clone()) {
        match d.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir.clone());
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot watch this directory; its plugin files reload only on request");
            }
        }
    }
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

/// Whether an event on a plugin file may mean new bytes or a new inode (see the module
/// docs). Opening, reading and closing after reading do not; neither does an access
/// time update.
fn plugin_maybe_changed(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

fn handle(
    manager: &PluginManager,
    targets: &RwLock<Targets>,
    config_file: Option<&Path>,
    events: Vec<Event>,
) {
    tracing::debug!(?events, "file events");
    let mut plugins = BTreeSet::new();
    let mut config_changed = false;
    {
        let targets = targets.read();
        for event in &events {
            for p in &event.paths {
                if targets.config.as_deref() == Some(p.as_path()) {
                    config_changed |= config_written(&event.kind);
                } else if let Some(name) = targets.plugins.get(p)
                    && plugin_maybe_changed(&event.kind)
                {
                    plugins.insert(name.clone());
                }
            }
        }
    }
    if manager.is_shutting_down() {
        return;
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
