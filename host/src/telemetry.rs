//! Logging setup: human-readable by default, JSON on request (`daz --json-logs`);
//! `RUST_LOG` filters (plugins log under their own name as target:
//! `RUST_LOG=info,example=debug`), and `[plugins.<name>] log_level` in `plugins.toml`
//! sets one plugin's level at start and on every change of the file, without a restart
//! ([`set_plugin_levels`] swaps the filter through a reload handle).
//!
//! Some targets are capped whatever `RUST_LOG` says ([`CAPPED`], applied by [`cap`]): at
//! TRACE the websocket library prints every frame it sends, the bot's `login` frame with
//! its password included, and credentials must never reach a log. The cap only ever
//! lowers a level: it is a filter of its own beside `RUST_LOG`'s, not a directive added
//! to it (a `tungstenite=debug` directive would RAISE the library to DEBUG under the
//! default `info`).

use std::sync::OnceLock;

use parking_lot::Mutex;
use tracing::{Level, Metadata};
use tracing_subscriber::{
    EnvFilter, Registry, filter::FilterFn, fmt, fmt::MakeWriter, layer::SubscriberExt, reload,
    util::SubscriberInitExt,
};

/// Targets (and their submodules) whose TRACE lines never pass, whatever `RUST_LOG`
/// says; their other levels follow `RUST_LOG` as usual.
pub const CAPPED: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Whether [`cap`] lets a line through.
fn under_cap(meta: &Metadata<'_>) -> bool {
    if *meta.level() != Level::TRACE {
        return true;
    }
    let target = meta.target();
    !CAPPED.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The cap on [`CAPPED`] targets, as a global filter layer to stack beside the
/// [`filter`] (`registry().with(filter(..)).with(cap())`, or
/// `fmt().with_env_filter(filter(..)).finish().with(cap())`).
pub fn cap() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(under_cap as fn(&Metadata<'_>) -> bool)
}

/// The host's filter: `RUST_LOG` (or `default` when unset or invalid). Stack [`cap`]
/// beside it.
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
            .with(cap())
            .with(fmt_layer.json().flatten_event(true))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(layer)
            .with(cap())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// What a subscriber built like the host's lets through, with `RUST_LOG` as given.
    fn lines_logged(rust_log: &str) -> String {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(rust_log))
            .with(cap())
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || SinkWriter(sink.clone())),
            );
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "tungstenite::protocol", "ws-trace");
            tracing::debug!(target: "tungstenite::protocol", "ws-debug");
            tracing::info!(target: "tungstenite::protocol", "ws-info");
            tracing::trace!(target: "tokio_tungstenite", "tokio-ws-trace");
            tracing::trace!(target: "tungstenite_like", "other-trace");
            tracing::debug!(target: "daz_host::cytube", "host-debug");
        });
        String::from_utf8_lossy(&out.lock()).into_owned()
    }

    struct SinkWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SinkWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Regression: the cap was a `tungstenite=debug` directive added after `RUST_LOG`,
    /// which raised the websocket library to DEBUG under the default `info`.
    #[test]
    fn the_cap_never_raises_the_websocket_library_above_rust_log() {
        let text = lines_logged("info");
        assert!(text.contains("ws-info"), "{text}");
        assert!(!text.contains("ws-debug"), "{text}");
        assert!(!text.contains("host-debug"), "{text}");
        let text = lines_logged("warn");
        assert!(!text.contains("ws-"), "{text}");
    }

    #[test]
    fn the_cap_keeps_the_websocket_library_below_trace() {
        let text = lines_logged("trace");
        assert!(text.contains("ws-debug"), "{text}");
        assert!(!text.contains("ws-trace"), "{text}");
        assert!(!text.contains("tokio-ws-trace"), "{text}");
        // Only the named targets and their modules are capped.
        assert!(text.contains("other-trace"), "{text}");
        assert!(text.contains("host-debug"), "{text}");
    }
}
