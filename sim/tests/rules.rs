//! Server rules beyond the captures' exact sequences: flood numbers, guest
//! limit, duplicate login, password flow, connect budget, socket cap,
//! permissions and kicks, queue limits, type errors.

mod common;

use std::time::Duration;

use common::*;
use daz_cytube_sim::{ActorError, ChannelConfig, Closed, SimConfig};
use serde_json::json;

#[tokio::test]
async fn chat_floor_delivers_twenty_of_twenty_five() {
    let sim = start(capture_config()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    let mut b = sim.actor("b").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    b.join_and_login("room", "bob", None).await.unwrap();
    a.emit_batch(
        (0..25)
            .map(|i| ("chatMsg".to_owned(), Some(json!({"msg": format!("m{i}")}))))
            .collect(),
    )
    .unwrap();
    a.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "cooldown").count() == 5
    })
    .await
    .unwrap();
    b.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "chatMsg").count() == 20
    })
    .await
    .unwrap();
    assert_eq!(a.received_named("cooldown"), vec![json!(100); 5]);
    assert_eq!(a.received_named("chatMsg").len(), 20);
    // A PM right after shares the same limiter: refused too.
    a.pm("bob", "psst").unwrap();
    a.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "cooldown").count() == 6
    })
    .await
    .unwrap();
    // Two idle seconds later the burst is back.
    sim.advance_clock(Duration::from_millis(2100));
    a.pm("bob", "psst").unwrap();
    b.expect("pm", WAIT).await.unwrap();
}

#[tokio::test]
async fn channel_antiflood_applies_below_moderators() {
    let sim = start(capture_config()).await;
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    let mut g = sim.actor("g").await.connect().await.unwrap();
    g.join_and_login("botchan", "guesty", None).await.unwrap();
    owner
        .emit("setOptions", Some(json!({"chat_antiflood": true})))
        .unwrap();
    g.expect_where("channelOpts", WAIT, |v| v["chat_antiflood"] == true)
        .await
        .unwrap();
    let batch = |p: &str| -> Vec<(String, Option<serde_json::Value>)> {
        (0..8)
            .map(|i| {
                (
                    "chatMsg".to_owned(),
                    Some(json!({"msg": format!("{p}{i}"), "meta": {}})),
                )
            })
            .collect()
    };
    g.emit_batch(batch("g")).unwrap();
    g.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "cooldown").count() == 4
    })
    .await
    .unwrap();
    assert_eq!(g.received_named("cooldown"), vec![json!(1000); 4]);
    assert_eq!(g.received_named("chatMsg").len(), 4);
    // The owner (rank 5) keeps the hard floor of 20.
    owner.emit_batch(batch("o")).unwrap();
    g.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "chatMsg").count() == 12
    })
    .await
    .unwrap();
    assert!(owner.received_named("cooldown").is_empty());
}

#[tokio::test]
async fn guest_logins_are_limited_per_ip_until_the_interval_passes() {
    let sim = start(capture_config()).await;
    let ip: std::net::IpAddr = "10.9.9.9".parse().unwrap();
    let mut a = sim.actor("a").await.ip(ip).connect().await.unwrap();
    a.login("first", None).await.unwrap();
    let mut b = sim.actor("b").await.ip(ip).connect().await.unwrap();
    let err = b.login("second", None).await.unwrap_err();
    assert!(
        matches!(err, ActorError::LoginFailed { ref error, .. }
            if error == "Guest logins are restricted to one per IP address per 60 seconds."),
        "{err}"
    );
    // Another IP is not affected; the same IP is again after 60 s.
    let mut c = sim.actor("c").await.connect().await.unwrap();
    c.login("third", None).await.unwrap();
    sim.advance_clock(Duration::from_secs(61));
    b.login("second", None).await.unwrap();
}

#[tokio::test]
async fn duplicate_login_kicks_the_older_socket() {
    let sim = start(capture_config()).await;
    let mut old = sim.actor("old").await.connect().await.unwrap();
    old.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    let mut new = sim.actor("new").await.connect().await.unwrap();
    new.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    assert_eq!(
        old.wait_closed(WAIT).await.unwrap(),
        Closed::ServerDisconnect
    );
    assert_eq!(
        old.received_named("kick"),
        [json!({"reason": "Duplicate login"})]
    );
    let after_login: Vec<String> = names(&new.received())
        .into_iter()
        .skip_while(|n| n != "login")
        .take(3)
        .collect();
    assert_eq!(after_login, ["login", "userLeave", "addUser"]);
    let snap = sim.channel("botchan").unwrap();
    assert_eq!(snap.users.len(), 1);
    // A repeated login on the surviving socket is ignored.
    let before = new.mark();
    new.emit(
        "login",
        Some(json!({"name": "testbot", "pw": "testbot-pass-123"})),
    )
    .unwrap();
    new.chat("still me").unwrap();
    new.expect_where("chatMsg", WAIT, |v| v["msg"] == "still me")
        .await
        .unwrap();
    assert!(!names(&new.received_since(before)).contains(&"login".to_owned()));
}

#[tokio::test]
async fn channel_password_flow() {
    let mut cfg = capture_config();
    cfg.channels.push(ChannelConfig {
        password: Some("sekrit".into()),
        ..ChannelConfig::registered("locked").rank("chanboss", 5.0)
    });
    let sim = start(cfg).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    assert!(matches!(
        a.join("locked").await,
        Err(ActorError::NeedPassword { wrong: false, .. })
    ));
    assert!(matches!(
        a.channel_password("nope").await,
        Err(ActorError::NeedPassword { wrong: true, .. })
    ));
    // Waiting at the prompt is not being in the channel.
    assert_eq!(sim.channel("locked").unwrap().usercount(), 0);
    a.channel_password("sekrit").await.unwrap();
    assert!(names(&a.received()).contains(&"cancelNeedPassword".to_owned()));
    let mut b = sim.actor("b").await.connect().await.unwrap();
    b.join_with_password("locked", "sekrit").await.unwrap();
    assert!(!names(&b.received()).contains(&"needPassword".to_owned()));
    assert_eq!(sim.channel("locked").unwrap().usercount(), 2);
    // Rank 2+ skips the prompt; a plain account does not.
    let mut owner = sim.actor("o").await.connect().await.unwrap();
    owner
        .login("chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    owner.join("locked").await.unwrap();
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.login("testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    assert!(matches!(
        bot.join("locked").await,
        Err(ActorError::NeedPassword { wrong: false, .. })
    ));
}

#[tokio::test]
async fn connect_budget_refuses_the_sixth_connect_and_refills() {
    let sim = start(SimConfig::default()).await;
    let ip: std::net::IpAddr = "10.7.7.7".parse().unwrap();
    let mut kept = Vec::new();
    for _ in 0..5 {
        kept.push(sim.actor("x").await.ip(ip).connect().await.unwrap());
    }
    let err = sim.actor("x").await.ip(ip).connect().await.unwrap_err();
    assert!(
        matches!(err, ActorError::Refused { ref message, .. } if message == "Rate limit exceeded"),
        "{err}"
    );
    sim.advance_clock(Duration::from_secs(10));
    kept.push(sim.actor("x").await.ip(ip).connect().await.unwrap());
    assert!(sim.actor("x").await.ip(ip).connect().await.is_err());
}

#[tokio::test]
async fn too_many_sockets_from_one_ip_are_kicked() {
    let sim = start(SimConfig {
        connect_burst: 100,
        max_sockets_per_ip: 3,
        ..SimConfig::default()
    })
    .await;
    let ip: std::net::IpAddr = "10.8.8.8".parse().unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(sim.actor("x").await.ip(ip).connect().await.unwrap());
    }
    let mut fourth = sim.actor("x").await.ip(ip).connect().await.unwrap();
    let kick = fourth.expect("kick", WAIT).await.unwrap();
    assert_eq!(
        kick,
        json!({"reason": "Too many connections from your IP address"})
    );
    assert_eq!(
        fourth.wait_closed(WAIT).await.unwrap(),
        Closed::ServerDisconnect
    );
    // Closing one frees a slot.
    kept.pop().unwrap().leave().await.unwrap();
    sim.wait_for(WAIT, |s| s.connection_count() == 2)
        .await
        .unwrap();
    let mut again = sim.actor("x").await.ip(ip).connect().await.unwrap();
    assert_eq!(again.expect("rank", WAIT).await.unwrap(), json!(-1));
}

#[tokio::test]
async fn unauthorized_admin_frames_get_kicked_with_the_real_reasons() {
    let cases = [
        (
            "setMotd",
            json!({"motd": "x"}),
            "Attempted setMotd with insufficient permission",
        ),
        (
            "setOptions",
            json!({"allow_dupes": true}),
            "Attempted setOptions as a non-moderator",
        ),
        (
            "setPermissions",
            json!({"chat": 2}),
            "Attempted setPermissions as a non-admin",
        ),
        (
            "setChannelCSS",
            json!({"css": "x"}),
            "Attempted setChannelCSS as non-admin",
        ),
        (
            "setChannelJS",
            json!({"js": "x"}),
            "Attempted setChannelJS as non-admin",
        ),
        (
            "assignLeader",
            json!({"name": "testbot"}),
            "Attempted assignLeader with insufficient permission",
        ),
    ];
    let sim = start(capture_config()).await;
    for (event, payload, reason) in cases {
        let mut bot = sim.actor("bot").await.connect().await.unwrap();
        bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
            .await
            .unwrap();
        bot.emit(event, Some(payload)).unwrap();
        let kick = bot.expect("kick", WAIT).await.unwrap();
        assert_eq!(kick["reason"], reason, "{event}");
        assert_eq!(
            bot.wait_closed(WAIT).await.unwrap(),
            Closed::ServerDisconnect
        );
    }
    // Nothing changed.
    let snap = sim.channel("botchan").unwrap();
    assert_eq!(snap.motd, "");
    assert_eq!(snap.opts["allow_dupes"], false);
}

#[tokio::test]
async fn wrongly_typed_payloads_get_error_messages() {
    let sim = start(capture_config()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    a.emit("chatMsg", Some(json!({"msg": 12345}))).unwrap();
    assert_eq!(
        a.expect("errorMsg", WAIT).await.unwrap()["msg"],
        "Unexpected error for message chatMsg: Expected key msg to be of type string, instead got number"
    );
    a.emit("pm", Some(json!({"msg": "x"}))).unwrap();
    assert_eq!(
        a.expect("errorMsg", WAIT).await.unwrap()["msg"],
        "Unexpected error for message pm: Expected key to to be of type string, instead got undefined"
    );
    a.emit("queue", Some(json!({"id": 5, "type": "yt", "pos": "end"})))
        .unwrap();
    assert_eq!(
        a.expect("errorMsg", WAIT).await.unwrap()["msg"],
        "Unexpected error for message queue: Expected key id to be of type string, instead got number"
    );
}

#[tokio::test]
async fn queue_limiter_and_playlist_rules_on_an_unregistered_channel() {
    let sim = start(capture_config()).await;
    let mut g = sim.actor("g").await.connect().await.unwrap();
    g.join_and_login("open", "guesty", None).await.unwrap();
    g.emit_batch(
        (0..4)
            .map(|i| {
                (
                    "queue".to_owned(),
                    Some(
                        json!({"id": format!("s{i}"), "type": "tw", "pos": "end", "duration": 10}),
                    ),
                )
            })
            .collect(),
    )
    .unwrap();
    let fail = g.expect("queueFail", WAIT).await.unwrap();
    assert_eq!(fail["msg"], "You are adding videos too quickly");
    assert_eq!(fail["id"], "s3");
    let snap = sim.channel("open").unwrap();
    assert_eq!(snap.playlist.len(), 3);
    assert_eq!(snap.current, Some(0));
    assert!(
        snap.playlist
            .iter()
            .all(|i| !i.temp && i.queueby == "guesty")
    );
    // Duplicates are refused (allow_dupes is off).
    sim.advance_clock(Duration::from_secs(5));
    g.queue_with(json!({"id": "s0", "type": "tw", "pos": "end", "duration": 10}))
        .unwrap();
    assert_eq!(
        g.expect("queueFail", WAIT).await.unwrap()["msg"],
        "This item is already on the playlist"
    );
    // requestPlaylist: once per 60 s.
    g.emit("requestPlaylist", None).unwrap();
    g.emit("requestPlaylist", None).unwrap();
    let err = g.expect("errorMsg", WAIT).await.unwrap();
    assert_eq!(err["code"], "REQ_PLAYLIST_LIMIT_REACHED");
    // Unknown YouTube ids fail like a server without an API key.
    g.queue("nope", "yt", "end").unwrap();
    let fail = g.expect("queueFail", WAIT).await.unwrap();
    assert_eq!(fail["link"], "https://youtu.be/nope");
}

#[tokio::test]
async fn registered_channel_ignores_rank_one_queue_and_keeps_state_while_empty() {
    let mut cfg = capture_config();
    cfg.media
        .push(daz_cytube_sim::MediaSpec::yt("abc", "A video", 30));
    let sim = start(cfg).await;
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    bot.queue("abc", "yt", "end").unwrap();
    bot.chat("sync").unwrap();
    bot.expect_where("chatMsg", WAIT, |v| v["msg"] == "sync")
        .await
        .unwrap();
    assert!(sim.channel("botchan").unwrap().playlist.is_empty());
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    owner.queue("abc", "yt", "end").unwrap();
    let q = bot.expect("queue", WAIT).await.unwrap();
    assert_eq!(q["item"]["media"]["title"], "A video");
    assert_eq!(q["item"]["media"]["duration"], "00:30");
    drop(bot);
    owner.leave().await.unwrap();
    sim.wait_for(WAIT, |s| {
        s.channel("botchan").is_some_and(|c| c.usercount() == 0)
    })
    .await
    .unwrap();
    assert_eq!(sim.channel("botchan").unwrap().playlist.len(), 1);
}

#[tokio::test]
async fn unregistered_channel_is_forgotten_when_the_last_socket_leaves() {
    let sim = start(SimConfig::default()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("tmp", "alice", None).await.unwrap();
    a.chat("hello").unwrap();
    a.expect("chatMsg", WAIT).await.unwrap();
    a.leave().await.unwrap();
    sim.wait_for(WAIT, |s| s.channel("tmp").is_none())
        .await
        .unwrap();
}

#[tokio::test]
async fn usercount_is_throttled_with_a_trailing_update() {
    let sim = start(SimConfig {
        usercount_interval: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join("c").await.unwrap();
    assert_eq!(a.received_named("usercount"), [json!(1)]);
    let mut b = sim.actor("b").await.connect().await.unwrap();
    b.join("c").await.unwrap();
    // Inside the window: no immediate usercount for the second join…
    assert!(b.received_named("usercount").is_empty());
    // …but one trailing update at the end of the window, with the count then.
    let n = a
        .expect_where("usercount", WAIT, |v| *v == json!(2))
        .await
        .unwrap();
    assert_eq!(n, json!(2));
}

#[tokio::test]
async fn moderators_see_join_notices_and_can_kick_and_mute() {
    let sim = start(capture_config()).await;
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    let mut g = sim.actor("g").await.connect().await.unwrap();
    g.join_and_login("botchan", "guesty", None).await.unwrap();
    let notice = owner
        .expect_where("chatMsg", WAIT, |v| v["username"] == "[server]")
        .await
        .unwrap();
    assert_eq!(notice["msg"], "guesty joined (aliases: guesty)");
    assert_eq!(
        notice["meta"],
        json!({"addClass": "server-whisper", "addClassToNameAndTimestamp": true})
    );
    owner.chat("/mute guesty").unwrap();
    g.expect_where("setUserMeta", WAIT, |v| v["meta"]["muted"] == true)
        .await
        .unwrap();
    assert!(
        sim.channel("botchan")
            .unwrap()
            .user("guesty")
            .unwrap()
            .muted
    );
    g.chat("hello?").unwrap();
    assert_eq!(
        g.expect("noflood", WAIT).await.unwrap(),
        json!({"action": "chat", "msg": "You have been muted on this channel."})
    );
    owner.chat("/kick guesty").unwrap();
    assert_eq!(g.expect("kick", WAIT).await.unwrap(), json!({"reason": ""}));
    owner
        .expect_where("userLeave", WAIT, |v| v["name"] == "guesty")
        .await
        .unwrap();
}

#[tokio::test]
async fn oversized_frames_close_the_connection() {
    let sim = start(SimConfig::default()).await;
    let a = sim.actor("a").await.connect().await.unwrap();
    let big = format!("42[\"chatMsg\",{{\"msg\":\"{}\"}}]", "x".repeat(1 << 20));
    a.send_text(big).unwrap();
    a.wait_closed(WAIT).await.unwrap();
    sim.wait_for(WAIT, |s| s.connection_count() == 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn frames_sent_to_logs_per_user_and_wait_for_frame_sees_them() {
    let sim = start(capture_config()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    a.chat("logged").unwrap();
    let v = sim
        .wait_for_frame("alice", "chatMsg", 0, WAIT)
        .await
        .unwrap();
    assert_eq!(v["msg"], "logged");
    let log = sim.frames_sent_to("ALICE");
    assert_eq!(log[0], ("rank".to_owned(), json!(-1)));
    assert!(log.iter().any(|(n, _)| n == "channelNotRegistered"));
    assert!(sim.frames_sent_to("nobody").is_empty());
    assert!(
        sim.wait_for_frame("alice", "kick", 0, Duration::from_millis(50))
            .await
            .is_err()
    );
}
