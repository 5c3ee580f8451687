//! Hostile plugins and faults against a real host: each test reproduces an attack or a
//! fault that once broke the host and shows that it now holds.
//!
//! - a plugin whose destructor panics (on a reload, a disable and at shutdown): the host
//!   and the other plugins go on;
//! - plugin file trust: a symlink into a directory other users can write is refused, and
//!   files swapped by rename while the host reloads never get a refused file loaded
//!   (trust is decided on the descriptor the bytes are read from).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use daz_host::plugins::{ReloadError, Trigger, loader::LoadError, slot::SlotState};
use daz_testkit::{TestHost, fixture, host_table, wait_until};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_in_drop_does_not_abort_the_host() {
    let config = format!(
        "{}\n[plugins.panicky]\nfile = \"panicky.so\"\n[plugins.panicky.config]\npanic_in_drop = true\n\n[plugins.example]\nfile = \"example.so\"\n",
        host_table("")
    );
    let h = TestHost::start(
        &config,
        &[
            (fixture("daz_fixture_panicky"), "panicky.so"),
            (fixture("daz_plugin_example"), "example.so"),
        ],
    )
    .await;
    let dropping = h.probe("probe-dropping", &["panicky.dropping"]);
    let alive = h.probe("probe-alive", &["panicky.alive"]);
    let chat = h.probe("probe-chat", &["cytube.out.>"]);

    // A reload drops the old instance: its destructor panics inside the host's process.
    h.app.plugins.reload("panicky", Trigger::Explicit).unwrap();
    dropping.next(T);
    // The new instance serves; the host and the other plugin go on.
    h.publish("panicky.ok", serde_json::json!({}));
    alive.next(T);
    h.chat("r", "u", "!hello");
    chat.next(T);
    assert_eq!(h.status("panicky").slot.unwrap().state, SlotState::Serving);

    // Disabling it drops the instance again.
    h.app.plugins.set_enabled("panicky", false).unwrap();
    dropping.next(T);
    wait_until(T, "the plugin is disabled", || !h.status("panicky").enabled);
    h.chat("r", "u", "!hello");
    chat.next(T);
    let (code, body) = h.get("/health/live").await;
    assert_eq!(code, 200, "{body}");

    // And at shutdown, after enabling it again.
    h.app.plugins.set_enabled("panicky", true).unwrap();
    h.publish("panicky.ok", serde_json::json!({}));
    alive.next(T);
    h.app.shutdown().await;
    dropping.next(T);
}

fn versioned_host_config() -> String {
    format!(
        "{}\n[plugins.versioned]\nfile = \"versioned.so\"\n",
        host_table("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_into_a_world_writable_directory_is_refused() {
    let h = TestHost::start(
        &versioned_host_config(),
        &[(fixture("daz_fixture_v1"), "versioned.so")],
    )
    .await;
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));
    // A directory anyone may write into (no sticky bit), holding a file that is itself
    // private and owned by this user: only the directory betrays it.
    let shared = h.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    fs::copy(fixture("daz_fixture_v2"), shared.join("versioned.so")).unwrap();
    fs::set_permissions(
        shared.join("versioned.so"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let link = h.plugin_dir.join(".versioned.link");
    std::os::unix::fs::symlink(shared.join("versioned.so"), &link).unwrap();
    fs::rename(&link, h.plugin_dir.join("versioned.so")).unwrap();

    let err = h
        .app
        .plugins
        .reload("versioned", Trigger::Explicit)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ReloadError::Load(LoadError::Untrusted { .. }))
            && text.contains("shared")
            && text.contains("writable by others")
            && text.contains("sticky"),
        "{text}"
    );
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));

    // With the sticky bit (as /tmp), other users cannot rename this user's file: allowed.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    h.app
        .plugins
        .reload("versioned", Trigger::Explicit)
        .unwrap();
    assert_eq!(h.version("versioned").as_deref(), Some("2.0.0"));
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_by_rename_during_reloads_is_never_loaded() {
    let h = TestHost::start(
        &versioned_host_config(),
        &[(fixture("daz_fixture_v1"), "versioned.so")],
    )
    .await;
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));
    // The good file (private) and a foreign one the trust check must refuse (writable by
    // others), both kept as sources; a thread renames hard links of each over the
    // plugin path in a tight loop.
    let good = h.plugin_dir.join(".good");
    let foreign = h.plugin_dir.join(".foreign");
    fs::copy(fixture("daz_fixture_v1"), &good).unwrap();
    fs::set_permissions(&good, fs::Permissions::from_mode(0o644)).unwrap();
    fs::copy(fixture("daz_fixture_v2"), &foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o666)).unwrap();
    let target = h.plugin_dir.join("versioned.so");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, dir, target) = (
            stop.clone(),
            swaps.clone(),
            h.plugin_dir.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let tmp = dir.join(".swap.tmp");
            while !stop.load(Ordering::Relaxed) {
                for src in [&good, &foreign] {
                    let _ = fs::remove_file(&tmp);
                    // Errors end the thread (the test's directory is gone after a
                    // failure); the loop below then sees no more swaps.
                    if fs::hard_link(src, &tmp).is_err() || fs::rename(&tmp, &target).is_err() {
                        return;
                    }
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let (mut reloads, mut loaded, mut refused) = (0u64, 0u64, 0u64);
    // Enough reloads that both files were met many times (the thread swaps far faster
    // than a reload runs); the cap only ends a run that cannot show anything.
    while reloads < 300 || loaded < 20 || refused < 20 {
        assert!(
            reloads < 100_000,
            "{reloads} reloads: {loaded} loaded, {refused} refused"
        );
        reloads += 1;
        match h.app.plugins.reload("versioned", Trigger::Explicit) {
            Ok(_) => loaded += 1,
            Err(ReloadError::Load(LoadError::Untrusted { why, .. })) => {
                assert!(why.contains("writable by others"), "{why}");
                refused += 1;
            }
            Err(e) => panic!("reload {reloads}: {e}"),
        }
        assert_eq!(
            h.version("versioned").as_deref(),
            Some("1.0.0"),
            "reload {reloads} loaded the foreign file"
        );
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "race: {reloads} reloads ({loaded} loaded the good file, {refused} refused the foreign one) against {} renames in {:?}; the foreign file was never loaded",
        swaps.load(Ordering::Relaxed),
        started.elapsed()
    );
    h.app.shutdown().await;
}

/// `daz config check` as a user runs it: a secret pasted where a variable name belongs
/// is refused without being echoed; a missing variable or file is a warning, not "ok".
#[test]
fn config_check_never_echoes_a_secret_and_warns_about_what_is_missing() {
    const SECRET: &str = "hunter2 s3cr3t";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let check = |text: &str| {
        fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .args(["config", "check"])
            .arg(&path)
            .env_remove("DAZ_TEST_UNSET_PASSWORD")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let room = "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\n";
    for text in [
        format!("[http]\ntoken_env = \"{SECRET}\"\n"),
        format!("{room}password_env = \"{SECRET}\"\n"),
    ] {
        let (code, stdout, stderr) = check(&text);
        assert_eq!(code, Some(2), "{stdout}{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "the secret is echoed: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("not an environment variable name"),
            "{stderr}"
        );
    }
    let (code, stdout, stderr) = check(&format!(
        "{room}password_env = \"DAZ_TEST_UNSET_PASSWORD\"\n[plugins.gone]\nfile = \"gone.so\"\n"
    ));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("valid, with 2 warnings"), "{stdout}");
    assert!(
        stderr.contains("DAZ_TEST_UNSET_PASSWORD is not set")
            && stderr.contains("gone.so does not exist"),
        "{stderr}"
    );
}
