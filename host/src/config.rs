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
    /// Cytube rooms (`[[rooms]]`), one connection each.
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
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
    /// Environment variable holding the admin API's bearer token (default
    /// [`DEFAULT_TOKEN_ENV`]). Naming one explicitly makes it required.
    pub token_env: Option<String>,
    /// File holding the admin API's bearer token (trailing newline ignored). Exclusive
    /// with `token_env`.
    pub token_file: Option<PathBuf>,
    /// Recent bus events kept for `GET /api/events`.
    pub events_buffer: usize,
    /// Opt out of the admin token on loopback: the API is then open to every local user
    /// and to any web page their browser shows that can reach it (only the `Host`,
    /// `Origin` and content-type checks remain). Refused beyond loopback.
    pub open: bool,
    /// Host names (besides IP addresses and `localhost`) the server answers to, for a
    /// host reached by name through a proxy or DNS. Anything else in the `Host` header is
    /// refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; above it the oldest idle connection is closed, and a
    /// new one is refused when none is idle.
    pub max_connections: usize,
    /// Live event streams (`/api/events/stream`) at once; more are answered 503.
    pub max_streams: usize,
    /// How long a client may take to send a request's headers, and how long a
    /// connection may stay idle between requests, before it is closed.
    pub header_timeout_ms: u64,
}

/// The environment variable the admin token is read from when `[http]` names none.
pub const DEFAULT_TOKEN_ENV: &str = "DAZ_ADMIN_TOKEN";

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            token_env: None,
            token_file: None,
            events_buffer: 1_000,
            open: false,
            allowed_hosts: Vec::new(),
            max_connections: 256,
            max_streams: 32,
            header_timeout_ms: 10_000,
        }
    }
}

impl HttpConfig {
    /// The environment variable the token is read from (unless `token_file` is set).
    pub fn token_env_name(&self) -> &str {
        self.token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV)
    }

    fn validate(&self) -> Result<(), String> {
        if self.token_env.is_some() && self.token_file.is_some() {
            return Err("[http]: set token_env OR token_file, not both".to_owned());
        }
        if let Some(name) = &self.token_env {
            check_env_name("[http] token_env", name)?;
        }
        if self
            .token_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err("[http] token_file: must name the file holding the token".to_owned());
        }
        if self.open && (self.token_env.is_some() || self.token_file.is_some()) {
            return Err(
                "[http] open = true turns the admin token off; remove token_env / token_file, or open"
                    .to_owned(),
            );
        }
        for h in &self.allowed_hosts {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(format!(
                    "[http] allowed_hosts: {h:?} is not a host name (letters, digits, '-' and '.'; no port)"
                ));
            }
        }
        if !(1..=65_536).contains(&self.max_connections)
            || !(1..=65_536).contains(&self.max_streams)
        {
            return Err(
                "[http] max_connections and max_streams must be between 1 and 65536".to_owned(),
            );
        }
        if !(100..=3_600_000).contains(&self.header_timeout_ms) {
            return Err("[http] header_timeout_ms must be between 100 and 3600000".to_owned());
        }
        if !(1..=1_000_000).contains(&self.events_buffer) {
            return Err(format!(
                "[http] events_buffer: {} is out of range; keep between 1 and 1000000 events (default 1000)",
                self.events_buffer
            ));
        }
        Ok(())
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
    /// The plugin the library must contain (its `Plugin::NAME`). Defaults to the table
    /// name; set it to run several instances of one plugin under different names.
    #[serde(default)]
    pub plugin: Option<String>,
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
    /// The most verbose level of this plugin's log lines (`off`, `error`, `warn`, `info`,
    /// `debug`, `trace`); unset, `RUST_LOG` decides (`info` by default). Applied at start
    /// and whenever `plugins.toml` changes, without reloading the plugin.
    #[serde(default)]
    pub log_level: Option<PluginLogLevel>,
    /// The plugin's own settings, handed to it as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

fn yes() -> bool {
    true
}

/// `[plugins.<name>] log_level`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginLogLevel {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Informational lines and above.
    Info,
    /// Debug lines and above.
    Debug,
    /// Everything.
    Trace,
}

impl PluginLogLevel {
    /// As a `tracing` filter level.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            PluginLogLevel::Off => LevelFilter::OFF,
            PluginLogLevel::Error => LevelFilter::ERROR,
            PluginLogLevel::Warn => LevelFilter::WARN,
            PluginLogLevel::Info => LevelFilter::INFO,
            PluginLogLevel::Debug => LevelFilter::DEBUG,
            PluginLogLevel::Trace => LevelFilter::TRACE,
        }
    }

    /// The name used in `plugins.toml` and `RUST_LOG` directives.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginLogLevel::Off => "off",
            PluginLogLevel::Error => "error",
            PluginLogLevel::Warn => "warn",
            PluginLogLevel::Info => "info",
            PluginLogLevel::Debug => "debug",
            PluginLogLevel::Trace => "trace",
        }
    }
}

/// `[[rooms]]`: one Cytube channel the host connects to.
///
/// Credentials are never in this file: it names an environment variable or a file that
/// holds them, and the client reads them when it connects. Nothing here is secret, so
/// the whole table may be logged or shown by the API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// The room's name on the bus (`cytube.in.<name>.…`), in logs, metrics and the API:
    /// 1-64 of a-z, 0-9, '-' and '_'. Defaults to the channel name, lowercased.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL of the Cytube site: `https://cytu.be`, a self-hosted server, or the
    /// simulator. The client asks `<site>/socketconfig/<channel>.json` where to connect.
    pub site: String,
    /// The channel: 1-30 of A-Z, a-z, 0-9, '-' and '_'.
    pub channel: String,
    /// The bot's user name. With a password it logs in to that account; without one it
    /// logs in as a guest. Absent: the bot stays anonymous (reads everything, cannot chat).
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the account password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the account password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the channel password, if the channel has one.
    #[serde(default)]
    pub channel_password_env: Option<String>,
    /// File holding the channel password.
    #[serde(default)]
    pub channel_password_file: Option<PathBuf>,
    /// Connect to it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Reconnect policy and connect budget.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// The outbound governor.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Caps on the room state the host keeps.
    #[serde(default)]
    pub limits: RoomLimits,
}

/// `[rooms.limits]`: the most users and playlist items the host keeps for the room.
/// Entries beyond a cap are not kept, counted in `daz_cytube_room_capped_total` and
/// reported in a WARN at most once a minute.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoomLimits {
    /// Listed users (default 10000).
    pub max_users: usize,
    /// Playlist items (default 10000; CyTube's own default cap is 4000).
    pub max_playlist: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        let d = daz_cytube_proto::room::Limits::default();
        RoomLimits {
            max_users: d.max_users,
            max_playlist: d.max_playlist,
        }
    }
}

impl From<RoomLimits> for daz_cytube_proto::room::Limits {
    fn from(l: RoomLimits) -> Self {
        daz_cytube_proto::room::Limits {
            max_users: l.max_users,
            max_playlist: l.max_playlist,
        }
    }
}

impl RoomConfig {
    /// The room's bus name (see [`RoomConfig::name`]).
    pub fn room_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.channel.to_ascii_lowercase())
    }

    /// Checks one `[[rooms]]` table (`index` counts from 0); the message names the
    /// table and says how to fix it.
    fn validate(&self, index: usize) -> Result<(), String> {
        let at = format!("[[rooms]] #{} (channel {:?})", index + 1, self.channel);
        let channel_ok = !self.channel.is_empty()
            && self.channel.len() <= 30
            && self
                .channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !channel_ok {
            return Err(format!(
                "{at} channel: a Cytube channel name is 1-30 of A-Z, a-z, 0-9, '-' and '_'"
            ));
        }
        if !valid_plugin_name(&self.room_name()) {
            return Err(format!(
                "{at} name: {:?} is not usable as a room name (1-64 of a-z, 0-9, '-' and '_'); set `name`",
                self.room_name()
            ));
        }
        match url::Url::parse(&self.site) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(format!(
                    "{at} site: {:?} is not an http(s) base URL like \"https://cytu.be\"",
                    self.site
                ));
            }
        }
        if let Some(user) = &self.username {
            let ok = !user.is_empty()
                && user.len() <= 20
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "{at} username: a Cytube user name is 1-20 of A-Z, a-z, 0-9, '-' and '_'"
                ));
            }
        }
        for (key, name) in [
            ("password_env", &self.password_env),
            ("channel_password_env", &self.channel_password_env),
        ] {
            if let Some(name) = name {
                check_env_name(&format!("{at} {key}"), name)?;
            }
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err(format!("{at}: set password_env OR password_file, not both"));
        }
        if self.channel_password_env.is_some() && self.channel_password_file.is_some() {
            return Err(format!(
                "{at}: set channel_password_env OR channel_password_file, not both"
            ));
        }
        if self.username.is_none() && (self.password_env.is_some() || self.password_file.is_some())
        {
            return Err(format!(
                "{at}: a password is configured but no username; add `username`"
            ));
        }
        let r = &self.reconnect;
        if r.initial_delay_ms == 0 || r.initial_delay_ms > r.max_delay_ms {
            return Err(format!(
                "{at} reconnect: initial_delay_ms must be at least 1 and at most max_delay_ms"
            ));
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(format!("{at} reconnect.jitter: must be between 0 and 1"));
        }
        if r.connect_burst == 0 || r.connect_refill_ms == 0 || r.connect_timeout_ms == 0 {
            return Err(format!(
                "{at} reconnect: connect_burst, connect_refill_ms and connect_timeout_ms must be at least 1"
            ));
        }
        if self.limits.max_users == 0 || self.limits.max_playlist == 0 {
            return Err(format!(
                "{at} limits: max_users and max_playlist must be at least 1"
            ));
        }
        let o = &self.outbound;
        if o.capacity == 0 || o.ttl_ms == 0 {
            return Err(format!(
                "{at} outbound: capacity and ttl_ms must be at least 1"
            ));
        }
        if o.chat_burst == Some(0)
            || o.chat_per_second
                .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(format!(
                "{at} outbound: chat_burst must be at least 1 and chat_per_second above 0"
            ));
        }
        Ok(())
    }
}

/// What to do after a kick that a reconnect would only repeat.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KickPolicy {
    /// Stay disconnected until an operator restarts the room (or the host).
    Stop,
    /// Reconnect after `policy_retry_ms` (never in a loop: each repeat doubles it, up to
    /// ten times the base).
    Retry,
}

/// `[rooms.reconnect]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Delay before the first reconnect attempt, ms.
    pub initial_delay_ms: u64,
    /// Cap of the exponential backoff, ms.
    pub max_delay_ms: u64,
    /// Random fraction (0-1) taken off each delay so that many bots do not reconnect in
    /// step.
    pub jitter: f64,
    /// A session that stayed joined this long resets the backoff, ms.
    pub stable_after_ms: u64,
    /// Connects allowed in a burst to one site (the server allows 5 per client IP).
    /// Shared by every room on the same site.
    pub connect_burst: u32,
    /// One more connect per this interval, ms (the server refills one per 10 s).
    pub connect_refill_ms: u64,
    /// Limit for discovery, websocket open and the Socket.IO handshake, ms.
    pub connect_timeout_ms: u64,
    /// After `kick {reason: "Duplicate login"}` (another client logged in as the bot).
    pub on_duplicate_login: KickPolicy,
    /// After a ban.
    pub on_ban: KickPolicy,
    /// Base delay of the `retry` policy, ms.
    pub policy_retry_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_delay_ms: 1_000,
            max_delay_ms: 120_000,
            jitter: 0.3,
            stable_after_ms: 60_000,
            connect_burst: 5,
            connect_refill_ms: 10_000,
            connect_timeout_ms: 15_000,
            on_duplicate_login: KickPolicy::Stop,
            on_ban: KickPolicy::Stop,
            policy_retry_ms: 600_000,
        }
    }
}

/// `[rooms.outbound]`: the governor that sends what plugins ask for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Requests waiting to be sent (all plugins together); beyond it new ones fail.
    pub capacity: usize,
    /// How long a request may wait (disconnected, or behind the flood limits) before it
    /// is reported failed, ms.
    pub ttl_ms: u64,
    /// Extra spacing added to the server's limits, ms: messages arrive with network
    /// jitter, and one arriving early would be dropped with `cooldown`.
    pub margin_ms: u64,
    /// Times a message dropped with `cooldown` is sent again before it is reported.
    pub max_retries: u32,
    /// Override of the chat/PM burst, for servers configured with other limits.
    pub chat_burst: Option<u32>,
    /// Override of the sustained chat/PM rate (messages per second).
    pub chat_per_second: Option<f64>,
    /// Override of the idle time that resets the chat/PM burst, ms.
    pub chat_reset_ms: Option<u64>,
    /// While the bot is muted in the channel: `hold` its chat until the unmute (PMs
    /// still go; held lines still expire after `ttl_ms`), or `fail` it at once.
    pub on_muted: MutedPolicy,
}

/// `[rooms.outbound] on_muted`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MutedPolicy {
    /// Hold chat until the unmute.
    #[default]
    Hold,
    /// Fail chat at once (`cytube.out.<room>.failed`, code `muted`).
    Fail,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            capacity: 1_000,
            ttl_ms: 120_000,
            margin_ms: 15,
            max_retries: 3,
            chat_burst: None,
            chat_per_second: None,
            chat_reset_ms: None,
            on_muted: MutedPolicy::Hold,
        }
    }
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
        let path = canonical_file(path);
        config.resolve_paths(path.parent().unwrap_or(Path::new("/")));
        config.path = Some(path);
        Ok(config)
    }

    /// Parses and validates text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: parse_message(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Makes every path absolute against `base` (the file's directory). The paths the
    /// host watches or compares (the plugin directory, plugin files) take their
    /// [`canonical_dir`] / [`canonical_file`] form here, once, so that a relative
    /// `plugins.toml`, `-c ./plugins.toml` and an absolute path all give the same
    /// configuration, and file events (which carry the watched directory's form) match.
    fn resolve_paths(&mut self, base: &Path) {
        let base = canonical_dir(base);
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        self.host.plugin_dir = canonical_dir(&abs(&self.host.plugin_dir));
        self.host.runtime_dir = canonical_dir(&abs(&self.host.runtime_dir));
        let plugin_dir = self.host.plugin_dir.clone();
        for plugin in self.plugins.values_mut() {
            // A bare file name is already canonical below the canonical directory; a
            // path with directories (or an absolute one) is resolved like the rest.
            if plugin.file.components().count() > 1 {
                plugin.file = canonical_file(&plugin_dir.join(&plugin.file));
            }
        }
        if let Some(exe) = &self.host.preflight_exe {
            self.host.preflight_exe = Some(abs(exe));
        }
        if let Some(file) = &self.http.token_file {
            self.http.token_file = Some(abs(file));
        }
        for room in &mut self.rooms {
            for file in [&mut room.password_file, &mut room.channel_password_file]
                .into_iter()
                .flatten()
            {
                *file = abs(file);
            }
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
        self.http.validate().map_err(invalid)?;
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
        let mut names = std::collections::BTreeSet::new();
        for (i, room) in self.rooms.iter().enumerate() {
            room.validate(i).map_err(invalid)?;
            let name = room.room_name();
            if !names.insert(name.clone()) {
                return Err(invalid(format!(
                    "[[rooms]] #{}: room name {name:?} is used twice; give one of them another `name`",
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// The plugin's config table as JSON, for `create`.
    pub fn plugin_config_json(plugin: &PluginConfig) -> String {
        serde_json::to_string(&plugin.config).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The plugin name the library in a table must declare.
    pub fn expected_plugin<'a>(name: &'a str, plugin: &'a PluginConfig) -> &'a str {
        plugin.plugin.as_deref().unwrap_or(name)
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

/// The canonical form of a directory: absolute, symlinks, `.` and `..` resolved. The
/// part that does not exist yet is appended as written (minus `.`; `..` drops the
/// previous name), so a directory created later keeps the same form.
pub fn canonical_dir(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    // The longest existing ancestor, canonicalised; the rest appended lexically.
    let parts: Vec<std::path::Component<'_>> = absolute.components().collect();
    let (mut base, rest) = (0..=parts.len())
        .rev()
        .find_map(|i| {
            let prefix: PathBuf = parts[..i].iter().collect();
            prefix.canonicalize().ok().map(|c| (c, &parts[i..]))
        })
        .unwrap_or_else(|| (PathBuf::new(), &parts[..]));
    for part in rest {
        match part {
            std::path::Component::ParentDir => {
                base.pop();
            }
            std::path::Component::CurDir => {}
            other => base.push(other),
        }
    }
    base
}

/// The canonical form of a file path: its directory in [`canonical_dir`] form and its
/// own name as written (the file may be a symlink, be replaced by a rename, or not exist
/// yet; events name it by the name in its directory).
pub fn canonical_file(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            canonical_dir(parent).join(name)
        }
        _ => canonical_dir(path),
    }
}

/// toml's message with its position, without the source excerpt toml adds: the line
/// could be a secret someone pasted into the file (`token = "…"`), and errors never
/// show credentials.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|t| format!(" in {}", t.split('#').next().unwrap_or(t).trim()))
        .unwrap_or_default();
    // A bad value's span points at the value: name its key too (toml names only the
    // unknown or missing ones).
    let line_text = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !message.contains(&format!("`{k}`")))
        .map(|k| format!(", key `{k}`"))
        .unwrap_or_default();
    let hint = if ["token", "password", "channel_password", "secret"]
        .iter()
        .any(|k| message.contains(&format!("`{k}`")))
    {
        "; secrets are never written in plugins.toml: name an environment variable (`…_env`) or a file (`…_file`) holding them"
    } else {
        ""
    };
    format!("line {line}, column {column}{table}{key}: {message}{hint}")
}

/// Whether `name` is an environment variable name: 1-128 of A-Z, a-z, 0-9 and '_', not
/// starting with a digit.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Refuses a `…_env` value that is not a variable name. The value is never shown: what
/// does not look like a name is most often the secret itself, pasted in by mistake.
fn check_env_name(key: &str, name: &str) -> Result<(), String> {
    if valid_env_name(name) {
        return Ok(());
    }
    Err(format!(
        "{key}: the value ({} characters, not shown: it may be a secret pasted in by mistake) is not an environment variable name (A-Z, a-z, 0-9 and '_', not starting with a digit); write the NAME of the variable that holds the secret",
        name.chars().count()
    ))
}

/// How a message shows the variable a `…_env` key names: conventional names
/// (`DAZ_ADMIN_TOKEN`: upper case, digits, '_') are shown; anything else might be a
/// secret that happens to be a valid name (`a3f9…` is one), so it is described by its
/// key instead.
pub fn shown_env_name(key: &str, name: &str) -> String {
    let conventional = valid_env_name(name)
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if conventional {
        name.to_owned()
    } else {
        format!("named by {key}")
    }
}

impl Config {
    /// What the configuration refers to but this machine lacks, one warning each: an
    /// environment variable (per `env`, normally `std::env::var`) that is unset or
    /// empty, a credential or token file or an enabled plugin's file that does not
    /// exist. The values of variables are never read into a message. `daz config check`
    /// prints these: the file is valid, but the host would not work as configured.
    pub fn missing_references(&self, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut out = Vec::new();
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        let mut file = |what: String, path: &Path| {
            if !path.exists() {
                out.push(format!("{what}: {} does not exist", path.display()));
            }
        };
        if self.http.enabled
            && let Some(path) = &self.http.token_file
        {
            file("[http] token_file".to_owned(), path);
        }
        for (i, room) in self.rooms.iter().enumerate().filter(|(_, r)| r.enabled) {
            let at = format!("[[rooms]] #{} (channel {:?})", i + 1, room.channel);
            for (key, path) in [
                ("password_file", &room.password_file),
                ("channel_password_file", &room.channel_password_file),
            ] {
                if let Some(path) = path {
                    file(format!("{at} {key}"), path);
                }
            }
        }
        for (name, pc) in self.plugins.iter().filter(|(_, p)| p.enabled) {
            file(format!("[plugins.{name}] file"), &self.plugin_path(pc));
        }
        for (i, room) in self.rooms.iter().enumerate().filter(|(_, r)| r.enabled) {
            let at = format!("[[rooms]] #{} (channel {:?})", i + 1, room.channel);
            for (key, name, what) in [
                ("password_env", &room.password_env, "the bot cannot log in"),
                (
                    "channel_password_env",
                    &room.channel_password_env,
                    "the bot cannot join the channel",
                ),
            ] {
                if let Some(name) = name
                    && !set(name)
                {
                    out.push(format!(
                        "{at} {key}: the environment variable {} is not set (or empty); {what} until it is",
                        shown_env_name(key, name)
                    ));
                }
            }
        }
        if self.http.enabled
            && let Some(name) = &self.http.token_env
            && !set(name)
        {
            out.push(format!(
                "[http] token_env: the environment variable {} is not set (or empty)",
                shown_env_name("token_env", name)
            ));
        }
        out
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
    fn plugin_log_levels_are_checked() {
        let c = parse("[plugins.x]\nfile = \"x.so\"\nlog_level = \"debug\"\n").unwrap();
        assert_eq!(c.plugins["x"].log_level, Some(PluginLogLevel::Debug));
        let err = parse("[plugins.x]\nfile = \"x.so\"\nlog_level = \"loud\"\n")
            .unwrap_err()
            .to_string();
        // File, line, key, and the values that would fix it.
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("log_level"), "{err}");
        assert!(err.contains("`debug`") && err.contains("`off`"), "{err}");
    }

    #[test]
    fn missing_file_key_is_an_error() {
        let err = parse("[plugins.x]\nenabled = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("file"), "{err}");
    }

    #[test]
    fn rooms_are_typed_with_defaults() {
        let c = parse(
            "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"MyChan\"\nusername = \"bot\"\npassword_env = \"BOT_PW\"\n[rooms.reconnect]\non_ban = \"retry\"\n[[rooms]]\nname = \"second\"\nsite = \"http://127.0.0.1:8080\"\nchannel = \"MyChan\"\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(c.rooms.len(), 2);
        assert_eq!(c.rooms[0].room_name(), "mychan");
        assert_eq!(c.rooms[0].reconnect.on_ban, KickPolicy::Retry);
        assert_eq!(c.rooms[0].reconnect.on_duplicate_login, KickPolicy::Stop);
        assert_eq!(c.rooms[0].reconnect.connect_burst, 5);
        assert_eq!(c.rooms[0].outbound.capacity, 1_000);
        assert!(!c.rooms[1].enabled);
    }

    #[test]
    fn bad_rooms_are_explained() {
        let room = |extra: &str| {
            parse(&format!(
                "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\n{extra}"
            ))
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        assert!(room("pasword_env = \"X\"").contains("pasword_env"));
        assert!(room("password_env = \"X\"").contains("no username"));
        assert!(
            room("username = \"b\"\npassword_env = \"X\"\npassword_file = \"f\"")
                .contains("not both")
        );
        assert!(room("name = \"Bad Name\"").contains("room name"));
        assert!(room("[rooms.reconnect]\njitter = 2.0").contains("jitter"));
        let err = parse("[[rooms]]\nsite = \"cytu.be\"\nchannel = \"c\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://cytu.be"), "{err}");
        let err = parse("[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"bad$chan\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("1-30"), "{err}");
        let twice = "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\n";
        let err = parse(&format!("{twice}{twice}")).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn http_token_keys_are_checked() {
        let c = parse("[http]\ntoken_file = \"token\"\nevents_buffer = 50\n")
            .unwrap()
            .with_base_dir(Path::new("/etc/daz"));
        assert_eq!(
            c.http.token_file.as_deref(),
            Some(Path::new("/etc/daz/token"))
        );
        assert_eq!(c.http.token_env_name(), DEFAULT_TOKEN_ENV);
        assert_eq!(c.http.events_buffer, 50);
        let err = parse("[http]\ntoken_env = \"T\"\ntoken_file = \"f\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = parse("[http]\ntoken_env = \"MY TOKEN\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[http] token_env"), "{err}");
        let err = parse("[http]\nevents_buffer = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("events_buffer"), "{err}");
        let err = parse("[http]\ntoken = \"s3cr3t-value\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("in [http]"), "{err}");
        assert!(err.contains("token_file"), "{err}");
        assert!(!err.contains("s3cr3t-value"), "the secret is echoed: {err}");
    }

    #[test]
    fn a_secret_given_where_a_variable_name_belongs_is_never_echoed() {
        const SECRET: &str = "hunter2-s3cr3t!";
        for text in [
            format!("[http]\ntoken_env = \"{SECRET}\"\n"),
            format!(
                "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\npassword_env = \"{SECRET}\"\n"
            ),
            format!(
                "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nchannel_password_env = \"{SECRET}\"\n"
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "the secret is echoed: {err}");
            assert!(
                err.contains("_env") && err.contains("not an environment variable name"),
                "{err}"
            );
        }
        // A secret that happens to be a valid name is not shown in warnings either.
        assert_eq!(shown_env_name("token_env", "BOT_PW"), "BOT_PW");
        assert_eq!(
            shown_env_name("token_env", "a3f9c0ffee"),
            "named by token_env"
        );
    }

    #[test]
    fn missing_variables_and_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/present.so"), b"x").unwrap();
        let c = parse(
            "[http]\ntoken_env = \"MY_TOKEN\"\n\
             [[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\npassword_env = \"BOT_PW\"\nchannel_password_file = \"chan.pw\"\n\
             [[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"d\"\nusername = \"bot\"\npassword_env = \"lower_case_pw\"\n\
             [plugins.here]\nfile = \"present.so\"\n[plugins.gone]\nfile = \"gone.so\"\n\
             [plugins.off]\nfile = \"off.so\"\nenabled = false\n",
        )
        .unwrap()
        .with_base_dir(dir.path());
        let warnings = c.missing_references(|n| (n == "MY_TOKEN").then(|| "set".to_owned()));
        let all = warnings.join("\n");
        assert_eq!(warnings.len(), 4, "{all}");
        assert!(all.contains("BOT_PW is not set"), "{all}");
        assert!(all.contains("named by password_env is not set"), "{all}");
        assert!(!all.contains("lower_case_pw"), "{all}");
        assert!(all.contains("chan.pw does not exist"), "{all}");
        assert!(
            all.contains("[plugins.gone] file") && !all.contains("off.so"),
            "{all}"
        );
        let warnings = c.missing_references(|_| None);
        assert!(warnings.iter().any(|w| w.contains("[http] token_env")));
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = parse("[host]\nplugin_dir = \"lib\"\n")
            .unwrap()
            .with_base_dir(Path::new("/etc/daz"));
        assert_eq!(c.host.plugin_dir, Path::new("/etc/daz/lib"));
    }

    #[test]
    fn every_spelling_of_the_config_path_gives_the_same_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("plugins")).unwrap();
        std::os::unix::fs::symlink(root.join("plugins"), root.join("link")).unwrap();
        std::fs::write(
            root.join("plugins.toml"),
            "[host]\nplugin_dir = \"./link/../plugins\"\n[plugins.a]\nfile = \"liba.so\"\n[plugins.b]\nfile = \"../link/libb.so\"\n",
        )
        .unwrap();
        let spellings = [
            root.join("plugins.toml"),
            root.join("./plugins.toml"),
            root.join("link/../plugins.toml"),
        ];
        let configs: Vec<Config> = spellings.iter().map(|p| Config::load(p).unwrap()).collect();
        for c in &configs {
            assert_eq!(c.path.as_deref(), Some(&*root.join("plugins.toml")));
            assert_eq!(c.host.plugin_dir, root.join("plugins"));
            assert_eq!(c.host.runtime_dir, root.join(".daz/runtime"));
            assert_eq!(c.plugin_path(&c.plugins["a"]), root.join("plugins/liba.so"));
            assert_eq!(c.plugin_path(&c.plugins["b"]), root.join("plugins/libb.so"));
            assert_eq!(c, &configs[0]);
        }
    }

    #[test]
    fn canonical_forms_of_missing_paths() {
        assert_eq!(
            canonical_dir(Path::new("/nonexistent-daz/a/./b/../c")),
            Path::new("/nonexistent-daz/a/c")
        );
        assert_eq!(
            canonical_file(Path::new("/nonexistent-daz/x/../f.toml")),
            Path::new("/nonexistent-daz/f.toml")
        );
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(
            canonical_file(Path::new("plugins.toml")),
            cwd.join("plugins.toml")
        );
        assert_eq!(
            canonical_file(Path::new("./plugins.toml")),
            cwd.join("plugins.toml")
        );
    }
}
