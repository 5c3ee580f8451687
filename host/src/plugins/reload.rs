//! The reload transaction: from a plugin file to a new version serving, or nothing
//! changed; and its undo, the rollback.
//!
//! 1. **Load and check** (`PluginManager::prepare`, on the caller's thread): read the
//!    file once from a trusted descriptor until two `stat`s agree, hash it (a hash
//!    already serving or already refused stops here), check the pin and the ELF, load a
//!    private copy (after a preflight in a child process), and check the plugin's name.
//!    Nothing serves it yet; [`PluginManager::apply`] loads every plugin this way first,
//!    to learn their declared `requires` and start them in that order.
//! 2. **Hand it to the slot** (`PluginManager::commit`): the slot's worker, the only
//!    thread that calls into an instance, runs the next steps between two events
//!    (`Worker::swap` below), so events published meanwhile wait in the slot's mailbox
//!    and the new version handles them.
//! 3. **`export_state`** from the serving instance, 4. **`create`** the new instance
//!    with it (on a short-lived thread, bounded by `create_timeout_ms`, so a hanging
//!    constructor cannot wedge the slot), 5. **switch** (`Worker::switch`): the new
//!    instance's staged subscriptions replace the old set, the old instance's timers
//!    are cancelled, 6. **shut the old instance down** and drop it while its library
//!    stays mapped.
//!
//! Any failure before the switch keeps the old version serving, reports the reason, and
//! remembers the refused hash for the life of the process. After the switch the new
//! version is on probation: `probation_failures` failures within `probation_ms` roll
//! back (`Worker::rollback`) to the previous library (still mapped) with the state the
//! failing version exports, or the snapshot taken at the swap; an operator can ask for
//! the same rollback ([`PluginManager::rollback`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RSlice, RStr},
};
use daz_plugin_abi::{HostObj_TO, PluginBox};
use serde::Serialize;

use super::{
    PluginManager, control,
    host_api::HostApi,
    loader,
    loader::{LoadError, LoadedLibrary},
    preflight,
    slot::{Command, Instance, SlotShared, SlotState, Worker},
};
use crate::config::{Config, PluginConfig};

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
    /// A plugin it requires is not configured (or disabled).
    #[error(
        "{plugin} requires plugin {requires:?}, which is not in plugins.toml (or is disabled); add [plugins.{requires}] or remove {plugin}"
    )]
    MissingRequirement {
        /// The plugin (table) that requires it.
        plugin: String,
        /// The plugin name it requires.
        requires: String,
    },
    /// Plugins require each other in a circle; none of them can start first.
    #[error("{plugin} is in a dependency cycle ({cycle}); none of these plugins is started")]
    DependencyCycle {
        /// The plugin (table).
        plugin: String,
        /// The plugins in or behind the cycle, joined with ", ".
        cycle: String,
    },
    /// The host is shutting down: no reload starts any more.
    #[error("the host is shutting down; {0} is not reloaded")]
    ShuttingDown(String),
}

/// Outcome of a successful swap.
#[derive(Debug, Clone, Serialize)]
pub struct SwapReport {
    /// Version replaced (None on first load).
    pub from: Option<String>,
    /// Version now serving.
    pub to: String,
    /// Time from the command reaching the worker to the new version serving.
    pub micros: u64,
}

/// Why a swap or rollback did not happen. The old version (if any) keeps serving.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
pub enum SwapError {
    /// The running instance could not export its state.
    #[error("the running version of {plugin} could not export its state: {message}")]
    Export {
        /// Plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// `create` returned an error (or panicked).
    #[error("{plugin} {version} refused to start: {message}")]
    Create {
        /// Plugin.
        plugin: String,
        /// Version.
        version: String,
        /// Its message.
        message: String,
    },
    /// `create` did not return in time.
    #[error(
        "{plugin} {version} did not finish starting within {ms} ms; the running version keeps serving"
    )]
    CreateTimeout {
        /// Plugin.
        plugin: String,
        /// Version.
        version: String,
        /// The limit.
        ms: u64,
    },
    /// Rollback asked for but nothing to roll back to.
    #[error("{plugin} has no previous version to roll back to")]
    NoPrevious {
        /// Plugin.
        plugin: String,
    },
    /// The worker is gone or stuck.
    #[error("{plugin}'s worker did not answer within {ms} ms (stuck in a handler?)")]
    Unresponsive {
        /// Plugin.
        plugin: String,
        /// How long we waited.
        ms: u64,
    },
}

/// What step 1 decided.
pub(super) enum Prepared {
    /// Nothing to swap (the file is the one serving, or was refused before).
    Done(ReloadOutcome),
    /// Swap this library in. `fresh`: loaded by this reload (a failure to start it
    /// refuses its hash); otherwise it was loaded before (the serving one re-created
    /// with a new configuration, or an earlier version).
    Load {
        /// The library.
        lib: Arc<LoadedLibrary>,
        /// Loaded by this reload.
        fresh: bool,
    },
}

impl PluginManager {
    /// Reloads one plugin from its configured file: checks and loads the file, then swaps
    /// it in. The version serving before keeps serving on any failure.
    pub fn reload(&self, name: &str, trigger: Trigger) -> Result<ReloadOutcome, ReloadError> {
        let _serial = self.reload_lock.lock();
        self.reload_locked(name, trigger)
    }

    /// [`PluginManager::reload`] with `reload_lock` held.
    pub(super) fn reload_locked(
        &self,
        name: &str,
        trigger: Trigger,
    ) -> Result<ReloadOutcome, ReloadError> {
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
        let result = self
            .prepare(name, &pc, &config, &shared, trigger)
            .and_then(|p| match p {
                Prepared::Done(outcome) => Ok(outcome),
                Prepared::Load { lib, fresh } => self.commit(&pc, &shared, lib, fresh),
            });
        self.finish(name, trigger, started, &shared, &result);
        result
    }

    /// Counts and logs the result of a reload.
    pub(super) fn finish(
        &self,
        name: &str,
        trigger: Trigger,
        started: Instant,
        shared: &SlotShared,
        result: &Result<ReloadOutcome, ReloadError>,
    ) {
        let label = match result {
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
        match result {
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
    }

    /// Step 1 of the transaction: read the file (trusted, stable, pinned), decide
    /// whether there is anything to do, and load and check the library (a private copy,
    /// the preflight, abi_stable's checks, the plugin's name). Nothing serves it yet.
    pub(super) fn prepare(
        &self,
        name: &str,
        pc: &PluginConfig,
        config: &Config,
        shared: &Arc<SlotShared>,
        trigger: Trigger,
    ) -> Result<Prepared, ReloadError> {
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
        let serving = shared.status().state == SlotState::Serving;
        if let Some(lib) = &current
            && lib.sha256 == candidate.sha256
        {
            // Same bytes: a config change or an explicit request re-creates the
            // instance from the already loaded library; a file event is a no-op.
            if trigger == Trigger::FileChanged && serving {
                return Ok(Prepared::Done(ReloadOutcome::Unchanged {
                    sha256: candidate.sha256,
                }));
            }
            return Ok(Prepared::Load {
                lib: lib.clone(),
                fresh: false,
            });
        }
        // A refused file stays refused until its bytes change; only an operator's
        // explicit request (or a change of its table in plugins.toml) tries it again.
        if trigger == Trigger::Explicit || trigger == Trigger::ConfigChanged {
            shared.forget_rejected(&candidate.sha256);
        } else if shared.is_rejected(&candidate.sha256) {
            return Ok(Prepared::Done(ReloadOutcome::PreviouslyRejected {
                sha256: candidate.sha256,
            }));
        }
        let reject = |e: ReloadError| {
            shared.reject(&candidate.sha256);
            e
        };
        let known = self.libraries.lock().get(&candidate.sha256).cloned();
        if let Some(lib) = known {
            check_name(&path, name, pc, &lib.meta.name).map_err(reject)?;
            return Ok(Prepared::Load { lib, fresh: false });
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
        Ok(Prepared::Load { lib, fresh: true })
    }

    /// Steps 2-6: hands the library to the slot's worker (`Worker::swap` below):
    /// `export_state` from the serving instance, `create` the new one with it, switch,
    /// shut the old one down and keep its library mapped. Any failure keeps the old
    /// version serving; a freshly loaded library that fails is remembered as refused.
    pub(super) fn commit(
        &self,
        pc: &PluginConfig,
        shared: &Arc<SlotShared>,
        lib: Arc<LoadedLibrary>,
        fresh: bool,
    ) -> Result<ReloadOutcome, ReloadError> {
        let config_json = Config::plugin_config_json(pc);
        match shared.swap(lib.clone(), config_json, self.swap_timeout()) {
            Ok(report) => Ok(ReloadOutcome::Swapped(report)),
            Err(e) if fresh => {
                // Loaded but refused: it stays mapped, so count it.
                lib.mark_retired(&self.services.metrics);
                if !matches!(e, SwapError::Unresponsive { .. }) {
                    shared.reject(&lib.sha256);
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
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

impl SlotShared {
    /// Swaps in a loaded library (or starts the first instance). Blocks until the
    /// worker has done it or `timeout` passes.
    pub fn swap(
        &self,
        lib: Arc<LoadedLibrary>,
        config_json: String,
        timeout: Duration,
    ) -> Result<SwapReport, SwapError> {
        self.ask(
            |done| Command::Swap {
                lib,
                config_json,
                done,
            },
            timeout,
        )
    }

    /// Rolls back to the previous version.
    pub fn rollback(&self, timeout: Duration) -> Result<SwapReport, SwapError> {
        self.ask(|done| Command::Rollback { done }, timeout)
    }
}

/// A new version's trial period after a swap.
pub(super) struct Probation {
    pub(super) until: Instant,
    pub(super) failures: u32,
    /// State exported by the version that was replaced, for a rollback when the new
    /// version cannot export its own.
    pub(super) snapshot: Option<Vec<u8>>,
}

/// Steps 3-6 and the rollback, run by the slot's worker between two events.
impl Worker {
    /// Creates an instance of `lib` with `state` on a short-lived thread.
    fn create(
        &self,
        lib: &Arc<LoadedLibrary>,
        config_json: &str,
        state: Option<Vec<u8>>,
    ) -> Result<(PluginBox, HostApi), SwapError> {
        let api = HostApi::staged(
            self.shared.name.clone(),
            self.shared.sub_id,
            self.services.clone(),
        );
        let host_box = HostObj_TO::from_ptr(RArc::new(api.clone()), TD_Opaque);
        let create = lib.module.create();
        let config = config_json.to_owned();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name(format!("daz-create-{}", self.shared.name))
            .spawn(move || {
                let previous = match &state {
                    Some(s) if !s.is_empty() => ROption::RSome(RSlice::from_slice(s)),
                    _ => ROption::RNone,
                };
                let r = create(host_box, RStr::from_str(&config), previous)
                    .into_result()
                    .map_err(|e| e.message.into_string());
                // If the worker gave up waiting, the instance is dropped here, while its
                // library is still mapped.
                let _ = tx.send(r);
            });
        let plugin = self.shared.name.to_string();
        let version = lib.meta.version.clone();
        if let Err(e) = spawned {
            return Err(SwapError::Create {
                plugin,
                version,
                message: format!("cannot start a thread: {e}"),
            });
        }
        match rx.recv_timeout(self.settings.create_timeout) {
            Ok(Ok(obj)) => Ok((obj, api)),
            Ok(Err(message)) => Err(SwapError::Create {
                plugin,
                version,
                message,
            }),
            Err(_) => {
                api.retire();
                Err(SwapError::CreateTimeout {
                    plugin,
                    version,
                    ms: u64::try_from(self.settings.create_timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }

    fn export_current(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.current.as_mut() {
            None => Ok(None),
            Some(inst) => inst
                .obj
                .export_state()
                .into_result()
                .map(|v| Some(v.to_vec()))
                .map_err(|e| e.message.into_string()),
        }
    }

    /// Switches to a freshly created instance; the old one is shut down and dropped
    /// while its library is still mapped. Returns the old library. `note` becomes the
    /// status's last error in the same update that shows the new version serving (a
    /// rollback's reason), so no reader sees one without the other.
    fn switch(
        &mut self,
        obj: PluginBox,
        api: HostApi,
        lib: Arc<LoadedLibrary>,
        note: Option<String>,
    ) -> Option<Arc<LoadedLibrary>> {
        api.commit();
        self.serving(&lib);
        *self.shared.serving.lock() = Some(lib.clone());
        control::announce_loaded(&self.services.bus, &self.shared.name, &lib);
        let old = self.current.replace(Instance {
            obj,
            lib: lib.clone(),
            api,
        });
        if self.quarantined {
            self.quarantined = false;
            self.panic_times.clear();
            self.services
                .metrics
                .quarantined
                .with_label_values(&[&*self.shared.name])
                .set(0);
        }
        {
            let mut st = self.shared.status.lock();
            st.state = SlotState::Serving;
            st.version = Some(lib.meta.version.clone());
            st.sha256 = Some(lib.sha256.clone());
            st.loaded_at_ms = Some(lib.loaded_at_ms);
            st.last_error = note;
        }
        old.map(|inst| {
            inst.api.retire();
            let mut obj = inst.obj;
            if let Err(e) = obj.shutdown().into_result() {
                tracing::warn!(plugin = %self.shared.name, error = %e.message, "old version's shutdown returned an error");
            }
            drop(obj);
            if !Arc::ptr_eq(&inst.lib, &lib) {
                self.retired(&inst.lib);
            }
            inst.lib
        })
    }

    pub(super) fn swap(
        &mut self,
        lib: Arc<LoadedLibrary>,
        config_json: String,
    ) -> Result<SwapReport, SwapError> {
        let started = Instant::now();
        let plugin = self.shared.name.to_string();
        let from = self.current.as_ref().map(|i| i.lib.meta.version.clone());
        let state = self.export_current().map_err(|message| SwapError::Export {
            plugin: plugin.clone(),
            message,
        })?;
        let (obj, api) = self.create(&lib, &config_json, state.clone())?;
        let old = self.switch(obj, api, lib.clone(), None);
        self.config_json = config_json;
        let new_version = match &old {
            Some(old) => !Arc::ptr_eq(old, &lib),
            // Coming back from quarantine (or a first load): probation only if there is
            // something to roll back to.
            None => self
                .previous
                .as_ref()
                .is_some_and(|p| !Arc::ptr_eq(p, &lib)),
        };
        if let Some(old) = old.filter(|o| !Arc::ptr_eq(o, &lib)) {
            self.previous = Some(old);
        }
        if new_version {
            self.probation = Some(Probation {
                until: Instant::now() + self.settings.probation,
                failures: 0,
                snapshot: state,
            });
        }
        self.update_previous_status();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::info!(plugin = %plugin, from = ?from, to = %lib.meta.version, micros, "plugin version serving");
        Ok(SwapReport {
            from,
            to: lib.meta.version.clone(),
            micros,
        })
    }

    fn update_previous_status(&self) {
        let mut st = self.shared.status.lock();
        st.previous_version = self.previous.as_ref().map(|p| p.meta.version.clone());
        st.probation_until_ms = self.probation.as_ref().and_then(|p| {
            let left = p.until.checked_duration_since(Instant::now())?;
            Some(crate::now_ms() + i64::try_from(left.as_millis()).unwrap_or(0))
        });
    }

    pub(super) fn rollback(&mut self, reason: &str) -> Result<SwapReport, SwapError> {
        let started = Instant::now();
        let plugin = self.shared.name.to_string();
        let Some(prev) = self.previous.clone() else {
            return Err(SwapError::NoPrevious { plugin });
        };
        let snapshot = self.probation.take().and_then(|p| p.snapshot);
        let state = match self.export_current() {
            Ok(s) => s.or(snapshot),
            Err(e) => {
                tracing::warn!(plugin = %plugin, error = %e, "failing version could not export its state; rolling back with the state from before the swap");
                snapshot
            }
        };
        let from = self.current.as_ref().map(|i| i.lib.meta.version.clone());
        let config = self.config_json.clone();
        let (obj, api) = self.create(&prev, &config, state)?;
        // Counted before the switch shows the old version serving, and the reason shown
        // with it: whoever sees the rolled-back version also sees why and the count.
        self.services
            .metrics
            .rollbacks
            .with_label_values(&[&*self.shared.name])
            .inc();
        let note = format!(
            "rolled back from {} to {}: {reason}",
            from.as_deref().unwrap_or("?"),
            prev.meta.version
        );
        let failed = self.switch(obj, api, prev.clone(), Some(note));
        if let Some(failed) = failed {
            self.shared.reject(&failed.sha256);
        }
        // The failed version stays mapped but is no longer a rollback target.
        self.previous = None;
        self.update_previous_status();
        control::announce_rolled_back(
            &self.services.bus,
            &plugin,
            from.as_deref(),
            &prev.meta.version,
            reason,
        );
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::error!(
            plugin = %plugin,
            from = ?from,
            to = %prev.meta.version,
            reason,
            "rolled back to the previous version"
        );
        Ok(SwapReport {
            from,
            to: prev.meta.version.clone(),
            micros,
        })
    }
}
