//! Command round trip: a user's `chatMsg "!hello"` at the simulator → the host's
//! Cytube client → the bus → the example plugin (a real `.so`, release build) → the
//! governor → the bot's answer `chatMsg` back at the simulator, seen by the user. p50 and
//! p99 over 10 000 commands, beside a raw websocket echo round trip measured in the same
//! run (tokio-tungstenite client and server on loopback) as the baseline.
//!
//! The server's chat limiter (burst 20, 10/s) would cap the bot at ten answers a second,
//! so between commands the simulator's limiter clock is moved past its 2 s reset, and the
//! room's governor is told the server allows more (`chat_burst`, `chat_per_second`, as
//! for a self-hosted server with other limits). Nothing else is relaxed.
//!
//! `cargo bench -p daz-host --bench cytube_roundtrip` (prints a table; ~30 s)

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    cytube::ConnState,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const COMMANDS: usize = 10_000;
const WARMUP: usize = 300;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.50), percentile(&v, 0.99));
    println!(
        "{name:<34} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  max={:>8.1} µs",
        v.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e6
    );
    (p50, p99)
}

/// The example plugin, built in release mode into a target directory of its own.
fn release_plugin() -> PathBuf {
    let ws = daz_testkit::workspace();
    let target = ws.join("target").join("bench-plugins");
    let status = Command::new(daz_testkit::cargo())
        .current_dir(&ws)
        .args(["build", "--quiet", "--release", "-p", "daz-plugin-example"])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example plugin failed");
    target.join("release").join("libdaz_plugin_example.so")
}

async fn raw_echo() -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let frame = r#"42["chatMsg",{"msg":"!hello","meta":{}}]"#;
    let mut out = Vec::with_capacity(COMMANDS);
    for i in 0..WARMUP + COMMANDS {
        let t = Instant::now();
        ws.send(Message::Text(frame.into())).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Text(_))) => {}
            other => panic!("echo failed: {other:?}"),
        }
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out
}

async fn command_round_trip(plugin: PathBuf) -> Vec<Duration> {
    let sim = Simulator::start(SimConfig {
        channels: vec![ChannelConfig::registered("bench")],
        accounts: vec![Account::new("bot", "bot-pass")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    daz_testkit::deploy(&plugin, &plugins, "libdaz_plugin_example.so");
    std::fs::write(dir.path().join("pw"), "bot-pass").unwrap();
    let config = format!(
        r#"
[host]
plugin_dir = "plugins"
runtime_dir = "runtime"
preflight = false
watch = false
[http]
enabled = false
[plugins.example]
file = "libdaz_plugin_example.so"
[[rooms]]
name = "bench"
site = "{}"
channel = "bench"
username = "bot"
password_file = "pw"
[rooms.outbound]
chat_burst = 1000000
chat_per_second = 1000000.0
margin_ms = 0
"#,
        sim.base_url()
    );
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, config).unwrap();
    let app = App::start(Config::load(&path).unwrap(), StartOptions::default())
        .await
        .unwrap();
    let room = app.room_registry.get("bench").unwrap();
    let start = Instant::now();
    while room.conn_state() != ConnState::LoggedIn {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bot never logged in"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut alice = sim.actor("alice").await.connect().await.unwrap();
    alice.join_and_login("bench", "alice", None).await.unwrap();
    let mut out = Vec::with_capacity(COMMANDS);
    for i in 0..WARMUP + COMMANDS {
        // Past the 2 s idle reset of both users' chat limiters.
        sim.advance_clock(Duration::from_millis(2100));
        let t = Instant::now();
        alice.chat("!hello").unwrap();
        alice
            .expect_where("chatMsg", Duration::from_secs(10), |v| {
                v["username"] == "bot"
            })
            .await
            .unwrap_or_else(|e| panic!("command {i}: {e}"));
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    app.shutdown().await;
    sim.shutdown().await;
    out
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with no flag and
    // expects a quick exit.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cytube_roundtrip: run with `cargo bench` to measure");
        return;
    }
    let plugin = release_plugin();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("command round trip vs raw websocket echo, {COMMANDS} each (after {WARMUP} warm-up):");
    let echo = rt.block_on(raw_echo());
    let cmd = rt.block_on(command_round_trip(plugin));
    let (echo50, _) = summary("raw websocket echo (baseline)", echo);
    let (cmd50, _) = summary("!hello → example plugin → answer", cmd);
    println!(
        "ratio p50: {:.2}x the raw echo (target <= 3x)",
        cmd50.as_secs_f64() / echo50.as_secs_f64()
    );
}
