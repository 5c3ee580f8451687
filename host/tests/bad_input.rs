//! Every kind of bad input in one suite, each refused with a clear message, never a panic,
//! and the host serving on: plugin files, Cytube frames, SQL service requests, and
//! configuration files. The cases live in `daz_testkit::bad_input`, shared with the tests
//! of each subsystem (`plugins.rs` runs the same plugin files through a hot reload); an
//! oversized websocket frame is refused in `cytube_connect.rs`
//! (`oversized_frames_are_refused`), a frame cap the simulator enforces as well.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use daz_bus::Envelope;
use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use daz_host::{config::Config, cytube::ConnState, plugins::Trigger};
use daz_testkit::cytube::{Rig, T, account_room};
use daz_testkit::wait;
use daz_testkit::{TestHost, bad_input, build_plugins, fixture, host_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_files_are_refused_by_name_and_the_serving_version_stays() {
    // Explicit reloads only, so each case is judged once.
    let config = format!(
        "{}\n[plugins.versioned]\nfile = \"versioned.so\"\n",
        host_table("watch = false")
    );
    let h = TestHost::start(&config, &[(fixture("daz_fixture_v1"), "versioned.so")]).await;
    let mut cases = bad_input::plugin_files();
    // And a good file that anyone may write.
    cases.push(bad_input::BadPluginFile {
        what: "writable by others",
        expected: "writable by others",
        apply: Box::new(|d, n| {
            if d.join(n).is_dir() {
                fs::remove_dir(d.join(n)).expect("rmdir");
            }
            daz_testkit::deploy(&fixture("daz_fixture_v2"), d, n);
            fs::set_permissions(d.join(n), fs::Permissions::from_mode(0o666)).expect("chmod");
        }),
    });
    for case in cases {
        (case.apply)(&h.plugin_dir, "versioned.so");
        let err = h
            .app
            .plugins
            .reload("versioned", Trigger::Explicit)
            .expect_err(case.what)
            .to_string();
        assert!(
            err.contains(case.expected) && err.contains("versioned.so"),
            "{}: expected {:?} and the file name in {err:?}",
            case.what,
            case.expected
        );
        assert_eq!(
            h.version("versioned").as_deref(),
            Some("1.0.0"),
            "{}",
            case.what
        );
    }
    assert_eq!(h.status("versioned").panics, 0);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_frames_are_counted_and_the_room_stays_up() {
    let sim_cfg = SimConfig {
        accounts: vec![Account::new("bot", "bot-pw"), Account::new("alice", "pw")],
        channels: vec![ChannelConfig::registered("lobby")],
        ..SimConfig::default()
    };
    let rig = Rig::start(sim_cfg, |sim, dir| {
        account_room(sim, dir, "lobby", "lobby", ("bot", "bot-pw"), "")
    })
    .await;
    rig.wait_state("lobby", ConnState::LoggedIn).await;
    let chat = rig.probe("chat", &["cytube.in.lobby.chatMsg"]);
    let bad = || {
        rig.host
            .app
            .metrics
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "daz_cytube_inbound_bad_frames_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>()
    };
    rig.sim.send_garbage("lobby");
    wait(T, "the garbage frames counted", || bad() >= 3.0).await;
    assert_eq!(rig.room("lobby").conn_state(), ConnState::LoggedIn);
    // The connection still carries events.
    let mut alice = rig.sim.actor("alice").await.connect().await.expect("alice");
    alice
        .join_and_login("lobby", "alice", Some("pw"))
        .await
        .expect("alice joins");
    alice.chat("still here").expect("chat");
    let env = chat
        .wait_for(T, "the chat line after the garbage", |e: &Envelope| {
            serde_json::from_slice::<serde_json::Value>(&e.payload)
                .is_ok_and(|v| v["msg"] == "still here")
        })
        .await;
    assert!(!env.has_tag("backlog"));
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_requests_with_bad_shapes_get_an_error_reply() {
    let dir = build_plugins(&["daz-plugin-storage"]);
    let db = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "{}\n[plugins.storage]\nfile = \"storage.so\"\n[plugins.storage.config]\n\
         database_url = \"sqlite://{}\"\nprefer_env = false\njournal_dir = \"{}\"\n",
        host_table("create_timeout_ms = 20000"),
        db.path().join("daz.db").display(),
        db.path().join("journal").display()
    );
    let h = TestHost::start(
        &config,
        &[(dir.join("libdaz_plugin_storage.so"), "storage.so")],
    )
    .await;
    let request = |subject: &str, payload: serde_json::Value| {
        let env = Envelope::builder(subject, serde_json::to_vec(&payload).expect("json"))
            .source("test")
            .build()
            .expect("subject");
        let bus = h.app.bus.clone();
        tokio::task::block_in_place(|| bus.request(env, None, Duration::from_secs(10)))
            .expect("a reply")
    };
    for (subject, payload, expected) in bad_input::sql_requests() {
        let reply = request(subject, payload.clone());
        let body = String::from_utf8_lossy(&reply.payload).into_owned();
        assert!(reply.is_error, "{subject} {payload}: not refused: {body}");
        assert!(
            body.contains(expected) && body.contains("error"),
            "{subject} {payload}: {body}"
        );
    }
    // Still serving, nothing panicked.
    let ok = request("sql.query", serde_json::json!({"sql": "SELECT 1 AS one"}));
    assert!(!ok.is_error, "{}", String::from_utf8_lossy(&ok.payload));
    assert_eq!(h.status("storage").panics, 0);
    h.app.shutdown().await;
}

#[test]
fn bad_config_files_name_the_line_the_key_and_the_fix() {
    for (what, text, expected) in bad_input::config_files() {
        let err = Config::parse(text, Path::new("plugins.toml"))
            .expect_err(what)
            .to_string();
        assert!(err.starts_with("plugins.toml"), "{what}: {err}");
        for e in expected {
            assert!(err.contains(e), "{what}: expected {e:?} in {err:?}");
        }
    }
}

#[test]
fn bad_config_files_are_refused_by_daz_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, text, expected) in bad_input::config_files() {
        let path = dir.path().join("plugins.toml");
        fs::write(&path, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .expect("daz runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains(expected[0]), "{what}: {stderr}");
    }
}
