//! Server outages and failures against the simulator: refused discovery requests do not
//! spend the connect budget (only websocket connects do), rooms come back as soon as the
//! server answers again, and a room that lost its connection or failed never shows the
//! old users or `logged_in: true`.

use std::time::Instant;

use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{Rig, T, account_room, json};
use daz_testkit::wait;

fn two_bots() -> SimConfig {
    SimConfig {
        channels: vec![
            ChannelConfig::registered("botchan"),
            ChannelConfig::registered("otherchan"),
        ],
        accounts: vec![
            Account::new("testbot", "pw1"),
            Account::new("otherbot", "pw2"),
        ],
        // The real server's budget shape, with a refill slower than any test.
        connect_burst: 5,
        connect_refill: std::time::Duration::from_secs(600),
        ..SimConfig::default()
    }
}

/// A room with a connect budget of 4 and one more per 10 minutes, and a backoff that
/// would grow to a minute: only the budget left and the discovery retry can bring it
/// back quickly.
fn budgeted_room(
    sim: &daz_cytube_sim::SimHandle,
    dir: &std::path::Path,
    name: &str,
    channel: &str,
    user: &str,
    pw: &str,
) -> String {
    account_room(
        sim,
        dir,
        name,
        channel,
        (user, pw),
        "[rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 60000\nconnect_timeout_ms = 5000\nconnect_burst = 4\nconnect_refill_ms = 600000\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_discovery_spends_no_connect_budget_and_rooms_return_at_once() {
    let rig = Rig::start(two_bots(), |sim, dir| {
        format!(
            "{}{}",
            budgeted_room(sim, dir, "main", "botchan", "testbot", "pw1"),
            budgeted_room(sim, dir, "other", "otherchan", "otherbot", "pw2")
        )
    })
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    rig.wait_state("other", ConnState::LoggedIn).await;
    // Two of the site's four connects are spent; two are left.
    let main = rig.room("main");
    let other = rig.room("other");
    let attempts = |r: &daz_host::cytube::RoomShared| r.status.lock().connects;
    let (main0, other0) = (attempts(&main), attempts(&other));

    rig.sim.go_down().await;
    // Each room tries discovery several times against the dead site: far more attempts
    // than the budget has connects left.
    wait(T, "six refused discoveries per room", || {
        attempts(&main) >= main0 + 6 && attempts(&other) >= other0 + 6
    })
    .await;
    let life = rig.probe("life", &["host.room.*.disconnected"]);
    let env = life.wait_subject("host.room.main.disconnected").await;
    assert_eq!(json(&env)["kind"], "discovery", "{}", json(&env));
    let retry = json(&env)["retry_in_ms"].as_u64().unwrap();
    assert!(retry <= 1_500, "discovery retried after {retry} ms");

    rig.sim.come_back().unwrap();
    let back = Instant::now();
    // Had the refused discoveries spent the budget, the next connect would wait for a
    // refill ten minutes away.
    rig.wait_state("main", ConnState::LoggedIn).await;
    rig.wait_state("other", ConnState::LoggedIn).await;
    println!(
        "both rooms logged in {} ms after the server listened again",
        back.elapsed().as_millis()
    );
    // The server saw exactly one websocket connect per room after the outage: its own
    // budget (5, refilled every 10 minutes, reset by the restart) was never hit.
    assert_eq!(rig.sim.channel("botchan").unwrap().users.len(), 1);
    assert_eq!(rig.sim.channel("otherchan").unwrap().users.len(), 1);
    let metrics = rig.host.get("/metrics").await.1;
    assert!(
        !metrics.contains("kind=\"rate_limited\""),
        "a connect was refused by the server's budget: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_disconnected_room_shows_no_stale_users() {
    let rig = Rig::start(two_bots(), |sim, dir| {
        budgeted_room(sim, dir, "main", "botchan", "testbot", "pw1")
    })
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    // Held to the end: her socket keeps her in the channel.
    let _alice = rig.user("botchan", "alice", None).await;
    let room = rig.room("main");
    wait(T, "alice listed", || {
        room.state.read().users.iter().any(|u| u.name == "alice")
    })
    .await;
    let (_, before) = rig.get_json("/api/rooms/main").await;
    assert_eq!(before["state"]["me"]["logged_in"], true, "{before}");

    // Disconnected: the state is cleared with the transition.
    let life = rig.probe("life", &["host.room.main.>"]);
    rig.sim.drop_connections(None);
    life.wait_subject("host.room.main.disconnected").await;
    let (_, down) = rig.get_json("/api/rooms/main").await;
    assert_eq!(down["state"]["me"]["logged_in"], false, "{down}");
    assert_eq!(
        down["state"]["users"].as_array().map(Vec::len),
        Some(0),
        "{down}"
    );
    life.wait_subject("host.room.main.logged_in").await;

    // Failed (another client logs in as the bot: the default policy stops the room).
    let mut thief = rig.sim.actor("thief").await.connect().await.unwrap();
    thief
        .join_and_login("botchan", "testbot", Some("pw1"))
        .await
        .unwrap();
    let env = life.wait_subject("host.room.main.failed").await;
    assert_eq!(json(&env)["kind"], "duplicate_login", "{}", json(&env));
    let (_, failed) = rig.get_json("/api/rooms/main").await;
    assert_eq!(failed["status"]["state"], "failed", "{failed}");
    assert_eq!(failed["state"]["me"]["logged_in"], false, "{failed}");
    assert_eq!(
        failed["state"]["users"].as_array().map(Vec::len),
        Some(0),
        "{failed}"
    );
    let (_, list) = rig.get_json("/api/rooms").await;
    let summary = list
        .as_array()
        .or_else(|| list["rooms"].as_array())
        .and_then(|a| a.iter().find(|r| r["room"] == "main").cloned())
        .unwrap_or_default();
    assert_eq!(summary["users"], 0, "{list}");
    assert!(summary["me"].is_null(), "{list}");
}
