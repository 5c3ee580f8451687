//! Rooms follow `plugins.toml`: against the simulator, a room added to the file is
//! joined, a changed room is rejoined with its new table, a removed room is left with a
//! clean close, the untouched room keeps its connection throughout, and an invalid file
//! changes nothing. `/api/rooms` follows.

use std::{fs, sync::Arc};

use daz_cytube_sim::{Account, ChannelConfig, SimConfig, SimHandle};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{Rig, T, account_room};
use daz_testkit::wait;

fn rooms_sim() -> SimConfig {
    SimConfig {
        channels: ["alpha", "beta", "gamma"]
            .into_iter()
            .map(ChannelConfig::registered)
            .collect(),
        accounts: vec![Account::new("bot_a", "pw-a"), Account::new("bot_b", "pw-b")],
        ..SimConfig::default()
    }
}

/// Replaces the configuration file the way an editor or deploy tool does (write a
/// temporary file, rename it over).
fn write_config(rig: &Rig, rooms: &str) {
    let path = &rig.host.config_path;
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, format!("{}{rooms}", daz_testkit::host_table(""))).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

fn in_channel(sim: &SimHandle, channel: &str, user: &str) -> bool {
    sim.channel(channel)
        .is_some_and(|c| c.users.iter().any(|u| u.name == user))
}

async fn listed(rig: &Rig) -> Vec<String> {
    let (code, body) = rig.get_json("/api/rooms").await;
    assert_eq!(code, 200);
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_follow_configuration_changes() {
    let rig = Rig::start(rooms_sim(), |sim, dir| {
        account_room(sim, dir, "a", "alpha", ("bot_a", "pw-a"), "")
    })
    .await;
    rig.wait_state("a", ConnState::LoggedIn).await;
    let a = rig.room("a");
    let a_events = rig.probe("a-watch", &["host.room.a.>"]);
    let b_events = rig.probe("b-watch", &["host.room.b.>"]);
    let dir = rig.dir.path().to_owned();
    let a_table = account_room(&rig.sim, &dir, "a", "alpha", ("bot_a", "pw-a"), "");
    let registry = rig.host.app.room_registry.clone();

    // Added: the bot joins beta.
    write_config(
        &rig,
        &format!(
            "{a_table}{}",
            account_room(&rig.sim, &dir, "b", "beta", ("bot_b", "pw-b"), "")
        ),
    );
    wait(T, "room b to log in", || {
        registry
            .get("b")
            .is_some_and(|b| b.conn_state() == ConnState::LoggedIn)
    })
    .await;
    rig.sim
        .wait_for(T, |s| in_channel(s, "beta", "bot_b"))
        .await
        .expect("bot_b in beta");
    assert_eq!(listed(&rig).await, ["a", "b"]);

    // Changed: b moves to gamma — it leaves beta and joins gamma.
    let b_before = rig.room("b");
    write_config(
        &rig,
        &format!(
            "{a_table}{}",
            account_room(&rig.sim, &dir, "b", "gamma", ("bot_b", "pw-b"), "")
        ),
    );
    wait(T, "room b to log in to gamma", || {
        registry.get("b").is_some_and(|b| {
            !Arc::ptr_eq(&b, &b_before)
                && b.channel == "gamma"
                && b.conn_state() == ConnState::LoggedIn
        })
    })
    .await;
    rig.sim
        .wait_for(T, |s| {
            in_channel(s, "gamma", "bot_b") && !in_channel(s, "beta", "bot_b")
        })
        .await
        .expect("bot_b moved from beta to gamma");
    assert_eq!(b_before.conn_state(), ConnState::Stopped);
    b_events
        .wait_for(T, "b stopped", |e| &*e.subject == "host.room.b.stopped")
        .await;
    let (_, one) = rig.get_json("/api/rooms/b").await;
    assert_eq!(one["channel"], "gamma");

    // Removed: the bot leaves gamma, the room is gone from the registry and the API.
    write_config(&rig, &a_table);
    b_events
        .wait_for(T, "b stopped", |e| &*e.subject == "host.room.b.stopped")
        .await;
    wait(T, "room b gone", || registry.get("b").is_none()).await;
    rig.sim
        .wait_for(T, |s| !in_channel(s, "gamma", "bot_b"))
        .await
        .expect("bot_b left gamma");
    assert_eq!(listed(&rig).await, ["a"]);
    let (code, _) = rig.get_json("/api/rooms/b").await;
    assert_eq!(code, 404);

    // An invalid file is refused: the rooms keep running.
    write_config(&rig, "[[rooms]]\nsite = 42\n");
    let refused = rig
        .host
        .app
        .metrics
        .config_reloads
        .with_label_values(&["refused"]);
    wait(T, "the invalid file refused", || refused.get() == 1).await;
    assert_eq!(listed(&rig).await, ["a"]);

    // Room a was never touched: the same room, one connection, no stop, still in alpha.
    let now = rig.room("a");
    assert!(Arc::ptr_eq(&now, &a), "room a was restarted");
    assert_eq!(a.conn_state(), ConnState::LoggedIn);
    assert_eq!(a.status.lock().connects, 1);
    assert!(
        a_events
            .drain()
            .iter()
            .all(|e| !e.subject.ends_with(".stopped") && !e.subject.ends_with(".connecting")),
        "room a went through a reconnect"
    );
    assert!(in_channel(&rig.sim, "alpha", "bot_a"));
}
