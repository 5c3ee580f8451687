//! The plugin in-process against the SDK's fake host: examples, delivery on chat and
//! join, reminders held for absent users, limits, and the hand-over on a hot reload.

use std::time::Duration;

use daz_plugin_api::{
    routing::testing::{ROOM, check_command_examples, command_for, feed},
    testing::Harness,
};
use serde_json::{Value, json};

use super::*;

fn sql(h: &mut Harness<Tell>) {
    h.respond("sql.info", |_| {
        Ok(json!({"dialect": "sqlite", "connected": true}))
    });
    h.respond("sql.migrate", |_| {
        Ok(json!({"dialect": "sqlite", "applied": [1], "current": 1}))
    });
    h.respond("sql.query", |_| Ok(json!({"columns": [], "rows": []})));
    h.respond("sql.batch", |req| {
        let n = req["statements"].as_array().map_or(0, Vec::len);
        Ok(json!({"results": vec![json!({"rows_affected": 1}); n]}))
    });
}

fn harness(config: Value) -> Harness<Tell> {
    let mut h = Harness::<Tell>::new(config).unwrap();
    sql(&mut h);
    present(&mut h, &["alice"]);
    h
}

/// The users the host's room state lists.
fn present(h: &mut Harness<Tell>, users: &[&str]) {
    let users: Vec<Value> = users
        .iter()
        .map(|u| json!({"name": u, "rank": 1}))
        .collect();
    h.set_room_state(
        ROOM,
        json!({"room": ROOM, "state": {"me": {"name": "bot", "rank": 2}, "users": users}}),
    );
}

fn command(h: &mut Harness<Tell>, user: &str, line: &str) {
    let cmd = command_for::<Tell>(line, user, 1.0, h.now_ms()).expect("a command");
    feed(h, &cmd).unwrap();
}

fn last(h: &Harness<Tell>) -> String {
    h.chat_replies().last().cloned().unwrap_or_default()
}

#[test]
fn chat_examples() {
    let failures = check_command_examples::<Tell>(json!({}), sql).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_message_waits_for_its_recipient_to_chat_or_join() {
    let mut h = harness(json!({}));
    command(&mut h, "alice", "!tell Bob see <b>this</b> ünïcode 🎉");
    h.advance(Duration::from_secs(90)).unwrap();
    // The backlog replayed on join is not bob talking.
    let mut backlog = h.event(
        &format!("cytube.in.{ROOM}.chatMsg"),
        &json!({"username": "bob", "msg": "old", "time": 1}),
    );
    backlog.tags = vec!["backlog".into()];
    h.feed(&backlog).unwrap();
    assert_eq!(last(&h), "I'll tell Bob when they next chat or join.");
    h.chat(ROOM, "bob", "hi all").unwrap();
    assert_eq!(
        last(&h),
        "bob, alice said 1m 30s ago: see <b>this</b> ünïcode 🎉"
    );
    // Once.
    h.chat(ROOM, "bob", "hi again").unwrap();
    assert_eq!(h.chat_replies().len(), 2);
    // On join too.
    command(&mut h, "alice", "!tell carol hello");
    h.publish(
        &format!("cytube.in.{ROOM}.addUser"),
        &json!({"name": "carol", "rank": 0}),
    )
    .unwrap();
    assert_eq!(last(&h), "carol, alice said 0s ago: hello");
}

#[test]
fn reminders_come_when_due_or_when_the_user_is_back() {
    let mut h = harness(json!({}));
    command(&mut h, "alice", "!remind in 1m tea");
    command(&mut h, "carl", "!remind in 2m stretch");
    h.advance(Duration::from_secs(59)).unwrap();
    assert_eq!(h.chat_replies().len(), 2);
    h.advance(Duration::from_secs(2)).unwrap();
    assert_eq!(last(&h), "alice, reminder: tea");
    // carl is not in the room when his is due: it waits for him.
    h.advance(Duration::from_secs(300)).unwrap();
    assert_eq!(h.chat_replies().len(), 3);
    h.publish(
        &format!("cytube.in.{ROOM}.addUser"),
        &json!({"name": "carl", "rank": 0}),
    )
    .unwrap();
    assert_eq!(last(&h), "carl, reminder (due 4m 1s ago): stretch");
}

#[test]
fn limits_and_bad_input() {
    let mut h = harness(json!({"max_tells_per_sender": 2, "max_reminders_per_user": 1}));
    command(&mut h, "alice", "!tell bob 1");
    command(&mut h, "alice", "!tell carl 2");
    command(&mut h, "alice", "!tell dave 3");
    assert_eq!(
        last(&h),
        "You have 2 messages waiting to be delivered, the most allowed."
    );
    command(&mut h, "alice", &format!("!tell erin {}", "x".repeat(301)));
    assert_eq!(
        last(&h),
        "That message is 301 characters long; the most is 300."
    );
    command(&mut h, "alice", "!tell bot hi");
    assert_eq!(last(&h), "I heard you.");
    command(&mut h, "alice", "!remind in 1h a");
    command(&mut h, "alice", "!remind in 1h b");
    assert_eq!(last(&h), "You have 1 reminders waiting, the most allowed.");
    command(&mut h, "bob", "!remind in 5 fortnights x");
    assert!(
        last(&h).starts_with("Sorry, I don't understand the time \"5\""),
        "{}",
        last(&h)
    );
}

#[test]
fn everything_survives_a_hot_reload() {
    let mut h = harness(json!({}));
    command(&mut h, "alice", "!tell bob later");
    command(&mut h, "alice", "!remind in 1m tea");
    h.reload().unwrap();
    h.advance(Duration::from_secs(61)).unwrap();
    assert_eq!(last(&h), "alice, reminder: tea");
    h.chat(ROOM, "bob", "back").unwrap();
    assert!(
        last(&h).starts_with("bob, alice said 1m 1s ago: later"),
        "{}",
        last(&h)
    );
}

#[test]
fn waiting_messages_are_read_back_after_a_restart() {
    let mut h = Harness::<Tell>::new(json!({})).unwrap();
    h.respond("sql.info", |_| {
        Ok(json!({"dialect": "postgres", "connected": true}))
    });
    h.respond("sql.migrate", |_| {
        Ok(json!({"dialect": "postgres", "applied": [], "current": 1}))
    });
    h.respond("sql.batch", |req| {
        let n = req["statements"].as_array().map_or(0, Vec::len);
        Ok(json!({"results": vec![json!({"rows_affected": 1}); n]}))
    });
    h.respond("sql.query", |req| {
        let sql = req["sql"].as_str().unwrap_or_default();
        Ok(if sql.contains("FROM tell_messages") {
            json!({"columns": [{"name": "id", "db_type": "TEXT"}, {"name": "room", "db_type": "TEXT"},
                               {"name": "sender", "db_type": "TEXT"}, {"name": "recipient", "db_type": "TEXT"},
                               {"name": "message", "db_type": "TEXT"}, {"name": "created_at", "db_type": "TIMESTAMPTZ"}],
                   "rows": [["m1", ROOM, "alice", "bob", "from before", "2023-11-14T22:13:20.000Z"]]})
        } else {
            json!({"columns": [{"name": "id", "db_type": "TEXT"}, {"name": "room", "db_type": "TEXT"},
                               {"name": "user_name", "db_type": "TEXT"}, {"name": "message", "db_type": "TEXT"},
                               {"name": "by_pm", "db_type": "BOOL"}, {"name": "due_at", "db_type": "TIMESTAMPTZ"}],
                   "rows": [["r1", ROOM, "alice", "old reminder", true, "2023-11-14T22:13:20.000Z"]]})
        })
    });
    present(&mut h, &["alice"]);
    h.advance(Duration::from_secs(1)).unwrap();
    let pm = h
        .published()
        .iter()
        .find(|r| r.subject.ends_with(".pm"))
        .map(|r| r.payload["msg"].as_str().unwrap_or_default().to_owned());
    assert_eq!(pm.as_deref(), Some("alice, reminder: old reminder"));
    h.chat(ROOM, "bob", "hi").unwrap();
    assert_eq!(last(&h), "bob, alice said 1s ago: from before");
}

#[test]
fn bad_configuration_is_refused() {
    for bad in [
        json!({"tick_ms": 0}),
        json!({"utc_offset_minutes": 2000}),
        json!({"nope": 1}),
    ] {
        assert!(Harness::<Tell>::new(bad.clone()).is_err(), "{bad}");
    }
}

#[test]
fn the_default_configuration_starts() {
    Harness::<Tell>::new(daz_testkit::default_config("tell")).unwrap();
}
