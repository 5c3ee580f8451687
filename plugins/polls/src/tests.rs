//! Unit tests of the polls plugin against the SDK's fake host: the frames it sends,
//! its refusals, what it says when the server opens, updates and closes a poll, and the
//! hand-over on a hot reload.

use daz_plugin_api::{
    routing::testing::{ROOM, check_command_examples, command_for, feed},
    testing::Harness,
};
use serde_json::{Value, json};

use super::*;

/// A room where the bot (`bot`) has `bot_rank`, polls need `pollctl`, and `poll` is
/// open (or `null`).
fn room(h: &mut Harness<Polls>, bot_rank: f64, pollctl: f64, poll: Value) {
    h.set_room_state(
        ROOM,
        json!({"state": {
            "me": {"name": "bot", "logged_in": true, "rank": bot_rank},
            "permissions": {"pollctl": pollctl, "pollvote": -1},
            "poll": poll,
        }}),
    );
}

fn say(h: &mut Harness<Polls>, line: &str, user: &str, rank: f64) {
    let cmd = command_for::<Polls>(line, user, rank, h.now_ms()).expect("a !poll line");
    feed(h, &cmd).unwrap();
}

fn poll(initiator: &str, counts: Value) -> Value {
    json!({
        "title": "Best &lt;pizza&gt;?",
        "options": ["margherita", "pepperoni"],
        "counts": counts,
        "initiator": initiator,
        "timestamp": 1_700_000_000_000i64,
    })
}

fn server(h: &mut Harness<Polls>, event: &str, payload: Value) {
    h.publish(&format!("cytube.in.{ROOM}.{event}"), &payload)
        .unwrap();
}

fn frames(h: &Harness<Polls>, event: &str) -> Vec<Value> {
    let subject = format!("cytube.out.{ROOM}.{event}");
    h.published()
        .into_iter()
        .filter(|r| r.subject == subject)
        .map(|r| r.payload)
        .collect()
}

fn last_reply(h: &Harness<Polls>) -> String {
    h.chat_replies().last().cloned().unwrap_or_default()
}

#[test]
fn chat_examples() {
    let failures =
        check_command_examples::<Polls>(json!({}), |h| room(h, 2.0, 0.0, Value::Null)).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_poll_goes_out_as_newpoll_and_its_results_come_back_when_it_closes() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    say(
        &mut h,
        "!poll Best <pizza>? | margherita | pepperoni | 2m",
        "bob",
        2.0,
    );
    assert_eq!(
        frames(&h, "newPoll"),
        vec![
            json!({"title": "Best <pizza>?", "opts": ["margherita", "pepperoni"],
                    "obscured": false, "timeout": 120})
        ]
    );
    // Nothing is said until the server opened it.
    assert!(h.chat_replies().is_empty(), "{:?}", h.chat_replies());
    server(&mut h, "newPoll", poll("bot", json!([0, 0])));
    assert_eq!(
        last_reply(&h),
        "Poll open: “Best <pizza>?”; it closes in 2m 0s and I will post the results."
    );
    server(&mut h, "updatePoll", poll("bot", json!([2, 1])));
    room(&mut h, 2.0, 1.5, poll("bot", json!([2, 1])));
    say(&mut h, "!poll", "guest1", 0.0);
    assert_eq!(
        last_reply(&h),
        "Open poll: “Best <pizza>?” — margherita 2 · pepperoni 1"
    );
    // The server's timeout closes it: no updatePoll comes with closePoll.
    server(&mut h, "closePoll", Value::Null);
    assert_eq!(
        last_reply(&h),
        "Poll closed: “Best <pizza>?” — “margherita” wins with 2 of 3 votes. margherita 2 · pepperoni 1"
    );
    // The result waits for the database (there is none here) and is not announced twice.
    let n = h.chat_replies().len();
    server(&mut h, "closePoll", Value::Null);
    assert_eq!(h.chat_replies().len(), n);
    let state: State = {
        let bytes = h.export_state().unwrap();
        SavedState::from_bytes(&bytes)
            .unwrap()
            .into_schema()
            .unwrap()
    };
    assert_eq!(state.pending.len(), 1);
    assert!(
        state.pending[0]
            .sql
            .starts_with("INSERT INTO polls_results")
    );
}

#[test]
fn ranks_are_checked_for_the_caller_and_for_the_bot_before_anything_is_sent() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    say(&mut h, "!poll t | a | b", "bob", 1.0);
    assert_eq!(
        last_reply(&h),
        "bob, opening polls is for rank 1.5 (leaders) and above here."
    );
    say(&mut h, "!poll close", "bob", 1.0);
    assert!(last_reply(&h).contains("closing polls is for rank 1.5"));
    // A configured rank wins over the channel's permission.
    let mut strict = Harness::<Polls>::new(json!({"rank": 2})).unwrap();
    room(&mut strict, 2.0, 1.5, Value::Null);
    say(&mut strict, "!poll t | a | b", "leader", 1.5);
    assert!(last_reply(&strict).contains("rank 2 (moderators)"));
    // The bot below pollctl: the server would ignore the frame silently.
    room(&mut h, 1.0, 1.5, Value::Null);
    say(&mut h, "!poll t | a | b", "alice", 3.0);
    assert_eq!(
        last_reply(&h),
        "I cannot open polls here: the channel lets rank 1.5 (leaders) and above do that and my rank is 1."
    );
    say(&mut h, "!poll close", "alice", 3.0);
    assert!(last_reply(&h).starts_with("I cannot close polls here"));
    assert!(frames(&h, "newPoll").is_empty());
    assert!(frames(&h, "closePoll").is_empty());
    // Unregistered channels let guests poll.
    room(&mut h, 0.0, 0.0, Value::Null);
    say(&mut h, "!poll t | a | b", "guest", 0.0);
    assert_eq!(frames(&h, "newPoll").len(), 1);
}

#[test]
fn one_poll_at_a_time() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, poll("alice", json!([0, 0])));
    say(&mut h, "!poll t | a | b", "mod", 2.0);
    assert_eq!(
        last_reply(&h),
        "A poll is already open (“Best <pizza>?”); close it first with !poll close."
    );
    room(&mut h, 2.0, 1.5, Value::Null);
    say(&mut h, "!poll t | a | b", "mod", 2.0);
    say(&mut h, "!poll u | a | b", "mod", 2.0);
    assert!(last_reply(&h).contains("being opened right now"));
    assert_eq!(frames(&h, "newPoll").len(), 1);
}

#[test]
fn polls_of_others_are_followed_and_announced_when_closed_through_the_bot() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    server(&mut h, "newPoll", poll("alice", json!([0, 0])));
    server(&mut h, "updatePoll", poll("alice", json!([1, 1])));
    server(&mut h, "closePoll", Value::Null);
    assert!(h.chat_replies().is_empty(), "{:?}", h.chat_replies());

    server(&mut h, "newPoll", poll("alice", json!([0, 0])));
    server(&mut h, "updatePoll", poll("alice", json!([1, 1])));
    room(&mut h, 2.0, 1.5, poll("alice", json!([1, 1])));
    say(&mut h, "!poll close", "mod", 2.0);
    assert_eq!(frames(&h, "closePoll").len(), 1);
    server(&mut h, "closePoll", Value::Null);
    assert!(
        last_reply(&h).contains("a tie between “margherita” and “pepperoni” (1 each, 2 votes)"),
        "{:?}",
        h.chat_replies()
    );

    let mut all = Harness::<Polls>::new(json!({"announce_all": true})).unwrap();
    room(&mut all, 2.0, 1.5, Value::Null);
    server(&mut all, "updatePoll", poll("alice", json!([0, 3])));
    server(&mut all, "closePoll", Value::Null);
    assert!(last_reply(&all).contains("“pepperoni” wins with 3 of 3 votes"));
}

/// A `!poll close` can overtake the server's `newPoll` on its way to the plugin (a
/// command travels at a higher priority): the host's room state already shows the
/// poll, so the bot closes it, and the results are still announced when the server's
/// events arrive.
#[test]
fn a_poll_closed_before_its_newpoll_reached_the_plugin_is_still_announced() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, poll("alice", json!([1, 0])));
    say(&mut h, "!poll close", "mod", 2.0);
    assert_eq!(frames(&h, "closePoll").len(), 1);
    server(&mut h, "newPoll", poll("alice", json!([0, 0])));
    server(&mut h, "updatePoll", poll("alice", json!([1, 0])));
    server(&mut h, "closePoll", Value::Null);
    assert!(
        last_reply(&h).contains("“margherita” wins with 1 of 1 vote"),
        "{:?}",
        h.chat_replies()
    );
}

#[test]
fn a_hot_reload_keeps_the_open_poll_and_the_request_waiting_for_the_server() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    say(
        &mut h,
        "!poll Best <pizza>? | margherita | pepperoni",
        "bob",
        2.0,
    );
    h.reload().unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    server(&mut h, "newPoll", poll("bot", json!([0, 0])));
    assert_eq!(
        last_reply(&h),
        "Poll open: “Best <pizza>?”; close it with !poll close and I will post the results."
    );
    server(&mut h, "updatePoll", poll("bot", json!([0, 4])));
    h.reload().unwrap();
    server(&mut h, "closePoll", Value::Null);
    assert!(last_reply(&h).contains("“pepperoni” wins with 4 of 4 votes"));
}

#[test]
fn the_poll_repeated_on_a_rejoin_keeps_what_is_known_of_it() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    server(&mut h, "newPoll", poll("alice", json!([0, 0])));
    room(&mut h, 2.0, 1.5, poll("alice", json!([0, 0])));
    say(&mut h, "!poll close", "mod", 2.0);
    // The connection drops before closePoll; on the rejoin the server repeats the poll.
    server(&mut h, "newPoll", poll("alice", json!([2, 0])));
    server(&mut h, "closePoll", Value::Null);
    assert!(
        last_reply(&h).contains("“margherita” wins with 2 of 2 votes"),
        "{:?}",
        h.chat_replies()
    );
}

#[test]
fn a_refused_frame_is_reported_to_whoever_asked() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    room(&mut h, 2.0, 1.5, Value::Null);
    say(&mut h, "!poll t | a | b", "bob", 2.0);
    let sent = h.published().last().cloned().unwrap();
    // The host hands a plugin the failures of its own frames without a subscription.
    let report = h.event(
        &format!("cytube.out.{ROOM}.failed"),
        &json!({
            "original": {"event": "newPoll", "subject": sent.subject, "payload": {},
                         "source": "polls", "id": "1", "correlation_id": null},
            "reason": "the connection is down",
            "code": "expired",
        }),
    );
    h.feed(&report).unwrap();
    assert_eq!(
        last_reply(&h),
        "The poll did not open: the connection is down"
    );
    // Another may be asked at once.
    say(&mut h, "!poll t | a | b", "bob", 2.0);
    assert_eq!(frames(&h, "newPoll").len(), 2);
}

#[test]
fn the_last_poll_comes_from_the_table() {
    let mut h = Harness::<Polls>::new(json!({})).unwrap();
    h.respond("sql.info", |_| {
        Ok(json!({"dialect": "sqlite", "connected": true}))
    });
    h.respond("sql.migrate", |_| {
        Ok(json!({"dialect": "sqlite", "applied": [1], "current": 1}))
    });
    h.respond("sql.query", |_| {
        let cols: Vec<Value> = ["title", "options", "counts", "initiator", "opened_ms"]
            .iter()
            .map(|c| json!({"name": c, "db_type": "TEXT"}))
            .collect();
        Ok(json!({"columns": cols, "rows": [["Tea?", "[\"yes\",\"no\"]", "[5,null]", "bot", 1]]}))
    });
    say(&mut h, "!poll last", "guest", 0.0);
    assert_eq!(
        last_reply(&h),
        "Last poll: “Tea?” — the counts were hidden from me. yes 5 · no ?"
    );
}

#[test]
fn the_default_configuration_starts_and_bad_ones_are_refused() {
    Harness::<Polls>::new(daz_testkit::default_config("polls")).unwrap();
    for bad in [
        json!({"max_options": 1}),
        json!({"max_options": 51}),
        json!({"max_title_chars": 0}),
        json!({"max_option_chars": 256}),
        json!({"default_timeout_s": 0}),
        json!({"default_timeout_s": 86401}),
        json!({"flush_interval_ms": 0}),
        json!({"nonsense": true}),
    ] {
        assert!(Harness::<Polls>::new(bad.clone()).is_err(), "{bad}");
    }
}
