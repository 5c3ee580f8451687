//! `plugins.toml`: the host's configuration (host settings, HTTP, bus, plugins).
//!
//! Paths in the file are relative to the directory the file is in. Unknown keys are
//! errors (a typo must not silently fall back to a default); every error names the file,
//! the line and column, the key and what is wrong.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host settings.
    #[serde(default)]
    pub host: HostConfig,
    /// HTTP server (metrics, health, admin API).
    #[serde(default)]
    pub http: HttpConfig,
    /// Bus settings.
    #[serde(default)]
    pub bus: BusConfig,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Cytube rooms (read by the Cytube client).
    #[serde(default)]
    pub rooms: Vec<toml::Table>,
    /// Where the file was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[host]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Directory the plugin files are in.
    pub plugin_dir: PathBuf,
    /// Private directory for the per-version copies the host loads.
    pub runtime_dir: PathBuf,
    /// Load each new plugin file in a child process first (a crashing file then cannot
    /// take the host down).
    pub preflight: bool,
    /// Executable used for the preflight (default: this executable).
    pub preflight_exe: Option<PathBuf>,
    /// Watch the plugin directory and this file for changes.
    pub watch: bool,
    /// Quiet period after the last file event before a reload, ms.
    pub debounce_ms: u64,
    /// Interval between the two `stat`s that decide a file is stable, ms.
    pub stable_interval_ms: u64,
    /// How long a plugin's `create` may take, ms.
    pub create_timeout_ms: u64,
    /// How long one `on_event` may run before the plugin is reported stuck, ms.
    pub handler_deadline_ms: u64,
    /// After a swap, how long the new version is on probation, ms.
    pub probation_ms: u64,
    /// Failures (panics or errors) during probation that trigger a rollback.
    pub probation_failures: u32,
    /// Panics within `quarantine_window_ms` that quarantine a plugin.
    pub quarantine_panics: u32,
    /// Window for `quarantine_panics`, ms.
    pub quarantine_window_ms: u64,
    /// Refuse plugin files and directories writable by group/other or owned by another
    /// user.
    pub enforce_permissions: bool,
    /// Deadline for a graceful shutdown, ms.
    pub shutdown_timeout_ms: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            plugin_dir: PathBuf::from("plugins"),
            runtime_dir: PathBuf::from(".daz/runtime"),
            preflight: true,
            preflight_exe: None,
            watch: true,
            debounce_ms: 100,
            stable_interval_ms: 20,
            create_timeout_ms: 10_000,
            handler_deadline_ms: 5_000,
            probation_ms: 10_000,
            probation_failures: 3,
            quarantine_panics: 5,
            quarantine_window_ms: 60_000,
            enforce_permissions: true,
            shutdown_timeout_ms: 10_000,
        }
    }
}

impl HostConfig {
    /// `create_timeout_ms` as a duration.
    pub fn create_timeout(&self) -> Duration {
        Duration::from_millis(self.create_timeout_ms)
    }
    /// `handler_deadline_ms` as a duration.
    pub fn handler_deadline(&self) -> Duration {
        Duration::from_millis(self.handler_deadline_ms)
    }
    /// `probation_ms` as a duration.
    pub fn probation(&self) -> Duration {
        Duration::from_millis(self.probation_ms)
    }
    /// `quarantine_window_ms` as a duration.
    pub fn quarantine_window(&self) -> Duration {
        Duration::from_millis(self.quarantine_window_ms)
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[bus]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Default mailbox capacity of a plugin.
    pub mailbox_capacity: usize,
    /// Default per-subject-prefix capacities inside every plugin's mailbox.
    pub prefix_capacity: BTreeMap<String, usize>,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            mailbox_capacity: 10_000,
            prefix_capacity: BTreeMap::new(),
        }
    }
}

/// `[plugins.<name>]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Load it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The library file, relative to `plugin_dir` (or absolute).
    pub file: PathBuf,
    /// Refuse any file whose SHA-256 (hex) differs.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Mailbox capacity (default `[bus] mailbox_capacity`).
    #[serde(default)]
    pub mailbox_capacity: Option<usize>,
    /// Per-subject-prefix capacities inside the mailbox (added to `[bus]`'s).
    #[serde(default)]
    pub prefix_capacity: BTreeMap<String, usize>,
    /// Override of `[host] handler_deadline_ms` for this plugin.
    #[serde(default)]
    pub handler_deadline_ms: Option<u64>,
    /// The plugin's own settings, handed to it as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

fn yes() -> bool {
    true
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has wrong keys/values.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with line, column and key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.path = Some(path.to_owned());
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and validates text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        self.host.plugin_dir = abs(&self.host.plugin_dir);
        self.host.runtime_dir = abs(&self.host.runtime_dir);
        if let Some(exe) = &self.host.preflight_exe {
            self.host.preflight_exe = Some(abs(exe));
        }
    }

    /// Makes relative paths absolute against `base` (for configs built in code).
    pub fn with_base_dir(mut self, base: &Path) -> Self {
        self.resolve_paths(base);
        self
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        for (name, plugin) in &self.plugins {
            if !valid_plugin_name(name) {
                return Err(invalid(format!(
                    "[plugins.{name}]: a plugin name is 1-64 of a-z, 0-9, '-' and '_'; rename the table"
                )));
            }
            if plugin.file.as_os_str().is_empty() {
                return Err(invalid(format!(
                    "[plugins.{name}] file: must name the plugin's library file"
                )));
            }
            if let Some(pin) = &plugin.sha256
                && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid(format!(
                    "[plugins.{name}] sha256: expected 64 hex digits (`sha256sum FILE`), got {pin:?}"
                )));
            }
            if plugin.mailbox_capacity == Some(0) {
                return Err(invalid(format!(
                    "[plugins.{name}] mailbox_capacity: must be at least 1"
                )));
            }
            for (prefix, cap) in plugin
                .prefix_capacity
                .iter()
                .chain(&self.bus.prefix_capacity)
            {
                if *cap == 0 || daz_bus::validate_subject(prefix).is_err() {
                    return Err(invalid(format!(
                        "[plugins.{name}] prefix_capacity: {prefix:?} = {cap} must be a subject prefix like \"cytube.in\" with a capacity of at least 1"
                    )));
                }
            }
        }
        if self.bus.mailbox_capacity == 0 {
            return Err(invalid(
                "[bus] mailbox_capacity: must be at least 1".to_owned(),
            ));
        }
        if self.host.probation_failures == 0 || self.host.quarantine_panics == 0 {
            return Err(invalid(
                "[host] probation_failures and quarantine_panics must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    /// The plugin's config table as JSON, for `create`.
    pub fn plugin_config_json(plugin: &PluginConfig) -> String {
        serde_json::to_string(&plugin.config).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The absolute path of a plugin's file.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        if plugin.file.is_absolute() {
            plugin.file.clone()
        } else {
            self.host.plugin_dir.join(&plugin.file)
        }
    }
}

/// Plugin names double as bus names, log targets and metric label values.
pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("plugins.toml"))
    }

    #[test]
    fn minimal_file_uses_defaults() {
        let c = parse("[plugins.example]\nfile = \"libexample.so\"\n").unwrap();
        assert!(c.host.preflight);
        assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1");
        assert!(c.plugins["example"].enabled);
    }

    #[test]
    fn plugin_config_table_becomes_json() {
        let c = parse(
            "[plugins.example]\nfile = \"x.so\"\n[plugins.example.config]\ngreeting = \"hi\"\nn = 3\n",
        )
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&Config::plugin_config_json(&c.plugins["example"])).unwrap();
        assert_eq!(json, serde_json::json!({"greeting": "hi", "n": 3}));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("[host]\npreflite = true\n").unwrap_err().to_string();
        assert!(err.contains("plugins.toml"), "{err}");
        assert!(err.contains("preflite"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = parse("[plugins.Bad]\nfile = \"x.so\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rename the table"), "{err}");
        let err = parse("[plugins.x]\nfile = \"x.so\"\nsha256 = \"abc\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = parse("[plugins.x]\nfile = \"x.so\"\nmailbox_capacity = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
        let err = parse("[plugins.x]\nfile = \"x.so\"\nprefix_capacity = { \"a..b\" = 3 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("subject prefix"), "{err}");
    }

    #[test]
    fn missing_file_key_is_an_error() {
        let err = parse("[plugins.x]\nenabled = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("file"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = parse("[host]\nplugin_dir = \"lib\"\n")
            .unwrap()
            .with_base_dir(Path::new("/etc/daz"));
        assert_eq!(c.host.plugin_dir, Path::new("/etc/daz/lib"));
    }
}
