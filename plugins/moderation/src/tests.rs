//! The plugin in-process against the SDK's fake host: examples, escalation, rank rules,
//! the audit and the hand-over on a hot reload.

use std::sync::{Arc, Mutex};

use daz_plugin_api::{
    routing::testing::{ROOM, check_command_examples, command_for, feed},
    testing::Harness,
};
use serde_json::{Value, json};

use super::*;

/// A SQL service that answers and remembers every batch of statements.
fn sql(h: &mut Harness<Moderation>, batches: Arc<Mutex<Vec<Value>>>) {
    h.respond("sql.info", |_| {
        Ok(json!({"dialect": "sqlite", "connected": true}))
    });
    h.respond("sql.migrate", |_| {
        Ok(json!({"dialect": "sqlite", "applied": [1], "current": 1}))
    });
    h.respond("sql.query", |_| Ok(json!({"columns": [], "rows": []})));
    h.respond("sql.batch", move |req| {
        let n = req["statements"].as_array().map_or(0, Vec::len);
        batches.lock().unwrap().push(req.clone());
        Ok(json!({"results": vec![json!({"rows_affected": 1}); n]}))
    });
}

fn config() -> Value {
    json!({
        "filters": [
            {"name": "links", "kind": "link"},
            {"name": "flood", "kind": "flood", "lines": 4, "window_ms": 5000},
            {"name": "slurs", "kind": "word", "pattern": "badword", "action": "kick",
             "reason": "no slurs"},
        ],
    })
}

/// The room as the host reports it: the bot at `bot_rank`, bob at rank 1 and mod at 2,
/// the default permissions of a registered channel.
fn room(h: &mut Harness<Moderation>, bot_rank: f64) {
    h.set_room_state(
        ROOM,
        json!({"room": ROOM, "state": {
            "me": {"name": "bot", "rank": bot_rank, "logged_in": true},
            "users": [{"name": "bob", "rank": 1}, {"name": "mod", "rank": 2},
                      {"name": "bot", "rank": bot_rank}],
            "permissions": {"mute": 1.5, "kick": 1.5, "ban": 2.0, "chat": 0},
        }}),
    );
    h.publish(
        &format!("cytube.in.{ROOM}.userlist"),
        &json!([{"name": "bob", "rank": 1}, {"name": "mod", "rank": 2}]),
    )
    .unwrap();
}

fn harness(config: Value, bot_rank: f64) -> (Harness<Moderation>, Arc<Mutex<Vec<Value>>>) {
    let mut h = Harness::<Moderation>::new(config).unwrap();
    let batches = Arc::new(Mutex::new(Vec::new()));
    sql(&mut h, batches.clone());
    room(&mut h, bot_rank);
    (h, batches)
}

fn pms(h: &Harness<Moderation>) -> Vec<(String, String)> {
    h.published()
        .iter()
        .filter(|r| r.subject == format!("cytube.out.{ROOM}.pm"))
        .map(|r| {
            (
                r.payload["to"].as_str().unwrap_or_default().to_owned(),
                r.payload["msg"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The actions taken on users (not the filter changes, which are published too).
fn actions(h: &Harness<Moderation>) -> Vec<Value> {
    h.published()
        .iter()
        .filter(|r| r.subject == ACTION_SUBJECT && r.payload["by"] == "filter")
        .map(|r| r.payload.clone())
        .collect()
}

fn say(h: &mut Harness<Moderation>, user: &str, msg: &str) {
    h.chat(ROOM, user, msg).unwrap();
}

fn command(h: &mut Harness<Moderation>, user: &str, rank: f64, line: &str) {
    let cmd = command_for::<Moderation>(line, user, rank, h.now_ms()).expect("a command");
    feed(h, &cmd).unwrap();
}

#[test]
fn chat_examples() {
    let failures = check_command_examples::<Moderation>(
        json!({"filters": [{"name": "links", "kind": "link"}]}),
        |h| sql(h, Arc::new(Mutex::new(Vec::new()))),
    )
    .unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn flooding_is_warned_then_escalates_to_a_kick_and_a_mute() {
    let (mut h, batches) = harness(config(), 3.0);
    // 4 lines in a burst trip the flood filter; each burst is one strike.
    for burst in 0..4 {
        for i in 0..4 {
            say(&mut h, "bob", &format!("burst {burst} line {i}"));
        }
    }
    assert_eq!(
        pms(&h),
        vec![
            (
                "bob".into(),
                "Warning: please do not flood the chat (strike 1).".into()
            ),
            (
                "bob".into(),
                "Warning: please do not flood the chat (strike 2).".into()
            ),
            (
                "bob".into(),
                "You are muted: please do not flood the chat. A moderator can lift it.".into()
            ),
        ]
    );
    assert_eq!(
        h.chat_replies(),
        vec!["/kick bob please do not flood the chat", "/mute bob"]
    );
    let acts = actions(&h);
    assert_eq!(acts.len(), 4);
    assert_eq!(acts[2]["action"], "kick");
    assert_eq!(acts[2]["strikes"], 3);
    assert_eq!(acts[3]["action"], "mute");
    // The audit reaches the database at the next tick.
    h.advance(std::time::Duration::from_millis(1000)).unwrap();
    let batches = batches.lock().unwrap();
    let inserts = batches
        .iter()
        .flat_map(|b| b["statements"].as_array().cloned().unwrap_or_default())
        .filter(|s| {
            s["sql"]
                .as_str()
                .is_some_and(|q| q.starts_with("INSERT INTO moderation_actions"))
        })
        .count();
    assert_eq!(inserts, 4);
    // A moderator pardons: strikes gone, the bot's mute lifted.
    command(&mut h, "mod", 2.0, "!pardon BOB");
    let replies = h.chat_replies();
    assert_eq!(replies[2], "/unmute bob");
    assert_eq!(replies[3], "bob pardoned: 4 strikes cleared, unmuted.");
}

#[test]
fn the_bot_never_acts_on_equal_or_higher_ranks() {
    // Nobody is exempt by rank here, so the rank rule is what protects mod.
    let mut cfg = config();
    cfg["exempt_rank"] = json!(100);
    let (mut h, _) = harness(cfg, 2.0);
    say(&mut h, "mod", "b a d w o r d");
    assert!(h.chat_replies().is_empty());
    assert!(pms(&h).is_empty());
    let acts = actions(&h);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0]["action"], Value::Null);
    assert!(
        acts[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("spared: the user's rank 2"),
        "{acts:?}"
    );
    // bob is below the bot: kicked, with the filter's reason.
    say(&mut h, "bob", "BaDwOrD");
    assert_eq!(h.chat_replies(), vec!["/kick bob no slurs"]);
}

#[test]
fn a_bot_without_the_rank_warns_instead_of_sending_what_it_may_not() {
    let (mut h, _) = harness(config(), 1.0);
    say(&mut h, "bob", "you b.a.d.w.o.r.d");
    // bob has rank 1 = the bot's: spared. A guest is below it.
    assert!(h.chat_replies().is_empty());
    h.publish(
        &format!("cytube.in.{ROOM}.addUser"),
        &json!({"name": "guest1", "rank": 0}),
    )
    .unwrap();
    say(&mut h, "guest1", "badword");
    assert!(h.chat_replies().is_empty(), "{:?}", h.chat_replies());
    assert_eq!(
        pms(&h),
        vec![("guest1".into(), "Warning: no slurs (strike 1).".into())]
    );
    let acts = actions(&h);
    let last = acts.last().unwrap();
    assert_eq!(last["requested"], "kick");
    assert_eq!(last["action"], "warn");
    assert!(
        last["outcome"]
            .as_str()
            .unwrap()
            .contains("kick needs rank 1.5; the bot has rank 1"),
        "{last}"
    );
}

#[test]
fn moderators_and_backlog_and_the_bot_itself_are_not_checked() {
    let (mut h, _) = harness(config(), 3.0);
    say(&mut h, "mod", "badword https://spam.xyz");
    let mut backlog = h.event(
        &format!("cytube.in.{ROOM}.chatMsg"),
        &json!({"username": "bob", "msg": "badword", "time": 1}),
    );
    backlog.tags = vec!["backlog".into()];
    h.feed(&backlog).unwrap();
    say(&mut h, "[server]", "badword");
    assert!(actions(&h).is_empty());
    // A filter command is not checked, even against the filter it adds.
    let mut cfg = config();
    cfg["exempt_rank"] = json!(100);
    let (mut h, _) = harness(cfg, 3.0);
    command(&mut h, "mod", 2.0, "!filter add word nitro");
    say(&mut h, "mod", "!filter add word nitro");
    say(&mut h, "mod", "!FILTERS add word badword");
    assert!(actions(&h).is_empty(), "{:?}", actions(&h));
    say(&mut h, "mod", "nitro");
    assert_eq!(actions(&h).len(), 1);
}

/// A chat line can overtake the `addUser` before it (it travels at a higher priority):
/// the speaker is then found in the host's room state by a keyed lookup, rank and all,
/// without reading the whole room per line.
#[test]
fn a_user_who_chats_before_their_join_arrives_is_looked_up_by_name() {
    let (mut h, _) = harness(config(), 3.0);
    h.set_room_state(
        ROOM,
        json!({"room": ROOM, "state": {
            "me": {"name": "bot", "rank": 3.0, "logged_in": true},
            "users": [{"name": "bob", "rank": 1}, {"name": "mod", "rank": 2},
                      {"name": "Admin2", "rank": 2}, {"name": "newbie", "rank": 1}],
            "permissions": {"mute": 1.5, "kick": 1.5, "ban": 2.0, "chat": 0},
        }}),
    );
    let (whole_before, keyed_before) = h.room_reads();
    // A moderator the plugin has not seen join is exempt: found with the rank listed.
    say(&mut h, "admin2", "badword");
    assert!(actions(&h).is_empty(), "{:?}", actions(&h));
    let (whole, keyed) = h.room_reads();
    assert_eq!(whole, whole_before, "a whole-room read per unseen speaker");
    assert!(keyed > keyed_before);
    // A registered user not seen joining is checked like any other.
    say(&mut h, "newbie", "badword");
    assert_eq!(actions(&h).len(), 1, "{:?}", actions(&h));
}

#[test]
fn live_filters_and_strikes_survive_a_hot_reload() {
    let (mut h, _) = harness(config(), 3.0);
    command(&mut h, "mod", 2.0, "!filter add word \"free stuff\" mute");
    assert_eq!(
        h.chat_replies().last().unwrap(),
        "Filter #1 added: word1 (word \"free stuff\" → mute)."
    );
    say(&mut h, "bob", "visit https://spam.xyz");
    h.reload().unwrap();
    say(&mut h, "bob", "FREE   STUFF for all");
    // Second strike, but the filter's own action (mute) is the least it does.
    assert_eq!(h.chat_replies().last().unwrap(), "/mute bob");
    let acts = actions(&h);
    assert_eq!(acts.last().unwrap()["strikes"], 2);
    command(&mut h, "mod", 2.0, "!filter list");
    let list = h.chat_replies().last().unwrap().clone();
    assert!(list.contains("#1 word1"), "{list}");
    assert!(
        list.contains("flood (flood 4 lines/5s → warn) [config]"),
        "{list}"
    );
    command(&mut h, "mod", 2.0, "!filter remove #1");
    assert!(
        h.chat_replies()
            .last()
            .unwrap()
            .starts_with("Filter #1 removed")
    );
    h.reload().unwrap();
    say(&mut h, "bob", "free stuff");
    assert_eq!(actions(&h).len(), 2, "a removed filter still acted");
}

#[test]
fn huge_html_and_unicode_input_is_handled() {
    let (mut h, _) = harness(config(), 3.0);
    command(
        &mut h,
        "mod",
        2.0,
        &format!("!filter add regex {}", "a".repeat(300)),
    );
    assert!(
        h.chat_replies().last().unwrap().contains("300 characters"),
        "{:?}",
        h.chat_replies()
    );
    command(&mut h, "mod", 2.0, "!filter add word Ärger");
    say(&mut h, "bob", &"x".repeat(100_000));
    say(&mut h, "bob", "so viel ÄRGER");
    say(&mut h, "bob", "&lt;script&gt;badword&lt;/script&gt;");
    let acts = actions(&h);
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert_eq!(acts[0]["filter"], "word1");
    assert_eq!(acts[1]["filter"], "slurs");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let err = Harness::<Moderation>::new(json!({
        "filters": [{"name": "x", "kind": "regex", "pattern": "(oops"}]
    }))
    .err()
    .unwrap();
    assert!(
        err.message()
            .contains("filter \"x\" is refused: bad regular expression"),
        "{err}"
    );
    let err = Harness::<Moderation>::new(json!({"ladder": []}))
        .err()
        .unwrap();
    assert!(err.message().contains("ladder"), "{err}");
    let err = Harness::<Moderation>::new(json!({"filters": [{"name": "f", "kind": "flood"}]}))
        .err()
        .unwrap();
    assert!(err.message().contains("lines"), "{err}");
}

#[test]
fn the_default_configuration_starts_and_is_conservative() {
    let config = daz_testkit::default_config("moderation");
    assert!(config["filters"].is_array(), "{config}");
    let (mut h, _) = harness(config, 3.0);
    // An ordinary chatter with a link and some excitement is left alone.
    say(&mut h, "bob", "check https://example.com/page, it is GREAT");
    for i in 0..5 {
        say(&mut h, "bob", &format!("line {i}"));
    }
    assert!(actions(&h).is_empty(), "{:?}", actions(&h));
}
