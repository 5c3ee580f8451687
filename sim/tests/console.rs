//! `daz-sim --interactive` driven through its standard input, as an operator types: a
//! user joins, chats, sends a PM, queues media and leaves, while an outside client (the
//! stand-in for a bot) sees each of those on the wire; what the outside client says and
//! PMs is printed by the console. `--help` documents the script format and the console.

use std::{process::Stdio, time::Duration};

use daz_cytube_sim::ActorBuilder;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// Generous: the machine may be busy.
const T: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"
[[accounts]]
name = "alice"
password = "alice-pw"

[[accounts]]
name = "bot"
password = "bot-pw"

[[channels]]
name = "lobby"
registered = true
ranks = [["alice", 2]]
"#;

/// Reads stdout lines until one contains `want`; returns it.
async fn line_with(
    lines: &mut Lines<BufReader<ChildStdout>>,
    want: &str,
    seen: &mut Vec<String>,
) -> String {
    let wait = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            if line.contains(want) {
                return Some(line);
            }
        }
        None
    };
    match tokio::time::timeout(T, wait).await {
        Ok(Some(line)) => line,
        _ => panic!(
            "no line with {want:?} within {T:?}; got:\n{}",
            seen.join("\n")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_driven_by_hand_through_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lobby.toml");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_daz-sim"))
        .arg("--interactive")
        .arg("--script")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("daz-sim prints its URL")
        .unwrap()
        .unwrap();
    let host = url.strip_prefix("http://").expect("an http:// base URL");
    line_with(&mut lines, "console on #lobby", &mut seen).await;

    // The outside client: logged in as `bot`, like a bot under test.
    let ws = format!("ws://{host}/socket.io/?EIO=4&transport=websocket");
    let mut bot = ActorBuilder::for_url(ws, "bot")
        .ip([10, 99, 0, 2])
        .timeout(T)
        .connect()
        .await
        .unwrap();
    bot.join_and_login("lobby", "bot", Some("bot-pw"))
        .await
        .unwrap();
    line_with(&mut lines, "[join] bot", &mut seen).await;

    let mut send = async |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    };

    send("join alice alice-pw").await;
    line_with(&mut lines, "ok: alice joined #lobby", &mut seen).await;
    bot.expect_where("addUser", T, |v| v["name"] == "alice")
        .await
        .unwrap();

    send("say alice hello   from the console").await;
    let chat = bot
        .expect_where("chatMsg", T, |v| v["username"] == "alice")
        .await
        .unwrap();
    assert_eq!(chat["msg"], "hello   from the console");
    line_with(
        &mut lines,
        "[chat] alice: hello   from the console",
        &mut seen,
    )
    .await;

    // What the bot says and PMs shows up on the console.
    bot.chat("hi alice &amp; all").unwrap();
    line_with(&mut lines, "[chat] bot: hi alice", &mut seen).await;
    bot.pm("alice", "psst, alice").unwrap();
    line_with(&mut lines, "[pm] bot → alice: psst, alice", &mut seen).await;

    send("pm alice bot !seen bob").await;
    let pm = bot
        .expect_where("pm", T, |v| v["username"] == "alice")
        .await
        .unwrap();
    assert_eq!(pm["msg"], "!seen bob");
    assert_eq!(pm["to"], "bot");

    send("queue alice fi clip1 A console clip").await;
    let queued = bot.expect("queue", T).await.unwrap();
    assert_eq!(queued["item"]["media"]["title"], "A console clip");
    line_with(&mut lines, "[media] now playing: A console clip", &mut seen).await;

    // What the server refuses is shown (offline, it cannot look YouTube items up).
    send("join gus").await;
    line_with(&mut lines, "ok: gus joined #lobby", &mut seen).await;
    send("queue alice yt dQw4w9WgXcQ").await;
    line_with(&mut lines, "[alice] queueFail", &mut seen).await;

    // Mistakes are explained and the console goes on.
    send("say nobody hi").await;
    line_with(&mut lines, "error: nobody has not joined", &mut seen).await;
    send("dance alice").await;
    line_with(&mut lines, "error: unknown command", &mut seen).await;

    send("users").await;
    let users = line_with(&mut lines, "ok: #lobby:", &mut seen).await;
    assert!(users.contains("alice (rank 2)"), "{users}");

    send("leave alice").await;
    bot.expect_where("userLeave", T, |v| v["name"] == "alice")
        .await
        .unwrap();
    line_with(&mut lines, "[leave] alice", &mut seen).await;

    // `quit` stops the simulator.
    send("quit").await;
    let status = tokio::time::timeout(T, child.wait())
        .await
        .expect("daz-sim exits after quit")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn help_documents_the_script_format_and_the_console() {
    let out = Command::new(env!("CARGO_BIN_EXE_daz-sim"))
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "--interactive",
        "[[accounts]]",
        "[[channels]]",
        "[[media]]",
        "[[actors]]",
        "do = \"chat\"",
        "wait_ms",
        "join NAME [PASSWORD]",
        "say NAME TEXT",
        "pm NAME TO TEXT",
        "queue NAME TYPE ID",
        "leave NAME",
    ] {
        assert!(text.contains(part), "--help lacks {part:?}:\n{text}");
    }
}
