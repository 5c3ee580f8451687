//! The plugin host's control plane on the bus, so plugins (the command router, admin chat
//! commands) can see and steer the host without linking to it.
//!
//! Events the host publishes (subject → payload):
//! * `host.plugin.<name>.loaded` → [`LoadedEvent`], on every load, swap, rollback and
//!   re-enable (the command router rebuilds its registry from these);
//! * `host.plugin.<name>.stopped` → `{name, reason}`;
//! * `host.plugin.<name>.quarantined` → `{name, error}`;
//! * `host.plugin.<name>.rolled_back` → `{name, from, to, reason}`.
//!
//! Requests it answers (subject → reply):
//! * `host.plugins.list` `{}` → `{plugins: [PluginStatus…]}` (with each manifest);
//! * `host.plugins.reload` / `enable` / `disable` / `rollback` `{name}` →
//!   `{ok: true, detail}` or an error reply saying why;
//! * `host.info` `{}` → `{version, started_ms, uptime_ms}`.
//!
//! The same actions serve the admin API and the CLI through [`act`].
//!
//! Requests are served on a thread of their own: a reload blocks for as long as the swap
//! takes, and must not hold up the bus or any plugin. A plugin's request to reload,
//! disable or roll back ITSELF is answered at once and done on a short-lived thread: the
//! swap runs between two of its events, after the handler that asked has returned.

use std::sync::Arc;

use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority, Reply};
use serde::{Deserialize, Serialize};

use super::{PluginManager, ReloadError, ReloadOutcome, Trigger, loader::LoadedLibrary};

/// Name of the host's control subscriber on the bus.
pub const CONTROL_NAME: &str = "host";

/// Payload of `host.plugin.<name>.loaded`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadedEvent {
    /// Plugin (slot) name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// Description.
    pub description: String,
    /// SHA-256 of its file.
    pub sha256: String,
    /// Its declarations (commands…).
    pub manifest: daz_plugin_api::Manifest,
}

fn publish(bus: &Bus, subject: String, payload: &impl Serialize) {
    let Ok(bytes) = serde_json::to_vec(payload) else {
        return;
    };
    match Envelope::builder(subject, bytes)
        .source(CONTROL_NAME)
        .priority(Priority::High)
        .build()
    {
        Ok(env) => {
            if let Err(e) = bus.publish(env) {
                tracing::warn!(error = %e, "lifecycle event not delivered");
            }
        }
        Err(e) => tracing::warn!(error = %e, "lifecycle event has an invalid subject"),
    }
}

/// Announces that `name` now serves `lib`.
pub fn announce_loaded(bus: &Bus, name: &str, lib: &LoadedLibrary) {
    let ev = LoadedEvent {
        name: name.to_owned(),
        version: lib.meta.version.clone(),
        api_version: lib.meta.api_version.clone(),
        description: lib.meta.description.clone(),
        sha256: lib.sha256.clone(),
        manifest: lib.meta.manifest.clone(),
    };
    publish(bus, format!("host.plugin.{name}.loaded"), &ev);
}

/// Announces that `name` stopped serving.
pub fn announce_stopped(bus: &Bus, name: &str, reason: &str) {
    publish(
        bus,
        format!("host.plugin.{name}.stopped"),
        &serde_json::json!({ "name": name, "reason": reason }),
    );
}

/// Announces a quarantine.
pub fn announce_quarantined(bus: &Bus, name: &str, error: &str) {
    publish(
        bus,
        format!("host.plugin.{name}.quarantined"),
        &serde_json::json!({ "name": name, "error": error }),
    );
}

/// Announces a rollback.
pub fn announce_rolled_back(bus: &Bus, name: &str, from: Option<&str>, to: &str, reason: &str) {
    publish(
        bus,
        format!("host.plugin.{name}.rolled_back"),
        &serde_json::json!({ "name": name, "from": from, "to": to, "reason": reason }),
    );
}

#[derive(Deserialize)]
struct NameRequest {
    name: String,
}

/// Starts answering control requests. The thread ends when the bus registration's
/// mailbox is closed (host shutdown).
pub fn start(manager: Arc<PluginManager>, started_ms: i64) -> anyhow::Result<Arc<Mailbox>> {
    let bus = manager.services().bus.clone();
    let mailbox = Mailbox::new(CONTROL_NAME, MailboxConfig::new(1024));
    let id = bus.register(CONTROL_NAME, mailbox.clone())?;
    bus.subscribe(id, "host.plugins.>")?;
    bus.subscribe(id, "host.info")?;
    let mb = mailbox.clone();
    std::thread::Builder::new()
        .name("daz-control".to_owned())
        .spawn(move || {
            while !(mb.is_closed() && mb.is_empty()) {
                let Some(env) = mb.pop_blocking(std::time::Duration::from_secs(1)) else {
                    continue;
                };
                let Some(reply_to) = env.reply_to.clone() else {
                    continue;
                };
                let reply = match handle(&manager, &env, started_ms) {
                    Ok(v) => Reply::ok(CONTROL_NAME, serde_json::to_vec(&v).unwrap_or_default()),
                    Err(e) => Reply::error(
                        CONTROL_NAME,
                        serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default(),
                    ),
                };
                let _ = bus.reply(&reply_to, reply);
            }
        })?;
    Ok(mailbox)
}

fn handle(
    manager: &Arc<PluginManager>,
    env: &Envelope,
    started_ms: i64,
) -> Result<serde_json::Value, String> {
    let name = || {
        serde_json::from_slice::<NameRequest>(&env.payload)
            .map(|r| r.name)
            .map_err(|e| format!("{} expects {{\"name\": \"<plugin>\"}}: {e}", env.subject))
    };
    match &*env.subject {
        "host.info" => {
            let now = crate::now_ms();
            Ok(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "started_ms": started_ms,
                "uptime_ms": now - started_ms,
            }))
        }
        "host.plugins.list" => Ok(serde_json::json!({ "plugins": manager.status() })),
        subject => match Action::from_subject(subject) {
            // A plugin asking to reload, disable or roll back itself: the swap waits for
            // its current handler to return, and that handler may be waiting for this
            // answer. Answer now and act once the handler has returned (the slot's worker
            // takes the command between two events).
            Some(action) if action != Action::Enable && *env.source == *name()? => {
                let name = name()?;
                let manager = manager.clone();
                std::thread::Builder::new()
                    .name(format!("daz-control-{name}"))
                    .spawn(move || {
                        if let Err(e) = act(&manager, action, &name) {
                            tracing::error!(plugin = %name, action = action.as_str(), error = %e, "a plugin's request about itself failed");
                        }
                    })
                    .map_err(|e| format!("cannot start a thread: {e}"))?;
                Ok(serde_json::json!({
                    "ok": true,
                    "detail": format!("{} of {} itself starts once this handler returns", action.as_str(), env.source),
                }))
            }
            Some(action) => act(manager, action, &name()?)
                .map(|detail| serde_json::json!({ "ok": true, "detail": detail }))
                .map_err(|e| e.to_string()),
            None => Err(format!("unknown control request {subject}")),
        },
    }
}

/// An operator's request about one plugin (bus control plane, admin API, CLI, chat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Load its file again and swap it in.
    Reload,
    /// Start it (at run time; `plugins.toml` is not changed).
    Enable,
    /// Stop it (at run time).
    Disable,
    /// Swap the previous version back in.
    Rollback,
}

impl Action {
    /// The action named `s` (`reload`, `enable`, `disable`, `rollback`).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "reload" => Some(Action::Reload),
            "enable" => Some(Action::Enable),
            "disable" => Some(Action::Disable),
            "rollback" => Some(Action::Rollback),
            _ => None,
        }
    }

    fn from_subject(subject: &str) -> Option<Action> {
        subject
            .strip_prefix("host.plugins.")
            .and_then(Action::parse)
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reload => "reload",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Rollback => "rollback",
        }
    }
}

/// Why an [`Action`] was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    /// No `[plugins.<name>]` table.
    #[error("no plugin named {0:?} in plugins.toml")]
    UnknownPlugin(String),
    /// It was tried and failed (the version serving before, if any, keeps serving).
    #[error("{0}")]
    Failed(String),
}

/// Does `action` on plugin `name` and says what happened. Blocks for as long as a load
/// and swap take: call it off the async runtime.
pub fn act(manager: &PluginManager, action: Action, name: &str) -> Result<String, ActionError> {
    if !manager.config().plugins.contains_key(name) {
        return Err(ActionError::UnknownPlugin(name.to_owned()));
    }
    let failed = |e: &dyn std::fmt::Display| ActionError::Failed(e.to_string());
    match action {
        Action::Reload => match manager.reload(name, Trigger::Explicit) {
            Ok(ReloadOutcome::Swapped(r)) => Ok(format!(
                "{name} {} serving (was {})",
                r.to,
                r.from.as_deref().unwrap_or("not loaded")
            )),
            Ok(ReloadOutcome::Unchanged { sha256 }) => {
                Ok(format!("{name}: the file is unchanged (sha256 {sha256})"))
            }
            Ok(ReloadOutcome::PreviouslyRejected { sha256 }) => Err(ActionError::Failed(format!(
                "{name}: the file (sha256 {sha256}) was refused before; fix it or deploy another file"
            ))),
            Err(e) => Err(failed(&e)),
        },
        Action::Rollback => match manager.rollback(name) {
            Ok(r) => Ok(format!("{name} rolled back to {}", r.to)),
            Err(ReloadError::UnknownPlugin(_)) => Err(ActionError::Failed(format!(
                "{name} is not running; nothing to roll back"
            ))),
            Err(e) => Err(failed(&e)),
        },
        Action::Enable => manager.set_enabled(name, true).map_err(|e| failed(&e)),
        Action::Disable => manager.set_enabled(name, false).map_err(|e| failed(&e)),
    }
}
