//! The reload transaction: from a plugin file to a new version serving, or nothing
//! changed.
//!
//! 1. **Load and check** (`PluginManager::prepare`): read the file once from a trusted
//!    descriptor until two `stat`s agree, hash it (a hash already serving or already
//!    refused stops here), check the pin and the ELF, load a private copy (after a
//!    preflight in a child process), and check the plugin's name. Nothing serves it yet;
//!    [`PluginManager::apply`] loads every plugin this way first, to learn their declared
//!    `requires` and start them in that order.
//! 2. **`export_state`** from the serving instance, 3. **`create`** the new instance with
//!    it (on a short-lived thread, bounded by `create_timeout_ms`), 4. **switch**
//!    atomically, 5. **shut the old instance down** and drop it while its library stays
//!    mapped (`PluginManager::commit`, done by the slot's worker between two events:
//!    `Worker::{swap, switch, rollback}` in [`super::slot`]).
//!
//! Any failure before the switch keeps the old version serving, reports the reason, and
//! remembers the refused hash for the life of the process. After the switch the new
//! version is on probation; repeated failures roll back to the previous library.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    PluginManager, loader,
    loader::{LoadError, LoadedLibrary},
    preflight,
    slot::{SlotShared, SlotState, SwapError, SwapReport},
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

    /// Steps 2-5, on the slot's worker (see [`super::slot`]'s `Worker::swap` below):
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
