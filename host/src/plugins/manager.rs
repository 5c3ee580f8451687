//! [`PluginManager`]: owns every plugin slot; applies a configuration (starts plugins in
//! the order their declared `requires` give, reloads changed ones, stops removed ones),
//! serialises reloads (the transaction itself is in [`super::reload`]), remembers refused
//! files, stops everything in reverse dependency order, and reports status.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use daz_bus::{Mailbox, MailboxConfig};
use parking_lot::Mutex;
use serde::Serialize;

use super::{
    ReloadError, ReloadOutcome, Trigger, deps,
    host_api::HostServices,
    loader::{LoadedLibrary, PluginMeta},
    logging,
    reload::{Prepared, SwapError, SwapReport},
    slot::{self, Slot, SlotSettings, SlotState, SlotStatus},
};
use crate::config::{Config, PluginConfig};

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

pub(super) struct Entry {
    slot: Slot,
    config: PluginConfig,
}

/// Owns every plugin slot.
pub struct PluginManager {
    pub(super) services: Arc<HostServices>,
    pub(super) config: Mutex<Config>,
    pub(super) entries: Mutex<BTreeMap<String, Entry>>,
    /// One reload at a time: swaps are quick, and this keeps file work ordered.
    pub(super) reload_lock: Mutex<()>,
    /// Set (under `reload_lock`) once shutdown begins: from then on no reload starts, so
    /// a file event or signal that arrives while the plugins stop loads nothing.
    shutting_down: AtomicBool,
    /// Hashes refused per plugin, for the life of the process (slots come and go with
    /// disable/enable and shutdown; the memory of a bad file must not).
    rejected: Mutex<HashMap<String, Arc<Mutex<HashSet<String>>>>>,
    /// Every library loaded, by file hash. Libraries are never unmapped, so a file whose
    /// bytes were loaded before (swapping back to an earlier version) reuses that mapping
    /// instead of mapping another copy.
    pub(super) libraries: Mutex<HashMap<String, Arc<LoadedLibrary>>>,
    /// The configuration last applied, for the parts of the host that follow it (the
    /// Cytube rooms).
    applied: tokio::sync::watch::Sender<Arc<Config>>,
    /// The slots being stopped by [`PluginManager::stop_all`], which takes them out of
    /// `entries`: kept so that a forced exit meanwhile can still count what their
    /// mailboxes hold ([`PluginManager::queued_events`]).
    stopping: Mutex<Vec<(String, Arc<slot::SlotShared>)>>,
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
            shutting_down: AtomicBool::new(false),
            rejected: Mutex::new(HashMap::new()),
            stopping: Mutex::new(Vec::new()),
            libraries: Mutex::new(HashMap::new()),
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

    pub(super) fn swap_timeout(&self) -> Duration {
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
        let _serial = self.reload_lock.lock();
        if self.is_shutting_down() {
            return results;
        }
        // Step 1 of the reload for every plugin to (re)start: load and check its file,
        // which tells what it requires.
        let total = work.len();
        let mut prepared = BTreeMap::new();
        for (i, (name, running)) in work.iter().enumerate() {
            // Progress for operators watching a start with many plugins.
            let progress = format!("{}/{total}", i + 1);
            tracing::info!(plugin = %name, %progress, "loading plugin {progress}: {name}");
            let trigger = if *running { trigger } else { Trigger::Startup };
            let started = Instant::now();
            let pc = new.plugins[*name].clone();
            let step = self.ensure_slot(name, &pc, &new).map(|shared| {
                let p = self.prepare(name, &pc, &new, &shared, trigger);
                (shared, p)
            });
            prepared.insert((*name).clone(), (trigger, started, pc, step));
        }
        // Then the rest of the transaction, each plugin after those it requires.
        let nodes: Vec<deps::Node> = new
            .plugins
            .iter()
            .filter(|(_, pc)| pc.enabled)
            .map(|(table, pc)| {
                let requires = match prepared.get(table) {
                    Some((_, _, _, Ok((_, Ok(Prepared::Load { lib, .. }))))) => Some(lib.clone()),
                    _ => self.slot(table).and_then(|s| s.serving_lib()),
                }
                .map(|lib| lib.meta.manifest.requires.clone())
                .unwrap_or_default();
                deps::Node {
                    table: table.clone(),
                    plugin: Config::expected_plugin(table, pc).to_owned(),
                    requires,
                }
            })
            .collect();
        let mut order = deps::order(&nodes);
        for table in order.order {
            let Some((trigger, started, pc, step)) = prepared.remove(&table) else {
                continue;
            };
            let (shared, step) = match step {
                Ok(s) => s,
                Err(e) => {
                    results.push((table, Err(e)));
                    continue;
                }
            };
            let result = match (order.errors.remove(&table), step) {
                (_, Err(e)) => Err(e),
                (Some(e), Ok(step)) => {
                    if let Prepared::Load { lib, fresh: true } = step {
                        // Loaded, never served: it stays mapped, so count it.
                        lib.mark_retired(&self.services.metrics);
                    }
                    Err(e)
                }
                (None, Ok(Prepared::Done(outcome))) => Ok(outcome),
                (None, Ok(Prepared::Load { lib, fresh })) => self.commit(&pc, &shared, lib, fresh),
            };
            self.finish(&table, trigger, started, &shared, &result);
            results.push((table, result));
        }
        drop(_serial);
        // After the plugins, so that they listen before a room added here connects.
        self.applied.send_replace(Arc::new(new));
        results
    }

    pub(super) fn ensure_slot(
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
        let named: Vec<(String, Arc<slot::SlotShared>)> = self
            .entries
            .lock()
            .iter()
            .map(|(name, e)| (name.clone(), e.slot.shared.clone()))
            .collect();
        *self.stopping.lock() = named.clone();
        let shared: Vec<Arc<slot::SlotShared>> = named.into_iter().map(|(_, s)| s).collect();
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
        // In the reverse of the start order: a plugin stops before those it requires (the
        // storage plugin after the plugins that use it, so it records what they do while
        // stopping).
        let mut entries: BTreeMap<String, Entry> = std::mem::take(&mut *self.entries.lock());
        let nodes: Vec<deps::Node> = entries
            .iter()
            .map(|(table, e)| deps::Node {
                table: table.clone(),
                plugin: Config::expected_plugin(table, &e.config).to_owned(),
                requires: e
                    .slot
                    .shared
                    .serving_lib()
                    .map(|lib| lib.meta.manifest.requires.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let entries: Vec<(String, Entry)> = deps::order(&nodes)
            .order
            .into_iter()
            .rev()
            .filter_map(|t| entries.remove_entry(&t))
            .collect();
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
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
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

    /// The events waiting in each plugin's mailbox (plugins with none left out), for
    /// the forced exit of a second signal, which drops them: it reports what it drops.
    /// `None` when the plugin table stayed locked for 100 ms (a reload holding it): the
    /// forced exit must not wait on the host it is abandoning.
    pub fn queued_events(&self) -> Option<Vec<(String, usize)>> {
        let timeout = Duration::from_millis(100);
        let stopping = self.stopping.try_lock_for(timeout)?.clone();
        let slots = if stopping.is_empty() {
            self.entries
                .try_lock_for(timeout)?
                .iter()
                .map(|(name, e)| (name.clone(), e.slot.shared.clone()))
                .collect()
        } else {
            stopping
        };
        Some(
            slots
                .iter()
                .map(|(name, s)| (name.clone(), s.mailbox.len()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
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
