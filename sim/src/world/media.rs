//! Playlist and playback: `queue` (permissions, queue limiter, fake metadata
//! lookup, duplicates), `delete`, `moveMedia`, `jumpTo`, `playNext`, `setTemp`,
//! shuffle/clear, `requestPlaylist`; the playback clock (3 s lead-in,
//! `mediaUpdate` every 5 ticks, next item 2 s after the end, temp items
//! removed after playing; none for live media without a length, which stay at
//! position 0); leader hand-over; polls and voteskip.

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use serde_json::Value;

use super::channel::{Item, Poll, is_live, media_link};
use super::{World, epoch_ms};
use crate::config::MediaSpec;
use crate::json::{J, obj};
use crate::text;
use daz_cytube_proto::flood::FloodParams;

/// `requestPlaylist` is allowed once per this interval per socket.
const PLAYLIST_REQUEST_INTERVAL: Duration = Duration::from_secs(60);

impl World {
    // -----------------------------------------------------------------
    // Playback
    // -----------------------------------------------------------------

    /// Makes `uid` the current item: `setCurrent`, `changeMedia` (lead-in at
    /// -3 s, paused), `drinkCount 0`, `voteskip` reset for those who see it.
    pub(super) fn start_item(&mut self, ch: &str, uid: u64) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if c.index_of(uid).is_none() {
            return;
        }
        c.current = Some(uid);
        c.time = -3.0;
        c.paused = true;
        c.counter = 0;
        c.last_update = Instant::now();
        c.skip_votes.clear();
        c.drink_count = 0;
        let change = c.change_media_json();
        let has_leader = c.leader.is_some();
        self.broadcast(ch, "setCurrent", Some(&J::from(uid)));
        if let Some(change) = change {
            self.broadcast(ch, "changeMedia", Some(&change));
        }
        self.broadcast(ch, "drinkCount", Some(&J::from(0u64)));
        self.send_voteskip(ch, 0, 0);
        if has_leader {
            self.stop_ticker(ch);
        } else {
            self.start_ticker(ch);
        }
    }

    /// `voteskip {count, need}` to everyone allowed to see it.
    fn send_voteskip(&mut self, ch: &str, count: usize, need: usize) {
        let payload = obj! { "count" => count, "need" => need };
        for u in self.members(ch) {
            let rank = self.rank_of(u);
            if self
                .channels
                .get(ch)
                .is_some_and(|c| c.can(rank, "viewvoteskip"))
            {
                self.emit(u, "voteskip", Some(&payload));
            }
        }
    }

    /// One playback step of `dt` media seconds (the real server's lead loop).
    pub(crate) fn tick(&mut self, ch: &str, dt: f64) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if c.current.is_none() || c.leader.is_some() {
            return;
        }
        let t = c.time;
        if t < 0.0 && t + dt >= 0.0 {
            // Lead-in over: playback starts.
            c.time = 0.0;
            c.paused = false;
            c.counter = 0;
            let update = c.media_update_json();
            self.broadcast(ch, "mediaUpdate", Some(&update));
            return;
        }
        let seconds = c.current_item().map_or(0, |i| i.media.seconds) as f64;
        if seconds <= 0.0 && t >= 0.0 {
            // Live media without a length: the server keeps no clock for them (their
            // position stays 0, no `mediaUpdate`), so every join gets `changeMedia` at
            // `currentTime` 0 again, as if the stream had just started.
            return;
        }
        c.time += dt;
        c.counter += 1;
        if seconds > 0.0 && c.time >= seconds + 2.0 {
            self.play_next(ch);
        } else if c.counter % 5 == 0 {
            let update = c.media_update_json();
            self.broadcast(ch, "mediaUpdate", Some(&update));
        }
    }

    /// Advances playback by `ms` media milliseconds in one-second steps.
    pub(crate) fn advance_playback(&mut self, ch: &str, ms: u64) {
        let mut left = ms as f64 / 1000.0;
        while left > 0.0 {
            let step = left.min(1.0);
            left -= step;
            self.tick(ch, step);
        }
        if let Some(c) = self.channels.get_mut(ch) {
            c.last_update = Instant::now();
        }
    }

    /// Plays the item after the current one (wrapping), removing the current
    /// one first if it is temporary.
    pub(super) fn play_next(&mut self, ch: &str) {
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if c.items.is_empty() {
            return;
        }
        let old = c.current;
        let old_idx = old.and_then(|u| c.index_of(u));
        let next = match old_idx {
            Some(i) => c.items[(i + 1) % c.items.len()].uid,
            None => c.items[0].uid,
        };
        let old_temp = old_idx.is_some_and(|i| c.items[i].temp);
        if let (Some(old_uid), true) = (old, old_temp) {
            self.remove_item(ch, old_uid);
            if next == old_uid {
                self.stop_playback(ch);
                return;
            }
        }
        self.start_item(ch, next);
    }

    fn stop_playback(&mut self, ch: &str) {
        if let Some(c) = self.channels.get_mut(ch) {
            c.current = None;
            c.time = 0.0;
            c.paused = true;
        }
        self.stop_ticker(ch);
    }

    /// Removes an item and tells everyone (`delete`, `setPlaylistMeta`); does
    /// not change what plays.
    fn remove_item(&mut self, ch: &str, uid: u64) -> bool {
        let Some(c) = self.channels.get_mut(ch) else {
            return false;
        };
        let Some(idx) = c.index_of(uid) else {
            return false;
        };
        c.items.remove(idx);
        let meta = c.playlist_meta();
        self.broadcast(ch, "delete", Some(&obj! { "uid" => uid }));
        self.broadcast(ch, "setPlaylistMeta", Some(&meta));
        true
    }

    /// Leader gone: playback resumes from where it stands.
    pub(super) fn resume_playback(&mut self, ch: &str) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if c.current.is_none() {
            return;
        }
        c.paused = false;
        c.counter = 0;
        let update = c.media_update_json();
        self.broadcast(ch, "mediaUpdate", Some(&update));
        self.start_ticker(ch);
    }

    // -----------------------------------------------------------------
    // Playlist edits
    // -----------------------------------------------------------------

    /// Resolves media the way a metadata lookup would, offline.
    fn resolve_media(&self, data: &Value) -> Result<MediaSpec, String> {
        let id = data.get("id").and_then(Value::as_str).unwrap_or_default();
        let ty = data.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some(known) = self
            .cfg
            .media
            .iter()
            .find(|m| m.id == id && m.media_type == ty)
        {
            return Ok(known.clone());
        }
        let duration = data
            .get("duration")
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d >= 0.0)
            .map_or(0, |d| d.floor() as u64);
        let title = data.get("title").and_then(Value::as_str);
        match ty {
            "yt" => Err(
                "The YouTube API now requires an API key.  Please see the documentation for youtube-v3-key in config.template.yaml"
                    .to_owned(),
            ),
            "tw" => Ok(MediaSpec::new(ty, id, format!("Twitch.tv - {id}"), duration)),
            "li" => Ok(MediaSpec::new(ty, id, format!("Livestream.com - {id}"), duration)),
            t if is_live(t) => Ok(MediaSpec::new(ty, id, title.unwrap_or(id), duration)),
            "fi" | "cm" => Ok(MediaSpec::new(ty, id, title.unwrap_or(id), duration)),
            _ => Err(format!("Media not found: {ty}:{id}")),
        }
    }

    fn queue_fail(&mut self, id: u64, msg: &str, data: &Value) {
        let mid = data.get("id").and_then(Value::as_str).unwrap_or_default();
        let ty = data.get("type").and_then(Value::as_str).unwrap_or_default();
        self.emit(
            id,
            "queueFail",
            Some(&obj! { "msg" => msg, "link" => media_link(ty, mid), "id" => mid }),
        );
    }

    pub(super) fn on_queue(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        let Some(queueby) = sock.name.clone() else {
            return;
        };
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let pos = data.get("pos").and_then(Value::as_str).unwrap_or_default();
        let ty = data.get("type").and_then(Value::as_str).unwrap_or_default();
        let allowed = match pos {
            "end" => c.can_playlist(rank, "playlistadd"),
            "next" => c.can_playlist(rank, "playlistnext"),
            _ => false,
        };
        // Unauthorized queueing is silently ignored (e.g. a locked playlist).
        if !allowed {
            return;
        }
        if is_live(ty) && !c.can(rank, "playlistaddlive") {
            return self.queue_fail(id, "You don't have permission to add live media", data);
        }
        if ty == "cm" && !c.can(rank, "playlistaddcustom") {
            return self.queue_fail(id, "You don't have permission to add custom embeds", data);
        }
        if ty == "fi" && !c.can(rank, "playlistaddrawfile") {
            return self.queue_fail(id, "You don't have permission to add raw video files", data);
        }
        let limit = FloodParams::queue_for_rank(rank);
        let now = self.now();
        if let Some(sock) = self.socks.get_mut(&id) {
            if sock.queue_limiter.try_acquire_with(&limit, now).is_err() {
                return self.queue_fail(id, "You are adding videos too quickly", data);
            }
        }
        let media = match self.resolve_media(data) {
            Ok(m) => m,
            Err(msg) => return self.queue_fail(id, &msg, data),
        };
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.opt_bool("allow_dupes")
            && c.items
                .iter()
                .any(|i| i.media.id == media.id && i.media.media_type == media.media_type)
        {
            return self.queue_fail(id, "This item is already on the playlist", data);
        }
        let maxlength = c.opt_f64("maxlength");
        if maxlength > 0.0 && media.seconds as f64 > maxlength && !c.can(rank, "exceedmaxlength") {
            let msg = format!(
                "Video exceeds the maximum length set by the channel admin: {}",
                text::format_time(maxlength as u64)
            );
            return self.queue_fail(id, &msg, data);
        }
        let temp = data.get("temp").and_then(Value::as_bool).unwrap_or(false)
            || !c.can(rank, "addnontemp");
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        let uid = c.next_uid;
        c.next_uid += 1;
        let item = Item {
            uid,
            media,
            temp,
            queueby,
        };
        let (index, after) = if pos == "next" {
            match c.current.and_then(|u| c.index_of(u)) {
                Some(i) => (i + 1, J::from(c.items[i].uid)),
                None => (0, J::from("prepend")),
            }
        } else {
            match c.items.last() {
                Some(last) => (c.items.len(), J::from(last.uid)),
                None => (0, J::from("prepend")),
            }
        };
        let item_json = item.to_json();
        c.items.insert(index, item);
        let meta = c.playlist_meta();
        let nothing_playing = c.current.is_none();
        self.broadcast(
            ch,
            "queue",
            Some(&obj! { "item" => item_json, "after" => after }),
        );
        self.broadcast(ch, "setPlaylistMeta", Some(&meta));
        if nothing_playing {
            self.start_item(ch, uid);
        }
    }

    pub(super) fn on_delete(&mut self, id: u64, ch: &str, payload: Option<&Value>) {
        let Some(uid) = payload.and_then(Value::as_u64) else {
            return;
        };
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can_playlist(rank, "playlistdelete") {
            return;
        }
        let Some(idx) = c.index_of(uid) else {
            return;
        };
        let was_current = c.current == Some(uid);
        let follower = (c.items.len() > 1).then(|| c.items[(idx + 1) % c.items.len()].uid);
        self.remove_item(ch, uid);
        if was_current {
            match follower {
                Some(next) => self.start_item(ch, next),
                None => self.stop_playback(ch),
            }
        }
    }

    pub(super) fn on_move_media(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if !c.can_playlist(rank, "playlistmove") {
            return;
        }
        let Some(from) = data.get("from").and_then(Value::as_u64) else {
            return;
        };
        let after = data.get("after");
        let Some(from_idx) = c.index_of(from) else {
            return;
        };
        let target = match after {
            Some(Value::String(s)) if s == "prepend" => Some(None),
            Some(Value::String(s)) if s == "append" => Some(Some(u64::MAX)),
            Some(Value::Number(n)) => n.as_u64().filter(|u| c.index_of(*u).is_some()).map(Some),
            _ => None,
        };
        let Some(target) = target else {
            return;
        };
        if target == Some(from) {
            return;
        }
        let item = c.items.remove(from_idx);
        let insert_at = match target {
            None => 0,
            Some(u64::MAX) => c.items.len(),
            Some(uid) => c.index_of(uid).map_or(c.items.len(), |i| i + 1),
        };
        c.items.insert(insert_at, item);
        let echo = obj! { "from" => from, "after" => after.map(J::from).unwrap_or(J::Null) };
        self.broadcast(ch, "moveVideo", Some(&echo));
    }

    pub(super) fn on_jump_to(&mut self, id: u64, ch: &str, payload: Option<&Value>) {
        let Some(uid) = payload.and_then(Value::as_u64) else {
            return;
        };
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can_playlist(rank, "playlistjump") || c.index_of(uid).is_none() {
            return;
        }
        let old = c.current;
        let old_temp = old
            .and_then(|u| c.index_of(u))
            .is_some_and(|i| c.items[i].temp);
        if let (Some(old_uid), true) = (old, old_temp) {
            if old_uid != uid {
                self.remove_item(ch, old_uid);
            }
        }
        self.start_item(ch, uid);
    }

    pub(super) fn on_play_next(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        if self
            .channels
            .get(ch)
            .is_some_and(|c| c.can_playlist(rank, "playlistjump"))
        {
            self.play_next(ch);
        }
    }

    pub(super) fn on_set_temp(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        let (Some(uid), Some(temp)) = (
            data.get("uid").and_then(Value::as_u64),
            data.get("temp").and_then(Value::as_bool),
        ) else {
            return;
        };
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if !c.can(rank, "settemp") {
            return;
        }
        let Some(idx) = c.index_of(uid) else {
            return;
        };
        c.items[idx].temp = temp;
        self.broadcast(ch, "setTemp", Some(&obj! { "uid" => uid, "temp" => temp }));
    }

    pub(super) fn on_shuffle(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if !c.can(rank, "playlistshuffle") || c.items.is_empty() {
            return;
        }
        c.items.shuffle(&mut rand::rng());
        let list = c.playlist_json();
        let first = c.items[0].uid;
        self.broadcast(ch, "playlist", Some(&list));
        self.start_item(ch, first);
    }

    pub(super) fn on_clear(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if !c.can(rank, "playlistclear") {
            return;
        }
        c.items.clear();
        let meta = c.playlist_meta();
        self.stop_playback(ch);
        self.broadcast(ch, "playlist", Some(&J::Arr(Vec::new())));
        self.broadcast(ch, "setPlaylistMeta", Some(&meta));
    }

    pub(super) fn on_request_playlist(&mut self, id: u64, ch: &str) {
        let now = self.now();
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock
            .last_playlist_request
            .is_some_and(|last| now.saturating_duration_since(last) < PLAYLIST_REQUEST_INTERVAL)
        {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! {
                    "msg" => "Get Playlist URLs is limited to 1 usage every 60 seconds.  Please try again later.",
                    "code" => "REQ_PLAYLIST_LIMIT_REACHED",
                }),
            );
            return;
        }
        sock.last_playlist_request = Some(now);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let list = J::Arr(
            c.items
                .iter()
                .map(|i| {
                    obj! {
                        "title" => i.media.title.as_str(),
                        "type" => i.media.media_type.as_str(),
                        "id" => i.media.id.as_str(),
                    }
                })
                .collect(),
        );
        self.emit(id, "playlist", Some(&list));
    }

    pub(super) fn on_toggle_lock(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if !c.can(rank, "playlistlock") {
            return;
        }
        c.locked = !c.locked;
        let locked = c.locked;
        self.broadcast(ch, "setPlaylistLocked", Some(&J::Bool(locked)));
    }

    /// A leader's `mediaUpdate`: ignored for live media (as on the real server),
    /// else stored and relayed to everyone else.
    pub(super) fn on_leader_media_update(&mut self, id: u64, ch: &str, data: &Value) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if c.leader != Some(id) {
            return;
        }
        let Some(item) = c.current_item() else {
            return;
        };
        if is_live(&item.media.media_type)
            || data.get("id").and_then(Value::as_str) != Some(item.media.id.as_str())
        {
            return;
        }
        let Some(t) = data.get("currentTime").and_then(Value::as_f64) else {
            return;
        };
        c.time = t;
        c.paused = data.get("paused").and_then(Value::as_bool).unwrap_or(false);
        let update = c.media_update_json();
        for u in self.members(ch) {
            if u != id {
                self.emit(u, "mediaUpdate", Some(&update));
            }
        }
    }

    pub(super) fn on_player_ready(&mut self, id: u64, ch: &str) {
        let change = self.channels.get(ch).and_then(|c| c.change_media_json());
        if let Some(change) = change {
            self.emit(id, "changeMedia", Some(&change));
        }
    }

    // -----------------------------------------------------------------
    // Leader
    // -----------------------------------------------------------------

    pub(super) fn on_assign_leader(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        if !self
            .channels
            .get(ch)
            .is_some_and(|c| c.can(rank, "leaderctl"))
        {
            self.kick(id, "Attempted assignLeader with insufficient permission");
            return;
        }
        let name = data.get("name").and_then(Value::as_str).unwrap_or_default();
        let old = self.channels.get(ch).and_then(|c| c.leader);
        if name.is_empty() {
            if let Some(old) = old {
                self.drop_leader(ch, old);
                self.broadcast(ch, "setLeader", Some(&J::from("")));
                self.resume_playback(ch);
            }
            return;
        }
        let Some(target) = self.find_user(ch, name) else {
            return;
        };
        if old == Some(target) {
            return;
        }
        if let Some(old) = old {
            self.drop_leader(ch, old);
        }
        let before = self.rank_of(target);
        if let Some(c) = self.channels.get_mut(ch) {
            c.leader = Some(target);
        }
        self.stop_ticker(ch);
        let after = self.rank_of(target);
        if after != before {
            self.emit(target, "rank", Some(&J::Num(after)));
        }
        let tname = self
            .socks
            .get(&target)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.broadcast(ch, "setLeader", Some(&J::from(tname.as_str())));
        self.broadcast(
            ch,
            "setUserRank",
            Some(&obj! { "name" => tname, "rank" => after }),
        );
    }

    /// Takes leadership away: `rank` to the old leader if it changes, then
    /// `setUserRank` to everyone.
    fn drop_leader(&mut self, ch: &str, old: u64) {
        let before = self.rank_of(old);
        if let Some(c) = self.channels.get_mut(ch) {
            c.leader = None;
        }
        let after = self.rank_of(old);
        if after != before {
            self.emit(old, "rank", Some(&J::Num(after)));
        }
        let name = self
            .socks
            .get(&old)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.broadcast(
            ch,
            "setUserRank",
            Some(&obj! { "name" => name, "rank" => after }),
        );
    }

    // -----------------------------------------------------------------
    // Polls and voteskip
    // -----------------------------------------------------------------

    pub(super) fn on_new_poll(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "pollctl") {
            return;
        }
        let timeout = data.get("timeout").and_then(Value::as_f64);
        if let Some(t) = timeout {
            if !(1.0..=86400.0).contains(&t) {
                self.emit(
                    id,
                    "errorMsg",
                    Some(&obj! { "msg" => "Poll timeout must be between 1 and 86400 seconds" }),
                );
                return;
            }
        }
        let title = data
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let options: Vec<String> = data
            .get("opts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|o| match o {
                        Value::String(s) => text::escape_text(text::truncate_utf16(s, 255)),
                        other => other.to_string(),
                    })
                    .take(50)
                    .collect()
            })
            .unwrap_or_default();
        let initiator = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if self.channels.get(ch).is_some_and(|c| c.poll.is_some()) {
            self.close_poll(ch);
        }
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        c.poll_serial += 1;
        let serial = c.poll_serial;
        c.poll = Some(Poll {
            title: text::escape_text(text::truncate_utf16(title, 255)),
            counts: vec![0; options.len()],
            options,
            initiator,
            timestamp: epoch_ms(),
            obscured: data
                .get("obscured")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            votes: Default::default(),
            serial,
        });
        self.send_poll(ch, "newPoll");
        if let Some(t) = timeout {
            let name = ch.to_owned();
            self.schedule(Duration::from_secs_f64(t), move |w| {
                if w.channels
                    .get(&name)
                    .and_then(|c| c.poll.as_ref())
                    .is_some_and(|p| p.serial == serial)
                {
                    w.close_poll(&name);
                }
            });
        }
    }

    fn send_poll(&mut self, ch: &str, event: &str) {
        self.broadcast_with(ch, event, |w, viewer| {
            let c = w.channels.get(ch)?;
            let poll = c.poll.as_ref()?;
            Some(poll.to_json(c.can(w.rank_of(viewer), "viewhiddenpoll")))
        });
    }

    fn close_poll(&mut self, ch: &str) {
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if c.poll.take().is_none() {
            return;
        }
        // The real server emits closePoll with an undefined argument, which
        // goes on the wire as null.
        self.broadcast(ch, "closePoll", Some(&J::Null));
    }

    pub(super) fn on_close_poll(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        if self
            .channels
            .get(ch)
            .is_some_and(|c| c.can(rank, "pollctl") && c.poll.is_some())
        {
            self.close_poll(ch);
        }
    }

    pub(super) fn on_vote(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        let Some(option) = data.get("option").and_then(Value::as_u64) else {
            return;
        };
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        let can_vote = c.can(rank, "pollvote");
        let Some(poll) = c.poll.as_mut() else {
            return;
        };
        let option = option as usize;
        if !can_vote || option >= poll.options.len() {
            return;
        }
        if let Some(prev) = poll.votes.insert(id, option) {
            poll.counts[prev] = poll.counts[prev].saturating_sub(1);
        }
        poll.counts[option] += 1;
        self.send_poll(ch, "updatePoll");
    }

    pub(super) fn on_voteskip(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.opt_bool("allow_voteskip") || !c.can(rank, "voteskip") || c.current.is_none() {
            return;
        }
        if self.socks.get(&id).is_some_and(|s| s.afk) {
            return;
        }
        let ratio = c.opt_f64("voteskip_ratio");
        let eligible = c
            .users
            .iter()
            .filter(|u| {
                self.socks.get(u).is_some_and(|s| !s.afk) && c.can(self.rank_of(**u), "voteskip")
            })
            .count();
        let need = (ratio * eligible as f64).ceil() as usize;
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        c.skip_votes.insert(id);
        let count = c.skip_votes.len();
        self.send_voteskip(ch, count, need);
        if count >= need {
            self.play_next(ch);
        }
    }
}
