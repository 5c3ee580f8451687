//! Unit tests of the playlist plugin against the SDK's fake host: the frames it sends
//! and when it refuses to, the answers to the server's `queue` and failures, the
//! per-user limit, the blacklist, the auto-DJ and the hand-over on a hot reload.

use std::time::Duration;

use daz_plugin_api::{
    routing::testing::{ROOM, check_command_examples, command_for, feed},
    testing::Harness,
};
use serde_json::{Value, json};

use super::*;

const YT: &str = "https://youtu.be/dQw4w9WgXcQ";

/// Registered-channel permissions (the captured defaults).
fn perms() -> Value {
    json!({"playlistadd": 1.5, "playlistnext": 1.5, "playlistjump": 1.5, "playlistshuffle": 2,
           "oplaylistadd": -1, "oplaylistnext": 1.5, "oplaylistjump": 1.5,
           "playlistaddlive": 1.5, "playlistaddcustom": 3, "playlistaddrawfile": 2,
           "voteskip": -1})
}

fn room(h: &mut Harness<Playlist>, bot_rank: f64, locked: bool, items: Value) {
    h.set_room_state(
        ROOM,
        json!({"state": {
            "me": {"name": "bot", "logged_in": true, "rank": bot_rank},
            "permissions": perms(),
            "playlist_locked": locked,
            "playlist": items,
            "now_playing": {"media": {"id": "a", "title": "Song A", "seconds": 60, "type": "yt"},
                            "current_time": 1, "paused": false},
            "options": {"allow_voteskip": true},
        }}),
    );
}

fn item(uid: u64, kind: &str, id: &str, title: &str) -> Value {
    json!({"media": {"id": id, "title": title, "seconds": 200, "duration": "03:20", "type": kind},
           "uid": uid, "temp": true, "queueby": "bot"})
}

fn say(h: &mut Harness<Playlist>, line: &str, user: &str, rank: f64) {
    let cmd = command_for::<Playlist>(line, user, rank, h.now_ms()).expect("a command");
    feed(h, &cmd).unwrap();
}

fn frames(h: &Harness<Playlist>, event: &str) -> Vec<Value> {
    let subject = format!("cytube.out.{ROOM}.{event}");
    h.published()
        .into_iter()
        .filter(|r| r.subject == subject)
        .map(|r| r.payload)
        .collect()
}

fn last_reply(h: &Harness<Playlist>) -> String {
    h.chat_replies().last().cloned().unwrap_or_default()
}

fn server(h: &mut Harness<Playlist>, event: &str, payload: Value) {
    h.publish(&format!("cytube.in.{ROOM}.{event}"), &payload)
        .unwrap();
}

#[test]
fn chat_examples() {
    let failures = check_command_examples::<Playlist>(json!({}), |_| {}).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn add_sends_queue_and_answers_when_the_server_queued_it() {
    let mut h = Harness::<Playlist>::new(json!({})).unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, &format!("!add {YT}"), "bob", 1.0);
    assert_eq!(
        frames(&h, "queue"),
        vec![json!({"id": "dQw4w9WgXcQ", "type": "yt", "pos": "end", "temp": true})]
    );
    assert!(h.chat_replies().is_empty());
    server(
        &mut h,
        "queue",
        json!({"item": item(7, "yt", "dQw4w9WgXcQ", "Never <Gonna>"), "after": "prepend"}),
    );
    assert_eq!(last_reply(&h), "Added “Never <Gonna>” (3:20) for bob.");
    // Next, by rank.
    say(&mut h, "!add next https://vimeo.com/76979871", "bob", 1.0);
    assert!(last_reply(&h).contains("adding next is for rank 2"));
    say(&mut h, "!add https://vimeo.com/76979871 next", "mod", 2.0);
    assert_eq!(frames(&h, "queue")[1]["pos"], "next");
}

#[test]
fn a_locked_playlist_is_detected_before_and_after_sending() {
    let mut h = Harness::<Playlist>::new(json!({})).unwrap();
    room(&mut h, 1.0, true, json!([]));
    say(&mut h, &format!("!add {YT}"), "bob", 1.0);
    assert_eq!(
        last_reply(&h),
        "The playlist is locked and adding needs rank 1.5 (leaders); my rank is 1. Ask a moderator to unlock it or to promote me."
    );
    assert!(frames(&h, "queue").is_empty());
    // Unlocked, anyone may add (oplaylistadd -1).
    room(&mut h, 1.0, false, json!([]));
    say(&mut h, &format!("!add {YT}"), "bob", 1.0);
    assert_eq!(frames(&h, "queue").len(), 1);
    // Locked meanwhile: the server ignores the frame; the user hears it after answer_ms.
    room(&mut h, 1.0, true, json!([]));
    h.advance(Duration::from_millis(9_000)).unwrap();
    assert!(!last_reply(&h).contains("was not added"));
    h.advance(Duration::from_millis(2_000)).unwrap();
    assert_eq!(
        last_reply(&h),
        "yt:dQw4w9WgXcQ was not added: the playlist is locked and the server ignored my request without a word."
    );
}

#[test]
fn server_refusals_reach_the_user() {
    let mut h = Harness::<Playlist>::new(json!({})).unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, "!add https://www.twitch.tv/SomeStream", "bob", 1.0);
    let sent = frames(&h, "queue")[0].clone();
    assert_eq!(sent["type"], "tw");
    let report = h.event(
        &format!("cytube.out.{ROOM}.failed"),
        &json!({"original": {"event": "queue", "subject": format!("cytube.out.{ROOM}.queue"),
                             "payload": sent, "source": "playlist", "id": "1"},
                "reason": "queueFail: You are adding videos too quickly", "code": "queue_failed"}),
    );
    h.feed(&report).unwrap();
    assert_eq!(
        last_reply(&h),
        "The server did not add it: You are adding videos too quickly"
    );
    // Nothing is said again when the request would have timed out.
    let n = h.chat_replies().len();
    h.advance(Duration::from_secs(20)).unwrap();
    assert_eq!(h.chat_replies().len(), n);
}

#[test]
fn bad_links_limits_duplicates_and_the_bots_rank_for_special_media() {
    let mut h = Harness::<Playlist>::new(json!({"max_per_user": 2})).unwrap();
    room(
        &mut h,
        2.0,
        true,
        json!([item(1, "yt", "aaaaaaaaaaa", "A")]),
    );
    say(&mut h, "!add", "bob", 1.0);
    assert!(last_reply(&h).contains("Give me a link"));
    say(&mut h, "!add <script>alert(1)</script>", "bob", 1.0);
    assert!(last_reply(&h).contains("I cannot add that link"));
    say(&mut h, "!add https://youtu.be/aaaaaaaaaaa", "bob", 1.0);
    assert_eq!(last_reply(&h), "That is already on the playlist.");
    say(&mut h, "!add https://cdn.example.org/x.json", "bob", 1.0);
    assert_eq!(
        last_reply(&h),
        "Adding custom embeds needs rank 3 (channel admins) here; my rank is 2."
    );
    say(&mut h, "!add a b", "bob", 1.0);
    assert!(last_reply(&h).contains("One link at a time"));
    say(&mut h, "!add yt:bbbbbbbbbbb", "bob", 1.0);
    say(&mut h, "!add yt:ccccccccccc", "bob", 1.0);
    say(&mut h, "!add yt:ddddddddddd", "bob", 1.0);
    assert_eq!(
        last_reply(&h),
        "bob, you have 2 items on the playlist already (the most is 2); wait until one has played."
    );
    // Moderators have no limit; a played (deleted) item frees a place.
    say(&mut h, "!add yt:ddddddddddd", "mod", 2.0);
    assert_eq!(frames(&h, "queue").len(), 3);
    server(
        &mut h,
        "queue",
        json!({"item": item(2, "yt", "bbbbbbbbbbb", "B"), "after": 1}),
    );
    server(
        &mut h,
        "queue",
        json!({"item": item(3, "yt", "ccccccccccc", "C"), "after": 2}),
    );
    server(&mut h, "delete", json!({"uid": 2}));
    say(&mut h, "!add yt:eeeeeeeeeee", "bob", 1.0);
    assert_eq!(frames(&h, "queue").len(), 4);
    say(&mut h, "!add yt:fffffffffff", "guest", 0.0);
    assert!(last_reply(&h).contains("!add is for rank 1 (registered users)"));
}

#[test]
fn the_blacklist_from_chat_and_from_the_configuration() {
    let mut h = Harness::<Playlist>::new(json!({"blacklist": ["https://vimeo.com/1"]})).unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, "!add https://vimeo.com/1", "bob", 1.0);
    assert_eq!(last_reply(&h), "That one is blacklisted here.");
    say(&mut h, &format!("!blacklist add {YT}"), "bob", 1.0);
    assert!(last_reply(&h).contains("!blacklist is for rank 2"));
    say(&mut h, &format!("!blacklist add {YT}"), "mod", 2.0);
    assert_eq!(last_reply(&h), "Blacklisted yt:dQw4w9WgXcQ.");
    say(&mut h, "!add yt:dQw4w9WgXcQ", "bob", 1.0);
    assert_eq!(last_reply(&h), "That one is blacklisted here.");
    say(&mut h, "!blacklist", "mod", 2.0);
    assert_eq!(last_reply(&h), "Blacklist (2): vi:1 · yt:dQw4w9WgXcQ");
    say(&mut h, "!blacklist remove https://vimeo.com/1", "mod", 2.0);
    assert!(last_reply(&h).contains("only the operator"));
    h.reload().unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, &format!("!blacklist remove {YT}"), "mod", 2.0);
    assert_eq!(last_reply(&h), "yt:dQw4w9WgXcQ is off the blacklist.");
    say(&mut h, &format!("!add {YT}"), "bob", 1.0);
    assert_eq!(frames(&h, "queue").len(), 1);
    assert!(Harness::<Playlist>::new(json!({"blacklist": ["nonsense"]})).is_err());
}

#[test]
fn skip_directly_or_by_vote_and_shuffle() {
    let mut h = Harness::<Playlist>::new(json!({})).unwrap();
    let two = json!([
        item(1, "yt", "aaaaaaaaaaa", "A"),
        item(2, "yt", "bbbbbbbbbbb", "B")
    ]);
    room(&mut h, 2.0, true, two.clone());
    say(&mut h, "!skip", "bob", 1.0);
    assert!(last_reply(&h).contains("!skip is for rank 2"));
    say(&mut h, "!skip", "mod", 2.0);
    assert_eq!(last_reply(&h), "Skipping “Song A”.");
    assert_eq!(frames(&h, "playNext").len(), 1);
    room(&mut h, 1.0, true, two.clone());
    say(&mut h, "!skip", "mod", 2.0);
    assert_eq!(
        last_reply(&h),
        "I cannot skip here, so I voted to skip “Song A”."
    );
    assert_eq!(frames(&h, "voteskip").len(), 1);
    say(&mut h, "!shuffle", "mod", 2.0);
    assert!(last_reply(&h).starts_with("The playlist is locked and shuffling needs rank 2"));
    room(&mut h, 2.0, true, two);
    say(&mut h, "!shuffle", "mod", 2.0);
    assert_eq!(last_reply(&h), "Shuffled the playlist (2 items).");
    assert_eq!(frames(&h, "shufflePlaylist").len(), 1);
}

#[test]
fn the_autodj_refills_an_empty_playlist_from_its_list_in_turn() {
    let mut h = Harness::<Playlist>::new(json!({
        "autodj": true, "autodj_batch": 2, "autodj_cooldown_ms": 1000,
        "autodj_list": ["yt:aaaaaaaaaaa", "https://vimeo.com/2", "tw:chan"],
        "blacklist": ["vi:2"],
    }))
    .unwrap();
    room(&mut h, 2.0, true, json!([]));
    server(
        &mut h,
        "setPlaylistMeta",
        json!({"count": 0, "rawTime": 0, "time": "00:00"}),
    );
    let sent: Vec<(Value, Value)> = frames(&h, "queue")
        .iter()
        .map(|f| (f["type"].clone(), f["id"].clone()))
        .collect();
    assert_eq!(
        sent,
        vec![
            (json!("yt"), json!("aaaaaaaaaaa")),
            (json!("tw"), json!("chan"))
        ]
    );
    assert_eq!(
        last_reply(&h),
        "Auto-DJ: the playlist ran empty; queueing 2 items from the auto-DJ list."
    );
    // Answered: no second refill while pending, none within the cooldown.
    server(
        &mut h,
        "queue",
        json!({"item": item(1, "yt", "aaaaaaaaaaa", "A"), "after": "prepend"}),
    );
    server(
        &mut h,
        "queue",
        json!({"item": item(2, "tw", "chan", "C"), "after": 1}),
    );
    server(&mut h, "playlist", json!([]));
    assert_eq!(frames(&h, "queue").len(), 2);
    h.advance(Duration::from_millis(1_500)).unwrap();
    server(&mut h, "playlist", json!([]));
    assert_eq!(frames(&h, "queue").len(), 4);
    // Not when the bot may not add.
    room(&mut h, 1.0, true, json!([]));
    h.advance(Duration::from_millis(1_500)).unwrap();
    server(
        &mut h,
        "setPlaylistMeta",
        json!({"count": 0, "rawTime": 0, "time": "00:00"}),
    );
    assert_eq!(frames(&h, "queue").len(), 4);
}

#[test]
fn a_hot_reload_keeps_who_queued_what_and_the_waiting_requests() {
    let mut h = Harness::<Playlist>::new(json!({"max_per_user": 1})).unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, &format!("!add {YT}"), "bob", 1.0);
    h.reload().unwrap();
    room(&mut h, 2.0, true, json!([]));
    server(
        &mut h,
        "queue",
        json!({"item": item(5, "yt", "dQw4w9WgXcQ", "N"), "after": "prepend"}),
    );
    assert_eq!(last_reply(&h), "Added “N” (3:20) for bob.");
    h.reload().unwrap();
    room(&mut h, 2.0, true, json!([]));
    say(&mut h, "!add yt:bbbbbbbbbbb", "bob", 1.0);
    assert!(last_reply(&h).contains("you have 1 items"));
}

#[test]
fn the_default_configuration_starts_and_bad_ones_are_refused() {
    Harness::<Playlist>::new(daz_testkit::default_config("playlist")).unwrap();
    for bad in [
        json!({"max_per_user": 0}),
        json!({"autodj_batch": 0}),
        json!({"autodj_batch": 21}),
        json!({"answer_ms": 0}),
        json!({"autodj_list": ["https://example.org/page"]}),
        json!({"nonsense": 1}),
    ] {
        assert!(Harness::<Playlist>::new(bad.clone()).is_err(), "{bad}");
    }
}
