//! # daz-host
//!
//! The daz host: it owns the event bus and the plugins (shared libraries loaded through a
//! stable ABI and hot-swapped when their file changes), and serves metrics and health
//! over HTTP.
//!
//! # Layout
//!
//! * [`config`] — `plugins.toml`: parsing, validation, defaults.
//! * [`cytube`] — the Cytube connections: one client per room (handshake, reconnects,
//!   room state, inbound events, the outbound governor).
//! * [`demo`] — the offline demo (`daz demo`): the simulator, every plugin, scripted
//!   users and a hot swap (feature `demo`, on by default; without it the binary
//!   carries no simulator); its stage (simulator + private directory + host) is shared
//!   with `daz dev`.
//! * [`plugins`] — loader, preflight, the reload transaction (`plugins/reload.rs`:
//!   load, swap, probation, rollback), slots (mailbox, worker thread, quarantine), the
//!   plugin manager, declared dependencies, the host API plugins call, plugin logging,
//!   the file watcher.
//! * [`metrics`] — the Prometheus registry and the host's metric families.
//! * [`http`] — `/metrics`, the health endpoints and the admin API (token, plugins,
//!   rooms, `say`, recent and live events, dead letters).
//! * [`cli`] — the client commands of `daz` (`plugins`, `rooms`, `say`, `events`, …),
//!   which talk to a running host's admin API.
//! * [`sdk`] — the plugin author's commands: `daz new-plugin` (a standalone plugin
//!   crate from templates compiled into the binary), `daz check-plugin --config`'s
//!   trial start, and `daz dev` (build, run in a simulated channel, hot-swap on save).
//! * [`app`] — starting and stopping the whole host in order.
//! * [`shutdown`] — signals: graceful stop, forced exit, configuration reload.
//! * [`telemetry`] — `tracing` setup.

pub mod app;
pub mod cli;
pub mod config;
pub mod cytube;
#[cfg(feature = "demo")]
pub mod demo;
pub mod http;
pub mod log_limit;
pub mod metrics;
pub mod plugins;
pub mod sdk;
pub mod shutdown;
pub mod telemetry;

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
