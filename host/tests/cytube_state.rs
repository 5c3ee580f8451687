//! Inbound events and room state against the simulator: backlog and self flags,
//! priorities by kind, and the room state after every playlist operation equal to the
//! simulator's own.

use daz_bus::Priority;
use daz_cytube_sim::{Account, ChannelConfig, MediaSpec, SimConfig, SimHandle, Simulator};
use daz_host::cytube::{ConnState, RoomShared};
use daz_testkit::cytube::{Rig, T, bot_room, json};
use daz_testkit::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_self_and_priorities_are_flagged() {
    let sim = Simulator::start(SimConfig {
        channels: vec![
            ChannelConfig::registered("botchan").media(MediaSpec::new("tw", "live1", "Live", 600)),
        ],
        accounts: vec![Account::new("testbot", "pw1")],
        time_scale: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut alice = sim.actor("alice").await.connect().await.unwrap();
    alice
        .join_and_login("botchan", "alice", None)
        .await
        .unwrap();
    for line in ["one", "two", "three"] {
        alice.chat(line).unwrap();
    }
    alice
        .expect_where("chatMsg", T, |v| v["msg"] == "three")
        .await
        .unwrap();
    // Hold the simulator until the probe listens, so the join burst cannot be missed.
    sim.stall(true);
    let rig = Rig::on(sim, |sim, dir| bot_room(sim, dir, "pw1", "")).await;
    let chat = rig.probe(
        "chat-probe",
        &["cytube.in.main.chatMsg", "cytube.in.main.pm"],
    );
    let media = rig.probe("media-probe", &["cytube.in.main.mediaUpdate"]);
    rig.sim.stall(false);
    rig.wait_state("main", ConnState::LoggedIn).await;

    let mut backlog = Vec::new();
    while backlog.len() < 3 {
        let env = chat.wait_subject("cytube.in.main.chatMsg").await;
        assert!(env.has_tag("backlog"), "{env:?}");
        assert_eq!(env.priority, Priority::High);
        assert_eq!(env.room.as_deref(), Some("main"));
        backlog.push(json(&env)["msg"].as_str().unwrap().to_owned());
    }
    assert_eq!(backlog, ["one", "two", "three"]);

    alice.chat("four").unwrap();
    let env = chat.wait_subject("cytube.in.main.chatMsg").await;
    assert_eq!(json(&env)["msg"], "four");
    assert!(!env.has_tag("backlog") && !env.has_tag("self"));

    rig.request(
        "me",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "mine", "meta": {}}),
    );
    let env = chat.wait_subject("cytube.in.main.chatMsg").await;
    assert_eq!(json(&env)["msg"], "mine");
    assert!(env.has_tag("self") && !env.has_tag("backlog"));

    alice.pm("testbot", "psst").unwrap();
    let env = chat.wait_subject("cytube.in.main.pm").await;
    assert_eq!(json(&env)["msg"], "psst");
    assert!(!env.has_tag("self"));
    rig.request(
        "me",
        "main",
        "pm",
        serde_json::json!({"to": "alice", "msg": "hi alice"}),
    );
    let env = chat.wait_subject("cytube.in.main.pm").await;
    assert_eq!(json(&env)["msg"], "hi alice");
    assert!(env.has_tag("self"));

    let env = media.wait_subject("cytube.in.main.mediaUpdate").await;
    assert_eq!(env.priority, Priority::Normal);
    assert!(json(&env)["currentTime"].is_number());
}

/// `(uid, media id, temp)` in order, and the current uid, as the host sees them. (After
/// `clearPlaylist` the server sends no `setCurrent`; the current item is the one the
/// playlist still holds.)
fn host_view(room: &RoomShared) -> (Vec<(u64, String, bool)>, Option<u64>) {
    let st = room.state.read();
    (
        st.playlist
            .iter()
            .map(|i| (i.uid.0, i.media.id.clone(), i.temp))
            .collect(),
        st.current_item().map(|i| i.uid.0),
    )
}

/// The same, as the simulator holds them.
fn sim_view(sim: &SimHandle) -> (Vec<(u64, String, bool)>, Option<u64>) {
    let c = sim.channel("botchan").expect("channel");
    (
        c.playlist
            .iter()
            .map(|i| (i.uid, i.id.clone(), i.temp))
            .collect(),
        c.current,
    )
}

/// Sends one operation as a plugin would, waits for the simulator to answer it (a frame
/// to the bot), then for the host's state to equal the simulator's.
async fn op(rig: &Rig, what: &str, event: &str, payload: serde_json::Value) {
    // Periodic frames (playback, user counts) are not answers.
    let answers = |sim: &SimHandle| {
        sim.frames_sent_to("testbot")
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "mediaUpdate" | "usercount"))
            .count()
    };
    let before = answers(&rig.sim);
    rig.request("ops", "main", event, payload);
    let sim = rig.sim.clone();
    wait(T, &format!("the simulator to answer {what}"), || {
        answers(&sim) > before
    })
    .await;
    let room = rig.room("main");
    let sim = rig.sim.clone();
    // The playlist, the current item and the playlist meta (which the server sends
    // after the change) all agree.
    wait(T, &format!("the host state after {what}"), || {
        host_view(&room) == sim_view(&sim) && {
            let st = room.state.read();
            st.playlist.len() as u64 == st.playlist_meta.count
        }
    })
    .await;
}

fn uid_of(rig: &Rig, id: &str) -> u64 {
    sim_view(&rig.sim)
        .0
        .iter()
        .find(|(_, m, _)| m == id)
        .map(|(u, _, _)| *u)
        .unwrap_or_else(|| panic!("{id} is not in the playlist"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_state_follows_every_playlist_operation() {
    let rig = Rig::logged_in(
        SimConfig {
            channels: vec![ChannelConfig::registered("botchan").rank("testbot", 3.0)],
            ..SimConfig::default()
        },
        "",
    )
    .await;
    let room = rig.room("main");
    wait(T, "rank 3", || room.state.read().me.rank == 3.0).await;
    let failed = rig.probe("ops", &[]);

    let queue = |id: &str, pos: &str, temp: bool| serde_json::json!({"id": id, "type": "tw", "pos": pos, "temp": temp, "duration": 60});
    op(
        &rig,
        "queue s1 at the end",
        "queue",
        queue("s1", "end", false),
    )
    .await;
    op(
        &rig,
        "queue s2 at the end",
        "queue",
        queue("s2", "end", false),
    )
    .await;
    op(&rig, "queue s3 next", "queue", queue("s3", "next", false)).await;
    op(&rig, "queue s4 temp", "queue", queue("s4", "end", true)).await;
    let s4 = uid_of(&rig, "s4");
    op(
        &rig,
        "move s4 to the top",
        "moveMedia",
        serde_json::json!({"from": s4, "after": "prepend"}),
    )
    .await;
    let s1 = uid_of(&rig, "s1");
    op(
        &rig,
        "move s4 after s1",
        "moveMedia",
        serde_json::json!({"from": s4, "after": s1}),
    )
    .await;
    op(
        &rig,
        "s4 not temp",
        "setTemp",
        serde_json::json!({"uid": s4, "temp": false}),
    )
    .await;
    let s2 = uid_of(&rig, "s2");
    op(&rig, "jump to s2", "jumpTo", serde_json::json!(s2)).await;
    op(&rig, "delete s1", "delete", serde_json::json!(s1)).await;
    op(&rig, "play next", "playNext", serde_json::Value::Null).await;
    op(&rig, "shuffle", "shufflePlaylist", serde_json::Value::Null).await;
    op(&rig, "clear", "clearPlaylist", serde_json::Value::Null).await;
    assert!(host_view(&room).0.is_empty());
    assert!(failed.drain().is_empty(), "no operation failed");

    // Plugins and the API read the same state.
    let (code, v) = rig.get_json("/api/rooms/main").await;
    assert_eq!(code, 200);
    assert_eq!(v["state"]["playlist"], serde_json::json!([]));
    assert_eq!(v["state"]["me"]["rank"], 3.0);
}
