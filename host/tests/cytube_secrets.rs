//! Credentials never appear in logs (at any level, dependencies included), errors,
//! events or the API. This test binary installs a capturing subscriber with the host's
//! filter at TRACE (`RUST_LOG=trace`) before anything else logs, runs logins that
//! succeed and fail, and searches everything the host produced for the passwords.

use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{Rig, account_room, password_file, room_table};
use daz_testkit::logs::LogCapture;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_in_logs_events_or_the_api() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(daz_host::telemetry::filter("trace"))
        .with_writer(move || writer.clone())
        .finish()
        .with(daz_host::telemetry::cap())
        .init();

    let mut chan = ChannelConfig::registered("botchan");
    chan.password = Some("chan-secret-77".into());
    let rig = Rig::start(
        SimConfig {
            channels: vec![chan],
            accounts: vec![Account::new("testbot", "acct-secret-42")],
            ..SimConfig::default()
        },
        |sim, dir| {
            let good = room_table(
                sim,
                "good",
                "botchan",
                &format!(
                    "username = \"testbot\"\npassword_file = {}\nchannel_password_file = {}",
                    password_file(dir, "pw", "acct-secret-42"),
                    password_file(dir, "cpw", "chan-secret-77")
                ),
                "",
            );
            let bad = account_room(sim, dir, "bad", "botchan", ("other", "wrong-secret-13"), "");
            format!("{good}{bad}")
        },
    )
    .await;
    let events = rig.probe("all", &[">"]);
    rig.wait_state("good", ConnState::LoggedIn).await;
    rig.wait_state("bad", ConnState::Failed).await;
    let (_, api) = rig.host.get("/api/rooms").await;
    let (_, good) = rig.host.get("/api/rooms/good").await;
    let (_, bad) = rig.host.get("/api/rooms/bad").await;
    let (_, metrics) = rig.host.get("/metrics").await;
    let bus: Vec<String> = events
        .drain()
        .iter()
        .map(|e| format!("{} {}", e.subject, String::from_utf8_lossy(&e.payload)))
        .collect();
    let logs = capture.text();
    // The logs are real and detailed: the rooms' own lines and the websocket
    // library's debug lines are in them.
    assert!(logs.contains("room state"), "{logs}");
    assert!(logs.contains("tungstenite"), "{logs}");
    assert!(logs.contains("room stopped"), "{logs}");
    for secret in ["acct-secret-42", "chan-secret-77", "wrong-secret-13"] {
        for (what, text) in [
            ("logs", logs.as_str()),
            ("/api/rooms", api.as_str()),
            ("/api/rooms/good", good.as_str()),
            ("/api/rooms/bad", bad.as_str()),
            ("/metrics", metrics.as_str()),
            ("bus events", &bus.join("\n")),
        ] {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("{secret} appears in {what}: {line}");
            }
        }
    }
}
