//! Reconnects against the simulator: after a dropped connection, after a server restart,
//! after a stalled server is declared dead; never faster than the connect budget; held
//! requests delivered after the reconnect, expired ones reported.

use std::time::{Duration, Instant};

use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{BOT, Rig, T, bot_room, json};
use daz_testkit::wait;

/// A simulator with the channel `botchan` (the bot's account comes with
/// [`Rig::logged_in`]).
fn bot_sim() -> SimConfig {
    SimConfig {
        channels: vec![ChannelConfig::registered("botchan")],
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_dropped_connection_and_a_restart() {
    let rig = Rig::logged_in(bot_sim(), "").await;
    let life = rig.probe("life", &["host.room.main.>"]);

    rig.sim.drop_connections(None);
    let env = life.wait_subject("host.room.main.disconnected").await;
    let ev = json(&env);
    assert_eq!(ev["kind"], "closed");
    assert_eq!(ev["previous"], "logged_in");
    assert!(ev["retry_in_ms"].as_u64().unwrap() <= 400);
    life.wait_subject("host.room.main.logged_in").await;

    rig.sim.restart().await.unwrap();
    life.wait_subject("host.room.main.disconnected").await;
    life.wait_subject("host.room.main.logged_in").await;
    let status = rig.room("main").status.lock().clone();
    assert_eq!(status.sessions, 3);
    // The state was rebuilt from the server's replay, not kept from before: the bot
    // is listed exactly once.
    let room = rig.room("main");
    wait(T, "the bot listed once in the rebuilt state", || {
        room.state
            .read()
            .users
            .iter()
            .filter(|u| u.name == "testbot")
            .count()
            == 1
    })
    .await;
    let sim = rig.sim.channel("botchan").unwrap();
    assert_eq!(sim.users.len(), room.state.read().users.len());
    let metrics = rig.host.get("/metrics").await.1;
    assert!(
        metrics
            .contains(r#"daz_cytube_state_transitions_total{room="main",state="disconnected"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_is_declared_dead_after_ping_interval_plus_timeout() {
    let cfg = SimConfig {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(300),
        ..bot_sim()
    };
    let rig = Rig::logged_in(cfg, "[rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 100\nconnect_timeout_ms = 400\nconnect_burst = 1000\nconnect_refill_ms = 10\n").await;
    let life = rig.probe("life", &["host.room.main.>"]);
    let stalled_at = Instant::now();
    rig.sim.stall(true);
    let env = life.wait_subject("host.room.main.disconnected").await;
    let took = stalled_at.elapsed();
    assert_eq!(json(&env)["kind"], "dead");
    // The last ping came at most one interval before the stall; death is declared
    // interval + timeout (500 ms) after it.
    assert!(took >= Duration::from_millis(280), "{took:?}");
    // Well before anything but liveness would notice (a generous bound: shared CI).
    assert!(took < Duration::from_secs(5), "{took:?}");
    // While stalled, attempts time out (the open packet never comes) and are retried.
    let env = life
        .wait_for(T, "a handshake timeout", |e| json(e)["kind"] == "timeout")
        .await;
    assert!(
        json(&env)["error"]
            .as_str()
            .unwrap()
            .contains("open packet")
    );
    rig.sim.stall(false);
    life.wait_subject("host.room.main.logged_in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_stay_within_the_connect_budget() {
    // The server allows 2 connects, then one per 500 ms; the room is told the same.
    let cfg = SimConfig {
        accounts: vec![Account::new(BOT.0, BOT.1)],
        connect_burst: 2,
        connect_refill: Duration::from_millis(500),
        ..bot_sim()
    };
    // Not `Rig::logged_in`: the probe must see the first login too.
    let rig = Rig::start(cfg, |sim, dir| {
        bot_room(
            sim,
            dir,
            BOT.1,
            "[rooms.reconnect]\ninitial_delay_ms = 1\nmax_delay_ms = 2\nconnect_timeout_ms = 5000\nconnect_burst = 2\nconnect_refill_ms = 500\n",
        )
    })
    .await;
    let life = rig.probe("life", &["host.room.main.>"]);
    let start = Instant::now();
    let mut connects = Vec::new();
    // Six forced drops in a row, each as soon as the room is back.
    for _ in 0..6 {
        life.wait_subject("host.room.main.logged_in").await;
        connects.push(start.elapsed());
        rig.sim.drop_connections(None);
    }
    // The server never refused a connect.
    let metrics = rig.host.get("/metrics").await.1;
    assert!(!metrics.contains("rate_limited"), "{metrics}");
    // 2 at once, then one per 500 ms: the 6th session needs >= 4 refills.
    assert!(connects[5] >= Duration::from_millis(1950), "{connects:?}");
    // And the waits are not wildly longer than that (a generous bound: shared CI).
    assert!(connects[5] < Duration::from_secs(10), "{connects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_go_out_after_the_reconnect_and_expired_ones_are_reported() {
    let rig = Rig::logged_in(bot_sim(), "[rooms.reconnect]\ninitial_delay_ms = 1500\nmax_delay_ms = 1500\njitter = 0.0\nconnect_burst = 1000\nconnect_refill_ms = 10\n[rooms.outbound]\nttl_ms = 1000\n").await;
    let watcher = rig.user("botchan", "watcher", None).await;
    let plugin = rig.probe("holder", &[]);
    rig.sim.drop_connections(Some("botchan"));
    rig.wait_state("main", ConnState::Disconnected).await;
    // The watcher was dropped too; bring it back.
    let mut watcher2 = rig.user("botchan", "watcher2", None).await;
    drop(watcher);
    // Sent while down: the first expires (ttl 1 s < reconnect 1.5 s)... unless we
    // publish the second later, so that it is still fresh at the reconnect.
    rig.request(
        "holder",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "too old"}),
    );
    let env = plugin.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "expired");
    assert_eq!(f["original"]["payload"]["msg"], "too old");
    assert_eq!(f["original"]["source"], "holder");
    assert!(f["reason"].as_str().unwrap().contains("disconnected"));
    rig.request(
        "holder",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "held line"}),
    );
    watcher2
        .expect_where("chatMsg", T, |v| {
            v["msg"] == "held line" && v["username"] == "testbot"
        })
        .await
        .unwrap();
    assert_eq!(rig.room("main").status.lock().sessions, 2);
    assert!(plugin.drain().is_empty(), "nothing else failed");
}
