//! The user tracker's model, free of I/O: sessions per room, last-seen times and the
//! activity totals not yet written, changed by Cytube events and turning into
//! [`Write`]s for the database.
//!
//! Invariants:
//! * a user (compared without case) has at most one open session per room;
//! * every session opened is eventually closed by a [`Write::Close`] (on `userLeave`, or
//!   when a later `userlist` no longer lists the user — the user list the server sends
//!   on (re)join is the ground truth);
//! * activity deltas only grow until [`Tracker::drain_activity`] hands them out, so a
//!   failed write can be retried without double counting anything the database has
//!   not acknowledged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One stay of a user in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Display name.
    pub name: String,
    /// Channel rank.
    pub rank: f64,
    /// When the stay began (unix ms); with room and name, the row's key.
    pub joined_ms: i64,
    /// Last chat line.
    pub last_activity_ms: Option<i64>,
    /// Chat lines in this stay.
    pub messages: i64,
    /// AFK since, while AFK.
    pub afk_since: Option<i64>,
    /// AFK time of finished AFK spans, ms.
    pub afk_ms: i64,
    /// Changed since last written.
    #[serde(default)]
    pub dirty: bool,
}

impl Session {
    /// A session starting now.
    pub fn new(name: &str, rank: f64, now: i64) -> Self {
        Self {
            name: name.to_owned(),
            rank,
            joined_ms: now,
            last_activity_ms: None,
            messages: 0,
            afk_since: None,
            afk_ms: 0,
            dirty: false,
        }
    }

    /// AFK seconds up to `now`.
    pub fn afk_seconds(&self, now: i64) -> i64 {
        let open = self.afk_since.map_or(0, |t| (now - t).max(0));
        (self.afk_ms + open) / 1000
    }

    fn set_afk(&mut self, afk: bool, now: i64) {
        match (afk, self.afk_since) {
            (true, None) => self.afk_since = Some(now),
            (false, Some(t)) => {
                self.afk_ms += (now - t).max(0);
                self.afk_since = None;
            }
            _ => return,
        }
        self.dirty = true;
    }
}

/// What to write to the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new `user_sessions` row.
    Open {
        /// Room.
        room: String,
        /// The session.
        session: Session,
    },
    /// An open session's counters.
    Update {
        /// Room.
        room: String,
        /// The session.
        session: Session,
        /// As of.
        now: i64,
    },
    /// A session ended.
    Close {
        /// Room.
        room: String,
        /// The session.
        session: Session,
        /// When it ended.
        left_ms: i64,
    },
    /// A session row opened just before a stored stay of the same user was adopted:
    /// delete it.
    Discard {
        /// Room.
        room: String,
        /// The session.
        session: Session,
    },
    /// Increments of a `user_activity` row.
    Activity {
        /// Room.
        room: String,
        /// The totals to add.
        delta: ActivityDelta,
    },
}

/// What to add to a user's totals.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ActivityDelta {
    /// Display name.
    pub name: String,
    /// First seen by this delta.
    pub first_ms: i64,
    /// Last seen.
    pub last_ms: i64,
    /// Chat lines to add.
    pub messages: i64,
    /// Sessions to add.
    pub sessions: i64,
    /// Latest rank.
    pub rank: Option<f64>,
}

/// One room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Open sessions by lowercase name.
    pub sessions: BTreeMap<String, Session>,
    /// The open sessions a previous run left in the database were settled.
    pub reconciled: bool,
    /// When the bot lost the room, until the next user list.
    pub disconnected_ms: Option<i64>,
}

/// A user seen before, for `seen`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastSeen {
    /// Display name.
    pub name: String,
    /// When (unix ms).
    pub at: i64,
}

/// The whole model; also the state handed to the next version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// Rooms by name.
    pub rooms: BTreeMap<String, Room>,
    /// Last seen by `room\0lowercase name`.
    pub seen: BTreeMap<String, LastSeen>,
    /// Totals not written yet, by `room\0lowercase name`.
    pub activity: BTreeMap<String, ActivityDelta>,
}

/// A user as the server lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Name.
    pub name: String,
    /// Rank.
    pub rank: f64,
    /// AFK.
    pub afk: bool,
}

fn key(room: &str, name: &str) -> String {
    format!("{room}\0{}", name.to_lowercase())
}

impl Tracker {
    fn touch(&mut self, room: &str, name: &str, now: i64, f: impl FnOnce(&mut ActivityDelta)) {
        let k = key(room, name);
        let d = self
            .activity
            .entry(k.clone())
            .or_insert_with(|| ActivityDelta {
                name: name.to_owned(),
                first_ms: now,
                last_ms: now,
                ..ActivityDelta::default()
            });
        d.last_ms = d.last_ms.max(now);
        f(d);
        self.seen.insert(
            k,
            LastSeen {
                name: name.to_owned(),
                at: now,
            },
        );
    }

    fn open(&mut self, room: &str, user: &Listed, now: i64, out: &mut Vec<Write>) {
        let mut s = Session::new(&user.name, user.rank, now);
        if user.afk {
            s.afk_since = Some(now);
        }
        out.push(Write::Open {
            room: room.to_owned(),
            session: s.clone(),
        });
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .sessions
            .insert(user.name.to_lowercase(), s);
        let rank = user.rank;
        self.touch(room, &user.name, now, |d| {
            d.sessions += 1;
            d.rank = Some(rank);
        });
    }

    fn close(&mut self, room: &str, lower: &str, left_ms: i64, out: &mut Vec<Write>) {
        let Some(s) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.sessions.remove(lower))
        else {
            return;
        };
        let name = s.name.clone();
        out.push(Write::Close {
            room: room.to_owned(),
            session: s,
            left_ms,
        });
        self.touch(room, &name, left_ms, |_| {});
    }

    /// The server's user list (on every join): the ground truth. Users listed without a
    /// session get one; sessions of users no longer listed end when the bot lost the
    /// room (or now); sessions of users still there go on.
    pub fn userlist(&mut self, room: &str, users: &[Listed], now: i64) -> Vec<Write> {
        let mut out = Vec::new();
        let r = self.rooms.entry(room.to_owned()).or_default();
        let ended = r.disconnected_ms.take().unwrap_or(now);
        let listed: BTreeMap<String, &Listed> =
            users.iter().map(|u| (u.name.to_lowercase(), u)).collect();
        let gone: Vec<String> = r
            .sessions
            .keys()
            .filter(|k| !listed.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            self.close(room, &k, ended, &mut out);
        }
        for (k, u) in listed {
            let existing = self
                .rooms
                .get_mut(room)
                .and_then(|r| r.sessions.get_mut(&k));
            match existing {
                Some(s) => {
                    if s.rank != u.rank {
                        s.rank = u.rank;
                        s.dirty = true;
                    }
                    s.set_afk(u.afk, now);
                }
                None => self.open(room, u, now, &mut out),
            }
        }
        out
    }

    /// Sessions a previous run left open in the database for `room`: those of users
    /// present now are adopted (the stay goes on), the others end at their last activity
    /// (or their start). Runs once per room.
    pub fn reconcile(&mut self, room: &str, stored: Vec<Session>, now: i64) -> Vec<Write> {
        let mut out = Vec::new();
        let r = self.rooms.entry(room.to_owned()).or_default();
        if r.reconciled {
            return out;
        }
        r.reconciled = true;
        let mut adopted_names = Vec::new();
        for old in stored {
            let lower = old.name.to_lowercase();
            match r.sessions.get(&lower).cloned() {
                Some(current) if current.joined_ms != old.joined_ms => {
                    // The user is here: continue the stored stay instead of the one just
                    // opened (whose row is deleted again).
                    let mut adopted = old;
                    adopted.rank = current.rank;
                    adopted.messages += current.messages;
                    adopted.last_activity_ms =
                        current.last_activity_ms.or(adopted.last_activity_ms);
                    adopted.afk_since = current.afk_since;
                    adopted.dirty = true;
                    adopted_names.push(current.name.clone());
                    out.push(Write::Discard {
                        room: room.to_owned(),
                        session: current,
                    });
                    r.sessions.insert(lower, adopted);
                }
                Some(_) => {}
                None => {
                    let left = old.last_activity_ms.unwrap_or(old.joined_ms);
                    out.push(Write::Close {
                        room: room.to_owned(),
                        session: old,
                        left_ms: left,
                    });
                }
            }
        }
        for name in adopted_names {
            // The stay is not a new one after all.
            self.touch(room, &name, now, |d| d.sessions -= 1);
        }
        out
    }

    /// Rooms whose stored sessions are not settled yet.
    pub fn unreconciled(&self) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(_, r)| !r.reconciled)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `addUser`.
    pub fn join(&mut self, room: &str, user: &Listed, now: i64) -> Vec<Write> {
        let mut out = Vec::new();
        let lower = user.name.to_lowercase();
        match self
            .rooms
            .get_mut(room)
            .and_then(|r| r.sessions.get_mut(&lower))
        {
            Some(s) => {
                s.rank = user.rank;
                s.dirty = true;
            }
            None => self.open(room, user, now, &mut out),
        }
        out
    }

    /// `userLeave`.
    pub fn leave(&mut self, room: &str, name: &str, now: i64) -> Vec<Write> {
        let mut out = Vec::new();
        self.close(room, &name.to_lowercase(), now, &mut out);
        out
    }

    /// `setAFK`.
    pub fn afk(&mut self, room: &str, name: &str, afk: bool, now: i64) {
        if let Some(s) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.sessions.get_mut(&name.to_lowercase()))
        {
            s.set_afk(afk, now);
        }
    }

    /// `setUserRank`.
    pub fn rank(&mut self, room: &str, name: &str, rank: f64, now: i64) {
        if let Some(s) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.sessions.get_mut(&name.to_lowercase()))
        {
            s.rank = rank;
            s.dirty = true;
        }
        self.touch(room, name, now, |d| d.rank = Some(rank));
    }

    /// A chat line.
    pub fn chat(&mut self, room: &str, name: &str, now: i64) {
        if let Some(s) = self
            .rooms
            .get_mut(room)
            .and_then(|r| r.sessions.get_mut(&name.to_lowercase()))
        {
            s.messages += 1;
            s.last_activity_ms = Some(now);
            s.dirty = true;
        }
        self.touch(room, name, now, |d| d.messages += 1);
    }

    /// The bot lost the room: its sessions end at this time unless the next user list
    /// still lists them.
    pub fn disconnected(&mut self, room: &str, now: i64) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if r.disconnected_ms.is_none() {
            r.disconnected_ms = Some(now);
        }
    }

    /// Hands out the totals to add and the open sessions that changed.
    pub fn drain_activity(&mut self, now: i64) -> Vec<Write> {
        let mut out: Vec<Write> = std::mem::take(&mut self.activity)
            .into_iter()
            .map(|(k, delta)| Write::Activity {
                room: k.split('\0').next().unwrap_or_default().to_owned(),
                delta,
            })
            .collect();
        for (room, r) in &mut self.rooms {
            for s in r.sessions.values_mut().filter(|s| s.dirty) {
                s.dirty = false;
                out.push(Write::Update {
                    room: room.clone(),
                    session: s.clone(),
                    now,
                });
            }
        }
        out
    }

    /// The open session of `name` in `room`.
    pub fn present(&self, room: &str, name: &str) -> Option<&Session> {
        self.rooms
            .get(room)
            .and_then(|r| r.sessions.get(&name.to_lowercase()))
    }

    /// When `name` was last seen in `room` by this run (or a version before it).
    pub fn last_seen(&self, room: &str, name: &str) -> Option<&LastSeen> {
        self.seen.get(&key(room, name))
    }

    /// Users present in `room`.
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.sessions.len())
    }

    /// Keeps at most `max` last-seen entries (the most recent).
    pub fn trim_seen(&mut self, max: usize) {
        if self.seen.len() <= max {
            return;
        }
        let mut times: Vec<i64> = self.seen.values().map(|s| s.at).collect();
        times.sort_unstable();
        let cutoff = times[times.len() - max];
        self.seen.retain(|_, s| s.at >= cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(name: &str, rank: f64) -> Listed {
        Listed {
            name: name.into(),
            rank,
            afk: false,
        }
    }

    fn opened(w: &[Write]) -> Vec<String> {
        w.iter()
            .filter_map(|w| match w {
                Write::Open { session, .. } => Some(session.name.clone()),
                _ => None,
            })
            .collect()
    }

    fn closed(w: &[Write]) -> Vec<(String, i64)> {
        w.iter()
            .filter_map(|w| match w {
                Write::Close {
                    session, left_ms, ..
                } => Some((session.name.clone(), *left_ms)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn joins_and_leaves_open_and_close_sessions() {
        let mut t = Tracker::default();
        assert_eq!(opened(&t.join("r", &u("Alice", 1.0), 100)), vec!["Alice"]);
        assert!(t.join("r", &u("alice", 2.0), 150).is_empty());
        assert_eq!(t.present("r", "ALICE").unwrap().rank, 2.0);
        t.chat("r", "alice", 200);
        t.chat("r", "alice", 300);
        let w = t.leave("r", "alice", 400);
        let Write::Close {
            session, left_ms, ..
        } = &w[0]
        else {
            panic!("{w:?}")
        };
        assert_eq!((session.messages, *left_ms), (2, 400));
        assert_eq!(session.last_activity_ms, Some(300));
        assert!(t.present("r", "alice").is_none());
        assert_eq!(t.last_seen("r", "Alice").unwrap().at, 400);
        assert!(t.leave("r", "alice", 500).is_empty());
    }

    #[test]
    fn the_user_list_is_the_ground_truth_on_rejoin() {
        let mut t = Tracker::default();
        t.userlist("r", &[u("a", 0.0), u("b", 0.0)], 100);
        t.disconnected("r", 500);
        t.disconnected("r", 600);
        // Back after the gap: b left meanwhile (at the disconnect, as far as we know), c
        // arrived, a stayed.
        let w = t.userlist("r", &[u("a", 0.0), u("c", 1.0)], 900);
        assert_eq!(closed(&w), vec![("b".to_owned(), 500)]);
        assert_eq!(opened(&w), vec!["c"]);
        assert_eq!(t.present("r", "a").unwrap().joined_ms, 100);
        // The next list without a disconnect ends sessions now.
        let w = t.userlist("r", &[u("c", 1.0)], 1000);
        assert_eq!(closed(&w), vec![("a".to_owned(), 1000)]);
    }

    #[test]
    fn afk_time_accumulates() {
        let mut t = Tracker::default();
        t.join("r", &u("a", 0.0), 0);
        t.afk("r", "a", true, 1_000);
        t.afk("r", "a", true, 2_000);
        t.afk("r", "a", false, 5_000);
        t.afk("r", "a", true, 10_000);
        assert_eq!(t.present("r", "a").unwrap().afk_seconds(12_000), 6);
        let w = t.leave("r", "a", 13_000);
        let Write::Close { session, .. } = &w[0] else {
            panic!()
        };
        assert_eq!(session.afk_seconds(13_000), 7);
        // A user listed as AFK starts AFK.
        t.userlist(
            "r",
            &[Listed {
                name: "z".into(),
                rank: 0.0,
                afk: true,
            }],
            20_000,
        );
        assert_eq!(t.present("r", "z").unwrap().afk_seconds(23_000), 3);
    }

    #[test]
    fn activity_deltas_add_up_and_drain_once() {
        let mut t = Tracker::default();
        t.join("r", &u("a", 1.0), 10);
        t.chat("r", "a", 20);
        t.chat("r", "A", 30);
        t.chat("r", "ghost", 40);
        let w = t.drain_activity(50);
        let deltas: BTreeMap<String, ActivityDelta> = w
            .iter()
            .filter_map(|w| match w {
                Write::Activity { delta, .. } => Some((delta.name.to_lowercase(), delta.clone())),
                _ => None,
            })
            .collect();
        let a = &deltas["a"];
        assert_eq!(
            (a.messages, a.sessions, a.first_ms, a.last_ms),
            (2, 1, 10, 30)
        );
        assert_eq!(a.rank, Some(1.0));
        assert_eq!(deltas["ghost"].messages, 1);
        assert!(
            w.iter()
                .any(|w| matches!(w, Write::Update { session, .. } if session.messages == 2))
        );
        // Nothing changed since: nothing to write.
        assert!(t.drain_activity(60).is_empty());
    }

    #[test]
    fn stored_sessions_are_adopted_or_closed_once() {
        let mut t = Tracker::default();
        t.userlist("r", &[u("a", 1.0)], 1_000);
        t.chat("r", "a", 1_100);
        let mut old_a = Session::new("a", 1.0, 10);
        old_a.messages = 5;
        let mut old_b = Session::new("b", 0.0, 20);
        old_b.last_activity_ms = Some(30);
        let w = t.reconcile("r", vec![old_a, old_b], 1_200);
        assert_eq!(closed(&w), vec![("b".to_owned(), 30)]);
        assert!(
            w.iter()
                .any(|w| matches!(w, Write::Discard { session, .. } if session.joined_ms == 1_000))
        );
        let a = t.present("r", "a").unwrap();
        assert_eq!((a.joined_ms, a.messages), (10, 6));
        assert!(
            t.reconcile("r", vec![Session::new("c", 0.0, 5)], 1_300)
                .is_empty()
        );
    }

    #[test]
    fn last_seen_memory_is_bounded() {
        let mut t = Tracker::default();
        for i in 0..10 {
            t.chat("r", &format!("u{i}"), i);
        }
        t.trim_seen(3);
        assert_eq!(t.seen.len(), 3);
        assert!(t.last_seen("r", "u9").is_some());
        assert!(t.last_seen("r", "u0").is_none());
    }
}
