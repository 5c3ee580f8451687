//! # daz-plugin-playlist — `!add`, `!skip`, `!shuffle`, `!blacklist`, auto-DJ
//!
//! * `!add <link> [next]` — queues media with the server's `queue` frame: at the end, or
//!   next for `next_rank`. Links of every provider Cytube plays are parsed (see
//!   [`link`]); unknown or malformed links are refused with what the bot accepts.
//!   Refused before anything is sent: the caller's rank, a blacklisted item, the
//!   per-user limit (items a user had the bot queue that are still on the playlist),
//!   an item already on the playlist, and a playlist the bot may not add to (a locked
//!   playlist ignores `queue` from a rank below `playlistadd` WITHOUT a word, so the
//!   bot checks the live permissions first and, should the server still stay silent,
//!   says so after `answer_ms`). The server's own refusals (`queueFail`, e.g. "You are
//!   adding videos too quickly") reach the user; the host paces `queue` frames by the
//!   server's queue limiter.
//! * `!skip` (moderators) — skips directly (`playNext`) when the bot's rank allows it,
//!   else votes (`voteskip`); `!shuffle` (moderators) — `shufflePlaylist`.
//! * `!blacklist add|remove <link>`, `!blacklist` — media the bot never queues, per room
//!   (table `playlist_blacklist`), plus the `blacklist` of `plugins.toml`.
//! * Auto-DJ — when the playlist runs empty, queues `autodj_batch` items from
//!   `autodj_list`, or, with no list, the room's most played media (the core table
//!   `media_plays` the media tracker fills).
//!
//! Who queued what, the requests waiting for the server and writes not yet in the
//! database are handed to the next version on a hot reload.
//!
//! # Layout
//! * this file — the plugin: commands, events, rank checks, frames sent.
//! * [`link`] — links to `{type, id}`.

pub mod link;

use std::collections::{BTreeMap, BTreeSet};

use daz_feature_support::{rank, store::Store, text};
use daz_plugin_api::{
    cytube::{Permissions, PlaylistItem, QueueOut, QueuePos, ServerEvent},
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Statement},
};
use serde::{Deserialize, Serialize};

pub use link::{MediaRef, parse as parse_link};

const TICK: &str = "playlist.tick";

/// The `[plugins.playlist.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Least rank for `!add`.
    pub add_rank: f64,
    /// Least rank for `!add <link> next`.
    pub next_rank: f64,
    /// Most items one user may have queued through the bot on the playlist at once.
    pub max_per_user: usize,
    /// Rank from which `max_per_user` does not apply.
    pub unlimited_rank: f64,
    /// Least rank for `!skip` and `!shuffle`.
    pub skip_rank: f64,
    /// Least rank for `!blacklist`.
    pub blacklist_rank: f64,
    /// Media never queued, in every room (links or `type:id`).
    pub blacklist: Vec<String>,
    /// Queue items as temporary (deleted after they play).
    pub temp: bool,
    /// How long the server may stay silent about a `queue` before the user is told, ms.
    pub answer_ms: i64,
    /// Refill the playlist when it runs empty.
    pub autodj: bool,
    /// What the auto-DJ queues, in order (links or `type:id`); empty: the most played.
    pub autodj_list: Vec<String>,
    /// Items per refill.
    pub autodj_batch: usize,
    /// Least time between two refills of one room, ms.
    pub autodj_cooldown_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            add_rank: 1.0,
            next_rank: 2.0,
            max_per_user: 3,
            unlimited_rank: 2.0,
            skip_rank: 2.0,
            blacklist_rank: 2.0,
            blacklist: Vec::new(),
            temp: true,
            answer_ms: 10_000,
            autodj: false,
            autodj_list: Vec::new(),
            autodj_batch: 3,
            autodj_cooldown_ms: 30_000,
        }
    }
}

/// A `queue` frame sent and not yet answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The command that asked for it (`None`: the auto-DJ).
    pub cmd: Option<Command>,
    /// What was asked for.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// When it was sent, ms.
    pub at_ms: i64,
}

/// One room's playlist bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomState {
    /// Items queued for users through the bot and still on the playlist: uid → user.
    pub owned: BTreeMap<u64, String>,
    /// Requests waiting for the server.
    pub pending: Vec<Pending>,
    /// The last auto-DJ refill, ms.
    pub autodj_ms: i64,
    /// Where the auto-DJ goes on in `autodj_list`.
    pub autodj_next: usize,
    /// The room's blacklist entries (`type:id`).
    pub blacklist: BTreeSet<String>,
    /// Whether `blacklist` was read from the database.
    pub blacklist_loaded: bool,
}

/// What a hot reload hands over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// By room.
    pub rooms: BTreeMap<String, RoomState>,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
}

impl StateSchema for State {
    const VERSION: u32 = 1;
}

fn migrations() -> Vec<Migration> {
    vec![Migration::both(
        1,
        "playlist blacklist",
        "CREATE TABLE playlist_blacklist (room TEXT NOT NULL, media_type TEXT NOT NULL, \
         media_id TEXT NOT NULL, added_by TEXT NOT NULL, added_ms BIGINT NOT NULL, \
         PRIMARY KEY (room, media_type, media_id))",
    )]
}

/// The room as the host sees it.
struct Standing {
    bot_rank: f64,
    perms: Permissions,
    locked: bool,
    items: Vec<PlaylistItem>,
    current: Option<String>,
    allow_voteskip: bool,
}

impl Standing {
    /// The least rank for a playlist action: a locked playlist needs `key`, an open
    /// one `key` or its open-playlist variant `o<key>`, whichever is lower (Cytube's
    /// rule). `None` when the server sent neither.
    fn need(&self, key: &str) -> Option<f64> {
        let locked = self.perms.get(key);
        if self.locked {
            return locked;
        }
        match (locked, self.perms.get(&format!("o{key}"))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Why the bot may not do playlist action `key`, if it may not.
    fn refuse(&self, key: &str, doing: &str) -> Option<String> {
        let need = self.need(key).unwrap_or(f64::INFINITY);
        if self.bot_rank >= need {
            return None;
        }
        let needed = if need.is_finite() {
            format!("rank {}", rank::words(need))
        } else {
            "a permission the server never sent".to_owned()
        };
        Some(if self.locked {
            format!(
                "The playlist is locked and {doing} needs {needed}; my rank is {}. Ask a moderator to unlock it or to promote me.",
                self.bot_rank
            )
        } else {
            format!(
                "{} needs {needed} here; my rank is {}.",
                capitalise(doing),
                self.bot_rank
            )
        })
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The plugin instance.
pub struct Playlist {
    host: Host,
    config: Config,
    /// The configured blacklist, as `type:id`.
    global_blacklist: BTreeSet<String>,
    /// The configured auto-DJ list.
    autodj_list: Vec<MediaRef>,
    rooms: BTreeMap<String, RoomState>,
    store: Store,
}

impl Playlist {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    /// Whether the caller's rank reaches `need` for the command they gave; if not, the
    /// refusal has been said.
    fn permits(&self, cmd: &Command, need: f64) -> Result<bool> {
        if cmd.effective_rank() >= need {
            return Ok(true);
        }
        self.reply(
            cmd,
            &format!(
                "{}, !{} is for rank {} and above here.",
                cmd.username,
                cmd.command,
                rank::words(need)
            ),
        )?;
        Ok(false)
    }

    /// The room's standing for a command, or `None` once the caller has been told the bot
    /// cannot see the channel (not joined, or between connections).
    fn standing_for(&self, cmd: &Command) -> Result<Option<Standing>> {
        let standing = self.standing(&cmd.room);
        if standing.is_none() {
            self.reply(
                cmd,
                "I cannot see the channel right now; try again in a moment.",
            )?;
        }
        Ok(standing)
    }

    fn standing(&self, room: &str) -> Option<Standing> {
        let v = self.host.room_state(room).ok()?;
        let s = v.get("state")?;
        let items: Vec<PlaylistItem> = s
            .get("playlist")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        Some(Standing {
            bot_rank: s
                .pointer("/me/rank")
                .and_then(|r| r.as_f64())
                .unwrap_or(-1.0),
            perms: s
                .get("permissions")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default(),
            locked: s
                .get("playlist_locked")
                .and_then(|l| l.as_bool())
                .unwrap_or(true),
            items,
            current: s
                .pointer("/now_playing/media/title")
                .and_then(|t| t.as_str())
                .map(str::to_owned),
            allow_voteskip: s
                .pointer("/options/allow_voteskip")
                .and_then(|a| a.as_bool())
                .unwrap_or(true),
        })
    }

    fn room(&mut self, room: &str) -> &mut RoomState {
        self.rooms.entry(room.to_owned()).or_default()
    }

    /// Whether `media` is blacklisted in `room` (by the configuration or by moderators).
    fn blacklisted(&mut self, room: &str, media: &MediaRef) -> bool {
        let key = media.to_string();
        if self.global_blacklist.contains(&key) {
            return true;
        }
        self.load_blacklist(room);
        self.room(room).blacklist.contains(&key)
    }

    /// Reads the room's blacklist from the database the first time it answers (until
    /// then the entries added since the start count).
    fn load_blacklist(&mut self, room: &str) {
        if !self.room(room).blacklist_loaded
            && let Ok(rows) = self.store.query(
                "SELECT media_type, media_id FROM playlist_blacklist WHERE room = $1",
                &[room.into()],
            )
        {
            let found: Vec<String> = rows
                .iter()
                .filter_map(|r| {
                    Some(format!(
                        "{}:{}",
                        r.get::<String>("media_type").ok()?,
                        r.get::<String>("media_id").ok()?
                    ))
                })
                .collect();
            let st = self.room(room);
            st.blacklist.extend(found);
            st.blacklist_loaded = true;
        }
    }

    fn send_queue(
        &mut self,
        room: &str,
        media: &MediaRef,
        next: bool,
        cmd: Option<Command>,
    ) -> Result<()> {
        let frame = QueueOut {
            id: media.id.clone(),
            media_type: media.kind.clone(),
            pos: if next { QueuePos::Next } else { QueuePos::End },
            temp: Some(self.config.temp),
            duration: None,
            title: None,
        };
        self.host.publish(
            Message::new(format!("cytube.out.{room}.queue"), &frame)?
                .room(room)
                .priority(Priority::Normal),
        )?;
        let at_ms = self.host.now_ms();
        self.room(room).pending.push(Pending {
            cmd,
            kind: media.kind.clone(),
            id: media.id.clone(),
            at_ms,
        });
        Ok(())
    }

    fn add(&mut self, cmd: &Command) -> Result<()> {
        if !self.permits(cmd, self.config.add_rank)? {
            return Ok(());
        }
        let rank = cmd.effective_rank();
        let mut args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
        let next = match args.iter().position(|a| a.eq_ignore_ascii_case("next")) {
            Some(i) if args.len() > 1 => {
                args.remove(i);
                true
            }
            _ => false,
        };
        if args.len() > 1 {
            return self.reply(cmd, "One link at a time: !add <link> [next]");
        }
        let media = match link::parse(args.first().copied().unwrap_or_default()) {
            Ok(m) => m,
            Err(why) => return self.reply(cmd, &why),
        };
        if next && rank < self.config.next_rank {
            return self.reply(
                cmd,
                &format!(
                    "{}, adding next is for rank {}; !add <link> adds it at the end.",
                    cmd.username,
                    rank::words(self.config.next_rank)
                ),
            );
        }
        if self.blacklisted(&cmd.room, &media) {
            return self.reply(cmd, "That one is blacklisted here.");
        }
        let user = cmd.username.to_lowercase();
        let st = self.room(&cmd.room);
        let mine = st.owned.values().filter(|u| **u == user).count()
            + st.pending
                .iter()
                .filter(|p| {
                    p.cmd
                        .as_ref()
                        .is_some_and(|c| c.username.to_lowercase() == user)
                })
                .count();
        if rank < self.config.unlimited_rank && mine >= self.config.max_per_user {
            return self.reply(
                cmd,
                &format!(
                    "{}, you have {mine} items on the playlist already (the most is {}); wait until one has played.",
                    cmd.username, self.config.max_per_user
                ),
            );
        }
        let Some(s) = self.standing_for(cmd)? else {
            return Ok(());
        };
        let key = if next { "playlistnext" } else { "playlistadd" };
        let doing = if next { "adding next" } else { "adding" };
        if let Some(why) = s.refuse(key, doing) {
            return self.reply(cmd, &why);
        }
        let special = match media.kind.as_str() {
            _ if media.is_live() => Some(("playlistaddlive", "live streams")),
            "cm" => Some(("playlistaddcustom", "custom embeds")),
            "fi" => Some(("playlistaddrawfile", "raw files")),
            _ => None,
        };
        if let Some((perm, what)) = special
            && let Some(need) = s.perms.get(perm)
            && s.bot_rank < need
        {
            return self.reply(
                cmd,
                &format!(
                    "Adding {what} needs rank {} here; my rank is {}.",
                    rank::words(need),
                    s.bot_rank
                ),
            );
        }
        if s.items
            .iter()
            .any(|i| i.media.media_type == media.kind && i.media.id == media.id)
        {
            return self.reply(cmd, "That is already on the playlist.");
        }
        self.send_queue(&cmd.room.clone(), &media, next, Some(cmd.clone()))
    }

    fn skip(&mut self, cmd: &Command) -> Result<()> {
        if !self.permits(cmd, self.config.skip_rank)? {
            return Ok(());
        }
        let Some(s) = self.standing_for(cmd)? else {
            return Ok(());
        };
        let Some(title) = s.current.clone() else {
            return self.reply(cmd, "Nothing is playing.");
        };
        let title = text::fit(&title, 100);
        if s.refuse("playlistjump", "skipping").is_none() {
            self.host.publish(
                Message::raw(format!("cytube.out.{}.playNext", cmd.room), Vec::new())
                    .room(cmd.room.clone())
                    .priority(Priority::High),
            )?;
            return self.reply(cmd, &format!("Skipping “{title}”."));
        }
        if s.allow_voteskip && s.perms.allows("voteskip", s.bot_rank) {
            self.host.publish(
                Message::raw(format!("cytube.out.{}.voteskip", cmd.room), Vec::new())
                    .room(cmd.room.clone())
                    .priority(Priority::High),
            )?;
            return self.reply(
                cmd,
                &format!("I cannot skip here, so I voted to skip “{title}”."),
            );
        }
        self.reply(
            cmd,
            &format!(
                "I can neither skip nor vote to skip here (my rank is {}).",
                s.bot_rank
            ),
        )
    }

    fn shuffle(&mut self, cmd: &Command) -> Result<()> {
        if !self.permits(cmd, self.config.skip_rank)? {
            return Ok(());
        }
        let Some(s) = self.standing_for(cmd)? else {
            return Ok(());
        };
        if let Some(why) = s.refuse("playlistshuffle", "shuffling") {
            return self.reply(cmd, &why);
        }
        if s.items.len() < 2 {
            return self.reply(cmd, "There is nothing to shuffle.");
        }
        self.host.publish(
            Message::raw(
                format!("cytube.out.{}.shufflePlaylist", cmd.room),
                Vec::new(),
            )
            .room(cmd.room.clone())
            .priority(Priority::High),
        )?;
        self.reply(
            cmd,
            &format!("Shuffled the playlist ({} items).", s.items.len()),
        )
    }

    fn blacklist(&mut self, cmd: &Command) -> Result<()> {
        if !self.permits(cmd, self.config.blacklist_rank)? {
            return Ok(());
        }
        let sub = cmd.args.first().map(|a| a.to_lowercase());
        let target = cmd.args.get(1).map(String::as_str).unwrap_or_default();
        match sub.as_deref() {
            None | Some("list") => {
                self.load_blacklist(&cmd.room);
                let mut items: Vec<String> = self.global_blacklist.iter().cloned().collect();
                items.extend(self.room(&cmd.room).blacklist.iter().cloned());
                if items.is_empty() {
                    return self.reply(cmd, "The blacklist is empty.");
                }
                let items: Vec<String> = items.iter().map(|i| text::fit(i, 60)).collect();
                let head = format!("Blacklist ({}): ", items.len());
                self.reply(
                    cmd,
                    &text::join_fitting(&head, &items, " · ", text::MAX_CHAT),
                )
            }
            Some(verb @ ("add" | "remove" | "rm")) => {
                let media = match link::parse(target) {
                    Ok(m) => m,
                    Err(why) => return self.reply(cmd, &why),
                };
                let key = media.to_string();
                let now = self.host.now_ms();
                if verb == "add" {
                    self.store.push(
                        "INSERT INTO playlist_blacklist (room, media_type, media_id, added_by, added_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        vec![
                            cmd.room.clone().into(),
                            media.kind.clone().into(),
                            media.id.clone().into(),
                            cmd.username.clone().into(),
                            now.into(),
                        ],
                    );
                    self.room(&cmd.room).blacklist.insert(key.clone());
                    self.store.flush();
                    self.reply(cmd, &format!("Blacklisted {}.", text::fit(&key, 100)))
                } else {
                    if self.global_blacklist.contains(&key) {
                        return self.reply(
                            cmd,
                            "That one is blacklisted in plugins.toml; only the operator can lift it.",
                        );
                    }
                    self.load_blacklist(&cmd.room);
                    if !self.room(&cmd.room).blacklist.remove(&key) {
                        return self.reply(cmd, "That one is not on the blacklist.");
                    }
                    self.store.push(
                        "DELETE FROM playlist_blacklist WHERE room = $1 AND media_type = $2 AND media_id = $3",
                        vec![
                            cmd.room.clone().into(),
                            media.kind.clone().into(),
                            media.id.clone().into(),
                        ],
                    );
                    self.store.flush();
                    self.reply(
                        cmd,
                        &format!("{} is off the blacklist.", text::fit(&key, 100)),
                    )
                }
            }
            Some(_) => self.reply(cmd, "Usage: !blacklist [list | add <link> | remove <link>]"),
        }
    }

    /// The playlist ran empty: queue from the list or from the most played.
    fn autodj(&mut self, room: &str) -> Result<()> {
        if !self.config.autodj {
            return Ok(());
        }
        let now = self.host.now_ms();
        let cooldown = self.config.autodj_cooldown_ms;
        let st = self.room(room);
        if now - st.autodj_ms < cooldown || !st.pending.is_empty() {
            return Ok(());
        }
        let Some(s) = self.standing(room) else {
            return Ok(());
        };
        if !s.items.is_empty() || s.refuse("playlistadd", "adding").is_some() {
            return Ok(());
        }
        let mut picks: Vec<MediaRef> = Vec::new();
        let source;
        if self.autodj_list.is_empty() {
            source = "the most played here";
            let rows = match self.store.query(
                "SELECT media_type, media_id, COUNT(*) AS plays FROM media_plays WHERE room = $1 \
                 GROUP BY media_type, media_id ORDER BY plays DESC, MAX(started_at) DESC LIMIT 50",
                &[room.into()],
            ) {
                Ok(rows) => rows,
                Err(e) => {
                    self.host.log(
                        Level::Warn,
                        "the auto-DJ cannot read the play history",
                        &[("room", room), ("error", e.message())],
                    );
                    return Ok(());
                }
            };
            let found: Vec<MediaRef> = rows
                .iter()
                .filter_map(|r| {
                    Some(MediaRef {
                        kind: r.get("media_type").ok()?,
                        id: r.get("media_id").ok()?,
                    })
                })
                .collect();
            for m in found {
                if picks.len() >= self.config.autodj_batch {
                    break;
                }
                if !self.blacklisted(room, &m) {
                    picks.push(m);
                }
            }
        } else {
            source = "the auto-DJ list";
            let n = self.autodj_list.len();
            let mut at = self.room(room).autodj_next % n;
            for _ in 0..n {
                if picks.len() >= self.config.autodj_batch.min(n) {
                    break;
                }
                let m = self.autodj_list[at].clone();
                at = (at + 1) % n;
                if !self.blacklisted(room, &m) {
                    picks.push(m);
                }
            }
            self.room(room).autodj_next = at;
        }
        self.room(room).autodj_ms = now;
        if picks.is_empty() {
            return Ok(());
        }
        for m in &picks {
            self.send_queue(room, m, false, None)?;
        }
        let _ = self.host.counter_add(
            "playlist_autodj_items_total",
            "Items the auto-DJ queued",
            &[],
            picks.len() as f64,
        );
        self.host.chat(
            room,
            &format!(
                "Auto-DJ: the playlist ran empty; queueing {} from {source}.",
                if picks.len() == 1 {
                    "1 item".to_owned()
                } else {
                    format!("{} items", picks.len())
                }
            ),
        )?;
        Ok(())
    }

    /// The server queued an item: ours if the bot queued it and a request waits for it.
    fn queued(&mut self, room: &str, item: &PlaylistItem) -> Result<()> {
        let me = self.host.room_me(room).ok().and_then(|m| m.name);
        if !me.is_some_and(|m| m.eq_ignore_ascii_case(&item.queueby)) {
            return Ok(());
        }
        let st = self.room(room);
        let exact = st
            .pending
            .iter()
            .position(|p| p.kind == item.media.media_type && p.id == item.media.id);
        // The server may normalise a provider's id: a lone request of the same type is
        // that one. With several waiting, guessing could credit the wrong user (the
        // retry plugin may also redo a refused frame later): better none.
        let i = exact.or_else(|| {
            (st.pending.len() == 1 && st.pending[0].kind == item.media.media_type).then_some(0)
        });
        let Some(i) = i else {
            return Ok(());
        };
        let p = st.pending.remove(i);
        let Some(cmd) = p.cmd else {
            return Ok(());
        };
        st.owned.insert(item.uid.0, cmd.username.to_lowercase());
        let length = if item.media.seconds > 0.0 {
            format!(
                " ({})",
                daz_feature_support::time::clock(item.media.seconds)
            )
        } else {
            String::new()
        };
        self.reply(
            &cmd,
            &format!(
                "Added “{}”{length} for {}.",
                text::fit(&item.media.title, 100),
                cmd.username
            ),
        )
    }

    /// A frame of ours failed (the server's `queueFail`, or the host could not send it).
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
            #[serde(default)]
            payload: serde_json::Value,
        }
        let Ok(r) = event.json::<Report>() else {
            return Ok(());
        };
        if r.original.event != "queue" {
            return Ok(());
        }
        let room = event
            .subject()
            .split('.')
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        let kind = r.original.payload["type"].as_str().unwrap_or_default();
        let id = r.original.payload["id"].as_str().unwrap_or_default();
        let st = self.room(&room);
        let Some(i) = st.pending.iter().position(|p| p.kind == kind && p.id == id) else {
            return Ok(());
        };
        let p = st.pending.remove(i);
        let reason = r.reason.strip_prefix("queueFail: ").unwrap_or(&r.reason);
        match p.cmd {
            Some(cmd) => self.reply(&cmd, &format!("The server did not add it: {reason}")),
            None => {
                self.host.log(
                    Level::Warn,
                    "the auto-DJ's item was refused",
                    &[
                        ("room", &room),
                        ("media", &format!("{kind}:{id}")),
                        ("reason", reason),
                    ],
                );
                Ok(())
            }
        }
    }

    /// Requests the server never answered: a locked playlist ignores them silently.
    fn tick(&mut self) -> Result<()> {
        self.store.flush();
        let now = self.host.now_ms();
        let mut late: Vec<(String, Pending)> = Vec::new();
        for (room, st) in &mut self.rooms {
            let (old, fresh): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut st.pending)
                .into_iter()
                .partition(|p| now - p.at_ms >= self.config.answer_ms);
            st.pending = fresh;
            late.extend(old.into_iter().map(|p| (room.clone(), p)));
        }
        for (room, p) in late {
            let locked = self.standing(&room).is_some_and(|s| s.locked);
            let why = if locked {
                "the playlist is locked and the server ignored my request without a word"
            } else {
                "the server ignored my request without a word"
            };
            match p.cmd {
                Some(cmd) => {
                    self.reply(&cmd, &format!("{}:{} was not added: {why}.", p.kind, p.id))?
                }
                None => self.host.log(
                    Level::Warn,
                    "the server ignored an auto-DJ item",
                    &[("room", &room), ("media", &format!("{}:{}", p.kind, p.id))],
                ),
            }
        }
        Ok(())
    }
}

impl Plugin for Playlist {
    const NAME: &'static str = "playlist";
    const DESCRIPTION: &'static str =
        "!add links, per-user limits, blacklist, !skip and !shuffle for moderators, auto-DJ";
    type Config = Config;
    type State = State;

    fn create(host: Host, config: Config, previous: Option<State>) -> Result<Self> {
        if config.max_per_user == 0
            || config.answer_ms <= 0
            || config.autodj_cooldown_ms < 0
            || !(1..=20).contains(&config.autodj_batch)
        {
            return Err(Error::config(
                "max_per_user and answer_ms must be above 0, autodj_batch 1–20, autodj_cooldown_ms not negative",
            ));
        }
        let mut global_blacklist = BTreeSet::new();
        for l in &config.blacklist {
            let m =
                link::parse(l).map_err(|e| Error::config(format!("blacklist entry {l:?}: {e}")))?;
            global_blacklist.insert(m.to_string());
        }
        let autodj_list = config
            .autodj_list
            .iter()
            .map(|l| {
                link::parse(l).map_err(|e| Error::config(format!("autodj_list entry {l:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let previous = previous.unwrap_or_default();
        for c in ["add", "skip", "shuffle", "blacklist"] {
            host.subscribe(&routing::subject(c))?;
        }
        for e in ["queue", "delete", "playlist", "setPlaylistMeta"] {
            host.subscribe(&format!("cytube.in.*.{e}"))?;
        }
        host.timer_every(
            TICK,
            &serde_json::json!({}),
            std::time::Duration::from_secs(1),
        )?;
        let store = Store::new(host.clone(), migrations(), 1_000, previous.pending);
        Ok(Playlist {
            host,
            config,
            global_blacklist,
            autodj_list,
            rooms: previous.rooms,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default()
            .command(CommandSpec {
                usage: "<link> [next]".to_owned(),
                aliases: vec!["queue".to_owned()],
                user_cooldown_ms: 2_000,
                ..CommandSpec::new(
                    "add",
                    "Add a video to the playlist (YouTube, Vimeo, Twitch, …)",
                )
            })
            .command(CommandSpec {
                user_cooldown_ms: 2_000,
                ..CommandSpec::new("skip", "Skip what plays (or vote to skip), for moderators")
            })
            .command(CommandSpec {
                user_cooldown_ms: 5_000,
                ..CommandSpec::new("shuffle", "Shuffle the playlist, for moderators")
            })
            .command(CommandSpec {
                usage: "[list | add <link> | remove <link>]".to_owned(),
                ..CommandSpec::new("blacklist", "Media the bot never queues, for moderators")
            })
    }

    fn examples() -> Vec<ChatExample> {
        // Run by a guest (rank 0): every command refuses before it needs the channel.
        vec![
            ChatExample::new("!add https://youtu.be/dQw4w9WgXcQ", "!add is for rank 1"),
            ChatExample::new("!skip", "!skip is for rank 2 (moderators)"),
            ChatExample::new("!shuffle", "!shuffle is for rank 2"),
            ChatExample::new("!blacklist", "!blacklist is for rank 2"),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        let subject = event.subject();
        if subject == TICK {
            return self.tick();
        }
        if routing::is_failure(event) {
            return self.failed(event);
        }
        if subject.starts_with(routing::SUBJECT_PREFIX) {
            let cmd = Command::from_event(event)?;
            return match cmd.command.as_str() {
                "add" => self.add(&cmd),
                "skip" => self.skip(&cmd),
                "shuffle" => self.shuffle(&cmd),
                "blacklist" => self.blacklist(&cmd),
                _ => Ok(()),
            };
        }
        let Some(room) = event.room().filter(|r| !r.is_empty()).map(str::to_owned) else {
            return Ok(());
        };
        match event.cytube_event()? {
            ServerEvent::Queue(q) => self.queued(&room, &q.item),
            ServerEvent::Delete(d) => {
                self.room(&room).owned.remove(&d.uid.0);
                Ok(())
            }
            ServerEvent::Playlist(items) => {
                let uids: BTreeSet<u64> = items.iter().map(|i| i.uid.0).collect();
                self.room(&room).owned.retain(|u, _| uids.contains(u));
                if items.is_empty() {
                    self.autodj(&room)?;
                }
                Ok(())
            }
            ServerEvent::SetPlaylistMeta(m) if m.count == 0 => self.autodj(&room),
            _ => Ok(()),
        }
    }

    fn export_state(&mut self) -> Result<Option<State>> {
        Ok(Some(State {
            rooms: self.rooms.clone(),
            pending: self.store.hand_over(),
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown();
        Ok(())
    }
}

export_plugin!(Playlist);

#[cfg(test)]
mod tests;
