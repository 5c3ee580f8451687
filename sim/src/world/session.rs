//! Joining and leaving: `joinChannel` (first one only), the channel password
//! prompt, `login` (account, guest), the join burst, the post-login burst,
//! duplicate-login kicks and `userLeave`.
//!
//! Timing model (matches the captures): a join completes [`JOIN_DELAY`] after
//! `joinChannel` (the real server loads the channel), a guest login completes
//! at once and an account login [`LOGIN_DELAY`] after `login` (password
//! hashing). So `joinChannel` + guest `login` sent together answer `login`
//! before the join burst, while `joinChannel` + account `login` answer the
//! join burst first (with a `userlist` that lacks the bot).

use std::time::Duration;

use serde_json::Value;

use super::{JoinState, World};
use crate::json::{J, obj};
use crate::text;

/// How long a channel takes to "load" before the join burst.
pub(crate) const JOIN_DELAY: Duration = Duration::from_millis(10);
/// How long an account login takes to verify.
pub(crate) const LOGIN_DELAY: Duration = Duration::from_millis(40);

impl World {
    pub(super) fn on_join_channel(&mut self, id: u64, payload: Option<&Value>) {
        let Some(Value::Object(map)) = payload else {
            return;
        };
        let Some(Value::String(name)) = map.get("name") else {
            return;
        };
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        // Only the first joinChannel on a socket counts.
        if sock.join != JoinState::None || sock.channel.is_some() {
            return;
        }
        if !text::valid_channel_name(name) {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "Invalid channel name.  Channel names may consist of 1-30 characters in the set a-z, A-Z, 0-9, -, and _" }),
            );
            self.kick(id, "Invalid channel name");
            return;
        }
        sock.channel = Some(name.to_lowercase());
        sock.join = JoinState::Pending;
        let pw = map.get("pw").and_then(Value::as_str).map(str::to_owned);
        self.schedule(JOIN_DELAY, move |w| w.complete_join(id, pw));
    }

    fn complete_join(&mut self, id: u64, pw: Option<String>) {
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if sock.closed || sock.join != JoinState::Pending {
            return;
        }
        let Some(ch) = sock.channel.clone() else {
            return;
        };
        let account = sock
            .name
            .as_deref()
            .filter(|_| !sock.guest)
            .map(str::to_lowercase);
        self.ensure_channel(&ch);
        // An account that logged in first has its channel rank loaded with the
        // channel, so a moderator is not asked for the password.
        if let Some(lower) = account {
            let channel_rank = self
                .channels
                .get(&ch)
                .map_or(0.0, |c| if c.registered { c.rank_of(&lower) } else { 0.0 });
            if let Some(sock) = self.socks.get_mut(&id) {
                sock.channel_rank = channel_rank;
            }
        }
        let banned = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .is_some_and(|n| self.channels.get(&ch).is_some_and(|c| c.is_banned(&n)));
        if banned {
            self.kick(id, "You're banned!");
            return;
        }
        let rank = self.rank_of(id);
        let channel_pw = self.channels.get(&ch).and_then(|c| c.password());
        if let Some(expected) = channel_pw {
            if rank < 2.0 && pw.as_deref() != Some(expected.as_str()) {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.pending.push(id);
                }
                if let Some(sock) = self.socks.get_mut(&id) {
                    sock.join = JoinState::NeedPassword;
                }
                self.emit(id, "needPassword", Some(&J::Bool(pw.is_some())));
                return;
            }
        }
        self.accept_user(id);
    }

    pub(super) fn on_channel_password(&mut self, id: u64, payload: Option<&Value>) {
        let Some(Value::String(pw)) = payload else {
            return;
        };
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        if sock.join != JoinState::NeedPassword {
            return;
        }
        let Some(ch) = sock.channel.clone() else {
            return;
        };
        let expected = self.channels.get(&ch).and_then(|c| c.password());
        if expected.as_deref().is_none_or(|e| e == pw) {
            if let Some(c) = self.channels.get_mut(&ch) {
                c.pending.retain(|p| *p != id);
            }
            self.emit(id, "cancelNeedPassword", None);
            self.accept_user(id);
        } else {
            self.emit(id, "needPassword", Some(&J::Bool(true)));
        }
    }

    /// Puts the socket in its channel and sends the join burst.
    fn accept_user(&mut self, id: u64) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        let Some(ch) = sock.channel.clone() else {
            return;
        };
        sock.join = JoinState::Joined;
        let logged_in = sock.name.is_some();
        let account = logged_in && !sock.guest;
        if logged_in {
            // The real server kicks the older socket asynchronously, after the newcomer
            // is in the channel; here the kick parts it at once. Keep the newcomer
            // counted (pending) meanwhile, or an unregistered channel emptied by the
            // kick would be forgotten under the joining socket.
            if let Some(c) = self.channels.get_mut(&ch) {
                c.pending.push(id);
            }
            self.kick_duplicates(id, &ch);
            if let Some(c) = self.channels.get_mut(&ch) {
                c.pending.retain(|p| *p != id);
            }
            // Existing users learn about the newcomer; the newcomer itself is
            // not in the list yet, so it gets no addUser about itself.
            self.send_user_join(id, &ch);
        }
        if let Some(c) = self.channels.get_mut(&ch) {
            c.users.push(id);
        }
        self.send_join_burst(id, &ch);
        if account {
            self.apply_channel_rank(id, &ch, false);
        }
    }

    /// The frames a socket gets on joining, in the real server's order.
    fn send_join_burst(&mut self, id: u64, ch: &str) {
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let rank = self.rank_of(id);
        let perms = c.perms_json();
        let locked = c.locked;
        let backlog: Vec<J> = c.backlog.iter().cloned().collect();
        let drink = c.drink_count;
        let cssjs = c.css_js_json();
        let motd = c.motd.clone();
        let opts = c.opts.clone();
        let registered = c.registered;
        let poll = c
            .poll
            .as_ref()
            .map(|p| p.to_json(c.can(rank, "viewhiddenpoll")));
        let leader = c
            .leader
            .and_then(|l| self.socks.get(&l))
            .and_then(|s| s.name.clone());

        self.emit(id, "setPermissions", Some(&perms));
        self.emit(id, "setPlaylistLocked", Some(&J::Bool(locked)));
        self.emit(id, "emoteList", Some(&J::Arr(Vec::new())));
        for msg in &backlog {
            self.emit(id, "chatMsg", Some(msg));
        }
        self.emit(id, "drinkCount", Some(&J::from(drink)));
        self.emit(id, "channelCSSJS", Some(&cssjs));
        self.emit(id, "setMotd", Some(&J::Str(motd)));
        self.emit(id, "channelOpts", Some(&opts));
        self.send_playlist_to(id, ch);
        self.send_change_media_to(id, ch);
        if let Some(poll) = poll {
            self.emit(id, "newPoll", Some(&poll));
        }
        let userlist = self.userlist_json(ch, id);
        self.emit(id, "userlist", Some(&userlist));
        if let Some(leader) = leader {
            self.emit(id, "setLeader", Some(&J::Str(leader)));
        }
        self.usercount_changed(ch);
        if !registered {
            self.emit(id, "channelNotRegistered", None);
        }
    }

    /// `setPlaylistMeta`, then `playlist` and `setCurrent` if the user may see them.
    pub(super) fn send_playlist_to(&mut self, id: u64, ch: &str) {
        let rank = self.rank_of(id);
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let meta = c.playlist_meta();
        let can_see = c.can(rank, "seeplaylist");
        let list = c.playlist_json();
        let current = c.current;
        self.emit(id, "setPlaylistMeta", Some(&meta));
        if !can_see {
            return;
        }
        self.emit(id, "playlist", Some(&list));
        if let Some(uid) = current {
            self.emit(id, "setCurrent", Some(&J::from(uid)));
        }
    }

    /// `setCurrent` + `changeMedia` for the current item, if any.
    pub(super) fn send_change_media_to(&mut self, id: u64, ch: &str) {
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let (Some(uid), Some(change)) = (c.current, c.change_media_json()) else {
            return;
        };
        self.emit(id, "setCurrent", Some(&J::from(uid)));
        self.emit(id, "changeMedia", Some(&change));
    }

    /// Kicks other sockets in the channel logged in under the same name.
    fn kick_duplicates(&mut self, id: u64, ch: &str) {
        let Some(lower) = self.socks.get(&id).and_then(|s| s.lower_name()) else {
            return;
        };
        let dups: Vec<u64> = self
            .members(ch)
            .into_iter()
            .filter(|u| *u != id)
            .filter(|u| {
                self.socks
                    .get(u)
                    .and_then(|s| s.lower_name())
                    .is_some_and(|n| n == lower)
            })
            .collect();
        for dup in dups {
            self.kick(dup, "Duplicate login");
        }
    }

    /// `addUser` to everyone in the channel and the join notice to moderators.
    fn send_user_join(&mut self, id: u64, ch: &str) {
        self.broadcast_with(ch, "addUser", |w, viewer| Some(w.user_json(id, viewer)));
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        let name = sock.name.clone().unwrap_or_default();
        let aliases = self.aliases.get(&sock.ip).cloned().unwrap_or_default();
        self.mod_message(
            ch,
            &format!("{name} joined (aliases: {})", aliases.join(",")),
            2.0,
        );
    }

    /// Looks up the account's channel rank: `rank n` to the user (and a
    /// moderator userlist when crossing rank 2), optionally the playlist again,
    /// then `setUserRank` to everyone.
    fn apply_channel_rank(&mut self, id: u64, ch: &str, resend_playlist: bool) {
        let Some(lower) = self.socks.get(&id).and_then(|s| s.lower_name()) else {
            return;
        };
        let Some(c) = self.channels.get(ch) else {
            return;
        };
        let channel_rank = if c.registered { c.rank_of(&lower) } else { 0.0 };
        let before = self.rank_of(id);
        if let Some(sock) = self.socks.get_mut(&id) {
            sock.channel_rank = channel_rank;
        }
        let after = self.rank_of(id);
        self.emit(id, "rank", Some(&J::Num(after)));
        if (before >= 2.0) != (after >= 2.0) {
            let list = self.userlist_json(ch, id);
            self.emit(id, "userlist", Some(&list));
        }
        if resend_playlist {
            self.send_playlist_to(id, ch);
        }
        let name = self
            .socks
            .get(&id)
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        self.broadcast(
            ch,
            "setUserRank",
            Some(&obj! { "name" => name, "rank" => after }),
        );
    }

    pub(super) fn on_login(&mut self, id: u64, payload: Option<&Value>) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        // While a login is in progress and after a successful one, further
        // login frames are ignored.
        if sock.name.is_some() || sock.login_pending {
            return;
        }
        let name = match payload {
            Some(Value::Object(map)) => map.get("name").and_then(Value::as_str),
            _ => None,
        };
        let Some(name) = name.map(str::to_owned) else {
            self.emit(
                id,
                "errorMsg",
                Some(&obj! { "msg" => "Invalid login frame" }),
            );
            return;
        };
        let pw = match payload {
            Some(Value::Object(map)) => map.get("pw").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
        .filter(|p| !p.is_empty());
        match pw {
            Some(pw) => {
                sock.login_pending = true;
                self.schedule(LOGIN_DELAY, move |w| {
                    w.complete_account_login(id, &name, &pw)
                });
            }
            None => self.guest_login(id, &name),
        }
    }

    fn login_failed(&mut self, id: u64, error: &str) {
        self.emit(
            id,
            "login",
            Some(&obj! { "success" => false, "error" => error }),
        );
    }

    fn complete_account_login(&mut self, id: u64, name: &str, pw: &str) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.closed {
            return;
        }
        sock.login_pending = false;
        let account = self
            .cfg
            .accounts
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name) && a.password == pw)
            .cloned();
        match account {
            Some(a) => self.login_success(id, &a.name, a.global_rank, false),
            None => self.login_failed(id, "Invalid username/password combination"),
        }
    }

    fn guest_login(&mut self, id: u64, name: &str) {
        let now = self.now();
        let interval = self.cfg.guest_login_interval;
        let Some(sock) = self.socks.get(&id) else {
            return;
        };
        let ip = sock.ip;
        let lower = name.to_lowercase();
        if !text::valid_user_name(name) {
            return self.login_failed(
                id,
                "Invalid username.  Usernames must be 1-20 characters long and consist only of characters a-z, A-Z, 0-9, -, or _.",
            );
        }
        if text::reserved_name(name) {
            return self.login_failed(id, "That username is reserved.");
        }
        if self
            .cfg
            .accounts
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name))
        {
            return self.login_failed(id, "That username is registered.");
        }
        if sock.join == JoinState::Joined {
            if let Some(ch) = sock.channel.clone() {
                let taken = self.members(&ch).into_iter().any(|u| {
                    self.socks
                        .get(&u)
                        .and_then(|s| s.lower_name())
                        .is_some_and(|n| n == lower)
                });
                if taken {
                    return self.login_failed(id, "That name is already in use on this channel.");
                }
            }
        }
        if let Some(last) = self.guest_logins.get(&ip) {
            if now.saturating_duration_since(*last) < interval {
                let msg = format!(
                    "Guest logins are restricted to one per IP address per {} seconds.",
                    interval.as_secs()
                );
                return self.login_failed(id, &msg);
            }
        }
        self.guest_logins.insert(ip, now);
        self.login_success(id, name, 0.0, true);
    }

    /// The post-login burst.
    fn login_success(&mut self, id: u64, name: &str, global_rank: f64, guest: bool) {
        let now = self.now();
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        sock.name = Some(name.to_owned());
        sock.guest = guest;
        sock.global_rank = global_rank;
        sock.channel_rank = 0.0;
        sock.first_seen = if guest {
            now
        } else {
            // Accounts count as created when the simulator started.
            self.started
        };
        let ip = sock.ip;
        let joined = (sock.join == JoinState::Joined)
            .then(|| sock.channel.clone())
            .flatten();
        self.add_alias(ip, name);
        self.set_latest_name(name, id);
        self.emit(id, "rank", Some(&J::Num(global_rank)));
        let reply = if guest {
            obj! { "success" => true, "name" => name, "guest" => true }
        } else {
            obj! { "success" => true, "name" => name }
        };
        self.emit(id, "login", Some(&reply));
        if let Some(ch) = joined {
            if self.channels.get(&ch).is_some_and(|c| c.is_banned(name)) {
                self.kick(id, "You're banned!");
                return;
            }
            self.kick_duplicates(id, &ch);
            self.send_user_join(id, &ch);
            if !guest {
                self.apply_channel_rank(id, &ch, true);
            }
        }
    }

    /// Removes the socket from its channel: `userLeave`, leader hand-back,
    /// `usercount`, and forgets an empty unregistered channel.
    pub(crate) fn part_user(&mut self, id: u64) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        let Some(ch) = sock.channel.take() else {
            return;
        };
        let was_joined = sock.join == JoinState::Joined;
        sock.join = JoinState::None;
        let name = sock.name.clone();
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        c.pending.retain(|p| *p != id);
        if was_joined {
            c.users.retain(|u| *u != id);
            c.skip_votes.remove(&id);
            let was_leader = c.leader == Some(id);
            if was_leader {
                c.leader = None;
            }
            if let Some(name) = &name {
                self.broadcast(&ch, "userLeave", Some(&obj! { "name" => name.as_str() }));
            }
            if was_leader {
                self.broadcast(&ch, "setLeader", Some(&J::from("")));
                self.resume_playback(&ch);
            }
            self.usercount_changed(&ch);
        }
        let empty = self
            .channels
            .get(&ch)
            .is_some_and(|c| c.users.is_empty() && c.pending.is_empty());
        let registered = self.channels.get(&ch).is_some_and(|c| c.registered);
        if empty && !registered {
            self.stop_ticker(&ch);
            self.channels.remove(&ch);
        }
    }
}
