//! Demo scripts: a TOML or JSON file that sets up accounts, channels and media
//! and lists actors with timed steps. The `daz-sim` binary runs them.
//!
//! ```toml
//! [[accounts]]
//! name = "alice"
//! password = "alice-pw"
//!
//! [[channels]]
//! name = "demo"
//! registered = true
//! ranks = [["alice", 3]]
//! playlist = [{ id = "clip1", type = "fi", title = "Demo clip", seconds = 90 }]
//!
//! [[actors]]
//! name = "alice"
//! loop = true                      # start over after the last step
//! steps = [
//!   { do = "join", channel = "demo" },
//!   { do = "login", name = "alice", password = "alice-pw" },
//!   { do = "chat", msg = "hello", wait_ms = 1000 },    # wait, then act
//!   { do = "pm", to = "bot", msg = "psst" },
//!   { do = "queue", id = "stream1", type = "tw", duration = 60 },
//!   { do = "emit", event = "voteskip" },
//!   { do = "sleep", ms = 5000 },
//!   { do = "leave" },
//! ]
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::actor::Actor;
use crate::config::{Account, ChannelConfig, MediaSpec, SimConfig};
use crate::server::SimHandle;

/// A whole script file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Registered accounts.
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Channels known up front.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Media catalog for `queue`.
    #[serde(default)]
    pub media: Vec<MediaSpec>,
    /// Scripted clients.
    #[serde(default)]
    pub actors: Vec<ActorScript>,
}

/// One scripted client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActorScript {
    /// Label (also the default login name).
    pub name: String,
    /// Fake client IP; each actor gets its own when absent.
    #[serde(default)]
    pub ip: Option<std::net::IpAddr>,
    /// Start over after the last step.
    #[serde(default, rename = "loop")]
    pub repeat: bool,
    /// What to do, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One step: wait `wait_ms`, then do the action.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Step {
    /// Delay before the action, in milliseconds.
    #[serde(default)]
    pub wait_ms: u64,
    /// The action.
    #[serde(flatten)]
    pub action: Action,
}

/// What an actor can do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// Connect if needed and join a channel.
    Join {
        /// Channel name.
        channel: String,
        /// Channel password.
        #[serde(default)]
        password: Option<String>,
    },
    /// Log in (guest without a password).
    Login {
        /// Login name.
        name: String,
        /// Account password.
        #[serde(default)]
        password: Option<String>,
    },
    /// Chat in the channel.
    Chat {
        /// Text.
        msg: String,
    },
    /// Private message.
    Pm {
        /// Recipient.
        to: String,
        /// Text.
        msg: String,
    },
    /// Queue media.
    Queue {
        /// Media id.
        id: String,
        /// Media type code.
        #[serde(rename = "type")]
        media_type: String,
        /// `end` (default) or `next`.
        #[serde(default = "default_pos")]
        pos: String,
        /// Temporary item.
        #[serde(default)]
        temp: bool,
        /// Duration for live/custom media.
        #[serde(default)]
        duration: Option<u64>,
        /// Title for custom media.
        #[serde(default)]
        title: Option<String>,
    },
    /// Any event with any payload.
    Emit {
        /// Event name.
        event: String,
        /// Payload (absent = none).
        #[serde(default)]
        payload: Option<Value>,
    },
    /// Wait.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// Disconnect.
    Leave,
}

fn default_pos() -> String {
    "end".to_owned()
}

impl Script {
    /// Reads a `.toml` or `.json` script.
    pub fn load(path: &Path) -> anyhow::Result<Script> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading script {}", path.display()))?;
        Script::parse(
            &text,
            path.extension().and_then(|e| e.to_str()) == Some("json"),
        )
        .with_context(|| format!("parsing script {}", path.display()))
    }

    /// Parses script text (TOML unless `json`).
    pub fn parse(text: &str, json: bool) -> anyhow::Result<Script> {
        if json {
            Ok(serde_json::from_str(text)?)
        } else {
            Ok(toml::from_str(text)?)
        }
    }

    /// Puts the script's accounts, channels and media into a config.
    pub fn apply(&self, cfg: &mut SimConfig) {
        cfg.accounts.extend(self.accounts.iter().cloned());
        cfg.channels.extend(self.channels.iter().cloned());
        cfg.media.extend(self.media.iter().cloned());
    }
}

/// What a running script actor has done so far.
#[derive(Default)]
struct Progress {
    actor: Option<Actor>,
    joined: bool,
    logged_in: bool,
}

/// Runs one actor's steps until done (or forever with `loop`). Errors are
/// logged and the actor goes on with its next step. On a repeat, `join` and
/// `login` are skipped while the connection they made is still up.
pub async fn run_actor(sim: SimHandle, script: ActorScript) {
    let mut progress = Progress::default();
    loop {
        for step in &script.steps {
            if step.wait_ms > 0 {
                tokio::time::sleep(Duration::from_millis(step.wait_ms)).await;
            }
            if let Err(e) = run_step(&sim, &script, &mut progress, &step.action).await {
                tracing::warn!(actor = %script.name, error = %e, "script step failed; continuing");
            }
        }
        if !script.repeat || script.steps.is_empty() {
            break;
        }
    }
}

async fn run_step(
    sim: &SimHandle,
    script: &ActorScript,
    progress: &mut Progress,
    action: &Action,
) -> anyhow::Result<()> {
    match action {
        Action::Sleep { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            return Ok(());
        }
        Action::Leave => {
            if let Some(a) = progress.actor.take() {
                a.leave().await?;
            }
            progress.joined = false;
            progress.logged_in = false;
            return Ok(());
        }
        _ => {}
    }
    if progress.actor.as_ref().is_none_or(|a| a.closed().is_some()) {
        let mut builder = sim.actor(&script.name).await;
        if let Some(ip) = script.ip {
            builder = builder.ip(ip);
        }
        progress.actor = Some(builder.connect().await?);
        progress.joined = false;
        progress.logged_in = false;
    }
    let Some(a) = progress.actor.as_mut() else {
        return Ok(());
    };
    match action {
        Action::Join { channel, password } => {
            if !progress.joined {
                match password {
                    Some(pw) => a.join_with_password(channel, pw).await?,
                    None => a.join(channel).await?,
                }
                progress.joined = true;
            }
        }
        Action::Login { name, password } => {
            if !progress.logged_in {
                a.login(name, password.as_deref()).await?;
                progress.logged_in = true;
            }
        }
        Action::Chat { msg } => a.chat(msg)?,
        Action::Pm { to, msg } => a.pm(to, msg)?,
        Action::Queue {
            id,
            media_type,
            pos,
            temp,
            duration,
            title,
        } => {
            let mut payload = json!({ "id": id, "type": media_type, "pos": pos, "temp": temp });
            if let Some(d) = duration {
                payload["duration"] = json!(d);
            }
            if let Some(t) = title {
                payload["title"] = json!(t);
            }
            a.queue_with(payload)?;
        }
        Action::Emit { event, payload } => a.emit(event, payload.clone())?,
        Action::Sleep { .. } | Action::Leave => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[accounts]]
name = "alice"
password = "alice-pw"

[[channels]]
name = "demo"
registered = true
ranks = [["alice", 3]]
playlist = [{ id = "clip1", type = "fi", title = "Demo clip", seconds = 90 }]

[[actors]]
name = "alice"
loop = true
steps = [
  { do = "join", channel = "demo" },
  { do = "login", name = "alice", password = "alice-pw" },
  { do = "chat", msg = "hello", wait_ms = 1000 },
  { do = "queue", id = "stream1", type = "tw", duration = 60 },
  { do = "emit", event = "voteskip" },
  { do = "leave" },
]
"#;

    #[test]
    fn toml_scripts_parse() {
        let s = Script::parse(EXAMPLE, false).unwrap();
        assert_eq!(s.accounts[0].global_rank, 1.0);
        assert_eq!(s.channels[0].ranks, vec![("alice".to_owned(), 3.0)]);
        assert!(s.actors[0].repeat);
        assert_eq!(s.actors[0].steps[2].wait_ms, 1000);
        assert_eq!(
            s.actors[0].steps[3].action,
            Action::Queue {
                id: "stream1".into(),
                media_type: "tw".into(),
                pos: "end".into(),
                temp: false,
                duration: Some(60),
                title: None
            }
        );
        assert_eq!(s.actors[0].steps[5].action, Action::Leave);
    }

    #[test]
    fn shipped_demo_script_parses() {
        let s = Script::parse(include_str!("../demo/lively.toml"), false).unwrap();
        assert_eq!(s.actors.len(), 2);
        assert!(s.channels[0].registered);
        assert!(s.actors.iter().all(|a| a.repeat));
    }

    #[test]
    fn json_scripts_parse_and_unknown_keys_fail() {
        let s = Script::parse(
            r#"{"actors":[{"name":"b","steps":[{"do":"pm","to":"a","msg":"hi"}]}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(
            s.actors[0].steps[0].action,
            Action::Pm {
                to: "a".into(),
                msg: "hi".into()
            }
        );
        assert!(Script::parse(r#"{"actorz":[]}"#, true).is_err());
    }
}
