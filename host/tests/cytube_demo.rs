//! The offline demo: the bot joins the simulated channel, answers `!hello`, survives a
//! hot swap of the example plugin with its count, and stops after `--seconds`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use daz_host::cytube::demo::{DemoOptions, run};
use daz_testkit::fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_bot_answers_and_keeps_its_count_across_a_swap() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let report = run(DemoOptions {
        plugin: fixture("daz_plugin_example"),
        duration: Some(Duration::from_secs(8)),
        out: Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_owned())),
    })
    .await
    .unwrap();
    let text = lines.lock().unwrap().join("\n");
    assert!(report.bot_joined, "{text}");
    assert!(report.swapped, "{text}");
    assert_eq!(report.counts, [1, 2], "{text}");
    assert_eq!(report.replies[0], "Hello, newcomer! (greeting #1)");
    assert_eq!(report.replies[1], "Hi again, newcomer! (greeting #2)");
    assert!(text.contains("[check]  the count went #1 → #2"), "{text}");
    assert!(text.contains("logged in as `bot`"), "{text}");
}

#[test]
fn daz_demo_runs_from_the_command_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["demo", "--seconds", "6", "--plugin"])
        .arg(fixture("daz_plugin_example"))
        .output()
        .expect("daz runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("[bot]    Hello, newcomer! (greeting #1)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[bot]    Hi again, newcomer! (greeting #2)"),
        "{stdout}"
    );

    // Without a plugin next to the binary, none given, and no source tree to build it
    // from (a copy outside target/), it says how to build one.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("daz");
    std::fs::copy(env!("CARGO_BIN_EXE_daz"), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .args(["demo", "--seconds", "1"])
        .output()
        .expect("daz runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cargo build --release -p daz-plugin-example"),
        "{stderr}"
    );
}
