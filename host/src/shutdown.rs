//! Signals: SIGINT/SIGTERM stop the host gracefully (a second one forces the exit),
//! SIGHUP re-reads `plugins.toml`.
//!
//! The graceful order is [`crate::app::App::shutdown`]'s: Cytube rooms first (no new
//! events come in), then the plugins' mailboxes drain and each plugin's `shutdown` runs
//! (storage last, so it flushes everything), then HTTP. It has a deadline
//! (`[host] shutdown_timeout_ms`); a second signal does not wait for it.

use std::{path::PathBuf, sync::Arc};

use tokio::signal::unix::{SignalKind, signal};

use crate::plugins::{PluginManager, watcher};

/// Waits until SIGINT or SIGTERM, applying the configuration file on every SIGHUP
/// meanwhile. Once it returns, a further SIGINT/SIGTERM exits the process at once.
pub async fn wait(manager: Arc<PluginManager>, config_path: Option<PathBuf>) {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot listen for signals; stop the host with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received: shutting down (send it again to exit at once)"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received: shutting down (press Ctrl-C again to exit at once)"); break; }
            _ = hup.recv() => {
                match &config_path {
                    Some(path) => {
                        tracing::info!(config = %path.display(), "SIGHUP received: re-reading the configuration");
                        let (m, p) = (manager.clone(), path.clone());
                        let _ = tokio::task::spawn_blocking(move || watcher::apply_config_file(&m, &p)).await;
                    }
                    None => tracing::warn!("SIGHUP received but the host was not started from a file"),
                }
            }
        }
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting for the graceful shutdown");
        std::process::exit(130);
    });
}
