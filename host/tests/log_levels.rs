//! Per-plugin log levels (`[plugins.<name>] log_level`): applied at start, changed at run
//! time by editing `plugins.toml` (no restart, no plugin reload), removed to fall back to
//! `RUST_LOG`. A test binary of its own: it installs the host's global subscriber
//! (`telemetry::init_with_writer`) and reads what it prints.

use std::{fs, time::Duration};

use daz_host::config::PluginLogLevel;
use daz_testkit::{TestHost, fixture, host_table, logs::LogCapture, wait_until};

const T: Duration = Duration::from_secs(20);

fn config(level: Option<&str>) -> String {
    let level = level.map_or(String::new(), |l| format!("log_level = \"{l}\"\n"));
    format!(
        "{}\n[plugins.versioned]\nfile = \"versioned.so\"\n{level}",
        host_table("")
    )
}

/// Has the plugin log `message` at every level; returns the levels that came out.
fn levels_logged(h: &TestHost, cap: &LogCapture, message: &str) -> Vec<&'static str> {
    h.publish("test.log", serde_json::json!({ "message": message }));
    // Handlers run one at a time: once the end marker's error line is out, every line
    // for `message` has been through the filter.
    let end = format!("{message}-end");
    h.publish("test.log", serde_json::json!({ "message": end }));
    wait_until(T, "the end marker's error line", || {
        cap.text().contains(&format!("error: {end}"))
    });
    let text = cap.text();
    ["error", "warn", "info", "debug", "trace"]
        .into_iter()
        .filter(|l| {
            text.lines().any(|line| {
                line.contains(&format!("{l}: {message}")) && !line.contains(&end)
                    // The plugin's name is the target of its lines.
                    && line.contains("versioned")
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_log_level_follows_plugins_toml_at_run_time() {
    let cap = LogCapture::default();
    let writer = cap.clone();
    daz_host::telemetry::init_with_writer(false, "info", move || writer.clone());
    let h = TestHost::start(
        &config(Some("warn")),
        &[(fixture("daz_fixture_v1"), "versioned.so")],
    )
    .await;
    assert_eq!(levels_logged(&h, &cap, "one"), ["error", "warn"]);
    let loaded_at = h.status("versioned").slot.and_then(|s| s.loaded_at_ms);

    // More verbose than the rest of the host (which logs at info).
    fs::write(&h.config_path, config(Some("debug"))).expect("write config");
    wait_until(T, "the new log level", || {
        h.app.plugins.config().plugins["versioned"].log_level == Some(PluginLogLevel::Debug)
    });
    assert_eq!(
        levels_logged(&h, &cap, "two"),
        ["error", "warn", "info", "debug"]
    );

    // Removed: RUST_LOG's default (info) again.
    fs::write(&h.config_path, config(None)).expect("write config");
    wait_until(T, "the log level removed", || {
        h.app.plugins.config().plugins["versioned"]
            .log_level
            .is_none()
    });
    assert_eq!(levels_logged(&h, &cap, "three"), ["error", "warn", "info"]);

    // A level that does not exist is refused; the running configuration is kept.
    fs::write(&h.config_path, config(Some("loud"))).expect("write config");
    wait_until(T, "the refusal", || {
        cap.text().contains("unknown variant `loud`")
    });
    assert_eq!(levels_logged(&h, &cap, "four"), ["error", "warn", "info"]);

    // Levels changed in place: the plugin was never reloaded.
    assert_eq!(
        h.status("versioned").slot.and_then(|s| s.loaded_at_ms),
        loaded_at
    );
    h.app.shutdown().await;
}
