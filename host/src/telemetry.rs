//! Logging setup: human-readable by default, JSON on request; `RUST_LOG` filters
//! (plugins log under their own name as target: `RUST_LOG=info,example=debug`).
//!
//! Some targets are capped whatever `RUST_LOG` says ([`CAPPED`]): at TRACE the
//! websocket library prints every frame it sends, the bot's `login` frame with its
//! password included, and credentials must never reach a log.

use tracing_subscriber::{EnvFilter, fmt};

/// Directives applied after `RUST_LOG`, which they override.
pub const CAPPED: &[&str] = &["tungstenite=debug"];

/// The host's filter: `RUST_LOG` (or `default` when unset or invalid), then [`CAPPED`].
pub fn filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for d in CAPPED {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global subscriber.
pub fn init(json: bool) {
    let builder = fmt().with_env_filter(filter("info")).with_target(true);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}
