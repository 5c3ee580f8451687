//! One channel's state: options, permissions, MOTD, CSS/JS, chat backlog, the
//! playlist and playback clock, poll, leader, mutes and who is in it.
//!
//! Invariants:
//! - `users` holds socket ids in join order, anonymous sockets included (they
//!   count in `usercount` but never appear in `userlist`).
//! - `opts` is always a [`J::Obj`] with the real server's keys in the real order.
//! - Playlist positions are uids; `items` is kept in playlist order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use serde_json::Value;

use crate::config::{ChannelConfig, MediaSpec};
use crate::json::{J, obj};
use crate::text;

/// Permission thresholds of a registered channel, in the order the server sends them.
const REGISTERED_PERMS: &[(&str, f64)] = &[
    ("seeplaylist", -1.0),
    ("playlistadd", 1.5),
    ("playlistnext", 1.5),
    ("playlistmove", 1.5),
    ("playlistdelete", 2.0),
    ("playlistjump", 1.5),
    ("playlistaddlist", 1.5),
    ("oplaylistadd", -1.0),
    ("oplaylistnext", 1.5),
    ("oplaylistmove", 1.5),
    ("oplaylistdelete", 2.0),
    ("oplaylistjump", 1.5),
    ("oplaylistaddlist", 1.5),
    ("playlistaddcustom", 3.0),
    ("playlistaddrawfile", 2.0),
    ("playlistaddlive", 1.5),
    ("exceedmaxlength", 2.0),
    ("addnontemp", 2.0),
    ("settemp", 2.0),
    ("playlistshuffle", 2.0),
    ("playlistclear", 2.0),
    ("pollctl", 1.5),
    ("pollvote", -1.0),
    ("viewhiddenpoll", 1.5),
    ("voteskip", -1.0),
    ("viewvoteskip", 1.5),
    ("mute", 1.5),
    ("kick", 1.5),
    ("ban", 2.0),
    ("motdedit", 3.0),
    ("filteredit", 3.0),
    ("filterimport", 3.0),
    ("emoteedit", 3.0),
    ("emoteimport", 3.0),
    ("playlistlock", 2.0),
    ("leaderctl", 2.0),
    ("drink", 1.5),
    ("chat", 0.0),
    ("chatclear", 2.0),
    ("exceedmaxitems", 2.0),
    ("deletefromchannellib", 2.0),
    ("exceedmaxdurationperuser", 2.0),
];

/// Permission thresholds of an unregistered channel (no mute/kick/ban/MOTD).
const UNREGISTERED_PERMS: &[(&str, f64)] = &[
    ("seeplaylist", -1.0),
    ("playlistadd", -1.0),
    ("playlistnext", 0.0),
    ("playlistmove", 0.0),
    ("playlistdelete", 0.0),
    ("playlistjump", 0.0),
    ("playlistaddlist", 0.0),
    ("oplaylistadd", -1.0),
    ("oplaylistnext", 0.0),
    ("oplaylistmove", 0.0),
    ("oplaylistdelete", 0.0),
    ("oplaylistjump", 0.0),
    ("oplaylistaddlist", 0.0),
    ("playlistaddcustom", 0.0),
    ("playlistaddlive", 0.0),
    ("exceedmaxlength", 0.0),
    ("addnontemp", 0.0),
    ("settemp", 0.0),
    ("playlistshuffle", 0.0),
    ("playlistclear", 0.0),
    ("pollctl", 0.0),
    ("pollvote", -1.0),
    ("viewhiddenpoll", 1.5),
    ("voteskip", -1.0),
    ("viewvoteskip", 1.5),
    ("playlistlock", 2.0),
    ("leaderctl", 0.0),
    ("drink", 0.0),
    ("chat", 0.0),
    ("chatclear", 2.0),
    ("exceedmaxitems", 2.0),
    ("deletefromchannellib", 2.0),
];

/// The default `channelOpts`, in the server's key order.
fn default_opts(name: &str) -> J {
    obj! {
        "allow_voteskip" => true,
        "voteskip_ratio" => 0.5,
        "afk_timeout" => 600i64,
        "pagetitle" => name,
        "maxlength" => 0i64,
        "externalcss" => "",
        "externaljs" => "",
        "chat_antiflood" => false,
        "chat_antiflood_params" => obj! { "burst" => 4i64, "sustained" => 1i64, "cooldown" => 4i64 },
        "show_public" => false,
        "enable_link_regex" => true,
        "password" => false,
        "allow_dupes" => false,
        "torbanned" => false,
        "block_anonymous_users" => false,
        "allow_ascii_control" => false,
        "playlist_max_per_user" => 0i64,
        "new_user_chat_delay" => 0i64,
        "new_user_chat_link_delay" => 0i64,
        "playlist_max_duration_per_user" => 0i64,
    }
}

/// A playlist entry.
#[derive(Debug, Clone)]
pub struct Item {
    pub uid: u64,
    pub media: MediaSpec,
    pub temp: bool,
    pub queueby: String,
}

impl Item {
    /// `{id,title,seconds,duration,type,meta}`.
    pub fn media_json(&self) -> J {
        obj! {
            "id" => self.media.id.as_str(),
            "title" => self.media.title.as_str(),
            "seconds" => self.media.seconds,
            "duration" => text::format_time(self.media.seconds),
            "type" => self.media.media_type.as_str(),
            "meta" => J::empty_obj(),
        }
    }

    /// `{media,uid,temp,queueby}`.
    pub fn to_json(&self) -> J {
        obj! {
            "media" => self.media_json(),
            "uid" => self.uid,
            "temp" => self.temp,
            "queueby" => self.queueby.as_str(),
        }
    }
}

/// An open poll.
#[derive(Debug, Clone)]
pub struct Poll {
    pub title: String,
    pub options: Vec<String>,
    pub counts: Vec<u64>,
    pub initiator: String,
    pub timestamp: u64,
    pub obscured: bool,
    /// Socket id → option voted for.
    pub votes: HashMap<u64, usize>,
    /// Bumped per poll so a timeout of an older poll does not close a newer one.
    pub serial: u64,
}

impl Poll {
    /// The payload of `newPoll`/`updatePoll`; obscured counts read `"?"` for
    /// users who may not see hidden polls.
    pub fn to_json(&self, see_hidden: bool) -> J {
        let counts = if self.obscured && !see_hidden {
            self.counts.iter().map(|_| J::from("?")).collect()
        } else {
            self.counts.iter().map(|c| J::from(*c)).collect()
        };
        obj! {
            "title" => self.title.as_str(),
            "options" => J::Arr(self.options.iter().map(J::from).collect()),
            "counts" => J::Arr(counts),
            "initiator" => self.initiator.as_str(),
            "timestamp" => self.timestamp,
        }
    }
}

/// Lodash-style throttle state of `usercount`: leading edge, then one trailing
/// send at the end of the window.
#[derive(Debug, Clone, Default)]
pub struct UsercountThrottle {
    pub last_sent: Option<Instant>,
    pub trailing_scheduled: bool,
}

/// Channel state.
#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub registered: bool,
    pub opts: J,
    pub perms: Vec<(String, f64)>,
    pub motd: String,
    pub css: String,
    pub js: String,
    pub drink_count: u64,
    pub backlog: VecDeque<J>,
    /// Sockets in the channel, join order.
    pub users: Vec<u64>,
    /// Sockets waiting on the channel password (they keep the channel alive).
    pub pending: Vec<u64>,
    /// Channel ranks by lowercase name.
    pub ranks: HashMap<String, f64>,
    /// Muted names (lowercase).
    pub muted: HashSet<String>,
    /// Shadow-muted names (lowercase).
    pub smuted: HashSet<String>,
    /// Name bans, in the order they were made.
    pub bans: Vec<Ban>,
    /// Next ban id.
    pub next_ban_id: u64,
    pub items: Vec<Item>,
    pub next_uid: u64,
    pub current: Option<u64>,
    /// Playback position of the current item in seconds (negative = lead-in).
    pub time: f64,
    pub paused: bool,
    /// When `time` was last advanced by the server clock.
    pub last_update: Instant,
    /// Ticks since playback started (every fifth sends `mediaUpdate`).
    pub counter: u64,
    /// Bumped whenever the playback ticker must restart; stale tickers exit.
    pub playback_epoch: u64,
    pub locked: bool,
    pub leader: Option<u64>,
    pub poll: Option<Poll>,
    pub poll_serial: u64,
    /// Sockets that voted to skip the current item.
    pub skip_votes: HashSet<u64>,
    pub usercount: UsercountThrottle,
}

/// A name ban (`/ban name reason`).
#[derive(Debug, Clone)]
pub struct Ban {
    pub id: u64,
    /// As typed by the moderator's target (display case).
    pub name: String,
    pub reason: String,
    pub banned_by: String,
}

impl Channel {
    /// Whether `name` is banned here.
    pub fn is_banned(&self, name: &str) -> bool {
        self.bans.iter().any(|b| b.name.eq_ignore_ascii_case(name))
    }

    /// Builds a channel from its config (or defaults for a name nobody configured).
    pub fn new(name: &str, cfg: Option<&ChannelConfig>, now: Instant) -> Self {
        let registered = cfg.is_some_and(|c| c.registered);
        let base = if registered {
            REGISTERED_PERMS
        } else {
            UNREGISTERED_PERMS
        };
        let mut ch = Channel {
            name: name.to_owned(),
            registered,
            opts: default_opts(name),
            perms: base.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            motd: String::new(),
            css: String::new(),
            js: String::new(),
            drink_count: 0,
            backlog: VecDeque::new(),
            users: Vec::new(),
            pending: Vec::new(),
            ranks: HashMap::new(),
            muted: HashSet::new(),
            smuted: HashSet::new(),
            bans: Vec::new(),
            next_ban_id: 1,
            items: Vec::new(),
            next_uid: 0,
            current: None,
            time: 0.0,
            paused: true,
            last_update: now,
            counter: 0,
            playback_epoch: 0,
            locked: registered,
            leader: None,
            poll: None,
            poll_serial: 0,
            skip_votes: HashSet::new(),
            usercount: UsercountThrottle::default(),
        };
        if let Some(cfg) = cfg {
            ch.merge_opts(&cfg.opts);
            if let Some(pw) = &cfg.password {
                ch.merge_opts(&serde_json::json!({ "password": pw }));
            }
            ch.merge_perms(&cfg.permissions);
            ch.motd = text::sanitize_html(&cfg.motd);
            for (who, rank) in &cfg.ranks {
                ch.ranks.insert(who.to_lowercase(), *rank);
            }
            for media in &cfg.playlist {
                let uid = ch.next_uid;
                ch.next_uid += 1;
                ch.items.push(Item {
                    uid,
                    media: media.clone(),
                    temp: false,
                    queueby: String::new(),
                });
            }
        }
        ch
    }

    /// Merges `setOptions`-style overrides: known keys only, each with the
    /// type it already has; numbers are clamped like the real server does.
    pub fn merge_opts(&mut self, overrides: &Value) {
        let Value::Object(map) = overrides else {
            return;
        };
        for (key, value) in map {
            let Some(slot) = self.opts.get_mut(key) else {
                continue;
            };
            match (key.as_str(), value) {
                ("password", Value::String(pw)) => {
                    *slot = if pw.is_empty() {
                        J::Bool(false)
                    } else {
                        J::Str(pw.chars().take(100).collect())
                    };
                }
                ("password", Value::Bool(false)) => *slot = J::Bool(false),
                ("chat_antiflood_params", Value::Object(p)) => {
                    let get = |k: &str| p.get(k).and_then(Value::as_f64);
                    if let (Some(b), Some(s)) = (get("burst"), get("sustained")) {
                        let burst = b.clamp(0.0, 20.0).floor();
                        let sustained = s.clamp(0.0, 10.0);
                        if sustained > 0.0 {
                            let cooldown = (burst / sustained).ceil();
                            *slot = obj! { "burst" => burst, "sustained" => sustained, "cooldown" => cooldown };
                        }
                    }
                }
                ("afk_timeout", Value::Number(n)) => {
                    *slot = J::Num(n.as_f64().unwrap_or(0.0).clamp(0.0, 86400.0));
                }
                ("pagetitle", Value::String(s)) => *slot = J::Str(s.chars().take(100).collect()),
                (_, Value::Bool(b)) if matches!(slot, J::Bool(_)) => *slot = J::Bool(*b),
                (_, Value::Number(n)) if matches!(slot, J::Num(_)) => {
                    *slot = J::Num(n.as_f64().unwrap_or(0.0).max(0.0));
                }
                (_, Value::String(s)) if matches!(slot, J::Str(_)) => *slot = J::Str(s.clone()),
                _ => {}
            }
        }
    }

    /// Merges permission overrides (numbers only, known keys only).
    pub fn merge_perms(&mut self, overrides: &Value) {
        let Value::Object(map) = overrides else {
            return;
        };
        for (key, value) in map {
            if let (Some(slot), Some(n)) = (
                self.perms.iter_mut().find(|(k, _)| k == key),
                value.as_f64(),
            ) {
                slot.1 = n;
            }
        }
    }

    /// The threshold of permission `key`; absent permissions allow nobody.
    pub fn perm(&self, key: &str) -> f64 {
        self.perms
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::INFINITY, |(_, v)| *v)
    }

    /// Whether `rank` meets permission `key`.
    pub fn can(&self, rank: f64, key: &str) -> bool {
        rank >= self.perm(key)
    }

    /// Playlist actions: the locked variant, or either variant when open.
    pub fn can_playlist(&self, rank: f64, key: &str) -> bool {
        if self.locked {
            self.can(rank, key)
        } else {
            self.can(rank, key) || self.can(rank, &format!("o{key}"))
        }
    }

    /// `setPermissions` payload.
    pub fn perms_json(&self) -> J {
        J::Obj(
            self.perms
                .iter()
                .map(|(k, v)| (k.clone(), J::Num(*v)))
                .collect(),
        )
    }

    pub fn opt_bool(&self, key: &str) -> bool {
        self.opts.get(key).and_then(J::as_bool).unwrap_or(false)
    }

    pub fn opt_f64(&self, key: &str) -> f64 {
        self.opts.get(key).and_then(J::as_f64).unwrap_or(0.0)
    }

    /// The channel password, if one is set.
    pub fn password(&self) -> Option<String> {
        self.opts
            .get("password")
            .and_then(J::as_str)
            .map(str::to_owned)
    }

    /// `channelCSSJS` payload.
    pub fn css_js_json(&self) -> J {
        obj! {
            "css" => self.css.as_str(),
            "cssHash" => text::content_hash(&self.css),
            "js" => self.js.as_str(),
            "jsHash" => text::content_hash(&self.js),
        }
    }

    /// `setPlaylistMeta` payload.
    pub fn playlist_meta(&self) -> J {
        let raw: u64 = self.items.iter().map(|i| i.media.seconds).sum();
        obj! { "count" => self.items.len(), "rawTime" => raw, "time" => text::format_time(raw) }
    }

    /// `playlist` payload.
    pub fn playlist_json(&self) -> J {
        J::Arr(self.items.iter().map(Item::to_json).collect())
    }

    pub fn index_of(&self, uid: u64) -> Option<usize> {
        self.items.iter().position(|i| i.uid == uid)
    }

    pub fn current_item(&self) -> Option<&Item> {
        self.current
            .and_then(|uid| self.index_of(uid))
            .map(|i| &self.items[i])
    }

    /// `changeMedia` payload for the current item.
    pub fn change_media_json(&self) -> Option<J> {
        let item = self.current_item()?;
        let mut j = item.media_json();
        j.set("currentTime", self.time);
        j.set("paused", self.paused);
        Some(j)
    }

    /// `mediaUpdate` payload.
    pub fn media_update_json(&self) -> J {
        obj! { "currentTime" => self.time, "paused" => self.paused }
    }

    /// Channel rank of a registered user (accounts default to 1 in a channel).
    pub fn rank_of(&self, lower_name: &str) -> f64 {
        self.ranks.get(lower_name).copied().unwrap_or(1.0)
    }
}

/// Media types that are live streams (the leader cannot seek them; their
/// `duration` comes from the client).
pub fn is_live(media_type: &str) -> bool {
    matches!(
        media_type,
        "li" | "tw" | "us" | "rt" | "cu" | "hb" | "hl" | "jw" | "im" | "tc"
    )
}

/// A link to the media as the server formats it in `queueFail`.
pub fn media_link(media_type: &str, id: &str) -> Option<String> {
    Some(match media_type {
        "yt" => format!("https://youtu.be/{id}"),
        "vi" => format!("https://vimeo.com/{id}"),
        "dm" => format!("https://dailymotion.com/video/{id}"),
        "tw" => format!("https://twitch.tv/{id}"),
        "li" => format!("https://livestream.com/{id}"),
        "sc" | "fi" | "hl" | "rt" | "cm" => id.to_owned(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_opts_match_the_capture() {
        let ch = Channel::new(
            "botchan",
            Some(&ChannelConfig::registered("botchan")),
            Instant::now(),
        );
        assert_eq!(
            ch.opts.to_json(),
            r#"{"allow_voteskip":true,"voteskip_ratio":0.5,"afk_timeout":600,"pagetitle":"botchan","maxlength":0,"externalcss":"","externaljs":"","chat_antiflood":false,"chat_antiflood_params":{"burst":4,"sustained":1,"cooldown":4},"show_public":false,"enable_link_regex":true,"password":false,"allow_dupes":false,"torbanned":false,"block_anonymous_users":false,"allow_ascii_control":false,"playlist_max_per_user":0,"new_user_chat_delay":0,"new_user_chat_link_delay":0,"playlist_max_duration_per_user":0}"#
        );
        assert!(ch.locked);
        assert_eq!(ch.perm("motdedit"), 3.0);
    }

    #[test]
    fn unregistered_channels_lack_moderation_permissions() {
        let ch = Channel::new("guestchan", None, Instant::now());
        assert!(!ch.locked);
        assert!(!ch.can(255.0, "kick"));
        assert!(ch.can_playlist(0.0, "playlistadd"));
        assert!(
            ch.perms_json()
                .to_json()
                .starts_with(r#"{"seeplaylist":-1,"playlistadd":-1,"playlistnext":0,"#)
        );
    }

    #[test]
    fn options_merge_by_type() {
        let mut ch = Channel::new("c", None, Instant::now());
        ch.merge_opts(&serde_json::json!({
            "chat_antiflood": true, "password": "sekrit", "unknown": 1,
            "new_user_chat_delay": 86400, "allow_dupes": "yes"
        }));
        assert!(ch.opt_bool("chat_antiflood"));
        assert_eq!(ch.password().as_deref(), Some("sekrit"));
        assert_eq!(ch.opt_f64("new_user_chat_delay"), 86400.0);
        assert!(!ch.opt_bool("allow_dupes"));
        ch.merge_opts(&serde_json::json!({ "password": "" }));
        assert_eq!(ch.password(), None);
    }
}
