//! Faults and time: ping timeout, connect timeout, restart on the same port,
//! abrupt drops, stalls, garbage frames, and playback driven fast.

mod common;

use std::time::Duration;

use common::*;
use daz_cytube_sim::{ChannelConfig, Closed, MediaSpec, SimConfig};
use serde_json::json;

#[tokio::test]
async fn silent_client_is_closed_after_the_ping_timeout() {
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await;
    let silent = sim
        .actor("silent")
        .await
        .auto_pong(false)
        .connect()
        .await
        .unwrap();
    let healthy = sim.actor("healthy").await.connect().await.unwrap();
    assert_eq!(silent.wait_closed(WAIT).await.unwrap(), Closed::CloseFrame);
    assert_eq!(silent.pings(), 1);
    // The one that answers keeps getting pings and stays connected.
    healthy
        .wait_raw(WAIT, |raw| raw.iter().filter(|f| *f == "2").count() >= 4)
        .await
        .unwrap();
    assert!(healthy.closed().is_none());
}

#[tokio::test]
async fn socket_without_connect_packet_times_out() {
    let sim = start(SimConfig {
        connect_timeout: Duration::from_millis(150),
        ..SimConfig::default()
    })
    .await;
    let a = sim.actor("a").await.open().await.unwrap();
    assert!(a.open_info().is_some());
    assert_eq!(a.wait_closed(WAIT).await.unwrap(), Closed::CloseFrame);
}

#[tokio::test]
async fn restart_keeps_the_port_and_registered_state_only() {
    let mut cfg = capture_config();
    cfg.channels.push(ChannelConfig {
        motd: "persistent".into(),
        ..ChannelConfig::registered("keep")
    });
    let sim = start(cfg).await;
    let addr = sim.addr();
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("keep", "alice", None).await.unwrap();
    let mut b = sim.actor("b").await.connect().await.unwrap();
    b.join_and_login("gone", "bob", None).await.unwrap();
    b.chat("lost with the channel").unwrap();
    b.expect("chatMsg", WAIT).await.unwrap();

    sim.restart().await.unwrap();
    assert_eq!(sim.addr(), addr);
    assert_eq!(a.wait_closed(WAIT).await.unwrap(), Closed::Abrupt);
    assert_eq!(b.wait_closed(WAIT).await.unwrap(), Closed::Abrupt);
    assert!(sim.channel("gone").is_none());
    let keep = sim.channel("keep").unwrap();
    assert_eq!(keep.motd, "persistent");
    assert_eq!(keep.usercount(), 0);

    // Same port, fresh state: the guest name and the IP budget are free again.
    let mut again = sim.actor("a2").await.connect().await.unwrap();
    again.join_and_login("gone", "bob", None).await.unwrap();
    assert_eq!(sim.channel("gone").unwrap().backlog.len(), 0);
    assert!(again.received_named("chatMsg").is_empty());
}

#[tokio::test]
async fn drop_connections_closes_only_that_channel_without_disconnect() {
    let sim = start(SimConfig::default()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    let mut b = sim.actor("b").await.connect().await.unwrap();
    let mut other = sim.actor("c").await.connect().await.unwrap();
    a.join_and_login("one", "alice", None).await.unwrap();
    b.join_and_login("one", "bob", None).await.unwrap();
    other.join_and_login("two", "carol", None).await.unwrap();
    sim.drop_connections(Some("one"));
    assert_eq!(a.wait_closed(WAIT).await.unwrap(), Closed::Abrupt);
    assert_eq!(b.wait_closed(WAIT).await.unwrap(), Closed::Abrupt);
    assert!(a.received_named("kick").is_empty());
    sim.wait_for(WAIT, |s| s.channel("one").is_none())
        .await
        .unwrap();
    other.chat("still up").unwrap();
    other.expect("chatMsg", WAIT).await.unwrap();
    assert!(other.closed().is_none());
}

#[tokio::test]
async fn stall_holds_frames_and_pings_until_released() {
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_secs(30),
        ..SimConfig::default()
    })
    .await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    a.wait_raw(WAIT, |raw| raw.iter().any(|f| f == "2"))
        .await
        .unwrap();
    sim.stall(true);
    let pings = a.pings();
    a.chat("during the stall").unwrap();
    // Nothing comes back while stalled: neither the echo nor a ping.
    let quiet = a
        .wait_for(Duration::from_millis(300), |f| {
            f.iter()
                .any(|(n, v)| n == "chatMsg" && v["msg"] == "during the stall")
        })
        .await;
    assert!(quiet.is_err(), "frames flowed during a stall");
    assert!(a.pings() <= pings + 1, "pings went on during a stall");
    sim.stall(false);
    a.expect_where("chatMsg", WAIT, |v| v["msg"] == "during the stall")
        .await
        .unwrap();
    let resumed = a.pings();
    a.wait_raw(WAIT, |raw| {
        raw.iter().filter(|f| *f == "2").count() as u64 > resumed
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn garbage_frames_reach_clients_in_the_channel() {
    let sim = start(SimConfig::default()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    sim.send_garbage("room");
    a.wait_raw(WAIT, |raw| raw.iter().any(|f| f == "9garbage"))
        .await
        .unwrap();
    assert!(
        sim.frames_sent_to("alice")
            .iter()
            .any(|(n, _)| n == "<garbage>")
    );
    // The server side is unaffected.
    a.chat("after garbage").unwrap();
    a.expect_where("chatMsg", WAIT, |v| v["msg"] == "after garbage")
        .await
        .unwrap();
}

#[tokio::test]
async fn fast_time_scale_plays_through_and_removes_temp_items() {
    let sim = start(SimConfig {
        time_scale: 100.0,
        ..SimConfig::default()
    })
    .await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("tv", "alice", None).await.unwrap();
    a.queue_with(json!({"id": "x", "type": "tw", "pos": "end", "duration": 3, "temp": true}))
        .unwrap();
    a.queue_with(json!({"id": "y", "type": "tw", "pos": "end", "duration": 3}))
        .unwrap();
    let change = a
        .expect_where("changeMedia", WAIT, |v| v["id"] == "y")
        .await
        .unwrap();
    assert_eq!(change["currentTime"], -3);
    assert_eq!(change["paused"], true);
    assert!(a.received_named("delete").contains(&json!({"uid": 0})));
    // Lead-in over: playback starts at 0, unpaused.
    a.expect_where("mediaUpdate", WAIT, |v| {
        v["currentTime"] == 0 && v["paused"] == false
    })
    .await
    .unwrap();
    let snap = sim.channel("tv").unwrap();
    assert_eq!(snap.playlist.len(), 1);
    assert_eq!(snap.playlist[0].id, "y");
}

#[tokio::test]
async fn advance_playback_moves_a_frozen_clock() {
    let mut cfg = capture_config();
    cfg.channels.push(
        ChannelConfig::registered("tv")
            .media(MediaSpec::new("fi", "a", "A", 10))
            .media(MediaSpec::new("fi", "b", "B", 10)),
    );
    let sim = start(cfg).await;
    let snap = sim.channel("tv").unwrap();
    assert_eq!(snap.current, Some(0));
    assert_eq!(snap.position, -3.0);
    sim.advance_playback_in("tv", 8_000);
    let snap = sim.channel("tv").unwrap();
    assert_eq!(snap.position, 5.0);
    assert!(!snap.paused);
    sim.advance_playback(7_000);
    assert_eq!(sim.channel("tv").unwrap().current, Some(1));
    // Non-temp items stay and the list wraps around.
    sim.advance_playback_in("tv", 15_000);
    let snap = sim.channel("tv").unwrap();
    assert_eq!(snap.current, Some(0));
    assert_eq!(snap.playlist.len(), 2);
}

#[tokio::test]
async fn leader_takes_over_the_clock_and_hands_it_back() {
    let mut cfg = capture_config();
    cfg.channels[0] = ChannelConfig::registered("botchan")
        .rank("chanboss", 5.0)
        .media(MediaSpec::new("fi", "clip", "Clip", 100));
    let sim = start(cfg).await;
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    owner
        .emit("assignLeader", Some(json!({"name": "testbot"})))
        .unwrap();
    assert_eq!(bot.expect("rank", WAIT).await.unwrap(), json!(-1));
    bot.expect_where("rank", WAIT, |v| *v == json!(1.5))
        .await
        .unwrap();
    // The server clock stops; the leader's updates (non-live media) are relayed.
    sim.advance_playback(50_000);
    assert_eq!(sim.channel("botchan").unwrap().position, -3.0);
    bot.emit(
        "mediaUpdate",
        Some(json!({"id": "clip", "currentTime": 42.5, "paused": false, "type": "fi"})),
    )
    .unwrap();
    let update = owner.expect("mediaUpdate", WAIT).await.unwrap();
    assert_eq!(update, json!({"currentTime": 42.5, "paused": false}));
    assert_eq!(
        sim.channel("botchan").unwrap().leader.as_deref(),
        Some("testbot")
    );
    // Leaving hands the clock back to the server.
    bot.leave().await.unwrap();
    owner
        .expect_where("setLeader", WAIT, |v| v == "")
        .await
        .unwrap();
    sim.advance_playback(1_000);
    assert_eq!(sim.channel("botchan").unwrap().position, 43.5);
}
