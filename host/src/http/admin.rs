//! The admin API's actions: plugins (status and reload / enable / disable / rollback),
//! saying something in a room, and the retry plugin's dead letters.
//!
//! * `GET /api/plugins` — every configured plugin with its state, version, file hash,
//!   load time, events handled, panics, mailbox depth and leaked versions.
//! * `POST /api/plugins/<name>/<action>` — the same actions as the bus control plane
//!   ([`crate::plugins::control::act`]), run on a blocking thread: `{ok, detail}`, 404
//!   for an unknown plugin, 409 with the reason when the action fails.
//! * `POST /api/rooms/<room>/say` `{message, pm_to?}` — a chat line (or PM) through the
//!   room's outbound governor like any plugin's, from [`ADMIN_SOURCE`]. What the
//!   governor cannot deliver comes back as `cytube.out.<room>.failed`: logged and handed
//!   to the retry plugin, as feature plugins do.
//! * `GET /api/retry/dead`, `POST /api/retry/dead/<id>/replay` — bus requests
//!   `retry.dead.list` / `retry.dead.replay` to the retry plugin; 503 when it is not
//!   loaded.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority, RequestError};
use serde::Deserialize;

use super::{HttpState, error};
use crate::plugins::control::{self, Action, ActionError};

/// The bus name and source of what the admin API sends (`say`, requests).
pub const ADMIN_SOURCE: &str = "host:admin";
/// The longest message `say` takes (the governor splits it into chat-sized parts).
pub const MAX_SAY_BYTES: usize = 4096;
/// How long a bus request to a plugin may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /api/plugins`.
pub async fn plugins(State(state): State<HttpState>) -> Response {
    let list: Vec<serde_json::Value> = state
        .plugins
        .status()
        .into_iter()
        .map(|s| {
            let slot = s.slot.as_ref();
            let meta = s.meta.as_ref();
            serde_json::json!({
                "name": s.name,
                "enabled": s.enabled,
                "state": slot.map(|st| st.state),
                "version": slot.and_then(|st| st.version.clone()),
                "sha256": slot.and_then(|st| st.sha256.clone()),
                "loaded_at_ms": slot.and_then(|st| st.loaded_at_ms),
                "events_handled": s.handled,
                "panics": s.panics,
                "errors": s.errors,
                "mailbox_depth": s.mailbox_depth,
                "leaked_versions": slot.map_or(0, |st| st.leaked_versions),
                "previous_version": slot.and_then(|st| st.previous_version.clone()),
                "probation_until_ms": slot.and_then(|st| st.probation_until_ms),
                "stuck": s.stuck,
                "busy_ms": s.busy_ms,
                "last_error": slot.and_then(|st| st.last_error.clone()),
                "file": s.file,
                "description": meta.map(|m| m.description.clone()),
                "api_version": meta.map(|m| m.api_version.clone()),
            })
        })
        .collect();
    Json(serde_json::json!({ "plugins": list })).into_response()
}

/// `POST /api/plugins/<name>/<action>`.
pub async fn plugin_action(
    State(state): State<HttpState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?}; use reload, enable, disable or rollback"),
        );
    };
    // `name` comes from the request path: escaped, so `%0a` cannot forge a line.
    tracing::info!(plugin = ?name, action = action.as_str(), "admin API action");
    let manager = state.plugins.clone();
    let who = name.clone();
    let result = tokio::task::spawn_blocking(move || control::act(&manager, action, &who)).await;
    match result {
        Ok(Ok(detail)) => Json(serde_json::json!({ "ok": true, "detail": detail })).into_response(),
        Ok(Err(e @ ActionError::UnknownPlugin(_))) => error(
            StatusCode::NOT_FOUND,
            format!("{e}; GET /api/plugins lists them"),
        ),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {} of {name} did not finish: {e}", action.as_str()),
        ),
    }
}

/// Body of `POST /api/rooms/<room>/say`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    message: String,
    #[serde(default)]
    pm_to: Option<String>,
}

fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `POST /api/rooms/<room>/say`.
pub async fn say(
    State(state): State<HttpState>,
    Path(room): Path<String>,
    body: Result<Json<Say>, JsonRejection>,
) -> Response {
    let Json(say) = match body {
        Ok(b) => b,
        Err(e) => {
            // A body over the limit keeps its 413; anything else is the client's mistake.
            let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return error(
                code,
                format!(
                    "the body must be JSON {{\"message\": \"text\", \"pm_to\": \"user\" (optional)}}: {}",
                    e.body_text()
                ),
            );
        }
    };
    if state.rooms.get(&room).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no room named {room:?}; GET /api/rooms lists them"),
        );
    }
    let message = say.message.trim();
    if message.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message: empty".to_owned(),
        );
    }
    if message.len() > MAX_SAY_BYTES {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "message: {} bytes; at most {MAX_SAY_BYTES} (it is split into chat lines)",
                message.len()
            ),
        );
    }
    let (event, payload) = match &say.pm_to {
        Some(to) if !valid_user(to) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "pm_to: {to:?} is not a Cytube user name (1-20 of A-Z, a-z, 0-9, '-' and '_')"
                ),
            );
        }
        Some(to) => (
            "pm",
            serde_json::json!({ "to": to, "msg": message, "meta": {} }),
        ),
        None => ("chatMsg", serde_json::json!({ "msg": message, "meta": {} })),
    };
    let env = match Envelope::builder(
        format!("cytube.out.{room}.{event}"),
        serde_json::to_vec(&payload).unwrap_or_default(),
    )
    .source(ADMIN_SOURCE)
    .room(room.as_str())
    .priority(Priority::High)
    .build()
    {
        Ok(env) => env,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("room {room:?}: {e}")),
    };
    let id = env.id.to_string();
    match state.bus.publish(env) {
        Ok(r) if r.delivered > 0 => {
            tracing::info!(room = ?room, event, id = %id, "admin API: message handed to the room");
            Json(serde_json::json!({ "ok": true, "id": id })).into_response()
        }
        Ok(_) => error(
            StatusCode::CONFLICT,
            format!(
                "room {room} is not running (disabled in plugins.toml or stopped); nothing was sent"
            ),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("room {room}: {e}")),
    }
}

async fn retry_request(state: &HttpState, subject: &str, body: serde_json::Value) -> Response {
    let env = match Envelope::builder(subject, serde_json::to_vec(&body).unwrap_or_default())
        .source(ADMIN_SOURCE)
        .priority(Priority::High)
        .build()
    {
        Ok(e) => e,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let pending = match state.bus.request_async(env, None, REQUEST_TIMEOUT) {
        Ok(p) => p,
        Err(RequestError::NoResponder { .. }) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the retry plugin is not loaded (no answer to retry.dead.*); add [plugins.retry] to plugins.toml".to_owned(),
            );
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let reply = match pending.await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::GATEWAY_TIMEOUT, format!("{subject}: {e}")),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&reply.payload).unwrap_or(serde_json::Value::Null);
    if reply.is_error {
        let why = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.payload).into_owned());
        return error(StatusCode::BAD_GATEWAY, format!("the retry plugin: {why}"));
    }
    (StatusCode::OK, Json(value)).into_response()
}

/// `GET /api/retry/dead`.
pub async fn dead(State(state): State<HttpState>) -> Response {
    retry_request(&state, "retry.dead.list", serde_json::json!({})).await
}

/// `POST /api/retry/dead/<id>/replay` (`all` replays every one).
pub async fn replay(State(state): State<HttpState>, Path(id): Path<String>) -> Response {
    let resp = retry_request(&state, "retry.dead.replay", serde_json::json!({ "id": id })).await;
    if resp.status() != StatusCode::OK || id == "all" {
        return resp;
    }
    // Nothing replayed for one id: it is not a dead letter (any more).
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if value["replayed"].as_u64() == Some(0) {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": format!("no dead letter {id:?} waiting; GET /api/retry/dead lists them"),
                "replayed": 0,
            })),
        )
            .into_response();
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Starts the admin API's bus subscriber, which receives the governor's reports of
/// messages `say` could not deliver and logs each. The host publishes every report on
/// the bus, so the retry plugin sees them without help. Ends when the returned mailbox
/// is closed.
pub fn start_failure_listener(bus: &Bus) -> anyhow::Result<Arc<Mailbox>> {
    let mailbox = Mailbox::new(ADMIN_SOURCE, MailboxConfig::new(1024));
    let id = bus.register(ADMIN_SOURCE, mailbox.clone())?;
    let bus = bus.clone();
    let mb = mailbox.clone();
    tokio::spawn(async move {
        while let Some(env) = mb.recv().await {
            if !env.subject.ends_with(".failed") {
                continue;
            }
            let v: serde_json::Value = env.payload_json().unwrap_or_default();
            crate::warn_limited!(
                room = ?env.room.as_deref().unwrap_or(""),
                code = ?v["code"].as_str().unwrap_or(""),
                reason = ?v["reason"].as_str().unwrap_or(""),
                "a message sent through the admin API was not delivered; the retry plugin, if loaded, redoes it"
            );
        }
        bus.unregister(id);
    });
    Ok(mailbox)
}
