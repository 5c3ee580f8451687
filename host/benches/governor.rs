//! The outbound governor against a simulator that lags like the real server (frames in
//! a burst processed 30–110 ms behind the socket): bursts of 100 and 500 chat lines and
//! a 60-line burst with a 1.5 s processing stall in the middle. For each: the time from
//! publishing the burst to the last line reaching a user in the channel, the server's
//! `cooldown` frames, and the lines reordered or duplicated and lost. The baseline row
//! is the server's own limit for the same count (burst 20, then 10 per second).
//!
//! A real host (its Cytube client, bus and governor; no plugins) logged in to the
//! simulator; the lines are published on `cytube.out.<room>.chatMsg` as a plugin would.
//!
//! `cargo bench -p daz-host --bench governor` (prints a table; ~2 min)

use std::time::{Duration, Instant};

use daz_bus::Envelope;
use daz_cytube_proto::flood::FloodParams;
use daz_cytube_sim::{Account, Actor, ChannelConfig, ProcessingLag, SimConfig, Simulator};
use daz_host::app::App;
use daz_testkit::cytube::{BENCH_BOT, bench_host};

/// What one scenario gave.
struct Outcome {
    took: Duration,
    cooldowns: usize,
    reordered_or_duplicated: usize,
    lost: usize,
}

fn bot_lines(watcher: &Actor) -> Vec<String> {
    watcher
        .received_named("chatMsg")
        .iter()
        .filter(|v| v["username"] == "bot")
        .map(|v| v["msg"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_count(watcher: &Actor, n: usize) {
    watcher
        .wait_for(Duration::from_secs(600), |frames| {
            frames
                .iter()
                .filter(|(name, v)| name == "chatMsg" && v["username"] == "bot")
                .count()
                >= n
        })
        .await
        .expect("the lines arrive");
}

/// Publishes `n` lines tagged `tag`; with `stall_after`, pauses the server's processing
/// for 1.5 s once that many lines have arrived.
async fn scenario(
    app: &App,
    sim: &daz_cytube_sim::SimHandle,
    watcher: &Actor,
    tag: &str,
    n: usize,
    stall_after: Option<usize>,
) -> Outcome {
    let before = bot_lines(watcher).len();
    let cooldowns_before = cooldowns(sim);
    let expected: Vec<String> = (0..n).map(|i| format!("{tag} {i:03}")).collect();
    let start = Instant::now();
    for l in &expected {
        let env = Envelope::builder(
            "cytube.out.bench.chatMsg",
            serde_json::to_vec(&serde_json::json!({"msg": l})).unwrap(),
        )
        .source("bench")
        .room("bench")
        .build()
        .unwrap();
        app.bus.publish(env).unwrap();
    }
    if let Some(k) = stall_after {
        wait_count(watcher, before + k).await;
        sim.pause_processing(Duration::from_millis(1_500));
    }
    wait_count(watcher, before + n).await;
    let took = start.elapsed();
    // Anything sent twice would arrive within the governor's answer window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got: Vec<String> = bot_lines(watcher)[before..].to_vec();
    let reordered_or_duplicated = got.iter().zip(&expected).filter(|(g, e)| g != e).count()
        + got.len().saturating_sub(expected.len());
    let lost = expected.iter().filter(|e| !got.contains(e)).count();
    Outcome {
        took,
        cooldowns: cooldowns(sim) - cooldowns_before,
        reordered_or_duplicated,
        lost,
    }
}

fn cooldowns(sim: &daz_cytube_sim::SimHandle) -> usize {
    sim.frames_sent_to("bot")
        .iter()
        .filter(|(name, _)| name == "cooldown")
        .count()
}

/// The server's limit: the least time `n` lines sent at once can take.
fn server_minimum(n: u32) -> Duration {
    let p = FloodParams::CHAT;
    p.interval().unwrap_or_default() * n.saturating_sub(p.burst)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim = Simulator::start(SimConfig {
            channels: vec![ChannelConfig::registered("botchan")],
            accounts: vec![Account::new(BENCH_BOT.0, BENCH_BOT.1)],
            processing_lag: ProcessingLag::REAL,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let (app, _dir) = bench_host(&sim.base_url(), "botchan", "ttl_ms = 600000", &[]).await;
        let mut watcher = sim.actor("watcher").await.connect().await.unwrap();
        watcher
            .join_and_login("botchan", "watcher", None)
            .await
            .unwrap();
        println!(
            "{:<44} {:>9} {:>10} {:>10} {:>9} {:>6}",
            "scenario (server lag 30-110 ms under bursts)",
            "time",
            "vs limit",
            "cooldowns",
            "reord/dup",
            "lost"
        );
        for (name, tag, n, stall) in [
            ("100 lines at once", "a", 100usize, None),
            ("500 lines at once", "b", 500, None),
            ("60 lines, 1.5 s stall after 25", "c", 60, Some(25)),
        ] {
            // Past the server's 2 s reset: each burst starts fresh.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            let limit = server_minimum(u32::try_from(n).unwrap_or(u32::MAX));
            let o = scenario(&app, &sim, &watcher, tag, n, stall).await;
            println!(
                "{name:<44} {:>8.2}s {:>9.2}x {:>10} {:>9} {:>6}",
                o.took.as_secs_f64(),
                o.took.as_secs_f64() / limit.as_secs_f64().max(1e-9),
                o.cooldowns,
                o.reordered_or_duplicated,
                o.lost
            );
            println!(
                "{:<44} {:>8.2}s {:>9.2}x",
                "  baseline: the server's limit (20, then 10/s)",
                limit.as_secs_f64(),
                1.0
            );
        }
        app.shutdown().await;
    });
}
