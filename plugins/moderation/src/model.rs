//! The moderation model, free of I/O: who is in each room (rank, when they joined), each
//! user's recent lines (for `repeat` and `flood`), strikes that decay and escalate, and
//! the check of one chat line against every filter. This is also the state handed to
//! the next version on a hot reload.
//!
//! Invariants: a user's history holds at most [`HISTORY`] lines; strikes older than the
//! strike lifetime are forgotten at the next look; after a hit the user's history is
//! cleared, so one burst of flooding earns one strike, not one per line.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{
    action::Action,
    filter::{Filter, Kind, Line},
};

/// Lines remembered per user.
pub const HISTORY: usize = 64;

/// A user in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Present {
    /// Display name.
    pub name: String,
    /// Channel rank.
    pub rank: f64,
    /// When the bot saw them join (`None` for users already there when the bot came).
    pub joined_ms: Option<i64>,
}

/// One line a user said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Said {
    /// Server time, ms.
    pub at: i64,
    /// The normalised text.
    pub text: String,
}

/// What the model keeps per user (by `room\0lowercase name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Recent lines, oldest first.
    pub lines: VecDeque<Said>,
    /// When each live strike was given.
    pub strikes: Vec<i64>,
    /// The bot muted this user (so `!pardon` unmutes).
    pub muted_by_bot: bool,
}

/// Everything the plugin knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Users present, by room then lowercase name.
    pub rooms: BTreeMap<String, BTreeMap<String, Present>>,
    /// Per-user records.
    pub records: BTreeMap<String, Record>,
}

/// A filter that tripped.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The filter's name.
    pub filter: String,
    /// Its kind.
    pub kind: Kind,
    /// The least it does.
    pub action: Action,
    /// Whether it adds a strike and escalates.
    pub escalate: bool,
    /// What to tell the user.
    pub reason: String,
}

fn key(room: &str, name: &str) -> String {
    format!("{room}\0{}", name.to_lowercase())
}

impl Model {
    /// A fresh user list for a room (the server sends one on every join).
    pub fn userlist(&mut self, room: &str, users: impl IntoIterator<Item = (String, f64)>) {
        let before = self.rooms.remove(room).unwrap_or_default();
        let mut now = BTreeMap::new();
        for (name, rank) in users {
            let lower = name.to_lowercase();
            // Keep the join time of users the bot saw join before a reconnect.
            let joined_ms = before.get(&lower).and_then(|p| p.joined_ms);
            now.insert(
                lower,
                Present {
                    name,
                    rank,
                    joined_ms,
                },
            );
        }
        self.rooms.insert(room.to_owned(), now);
    }

    /// A user joined.
    pub fn join(&mut self, room: &str, name: &str, rank: f64, at: i64) {
        let users = self.rooms.entry(room.to_owned()).or_default();
        // A join the plugin already learned of from the room state keeps its time.
        let joined = users
            .get(&name.to_lowercase())
            .and_then(|p| p.joined_ms)
            .map_or(at, |t| t.min(at));
        users.insert(
            name.to_lowercase(),
            Present {
                name: name.to_owned(),
                rank,
                joined_ms: Some(joined),
            },
        );
    }

    /// A user left. Their record stays (strikes outlive a rejoin).
    pub fn leave(&mut self, room: &str, name: &str) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.remove(&name.to_lowercase());
        }
    }

    /// A user's rank changed.
    pub fn rank(&mut self, room: &str, name: &str, rank: f64) {
        if let Some(p) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.get_mut(&name.to_lowercase()))
        {
            p.rank = rank;
        }
    }

    /// A user present in a room.
    pub fn present(&self, room: &str, name: &str) -> Option<&Present> {
        self.rooms.get(room)?.get(&name.to_lowercase())
    }

    /// Records a line and returns the filters it trips, strongest first.
    pub fn check(
        &mut self,
        room: &str,
        user: &str,
        line: &Line,
        at: i64,
        filters: &[&Filter],
    ) -> Vec<Hit> {
        let joined = self.present(room, user).and_then(|p| p.joined_ms);
        let rec = self.records.entry(key(room, user)).or_default();
        rec.lines.push_back(Said {
            at,
            text: line.squashed.clone(),
        });
        while rec.lines.len() > HISTORY {
            rec.lines.pop_front();
        }
        let mut hits = Vec::new();
        for f in filters {
            let s = &f.spec;
            let tripped = match s.kind {
                Kind::Word | Kind::Regex | Kind::Link | Kind::Caps => f.matches_text(line),
                Kind::NewUserLink => {
                    let window = i64::try_from(s.window_ms.unwrap_or(0)).unwrap_or(i64::MAX);
                    joined.is_some_and(|j| at - j < window) && f.has_disallowed_link(line)
                }
                Kind::Flood | Kind::Repeat => {
                    let window = i64::try_from(s.window_ms.unwrap_or(0)).unwrap_or(i64::MAX);
                    let need = s.lines.unwrap_or(u32::MAX) as usize;
                    let recent = rec.lines.iter().filter(|l| at - l.at < window);
                    let n = if s.kind == Kind::Flood {
                        recent.count()
                    } else if line.squashed.is_empty() {
                        0
                    } else {
                        recent.filter(|l| l.text == line.squashed).count()
                    };
                    n >= need
                }
            };
            if tripped {
                hits.push(Hit {
                    filter: s.name.clone(),
                    kind: s.kind,
                    action: s.action,
                    escalate: s.escalate,
                    reason: if s.reason.is_empty() {
                        default_reason(s.kind).to_owned()
                    } else {
                        s.reason.clone()
                    },
                });
            }
        }
        if !hits.is_empty() {
            rec.lines.clear();
        }
        // Stable: among equals, the filter listed first wins.
        hits.sort_by_key(|h| std::cmp::Reverse(h.action));
        hits
    }

    /// Adds a strike (if `escalate`) and returns the action to take and the live
    /// strikes: the filter's own action, or the ladder's step for the strike count if
    /// that is stronger.
    pub fn strike(
        &mut self,
        room: &str,
        user: &str,
        hit: &Hit,
        at: i64,
        ttl_ms: i64,
        ladder: &[Action],
    ) -> (Action, usize) {
        let rec = self.records.entry(key(room, user)).or_default();
        rec.strikes.retain(|t| at - *t < ttl_ms);
        if !hit.escalate {
            return (hit.action, rec.strikes.len());
        }
        rec.strikes.push(at);
        let n = rec.strikes.len();
        let step = ladder
            .get(n - 1)
            .or(ladder.last())
            .copied()
            .unwrap_or(Action::Warn);
        (hit.action.max(step), n)
    }

    /// Live strikes of a user.
    pub fn strikes(&mut self, room: &str, user: &str, at: i64, ttl_ms: i64) -> usize {
        self.records.get_mut(&key(room, user)).map_or(0, |r| {
            r.strikes.retain(|t| at - *t < ttl_ms);
            r.strikes.len()
        })
    }

    /// Notes that the bot muted a user.
    pub fn set_muted(&mut self, room: &str, user: &str, muted: bool) {
        self.records
            .entry(key(room, user))
            .or_default()
            .muted_by_bot = muted;
    }

    /// Clears a user's strikes and history; returns (strikes cleared, was muted by the
    /// bot).
    pub fn pardon(&mut self, room: &str, user: &str) -> (usize, bool) {
        match self.records.remove(&key(room, user)) {
            Some(r) => (r.strikes.len(), r.muted_by_bot),
            None => (0, false),
        }
    }

    /// Forgets records with no live strike, no recent line and no mute, keeping memory
    /// bounded.
    pub fn prune(&mut self, now: i64, ttl_ms: i64, history_ms: i64) {
        self.records.retain(|_, r| {
            r.strikes.retain(|t| now - *t < ttl_ms);
            r.lines.retain(|l| now - l.at < history_ms);
            !r.strikes.is_empty() || !r.lines.is_empty() || r.muted_by_bot
        });
    }
}

fn default_reason(kind: Kind) -> &'static str {
    match kind {
        Kind::Word | Kind::Regex => "that language is not allowed here",
        Kind::Link => "links are not allowed here",
        Kind::NewUserLink => "new users may not post links yet",
        Kind::Repeat => "please do not repeat the same line",
        Kind::Flood => "please do not flood the chat",
        Kind::Caps => "please do not shout (all caps)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FilterSpec, Limits};

    fn filter(kind: Kind, lines: Option<u32>, window: Option<u64>, action: Action) -> Filter {
        Filter::compile(
            FilterSpec {
                name: kind.as_str().into(),
                kind,
                pattern: String::new(),
                lines,
                window_ms: window,
                min_letters: None,
                ratio: None,
                allow: Vec::new(),
                action,
                escalate: true,
                reason: String::new(),
            },
            Limits {
                max_pattern_len: 100,
                regex_size_limit: 1 << 16,
            },
        )
        .unwrap()
    }

    #[test]
    fn flooding_trips_once_per_burst() {
        let f = filter(Kind::Flood, Some(4), Some(5_000), Action::Warn);
        let mut m = Model::default();
        let mut hits = 0;
        for i in 0..12 {
            let line = Line::new(&format!("line {i}"), "");
            hits += m.check("r", "bob", &line, 1000 + i * 100, &[&f]).len();
        }
        assert_eq!(hits, 3, "12 lines, 4 per strike");
        // Slow talkers never trip it.
        let mut m = Model::default();
        for i in 0..20 {
            let line = Line::new(&format!("line {i}"), "");
            assert!(m.check("r", "amy", &line, i * 2_000, &[&f]).is_empty());
        }
    }

    #[test]
    fn repeats_are_compared_after_normalisation() {
        let f = filter(Kind::Repeat, Some(3), Some(60_000), Action::Warn);
        let mut m = Model::default();
        assert!(
            m.check("r", "bob", &Line::new("buy now", ""), 0, &[&f])
                .is_empty()
        );
        assert!(
            m.check("r", "bob", &Line::new("BUY NOW", ""), 10, &[&f])
                .is_empty()
        );
        let hits = m.check("r", "bob", &Line::new("b u y   now!", ""), 20, &[&f]);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].reason, "please do not repeat the same line");
    }

    #[test]
    fn new_users_are_those_the_bot_saw_join_recently() {
        let f = filter(Kind::NewUserLink, None, Some(60_000), Action::Kick);
        let mut m = Model::default();
        m.userlist("r", [("old".to_owned(), 0.0)]);
        m.join("r", "new", 0.0, 1_000);
        let link = Line::new("spam.xyz", "");
        assert!(m.check("r", "old", &link, 2_000, &[&f]).is_empty());
        assert_eq!(m.check("r", "new", &link, 2_000, &[&f]).len(), 1);
        assert!(m.check("r", "new", &link, 70_000, &[&f]).is_empty());
        // A reconnect's user list keeps the join time.
        m.userlist("r", [("NEW".to_owned(), 0.0)]);
        assert_eq!(m.present("r", "new").unwrap().joined_ms, Some(1_000));
    }

    #[test]
    fn strikes_escalate_and_decay() {
        let mut m = Model::default();
        let ladder = [Action::Warn, Action::Warn, Action::Kick, Action::Mute];
        let hit = Hit {
            filter: "f".into(),
            kind: Kind::Flood,
            action: Action::Warn,
            escalate: true,
            reason: String::new(),
        };
        let ttl = 10_000;
        let steps: Vec<(Action, usize)> = (0..5)
            .map(|i| m.strike("r", "Bob", &hit, i * 100, ttl, &ladder))
            .collect();
        assert_eq!(
            steps,
            vec![
                (Action::Warn, 1),
                (Action::Warn, 2),
                (Action::Kick, 3),
                (Action::Mute, 4),
                (Action::Mute, 5)
            ]
        );
        // All decayed: back to a warning.
        assert_eq!(
            m.strike("r", "bob", &hit, 50_000, ttl, &ladder),
            (Action::Warn, 1)
        );
        // A filter's own action is the least it does.
        let kick = Hit {
            action: Action::Kick,
            ..hit.clone()
        };
        assert_eq!(
            m.strike("r", "bob", &kick, 50_001, ttl, &ladder).0,
            Action::Kick
        );
        // Without escalation: no strike.
        let mild = Hit {
            escalate: false,
            ..hit
        };
        assert_eq!(
            m.strike("r", "bob", &mild, 50_002, ttl, &ladder),
            (Action::Warn, 2)
        );
        assert_eq!(m.pardon("r", "BOB"), (2, false));
        assert_eq!(m.strikes("r", "bob", 50_003, ttl), 0);
    }
}
