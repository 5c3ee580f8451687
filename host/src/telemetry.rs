//! Logging setup: human-readable by default, JSON on request; `RUST_LOG` filters
//! (plugins log under their own name as target: `RUST_LOG=info,example=debug`).

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}
