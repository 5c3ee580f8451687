//! The `daz-sim` demo binary: `--help`, and a scripted run that an outside
//! client can watch.

mod common;

use std::process::Stdio;

use common::WAIT;
use daz_cytube_sim::ActorBuilder;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const SCRIPT: &str = r#"
[[accounts]]
name = "alice"
password = "alice-pw"

[[channels]]
name = "demo"
registered = true
motd = "Demo <b>channel</b>"

[[actors]]
name = "alice"
loop = true
steps = [
  { do = "join", channel = "demo" },
  { do = "login", name = "alice", password = "alice-pw" },
  { do = "chat", msg = "hello from script", wait_ms = 20 },
  { do = "sleep", ms = 300 },
]
"#;

#[tokio::test]
async fn help_lists_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_daz-sim"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--script", "--port", "--channel", "--time-scale"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[tokio::test]
async fn scripted_demo_prints_its_url_and_runs_actors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, SCRIPT).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_daz-sim"))
        .args(["--port", "0", "--script"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("daz-sim prints its URL")
        .unwrap()
        .unwrap();
    let host = url.strip_prefix("http://").expect("an http:// base URL");
    let ws = format!("ws://{host}/socket.io/?EIO=4&transport=websocket");
    let mut watcher = ActorBuilder::for_url(ws, "watcher")
        .ip([10, 99, 0, 1])
        .connect()
        .await
        .unwrap();
    watcher.join("demo").await.unwrap();
    assert_eq!(
        watcher.received_named("setMotd"),
        [serde_json::json!("Demo <b>channel</b>")]
    );
    watcher
        .expect_where("chatMsg", WAIT, |v| {
            v["username"] == "alice" && v["msg"] == "hello from script"
        })
        .await
        .unwrap();
    child.kill().await.unwrap();
}
