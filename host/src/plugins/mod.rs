//! Plugins: loading, slots, hot reload, and the services the host offers them.
//!
//! * [`loader`] — from a file path to a checked, loaded library (trust, stability,
//!   hashing, ELF completeness, private copy, abi_stable checks).
//! * [`preflight`] — the same load in a child process, so a crashing file costs a child.
//! * [`slot`] — a plugin's mailbox and worker thread: delivery, handler deadline,
//!   quarantine.
//! * [`host_api`] — the callback table each instance gets.
//! * [`logging`] — plugin log lines through `tracing`, target = plugin name.
//! * [`watcher`] — file-system events on the plugin directory and `plugins.toml`.
//! * [`control`] — lifecycle events and control requests (`host.plugins.*`) on the bus.
//! * [`reload`] — the reload transaction: load + check → `export_state` → `create` →
//!   switch → shut the old version down → keep it mapped; probation and rollback.
//! * [`deps`] — declared dependencies (`requires`): start and stop order.
//! * [`manager`] — [`PluginManager`] ties them together: it applies a configuration
//!   (start, reload, stop plugins), serialises reloads, remembers rejected files and
//!   reports status.

pub mod control;
pub mod deps;
pub mod host_api;
pub mod loader;
pub mod logging;
pub mod manager;
pub mod preflight;
pub mod reload;
pub mod slot;
pub mod watcher;

pub use manager::{PluginManager, PluginStatus};
pub use reload::{ReloadError, ReloadOutcome, SwapError, SwapReport, Trigger};
