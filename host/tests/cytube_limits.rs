//! The room state is bounded: against a simulated channel with more users and playlist
//! items than the room's `[rooms.limits]`, the host keeps exactly the caps, counts what
//! it refused in `daz_cytube_room_capped_total`, and says so in one WARN line however
//! many events hit the cap. This test binary installs a capturing subscriber before
//! anything logs, so it holds this one test.

use daz_cytube_sim::{ChannelConfig, MediaSpec, SimConfig};
use daz_testkit::cytube::{Rig, T};
use daz_testkit::logs::LogCapture;
use daz_testkit::wait;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_bigger_than_the_caps_is_kept_at_the_caps_counted_and_reported_once() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(daz_host::telemetry::filter("info"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
        .init();

    let mut channel = ChannelConfig::registered("botchan");
    for i in 0..3 {
        channel = channel.media(MediaSpec::new("yt", format!("vid{i}"), "Clip", 600));
    }
    let rig = Rig::logged_in(
        SimConfig {
            channels: vec![channel],
            ..SimConfig::default()
        },
        "[rooms.limits]\nmax_users = 3\nmax_playlist = 2\n",
    )
    .await;
    let mut actors = Vec::new();
    for name in ["alice", "bob", "carol", "dave", "erin"] {
        actors.push(rig.user("botchan", name, None).await);
    }
    let sim_users = || rig.sim.channel("botchan").map_or(0, |c| c.users.len());
    wait(T, "six users in the simulated channel", || sim_users() == 6).await;

    let metric_users = r#"daz_cytube_room_capped_total{room="main",what="users"}"#;
    let metric_playlist = r#"daz_cytube_room_capped_total{room="main",what="playlist"}"#;
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // Three users arrive after the room is full (the bot and two of the five fit).
    let metrics = &rig.host.app.metrics;
    wait(T, "three users refused at the cap", || {
        value(&metrics.render(), metric_users) >= 3
    })
    .await;
    // Over HTTP as an operator reads it. The server sends the playlist more than once
    // on join (each time one item does not fit).
    let text = rig.host.get("/metrics").await.1;
    assert!(value(&text, metric_users) >= 3, "{text}");
    assert!(value(&text, metric_playlist) >= 1, "{text}");

    let room = rig.room("main");
    {
        let st = room.state.read();
        assert_eq!(st.users.len(), 3);
        assert_eq!(st.playlist.len(), 2);
    }
    let (code, api) = rig.get_json("/api/rooms/main").await;
    assert_eq!(code, 200, "{api}");
    assert_eq!(api["state"]["users"].as_array().map(Vec::len), Some(3));
    assert_eq!(api["state"]["playlist"].as_array().map(Vec::len), Some(2));

    // At least four events hit a cap; one WARN line says so (the rest are counted into
    // the next one, a minute later).
    let logs = capture.text();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("the room is at its cap"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("room=main"),
        "{}",
        warned[0]
    );
    drop(actors);
}
