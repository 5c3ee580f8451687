//! Command round trip: a user's `chatMsg "!hello"` reaches the bot → the host's Cytube
//! client → the bus → the example plugin (a real `.so`, release build) → the governor →
//! the bot's answer `chatMsg`. p50 and p99 over 10 000 commands, beside a raw websocket
//! echo round trip measured in the same run (tokio-tungstenite client and server on
//! loopback) as the baseline. Two rows:
//!
//! * **at the server** — measured where the server sits: from the server writing the
//!   user's `chatMsg` to the bot's socket to the server reading the bot's answer. One
//!   websocket round trip plus the host, comparable to the raw echo. The server is a
//!   minimal Socket.IO endpoint in this file (discovery, handshake, join, login), so
//!   nothing but the host is measured.
//! * **user to user through the simulator** — from a simulated user's `chatMsg` to that
//!   user seeing the answer: three websocket legs and the simulator's chat processing
//!   on top (informative).
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

/// A host with the example plugin and one room on `site`; waits until it is logged in.
async fn start_host(
    plugin: &std::path::Path,
    site: &str,
    channel: &str,
    dir: &std::path::Path,
) -> App {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    daz_testkit::deploy(plugin, &plugins, "libdaz_plugin_example.so");
    std::fs::write(dir.join("pw"), "bot-pass").unwrap();
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
site = "{site}"
channel = "{channel}"
username = "bot"
password_file = "pw"
[rooms.outbound]
chat_burst = 1000000
chat_per_second = 1000000.0
margin_ms = 0
"#
    );
    let path = dir.join("plugins.toml");
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
    app
}

/// A minimal Cytube endpoint: discovery, the Engine.IO/Socket.IO handshake, a join
/// burst and a login reply; hands the bot's socket to the caller.
async fn minimal_server() -> (
    String,
    tokio::sync::oneshot::Receiver<axum::extract::ws::WebSocket>,
) {
    use axum::{
        Json, Router,
        extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade},
        routing::get,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<WebSocket>();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = Router::new()
        .route(
            "/socketconfig/{file}",
            get(move || async move {
                Json(serde_json::json!({"servers": [{"url": format!("http://{addr}"), "secure": false}]}))
            }),
        )
        .route(
            "/socket.io/",
            get(move |ws: WebSocketUpgrade| {
                let tx = tx.clone();
                async move {
                    ws.on_upgrade(move |mut socket: WebSocket| async move {
                        let open = r#"0{"sid":"bench","upgrades":[],"pingInterval":600000,"pingTimeout":600000,"maxPayload":1048576}"#;
                        socket.send(AxMessage::Text(open.into())).await.unwrap();
                        // 40 → ack; then joinChannel and login (account: sent at once).
                        let mut seen = 0;
                        while seen < 3 {
                            match socket.recv().await {
                                Some(Ok(AxMessage::Text(t))) => {
                                    if t.as_str() == "40" {
                                        socket
                                            .send(AxMessage::Text(r#"40{"sid":"b"}"#.into()))
                                            .await
                                            .unwrap();
                                    }
                                    seen += 1;
                                }
                                Some(Ok(_)) => {}
                                _ => return,
                            }
                        }
                        for f in [
                            r#"42["rank",1]"#,
                            r#"42["login",{"success":true,"name":"bot"}]"#,
                            r#"42["userlist",[{"name":"bot","rank":1,"profile":{"image":"","text":""},"meta":{"afk":false,"muted":false}}]]"#,
                        ] {
                            socket.send(AxMessage::Text(f.into())).await.unwrap();
                        }
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send(socket);
                        }
                    })
                }
            }),
        );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rx)
}

async fn reply_at_the_server(plugin: PathBuf) -> Vec<Duration> {
    use axum::extract::ws::Message as AxMessage;
    let (site, socket) = minimal_server().await;
    let dir = tempfile::tempdir().unwrap();
    let app = start_host(&plugin, &site, "bench", dir.path()).await;
    let mut ws = socket.await.unwrap();
    let mut out = Vec::with_capacity(COMMANDS);
    for i in 0..WARMUP + COMMANDS {
        let chat = format!(
            r#"42["chatMsg",{{"username":"alice","msg":"!hello","meta":{{}},"time":{}}}]"#,
            daz_host::now_ms()
        );
        let t = Instant::now();
        ws.send(AxMessage::Text(chat.into())).await.unwrap();
        loop {
            match ws.recv().await {
                Some(Ok(AxMessage::Text(t))) if t.as_str().starts_with(r#"42["chatMsg""#) => break,
                Some(Ok(_)) => {}
                other => panic!("command {i}: {other:?}"),
            }
        }
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    app.shutdown().await;
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
    let app = start_host(&plugin, &sim.base_url(), "bench", dir.path()).await;
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
    let at_server = rt.block_on(reply_at_the_server(plugin.clone()));
    let through_sim = rt.block_on(command_round_trip(plugin));
    let (echo50, _) = summary("raw websocket echo (baseline)", echo);
    let (srv50, _) = summary("!hello → answer, at the server", at_server);
    let (sim50, _) = summary("!hello → answer, user to user (sim)", through_sim);
    println!(
        "ratio p50 at the server: {:.2}x the raw echo (target <= 3x); user to user through the simulator: {:.2}x",
        srv50.as_secs_f64() / echo50.as_secs_f64(),
        sim50.as_secs_f64() / echo50.as_secs_f64()
    );
}
