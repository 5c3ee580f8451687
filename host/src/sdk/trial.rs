//! `daz check-plugin FILE --config TABLE.toml`: start the plugin once, in a child process,
//! with the configuration it will get in production, and stop it again.
//!
//! Loading proves the file is a plugin this host accepts; it does not prove the plugin
//! starts. A `create` that refuses its configuration, panics, or crashes would otherwise
//! be found at deploy time. The child (`daz __trial-create FILE CONFIG.json`) loads the
//! file with the host's loader, calls `create` with the configuration (as the host
//! would: a real bus, no rooms, no previous state) and then `shutdown`, and prints one
//! JSON line. A crash or a hang costs the child; the parent reports it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RStr},
};
use daz_bus::{Bus, Mailbox, MailboxConfig};
use daz_plugin_abi::HostObj_TO;
use serde::{Deserialize, Serialize};

use crate::{
    metrics::Metrics,
    plugins::{
        host_api::{HostApi, HostServices, NoRooms},
        loader,
    },
};

/// How long `create` and `shutdown` together may take before the child is killed.
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The child's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "message")]
pub enum TrialReport {
    /// `create` and `shutdown` both returned `Ok`.
    Started,
    /// The file did not load (the normal preflight says why in more detail).
    Load(String),
    /// `create` returned an error (a refused configuration, …) or panicked.
    Create(String),
    /// `shutdown` returned an error or panicked.
    Shutdown(String),
}

impl std::fmt::Display for TrialReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrialReport::Started => f.write_str("create and shutdown succeeded"),
            TrialReport::Load(m) => write!(f, "cannot load the plugin: {m}"),
            TrialReport::Create(m) => write!(f, "create failed with this configuration: {m}"),
            TrialReport::Shutdown(m) => write!(f, "shutdown failed: {m}"),
        }
    }
}

/// Reads the `--config` file of `check-plugin`: TOML.
pub fn read_toml(path: &Path) -> anyhow::Result<(PathBuf, toml::Table)> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok((path.to_owned(), table))
}

/// The configuration `create` of plugin `name` receives, as JSON: from a whole
/// `plugins.toml` (a file with a `[plugins]` table) the plugin's `config` table (empty if
/// it has none); from any other file, the whole file (what goes under
/// `[plugins.<name>.config]`).
pub fn plugin_table(
    (path, table): (PathBuf, toml::Table),
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let config = match table.get("plugins") {
        Some(toml::Value::Table(plugins)) => match plugins.get(name) {
            Some(toml::Value::Table(entry)) => entry
                .get("config")
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(toml::Table::new())),
            _ => anyhow::bail!(
                "{} has no [plugins.{name}] table; add one or pass a file holding just the \
                 plugin's config table",
                path.display()
            ),
        },
        _ => toml::Value::Table(table),
    };
    serde_json::to_value(config).context("the configuration does not convert to JSON")
}

/// Runs in the child: load `file`, create an instance with `config_json`, shut it down.
pub fn run_child(file: &Path, config_json: &str) -> TrialReport {
    let lib = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            loader::check_elf(file, &bytes).map_err(|e| e.to_string())?;
            loader::load_library(file, file, "", bytes.len() as u64).map_err(|e| e.to_string())
        }) {
        Ok(lib) => lib,
        Err(e) => return TrialReport::Load(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return TrialReport::Load(format!("cannot start a runtime: {e}")),
    };
    let bus = Bus::new();
    let name: Arc<str> = Arc::from(lib.meta.name.as_str());
    let mailbox = Mailbox::new(name.clone(), MailboxConfig::new(1024));
    let sub_id = match bus.register(&lib.meta.name, mailbox) {
        Ok(id) => id,
        Err(e) => return TrialReport::Load(format!("cannot register on the bus: {e}")),
    };
    let services = HostServices::new(
        bus,
        Metrics::new(),
        runtime.handle().clone(),
        Arc::new(NoRooms),
    );
    let api = HostApi::staged(name, sub_id, services);
    let host = HostObj_TO::from_ptr(RArc::new(api.clone()), TD_Opaque);
    let create = lib.module.create();
    let mut instance = match create(host, RStr::from_str(config_json), ROption::RNone).into_result()
    {
        Ok(obj) => obj,
        Err(e) => return TrialReport::Create(e.message.into_string()),
    };
    api.commit();
    let report = match instance.shutdown().into_result() {
        Ok(()) => TrialReport::Started,
        Err(e) => TrialReport::Shutdown(e.message.into_string()),
    };
    api.retire();
    // Dropped while the library is mapped (it never is unmapped).
    drop(instance);
    report
}

/// Runs the trial child for `file` with `config` and waits up to [`TRIAL_TIMEOUT`].
pub fn run(exe: &Path, file: &Path, config: &serde_json::Value) -> TrialReport {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return TrialReport::Load(format!("cannot create a temporary directory: {e}")),
    };
    let config_file = dir.path().join("config.json");
    if let Err(e) = std::fs::write(&config_file, config.to_string()) {
        return TrialReport::Load(format!("cannot write the configuration: {e}"));
    }
    let child = Command::new(exe)
        .arg("__trial-create")
        .arg(file)
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return TrialReport::Load(format!("cannot start {}: {e}", exe.display())),
    };
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(TRIAL_TIMEOUT) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return TrialReport::Load(format!("cannot wait for the trial: {e}")),
        Err(_) => {
            // SAFETY: plain kill(2) of the child this function started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            return TrialReport::Create(format!(
                "create and shutdown did not finish within {} s",
                TRIAL_TIMEOUT.as_secs()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<TrialReport>(l).ok())
    {
        Some(report) => report,
        None => {
            use std::os::unix::process::ExitStatusExt;
            let how = match output.status.signal() {
                Some(sig) => format!("the plugin crashed the process (signal {sig})"),
                None => format!("the trial exited with {}", output.status),
            };
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            TrialReport::Create(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            })
        }
    }
}
