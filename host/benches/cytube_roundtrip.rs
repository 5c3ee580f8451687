//! Command round trip: a user's `chatMsg "!hello"` reaches the bot → the host's Cytube
//! client → the bus → the example plugin (a real `.so`, release build) → the governor →
//! the bot's answer `chatMsg`. p50 and p99 over 10 000 commands, beside a raw websocket
//! echo round trip measured in the same run as the baseline. Two rows:
//!
//! * **at the server** — measured where the server sits: from the server writing the
//!   user's `chatMsg` to the bot's socket to the server reading the bot's answer. The
//!   server is a minimal Socket.IO endpoint in this file (discovery, handshake, join,
//!   login), so nothing but the host is measured. The baseline goes through the same
//!   server code on the same thread: the server writes a frame to a tokio-tungstenite
//!   client (configured like the host's: TCP_NODELAY, the same read buffer) running on
//!   the host's runtime, which writes it straight back. So the two rows differ by the
//!   host's work only: parse, publish, the plugin's thread, the governor, the write.
//!   The server runs on a thread and runtime of its own, as a real server is a process
//!   of its own, and the two are measured in alternating blocks so that the machine's
//!   load weighs on both alike.
//! * **user to user through the simulator** — from a simulated user's `chatMsg` to that
//!   user seeing the answer: three websocket legs and the simulator's chat processing
//!   on top (informative).
//!
//! The server's chat limiter (burst 20, 10/s) would cap the bot at ten answers a second,
//! so between commands the simulator's limiter clock is moved past its 2 s reset, and the
//! room's governor is told the server allows more (`chat_burst`, `chat_per_second`, as
//! for a self-hosted server with other limits). Nothing else is relaxed.
//!
//! `cargo bench -p daz-host --bench cytube_roundtrip` (prints a table; ~1 min)

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_host::app::App;
use daz_testkit::cytube::{BENCH_BOT, bench_host};
use futures_util::{SinkExt, StreamExt};
use tempfile::TempDir;

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

/// A host with the example plugin and one room on `site`'s `channel`; waits until it is
/// logged in. The governor is told the server allows more than its default limits.
async fn start_host(plugin: &std::path::Path, site: &str, channel: &str) -> (App, TempDir) {
    bench_host(
        site,
        channel,
        "chat_burst = 1000000\nchat_per_second = 1000000.0\nmargin_ms = 0",
        &[("example", plugin)],
    )
    .await
}

/// The sockets the minimal server hands to the measuring loop.
struct Accepted {
    bot: tokio::sync::oneshot::Receiver<axum::extract::ws::WebSocket>,
    echo: tokio::sync::oneshot::Receiver<axum::extract::ws::WebSocket>,
}

type Slot = std::sync::Arc<
    std::sync::Mutex<Option<tokio::sync::oneshot::Sender<axum::extract::ws::WebSocket>>>,
>;

/// A minimal Cytube endpoint on the current runtime: discovery, the Engine.IO/Socket.IO
/// handshake, a join burst and a login reply on `/socket.io/` (the bot), and a bare
/// websocket on `/echo` (the baseline's peer). Hands both sockets to the caller.
async fn minimal_server() -> (String, Accepted) {
    use axum::{
        Json, Router,
        extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade},
        routing::get,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (bot_tx, bot) = tokio::sync::oneshot::channel::<WebSocket>();
    let (echo_tx, echo) = tokio::sync::oneshot::channel::<WebSocket>();
    let bot_tx: Slot = std::sync::Arc::new(std::sync::Mutex::new(Some(bot_tx)));
    let echo_tx: Slot = std::sync::Arc::new(std::sync::Mutex::new(Some(echo_tx)));
    let app = Router::new()
        .route(
            "/socketconfig/{file}",
            get(move || async move {
                Json(serde_json::json!({"servers": [{"url": format!("http://{addr}"), "secure": false}]}))
            }),
        )
        .route(
            "/echo",
            get(move |ws: WebSocketUpgrade| {
                let tx = echo_tx.clone();
                async move {
                    ws.on_upgrade(move |socket: WebSocket| async move {
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send(socket);
                        }
                    })
                }
            }),
        )
        .route(
            "/socket.io/",
            get(move |ws: WebSocketUpgrade| {
                let tx = bot_tx.clone();
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
    (format!("http://{addr}"), Accepted { bot, echo })
}

/// The baseline's peer: a tokio-tungstenite client set up like the host's (TCP_NODELAY,
/// the same read buffer) that writes every text frame straight back.
async fn echo_peer(site: String) {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let url = format!("{}/echo", site.replacen("http://", "ws://", 1));
    let config = WebSocketConfig::default().read_buffer_size(2 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap();
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// Round trips on `ws`: writes a frame, waits for the text frame `is_answer` accepts.
async fn round_trips(
    ws: &mut axum::extract::ws::WebSocket,
    n: usize,
    frame: impl Fn() -> String,
    is_answer: impl Fn(&str) -> bool,
    out: &mut Vec<Duration>,
) {
    use axum::extract::ws::Message as AxMessage;
    for i in 0..n {
        let f = frame();
        let t = Instant::now();
        ws.send(AxMessage::Text(f.into())).await.unwrap();
        loop {
            match ws.recv().await {
                Some(Ok(AxMessage::Text(text))) if is_answer(text.as_str()) => break,
                Some(Ok(_)) => {}
                other => panic!("round trip {i}: {other:?}"),
            }
        }
        out.push(t.elapsed());
    }
}

/// Raw echo and the bot's answer, measured at the server in alternating blocks.
/// `host_rt` runs the host and the echo peer; the server has a thread of its own.
fn at_the_server(
    host_rt: &tokio::runtime::Runtime,
    plugin: &std::path::Path,
) -> (Vec<Duration>, Vec<Duration>) {
    const BLOCKS: usize = 20;
    let (site_tx, site_rx) = std::sync::mpsc::channel::<String>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (site, accepted) = minimal_server().await;
            site_tx.send(site).unwrap();
            let mut bot = accepted.bot.await.unwrap();
            let mut echo = accepted.echo.await.unwrap();
            let command = || {
                format!(
                    r#"42["chatMsg",{{"username":"alice","msg":"!hello","meta":{{}},"time":{}}}]"#,
                    daz_host::now_ms()
                )
            };
            let raw = || r#"42["chatMsg",{"msg":"!hello","meta":{}}]"#.to_owned();
            let answer = |t: &str| t.starts_with(r#"42["chatMsg""#);
            let any = |_: &str| true;
            let (mut echo_rtt, mut bot_rtt) = (Vec::new(), Vec::new());
            round_trips(&mut echo, WARMUP, raw, any, &mut Vec::new()).await;
            round_trips(&mut bot, WARMUP, command, answer, &mut Vec::new()).await;
            for _ in 0..BLOCKS {
                round_trips(&mut echo, COMMANDS / BLOCKS, raw, any, &mut echo_rtt).await;
                round_trips(&mut bot, COMMANDS / BLOCKS, command, answer, &mut bot_rtt).await;
            }
            (echo_rtt, bot_rtt)
        })
    });
    let site = site_rx.recv().unwrap();
    let (app, _dir) = host_rt.block_on(start_host(plugin, &site, "bench"));
    let peer = host_rt.spawn(echo_peer(site));
    let result = server.join().unwrap();
    peer.abort();
    host_rt.block_on(app.shutdown());
    result
}

async fn command_round_trip(plugin: PathBuf) -> Vec<Duration> {
    let sim = Simulator::start(SimConfig {
        channels: vec![ChannelConfig::registered("bench")],
        accounts: vec![Account::new(BENCH_BOT.0, BENCH_BOT.1)],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (app, _dir) = start_host(&plugin, &sim.base_url(), "bench").await;
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
    let (echo, at_server) = at_the_server(&rt, &plugin);
    let through_sim = rt.block_on(command_round_trip(plugin));
    let (echo50, echo99) = summary("raw websocket echo (baseline)", echo);
    let (srv50, srv99) = summary("!hello → answer, at the server", at_server);
    let (sim50, _) = summary("!hello → answer, user to user (sim)", through_sim);
    println!(
        "ratio at the server: p50 {:.2}x, p99 {:.2}x the raw echo (target p50 <= 3x); user to user through the simulator: p50 {:.2}x",
        srv50.as_secs_f64() / echo50.as_secs_f64(),
        srv99.as_secs_f64() / echo99.as_secs_f64(),
        sim50.as_secs_f64() / echo50.as_secs_f64()
    );
}
