//! The interactive console of `daz-sim --interactive`: act as channel users by hand
//! (one line per command on standard input) and watch the channel as it happens, so an
//! operator or a plugin author can try a bot without writing a script.
//!
//! Commands (one per line; `#` starts a comment):
//!
//! ```text
//! join NAME [PASSWORD]        connect NAME, join the channel, log in (guest without a password)
//! say NAME TEXT…              NAME says TEXT in the channel
//! pm NAME TO TEXT…            NAME sends TEXT to TO as a private message
//! queue NAME TYPE ID [TITLE…] NAME queues media (e.g. `queue alice tw lofi`, `queue alice fi clip1 My clip`)
//! leave NAME                  NAME disconnects
//! users                       who is in the channel, with ranks
//! help                        this list
//! quit                        stop the simulator (so does the end of the input)
//! ```
//!
//! What it prints, one line each: `[chat] user: text` for every chat line of the channel
//! (anyone's, the bot's included), `[join]`/`[leave]`, `[media]` when the playing item
//! changes, `[pm] from → to: text` for private messages to and from the console's users,
//! `[NAME] event: …` for what the server refuses them (errors, flood limits, kicks), and
//! `ok: …` / `error: …` after each command.
//!
//! [`run_as`] is the same console for someone trying a bot as one user (`daz dev`): a
//! plain line is that user's chat, the commands start with `/` ([`HELP_AS`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use daz_cytube_proto::events::unescape_chat;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::{Actor, SimHandle};

/// The console's help text.
pub const HELP: &str = "\
join NAME [PASSWORD]        connect NAME, join the channel, log in (guest without a password)
say NAME TEXT...            NAME says TEXT in the channel
pm NAME TO TEXT...          NAME sends TEXT to TO as a private message
queue NAME TYPE ID [TITLE]  NAME queues media (e.g. `queue alice tw lofi`)
leave NAME                  NAME disconnects
users                       who is in the channel, with ranks
help                        this list
quit                        stop the simulator (so does the end of the input)";

/// The longest command line read; longer ones are refused.
pub const MAX_LINE: usize = 4096;

/// Users the console drives at once, at most.
pub const MAX_USERS: usize = 64;

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Connect, join the channel, log in.
    Join {
        /// Login name.
        name: String,
        /// Account password (guest without).
        password: Option<String>,
    },
    /// Chat in the channel.
    Say {
        /// Who.
        name: String,
        /// What.
        text: String,
    },
    /// Private message.
    Pm {
        /// From.
        name: String,
        /// To.
        to: String,
        /// What.
        text: String,
    },
    /// Queue media at the end of the playlist.
    Queue {
        /// Who.
        name: String,
        /// Media type code (`yt`, `tw`, `fi`, …).
        media_type: String,
        /// Media id.
        id: String,
        /// Title (custom and file media).
        title: Option<String>,
    },
    /// Disconnect.
    Leave {
        /// Who.
        name: String,
    },
    /// List the channel's users.
    Users,
    /// Print the commands.
    Help,
    /// Stop.
    Quit,
}

/// Splits off the first word of `s`: `(word, rest)`, the rest without leading spaces.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Parses one line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let (verb, rest) = word(line);
    let need = |what: &str, v: &str| {
        if v.is_empty() {
            Err(format!("{verb}: missing {what} (try `help`)"))
        } else {
            Ok(v.to_owned())
        }
    };
    let cmd = match verb.to_ascii_lowercase().as_str() {
        "join" => {
            let (name, rest) = word(rest);
            let (password, extra) = word(rest);
            if !extra.is_empty() {
                return Err("join: NAME [PASSWORD], nothing more".to_owned());
            }
            Command::Join {
                name: need("NAME", name)?,
                password: (!password.is_empty()).then(|| password.to_owned()),
            }
        }
        "say" => {
            let (name, text) = word(rest);
            Command::Say {
                name: need("NAME", name)?,
                text: need("TEXT", text)?,
            }
        }
        "pm" => {
            let (name, rest) = word(rest);
            let (to, text) = word(rest);
            Command::Pm {
                name: need("NAME", name)?,
                to: need("TO", to)?,
                text: need("TEXT", text)?,
            }
        }
        "queue" => {
            let (name, rest) = word(rest);
            let (media_type, rest) = word(rest);
            let (id, title) = word(rest);
            Command::Queue {
                name: need("NAME", name)?,
                media_type: need("TYPE", media_type)?,
                id: need("ID", id)?,
                title: (!title.is_empty()).then(|| title.to_owned()),
            }
        }
        "leave" => {
            let (name, extra) = word(rest);
            if !extra.is_empty() {
                return Err("leave: NAME, nothing more".to_owned());
            }
            Command::Leave {
                name: need("NAME", name)?,
            }
        }
        "users" => Command::Users,
        "help" | "?" => Command::Help,
        "quit" | "exit" => Command::Quit,
        other => return Err(format!("unknown command {other:?} (try `help`)")),
    };
    Ok(Some(cmd))
}

/// Where output lines go.
pub type Out = Arc<dyn Fn(&str) + Send + Sync>;

/// The console: the users it drives in one channel.
pub struct Console {
    sim: SimHandle,
    channel: String,
    /// Connected users by lowercase name.
    actors: HashMap<String, Actor>,
    /// The names the watcher follows for PMs and refusals (shared with it).
    watched: Arc<Mutex<Vec<String>>>,
}

impl Console {
    /// A console for `channel` on `sim`.
    pub fn new(sim: SimHandle, channel: &str) -> Console {
        Console {
            sim,
            channel: channel.to_owned(),
            actors: HashMap::new(),
            watched: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn actor(&self, name: &str) -> Result<&Actor, String> {
        self.actors
            .get(&name.to_lowercase())
            .ok_or_else(|| format!("{name} has not joined (join {name})"))
    }

    /// Runs one command; the line to print.
    pub async fn apply(&mut self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::Join { name, password } => {
                let key = name.to_lowercase();
                if self.actors.get(&key).is_some_and(|a| a.closed().is_none()) {
                    return Err(format!("{name} is already in the channel"));
                }
                if self.actors.len() >= MAX_USERS {
                    return Err(format!("at most {MAX_USERS} users at once"));
                }
                let mut actor = self
                    .sim
                    .actor(&name)
                    .await
                    .timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
                actor
                    .join_and_login(&self.channel, &name, password.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                self.actors.insert(key, actor);
                let mut watched = self.watched.lock();
                if !watched.iter().any(|w| w.eq_ignore_ascii_case(&name)) {
                    watched.push(name.clone());
                }
                Ok(format!("{name} joined #{}", self.channel))
            }
            Command::Say { name, text } => {
                self.actor(&name)?.chat(&text).map_err(|e| e.to_string())?;
                Ok(format!("{name} said it"))
            }
            Command::Pm { name, to, text } => {
                self.actor(&name)?
                    .pm(&to, &text)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{name} sent a PM to {to}"))
            }
            Command::Queue {
                name,
                media_type,
                id,
                title,
            } => {
                let mut payload =
                    json!({ "id": id, "type": media_type, "pos": "end", "temp": false });
                if let Some(t) = title {
                    payload["title"] = json!(t);
                }
                self.actor(&name)?
                    .queue_with(payload)
                    .map_err(|e| e.to_string())?;
                Ok(format!("{name} asked to queue {media_type}:{id}"))
            }
            Command::Leave { name } => {
                let actor = self
                    .actors
                    .remove(&name.to_lowercase())
                    .ok_or_else(|| format!("{name} has not joined"))?;
                actor.leave().await.map_err(|e| e.to_string())?;
                Ok(format!("{name} left"))
            }
            Command::Users => {
                let Some(chan) = self.sim.channel(&self.channel) else {
                    return Ok(format!("#{} has nobody in it yet", self.channel));
                };
                let users: Vec<String> = chan
                    .users
                    .iter()
                    .map(|u| format!("{} (rank {})", u.name, u.rank))
                    .collect();
                Ok(format!("#{}: {}", self.channel, users.join(", ")))
            }
            Command::Help => Ok(HELP.to_owned()),
            Command::Quit => Ok("bye".to_owned()),
        }
    }
}

/// Reads commands from `input` until `quit` or its end, printing what happens in the
/// channel meanwhile. Returns when the console is done (the caller stops the simulator).
pub async fn run<R>(sim: SimHandle, channel: &str, input: R, out: Out)
where
    R: AsyncBufRead + Unpin,
{
    run_with(sim, channel, None, input, out).await;
}

/// The help text of a console that chats as one user ([`run_as`]).
pub const HELP_AS: &str = "\
TEXT                        you say TEXT in the channel (e.g. !hello)
/pm TO TEXT...              you send TEXT to TO as a private message (e.g. /pm bot !hello)
/join NAME [PASSWORD]       another user joins (then /say NAME TEXT, /leave NAME)
/users                      who is in the channel, with ranks
/help                       this list
/quit                       stop (so does the end of the input, or Ctrl-C)";

/// Like [`run`], for someone trying a bot: `me` joins the channel first, a plain line is
/// `me` saying it, `/pm TO TEXT` is `me`'s private message, and the other commands
/// start with `/` (`/join bob`, `/say bob hi`, `/quit`).
pub async fn run_as<R>(sim: SimHandle, channel: &str, me: &str, input: R, out: Out)
where
    R: AsyncBufRead + Unpin,
{
    run_with(sim, channel, Some(me), input, out).await;
}

/// A line of [`run_as`]'s input as a command.
pub fn parse_as(me: &str, line: &str) -> Result<Option<Command>, String> {
    let trimmed = line.trim();
    let Some(command) = trimmed.strip_prefix('/') else {
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.len() > MAX_LINE {
            return Err(format!("line longer than {MAX_LINE} bytes"));
        }
        return Ok(Some(Command::Say {
            name: me.to_owned(),
            text: trimmed.to_owned(),
        }));
    };
    let (verb, rest) = word(command);
    if verb.eq_ignore_ascii_case("pm") {
        return parse(&format!("pm {me} {rest}"));
    }
    parse(command)
}

async fn run_with<R>(sim: SimHandle, channel: &str, me: Option<&str>, input: R, out: Out)
where
    R: AsyncBufRead + Unpin,
{
    let mut console = Console::new(sim.clone(), channel);
    let watcher = tokio::spawn(watch(
        sim,
        channel.to_owned(),
        console.watched.clone(),
        out.clone(),
    ));
    match me {
        None => out(&format!(
            "daz-sim console on #{channel}: `help` lists the commands"
        )),
        Some(me) => {
            let join = Command::Join {
                name: me.to_owned(),
                password: None,
            };
            match console.apply(join).await {
                Ok(_) => out(&format!(
                    "you are {me} in #{channel}: type a line to say it, /help for more"
                )),
                Err(e) => out(&format!("error: {me} cannot join: {e}")),
            }
        }
    }
    let mut lines = input.lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                out(&format!("error: reading the input: {e}"));
                break;
            }
        };
        let parsed = match me {
            None => parse(&line),
            Some(me) => parse_as(me, &line),
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(Command::Quit)) => break,
            Ok(Some(Command::Help)) if me.is_some() => out(HELP_AS),
            // The channel's own `[chat]` line shows what was said.
            Ok(Some(cmd @ Command::Say { .. })) if me.is_some() => {
                if let Err(e) = console.apply(cmd).await {
                    out(&format!("error: {e}"));
                }
            }
            Ok(Some(cmd)) => match console.apply(cmd).await {
                Ok(msg) => out(&format!("ok: {msg}")),
                Err(e) => out(&format!("error: {e}")),
            },
            Err(e) => out(&format!("error: {e}")),
        }
    }
    watcher.abort();
    for (_, actor) in console.actors.drain() {
        let _ = actor.leave().await;
    }
}

/// The server-side refusals shown to the console's users.
const REFUSALS: &[&str] = &[
    "errorMsg",
    "queueFail",
    "noflood",
    "spamFiltered",
    "cooldown",
    "kick",
    "loginFailed",
    "needPassword",
];

/// Chat lines remembered so that each is printed once.
const REMEMBERED: usize = 256;

/// Prints the channel's life as it changes: chat, joins and leaves, media, and the PMs
/// and refusals of the console's users.
async fn watch(sim: SimHandle, channel: String, watched: Arc<Mutex<Vec<String>>>, out: Out) {
    let mut printed: VecDeque<String> = VecDeque::new();
    let mut users: Vec<String> = Vec::new();
    let mut current: Option<u64> = None;
    // Per user: frames already looked at.
    let mut seen_frames: HashMap<String, usize> = HashMap::new();
    loop {
        let mut lines = Vec::new();
        let _ = sim
            .wait_for(Duration::from_secs(3600), |s| {
                if let Some(chan) = s.channel(&channel) {
                    for msg in &chan.backlog {
                        let key = msg.to_string();
                        if printed.contains(&key) {
                            continue;
                        }
                        if printed.len() == REMEMBERED {
                            printed.pop_front();
                        }
                        printed.push_back(key);
                        lines.push(format!(
                            "[chat] {}: {}",
                            field(msg, "username"),
                            unescape_chat(&field(msg, "msg"))
                        ));
                    }
                    let now: Vec<String> = chan.users.iter().map(|u| u.name.clone()).collect();
                    for u in now.iter().filter(|u| !users.contains(u)) {
                        lines.push(format!("[join] {u}"));
                    }
                    for u in users.iter().filter(|u| !now.contains(u)) {
                        lines.push(format!("[leave] {u}"));
                    }
                    users = now;
                    if chan.current != current {
                        current = chan.current;
                        if let Some(item) = chan.playlist.iter().find(|i| Some(i.uid) == current) {
                            lines.push(format!("[media] now playing: {}", item.title));
                        }
                    }
                }
                for name in watched.lock().iter() {
                    let frames = s.frames_sent_to(name);
                    let seen = seen_frames.entry(name.to_lowercase()).or_insert(0);
                    if frames.len() < *seen {
                        // A new connection under that name: its frames start over.
                        *seen = 0;
                    }
                    for (event, payload) in &frames[*seen..] {
                        if event == "pm" {
                            lines.push(format!(
                                "[pm] {} → {}: {}",
                                field(payload, "username"),
                                field(payload, "to"),
                                unescape_chat(&field(payload, "msg"))
                            ));
                        } else if REFUSALS.contains(&event.as_str()) {
                            lines.push(format!("[{name}] {event}: {payload}"));
                        }
                    }
                    *seen = frames.len();
                }
                !lines.is_empty()
            })
            .await;
        for l in &lines {
            out(l);
        }
    }
}

fn field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_free_text() {
        assert_eq!(
            parse("say alice hello   there").unwrap(),
            Some(Command::Say {
                name: "alice".into(),
                text: "hello   there".into()
            })
        );
        assert_eq!(
            parse("pm alice bot !seen bob").unwrap(),
            Some(Command::Pm {
                name: "alice".into(),
                to: "bot".into(),
                text: "!seen bob".into()
            })
        );
        assert_eq!(
            parse("join mod pw").unwrap(),
            Some(Command::Join {
                name: "mod".into(),
                password: Some("pw".into())
            })
        );
        assert_eq!(
            parse("queue alice fi clip1 My clip").unwrap(),
            Some(Command::Queue {
                name: "alice".into(),
                media_type: "fi".into(),
                id: "clip1".into(),
                title: Some("My clip".into())
            })
        );
        assert_eq!(parse("  # a comment").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("QUIT").unwrap(), Some(Command::Quit));
    }

    #[test]
    fn a_console_as_one_user_chats_plain_lines_and_takes_slash_commands() {
        assert_eq!(
            parse_as("dev", "  !hello there ").unwrap(),
            Some(Command::Say {
                name: "dev".into(),
                text: "!hello there".into()
            })
        );
        // A plain line that reads like a command is still chat.
        assert_eq!(
            parse_as("dev", "join us").unwrap(),
            Some(Command::Say {
                name: "dev".into(),
                text: "join us".into()
            })
        );
        assert_eq!(
            parse_as("dev", "/pm bot !hello").unwrap(),
            Some(Command::Pm {
                name: "dev".into(),
                to: "bot".into(),
                text: "!hello".into()
            })
        );
        assert_eq!(
            parse_as("dev", "/say bob hi").unwrap(),
            Some(Command::Say {
                name: "bob".into(),
                text: "hi".into()
            })
        );
        assert_eq!(parse_as("dev", "/quit").unwrap(), Some(Command::Quit));
        assert_eq!(parse_as("dev", "   ").unwrap(), None);
        assert!(
            parse_as("dev", "/pm bot")
                .unwrap_err()
                .contains("missing TEXT")
        );
        assert!(
            parse_as("dev", &"x".repeat(MAX_LINE + 1))
                .unwrap_err()
                .contains("longer")
        );
    }

    #[test]
    fn bad_lines_say_what_is_missing() {
        assert!(parse("say alice").unwrap_err().contains("missing TEXT"));
        assert!(parse("pm alice").unwrap_err().contains("missing TO"));
        assert!(
            parse("dance alice")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(parse("join a b c").unwrap_err().contains("nothing more"));
        assert!(
            parse(&"x".repeat(MAX_LINE + 1))
                .unwrap_err()
                .contains("longer")
        );
    }
}
