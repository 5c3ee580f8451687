//! Channel administration: MOTD, options, permissions, CSS/JS and channel
//! ranks. Sending `setMotd`, `setOptions`, `setPermissions` or CSS/JS without
//! the rank gets the sender kicked, with the real server's reasons.

use serde_json::Value;

use super::World;
use crate::json::{J, obj};
use crate::text;

/// Options only channel admins (rank 3+) may change.
const ADMIN_OPTIONS: &[&str] = &["password", "show_public", "externalcss", "externaljs"];

impl World {
    pub(super) fn on_set_motd(&mut self, id: u64, ch: &str, payload: Option<&Value>) {
        let rank = self.rank_of(id);
        if !self
            .channels
            .get(ch)
            .is_some_and(|c| c.can(rank, "motdedit"))
        {
            self.kick(id, "Attempted setMotd with insufficient permission");
            return;
        }
        let Some(motd) = payload.and_then(|p| p.get("motd")).and_then(Value::as_str) else {
            return;
        };
        let motd = text::sanitize_html(text::truncate_utf16(motd, 20_000));
        if let Some(c) = self.channels.get_mut(ch) {
            c.motd = motd.clone();
        }
        self.broadcast(ch, "setMotd", Some(&J::Str(motd)));
    }

    pub(super) fn on_set_options(&mut self, id: u64, ch: &str, payload: Option<&Value>) {
        let rank = self.rank_of(id);
        if rank < 2.0 {
            self.kick(id, "Attempted setOptions as a non-moderator");
            return;
        }
        let Some(Value::Object(map)) = payload else {
            return;
        };
        let mut allowed = map.clone();
        if rank < 3.0 {
            allowed.retain(|k, _| !ADMIN_OPTIONS.contains(&k.as_str()));
        }
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        c.merge_opts(&Value::Object(allowed));
        let opts = c.opts.clone();
        self.broadcast(ch, "channelOpts", Some(&opts));
    }

    pub(super) fn on_set_permissions(&mut self, id: u64, ch: &str, payload: Option<&Value>) {
        let rank = self.rank_of(id);
        if rank < 3.0 {
            self.kick(id, "Attempted setPermissions as a non-admin");
            return;
        }
        let Some(payload) = payload else {
            return;
        };
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        c.merge_perms(payload);
        let perms = c.perms_json();
        self.broadcast(ch, "setPermissions", Some(&perms));
    }

    pub(super) fn on_set_css_js(&mut self, id: u64, ch: &str, payload: Option<&Value>, js: bool) {
        let rank = self.rank_of(id);
        if rank < 3.0 {
            let what = if js { "setChannelJS" } else { "setChannelCSS" };
            self.kick(id, &format!("Attempted {what} as non-admin"));
            return;
        }
        let key = if js { "js" } else { "css" };
        let Some(body) = payload.and_then(|p| p.get(key)).and_then(Value::as_str) else {
            return;
        };
        let body = text::truncate_utf16(body, 20_000).to_owned();
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        if js {
            c.js = body;
        } else {
            c.css = body;
        }
        let cssjs = c.css_js_json();
        self.broadcast(ch, "channelCSSJS", Some(&cssjs));
    }

    pub(super) fn on_set_channel_rank(&mut self, id: u64, ch: &str, data: &Value) {
        let rank = self.rank_of(id);
        if rank < 3.0 {
            return;
        }
        let raw_name = data.get("name").and_then(Value::as_str).unwrap_or_default();
        let new_rank = data.get("rank").and_then(Value::as_f64).unwrap_or(f64::NAN);
        let name: String = raw_name.chars().take(20).collect::<String>().to_lowercase();
        let fail = |w: &mut World, msg: &str| {
            w.emit(id, "channelRankFail", Some(&obj! { "msg" => msg }));
        };
        if !text::valid_user_name(&name) {
            return fail(self, &format!("Invalid target name {raw_name}"));
        }
        if new_rank.is_nan()
            || new_rank < 1.0
            || (new_rank >= rank && !(rank == 4.0 && new_rank == 4.0))
        {
            return fail(
                self,
                "Updating user rank failed: You can't promote someone to a rank equal or higher than yourself, or demote them to below rank 1.",
            );
        }
        let own = self
            .socks
            .get(&id)
            .and_then(|s| s.lower_name())
            .unwrap_or_default();
        if name == own {
            return fail(
                self,
                "Updating user rank failed: You can't promote or demote yourself.",
            );
        }
        let registered = self.channels.get(ch).is_some_and(|c| c.registered);
        if !registered {
            return fail(
                self,
                "Updating user rank failed: in an unregistered channel, a user must be online in the channel in order to have their rank changed.",
            );
        }
        let stored = self.channels.get(ch).map_or(1.0, |c| c.rank_of(&name));
        let echo = obj! { "name" => raw_name, "rank" => new_rank };
        match self.find_user(ch, &name) {
            Some(target) => {
                let current = self
                    .socks
                    .get(&target)
                    .map_or(0.0, |s| s.global_rank.max(s.channel_rank));
                if current >= rank && !(rank == 4.0 && current == 4.0) {
                    return fail(
                        self,
                        "Updating user rank failed: You can't promote or demote someone who has equal or higher rank than yourself",
                    );
                }
                let before = self.rank_of(target);
                if let Some(c) = self.channels.get_mut(ch) {
                    c.ranks.insert(name.clone(), new_rank);
                }
                let guest = self.socks.get(&target).is_some_and(|s| s.guest);
                if let Some(s) = self.socks.get_mut(&target) {
                    s.channel_rank = new_rank;
                }
                let after = self.rank_of(target);
                if (before >= 2.0) != (after >= 2.0) {
                    let list = self.userlist_json(ch, target);
                    self.emit(target, "userlist", Some(&list));
                }
                self.emit(target, "rank", Some(&J::Num(after)));
                self.broadcast(ch, "setUserRank", Some(&echo));
                if guest {
                    if let Some(c) = self.channels.get_mut(ch) {
                        c.ranks.remove(&name);
                    }
                    fail(
                        self,
                        "The user you promoted is not a registered account.  Any rank changes are temporary and not stored in the database.",
                    );
                }
            }
            None => {
                if stored >= rank && !(stored == 4.0 && rank == 4.0) {
                    return fail(
                        self,
                        "Updating user rank failed: You can't promote or demote someone with equal or higher rank than you.",
                    );
                }
                if let Some(c) = self.channels.get_mut(ch) {
                    c.ranks.insert(name.clone(), new_rank);
                }
                self.broadcast(ch, "setUserRank", Some(&echo));
                let actor = self
                    .socks
                    .get(&id)
                    .and_then(|s| s.name.clone())
                    .unwrap_or_default();
                self.mod_message(
                    ch,
                    &format!("{actor} set {raw_name}'s rank to {new_rank}"),
                    3.0,
                );
            }
        }
    }
}
