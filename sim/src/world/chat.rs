//! Chat: `chatMsg` (sanitizing, flood control, new-user delay, commands,
//! mutes, the 15-message backlog), `pm`, AFK.
//!
//! Order of checks follows the real server: chat permission, 320-unit cut,
//! control characters, blank messages, anonymous sockets (dropped silently),
//! new-account delay (`spamFiltered`), then per message: AFK cleared, flood
//! limiter (`cooldown`), greentext, commands, shadow mute / mute (`noflood`),
//! broadcast. `/me` runs the pipeline again on its argument, so it costs two
//! limiter tokens, as on the real server.

use serde_json::Value;

use super::{World, epoch_ms};
use crate::json::{J, obj};
use crate::text;
use daz_cytube_proto::events::AntifloodParams;
use daz_cytube_proto::flood::FloodParams;

/// Backlog length sent to joiners.
const BACKLOG: usize = 15;

impl World {
    pub(super) fn on_chat(&mut self, id: u64, ch: &str, payload: &Value) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "chat") {
            return;
        }
        let raw = payload
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut msg = text::truncate_utf16(raw, text::MAX_CHAT_UNITS).to_owned();
        if !c.opt_bool("allow_ascii_control") {
            msg = text::strip_control(&msg);
        }
        if msg.trim().is_empty() {
            return;
        }
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if sock.name.is_none() {
            return;
        }
        let mut meta = J::empty_obj();
        if rank >= 2.0 {
            if let Some(flair) = payload
                .get("meta")
                .and_then(|m| m.get("modflair"))
                .and_then(Value::as_f64)
            {
                if flair == rank {
                    meta.set("modflair", flair);
                }
            }
        }
        // New-account restriction (rank < 2).
        if rank < 2.0 {
            let age = self
                .now()
                .saturating_duration_since(sock.first_seen)
                .as_secs_f64();
            let delay = c.opt_f64("new_user_chat_delay");
            let link_delay = c.opt_f64("new_user_chat_link_delay");
            if delay > 0.0 && age < delay {
                self.emit(
                    id,
                    "spamFiltered",
                    Some(&obj! { "reason" => "NEW_USER_CHAT" }),
                );
                return;
            }
            if link_delay > 0.0 && age < link_delay && text::has_link(&msg) {
                self.emit(
                    id,
                    "spamFiltered",
                    Some(&obj! { "reason" => "NEW_USER_CHAT_LINK" }),
                );
                return;
            }
        }
        self.process_chat(id, ch, &msg, meta);
    }

    fn process_chat(&mut self, id: u64, ch: &str, msg: &str, mut meta: J) {
        if !msg.contains("/afk") {
            self.set_afk(id, ch, false);
        }
        let rank = self.rank_of(id);
        let now = self.now();
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let params = if c.opt_bool("chat_antiflood") && rank < 2.0 {
            let p = c.opts.get("chat_antiflood_params");
            let get = |k: &str| p.and_then(|p| p.get(k)).and_then(J::as_f64);
            match (get("burst"), get("sustained"), get("cooldown")) {
                (Some(burst), Some(sustained), Some(cooldown)) if sustained > 0.0 => {
                    FloodParams::from_antiflood(&AntifloodParams {
                        burst: burst.max(0.0) as u64,
                        sustained,
                        cooldown,
                    })
                }
                _ => FloodParams::CHAT,
            }
        } else {
            self.cfg.chat_floor
        };
        let convert_links = c.opt_bool("enable_link_regex");
        let lower = self
            .socks
            .get(&id)
            .and_then(|s| s.lower_name())
            .unwrap_or_default();
        let smuted = c.smuted.contains(&lower);
        let muted = c.muted.contains(&lower);
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.chat_limiter.try_acquire_with(&params, now).is_err() {
            self.emit(id, "cooldown", Some(&J::from(params.server_cooldown_ms())));
            return;
        }
        let name = sock.name.clone().unwrap_or_default();
        if msg.starts_with('>') {
            meta.set("addClass", "greentext");
        }
        if let Some(rest) = msg.strip_prefix('/') {
            let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
            if self.chat_command(id, ch, cmd, args, msg, meta.clone()) {
                return;
            }
        }
        let payload = obj! {
            "username" => name,
            "msg" => text::format_chat(msg, convert_links),
            "meta" => meta,
            "time" => epoch_ms(),
        };
        if smuted {
            // Seen by shadow-muted users and, flagged, by moderators.
            let smuted_ids: Vec<u64> = self
                .members(ch)
                .into_iter()
                .filter(|u| {
                    let l = self
                        .socks
                        .get(u)
                        .and_then(|s| s.lower_name())
                        .unwrap_or_default();
                    self.channels.get(ch).is_some_and(|c| c.smuted.contains(&l))
                })
                .collect();
            for u in smuted_ids {
                self.emit(u, "chatMsg", Some(&payload));
            }
            let mut flagged = payload.clone();
            if let Some(m) = flagged.get_mut("meta") {
                m.set("shadow", true);
            }
            for u in self.members(ch) {
                if self.rank_of(u) >= 2.0 {
                    self.emit(u, "chatMsg", Some(&flagged));
                }
            }
            return;
        }
        if muted {
            self.emit(
                id,
                "noflood",
                Some(&obj! { "action" => "chat", "msg" => "You have been muted on this channel." }),
            );
            return;
        }
        self.broadcast(ch, "chatMsg", Some(&payload));
        if let Some(c) = self.channels.get_mut(ch) {
            c.backlog.push_back(payload);
            while c.backlog.len() > BACKLOG {
                c.backlog.pop_front();
            }
        }
    }

    /// Runs a chat command; false when `cmd` is not one (the text is chat).
    fn chat_command(
        &mut self,
        id: u64,
        ch: &str,
        cmd: &str,
        args: &str,
        full: &str,
        mut meta: J,
    ) -> bool {
        let rank = self.rank_of(id);
        // Arguments as the real server splits them: on single spaces.
        let rest_after_cmd = full.split(' ').skip(1).collect::<Vec<_>>().join(" ");
        match cmd {
            "me" => {
                meta.set("addClass", "action");
                meta.set("action", true);
                self.process_chat(id, ch, &rest_after_cmd, meta);
            }
            "sp" => {
                meta.set("addClass", "spoiler");
                self.process_chat(id, ch, &rest_after_cmd, meta);
            }
            "say" | "shout" | "rcv" => {
                if rank >= 1.5 {
                    meta.set("addClass", "shout");
                    meta.set("addClassToNameAndTimestamp", true);
                    meta.set("forceShowName", true);
                    self.process_chat(id, ch, &rest_after_cmd, meta);
                }
            }
            "afk" => {
                let afk = self.socks.get(&id).is_some_and(|s| s.afk);
                self.set_afk(id, ch, !afk);
            }
            "clear" => {
                if self
                    .channels
                    .get(ch)
                    .is_some_and(|c| c.can(rank, "chatclear"))
                {
                    if let Some(c) = self.channels.get_mut(ch) {
                        c.backlog.clear();
                    }
                    self.broadcast(ch, "clearchat", None);
                }
            }
            "mute" | "smute" => self.cmd_mute(id, ch, args, cmd == "smute"),
            "unmute" | "unsmute" => self.cmd_unmute(id, ch, args),
            "kick" => self.cmd_kick(id, ch, args),
            "ban" => self.cmd_ban(id, ch, args),
            "d" => {
                if self.channels.get(ch).is_some_and(|c| c.can(rank, "drink")) {
                    meta.set("addClass", "drink");
                    meta.set("forceShowName", true);
                    if let Some(c) = self.channels.get_mut(ch) {
                        c.drink_count += 1;
                    }
                    let count = self.channels.get(ch).map_or(0, |c| c.drink_count);
                    self.process_chat(id, ch, &rest_after_cmd, meta);
                    self.broadcast(ch, "drinkCount", Some(&J::from(count)));
                }
            }
            _ => return false,
        }
        true
    }

    /// Finds a logged-in user in the channel by name (case-insensitive).
    pub(super) fn find_user(&self, ch: &str, name: &str) -> Option<u64> {
        let lower = name.to_lowercase();
        self.members(ch).into_iter().find(|u| {
            self.socks
                .get(u)
                .and_then(|s| s.lower_name())
                .is_some_and(|n| n == lower)
        })
    }

    fn cmd_mute(&mut self, id: u64, ch: &str, args: &str, shadow: bool) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "mute") {
            return;
        }
        let mute_perm = c.perm("mute");
        let word = if shadow { "/smute" } else { "/mute" };
        let Some(target_name) = args.split(' ').next().filter(|s| !s.is_empty()) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("{word} requires a target name") }),
            );
            return;
        };
        let lower = target_name.to_lowercase();
        let Some(target) = self.find_user(ch, &lower) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("{word} target {lower} not present in channel.") }),
            );
            return;
        };
        let tname = self
            .socks
            .get(&target)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if self.rank_of(target) >= rank {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("{word} failed - {tname} has equal or higher rank than you.") }),
            );
            return;
        }
        if let Some(c) = self.channels.get_mut(ch) {
            if shadow {
                c.smuted.insert(lower);
            } else {
                c.muted.insert(lower);
            }
        }
        let actor = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.broadcast_with(ch, "setUserMeta", |w, viewer| {
            Some(obj! { "name" => tname.as_str(), "meta" => w.user_meta(target, w.rank_of(viewer) >= 2.0) })
        });
        let verb = if shadow { "shadowmuted" } else { "muted" };
        self.mod_message(ch, &format!("{actor} {verb} {tname}"), mute_perm);
    }

    fn cmd_unmute(&mut self, id: u64, ch: &str, args: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "mute") {
            return;
        }
        let mute_perm = c.perm("mute");
        let Some(target_name) = args.split(' ').next().filter(|s| !s.is_empty()) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "/unmute requires a target name" }),
            );
            return;
        };
        let lower = target_name.to_lowercase();
        let Some(target) = self.find_user(ch, &lower) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("/unmute target {lower} not present in channel.") }),
            );
            return;
        };
        let tname = self
            .socks
            .get(&target)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if self.rank_of(target) >= rank {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("/unmute failed - {tname} has equal or higher rank than you.") }),
            );
            return;
        }
        if let Some(c) = self.channels.get_mut(ch) {
            c.muted.remove(&lower);
            c.smuted.remove(&lower);
        }
        let actor = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.mod_message(ch, &format!("{actor} unmuted {tname}"), mute_perm);
        self.broadcast_with(ch, "setUserMeta", |w, viewer| {
            Some(obj! { "name" => tname.as_str(), "meta" => w.user_meta(target, w.rank_of(viewer) >= 2.0) })
        });
    }

    fn cmd_kick(&mut self, id: u64, ch: &str, args: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "kick") {
            return;
        }
        let kick_perm = c.perm("kick");
        let mut words = args.split(' ');
        let Some(target_name) = words.next().filter(|s| !s.trim().is_empty()) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "No kick target specified.  If you're trying to kick anonymous users, use /kickanons" }),
            );
            return;
        };
        let reason = words.collect::<Vec<_>>().join(" ");
        let Some(target) = self.find_user(ch, target_name) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("No user named {target_name} is in this channel") }),
            );
            return;
        };
        let tname = self
            .socks
            .get(&target)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if self.rank_of(target) >= rank {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("You do not have permission to kick {tname}") }),
            );
            return;
        }
        self.kick(target, &reason);
        let actor = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.mod_message(ch, &format!("{actor} kicked {tname}"), kick_perm);
    }

    /// `/ban name reason`: the name is banned from the channel; a user of that name in
    /// it gets `kick "You're banned!"` and is disconnected, and so is every later
    /// join or login under it until a moderator unbans it.
    fn cmd_ban(&mut self, id: u64, ch: &str, args: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "ban") {
            return;
        }
        let ban_perm = c.perm("ban");
        let mut words = args.split(' ');
        let Some(target_name) = words.next().filter(|s| !s.trim().is_empty()) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "You must specify a name to ban" }),
            );
            return;
        };
        let reason = words.collect::<Vec<_>>().join(" ");
        let target = self.find_user(ch, target_name);
        if let Some(t) = target {
            if self.rank_of(t) >= rank {
                self.emit(
                    id,
                    "errorMsg",
                    Some(&obj! { "msg" => "You don't have permission to ban this person." }),
                );
                return;
            }
        }
        let actor = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        if let Some(c) = self.channels.get_mut(ch) {
            if !c.is_banned(target_name) {
                let ban_id = c.next_ban_id;
                c.next_ban_id += 1;
                c.bans.push(super::channel::Ban {
                    id: ban_id,
                    name: target_name.to_owned(),
                    reason,
                    banned_by: actor.clone(),
                });
            }
        }
        if let Some(t) = target {
            self.kick(t, "You're banned!");
        }
        self.mod_message(ch, &format!("{actor} namebanned {target_name}"), ban_perm);
    }

    /// `requestBanlist`: the channel's bans to a moderator (`banlist`).
    pub(super) fn on_request_banlist(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "ban") {
            return;
        }
        let list = J::Arr(
            c.bans
                .iter()
                .map(|b| {
                    obj! {
                        "id" => b.id,
                        "ip" => "*",
                        "name" => b.name.as_str(),
                        "reason" => b.reason.as_str(),
                        "bannedby" => b.banned_by.as_str(),
                    }
                })
                .collect(),
        );
        self.emit(id, "banlist", Some(&list));
    }

    /// `unban {id, name}`: lifts a ban; moderators get `banlistRemove`.
    pub(super) fn on_unban(&mut self, id: u64, ch: &str, payload: &Value) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        if !c.can(rank, "ban") {
            return;
        }
        let ban_perm = c.perm("ban");
        let Some(ban_id) = payload.get("id").and_then(Value::as_u64) else {
            return;
        };
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        let Some(pos) = c.bans.iter().position(|b| b.id == ban_id) else {
            return;
        };
        let ban = c.bans.remove(pos);
        let removed = obj! { "id" => ban.id, "name" => ban.name.as_str() };
        for u in self.members(ch) {
            if self.rank_of(u) >= ban_perm {
                self.emit(u, "banlistRemove", Some(&removed));
            }
        }
    }

    /// AFK on/off: `clearVoteskipVote` to the user when going AFK, then
    /// `setUserMeta` and `setAFK` to everyone.
    pub(super) fn set_afk(&mut self, id: u64, ch: &str, afk: bool) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.afk == afk || sock.name.is_none() {
            return;
        }
        sock.afk = afk;
        let name = sock.name.clone().unwrap_or_default();
        if afk {
            if let Some(c) = self.channels.get_mut(ch) {
                c.skip_votes.remove(&id);
            }
            self.emit(id, "clearVoteskipVote", None);
        }
        self.broadcast_with(ch, "setUserMeta", |w, viewer| {
            Some(obj! { "name" => name.as_str(), "meta" => w.user_meta(id, w.rank_of(viewer) >= 2.0) })
        });
        self.broadcast(
            ch,
            "setAFK",
            Some(&obj! { "name" => name.as_str(), "afk" => afk }),
        );
    }

    pub(super) fn on_pm(&mut self, id: u64, ch: &str, payload: &Value) {
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        let Some(from) = sock.name.clone() else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "You must be signed in to send PMs" }),
            );
            return;
        };
        let to = payload
            .get("to")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        if to == from.to_lowercase() {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "You can't PM yourself!" }),
            );
            return;
        }
        if !text::valid_user_name(&to) {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => format!("PM failed: {to} isn't a valid username.") }),
            );
            return;
        }
        let rank = self.rank_of(id);
        let now = self.now();
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        let floor = self.cfg.chat_floor;
        if sock.chat_limiter.try_acquire_with(&floor, now).is_err() {
            self.emit(id, "cooldown", Some(&J::from(floor.server_cooldown_ms())));
            return;
        }
        let raw = payload
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let msg = text::truncate_utf16(raw, text::MAX_CHAT_UNITS).to_owned();
        let Some(recipient) = self.find_user(ch, &to) else {
            self.emit(
                id,
                "errorMsg",
                Some(
                    &obj! { "msg" => format!("PM failed: {to} isn't connected to this channel.") },
                ),
            );
            return;
        };
        let mut meta = J::empty_obj();
        if rank >= 2.0 {
            if let Some(flair) = payload
                .get("meta")
                .and_then(|m| m.get("modflair"))
                .and_then(Value::as_f64)
            {
                if flair == rank {
                    meta.set("modflair", flair);
                }
            }
        }
        if msg.starts_with('>') {
            meta.set("addClass", "greentext");
        }
        let convert_links = self
            .channels
            .get(ch)
            .is_some_and(|c| c.opt_bool("enable_link_regex"));
        let to_name = self
            .socks
            .get(&recipient)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        let payload = obj! {
            "username" => from,
            "msg" => text::format_chat(&msg, convert_links),
            "meta" => meta,
            "time" => epoch_ms(),
            "to" => to_name,
        };
        self.emit(recipient, "pm", Some(&payload));
        self.emit(id, "pm", Some(&payload));
    }
}
