//! The media tracker's model, free of I/O: each room's playlist (who queued what), the
//! play in progress and today's counts, changed by Cytube events and turning into
//! [`Write`]s for the database.
//!
//! A play starts with `changeMedia` and ends with the next `changeMedia` (or when the
//! playlist empties). How much of it was watched is the furthest position seen
//! (`mediaUpdate`), extrapolated by the wall clock from the last update while playing,
//! capped at the media's length; a play counts as completed at 90 % or more. A rejoin
//! continues the play instead of starting another: the server repeats `changeMedia` of
//! the media already playing on every join of the bot, at the position it has reached,
//! or, for live media (twitch, rtmp, hls, …: no length), at position 0 again; so the
//! same live media with the same playlist item (uid) current is the same play. The host
//! knows a rejoin when it sees one and tags that `changeMedia` `repeat`
//! ([`Tracker::repeated`]): with the tag the play goes on whatever the position.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The share of a media that counts as completed.
pub const COMPLETED_AT: f64 = 0.9;

/// A position further than this into the media on `changeMedia` means the bot joined a
/// play in progress, seconds.
const REJOIN_AFTER: f64 = 1.0;

/// What plays, as Cytube describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Media {
    /// Provider id.
    pub id: String,
    /// Provider type (`yt`, …).
    pub kind: String,
    /// Title.
    pub title: String,
    /// Length in seconds (0 for live media).
    pub seconds: f64,
}

impl Media {
    fn same(&self, other: &Media) -> bool {
        self.id == other.id && self.kind == other.kind
    }
}

/// A playlist entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The media.
    pub media: Media,
    /// Who queued it.
    pub queued_by: String,
    /// Removed after it plays.
    pub temp: bool,
}

/// The play in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Play {
    /// The media.
    pub media: Media,
    /// Who queued it, when known.
    pub queued_by: Option<String>,
    /// When it started (unix ms); with room and media, the row's key.
    pub started_ms: i64,
    /// Furthest position seen, seconds.
    pub furthest: f64,
    /// Position at the last update, seconds.
    pub position: f64,
    /// When the last update came (unix ms).
    pub updated_ms: i64,
    /// Paused at the last update.
    pub paused: bool,
    /// The playlist item (uid) current when it started, if known: a live media
    /// repeated while the same item is current is the same play.
    #[serde(default)]
    pub uid: Option<u64>,
}

impl Play {
    /// The position now, extrapolated from the last update while playing.
    pub fn position_at(&self, now: i64) -> f64 {
        let mut p = self.position;
        if !self.paused {
            p += (now - self.updated_ms).max(0) as f64 / 1000.0;
        }
        if self.media.seconds > 0.0 {
            p = p.min(self.media.seconds);
        }
        p.max(0.0)
    }

    /// Seconds watched by `now`.
    pub fn watched(&self, now: i64) -> f64 {
        let w = self.furthest.max(self.position_at(now)).max(0.0);
        if self.media.seconds > 0.0 {
            w.min(self.media.seconds)
        } else {
            w
        }
    }

    /// Whether it counts as completed when it ends at `now` (unknown for live media).
    pub fn completed(&self, now: i64) -> Option<bool> {
        (self.media.seconds > 0.0).then(|| self.watched(now) / self.media.seconds >= COMPLETED_AT)
    }
}

/// Today's plays in one room, as seen by this run (the database has the full record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Today {
    /// Start of the day (unix ms).
    pub day_ms: i64,
    /// Plays started.
    pub plays: u64,
    /// Plays ended completed.
    pub completed: u64,
    /// Plays by title.
    pub titles: BTreeMap<String, u64>,
}

/// One room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// The playlist by uid.
    pub playlist: BTreeMap<u64, Item>,
    /// The uid playing.
    pub current: Option<u64>,
    /// The play in progress.
    pub play: Option<Play>,
    /// Today's counts.
    pub today: Today,
}

/// What to write to the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A play began.
    PlayStarted {
        /// Room.
        room: String,
        /// The play.
        play: Play,
    },
    /// A play ended.
    PlayEnded {
        /// Room.
        room: String,
        /// The play.
        play: Play,
        /// When.
        ended_ms: i64,
        /// Seconds watched.
        watched: f64,
        /// Completed (None for live media).
        completed: Option<bool>,
    },
    /// Someone queued an item.
    Queued {
        /// Room.
        room: String,
        /// Playlist uid.
        uid: u64,
        /// The item.
        item: Item,
        /// When.
        at: i64,
    },
    /// An item left the playlist.
    Removed {
        /// Room.
        room: String,
        /// Playlist uid.
        uid: u64,
        /// When.
        at: i64,
    },
}

/// The whole model; also the state handed to the next version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// Rooms by name.
    pub rooms: BTreeMap<String, Room>,
}

impl Tracker {
    fn room(&mut self, room: &str) -> &mut Room {
        self.rooms.entry(room.to_owned()).or_default()
    }

    /// The whole playlist (on join): who queued what, without history entries (these
    /// items were queued before).
    pub fn playlist(&mut self, room: &str, items: Vec<(u64, Item)>) {
        self.room(room).playlist = items.into_iter().collect();
    }

    /// `queue`.
    pub fn queued(&mut self, room: &str, uid: u64, item: Item, now: i64) -> Vec<Write> {
        self.room(room).playlist.insert(uid, item.clone());
        vec![Write::Queued {
            room: room.to_owned(),
            uid,
            item,
            at: now,
        }]
    }

    /// `delete`.
    pub fn deleted(&mut self, room: &str, uid: u64, now: i64) -> Vec<Write> {
        if self.room(room).playlist.remove(&uid).is_none() {
            return Vec::new();
        }
        vec![Write::Removed {
            room: room.to_owned(),
            uid,
            at: now,
        }]
    }

    /// `setCurrent`.
    pub fn set_current(&mut self, room: &str, uid: u64) {
        self.room(room).current = Some(uid);
    }

    /// `changeMedia`: ends the play in progress and starts the next (or continues it on
    /// a rejoin).
    pub fn change(
        &mut self,
        room: &str,
        media: Media,
        position: f64,
        paused: bool,
        now: i64,
        day_ms: i64,
    ) -> Vec<Write> {
        let mut out = Vec::new();
        let r = self.room(room);
        let current = r.current;
        if let Some(play) = &mut r.play
            && play.media.same(&media)
            && (position > REJOIN_AFTER || (media.seconds <= 0.0 && play.uid == current))
        {
            play.position = position;
            play.furthest = play.furthest.max(position);
            play.updated_ms = now;
            play.paused = paused;
            return out;
        }
        out.extend(self.end(room, now));
        let r = self.room(room);
        let queued_by = r
            .current
            .and_then(|uid| r.playlist.get(&uid))
            .filter(|i| i.media.same(&media))
            .or_else(|| r.playlist.values().find(|i| i.media.same(&media)))
            .map(|i| i.queued_by.clone())
            .filter(|q| !q.is_empty());
        let play = Play {
            media,
            queued_by,
            started_ms: now,
            furthest: position.max(0.0),
            position,
            updated_ms: now,
            paused,
            uid: r.current,
        };
        if r.today.day_ms != day_ms {
            r.today = Today {
                day_ms,
                ..Today::default()
            };
        }
        r.today.plays += 1;
        *r.today.titles.entry(play.media.title.clone()).or_default() += 1;
        r.play = Some(play.clone());
        out.push(Write::PlayStarted {
            room: room.to_owned(),
            play,
        });
        out
    }

    /// A `changeMedia` the host tagged `repeat`: the server repeated, on the bot's
    /// rejoin, the media of the play in progress. The play goes on (whatever the
    /// position: a recorded media rejoined in its first second, or still in its lead-in,
    /// is no new play either); a play this model has not seen starts as usual.
    pub fn repeated(
        &mut self,
        room: &str,
        media: Media,
        position: f64,
        paused: bool,
        now: i64,
        day_ms: i64,
    ) -> Vec<Write> {
        if let Some(play) = &mut self.room(room).play
            && play.media.same(&media)
        {
            play.position = position;
            play.furthest = play.furthest.max(position);
            play.updated_ms = now;
            play.paused = paused;
            return Vec::new();
        }
        self.change(room, media, position, paused, now, day_ms)
    }

    /// `mediaUpdate`.
    pub fn update(&mut self, room: &str, position: f64, paused: bool, now: i64) {
        if let Some(play) = &mut self.room(room).play {
            play.position = position;
            play.furthest = play.furthest.max(position);
            play.updated_ms = now;
            play.paused = paused;
        }
    }

    /// Ends the play in progress (the next media starts, or nothing plays any more).
    pub fn end(&mut self, room: &str, now: i64) -> Vec<Write> {
        let r = self.room(room);
        let Some(play) = r.play.take() else {
            return Vec::new();
        };
        let watched = play.watched(now);
        let completed = play.completed(now);
        if completed == Some(true) {
            r.today.completed += 1;
        }
        vec![Write::PlayEnded {
            room: room.to_owned(),
            play,
            ended_ms: now,
            watched,
            completed,
        }]
    }

    /// The play in progress in `room`.
    pub fn now_playing(&self, room: &str) -> Option<&Play> {
        self.rooms.get(room).and_then(|r| r.play.as_ref())
    }

    /// Today's counts in `room` (empty if the day changed).
    pub fn today(&self, room: &str, day_ms: i64) -> Today {
        self.rooms
            .get(room)
            .map(|r| r.today.clone())
            .filter(|t| t.day_ms == day_ms)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(id: &str, seconds: f64) -> Media {
        Media {
            id: id.into(),
            kind: "yt".into(),
            title: format!("Title {id}"),
            seconds,
        }
    }

    fn item(id: &str, seconds: f64, by: &str) -> Item {
        Item {
            media: media(id, seconds),
            queued_by: by.into(),
            temp: false,
        }
    }

    fn ended(w: &[Write]) -> Option<(f64, Option<bool>, i64)> {
        w.iter().find_map(|w| match w {
            Write::PlayEnded {
                watched,
                completed,
                ended_ms,
                ..
            } => Some((*watched, *completed, *ended_ms)),
            _ => None,
        })
    }

    #[test]
    fn a_play_runs_from_one_change_to_the_next() {
        let mut t = Tracker::default();
        t.playlist(
            "r",
            vec![(1, item("a", 100.0, "alice")), (2, item("b", 60.0, "bob"))],
        );
        t.set_current("r", 1);
        let w = t.change("r", media("a", 100.0), -3.0, true, 0, 0);
        assert!(ended(&w).is_none());
        assert_eq!(
            t.now_playing("r").unwrap().queued_by.as_deref(),
            Some("alice")
        );
        t.update("r", 0.0, false, 3_000);
        t.update("r", 50.0, false, 53_000);
        t.update("r", 95.0, false, 98_000);
        t.set_current("r", 2);
        let w = t.change("r", media("b", 60.0), -3.0, true, 100_000, 0);
        let (watched, completed, at) = ended(&w).unwrap();
        // 95 s at the last update, 2 s more of wall clock, capped at the length.
        assert!((watched - 97.0).abs() < 1e-9, "{watched}");
        assert_eq!((completed, at), (Some(true), 100_000));
        assert_eq!(
            t.now_playing("r").unwrap().queued_by.as_deref(),
            Some("bob")
        );
        let today = t.today("r", 0);
        assert_eq!((today.plays, today.completed), (2, 1));
    }

    #[test]
    fn a_skip_is_not_a_completion() {
        let mut t = Tracker::default();
        t.change("r", media("a", 100.0), 0.0, false, 0, 0);
        t.update("r", 30.0, false, 30_000);
        let (watched, completed, _) =
            ended(&t.change("r", media("b", 10.0), 0.0, false, 31_000, 0)).unwrap();
        assert!((watched - 31.0).abs() < 1e-9);
        assert_eq!(completed, Some(false));
        // Paused at the last update: no extrapolation.
        t.update("r", 5.0, true, 40_000);
        let (watched, _, _) = ended(&t.end("r", 90_000)).unwrap();
        assert!((watched - 5.0).abs() < 1e-9);
    }

    #[test]
    fn a_rejoin_continues_the_play() {
        let mut t = Tracker::default();
        t.change("r", media("a", 100.0), 0.0, false, 0, 0);
        t.update("r", 40.0, false, 40_000);
        let w = t.change("r", media("a", 70.0), 70.0, false, 70_000, 0);
        assert!(w.is_empty());
        assert_eq!(t.now_playing("r").unwrap().started_ms, 0);
        // The same media from its start is a new play (a repeat).
        let w = t.change("r", media("a", 100.0), -3.0, true, 200_000, 0);
        assert!(ended(&w).is_some());
        assert_eq!(t.today("r", 0).plays, 2);
    }

    /// Issue: the server repeats `changeMedia` at position 0 for live media on every
    /// join of the bot, and each repeat counted as a new play (7 plays of an item that
    /// started 3 times).
    #[test]
    fn a_live_media_repeated_at_zero_on_a_rejoin_is_the_same_play() {
        let mut t = Tracker::default();
        let live = media("twitch", 0.0);
        t.set_current("r", 5);
        assert_eq!(t.change("r", live.clone(), 0.0, false, 0, 0).len(), 1);
        for rejoin in 1..=6 {
            // The join sequence: playlist again, setCurrent (twice), changeMedia at 0.
            t.set_current("r", 5);
            t.set_current("r", 5);
            let w = t.change("r", live.clone(), 0.0, false, rejoin * 60_000, 0);
            assert!(w.is_empty(), "rejoin {rejoin}: {w:?}");
        }
        assert_eq!(t.today("r", 0).plays, 1);
        assert_eq!(t.now_playing("r").unwrap().started_ms, 0);
        // Another item, then the live one queued again (a new uid): two more plays.
        t.set_current("r", 6);
        assert!(ended(&t.change("r", media("a", 10.0), 0.0, false, 500_000, 0)).is_some());
        t.set_current("r", 7);
        let w = t.change("r", live.clone(), 0.0, false, 600_000, 0);
        assert!(matches!(w.last(), Some(Write::PlayStarted { .. })), "{w:?}");
        assert_eq!(t.today("r", 0).plays, 3);
    }

    #[test]
    fn a_repeat_tagged_by_the_host_continues_the_play_whatever_the_position() {
        let mut t = Tracker::default();
        t.set_current("r", 1);
        assert_eq!(t.change("r", media("a", 100.0), -3.0, true, 0, 0).len(), 1);
        // Rejoined during the lead-in: the position alone would say "a new play".
        assert!(
            t.repeated("r", media("a", 100.0), -1.0, true, 2_000, 0)
                .is_empty()
        );
        assert_eq!(t.today("r", 0).plays, 1);
        // A repeat of media this model never saw playing starts its play.
        let w = t.repeated("r", media("b", 100.0), 30.0, false, 9_000, 0);
        assert!(matches!(w.last(), Some(Write::PlayStarted { .. })), "{w:?}");
    }

    #[test]
    fn live_media_have_no_completion_and_queue_history_is_written() {
        let mut t = Tracker::default();
        t.change("r", media("live", 0.0), 0.0, false, 0, 0);
        let (watched, completed, _) = ended(&t.end("r", 120_000)).unwrap();
        assert!((watched - 120.0).abs() < 1e-9);
        assert_eq!(completed, None);
        let w = t.queued("r", 7, item("x", 10.0, "carol"), 5);
        assert!(matches!(&w[0], Write::Queued { uid: 7, item, .. } if item.queued_by == "carol"));
        assert_eq!(t.deleted("r", 7, 6).len(), 1);
        assert!(t.deleted("r", 7, 7).is_empty());
    }

    #[test]
    fn todays_counts_restart_with_the_day() {
        let mut t = Tracker::default();
        t.change("r", media("a", 10.0), 0.0, false, 0, 0);
        t.change("r", media("b", 10.0), 0.0, false, 1, 86_400_000);
        assert_eq!(t.today("r", 86_400_000).plays, 1);
        assert_eq!(t.today("r", 0).plays, 0);
    }
}
