//! # daz-plugin-polls — `!poll` through Cytube's own polls
//!
//! * `!poll <title> | <option> | <option> [| 2m]` — opens a poll with the server's
//!   `newPoll` frame (the timeout, if any, is the server's: it closes the poll itself).
//!   For users of `rank` (by default the channel's own `pollctl` permission); refused
//!   with the reason when the caller's rank or the bot's is too low, a poll is already
//!   open, or the input is out of bounds (no or one option, too many, too long, the
//!   same option twice, a timeout outside 1 s – 24 h).
//! * `!poll close` — closes the open poll (`closePoll`); `!poll` — the open poll and its
//!   counts; `!poll last` — the results of the last poll that closed here.
//!
//! The plugin follows the room's poll from the server's `newPoll` / `updatePoll` frames
//! and, when `closePoll` comes (a timeout, `!poll close`, or a moderator closing it in
//! the channel), announces the results of the polls it opened (of every poll with
//! `announce_all`) and records every closed poll in its table `polls_results`
//! (PostgreSQL and SQLite through the storage plugin's per-plugin migrations). The
//! followed polls, the requests waiting for the server's answer and the writes not yet
//! in the database are handed to the next version on a hot reload.
//!
//! # Layout
//! * this file — the plugin: events, rank checks, frames sent.
//! * `parse` — the `!poll` arguments and their bounds.
//! * `results` — a followed poll and its results line.

mod parse;
mod results;

use std::collections::BTreeMap;

use daz_feature_support::{rank, store::Store, text};
use daz_plugin_api::{
    cytube::{NewPoll, Permissions, Poll, ServerEvent},
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Param, Statement},
};
use serde::{Deserialize, Serialize};

pub use parse::{MAX_TIMEOUT_S, NewPollRequest, Request, USAGE, parse, parse_timeout};
pub use results::Tracked;

const FLUSH: &str = "polls.flush";

/// The rank Cytube's registered channels require for `pollctl` by default, used while
/// the server has not sent the channel's permissions.
const DEFAULT_POLLCTL: f64 = 1.5;

/// How long a `!poll` waits for the server's `newPoll` before another may be asked.
const ASK_WINDOW_MS: i64 = 10_000;

/// The `[plugins.polls.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Least rank that may open and close polls with `!poll`; unset, the channel's own
    /// `pollctl` permission (whoever may open a poll in the channel may ask the bot).
    pub rank: Option<f64>,
    /// Most options per poll.
    pub max_options: usize,
    /// Longest title, in characters.
    pub max_title_chars: usize,
    /// Longest option, in characters.
    pub max_option_chars: usize,
    /// Timeout of a poll asked for without one, seconds; unset, it stays open until
    /// someone closes it.
    pub default_timeout_s: Option<u64>,
    /// Hide the counts from users below `viewhiddenpoll` until the poll closes.
    pub obscured: bool,
    /// Announce the results of every poll that closes, not only the bot's own.
    pub announce_all: bool,
    /// How often results not yet in the database are retried, ms.
    pub flush_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rank: None,
            max_options: 10,
            max_title_chars: 200,
            max_option_chars: 100,
            default_timeout_s: None,
            obscured: false,
            announce_all: false,
            flush_interval_ms: 5_000,
        }
    }
}

/// A `!poll` sent to the server and not yet answered by its `newPoll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Asked {
    /// The command, to answer where it came from.
    pub cmd: Command,
    /// Its timeout, for the confirmation.
    pub timeout_s: Option<u64>,
    /// When it was sent, ms.
    pub at_ms: i64,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The open poll of each room, by room.
    pub polls: BTreeMap<String, Tracked>,
    /// Requests waiting for the server, by room.
    pub asked: BTreeMap<String, Asked>,
    /// Results not yet in the database.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

fn migrations() -> Vec<Migration> {
    let table = |id: &str| {
        format!(
            "CREATE TABLE polls_results (id {id}, room TEXT NOT NULL, title TEXT NOT NULL, \
             options TEXT NOT NULL, counts TEXT NOT NULL, initiator TEXT NOT NULL, \
             asked_by TEXT, opened_ms BIGINT NOT NULL, closed_ms BIGINT NOT NULL);\
             CREATE INDEX polls_results_room ON polls_results (room, closed_ms);"
        )
    };
    vec![Migration::new(
        1,
        "poll results",
        table("BIGSERIAL PRIMARY KEY"),
        table("INTEGER PRIMARY KEY AUTOINCREMENT"),
    )]
}

/// What the room state says about polls.
struct Standing {
    bot_rank: f64,
    pollctl: f64,
    open: Option<Poll>,
}

/// The plugin instance.
pub struct Polls {
    host: Host,
    config: Config,
    polls: BTreeMap<String, Tracked>,
    asked: BTreeMap<String, Asked>,
    store: Store,
}

impl Polls {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    fn standing(&self, room: &str) -> Option<Standing> {
        let v = self.host.room_state(room).ok()?;
        let state = v.get("state")?;
        let permissions: Permissions = state
            .get("permissions")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        Some(Standing {
            bot_rank: state
                .pointer("/me/rank")
                .and_then(|r| r.as_f64())
                .unwrap_or(-1.0),
            pollctl: permissions.get("pollctl").unwrap_or(DEFAULT_POLLCTL),
            open: state
                .get("poll")
                .filter(|p| !p.is_null())
                .and_then(|p| serde_json::from_value(p.clone()).ok()),
        })
    }

    /// The room's standing when both the caller and the bot may control polls; else the
    /// refusal has been said and `None` comes back.
    fn allowed(&self, cmd: &Command, what: &str) -> Result<Option<Standing>> {
        let Some(s) = self.standing(&cmd.room) else {
            self.reply(
                cmd,
                "I cannot see the channel right now; try again in a moment.",
            )?;
            return Ok(None);
        };
        let need = self.config.rank.unwrap_or(s.pollctl);
        if cmd.effective_rank() < need {
            self.reply(
                cmd,
                &format!(
                    "{}, {what} polls is for rank {} and above here.",
                    cmd.username,
                    rank::words(need)
                ),
            )?;
            return Ok(None);
        }
        if s.bot_rank < s.pollctl {
            // The server would ignore the frame without a word: say so instead.
            self.reply(
                cmd,
                &format!(
                    "I cannot {} polls here: the channel lets rank {} and above do that and my rank is {}.",
                    if what == "opening" { "open" } else { "close" },
                    rank::words(s.pollctl),
                    s.bot_rank
                ),
            )?;
            return Ok(None);
        }
        Ok(Some(s))
    }

    fn open(&mut self, cmd: &Command, req: NewPollRequest) -> Result<()> {
        let Some(s) = self.allowed(cmd, "opening")? else {
            return Ok(());
        };
        if let Some(p) = &s.open {
            let title = daz_plugin_api::cytube::unescape_chat(&p.title);
            return self.reply(
                cmd,
                &format!(
                    "A poll is already open (“{}”); close it first with !poll close.",
                    text::fit(&title, 80)
                ),
            );
        }
        let now = self.host.now_ms();
        if self
            .asked
            .get(&cmd.room)
            .is_some_and(|a| now - a.at_ms < ASK_WINDOW_MS)
        {
            return self.reply(
                cmd,
                "A poll is being opened right now; try again in a moment.",
            );
        }
        let frame = NewPoll {
            title: req.title.clone(),
            opts: req.options.clone(),
            obscured: self.config.obscured,
            timeout: req.timeout_s,
        };
        self.host.publish(
            Message::new(format!("cytube.out.{}.newPoll", cmd.room), &frame)?
                .room(cmd.room.clone())
                .priority(Priority::High),
        )?;
        self.asked.insert(
            cmd.room.clone(),
            Asked {
                cmd: cmd.clone(),
                timeout_s: req.timeout_s,
                at_ms: now,
            },
        );
        let _ = self.host.counter_add(
            "polls_opened_total",
            "Polls the bot was asked to open",
            &[],
            1.0,
        );
        Ok(())
    }

    fn close(&mut self, cmd: &Command) -> Result<()> {
        let Some(s) = self.allowed(cmd, "closing")? else {
            return Ok(());
        };
        let Some(open) = s.open else {
            return self.reply(cmd, "No poll is open.");
        };
        // Closed through the bot: its results are announced whoever opened it. The
        // command may have overtaken the server's `newPoll` on its way here; the poll is
        // then tracked from the room state, and `newPoll` finds it as the same poll.
        self.polls
            .entry(cmd.room.clone())
            .or_insert_with(|| Tracked::from_poll(&open, false, None))
            .announce = true;
        self.host.publish(
            Message::raw(format!("cytube.out.{}.closePoll", cmd.room), Vec::new())
                .room(cmd.room.clone())
                .priority(Priority::High),
        )?;
        Ok(())
    }

    fn status(&mut self, cmd: &Command) -> Result<()> {
        let open = self.standing(&cmd.room).and_then(|s| s.open);
        match open {
            Some(p) => {
                let t = Tracked::from_poll(&p, false, None);
                self.reply(cmd, &t.status())
            }
            None => self.reply(cmd, &format!("No poll is open. {USAGE}")),
        }
    }

    fn last(&mut self, cmd: &Command) -> Result<()> {
        let rows = match self.store.query(
            "SELECT title, options, counts, initiator, opened_ms FROM polls_results \
             WHERE room = $1 ORDER BY closed_ms DESC, id DESC LIMIT 1",
            &[cmd.room.clone().into()],
        ) {
            Ok(rows) => rows,
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "reading the last poll failed",
                    &[("error", e.message())],
                );
                return self.reply(cmd, "The poll history is not available right now.");
            }
        };
        let Some(row) = rows.row(0) else {
            return self.reply(cmd, "No poll has closed here yet.");
        };
        let json = |col: &str| -> serde_json::Value {
            row.get::<String>(col)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default()
        };
        let t = Tracked {
            title: row.get("title").unwrap_or_default(),
            options: serde_json::from_value(json("options")).unwrap_or_default(),
            counts: serde_json::from_value(json("counts")).unwrap_or_default(),
            initiator: row.get("initiator").unwrap_or_default(),
            opened_ms: row.get("opened_ms").unwrap_or(0),
            announce: false,
            asked_by: None,
        };
        self.reply(
            cmd,
            &t.announcement().replacen("Poll closed", "Last poll", 1),
        )
    }

    fn command(&mut self, cmd: &Command) -> Result<()> {
        match parse(&cmd.rest, &self.config) {
            Err(why) => self.reply(cmd, &why),
            Ok(Request::Status) => self.status(cmd),
            Ok(Request::Last) => self.last(cmd),
            Ok(Request::Close) => self.close(cmd),
            Ok(Request::Open(req)) => self.open(cmd, req),
        }
    }

    /// The server opened a poll (or told a (re)joining bot about the open one).
    fn opened(&mut self, room: &str, poll: &Poll) -> Result<()> {
        let me = self.host.room_me(room).ok().and_then(|m| m.name);
        let ours = me.is_some_and(|m| m.eq_ignore_ascii_case(&poll.initiator));
        // The same poll again (the server repeats it on every rejoin): keep what the
        // plugin knows of it.
        if let Some(t) = self.polls.get_mut(room)
            && t.opened_ms == poll.timestamp
            && t.initiator == poll.initiator
        {
            *t = Tracked::from_poll(poll, t.announce, t.asked_by.clone());
            return Ok(());
        }
        let asked = if ours { self.asked.remove(room) } else { None };
        let tracked = Tracked::from_poll(
            poll,
            ours || self.config.announce_all,
            asked.as_ref().map(|a| a.cmd.username.clone()),
        );
        if let Some(a) = asked {
            let when = match a.timeout_s {
                Some(s) => format!(
                    "it closes in {} and I will post the results",
                    daz_feature_support::time::human(i64::try_from(s).unwrap_or(0) * 1_000)
                ),
                None => "close it with !poll close and I will post the results".to_owned(),
            };
            self.reply(
                &a.cmd,
                &format!("Poll open: “{}”; {when}.", text::fit(&tracked.title, 80)),
            )?;
        }
        self.polls.insert(room.to_owned(), tracked);
        Ok(())
    }

    /// New counts (the server sends the whole poll).
    fn updated(&mut self, room: &str, poll: &Poll) -> Result<()> {
        match self.polls.get_mut(room) {
            Some(t) => {
                let fresh = Tracked::from_poll(poll, t.announce, t.asked_by.clone());
                *t = fresh;
                Ok(())
            }
            // A poll the plugin did not see open (it started during the poll).
            None => self.opened(room, poll),
        }
    }

    fn closed(&mut self, room: &str) -> Result<()> {
        let Some(t) = self.polls.remove(room) else {
            return Ok(());
        };
        let now = self.host.now_ms();
        self.store.push(
            "INSERT INTO polls_results (room, title, options, counts, initiator, asked_by, \
             opened_ms, closed_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                room.into(),
                t.title.clone().into(),
                serde_json::to_string(&t.options).unwrap_or_default().into(),
                serde_json::to_string(&t.counts).unwrap_or_default().into(),
                t.initiator.clone().into(),
                t.asked_by.clone().map_or(Param::Null, Param::from),
                t.opened_ms.into(),
                now.into(),
            ],
        );
        self.store.flush();
        if t.announce {
            self.host.chat(room, &t.announcement())?;
        }
        Ok(())
    }

    /// The host could not deliver a frame of ours: tell whoever asked for the poll.
    fn failed(&mut self, event: &Event<'_>) -> Result<()> {
        #[derive(Deserialize)]
        struct Report {
            original: Original,
            #[serde(default)]
            reason: String,
        }
        #[derive(Deserialize)]
        struct Original {
            event: String,
        }
        let Ok(report) = event.json::<Report>() else {
            return Ok(());
        };
        let room = event.subject().split('.').nth(2).unwrap_or_default();
        if report.original.event != "newPoll" {
            return Ok(());
        }
        if let Some(a) = self.asked.remove(room) {
            self.reply(&a.cmd, &format!("The poll did not open: {}", report.reason))?;
        }
        Ok(())
    }
}

impl Plugin for Polls {
    const NAME: &'static str = "polls";
    const DESCRIPTION: &'static str =
        "!poll: Cytube polls opened and closed in chat, results announced when they close";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if !(2..=50).contains(&config.max_options)
            || !(1..=255).contains(&config.max_title_chars)
            || !(1..=255).contains(&config.max_option_chars)
            || config.flush_interval_ms == 0
        {
            return Err(Error::config(
                "max_options must be 2–50, max_title_chars and max_option_chars 1–255, \
                 flush_interval_ms above 0",
            ));
        }
        if config
            .default_timeout_s
            .is_some_and(|s| s == 0 || s > MAX_TIMEOUT_S)
        {
            return Err(Error::config(
                "default_timeout_s must be 1–86400 seconds (leave it out for no timeout)",
            ));
        }
        if config.rank.is_some_and(|r| !r.is_finite()) {
            return Err(Error::config("rank must be a number"));
        }
        let previous = previous.unwrap_or_default();
        host.subscribe(&routing::subject("poll"))?;
        for event in ["newPoll", "updatePoll", "closePoll"] {
            host.subscribe(&format!("cytube.in.*.{event}"))?;
        }
        host.timer_every(
            FLUSH,
            &serde_json::json!({}),
            std::time::Duration::from_millis(config.flush_interval_ms),
        )?;
        let store = Store::new(host.clone(), migrations(), 1_000, previous.pending);
        Ok(Polls {
            host,
            config,
            polls: previous.polls,
            asked: previous.asked,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec {
            usage: "<title> | <option> | <option> [| 2m]  ·  close  ·  last".to_owned(),
            user_cooldown_ms: 2_000,
            ..CommandSpec::new(
                "poll",
                "Open a poll (results posted when it closes), close it, or show it",
            )
        })
    }

    fn examples() -> Vec<ChatExample> {
        // Run in a room where the bot is a moderator and polls need rank 0 (as in an
        // unregistered channel), with no poll open and no poll history.
        vec![
            ChatExample::silent("!poll Best pizza? | margherita | pepperoni | 2m"),
            ChatExample::new("!poll lunch?", "A poll needs at least two options."),
            ChatExample::new("!poll lunch? | pasta", "A poll needs at least two options."),
            ChatExample::new("!poll t | a | b | 0s", "from 1 second to 24 hours"),
            ChatExample::new("!poll t | yes | YES", "every option must differ"),
            ChatExample::new("!poll", "No poll is open."),
            ChatExample::new("!poll close", "No poll is open."),
            ChatExample::new("!poll last", "The poll history is not available"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        let subject = event.subject();
        if subject == FLUSH {
            self.store.flush();
            return Ok(());
        }
        if routing::is_failure(event) {
            return self.failed(event);
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return self.command(&cmd);
        }
        let Some(room) = event.room().filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        let room = room.to_owned();
        match event.cytube_event()? {
            ServerEvent::NewPoll(p) => self.opened(&room, &p),
            ServerEvent::UpdatePoll(p) => self.updated(&room, &p),
            ServerEvent::ClosePoll => self.closed(&room),
            _ => Ok(()),
        }
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            polls: self.polls.clone(),
            asked: self.asked.clone(),
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Polls);

#[cfg(test)]
mod tests;
