//! The README followed literally with the built `daz` binary: `daz run` started in the
//! directory holding `plugins.toml` (the default relative path, `-c plugins.toml`,
//! `-c ./plugins.toml`), a new version deployed with `install` + `mv`, a plugin rebuilt
//! with `cargo build --release` into the default `plugin_dir` (`target/release`) with its
//! state kept, `log_level` changed alone, SIGHUP, SIGINT. Each promise of the "Hot
//! reload" and "Operations" sections it touches is asserted on what the process serves
//! (`/health`, `/metrics`, the bot's answers in a simulated channel) and prints.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_testkit::{
    fixture,
    process::{KillOnDrop, free_port, http_get, metric, signal, wait_exit},
    wait_until,
};

const T: Duration = Duration::from_secs(60);

/// A directory laid out as the README's: `plugins.toml` and a `plugins/` directory.
fn layout(plugins: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, u16) {
    let dir = daz_testkit::host_dir();
    for (lib, name) in files {
        install(dir.path(), &fixture(lib), &format!("plugins/{name}"));
    }
    let port = free_port();
    let config = format!(
        "[host]\nplugin_dir = \"plugins\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n{plugins}"
    );
    fs::write(dir.path().join("plugins.toml"), config).expect("write plugins.toml");
    (dir, port)
}

/// The README's deployment, run by the shell in `dir`:
/// `install -m 644 new.so /tmp/x && mv /tmp/x plugins/libfoo.so` (with a private
/// temporary name on the same file system).
fn install(dir: &Path, new: &Path, dest: &str) {
    let status = Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(r#"install -m 644 "$1" .deploy.tmp && mv .deploy.tmp "$2""#)
        .arg("sh")
        .arg(new)
        .arg(dest)
        .status()
        .expect("sh runs");
    assert!(status.success(), "install + mv of {}", new.display());
}

struct Daz {
    child: KillOnDrop,
    port: u16,
    out: PathBuf,
    err: PathBuf,
}

impl Daz {
    /// `daz <args>` with `dir` as the working directory.
    fn start(dir: &Path, port: u16, args: &[&str]) -> Daz {
        Daz::start_with(dir, port, args, &[])
    }

    /// [`Daz::start`] with more environment variables (`DATABASE_URL` unset: the
    /// storage plugin's default, SQLite).
    fn start_with(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Daz {
        let (out, err) = (dir.join("daz.out"), dir.join("daz.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_daz"))
            .current_dir(dir)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(fs::File::create(&out).expect("stdout file"))
            .stderr(fs::File::create(&err).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("daz starts");
        let daz = Daz {
            child: KillOnDrop(child),
            port,
            out,
            err,
        };
        wait_until(T, "the HTTP server", || daz.get("/health").is_some());
        daz
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    fn health(&self) -> String {
        self.get("/health").map(|(_, b)| b).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    fn reloads(&self, plugin: &str, result: &str) -> f64 {
        metric(
            &self.metrics(),
            &format!("daz_plugin_reloads_total{{plugin=\"{plugin}\",result=\"{result}\"}}"),
        )
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, count: usize) {
        wait_until(T, &format!("{count} × {what:?} in the log"), || {
            self.log().matches(what).count() >= count
        });
    }

    /// SIGINT, then a clean exit.
    fn interrupt(mut self) -> String {
        signal(&self.child.0, libc::SIGINT);
        let status = wait_exit(&mut self.child.0, T).expect("daz stops after SIGINT");
        let log = self.log();
        assert!(
            status.success(),
            "clean exit after SIGINT, got {status}\n{log}"
        );
        assert!(log.contains("stopped"), "{log}");
        log
    }
}

/// Rewrites `plugins.toml` in place (as an editor saving it does).
fn edit(dir: &Path, f: impl FnOnce(String) -> String) {
    let path = dir.join("plugins.toml");
    let text = fs::read_to_string(&path).expect("read plugins.toml");
    fs::write(&path, f(text)).expect("write plugins.toml");
}

/// Sets `log_level` of a plugin table (replacing any earlier one) and waits until the
/// host has applied it (the `nth` time levels are applied).
fn set_log_level(daz: &Daz, dir: &Path, plugin: &str, level: &str, nth: usize) {
    edit(dir, |t| {
        let table = format!("[plugins.{plugin}]\n");
        let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with("log_level")).collect();
        (lines.join("\n") + "\n").replace(&table, &format!("{table}log_level = \"{level}\"\n"))
    });
    daz.wait_log("plugin log levels applied", nth);
}

/// Writes beside `plugins.toml` the way SQLite does with `daz.db` while the bot runs.
fn database_writes(dir: &Path) {
    for i in 0..50 {
        fs::write(dir.join("daz.db"), format!("page {i}")).expect("write daz.db");
        fs::write(dir.join("daz.db-journal"), format!("journal {i}")).expect("write journal");
    }
    let _ = fs::remove_file(dir.join("daz.db-journal"));
}

/// Regression: with a relative configuration path (the README's default) a plugin file
/// deployed with install + mv was never reloaded, and changing only `log_level` reloaded
/// every plugin; the host's own reads of a plugin file fired the next reload forever.
#[test]
fn hot_reload_follows_the_readme_with_every_spelling_of_the_config_path() {
    for args in [
        &["run"][..],
        &["run", "-c", "plugins.toml"],
        &["run", "-c", "./plugins.toml"],
    ] {
        let (dir, port) = layout(
            "[plugins.versioned]\nfile = \"libfoo.so\"\n",
            &[("daz_fixture_v1", "libfoo.so")],
        );
        let daz = Daz::start(dir.path(), port, args);
        wait_until(T, "version 1 serving", || {
            daz.get("/health/ready")
                .is_some_and(|(s, b)| s == 200 && b.contains("\"1.0.0\""))
        });

        // Deploy a new version exactly as the README says.
        install(dir.path(), &fixture("daz_fixture_v2"), "plugins/libfoo.so");
        // The new version shows in /health as it starts serving, a moment before the
        // reload is counted.
        wait_until(
            T,
            &format!("version 2 serving after install + mv ({args:?})"),
            || daz.health().contains("\"2.0.0\"") && daz.reloads("versioned", "swapped") >= 2.0,
        );
        assert_eq!(daz.reloads("versioned", "swapped"), 2.0, "{args:?}");

        // A database written beside plugins.toml, then log_level changed alone: the level
        // applies, nothing reloads, nothing is counted. (The deployment itself may be
        // looked at twice, `unchanged` the second time; that settles before the first
        // change of log_level is handled.)
        set_log_level(&daz, dir.path(), "versioned", "debug", 1);
        let settled = daz.reloads("versioned", "unchanged");
        database_writes(dir.path());
        set_log_level(&daz, dir.path(), "versioned", "trace", 2);
        let metrics = daz.metrics();
        assert_eq!(
            daz.reloads("versioned", "swapped"),
            2.0,
            "{args:?}\n{metrics}"
        );
        assert_eq!(
            daz.reloads("versioned", "unchanged"),
            settled,
            "{args:?}\n{metrics}"
        );
        for result in ["skipped", "rejected", "failed"] {
            assert_eq!(
                daz.reloads("versioned", result),
                0.0,
                "{args:?} {result}\n{metrics}"
            );
        }
        assert!(daz.health().contains("\"2.0.0\""));
        let log = daz.interrupt();
        assert_eq!(log.matches("plugin loaded").count(), 2, "{args:?}\n{log}");
    }
}

/// Regression: a plugin whose `create` panicked was refused, then loaded again (and
/// panicked again) while the host stopped on SIGINT; the same file deployed again was
/// retried on every read of it.
#[test]
fn a_refused_file_stays_refused_and_nothing_loads_at_shutdown() {
    let (dir, port) = layout(
        "[plugins.panicky]\nfile = \"libpanicky.so\"\n\n[plugins.panicky.config]\npanic_in_create = true\n",
        &[("daz_fixture_panicky", "libpanicky.so")],
    );
    let daz = Daz::start(dir.path(), port, &["run"]);
    daz.wait_log("plugin failed to load", 1);
    assert_eq!(daz.get("/health/ready").map(|(s, _)| s), Some(503));

    // The same bytes deployed again: skipped once, not retried.
    install(
        dir.path(),
        &fixture("daz_fixture_panicky"),
        "plugins/libpanicky.so",
    );
    wait_until(T, "the redeployed file to be skipped", || {
        daz.reloads("panicky", "skipped") >= 1.0
    });
    // Events handled after it (a database written beside plugins.toml, log_level
    // changed alone) do not retry it.
    set_log_level(&daz, dir.path(), "panicky", "warn", 1);
    let skipped = daz.reloads("panicky", "skipped");
    database_writes(dir.path());
    set_log_level(&daz, dir.path(), "panicky", "error", 2);
    assert_eq!(
        daz.reloads("panicky", "skipped"),
        skipped,
        "{}",
        daz.metrics()
    );
    assert_eq!(
        daz.reloads("panicky", "failed"),
        1.0,
        "{}\n{}",
        daz.metrics(),
        daz.log()
    );

    let stderr_before = daz.stderr();
    let log = daz.interrupt();
    let stderr = fs::read_to_string(dir.path().join("daz.err")).unwrap_or_default();
    // Each run of `create` panics once: the SDK's panic hook logs it through the host
    // (`panic="…"` in the log); a panic it missed would print raw on stderr.
    let creates = log.matches("panic=\"panicky refuses to start\"").count()
        + stderr.matches("panicky refuses to start").count();
    assert_eq!(creates, 1, "create ran again\n{stderr}\n{log}");
    assert_eq!(stderr_before, stderr, "{log}");
}

/// The default plugin set from the repository's own `plugins.toml`, laid out as the
/// README says (`plugin_dir = "target/release"` relative to the file; the test puts debug
/// builds there): every plugin starts after what it requires, so none that needs the SQL
/// service warns that it is not available, and SIGINT stops them all cleanly.
#[test]
fn the_default_plugins_start_after_what_they_require() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    default_layout(root, port, &repo_config());
    let daz = Daz::start(root, port, &["run"]);
    wait_until(T, "every default plugin serving", || {
        daz.get("/health/ready").is_some_and(|(s, _)| s == 200)
    });
    let log = daz.interrupt();
    assert!(!log.contains("not available"), "{log}");
    let loaded = |plugin: &str| {
        log.find(&format!("plugin loaded plugin={plugin} "))
            .unwrap_or_else(|| panic!("{plugin} never loaded\n{log}"))
    };
    for user in ["usertracker", "mediatracker", "analytics"] {
        assert!(
            loaded("storage") < loaded(user),
            "{user} before storage\n{log}"
        );
    }
}

/// The README's plugin directory (`plugin_dir = "target/release"`, relative to
/// `plugins.toml`) holding the debug builds of every default plugin, with the
/// repository's `plugins.toml` beside it (its HTTP port replaced by `port`). Returns the
/// configured plugin files (`libdaz_plugin_<name>.so`).
fn default_layout(root: &Path, port: u16, repo_config: &str) -> Vec<String> {
    let files: Vec<String> = repo_config
        .lines()
        .filter_map(|l| {
            l.strip_prefix("file = \"")?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .collect();
    assert!(files.len() >= 8, "{repo_config}");
    // libdaz_plugin_<name>.so is built by the package daz-plugin-<name>.
    let packages: Vec<String> = files
        .iter()
        .map(|f| {
            let name = f.strip_prefix("lib").and_then(|f| f.strip_suffix(".so"));
            name.expect("lib<crate>.so").replace('_', "-")
        })
        .collect();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let built = daz_testkit::build_plugins(&packages);
    for sub in ["target", "target/release"] {
        fs::create_dir_all(root.join(sub)).expect("mkdir");
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let config = repo_config.replace("127.0.0.1:9464", &format!("127.0.0.1:{port}"));
    fs::write(root.join("plugins.toml"), &config).expect("write plugins.toml");
    for file in &files {
        install(root, &built.join(file), &format!("target/release/{file}"));
    }
    files
}

/// The repository's `plugins.toml`.
fn repo_config() -> String {
    fs::read_to_string(daz_testkit::workspace().join("plugins.toml"))
        .expect("the repository's plugins.toml")
}

/// The version `/health` reports for `plugin`.
fn version(daz: &Daz, plugin: &str) -> Option<String> {
    let health: serde_json::Value = serde_json::from_str(&daz.health()).ok()?;
    health["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == plugin)?["version"]
        .as_str()
        .map(str::to_owned)
}

/// Every reload count of `plugin` by result, as `/metrics` shows them.
fn reload_counts(daz: &Daz, plugin: &str) -> Vec<(&'static str, f64)> {
    ["swapped", "unchanged", "skipped", "rejected", "failed"]
        .into_iter()
        .map(|r| (r, daz.reloads(plugin, r)))
        .collect()
}

/// `cargo build --release` of the plugin crate in `krate`, its target directory the
/// layout's `target/` (as a plugin of the repository builds into the repository's
/// `target/release`). `--offline`: the lockfile `daz new-plugin` wrote pins every
/// dependency, so no index is fetched.
fn cargo_build_release(krate: &Path, target: &Path) {
    let out = Command::new(daz_testkit::cargo())
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--release", "--offline"])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --release in {}:\n{}",
        krate.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's default deployment: the repository's `plugins.toml`
/// (`plugin_dir = "target/release"`) and a plugin rebuilt with `cargo build --release`
/// while the bot runs. Cargo itself writes the new file into `target/release`; the new
/// version serves, keeps the count it had (its exported state), and no other plugin is
/// reloaded or counted by the files cargo writes beside it.
///
/// The layout lives under this workspace's `target/readme-release/` and is emptied at
/// each run except its `target/`, so the plugin's dependencies are compiled once per
/// checkout rather than at every run.
#[test]
fn a_plugin_rebuilt_with_cargo_build_release_serves_with_its_state_and_nothing_else_reloads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the simulator");
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            channels: vec![ChannelConfig::registered("demo")],
            accounts: vec![Account::new("bot", "bot-password")],
            ..SimConfig::default()
        }))
        .expect("the simulator starts");

    let root = daz_testkit::workspace()
        .join("target")
        .join("readme-release");
    fs::create_dir_all(&root).expect("mkdir");
    for entry in fs::read_dir(&root).expect("read the layout") {
        let path = entry.expect("an entry").path();
        if path.file_name() == Some("target".as_ref()) {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).expect("clear the layout");
        } else {
            fs::remove_file(&path).expect("clear the layout");
        }
    }
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    // The default plugins, the example plugin left out: the new plugin below answers
    // the same `!hello`.
    let config = repo_config();
    let config = config
        .split("[plugins.example]")
        .next()
        .expect("the default configuration");
    let files = default_layout(&root, port, config);

    // A plugin crate as `daz new-plugin` writes it, built once before the bot starts.
    let scaffold = Command::new(env!("CARGO_BIN_EXE_daz"))
        .current_dir(&root)
        .args(["new-plugin", "hello", "--path", "hello"])
        .output()
        .expect("daz new-plugin runs");
    assert!(
        scaffold.status.success(),
        "{}",
        String::from_utf8_lossy(&scaffold.stderr)
    );
    let krate = root.join("hello");
    cargo_build_release(&krate, &root.join("target"));
    let room = format!(
        "\n[[rooms]]\nsite = \"{}\"\nchannel = \"demo\"\nusername = \"bot\"\npassword_env = \"DAZ_BOT_PASSWORD\"\n",
        sim.base_url()
    );
    edit(&root, |t| {
        format!("{t}\n[plugins.hello]\nfile = \"libhello.so\"\n{room}")
    });

    let daz = Daz::start_with(
        &root,
        port,
        &["run"],
        &[("DAZ_BOT_PASSWORD", "bot-password")],
    );
    wait_until(T, "every plugin serving", || {
        daz.get("/health/ready").is_some_and(|(s, _)| s == 200)
    });
    assert_eq!(version(&daz, "hello").as_deref(), Some("0.1.0"));
    rt.block_on(sim.wait_for(T, |s| {
        s.channel("demo").is_some_and(|c| c.user("bot").is_some())
    }))
    .expect("the bot joins the channel");
    let mut alice = rt
        .block_on(async {
            let mut alice = sim.actor("alice").await.connect().await?;
            alice.join_and_login("demo", "alice", None).await?;
            Ok::<_, daz_cytube_sim::ActorError>(alice)
        })
        .expect("alice joins");
    let mut ask = |expected: &str| {
        alice.chat("!hello").expect("alice chats");
        rt.block_on(alice.expect_where("chatMsg", T, |m| {
            m["username"] == "bot" && m["msg"] == expected
        }))
        .unwrap_or_else(|e| panic!("no {expected:?} from the bot: {e}\n{}", daz.log()));
    };
    ask("Hello, alice! (greeting #1)");

    let others: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix("libdaz_plugin_")
                .and_then(|f| f.strip_suffix(".so"))
                .expect("libdaz_plugin_<name>.so")
                .to_owned()
        })
        .collect();
    let before: Vec<_> = others.iter().map(|p| reload_counts(&daz, p)).collect();
    for counts in &before {
        assert_eq!(counts[0].1, 1.0, "{counts:?}");
    }

    // A new version: another answer and another crate version; then the README's
    // build command, with the bot running.
    let lib_rs = krate.join("src/lib.rs");
    let source = fs::read_to_string(&lib_rs).expect("read src/lib.rs");
    let answer = "\"{}, {}! (greeting #{})\"";
    assert!(source.contains(answer), "{source}");
    fs::write(
        &lib_rs,
        source.replace(answer, "\"{} again, {}! (greeting #{})\""),
    )
    .expect("write src/lib.rs");
    let manifest = krate.join("Cargo.toml");
    let cargo_toml = fs::read_to_string(&manifest).expect("read Cargo.toml");
    assert!(cargo_toml.contains("version = \"0.1.0\""), "{cargo_toml}");
    fs::write(
        &manifest,
        cargo_toml.replacen("version = \"0.1.0\"", "version = \"0.2.0\"", 1),
    )
    .expect("write Cargo.toml");
    cargo_build_release(&krate, &root.join("target"));

    wait_until(
        T,
        "version 0.2.0 serving after cargo build --release",
        || version(&daz, "hello").as_deref() == Some("0.2.0"),
    );
    // State kept: the count goes on.
    ask("Hello again, alice! (greeting #2)");
    assert_eq!(daz.reloads("hello", "swapped"), 2.0, "{}", daz.metrics());
    for result in ["skipped", "rejected", "failed"] {
        assert_eq!(
            daz.reloads("hello", result),
            0.0,
            "{result}\n{}",
            daz.metrics()
        );
    }
    // Nothing else reloaded, and cargo's other files in target/release counted nothing.
    let after: Vec<_> = others.iter().map(|p| reload_counts(&daz, p)).collect();
    assert_eq!(before, after, "{others:?}\n{}", daz.metrics());

    drop(alice);
    let log = daz.interrupt();
    assert_eq!(
        log.matches("plugin loaded plugin=hello ").count(),
        2,
        "{log}"
    );
    rt.block_on(sim.shutdown());
}

/// The README's SIGHUP, with `daz run` in the directory of `plugins.toml` (a relative
/// path) and `watch = false` so that only the signal applies the file: an unchanged file
/// reloads nothing, a plugin whose table changed reloads (only it), an invalid file is
/// refused and changes nothing, each counted in `daz_host_config_reloads_total{result}`.
#[test]
fn sighup_rereads_plugins_toml_and_reloads_only_what_changed() {
    let (dir, port) = layout(
        "[plugins.versioned]\nfile = \"libfoo.so\"\n\n[plugins.example]\nfile = \"libexample.so\"\n",
        &[
            ("daz_fixture_v1", "libfoo.so"),
            ("daz_plugin_example", "libexample.so"),
        ],
    );
    edit(dir.path(), |t| {
        t.replace("[host]\n", "[host]\nwatch = false\n")
    });
    let daz = Daz::start(dir.path(), port, &["run"]);
    wait_until(T, "both plugins serving", || {
        daz.get("/health/ready").is_some_and(|(s, _)| s == 200)
    });
    let config_reloads = |daz: &Daz, result: &str| {
        metric(
            &daz.metrics(),
            &format!("daz_host_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    let hup = |daz: &Daz, nth: usize| {
        signal(&daz.child.0, libc::SIGHUP);
        daz.wait_log("SIGHUP received", nth);
    };

    // Unchanged: applied, nothing reloads.
    hup(&daz, 1);
    wait_until(T, "the unchanged file applied", || {
        config_reloads(&daz, "applied") == 1.0
    });
    let counts = |daz: &Daz| {
        (
            reload_counts(daz, "versioned"),
            reload_counts(daz, "example"),
        )
    };
    let start = counts(&daz);
    assert_eq!(start.0[0].1, 1.0, "{start:?}");
    assert_eq!(start.1[0].1, 1.0, "{start:?}");

    // One plugin's table changed: that plugin reloads, the other does not.
    edit(dir.path(), |t| {
        t.replace(
            "[plugins.versioned]\n",
            "[plugins.versioned]\nmailbox_capacity = 5000\n",
        )
    });
    hup(&daz, 2);
    wait_until(T, "versioned re-created with its new table", || {
        daz.reloads("versioned", "swapped") == 2.0
    });
    assert_eq!(config_reloads(&daz, "applied"), 2.0);
    assert_eq!(counts(&daz).1, start.1, "{}", daz.metrics());

    // An invalid file: refused, and the running configuration stays.
    let valid = fs::read_to_string(dir.path().join("plugins.toml")).expect("read");
    edit(dir.path(), |t| {
        t.replace("[host]\n", "[host]\nno_such_key = 1\n")
    });
    hup(&daz, 3);
    wait_until(T, "the invalid file refused", || {
        config_reloads(&daz, "refused") == 1.0
    });
    assert!(daz.log().contains("no_such_key"), "{}", daz.log());
    let after = counts(&daz);
    assert_eq!(after.1, start.1);
    assert_eq!(after.0[0].1, 2.0, "{after:?}");
    assert_eq!(daz.get("/health/ready").map(|(s, _)| s), Some(200));

    // Fixed again: applied, and nothing reloads (the tables are the ones running).
    fs::write(dir.path().join("plugins.toml"), valid).expect("write plugins.toml");
    hup(&daz, 4);
    wait_until(T, "the fixed file applied", || {
        config_reloads(&daz, "applied") == 3.0
    });
    assert_eq!(counts(&daz), after, "{}", daz.metrics());
    daz.interrupt();
}

/// The README's text.
fn readme() -> String {
    fs::read_to_string(daz_testkit::workspace().join("README.md")).expect("README.md")
}

/// The lines of the README section whose heading is `heading`, up to the next heading
/// of the same or a higher level.
fn section(readme: &str, heading: &str) -> Vec<String> {
    let level = heading.split(' ').next().unwrap_or("##").len();
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no {heading:?} in the README");
    let mut fenced = false;
    lines
        .take_while(|l| {
            fenced ^= l.starts_with("```");
            fenced || l.starts_with("```") || {
                let hashes = l.len() - l.trim_start_matches('#').len();
                !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
            }
        })
        .map(str::to_owned)
        .collect()
}

/// The body of the first fenced block of `lang` in `lines`.
fn fenced(lines: &[String], lang: &str) -> String {
    let open = format!("```{lang}");
    let start = lines
        .iter()
        .position(|l| *l == open)
        .unwrap_or_else(|| panic!("no {open} block"));
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every path in the README's Layout table exists in the repository.
#[test]
fn every_path_of_the_readme_layout_exists() {
    let readme = readme();
    let rows: Vec<String> = section(&readme, "## Layout")
        .into_iter()
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?;
            Some(cell.split('`').next()?.to_owned())
        })
        .collect();
    assert!(rows.len() >= 10, "{rows:?}");
    let root = daz_testkit::workspace();
    let missing: Vec<&String> = rows.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "in the Layout table but not in the repository: {missing:?}"
    );
}

/// `daz <args> --help`, its standard output.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(args)
        .arg("--help")
        .output()
        .expect("daz runs");
    assert!(out.status.success(), "daz {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands a `--help` text lists (the first word of each line of its
/// "Commands:" list).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Every `daz` command line the README shows (in code spans and code blocks) names
/// commands `daz --help` lists, and flags their `--help` lists: a command renamed in
/// the code and not in the README (or the reverse) fails here.
#[test]
fn every_daz_command_and_flag_in_the_readme_exists() {
    let readme = readme();
    // Code: the fenced blocks' lines and the inline `…` spans elsewhere.
    let mut code = Vec::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line.to_owned());
        } else {
            code.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    let top = help(&[]);
    let commands = subcommands(&top);
    assert!(commands.iter().any(|c| c == "run"), "{top}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for text in &code {
        // A comment in a shell block may hold another command: each `daz` word starts
        // one invocation, which ends at the next shell separator.
        let words: Vec<&str> = text.split_whitespace().collect();
        for (i, _) in words
            .iter()
            .enumerate()
            .filter(|(_, w)| **w == "daz" || w.ends_with("/daz"))
        {
            let mut path: Vec<&str> = Vec::new();
            let mut flags = Vec::new();
            for w in &words[i + 1..] {
                if ["#", "&&", "|", ";", "daz"].contains(w) {
                    break;
                }
                if let Some(flag) = w.strip_prefix("--") {
                    flags.push(flag.split('=').next().unwrap_or(flag).to_owned());
                } else if !w.starts_with('-') && flags.is_empty() {
                    // A subcommand while the command so far has subcommands of its
                    // own (`config check`, `plugins reload`); an argument otherwise.
                    let mut args = path.clone();
                    let listed = subcommands(&help(&args));
                    if listed.iter().any(|c| c == w) {
                        args.push(w);
                        path = args;
                    } else if path.is_empty() {
                        wrong.push(format!("`daz {w}` ({text:?}): no such command"));
                        break;
                    } else {
                        break;
                    }
                }
            }
            let h = help(&path);
            for flag in flags {
                let listed = h.match_indices(&format!("--{flag}")).any(|(at, m)| {
                    !h[at + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                });
                if !listed {
                    wrong.push(format!("`daz {} --{flag}` ({text:?})", path.join(" ")));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} daz command lines found");
    assert!(
        wrong.is_empty(),
        "in the README, unknown to daz:\n{}",
        wrong.join("\n")
    );
}

/// The README's `plugins.toml` block is a valid file (`daz config check` accepts it);
/// each key shown commented out exists (the file stays valid with it uncommented, one
/// at a time); and each value it shows in `[host]`, `[http]` and `[bus]` is the default
/// the code has, unless its comment says `(default X)` and X is.
#[test]
fn the_readme_plugins_toml_parses_and_shows_the_defaults() {
    use daz_host::config::Config;

    let readme = readme();
    let block = fenced(&section(&readme, "## `plugins.toml`"), "toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plugins.toml");
    let load = |text: &str| {
        fs::write(&file, text).expect("write plugins.toml");
        Config::load(&file)
    };
    fs::write(&file, &block).expect("write plugins.toml");
    let check = Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["config", "check"])
        .arg(&file)
        .env_remove("DAZ_ADMIN_TOKEN")
        .output()
        .expect("daz config check runs");
    let (code, out) = (
        check.status.code(),
        String::from_utf8_lossy(&check.stderr).into_owned(),
    );
    assert_eq!(
        code,
        Some(0),
        "daz config check on the README's block:\n{out}\n{block}"
    );
    let base = load(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));

    let lines: Vec<&str> = block.lines().collect();
    let mut table = String::new();
    let mut commented = 0;
    let mut shown = 0;
    for (n, line) in lines.iter().enumerate() {
        if line.starts_with('[') {
            table = line
                .split(']')
                .next()
                .unwrap_or("")
                .trim_start_matches('[')
                .to_owned();
            continue;
        }
        let with = |replacement: &str| {
            let mut l = lines.clone();
            l[n] = replacement;
            l.join("\n") + "\n"
        };
        // `# key = value   # what it is`: a key shown commented out.
        if let Some(rest) = line.strip_prefix("# ")
            && let Some((key, value)) = rest.split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            let value = value.split("  #").next().unwrap_or(value).trim();
            // Placeholders ("…64 hex digits…", "...") stand for a value of one's own.
            if value.contains('…') || value.contains("...") {
                continue;
            }
            let text = with(&format!("{key} = {value}"));
            if let Err(e) = load(&text) {
                panic!("[{table}] {key} = {value} (commented out in the README) is refused: {e}");
            }
            commented += 1;
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if !["host", "http", "bus"].contains(&table.as_str()) || key.starts_with('#') {
            continue;
        }
        let key = key.trim();
        let comment = value.split_once('#').map_or("", |(_, c)| c);
        let without = load(&with("")).unwrap_or_else(|e| panic!("without {key}: {e}"));
        let same =
            |a: &Config, b: &Config| (&a.host, &a.http, &a.bus) == (&b.host, &b.http, &b.bus);
        // The block's other tables hold no other value but defaults, so removing the
        // line gives the default.
        if !same(&without, &base) {
            let shown_default = comment
                .split_once("(default ")
                .and_then(|(_, d)| d.split(')').next())
                .unwrap_or_else(|| {
                    panic!("[{table}] {key} = {value}: not the default, and its comment does not say `(default X)`")
                });
            let text = with(&format!("{key} = {shown_default}"));
            let stated =
                load(&text).unwrap_or_else(|e| panic!("[{table}] {key} = {shown_default}: {e}"));
            assert!(
                same(&stated, &without),
                "[{table}] {key}: the README says the default is {shown_default}; the code's differs"
            );
        }
        shown += 1;
    }
    assert!(
        shown >= 15 && commented >= 10,
        "{shown} values, {commented} commented keys"
    );
}

/// Every metric the README's Operations section names is one the host registers (its
/// name appears quoted in the host's source): a metric renamed in the code and not in
/// the README fails here.
#[test]
fn every_metric_of_the_readme_operations_section_is_registered() {
    fn sources(dir: &Path, out: &mut String) {
        for entry in fs::read_dir(dir).expect("read the host's source") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&fs::read_to_string(&path).expect("read a source file"));
            }
        }
    }
    let mut source = String::new();
    sources(&daz_testkit::workspace().join("host/src"), &mut source);
    let text = section(&readme(), "## Operations").join("\n");
    let names: Vec<&str> = text
        .match_indices("daz_")
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        // `daz_plugin_<name>`: the plugins' own metrics.
        .filter(|n| !n.ends_with('_'))
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    let unknown: Vec<&&str> = names
        .iter()
        .filter(|n| !source.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        unknown.is_empty(),
        "in the README, not registered by the host: {unknown:?}"
    );
}
