//! The `daz` process and its signals: SIGHUP re-reads the configuration, SIGTERM stops
//! gracefully, a second SIGTERM exits without waiting.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use daz_testkit::{
    deploy, fixture, host_dir, host_table,
    process::{free_port, http_get, signal, wait_exit},
    wait_until,
};

const T: Duration = Duration::from_secs(30);

/// The body of `GET path`, empty while nothing answers.
fn get(port: u16, path: &str) -> String {
    http_get(port, path)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn start(dir: &Path, config: &str) -> (Child, u16) {
    let port = free_port();
    let config = config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    fs::write(dir.join("plugins.toml"), config).expect("config");
    let log = fs::File::create(dir.join("daz.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["run", "-c"])
        .arg(dir.join("plugins.toml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("daz starts");
    wait_until(T, "the host to be ready", || {
        http_get(port, "/health/ready").is_some_and(|(code, _)| code == 200)
    });
    (child, port)
}

#[test]
fn sighup_reloads_the_configuration_and_sigterm_stops_cleanly() {
    let dir = host_dir();
    deploy(
        &fixture("daz_plugin_example"),
        &dir.path().join("plugins"),
        "example.so",
    );
    deploy(
        &fixture("daz_fixture_v1"),
        &dir.path().join("plugins"),
        "versioned.so",
    );
    let config = format!(
        "{}\n[plugins.example]\nfile = \"example.so\"\n",
        host_table("watch = false")
    );
    let (mut child, port) = start(dir.path(), &config);
    assert!(!get(port, "/health").contains("versioned"));

    // Add a plugin to the file; with the watcher off, only SIGHUP applies it.
    let text = fs::read_to_string(dir.path().join("plugins.toml")).expect("read");
    fs::write(
        dir.path().join("plugins.toml"),
        format!("{text}\n[plugins.versioned]\nfile = \"versioned.so\"\n"),
    )
    .expect("write");
    signal(&child, libc::SIGHUP);
    wait_until(T, "the new plugin after SIGHUP", || {
        get(port, "/health").contains("\"versioned\"")
    });

    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, T).expect("daz stops after SIGTERM");
    assert!(status.success(), "graceful exit, got {status}");
}

#[test]
fn a_second_sigterm_exits_without_waiting_for_a_stuck_plugin() {
    let dir = host_dir();
    deploy(
        &fixture("daz_fixture_blocker"),
        &dir.path().join("plugins"),
        "blocker.so",
    );
    // A plugin whose handler hangs from the start with 7 events queued behind it, and a
    // graceful deadline of ten minutes.
    let config = format!(
        "{}\n[plugins.blocker]\nfile = \"blocker.so\"\n[plugins.blocker.config]\nblock_on_start = true\npings_on_start = 7\n",
        host_table("watch = false")
            .replace("shutdown_timeout_ms = 1000", "shutdown_timeout_ms = 600000")
    );
    let (mut child, port) = start(dir.path(), &config);
    wait_until(T, "the plugin to be reported stuck", || {
        get(port, "/health").contains("\"stuck\":true")
    });
    wait_until(T, "7 events queued behind the stuck handler", || {
        get(port, "/health").contains("\"mailbox_depth\":7")
    });
    signal(&child, libc::SIGTERM);
    let log = dir.path().join("daz.log");
    wait_until(T, "the graceful shutdown to begin", || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("SIGTERM received")
    });
    assert!(
        wait_exit(&mut child, Duration::from_millis(300)).is_none(),
        "still waiting for the stuck plugin"
    );
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, T).expect("daz exits after the second SIGTERM");
    assert_eq!(status.code(), Some(130), "forced exit");
    // What the forced exit drops is counted, per plugin, in one line: the 7 pings and
    // whatever else reached the stuck plugin's mailbox meanwhile.
    let log = fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("second signal"))
        .unwrap_or_else(|| panic!("no line about the forced exit in:\n{log}"));
    let dropped: usize = line
        .split_once(" events still waiting in plugin mailboxes are dropped unhandled")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of dropped events in: {line}"));
    assert!(
        dropped >= 7 && line.contains(&format!("blocker={dropped}")),
        "the forced exit counts what it drops: {line}"
    );
}
