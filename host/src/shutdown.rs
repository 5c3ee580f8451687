//! Signals: SIGINT/SIGTERM stop the host gracefully (a second one forces the exit),
//! SIGHUP re-reads `plugins.toml`.
//!
//! The graceful order is [`crate::app::App::shutdown`]'s: Cytube rooms first (no new
//! events come in), then the plugins' mailboxes drain and each plugin's `shutdown` runs
//! (storage last, so it flushes everything), then HTTP. It has a deadline
//! (`[host] shutdown_timeout_ms`); a second signal does not wait for it.

use std::{path::PathBuf, sync::Arc};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::plugins::{PluginManager, watcher};

/// The signals the host handles, installed before the host starts so that an early
/// SIGHUP or SIGTERM is not met by the default action (which would kill the process).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits until SIGINT or SIGTERM, applying the configuration file on every SIGHUP
    /// meanwhile. Once it returns, a further SIGINT/SIGTERM exits the process at once.
    pub async fn wait(mut self, manager: Arc<PluginManager>, config_path: Option<PathBuf>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received: shutting down (send it again to exit at once)"); break; }
                _ = self.int.recv() => { tracing::info!("SIGINT received: shutting down (press Ctrl-C again to exit at once)"); break; }
                _ = self.hup.recv() => {
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
        let (mut term, mut int) = (self.term, self.int);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            report_forced_exit(&manager);
            std::process::exit(130);
        });
    }
}

/// Says what a forced exit drops: the events still waiting in plugin mailboxes are never
/// handled (the storage plugin's journal holds only what it accepted). A SIGKILL cannot
/// count them; a second signal can, so it does, per plugin, in one line.
fn report_forced_exit(manager: &PluginManager) {
    match manager.queued_events() {
        Some(queued) if queued.is_empty() => {
            tracing::warn!(
                "second signal: exiting without waiting for the graceful shutdown; no event was waiting in a plugin mailbox"
            )
        }
        Some(queued) => {
            let total: usize = queued.iter().map(|(_, n)| n).sum();
            let per_plugin = queued
                .iter()
                .map(|(name, n)| format!("{name}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            tracing::error!(
                events = total,
                plugins = %per_plugin,
                "second signal: exiting without waiting for the graceful shutdown; {total} events still waiting in plugin mailboxes are dropped unhandled"
            );
        }
        None => tracing::error!(
            "second signal: exiting without waiting for the graceful shutdown; the events waiting in plugin mailboxes could not be counted (the plugin table was busy)"
        ),
    }
}
