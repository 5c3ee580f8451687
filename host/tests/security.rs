//! Security checks, gathered. This file holds the ones no other suite covers; the rest
//! live beside the code they check:
//!
//! - plugin files or directories writable by group/others, or owned by another user, are
//!   refused: `plugins.rs` (`untrusted_files_and_pin_mismatches_are_refused`) and
//!   `bad_input.rs` (`bad_plugin_files_are_refused_by_name_and_the_serving_version_stays`);
//!   a file not matching its `sha256` pin: `plugins.rs`;
//! - Cytube credentials (account and channel passwords) absent from logs at TRACE, bus
//!   events, room state and the API: `cytube_secrets.rs`;
//! - the admin API without its token, and a non-loopback listen address without a token:
//!   the `admin*.rs` suites;
//! - the hostile suite (`hostile.rs`, `hostile_logs.rs`): plugin file trust by
//!   descriptor (symlinks, rename races), a panicking plugin destructor, secrets pasted
//!   where a variable name belongs, the default token / login URL / Host / Origin /
//!   content-type checks of the admin API, HTTP server limits, log floods and forged log
//!   lines.
//!
//! Here: secrets written into `plugins.toml` are refused without being echoed, and a
//! database password reaches neither the logs nor the status API, even when the
//! database cannot be reached (the error path is where URLs usually leak). A test binary
//! of its own: it installs the host's global subscriber to read every log line.

use std::{path::Path, time::Duration};

use daz_host::config::Config;
use daz_testkit::{TestHost, build_plugins, host_table, logs::LogCapture, wait_until};

const SECRET: &str = "s3cr3t-Pa55word";

#[test]
fn secrets_in_plugins_toml_are_refused_without_being_echoed() {
    for text in [
        format!(
            "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\npassword = \"{SECRET}\"\n"
        ),
        // A syntax error on the secret's line: toml would quote the line.
        format!("[[rooms]]\nsite = \"https://cytu.be\"\npassword = \"{SECRET}\n"),
        format!("[http]\ntoken = \"{SECRET}\"\n"),
    ] {
        let err = Config::parse(&text, Path::new("plugins.toml"))
            .expect_err("a secret in the file is refused")
            .to_string();
        assert!(!err.contains(SECRET), "the error echoes the secret: {err}");
        assert!(err.contains("line"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_reaches_neither_logs_nor_the_api() {
    let cap = LogCapture::default();
    let writer = cap.clone();
    daz_host::telemetry::init_with_writer(false, "debug", move || writer.clone());
    let dir = build_plugins(&["daz-plugin-storage"]);
    let journal = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1: every connection attempt fails, and is logged.
    let config = format!(
        "{}\n[plugins.storage]\nfile = \"storage.so\"\n[plugins.storage.config]\n\
         database_url = \"postgres://daz:{SECRET}@127.0.0.1:1/daz\"\nprefer_env = false\n\
         connect_timeout_ms = 200\njournal_dir = \"{}\"\n",
        host_table("create_timeout_ms = 20000"),
        journal.path().display()
    );
    let h = TestHost::start(
        &config,
        &[(dir.join("libdaz_plugin_storage.so"), "storage.so")],
    )
    .await;
    // The storage plugin reports the unreachable database (with the URL redacted).
    wait_until(
        Duration::from_secs(30),
        "the connection failure logged",
        || cap.text().contains("is unreachable"),
    );
    h.publish(
        "cytube.in.r.chatMsg",
        serde_json::json!({"username": "u", "msg": "m", "meta": {}, "time": 0}),
    );
    let (_, ready) = h.get("/health/ready").await;
    let (_, metrics) = h.get("/metrics").await;
    let status = serde_json::to_string(&h.app.plugins.status()).expect("json");
    h.app.shutdown().await;
    for (what, text) in [
        ("logs", cap.text()),
        ("/health/ready", ready),
        ("/metrics", metrics),
        ("plugin status", status),
    ] {
        assert!(!text.contains(SECRET), "{what} show the password:\n{text}");
    }
}
