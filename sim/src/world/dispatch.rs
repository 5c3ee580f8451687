//! Routes one incoming event to its handler.
//!
//! Identity events (`joinChannel`, `login`, `channelPassword`) work anywhere;
//! every other event is only heard once the socket is in a channel (the real
//! server registers those handlers on join). Events with a payload template are
//! type-checked first; a mismatch answers `errorMsg "Unexpected error for
//! message <ev>: <why>"` and goes no further.

use serde_json::Value;

use super::{JoinState, World};
use crate::json::{Field, J, obj, typecheck};

const TYPE_CHAT: &[Field] = &[("msg", "string", false), ("meta", "object", true)];
const TYPE_PM: &[Field] = &[
    ("msg", "string", false),
    ("to", "string", false),
    ("meta", "object", true),
];
const TYPE_QUEUE: &[Field] = &[
    ("id", "string", false),
    ("type", "string", false),
    ("pos", "string", false),
    ("title", "string", true),
    ("link", "string", true),
    ("temp", "boolean", true),
    ("duration", "number", true),
];
const TYPE_MOVE: &[Field] = &[("from", "number", false)];
const TYPE_SET_TEMP: &[Field] = &[("uid", "number", false), ("temp", "boolean", false)];
const TYPE_MEDIA_UPDATE: &[Field] = &[
    ("id", "string", false),
    ("currentTime", "number", false),
    ("paused", "boolean", true),
    ("type", "string", true),
];
const TYPE_ASSIGN_LEADER: &[Field] = &[("name", "string", false)];
const TYPE_NEW_POLL: &[Field] = &[
    ("title", "string", false),
    ("opts", "array", false),
    ("obscured", "boolean", false),
    ("timeout", "number", true),
];
const TYPE_VOTE: &[Field] = &[("option", "number", false)];
const TYPE_SET_RANK: &[Field] = &[("name", "string", false), ("rank", "number", false)];

impl World {
    /// Handles event `name` from socket `id`.
    pub fn on_event(&mut self, id: u64, name: &str, payload: Option<&Value>) {
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if !sock.sio_connected || sock.closed {
            return;
        }
        match name {
            "joinChannel" => return self.on_join_channel(id, payload),
            "login" => return self.on_login(id, payload),
            "channelPassword" => return self.on_channel_password(id, payload),
            _ => {}
        }
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if sock.join != JoinState::Joined {
            return;
        }
        let Some(ch) = sock.channel.clone() else {
            return;
        };
        let template = match name {
            "chatMsg" => Some(TYPE_CHAT),
            "pm" => Some(TYPE_PM),
            "queue" => Some(TYPE_QUEUE),
            "moveMedia" => Some(TYPE_MOVE),
            "setTemp" => Some(TYPE_SET_TEMP),
            "mediaUpdate" => Some(TYPE_MEDIA_UPDATE),
            "assignLeader" => Some(TYPE_ASSIGN_LEADER),
            "newPoll" => Some(TYPE_NEW_POLL),
            "vote" => Some(TYPE_VOTE),
            "setChannelRank" => Some(TYPE_SET_RANK),
            _ => None,
        };
        if let Some(template) = template {
            // Permission kicks come before the type check (assignLeader).
            if name == "assignLeader" {
                let rank = self.rank_of(id);
                if !self
                    .channels
                    .get(&ch)
                    .is_some_and(|c| c.can(rank, "leaderctl"))
                {
                    self.kick(id, "Attempted assignLeader with insufficient permission");
                    return;
                }
            }
            if let Err(why) = typecheck(payload, template) {
                self.emit(
                    id,
                    "errorMsg",
                    Some(&obj! { "msg" => format!("Unexpected error for message {name}: {why}") }),
                );
                return;
            }
        }
        let data = payload.cloned().unwrap_or(Value::Null);
        match name {
            "chatMsg" => self.on_chat(id, &ch, &data),
            "pm" => self.on_pm(id, &ch, &data),
            "queue" => self.on_queue(id, &ch, &data),
            "delete" => self.on_delete(id, &ch, payload),
            "moveMedia" => self.on_move_media(id, &ch, &data),
            "jumpTo" => self.on_jump_to(id, &ch, payload),
            "playNext" => self.on_play_next(id, &ch),
            "setTemp" => self.on_set_temp(id, &ch, &data),
            "shufflePlaylist" => self.on_shuffle(id, &ch),
            "clearPlaylist" => self.on_clear(id, &ch),
            "requestPlaylist" => self.on_request_playlist(id, &ch),
            "requestBanlist" => self.on_request_banlist(id, &ch),
            "unban" => self.on_unban(id, &ch, &data),
            "togglePlaylistLock" => self.on_toggle_lock(id, &ch),
            "mediaUpdate" => self.on_leader_media_update(id, &ch, &data),
            "playerReady" => self.on_player_ready(id, &ch),
            "assignLeader" => self.on_assign_leader(id, &ch, &data),
            "newPoll" => self.on_new_poll(id, &ch, &data),
            "vote" => self.on_vote(id, &ch, &data),
            "closePoll" => self.on_close_poll(id, &ch),
            "voteskip" => self.on_voteskip(id, &ch),
            "setChannelRank" => self.on_set_channel_rank(id, &ch, &data),
            "setMotd" => self.on_set_motd(id, &ch, payload),
            "setOptions" => self.on_set_options(id, &ch, payload),
            "setPermissions" => self.on_set_permissions(id, &ch, payload),
            "setChannelCSS" => self.on_set_css_js(id, &ch, payload, false),
            "setChannelJS" => self.on_set_css_js(id, &ch, payload, true),
            "requestChannelRanks" => self.on_request_ranks(id, &ch),
            _ => tracing::trace!(event = name, "event not simulated; ignored"),
        }
    }

    fn on_request_ranks(&mut self, id: u64, ch: &str) {
        if self.rank_of(id) < 3.0 {
            return;
        }
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.registered {
            return;
        }
        let mut ranks: Vec<(&String, &f64)> = c.ranks.iter().collect();
        ranks.sort_by(|a, b| a.0.cmp(b.0));
        let list = J::Arr(
            ranks
                .into_iter()
                .map(|(n, r)| obj! { "name" => n.as_str(), "rank" => *r })
                .collect(),
        );
        self.emit(id, "channelRanks", Some(&list));
    }
}
