//! Conformance: replays `registered-channel-session.log` (a registered bot
//! account and the channel owner on a registered channel) and asserts that each
//! client receives the captured sequence of events with the captured payload
//! shapes, section by section. Sids, times and masked IPs are not compared;
//! `mediaUpdate`/`usercount` (wall-clock driven) are left out, and where the
//! capture's playback moved on by itself, so are that section's playback events.

mod common;

use std::time::Duration;

use common::*;
use daz_cytube_sim::capture::{Payload, fixtures_dir};
use serde_json::json;

#[tokio::test]
async fn registered_channel_session_matches_capture() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let log = std::fs::read_to_string(dir.join("registered-channel-session.log")).unwrap();
    let sim = start(capture_config()).await;
    let mut r = Replay::new(sim.clone(), &log);

    // BOT connects from the real loopback address; joinChannel + login at once.
    let s = r.begin("BOT connects");
    let mut bot = sim.actor("bot").await.loopback().connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    r.check(&s, "bot", &bot, 0, &[], false).await;

    let s = r.begin("BOT sends a chat message");
    let b = bot.mark();
    bot.chat("hello from testbot").unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;

    let s = r.begin("OWNER (chanboss, rank 5) joins");
    let b = bot.mark();
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    r.check(&s, "owner", &owner, 0, &[], false).await;
    r.check(&s, "bot", &bot, b, &[], false).await;

    let s = r.begin("OWNER sets MOTD");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit(
            "setMotd",
            Some(json!({"motd": "Welcome <b>bots</b>! <script>alert(1)</script>"})),
        )
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    assert_eq!(
        sim.channel("botchan").unwrap().motd,
        "Welcome <b>bots</b>! "
    );

    let s = r.begin("OWNER chats, BOT receives");
    let (b, o) = (bot.mark(), owner.mark());
    owner.chat("hi bot, see https://example.org/x").unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    let captured = expected_for(&s, "bot", &[]);
    assert_eq!(
        bot.received_since(b)[0].1["msg"],
        match &captured[0].1 {
            Payload::Json(v) => v["msg"].clone(),
            other => panic!("capture payload {other:?}"),
        },
        "link HTML differs from the capture"
    );

    let s = r.begin("OWNER /me and greentext");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit_batch(vec![
            (
                "chatMsg".into(),
                Some(json!({"msg": "/me waves", "meta": {}})),
            ),
            (
                "chatMsg".into(),
                Some(json!({"msg": ">implying", "meta": {}})),
            ),
        ])
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    let got = bot.received_since(b);
    assert_eq!(
        got[0].1["meta"],
        json!({"addClass": "action", "action": true})
    );
    assert_eq!(got[1].1["msg"], "&gt;implying");

    let s = r.begin("OWNER sends PM to bot");
    let (b, o) = (bot.mark(), owner.mark());
    owner.pm("testbot", "private hello").unwrap();
    bot.expect_where("pm", WAIT, |v| v["msg"] == "private hello")
        .await
        .unwrap();
    bot.pm("chanboss", "private reply").unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;

    let s = r.begin("BOT (rank 1) tries to queue");
    let (b, o) = (bot.mark(), owner.mark());
    bot.queue("dQw4w9WgXcQ", "yt", "end").unwrap();

    let s2 = r.begin("OWNER queues a YouTube video");
    owner.queue("dQw4w9WgXcQ", "yt", "end").unwrap();
    r.check(&s2, "owner", &owner, o, &[], false).await;
    // The bot's queue on the locked playlist was ignored silently.
    r.check(&s, "bot", &bot, b, &[], false).await;
    assert!(sim.channel("botchan").unwrap().playlist.is_empty());

    let s = r.begin("OWNER queues two offline");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .queue_with(
            json!({"id": "cytube_test_stream_a", "type": "tw", "pos": "end", "duration": 8}),
        )
        .unwrap();
    owner.expect("voteskip", WAIT).await.unwrap();
    owner
        .queue_with(
            json!({"id": "cytube_test_stream_b", "type": "tw", "pos": "end", "duration": 30}),
        )
        .unwrap();
    owner
        .queue_with(json!({"id": "cytube_test_stream_c", "type": "tw", "pos": "next", "duration": 40, "temp": true}))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    let uids: Vec<u64> = bot
        .received_named("queue")
        .iter()
        .map(|q| q["item"]["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids, [0, 1, 2]);

    let s = r.begin("OWNER moves last item to the top");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit("moveMedia", Some(json!({"from": 2, "after": "prepend"})))
        .unwrap();
    owner.emit("delete", Some(json!(1))).unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    let order: Vec<u64> = sim
        .channel("botchan")
        .unwrap()
        .playlist
        .iter()
        .map(|i| i.uid)
        .collect();
    assert_eq!(order, [2, 0]);

    let s = r.begin("Waiting ~12 s");
    let (b, o) = (bot.mark(), owner.mark());
    // 3 s lead-in + 8 s item + 2 s grace: the next item (wrapping) starts.
    sim.advance_playback_in("botchan", 13_000);
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    assert_eq!(sim.channel("botchan").unwrap().current, Some(2));

    let s = r.begin("OWNER jumps to first item");
    let (b, o) = (bot.mark(), owner.mark());
    owner.emit("jumpTo", Some(json!(0))).unwrap();
    owner
        .expect_where("voteskip", WAIT, |_| true)
        .await
        .unwrap();
    owner
        .emit("assignLeader", Some(json!({"name": "testbot"})))
        .unwrap();
    bot.expect_where("setLeader", WAIT, |v| v == "testbot")
        .await
        .unwrap();
    bot.emit(
        "mediaUpdate",
        Some(json!({"id": "cytube_test_stream_a", "currentTime": 3.5, "paused": false, "type": "tw"})),
    )
    .unwrap();
    owner
        .emit("assignLeader", Some(json!({"name": ""})))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    assert_eq!(sim.channel("botchan").unwrap().playlist.len(), 1);

    let s = r.begin("OWNER opens a poll");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit(
            "newPoll",
            Some(json!({"title": "Best bot?", "opts": ["this one", "that one"], "obscured": false, "timeout": 0})),
        )
        .unwrap();
    bot.emit("vote", Some(json!({"option": 0}))).unwrap();
    owner.emit("closePoll", None).unwrap();
    r.check(&s, "owner", &owner, o, &[], false).await;
    r.check(&s, "bot", &bot, b, &[], false).await;

    let s = r.begin("BOT floods chat");
    let (b, o) = (bot.mark(), owner.mark());
    bot.emit_batch(
        (0..25)
            .map(|i| {
                (
                    "chatMsg".to_owned(),
                    Some(json!({"msg": format!("flood {i}"), "meta": {}})),
                )
            })
            .collect(),
    )
    .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    assert_eq!(
        bot.received_named("cooldown")[..5].to_vec(),
        vec![json!(100); 5]
    );

    let s = r.begin("OWNER enables channel chat_antiflood");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit("setOptions", Some(json!({"chat_antiflood": true})))
        .unwrap();
    bot.expect_where("channelOpts", WAIT, |v| v["chat_antiflood"] == true)
        .await
        .unwrap();
    // The capture's bot sent its 8 messages 5 s later.
    sim.advance_clock(Duration::from_secs(5));
    bot.emit_batch(
        (0..8)
            .map(|i| {
                (
                    "chatMsg".to_owned(),
                    Some(json!({"msg": format!("af {i}"), "meta": {}})),
                )
            })
            .collect(),
    )
    .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;
    let cooldowns = bot.received_named("cooldown");
    assert_eq!(cooldowns[5..].to_vec(), vec![json!(1000); 4]);

    let s = r.begin("antiflood result");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit("setOptions", Some(json!({"chat_antiflood": false})))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;

    let s = r.begin("OWNER sets new_user_chat_delay");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit("setOptions", Some(json!({"new_user_chat_delay": 86400})))
        .unwrap();
    bot.expect_where("channelOpts", WAIT, |v| v["new_user_chat_delay"] == 86400)
        .await
        .unwrap();
    bot.chat("am I too new?").unwrap();
    bot.expect("spamFiltered", WAIT).await.unwrap();
    owner
        .emit("setOptions", Some(json!({"new_user_chat_delay": 0})))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;

    let s = r.begin("OWNER promotes bot");
    let (b, o) = (bot.mark(), owner.mark());
    owner
        .emit(
            "setChannelRank",
            Some(json!({"name": "testbot", "rank": 2})),
        )
        .unwrap();
    bot.expect_where("setUserRank", WAIT, |v| v["rank"] == 2)
        .await
        .unwrap();
    owner
        .emit(
            "setChannelRank",
            Some(json!({"name": "testbot", "rank": 1})),
        )
        .unwrap();
    r.check(&s, "bot", &bot, b, PLAYBACK, false).await;
    r.check(&s, "owner", &owner, o, PLAYBACK, false).await;

    let s = r.begin("BOT goes AFK");
    let (b, o) = (bot.mark(), owner.mark());
    bot.chat("/afk").unwrap();
    bot.expect_where("setAFK", WAIT, |v| v["afk"] == true)
        .await
        .unwrap();
    bot.chat("back").unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    r.check(&s, "owner", &owner, o, &[], false).await;

    let s = r.begin("BOT errors");
    let b = bot.mark();
    bot.emit("chatMsg", Some(json!({"msg": 12345}))).unwrap();
    bot.emit("pm", Some(json!({"to": "testbot", "msg": "me"})))
        .unwrap();
    bot.emit("pm", Some(json!({"to": "nobodyhere", "msg": "hello?"})))
        .unwrap();
    bot.emit("login", Some(json!({"name": "testbot", "pw": "again"})))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;

    let s = r.begin("OWNER leaves");
    let b = bot.mark();
    owner.leave().await.unwrap();
    r.check(&s, "bot", &bot, b, PLAYBACK, false).await;

    let s = r.begin("BOT (rank 1) sends setMotd");
    let b = bot.mark();
    bot.emit("setMotd", Some(json!({"motd": "not allowed"})))
        .unwrap();
    r.check(&s, "bot", &bot, b, &[], false).await;
    assert_eq!(
        bot.wait_closed(WAIT).await.unwrap(),
        daz_cytube_sim::Closed::ServerDisconnect
    );
    sim.wait_for(WAIT, |s| {
        s.channel("botchan").is_some_and(|c| c.users.is_empty())
    })
    .await
    .unwrap();
}
