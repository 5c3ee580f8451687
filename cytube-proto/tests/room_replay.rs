//! Replays what each client of the captures received through `RoomState` and
//! checks the state against what the logs say happened.

use std::collections::BTreeMap;

use daz_cytube_proto::events::ServerEvent;
use daz_cytube_proto::room::{Applied, RoomState};
use daz_cytube_sim::capture::{Dir, fixtures_dir, frames, is_truncated, split_event};
use serde_json::value::RawValue;

/// The outcome of replaying one client's view.
struct Replay {
    room: RoomState,
    desyncs: Vec<String>,
    /// Playlist order after each event, by capture ms.
    order: Vec<(u64, Vec<u64>)>,
    /// Lines the recorder cut (their JSON is incomplete), skipped.
    truncated: usize,
}

/// Replays the frames `who` received.
fn replay(file: &str, who: &str) -> Option<Replay> {
    let dir = fixtures_dir()?;
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut room = RoomState::default();
    let mut desyncs = Vec::new();
    let mut order = Vec::new();
    let mut truncated = 0;
    for l in frames(&text) {
        if l.dir != Dir::In || l.who.as_deref() != Some(who) {
            continue;
        }
        if is_truncated(&l.body) {
            truncated += 1;
            continue;
        }
        let (name, payload) = split_event(&l.body);
        let raw: Option<Box<RawValue>> = payload.map(|p| serde_json::from_str(p).unwrap());
        let ev = ServerEvent::decode(name, raw.as_deref())
            .unwrap_or_else(|e| panic!("{file}:{}: {e}", l.lineno));
        if let Applied::Desync(d) = room.apply(&ev) {
            desyncs.push(format!("{file}:{}: {d}", l.lineno));
        }
        order.push((l.ms, room.playlist_uids()));
    }
    Some(Replay {
        room,
        desyncs,
        order,
        truncated,
    })
}

fn uids_at(order: &[(u64, Vec<u64>)], ms: u64) -> Vec<u64> {
    order
        .iter()
        .rev()
        .find(|(t, _)| *t <= ms)
        .map(|(_, u)| u.clone())
        .unwrap_or_default()
}

#[test]
fn registered_session_bot_view() {
    let Some(Replay {
        room,
        desyncs,
        order,
        truncated,
    }) = replay("registered-channel-session.log", "bot")
    else {
        return;
    };
    assert_eq!(truncated, 0, "the bot's view is complete");
    assert!(desyncs.is_empty(), "{desyncs:#?}");

    // Playlist history as the log narrates it.
    assert_eq!(uids_at(&order, 9607), [0], "tw_a queued with after:prepend");
    assert_eq!(uids_at(&order, 10406), [0, 1], "tw_b after 0");
    assert_eq!(uids_at(&order, 11209), [0, 2, 1], "tw_c (pos next) after 0");
    assert_eq!(uids_at(&order, 12711), [2, 0, 1], "moveVideo 2 to the top");
    assert_eq!(uids_at(&order, 13417), [2, 0], "delete 1");
    assert_eq!(uids_at(&order, 26125), [0], "temp item 2 deleted on jumpTo");

    // Identity: logged in as testbot, rank back to 1 after the mod round-trip.
    assert!(room.me.logged_in);
    assert!(!room.me.guest);
    assert_eq!(room.me.name.as_deref(), Some("testbot"));
    assert_eq!(room.me.rank, 1.0);
    assert!(room.is_me("TestBot"));

    // Users: chanboss left at +46083ms; testbot is back from AFK, unmuted, rank 1.
    let names: Vec<&str> = room.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["testbot"]);
    let me = room.user("testbot").unwrap();
    assert_eq!(me.rank, 1.0);
    assert!(!me.meta.afk && !me.meta.muted);
    assert_eq!(room.rank_of("chanboss"), None);
    assert_eq!(room.leader, None, "leader removed at +28034ms");
    assert_eq!(room.usercount, 1);

    // Playlist and playback: only tw_a (uid 0) left, current, playing from 0.
    assert_eq!(room.playlist_uids(), [0]);
    assert_eq!(room.current_uid, Some(0));
    let cur = room.current_item().unwrap();
    assert_eq!(cur.media.id, "cytube_test_stream_a");
    assert_eq!(cur.queueby, "chanboss");
    let np = room.now_playing.as_ref().unwrap();
    assert_eq!(np.media.id, "cytube_test_stream_a");
    assert_eq!(np.media.seconds, 8.0);
    assert_eq!((np.current_time, np.paused), (0.0, false));
    assert_eq!(room.playlist_meta.count, 1);
    assert_eq!(room.playlist_meta.raw_time, 8.0);
    assert!(room.playlist_locked);

    // Channel: MOTD with the script stripped, antiflood and new-user delay back off.
    assert_eq!(room.motd, "Welcome <b>bots</b>! ");
    let opts = room.options.as_ref().unwrap();
    assert!(!opts.chat_antiflood);
    assert_eq!(opts.new_user_chat_delay, 0);
    assert_eq!(opts.rest["pagetitle"], "botchan");
    assert_eq!(room.permissions.get("playlistadd"), Some(1.5));
    assert_eq!(room.permissions.get("motdedit"), Some(3.0));
    assert_eq!(room.drink_count, 0);
    assert!(room.emotes.is_empty());
    assert!(room.poll.is_none(), "the bot never saw a poll open");
    assert_eq!(room.voteskip.map(|v| (v.count, v.need)), Some((0, 0)));
    assert!(!room.unregistered);
    assert_eq!(
        room.kicked.as_deref(),
        Some("Attempted setMotd with insufficient permission")
    );

    // The API view serializes.
    let v = serde_json::to_value(&room).unwrap();
    assert_eq!(v["playlist"][0]["uid"], 0);
    assert_eq!(v["users"][0]["name"], "testbot");
}

#[test]
fn registered_session_owner_ranks() {
    let Some(r) = replay("registered-channel-session.log", "owner") else {
        return;
    };
    // The recorder cut six owner lines (setPermissions, five channelOpts).
    assert_eq!(r.truncated, 6);
    let room = r.room;
    assert_eq!(room.me.rank, 5.0);
    assert_eq!(room.rank_of("chanboss"), Some(5.0));
    assert_eq!(room.rank_of("testbot"), Some(1.0));
    // Moderators see aliases and a masked IP in user meta.
    let bot = room.user("testbot").unwrap();
    assert_eq!(
        bot.meta.aliases.as_deref(),
        Some(&["testbot".to_owned()][..])
    );
}

#[test]
fn guest_session_views() {
    let Some(r) = replay("guest-errors-throttle-session.log", "g1") else {
        return;
    };
    assert!(r.desyncs.is_empty(), "{:#?}", r.desyncs);
    let g1 = r.room;
    assert!(g1.me.logged_in && g1.me.guest);
    assert_eq!(g1.me.rank, 0.0);
    assert!(g1.unregistered);
    assert!(!g1.playlist_locked);
    assert!(g1.poll.is_none(), "poll closed at +4275ms");
    let names: Vec<&str> = g1.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["guestbot", "otheruser"]);
    assert_eq!(g1.usercount, 5);
    assert_eq!(g1.playlist_uids(), [0]);

    // The second guest's login was refused.
    let g2 = replay("guest-errors-throttle-session.log", "g2")
        .unwrap()
        .room;
    assert!(!g2.me.logged_in);
    assert_eq!(
        g2.me.login_error.as_deref(),
        Some("Guest logins are restricted to one per IP address per 60 seconds.")
    );

    // The password guest needed the password, then got in.
    let pw = replay("guest-errors-throttle-session.log", "pwguest")
        .unwrap()
        .room;
    assert!(!pw.need_password);
    assert_eq!(pw.kicked.as_deref(), Some("bye bye"));

    // dup2 saw testbot leave and come back (duplicate login), then mute/unmute.
    let dup2 = replay("guest-errors-throttle-session.log", "dup2")
        .unwrap()
        .room;
    let bot = dup2.user("testbot").unwrap();
    assert!(!bot.meta.muted);
    assert_eq!(dup2.rank_of("chanboss"), Some(5.0));
    assert_eq!(dup2.user("pwguest"), None, "kicked at +22695ms");
}

#[test]
fn every_client_view_replays_without_panicking() {
    let Some(dir) = fixtures_dir() else { return };
    for file in [
        "registered-channel-session.log",
        "guest-errors-throttle-session.log",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut clients: BTreeMap<String, usize> = BTreeMap::new();
        for l in frames(&text) {
            if let Some(w) = l.who {
                *clients.entry(w).or_default() += 1;
            }
        }
        assert!(clients.len() >= 2, "{file}: clients {clients:?}");
        for who in clients.keys() {
            let r = replay(file, who).unwrap();
            // Every view ends with a consistent playlist: uids unique, count matches.
            let uids = r.room.playlist_uids();
            let mut sorted = uids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), uids.len(), "{file} {who}: {uids:?}");
            assert_eq!(uids.len(), r.room.playlist.len());
        }
    }
}
