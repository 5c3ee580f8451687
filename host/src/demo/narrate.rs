//! The demo's narration: bus events as one readable line each, and the bot's own
//! chat lines and PMs handed back to the guide as [`Answer`]s.

use daz_bus::Envelope;
use daz_cytube_proto::events::unescape_chat;
use serde_json::Value;

/// What the narrator subscribes to.
pub const SUBJECTS: &[&str] = &[
    "host.room.demo.>",
    "cytube.in.demo.chatMsg",
    "cytube.in.demo.pm",
    "cytube.in.demo.changeMedia",
    "cytube.in.demo.queue",
    "cytube.in.demo.addUser",
    "cytube.in.demo.userLeave",
];

/// A line the bot said: in the channel, or by PM to someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The text, as plain text.
    pub text: String,
    /// The recipient of a PM; `None` for a chat line.
    pub pm_to: Option<String>,
}

/// Narrates one bus event; returns the bot's own line, if it is one. Counts the
/// scripted users' live chat lines in `chat_seen`.
pub fn narrate(env: &Envelope, say: &dyn Fn(&str), chat_seen: &mut u64) -> Option<Answer> {
    let v: Value = serde_json::from_slice(&env.payload).unwrap_or(Value::Null);
    let text = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(unescape_chat)
            .unwrap_or_default()
    };
    let event = env.subject.rsplit('.').next().unwrap_or_default();
    if env.subject.starts_with("host.room.") {
        let line = match event {
            "connecting" => "connecting to the simulated Cytube server…".to_owned(),
            "connected" => "connected (Socket.IO session open); joining #demo".to_owned(),
            "joined" => "in the channel".to_owned(),
            "logged_in" => "logged in as `bot` — it now answers commands".to_owned(),
            "disconnected" | "failed" => format!(
                "{event}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("")
            ),
            other => other.to_owned(),
        };
        say(&format!("[room]   {line}"));
        return None;
    }
    let mine = env.has_tag("self") && !env.has_tag("backlog");
    match event {
        "chatMsg" => {
            let user = text("username");
            let msg = text("msg");
            if mine {
                say(&format!("[bot]    {msg}"));
                return Some(Answer {
                    text: msg,
                    pm_to: None,
                });
            }
            if env.has_tag("backlog") {
                say(&format!(
                    "[chat]   {user}: {msg}   (backlog, ignored by plugins)"
                ));
            } else {
                *chat_seen += 1;
                say(&format!("[chat]   {user}: {msg}"));
            }
        }
        "pm" => {
            let to = text("to");
            let msg = text("msg");
            if mine {
                say(&format!("[bot]    (PM to {to}) {msg}"));
                return Some(Answer {
                    text: msg,
                    pm_to: Some(to),
                });
            }
            say(&format!("[pm]     {} → {to}: {msg}", text("username")));
        }
        // The server repeats what plays on every rejoin: not a new play.
        "changeMedia" if env.has_tag("repeat") => say(&format!(
            "[media]  still playing: {}   (repeated on rejoin, not a new play)",
            text("title")
        )),
        "changeMedia" => say(&format!("[media]  now playing: {}", text("title"))),
        "queue" => {
            let title = v
                .pointer("/item/media/title")
                .and_then(Value::as_str)
                .unwrap_or_default();
            say(&format!("[media]  queued: {title}"));
        }
        "addUser" => say(&format!("[users]  + {}", text("name"))),
        "userLeave" => say(&format!("[users]  - {}", text("name"))),
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_html_is_narrated_as_text() {
        assert_eq!(
            unescape_chat("check <a href=\"https://example.org/x\">https://example.org/x</a> &gt;"),
            "check https://example.org/x >"
        );
        // Regression: "!help <command>" was narrated as "!help  for more".
        assert_eq!(
            unescape_chat("Commands (1/1, !help &lt;command&gt; for more)"),
            "Commands (1/1, !help <command> for more)"
        );
    }
}
