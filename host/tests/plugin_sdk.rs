//! The plugin author's side, through the built `daz` binary: scaffolding a plugin crate
//! outside the workspace and taking it all the way into a real host, and what
//! `daz check-plugin` says about plugins built with the wrong toolchain pieces.

use std::time::Duration;

use daz_testkit::{self as support, TestHost, fixture};

const T: Duration = Duration::from_secs(30);

/// A plugin built with another abi_stable minor is refused with one line naming both
/// versions and the fix — not abi_stable's two debug dumps of the library header.
#[test]
fn other_abi_stable_minor_is_refused_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .arg("check-plugin")
        .arg(fixture("daz_fixture_other_abi_stable"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{stderr}");
    assert!(
        lines[0].contains("was built with abi_stable 0.10; this host uses abi_stable 0.11")
            && lines[0].contains("rebuild the plugin with abi_stable 0.11"),
        "{stderr}"
    );
}

/// Runs a command to completion, failing the test with its output if it fails.
#[track_caller]
fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `cargo` in a scaffolded crate. The dependencies compile into a target directory kept
/// under this workspace's `target/` so that later runs reuse them; the crate itself
/// lives (and its lockfile is resolved) outside the workspace.
fn cargo_in(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(support::cargo());
    cmd.current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            support::workspace().join("target").join("scaffolded"),
        )
        // The lockfile `daz new-plugin` seeds from the host's own pins everything: no
        // index fetch.
        .arg("--offline");
    cmd
}

/// The output of a running `daz dev`, both streams merged, line by line, with every line
/// kept for the failure message.
struct DevOutput {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DevOutput {
    fn of(child: &mut std::process::Child) -> DevOutput {
        use std::io::{BufRead, BufReader};
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        DevOutput {
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `want`; fails with everything seen.
    #[track_caller]
    fn wait_for(&mut self, want: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(want) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {want:?} within {timeout:?}; daz dev said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// How long a build (of the plugin crate, by `daz dev`) may take on a loaded machine.
const BUILD: Duration = Duration::from_secs(300);

/// `daz dev` in the crate's directory, as the README runs it, with its input piped.
fn start_dev(
    dir: &std::path::Path,
    plugin_dir: &std::path::Path,
) -> (support::process::KillOnDrop, DevOutput) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .current_dir(dir)
        // The stage's own plugins (router, built-ins, storage) as the tests build them:
        // beside the test binary they would be built under the lock the outer cargo holds.
        .args(["dev", "--plugin-dir"])
        .arg(plugin_dir)
        .env(
            "CARGO_TARGET_DIR",
            support::workspace().join("target").join("scaffolded"),
        )
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = support::process::KillOnDrop(child);
    let out = DevOutput::of(&mut guard.0);
    (guard, out)
}

/// Ctrl-C (SIGINT) ends `daz dev` cleanly while its input is still open.
fn dev_stops_at_ctrl_c(dir: &std::path::Path, plugin_dir: &std::path::Path) {
    let (mut guard, mut out) = start_dev(dir, plugin_dir);
    let child = &mut guard.0;
    // Kept open: the reader of the input must not hold the exit up.
    let _stdin = child.stdin.take().unwrap();
    out.wait_for("[dev]    serving", BUILD);
    support::process::signal(child, libc::SIGINT);
    let status = support::process::wait_exit(child, T).expect("daz dev exits at SIGINT");
    out.wait_for("[dev]    stopped", T);
    assert!(status.success(), "{status}: {}", out.seen.join("\n"));
}

/// The README's `daz dev` step: in the crate's directory, the plugin serves in the
/// simulated channel and passes its declared examples; a line typed on the input is
/// answered; a save swaps the new version in (its answer changes, the examples run again
/// and say which no longer hold) and says how long that took; a save that does not build
/// leaves the version before serving; the end of the input stops it cleanly. Returns the save → serving time `daz dev` printed.
fn dev_session(dir: &std::path::Path, plugin_dir: &std::path::Path) -> String {
    use std::io::Write;
    let (mut guard, mut out) = start_dev(dir, plugin_dir);
    let child = &mut guard.0;
    let mut stdin = child.stdin.take().unwrap();
    out.wait_for("[dev]    serving", BUILD);
    out.wait_for("[example] 3 of 3 examples pass", T);

    writeln!(stdin, "!hello").unwrap();
    out.wait_for("[chat] bot: Hello, dev!", T);

    let lib_rs = dir.join("src").join("lib.rs");
    let source = std::fs::read_to_string(&lib_rs).unwrap();
    let edited = source.replace("\"Hello\".to_owned()", "\"Howdy\".to_owned()");
    assert_ne!(edited, source, "the template's greeting moved");
    std::fs::write(&lib_rs, &edited).unwrap();
    let swapped = out.wait_for("swapped in", BUILD);
    // The examples ran again against the new version, which no longer says "Hello".
    out.wait_for("[example] FAIL  alice: !hello", T);
    out.wait_for("[example] 1 of 3 examples pass", T);
    writeln!(stdin, "!hello").unwrap();
    out.wait_for("[chat] bot: Howdy, dev!", T);

    std::fs::write(&lib_rs, format!("{edited}\nfn broken( {{\n")).unwrap();
    out.wait_for("cargo build failed", BUILD);
    writeln!(stdin, "!hello").unwrap();
    out.wait_for("[chat] bot: Howdy, dev!", T);
    std::fs::write(&lib_rs, &source).unwrap();
    out.wait_for("swapped in", BUILD);
    out.wait_for("[example] 3 of 3 examples pass", T);

    drop(stdin);
    let status = support::process::wait_exit(child, T).expect("daz dev exits");
    out.wait_for("[dev]    stopped", T);
    assert!(status.success(), "{status}: {}", out.seen.join("\n"));
    swapped
}

/// The README's "Writing a plugin" walk-through, step by step, in a temporary directory
/// outside the workspace: `daz new-plugin` → `cargo test` → `daz dev` (type, save, see
/// the new version answer) → `cargo build --release` → `daz check-plugin` (with and
/// without `--config`) → deployed into a real host beside the command router, the
/// plugin answers `!hello` (by PM too: its harness test checks that path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_plugin_builds_outside_the_workspace_passes_its_tests_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!tmp.path().starts_with(support::workspace()));
    let dir = tmp.path().join("greeter");
    let out = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .args(["new-plugin", "greeter", "--path"])
            .arg(&dir),
    );
    assert!(out.contains("created plugin greeter"), "{out}");
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "tests/chat.rs",
        "README.md",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    // A second run refuses to overwrite it.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["new-plugin", "greeter", "--path"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));

    let tests = run_ok(cargo_in(&dir).arg("test"));
    for test in [
        "declared_chat_examples_hold_in_chat_and_by_pm ... ok",
        "a_pm_is_answered_by_pm ... ok",
    ] {
        assert!(tests.contains(test), "{tests}");
    }

    let stage = support::build_plugins(&[
        "daz-plugin-storage",
        "daz-plugin-commands",
        "daz-plugin-builtins",
    ]);
    let swapped = dev_session(&dir, &stage);
    eprintln!("daz dev: {swapped}");
    dev_stops_at_ctrl_c(&dir, &stage);

    run_ok(cargo_in(&dir).args(["build", "--release"]));
    let lib = support::workspace()
        .join("target")
        .join("scaffolded")
        .join("release")
        .join("libgreeter.so");
    let check = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .arg("check-plugin")
            .arg(&lib),
    );
    assert!(
        check.contains("plugin:      greeter") && check.contains("commands:    hello"),
        "{check}"
    );
    std::fs::write(dir.join("greeter.toml"), "greeting = \"Welcome\"\n").unwrap();
    let check = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .current_dir(&dir)
            .arg("check-plugin")
            .arg(&lib)
            .args(["--config", "greeter.toml"]),
    );
    assert!(check.contains("start:       ok"), "{check}");

    let config = format!(
        "{}\n[plugins.commands]\nfile = \"commands.so\"\n[plugins.greeter]\nfile = \"greeter.so\"\n[plugins.greeter.config]\ngreeting = \"Welcome\"\n",
        support::host_table("")
    );
    let h = TestHost::start(
        &config,
        &[
            (lib, "greeter.so"),
            (stage.join("libdaz_plugin_commands.so"), "commands.so"),
        ],
    )
    .await;
    let said = h.probe("probe-chat", &["cytube.out.*.chatMsg"]);
    h.chat("lobby", "alice", "!hello");
    let reply = said.next_json(T);
    assert_eq!(reply["msg"], "Welcome, alice! (greeting #1)");
    h.app.shutdown().await;
}

/// `daz check-plugin FILE --config TABLE.toml` starts the plugin with that table and
/// stops it: a configuration `create` refuses, a panic in `create` and a good
/// configuration are told apart, in the words the plugin used.
#[test]
fn check_plugin_with_config_runs_create_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let check = |lib: &str, table: &str| {
        let file = dir.path().join("table.toml");
        std::fs::write(&file, table).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .arg("check-plugin")
            .arg(fixture(lib))
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check("daz_plugin_example", "greeting = \"Hi\"\n");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("start:       ok"), "{stdout}");

    let (code, _, stderr) = check("daz_plugin_example", "command = \"two words\"\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("create failed with this configuration")
            && stderr.contains("command must be one word"),
        "{stderr}"
    );
    let (code, _, stderr) = check("daz_plugin_example", "colour = 1\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");

    let (code, _, stderr) = check("daz_fixture_panicky", "panic_in_create = true\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("panicked in create") && stderr.contains("panicky refuses to start"),
        "{stderr}"
    );

    // A whole plugins.toml: the plugin's own table is used.
    let (code, _, stderr) = check(
        "daz_plugin_example",
        "[plugins.example]\nfile = \"x.so\"\n[plugins.example.config]\ncommand = \"a b\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("command must be one word"), "{stderr}");
    let (code, _, stderr) = check("daz_plugin_example", "[plugins.other]\nfile = \"x.so\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("has no [plugins.example] table"),
        "{stderr}"
    );

    // Not TOML: refused before anything is loaded, as a usage error.
    let (code, _, stderr) = check("daz_plugin_example", "greeting = \n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is not valid TOML"), "{stderr}");
}

/// A panic inside a plugin reaches the operator through the host's log format (the SDK's
/// panic hook logs it through the host), never as std's raw `thread '…' panicked at`
/// line on the host's output.
#[test]
fn a_plugin_panic_is_logged_in_the_hosts_format() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    support::deploy(
        &fixture("daz_fixture_panicky"),
        &dir.path().join("plugins"),
        "panicky.so",
    );
    std::fs::write(
        dir.path().join("plugins.toml"),
        format!(
            "{}\n[plugins.panicky]\nfile = \"panicky.so\"\n[plugins.panicky.config]\npanic_in_create = true\n",
            support::host_table("")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .current_dir(dir.path())
        .args(["--config", "plugins.toml", "run"])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both streams, line by line, into one channel.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains("plugin panicked (caught; reported as an error)");
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let text = seen.join("\n");
    assert!(found, "no panic log line:\n{text}");
    let logged = seen
        .iter()
        .find(|l| l.contains("plugin panicked (caught"))
        .unwrap();
    assert!(
        logged.contains("ERROR")
            && logged.contains("panicky refuses to start")
            && logged.contains("location="),
        "{logged}"
    );
    assert!(
        !text.contains("thread '") && !text.contains("stack backtrace"),
        "raw panic output on the host's streams:\n{text}"
    );
}
