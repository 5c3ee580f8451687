//! Logging setup: human-readable by default, JSON on request (`daz --json-logs`);
//! `RUST_LOG` filters (plugins log under their own name as target:
//! `RUST_LOG=info,example=debug`), and `[plugins.<name>] log_level` in `plugins.toml`
//! sets one plugin's level at start and on every change of the file, without a restart
//! ([`set_plugin_levels`] swaps the filter through a reload handle).
//!
//! Some targets are capped whatever `RUST_LOG` says ([`CAPPED`]): at TRACE the
//! websocket library prints every frame it sends, the bot's `login` frame with its
//! password included, and credentials must never reach a log.

use std::sync::OnceLock;

use parking_lot::Mutex;
use tracing_subscriber::{
    EnvFilter, Registry, fmt, fmt::MakeWriter, layer::SubscriberExt, reload,
    util::SubscriberInitExt,
};

/// Directives applied after `RUST_LOG`, which they override.
pub const CAPPED: &[&str] = &["tungstenite=debug"];

/// The host's filter: `RUST_LOG` (or `default` when unset or invalid), then [`CAPPED`].
pub fn filter(default: &str) -> EnvFilter {
    filter_with(default, &[])
}

/// [`filter`] plus one directive per `(plugin, level)`: the plugin's lines at `level`
/// and above pass, more verbose ones do not, whatever `RUST_LOG` says about that target.
pub fn filter_with(default: &str, plugins: &[(String, &str)]) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for (plugin, level) in plugins {
        // Plugin names are checked at config load (a-z, 0-9, '-', '_'), so the
        // directive always parses; skip rather than fail if it somehow does not.
        if let Ok(d) = format!("{plugin}={level}").parse() {
            filter = filter.add_directive(d);
        }
    }
    for d in CAPPED {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// The installed filter's reload handle and the default it was built from.
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    default: String,
    /// The plugin levels in force (so an unchanged configuration does not rebuild).
    current: Mutex<Vec<(String, String)>>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the global subscriber, writing to stdout.
pub fn init(json: bool) {
    init_with_writer(json, "info", std::io::stdout);
}

/// Installs the global subscriber with `default` as the level when `RUST_LOG` is unset,
/// writing to `writer` (tests capture what the host prints). Only the first call in a
/// process installs anything.
pub fn init_with_writer<W>(json: bool, default: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (layer, handle) = reload::Layer::new(filter(default));
    let fmt_layer = fmt::layer().with_target(true).with_writer(writer);
    let result = if json {
        tracing_subscriber::registry()
            .with(layer)
            .with(fmt_layer.json().flatten_event(true))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(layer)
            .with(fmt_layer)
            .try_init()
    };
    match result {
        Ok(()) => {
            let _ = INSTALLED.set(Installed {
                handle,
                default: default.to_owned(),
                current: Mutex::new(Vec::new()),
            });
        }
        Err(e) => eprintln!("logging was already set up: {e}"),
    }
}

/// Sets the per-plugin levels (`[plugins.<name>] log_level`), replacing the previous
/// set. A no-op when [`init`] did not install the subscriber (a test's own subscriber,
/// or another embedding) or when nothing changed.
pub fn set_plugin_levels(levels: &[(String, &str)]) {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    let wanted: Vec<(String, String)> = levels
        .iter()
        .map(|(p, l)| (p.clone(), (*l).to_owned()))
        .collect();
    let mut current = installed.current.lock();
    if *current == wanted {
        return;
    }
    // Rebuilding from scratch (rather than adding) lets a removed `log_level` fall
    // back to what `RUST_LOG` says.
    let filter = filter_with(&installed.default, levels);
    match installed.handle.reload(filter) {
        Ok(()) => {
            tracing::info!(plugins = ?wanted, "plugin log levels applied");
            *current = wanted;
        }
        Err(e) => tracing::warn!(error = %e, "cannot change the log filter"),
    }
}
