//! Conformance: replays `guest-errors-throttle-session.log` (guests on an
//! unregistered channel, login errors, duplicate login, channel password, mute,
//! kick, connect throttle). The capture leaves some frames out for later
//! joiners, so most checks are "the captured frames appear, in order, with the
//! captured shapes"; the first guest's sections are compared exactly.

mod common;

use std::net::IpAddr;

use common::*;
use daz_cytube_sim::capture::{Line, fixtures_dir};
use daz_cytube_sim::{ActorError, SimHandle};
use serde_json::json;

/// Recreates the registered channel state the capture's second half starts
/// from: a MOTD, one playing item and a 15-message backlog.
async fn seed_botchan(sim: &SimHandle) {
    let mut owner = sim.actor("seed-owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    owner
        .emit(
            "setMotd",
            Some(json!({"motd": "Welcome <b>bots</b>! <script>alert(1)</script>"})),
        )
        .unwrap();
    owner
        .queue_with(
            json!({"id": "cytube_test_stream_a", "type": "tw", "pos": "end", "duration": 8}),
        )
        .unwrap();
    owner.expect("changeMedia", WAIT).await.unwrap();
    let mut bot = sim.actor("seed-bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    let texts: Vec<String> = (10..20)
        .map(|i| format!("flood {i}"))
        .chain((0..4).map(|i| format!("af {i}")))
        .chain(["back".to_owned()])
        .collect();
    bot.emit_batch(
        texts
            .iter()
            .map(|t| ("chatMsg".to_owned(), Some(json!({"msg": t, "meta": {}}))))
            .collect(),
    )
    .unwrap();
    bot.wait_for(WAIT, |f| {
        f.iter().filter(|(n, _)| n == "chatMsg").count() == 15
    })
    .await
    .unwrap();
    bot.leave().await.unwrap();
    owner.leave().await.unwrap();
    sim.wait_for(WAIT, |s| {
        s.channel("botchan")
            .is_some_and(|c| c.users.is_empty() && c.backlog.len() == 15)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn guest_errors_throttle_session_matches_capture() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let log = std::fs::read_to_string(dir.join("guest-errors-throttle-session.log")).unwrap();
    let sim = start(capture_config()).await;
    seed_botchan(&sim).await;
    let mut r = Replay::new(sim.clone(), &log);

    r.begin("GET /socketconfig/guestchan.json");
    let (status, _) = http_get(sim.addr(), "/socketconfig/guestchan.json").await;
    assert_eq!(status, 200);
    r.begin("GET /socketconfig/bad$chan.json");
    let (status, body) = http_get(sim.addr(), "/socketconfig/bad$chan.json").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"error": "Channel \"bad$chan\" does not exist."})
    );

    let g1_ip: IpAddr = "10.200.0.1".parse().unwrap();
    let s = r.begin("G1: guest on UNREGISTERED channel");
    let mut g1 = sim.actor("g1").await.ip(g1_ip).connect().await.unwrap();
    g1.login("guestbot", None).await.unwrap();
    g1.join("guestchan").await.unwrap();
    g1.chat("guest says hi").unwrap();
    r.check(&s, "g1", &g1, 0, &[], false).await;

    let s = r.begin("G1 (guest, rank 0) queues");
    let m = g1.mark();
    g1.queue_with(json!({"id": "guest_stream", "type": "tw", "pos": "end", "duration": 20}))
        .unwrap();
    r.check(&s, "g1", &g1, m, &[], false).await;

    let s = r.begin("G1 opens a poll");
    let m = g1.mark();
    g1.emit(
        "newPoll",
        Some(json!({"title": "Poll?", "opts": ["yes", "no"], "obscured": false})),
    )
    .unwrap();
    g1.emit("vote", Some(json!({"option": 1}))).unwrap();
    g1.emit("closePoll", None).unwrap();
    r.check(&s, "g1", &g1, m, &[], false).await;

    let s = r.begin("ANON: connects");
    let m1 = g1.mark();
    let mut anon = sim.actor("anon").await.connect().await.unwrap();
    anon.join("guestchan").await.unwrap();
    anon.chat("can anyone hear me").unwrap();
    anon.pm("guestbot", "psst").unwrap();
    r.check(&s, "anon", &anon, 0, &[], true).await;
    r.check(&s, "g1", &g1, m1, &[], false).await;
    assert_eq!(sim.channel("guestchan").unwrap().usercount(), 2);

    let s = r.begin("G2: second guest login from SAME IP");
    let mut g2 = sim.actor("g2").await.ip(g1_ip).connect().await.unwrap();
    let err = g2
        .join_and_login("guestchan", "guestbot2", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ActorError::LoginFailed { .. }), "{err}");
    r.check(&s, "g2", &g2, 0, &[], true).await;
    // The refusal comes before the join burst, as captured.
    assert_eq!(names(&g2.received())[..2], ["rank", "login"]);

    let s = r.begin("G3: guest tries");
    let mut g3 = sim.actor("g3").await.connect().await.unwrap();
    g3.join("guestchan").await.unwrap();
    for name in ["testbot", "guestbot", "bad name!", "x_admin"] {
        let err = g3.login(name, None).await.unwrap_err();
        assert!(matches!(err, ActorError::LoginFailed { .. }), "{err}");
    }
    g3.emit("login", Some(json!("notanobject"))).unwrap();
    r.check(&s, "g3", &g3, 0, &[], true).await;

    let s = r.begin("W: registered account with WRONG password");
    let mut w = sim.actor("w").await.connect().await.unwrap();
    let err = w
        .join_and_login("guestchan", "otheruser", Some("wrong-password"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ActorError::LoginFailed { ref error, .. } if error == "Invalid username/password combination")
    );
    r.check(&s, "w", &w, 0, &[], true).await;
    // The account check is slower than the join: the burst comes first.
    let wn = names(&w.received());
    assert!(wn.iter().position(|n| n == "userlist") < wn.iter().position(|n| n == "login"));

    let s = r.begin("W retries");
    let marks = [g1.mark(), anon.mark(), g2.mark(), g3.mark(), w.mark()];
    w.login("otheruser", Some("otheruser-pass-123"))
        .await
        .unwrap();
    r.check(&s, "w", &w, marks[4], &[], true).await;
    r.check(&s, "g1", &g1, marks[0], &[], false).await;
    r.check(&s, "anon", &anon, marks[1], &[], false).await;
    r.check(&s, "g2", &g2, marks[2], &[], false).await;
    r.check(&s, "g3", &g3, marks[3], &[], false).await;

    let s = r.begin("BAD: joinChannel");
    let mut bad = sim.actor("bad").await.connect().await.unwrap();
    assert!(matches!(
        bad.join("bad$chan").await,
        Err(ActorError::Kicked { .. })
    ));
    r.check(&s, "bad", &bad, 0, &[], false).await;
    bad.wait_closed(WAIT).await.unwrap();

    let s = r.begin("DUP: testbot logs in twice");
    let mut dup1 = sim.actor("dup1").await.connect().await.unwrap();
    dup1.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    let mut dup2 = sim.actor("dup2").await.connect().await.unwrap();
    dup2.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    r.check(&s, "dup1", &dup1, 0, &[], true).await;
    r.check(&s, "dup2", &dup2, 0, &[], true).await;
    assert_eq!(
        dup1.wait_closed(WAIT).await.unwrap(),
        daz_cytube_sim::Closed::ServerDisconnect
    );
    assert_eq!(
        dup1.received_named("kick"),
        [json!({"reason": "Duplicate login"})]
    );

    let s = r.begin("PASSWORD: owner sets channel password");
    let d2 = dup2.mark();
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    owner
        .emit("setOptions", Some(json!({"password": "sekrit"})))
        .unwrap();
    owner
        .expect_where("channelOpts", WAIT, |v| v["password"] == "sekrit")
        .await
        .unwrap();
    let mut pwguest = sim.actor("pwguest").await.connect().await.unwrap();
    assert!(matches!(
        pwguest.join("botchan").await,
        Err(ActorError::NeedPassword { wrong: false, .. })
    ));
    assert!(matches!(
        pwguest.channel_password("wrong").await,
        Err(ActorError::NeedPassword { wrong: true, .. })
    ));
    pwguest.channel_password("sekrit").await.unwrap();
    let o = owner.mark();
    pwguest.login("pwguest", None).await.unwrap();
    owner
        .expect_where("chatMsg", WAIT, |v| v["username"] == "[server]")
        .await
        .unwrap();
    r.check(&s, "pwguest", &pwguest, 0, &[], true).await;
    r.check(&s, "dup2", &dup2, d2, &[], true).await;
    r.check(&s, "owner", &owner, 0, &[], true).await;
    assert_eq!(
        owner.received_since(o).last().unwrap().1["msg"],
        "pwguest joined (aliases: pwguest)"
    );

    let s = r.begin("joinChannel may also carry the password");
    let mut pwguest2 = sim.actor("pwguest2").await.connect().await.unwrap();
    pwguest2
        .join_with_password("botchan", "sekrit")
        .await
        .unwrap();
    owner
        .emit("setOptions", Some(json!({"password": ""})))
        .unwrap();
    r.check(&s, "pwguest2", &pwguest2, 0, &[], true).await;
    // The capture does not log the channelOpts this sends; let them all
    // arrive before the next step is compared.
    for a in [&mut owner, &mut dup2, &mut pwguest, &mut pwguest2] {
        a.expect_where("channelOpts", WAIT, |v| v["password"] == false)
            .await
            .unwrap();
    }
    assert!(!names(&pwguest2.received()).contains(&"needPassword".to_owned()));

    let s = r.begin("KICK: owner kicks pwguest");
    let marks = [dup2.mark(), owner.mark(), pwguest.mark(), pwguest2.mark()];
    owner.chat("/kick pwguest bye bye").unwrap();
    r.check(&s, "pwguest", &pwguest, marks[2], &[], false).await;
    r.check(&s, "dup2", &dup2, marks[0], &[], false).await;
    r.check(&s, "owner", &owner, marks[1], &[], false).await;
    r.check(&s, "pwguest2", &pwguest2, marks[3], &[], false)
        .await;
    assert_eq!(
        pwguest.wait_closed(WAIT).await.unwrap(),
        daz_cytube_sim::Closed::ServerDisconnect
    );

    let s = r.begin("MUTE: owner mutes dup2");
    let marks = [dup2.mark(), owner.mark(), pwguest2.mark()];
    owner.chat("/mute testbot").unwrap();
    dup2.expect_where("setUserMeta", WAIT, |v| v["meta"]["muted"] == true)
        .await
        .unwrap();
    dup2.chat("am I muted?").unwrap();
    dup2.expect("noflood", WAIT).await.unwrap();
    owner.chat("/unmute testbot").unwrap();
    r.check(&s, "dup2", &dup2, marks[0], &[], false).await;
    r.check(&s, "owner", &owner, marks[1], &[], false).await;
    r.check(&s, "pwguest2", &pwguest2, marks[2], &[], false)
        .await;

    let s = r.begin("THROTTLE");
    let marks = [dup2.mark(), owner.mark(), pwguest2.mark()];
    let fresh: IpAddr = "10.201.0.1".parse().unwrap();
    let mut outcomes = Vec::new();
    let mut keep = Vec::new();
    for i in 0..7 {
        match sim
            .actor(&format!("burst{i}"))
            .await
            .ip(fresh)
            .connect()
            .await
        {
            Ok(a) => {
                outcomes.push("(connect)".to_owned());
                keep.push(a);
            }
            Err(ActorError::Refused { message, .. }) => {
                outcomes.push(format!("(connect_error) {message}"));
            }
            Err(e) => panic!("burst{i}: {e}"),
        }
    }
    let captured: Vec<String> = s
        .lines
        .iter()
        .filter_map(|l| match l {
            Line::Status {
                who: Some(client),
                what,
                ..
            } if client.starts_with("burst") && what.starts_with("(connect") => {
                Some(what.split(" id=").next().unwrap_or_default().to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, captured);
    // Apart from its playback moving on, nothing else reached the channel.
    r.check(&s, "dup2", &dup2, marks[0], PLAYBACK, false).await;
    r.check(&s, "owner", &owner, marks[1], PLAYBACK, false)
        .await;
    r.check(&s, "pwguest2", &pwguest2, marks[2], PLAYBACK, false)
        .await;
}
