//! Router overhead, end to end: a simulator user types `!ping` (answered through the
//! command router and the builtins plugin: two plugin hops) or `!hello` (answered by the
//! example plugin straight from the chat event: one hop), and the time until the bot's
//! answer reaches the user at the simulator is measured. Both run in the same process,
//! interleaved (alternating which goes first), so the ratio compares like with like.
//! Plugins are release builds, as in production.
//!
//! The server's flood limits would pace the bot and the user (20 messages, then 10 per
//! second): the host's governor is configured without pacing for this room, and the
//! simulator's clock is moved past the limiter's idle reset (outside the timed part)
//! every few rounds.
//!
//! `cargo bench -p daz-plugin-commands --bench round_trip` (`ROUNDS=n` to change the
//! number of timed rounds, default 400).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use daz_cytube_sim::{Actor, Simulator};
use daz_plugin_api::cytube::unescape_chat;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, Rig, Setup, T, sim_config, user},
};

/// Builds the three plugins in release mode into a target directory of their own.
fn release_plugins() -> PathBuf {
    let target = daz_testkit::workspace()
        .join("target")
        .join("bench-plugins");
    let status = Command::new(daz_testkit::cargo())
        .current_dir(daz_testkit::workspace())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "daz-plugin-commands",
            "-p",
            "daz-plugin-builtins",
            "-p",
            "daz-plugin-example",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release plugins failed");
    target.join("release")
}

async fn round_trip(actor: &mut Actor, line: &str, answer: &str) -> Duration {
    let start = Instant::now();
    actor.chat(line).expect("chat");
    actor
        .expect_where("chatMsg", T, |v| {
            v["username"] == BOT && unescape_chat(v["msg"].as_str().unwrap_or("")).contains(answer)
        })
        .await
        .expect("the bot answers");
    start.elapsed()
}

struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
    mean: f64,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    Stats {
        median: at(0.5),
        p10: at(0.1),
        p90: at(0.9),
        mean: samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful
    // either: this binary always runs the measurement.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(400);
    let dir = release_plugins();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = Simulator::start(sim_config(|c| c)).await.expect("simulator");
        let db = TestDb::new(Kind::Sqlite);
        let setup = Setup {
            commands: Some(String::new()),
            builtins: Some(String::new()),
            usertracker: None,
            mediatracker: None,
            analytics: None,
            retry: None,
            example: true,
            storage: false,
            outbound: "chat_burst = 1000000\nchat_per_second = 1000000.0\nmargin_ms = 0\n".into(),
        };
        let rig = Rig::start(&sim, &db, &setup, &dir, &["ping", "hello"]).await;
        let mut alice = user(&sim, "alice", Some(PW)).await;
        let mut direct = Vec::with_capacity(rounds);
        let mut routed = Vec::with_capacity(rounds);
        let warmup = 20;
        for i in 0..warmup + rounds {
            if i % 6 == 0 {
                // Past the limiter's 2 s idle reset, for the user and the bot.
                sim.advance_clock(Duration::from_secs(3));
            }
            let (hello, ping) = if i % 2 == 0 {
                let h = round_trip(&mut alice, "!hello", "Hello, alice!").await;
                (h, round_trip(&mut alice, "!ping", "pong").await)
            } else {
                let p = round_trip(&mut alice, "!ping", "pong").await;
                (round_trip(&mut alice, "!hello", "Hello, alice!").await, p)
            };
            if i >= warmup {
                direct.push(hello);
                routed.push(ping);
            }
        }
        let d = stats(&mut direct);
        let r = stats(&mut routed);
        println!("chat round trip at the simulator, {rounds} rounds each, µs");
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            "", "median", "p10", "p90", "mean"
        );
        for (name, s) in [
            ("!hello  example plugin, direct (baseline)", &d),
            ("!ping   router + builtins plugin", &r),
        ] {
            println!(
                "{name:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
                s.median, s.p10, s.p90, s.mean
            );
        }
        let ratio = r.median / d.median;
        let verdict = if ratio <= 1.5 { "within" } else { "OVER" };
        println!(
            "router overhead: {ratio:.2}x the direct round trip by median ({:.2}x by mean); {verdict} the 1.5x budget",
            r.mean / d.mean
        );
        rig.host.app.shutdown().await;
        sim.shutdown().await;
        assert!(ratio <= 1.5, "router overhead {ratio:.2}x exceeds 1.5x");
    });
}
