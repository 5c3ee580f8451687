//! Plugins: loading, slots, hot reload, and the services the host offers them.
//!
//! * [`loader`] — from a file path to a checked, loaded library (trust, stability,
//!   hashing, ELF completeness, private copy, abi_stable checks).
//! * [`preflight`] — the same load in a child process, so a crashing file costs a child.
//! * [`slot`] — a plugin's mailbox and worker thread; swap, rollback, quarantine.
//! * [`host_api`] — the callback table each instance gets.
//! * [`logging`] — plugin log lines through `tracing`, target = plugin name.
//! * [`watcher`] — file-system events on the plugin directory and `plugins.toml`.
//! * [`control`] — lifecycle events and control requests (`host.plugins.*`) on the bus.
//!
//! [`PluginManager`] ties them together: it applies a configuration (start, reload,
//! stop plugins), serialises reloads, remembers rejected files and reports status.

pub mod control;
pub mod host_api;
pub mod loader;
pub mod logging;
pub mod preflight;
pub mod slot;
pub mod watcher;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::{Mailbox, MailboxConfig};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{Config, PluginConfig};
use host_api::HostServices;
use loader::{LoadError, LoadedLibrary, PluginMeta};
use slot::{Slot, SlotSettings, SlotState, SlotStatus, SwapError, SwapReport};

/// What started a reload (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Host start.
    Startup,
    /// The plugin file changed.
    FileChanged,
    /// Its table in `plugins.toml` changed.
    ConfigChanged,
    /// An operator asked (admin API, CLI, chat command, signal).
    Explicit,
}

/// Result of a reload request.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// A new instance is serving.
    Swapped(SwapReport),
    /// The file is the one already serving; nothing to do.
    Unchanged {
        /// Its hash.
        sha256: String,
    },
    /// The file was refused before (and is skipped until it changes or an operator
    /// insists).
    PreviouslyRejected {
        /// Its hash.
        sha256: String,
    },
}

/// Why a reload failed. The version serving before keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// No `[plugins.<name>]` table.
    #[error("no plugin named {0:?} in plugins.toml")]
    UnknownPlugin(String),
    /// The plugin is disabled in the configuration.
    #[error("plugin {0} is disabled in plugins.toml")]
    Disabled(String),
    /// The file was refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The library's name does not match its table.
    #[error(
        "{path} contains plugin {found:?}, but it is configured as [plugins.{expected}]; point `file` at the right library or rename the table"
    )]
    WrongPlugin {
        /// The file.
        path: PathBuf,
        /// The table name.
        table: String,
        /// The plugin name expected.
        expected: String,
        /// The plugin inside.
        found: String,
    },
    /// Creating or switching failed.
    #[error(transparent)]
    Swap(#[from] SwapError),
    /// The host is shutting down: no reload starts any more.
    #[error("the host is shutting down; {0} is not reloaded")]
    ShuttingDown(String),
}

/// A plugin's status for the health endpoints and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Name.
    pub name: String,
    /// Enabled in the configuration.
    pub enabled: bool,
    /// The file configured.
    pub file: PathBuf,
    /// Slot status.
    #[serde(flatten)]
    pub slot: Option<SlotStatus>,
    /// Metadata of the serving library.
    pub meta: Option<PluginMeta>,
    /// Events handled.
    pub handled: u64,
    /// Panics caught.
    pub panics: u64,
    /// Errors returned.
    pub errors: u64,
    /// Events waiting.
    pub mailbox_depth: usize,
    /// The handler is past its deadline.
    pub stuck: bool,
    /// How long the current handler has been running, ms.
    pub busy_ms: Option<i64>,
}

struct Entry {
    slot: Slot,
    config: PluginConfig,
}

/// Owns every plugin slot.
pub struct PluginManager {
    services: Arc<HostServices>,
    config: Mutex<Config>,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// One reload at a time: swaps are quick, and this keeps file work ordered.
    reload_lock: Mutex<()>,
    /// Set (under `reload_lock`) once shutdown begins: from then on no reload starts, so
    /// a file event or signal that arrives while the plugins stop loads nothing.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Hashes refused per plugin, for the life of the process (slots come and go with
    /// disable/enable and shutdown; the memory of a bad file must not).
    rejected:
        Mutex<std::collections::HashMap<String, Arc<Mutex<std::collections::HashSet<String>>>>>,
    /// Every library loaded, by file hash. Libraries are never unmapped, so a file whose
    /// bytes were loaded before (swapping back to an earlier version) reuses that mapping
    /// instead of mapping another copy.
    libraries: Mutex<std::collections::HashMap<String, Arc<LoadedLibrary>>>,
    /// The configuration last applied, for the parts of the host that follow it (the
    /// Cytube rooms).
    applied: tokio::sync::watch::Sender<Arc<Config>>,
}

fn settings(config: &Config, plugin: &PluginConfig) -> SlotSettings {
    let h = &config.host;
    SlotSettings {
        create_timeout: h.create_timeout(),
        handler_deadline: plugin
            .handler_deadline_ms
            .map_or(h.handler_deadline(), Duration::from_millis),
        probation: h.probation(),
        probation_failures: h.probation_failures,
        quarantine_panics: h.quarantine_panics,
        quarantine_window: h.quarantine_window(),
    }
}

/// Two plugin tables that differ at most in `log_level` (applied without a reload).
fn same_but_log_level(a: &PluginConfig, b: &PluginConfig) -> bool {
    let mut b = b.clone();
    b.log_level = a.log_level;
    *a == b
}

fn mailbox_config(config: &Config, plugin: &PluginConfig) -> MailboxConfig {
    let mut m = MailboxConfig::new(
        plugin
            .mailbox_capacity
            .unwrap_or(config.bus.mailbox_capacity),
    );
    let mut prefixes = config.bus.prefix_capacity.clone();
    prefixes.extend(plugin.prefix_capacity.clone());
    for (prefix, cap) in prefixes {
        m = m.with_prefix(prefix, cap);
    }
    m
}

impl PluginManager {
    /// A manager with no plugins yet; call [`PluginManager::apply`] to start them.
    pub fn new(services: Arc<HostServices>, config: Config) -> Arc<Self> {
        Arc::new(Self {
            services,
            config: Mutex::new(config),
            entries: Mutex::new(BTreeMap::new()),
            reload_lock: Mutex::new(()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            rejected: Mutex::new(std::collections::HashMap::new()),
            libraries: Mutex::new(std::collections::HashMap::new()),
            applied: tokio::sync::watch::Sender::new(Arc::new(Config::default())),
        })
    }

    /// The configurations [`PluginManager::apply`] puts in force (at startup, on a file
    /// change, on SIGHUP), each announced once its plugins are applied; a receiver sees
    /// the latest. The Cytube rooms follow their `[[rooms]]` tables through it.
    pub fn watch_config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.applied.subscribe()
    }

    /// The services plugins get.
    pub fn services(&self) -> &Arc<HostServices> {
        &self.services
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config.lock().clone()
    }

    fn swap_timeout(&self) -> Duration {
        let c = self.config.lock();
        c.host.create_timeout() + c.host.handler_deadline() + Duration::from_secs(1)
    }

    /// Applies a configuration: starts added or re-enabled plugins, reloads plugins whose
    /// table changed, stops removed or disabled ones. Returns the result per plugin
    /// touched; a failure of one plugin does not stop the others.
    pub fn apply(
        &self,
        new: Config,
        trigger: Trigger,
    ) -> Vec<(String, Result<ReloadOutcome, ReloadError>)> {
        if self.is_shutting_down() {
            tracing::info!(?trigger, "shutting down; the configuration is not applied");
            return Vec::new();
        }
        // Log levels change in place (before the new configuration is visible, so a
        // reader of it sees the levels in force): no plugin is reloaded for them.
        logging::apply_levels(&new);
        let old = std::mem::replace(&mut *self.config.lock(), new.clone());
        let mut results = Vec::new();
        // Stop plugins that were removed or disabled.
        let to_stop: Vec<String> = {
            let entries = self.entries.lock();
            entries
                .keys()
                .filter(|name| new.plugins.get(*name).is_none_or(|p| !p.enabled))
                .cloned()
                .collect()
        };
        for name in to_stop {
            self.stop_plugin(&name);
            tracing::info!(plugin = %name, "plugin stopped (removed or disabled in plugins.toml)");
        }
        let work: Vec<(&String, bool)> = new
            .plugins
            .iter()
            .filter(|(_, pc)| pc.enabled)
            .filter_map(|(name, pc)| {
                let running = self.entries.lock().contains_key(name);
                let changed = old
                    .plugins
                    .get(name)
                    .is_none_or(|o| !same_but_log_level(o, pc))
                    || old.host.plugin_dir != new.host.plugin_dir;
                (!running || changed).then_some((name, running))
            })
            .collect();
        let total = work.len();
        for (i, (name, running)) in work.into_iter().enumerate() {
            // Progress for operators watching a start with many plugins.
            let progress = format!("{}/{total}", i + 1);
            tracing::info!(plugin = %name, %progress, "loading plugin {progress}: {name}");
            let r = self.reload(name, if running { trigger } else { Trigger::Startup });
            results.push((name.clone(), r));
        }
        // After the plugins, so that they listen before a room added here connects.
        self.applied.send_replace(Arc::new(new));
        results
    }

    fn ensure_slot(
        &self,
        name: &str,
        pc: &PluginConfig,
        config: &Config,
    ) -> Result<Arc<slot::SlotShared>, ReloadError> {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(name) {
            if e.config != *pc {
                e.slot.shared.mailbox.set_config(mailbox_config(config, pc));
                e.config = pc.clone();
            }
            return Ok(e.slot.shared.clone());
        }
        let mailbox = Mailbox::new(name, mailbox_config(config, pc));
        let rejected = self
            .rejected
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone();
        let slot = Slot::start(
            name,
            mailbox,
            self.services.clone(),
            settings(config, pc),
            rejected,
        )
        .map_err(|e| {
            ReloadError::Swap(SwapError::Create {
                plugin: name.to_owned(),
                version: "?".to_owned(),
                message: e.to_string(),
            })
        })?;
        let shared = slot.shared.clone();
        entries.insert(
            name.to_owned(),
            Entry {
                slot,
                config: pc.clone(),
            },
        );
        Ok(shared)
    }

    /// Reloads one plugin from its configured file: checks and loads the file, then swaps
    /// it in. The version serving before keeps serving on any failure.
    pub fn reload(&self, name: &str, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let _serial = self.reload_lock.lock();
        if self.is_shutting_down() {
            tracing::debug!(plugin = %name, ?trigger, "shutting down; reload not started");
            return Err(ReloadError::ShuttingDown(name.to_owned()));
        }
        let config = self.config.lock().clone();
        let pc = config
            .plugins
            .get(name)
            .cloned()
            .ok_or_else(|| ReloadError::UnknownPlugin(name.to_owned()))?;
        if !pc.enabled {
            return Err(ReloadError::Disabled(name.to_owned()));
        }
        let shared = self.ensure_slot(name, &pc, &config)?;
        let started = Instant::now();
        let result = self.load_and_swap(name, &pc, &config, &shared, trigger);
        let label = match &result {
            Ok(ReloadOutcome::Swapped(_)) => "swapped",
            Ok(ReloadOutcome::Unchanged { .. }) => "unchanged",
            Ok(ReloadOutcome::PreviouslyRejected { .. }) => "skipped",
            Err(ReloadError::Load(_) | ReloadError::WrongPlugin { .. }) => "rejected",
            Err(_) => "failed",
        };
        self.services
            .metrics
            .reloads
            .with_label_values(&[name, label])
            .inc();
        match &result {
            Ok(ReloadOutcome::Swapped(r)) => {
                self.services
                    .metrics
                    .swap_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(plugin = %name, ?trigger, from = ?r.from, to = %r.to, swap_us = r.micros, total_ms = started.elapsed().as_millis() as u64, "plugin loaded");
            }
            Ok(ReloadOutcome::Unchanged { .. }) => {
                tracing::debug!(plugin = %name, ?trigger, "plugin file unchanged")
            }
            Ok(ReloadOutcome::PreviouslyRejected { sha256 }) => {
                tracing::debug!(plugin = %name, sha256 = %sha256, "plugin file was rejected before; skipped")
            }
            Err(e) => {
                shared.set_error(e.to_string());
                let serving = shared.status().state == SlotState::Serving;
                tracing::error!(plugin = %name, ?trigger, error = %e, old_version_serving = serving, "plugin reload failed");
            }
        }
        result
    }

    fn load_and_swap(
        &self,
        name: &str,
        pc: &PluginConfig,
        config: &Config,
        shared: &Arc<slot::SlotShared>,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, ReloadError> {
        let path = config.plugin_path(pc);
        // Trust is checked on the descriptor the bytes are read from (see read_trusted).
        let candidate = loader::read_trusted(
            &path,
            config.host.enforce_permissions,
            Duration::from_millis(config.host.stable_interval_ms),
            50,
        )?;
        if let Some(pin) = &pc.sha256
            && !pin.eq_ignore_ascii_case(&candidate.sha256)
        {
            shared.reject(&candidate.sha256);
            return Err(LoadError::PinMismatch {
                path,
                expected: pin.to_lowercase(),
                actual: candidate.sha256,
            }
            .into());
        }
        let current = shared.serving_lib();
        let config_json = Config::plugin_config_json(pc);
        let serving = shared.status().state == SlotState::Serving;
        if let Some(lib) = &current
            && lib.sha256 == candidate.sha256
        {
            // Same bytes: a config change or an explicit request re-creates the
            // instance from the already loaded library; a file event is a no-op.
            if trigger == Trigger::FileChanged && serving {
                return Ok(ReloadOutcome::Unchanged {
                    sha256: candidate.sha256,
                });
            }
            let report = shared.swap(lib.clone(), config_json, self.swap_timeout())?;
            return Ok(ReloadOutcome::Swapped(report));
        }
        // A refused file stays refused until its bytes change; only an operator's
        // explicit request (or a change of its table in plugins.toml) tries it again.
        if trigger == Trigger::Explicit || trigger == Trigger::ConfigChanged {
            shared.forget_rejected(&candidate.sha256);
        } else if shared.is_rejected(&candidate.sha256) {
            return Ok(ReloadOutcome::PreviouslyRejected {
                sha256: candidate.sha256,
            });
        }
        let reject = |e: ReloadError| {
            shared.reject(&candidate.sha256);
            e
        };
        let known = self.libraries.lock().get(&candidate.sha256).cloned();
        if let Some(lib) = known {
            check_name(&path, name, pc, &lib.meta.name).map_err(reject)?;
            let report = shared.swap(lib, config_json, self.swap_timeout())?;
            return Ok(ReloadOutcome::Swapped(report));
        }
        loader::check_elf(&path, &candidate.bytes).map_err(|e| reject(e.into()))?;
        let copy = loader::write_private_copy(&config.host.runtime_dir, name, &candidate)?;
        let lib = (|| {
            if config.host.preflight {
                let exe = match &config.host.preflight_exe {
                    Some(exe) => exe.clone(),
                    None => std::env::current_exe().map_err(|e| LoadError::Preflight {
                        path: path.clone(),
                        why: format!("cannot find this executable: {e}"),
                    })?,
                };
                let meta = preflight::run(&exe, &copy, &path, config.host.create_timeout())?;
                check_name(&path, name, pc, &meta.name)?;
            }
            let lib = loader::load_library(
                &copy,
                &path,
                &candidate.sha256,
                candidate.bytes.len() as u64,
            )?;
            check_name(&path, name, pc, &lib.meta.name)?;
            Ok::<_, ReloadError>(Arc::new(lib))
        })();
        // The mapping (if any) survives the unlink; the copy is not needed any more.
        let _ = std::fs::remove_file(&copy);
        let lib = lib.map_err(reject)?;
        self.libraries
            .lock()
            .insert(lib.sha256.clone(), lib.clone());
        match shared.swap(lib.clone(), config_json, self.swap_timeout()) {
            Ok(report) => Ok(ReloadOutcome::Swapped(report)),
            Err(e) => {
                // Loaded but refused: it stays mapped, so count it.
                lib.mark_retired(&self.services.metrics);
                if !matches!(e, SwapError::Unresponsive { .. }) {
                    shared.reject(&lib.sha256);
                }
                Err(e.into())
            }
        }
    }

    /// Enables or disables a plugin at run time (the file's `enabled` is not changed: a
    /// later change of `plugins.toml` applies the file again). Returns what happened.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<String, String> {
        let mut config = self.config();
        let Some(pc) = config.plugins.get_mut(name) else {
            return Err(ReloadError::UnknownPlugin(name.to_owned()).to_string());
        };
        if pc.enabled == enabled && (enabled == self.entries.lock().contains_key(name)) {
            return Ok(format!(
                "{name} is already {}",
                if enabled { "enabled" } else { "disabled" }
            ));
        }
        pc.enabled = enabled;
        let results = self.apply(config, Trigger::Explicit);
        match results.into_iter().find(|(n, _)| n == name) {
            Some((_, Err(e))) => Err(e.to_string()),
            _ if enabled => Ok(format!("{name} enabled")),
            _ => Ok(format!("{name} disabled")),
        }
    }

    /// Rolls a plugin back to its previous version.
    pub fn rollback(&self, name: &str) -> Result<SwapReport, ReloadError> {
        let _serial = self.reload_lock.lock();
        let shared = self
            .entries
            .lock()
            .get(name)
            .map(|e| e.slot.shared.clone())
            .ok_or_else(|| ReloadError::UnknownPlugin(name.to_owned()))?;
        Ok(shared.rollback(self.swap_timeout())?)
    }

    fn stop_plugin(&self, name: &str) {
        let entry = self.entries.lock().remove(name);
        if let Some(e) = entry {
            let timeout = self.swap_timeout();
            e.slot.stop(&self.services.bus, timeout);
        }
    }

    /// Stops every plugin: first lets every mailbox drain (events already accepted are
    /// handled, up to `deadline`), then calls each plugin's `shutdown` — the storage
    /// plugin last, so it can record what the others did while stopping.
    pub fn stop_all(&self, deadline: Duration) {
        self.begin_shutdown();
        let until = Instant::now() + deadline;
        let shared: Vec<Arc<slot::SlotShared>> = self
            .entries
            .lock()
            .values()
            .map(|e| e.slot.shared.clone())
            .collect();
        let pending = |s: &slot::SlotShared| {
            !s.mailbox.is_empty() || s.busy_for_ms(crate::now_ms()).is_some()
        };
        // Stuck or quarantined slots never drain; do not wait for them.
        let draining: Vec<_> = shared
            .iter()
            .filter(|s| !s.is_stuck() && s.status().state == SlotState::Serving)
            .collect();
        while draining.iter().any(|s| pending(s)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let left: usize = shared.iter().map(|s| s.mailbox.len()).sum();
        if left > 0 {
            tracing::warn!(
                events = left,
                "shutdown deadline reached with events still queued; they are dropped"
            );
        }
        let mut entries: Vec<(String, Entry)> = std::mem::take(&mut *self.entries.lock())
            .into_iter()
            .collect();
        // Storage last: it persists what the others publish while they stop.
        entries.sort_by_key(|(name, e)| {
            let is_storage = name == "storage" || e.config.plugin.as_deref() == Some("storage");
            (is_storage, name.clone())
        });
        for (name, e) in entries {
            let left = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(200));
            tracing::debug!(plugin = %name, "stopping plugin");
            e.slot.stop(&self.services.bus, left);
        }
    }

    /// Marks the start of shutdown: waits for a reload in progress to finish, and from
    /// then on refuses every reload, configuration change and enable.
    pub fn begin_shutdown(&self) {
        let _serial = self.reload_lock.lock();
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reports slots whose handler is past its deadline (called periodically).
    pub fn check_stuck(&self) {
        let now = crate::now_ms();
        let config = self.config.lock().clone();
        for (name, e) in self.entries.lock().iter() {
            let deadline = settings(&config, &e.config).handler_deadline;
            if e.slot.shared.check_stuck(deadline, now) {
                self.services
                    .metrics
                    .stuck
                    .with_label_values(&[name])
                    .set(1);
                tracing::error!(
                    plugin = %name,
                    deadline_ms = deadline.as_millis() as u64,
                    "plugin handler is stuck past its deadline; its events queue up (and are dropped when the mailbox is full) while the rest of the host keeps running"
                );
            }
        }
    }

    /// Status of every configured plugin.
    pub fn status(&self) -> Vec<PluginStatus> {
        let config = self.config.lock().clone();
        let entries = self.entries.lock();
        let now = crate::now_ms();
        config
            .plugins
            .iter()
            .map(|(name, pc)| {
                let e = entries.get(name);
                PluginStatus {
                    name: name.clone(),
                    enabled: pc.enabled,
                    file: config.plugin_path(pc),
                    slot: e.map(|e| e.slot.shared.status()),
                    meta: e.and_then(|e| e.slot.shared.serving_lib().map(|l| l.meta.clone())),
                    handled: e.map_or(0, |e| e.slot.shared.handled()),
                    panics: e.map_or(0, |e| e.slot.shared.panics()),
                    errors: e.map_or(0, |e| e.slot.shared.errors()),
                    mailbox_depth: e.map_or(0, |e| e.slot.shared.mailbox.len()),
                    stuck: e.is_some_and(|e| e.slot.shared.is_stuck()),
                    busy_ms: e.and_then(|e| e.slot.shared.busy_for_ms(now)),
                }
            })
            .collect()
    }

    /// Whether every enabled plugin is serving.
    pub fn all_serving(&self) -> bool {
        self.status().iter().filter(|s| s.enabled).all(|s| {
            s.slot
                .as_ref()
                .is_some_and(|st| st.state == SlotState::Serving)
        })
    }

    /// A slot's shared state (tests and the admin API).
    pub fn slot(&self, name: &str) -> Option<Arc<slot::SlotShared>> {
        self.entries.lock().get(name).map(|e| e.slot.shared.clone())
    }
}

fn check_name(path: &Path, table: &str, pc: &PluginConfig, found: &str) -> Result<(), ReloadError> {
    let expected = Config::expected_plugin(table, pc);
    if expected == found {
        Ok(())
    } else {
        Err(ReloadError::WrongPlugin {
            path: path.to_owned(),
            table: table.to_owned(),
            expected: expected.to_owned(),
            found: found.to_owned(),
        })
    }
}
