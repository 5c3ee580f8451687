//! The README followed literally with the built `daz` binary: `daz run` started in the
//! directory holding `plugins.toml` (the default relative path, `-c plugins.toml`,
//! `-c ./plugins.toml`), a new version deployed with `install` + `mv`, `log_level` changed
//! alone, SIGINT. Each promise of the "Hot reload" and "Operations" sections it touches is
//! asserted on what the process serves (`/health`, `/metrics`) and prints.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use daz_testkit::{
    fixture,
    process::{KillOnDrop, free_port, http_get, metric, signal, wait_exit},
    wait_until,
};

const T: Duration = Duration::from_secs(60);

/// A directory laid out as the README's: `plugins.toml` and a `plugins/` directory.
fn layout(plugins: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let plugin_dir = dir.path().join("plugins");
    fs::create_dir(&plugin_dir).expect("mkdir");
    fs::set_permissions(&plugin_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
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
        let (out, err) = (dir.join("daz.out"), dir.join("daz.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_daz"))
            .current_dir(dir)
            .args(args)
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
        wait_until(
            T,
            &format!("version 2 serving after install + mv ({args:?})"),
            || daz.health().contains("\"2.0.0\""),
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
    assert_eq!(daz.reloads("panicky", "failed"), 1.0, "{}", daz.metrics());

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
    let repo_config = fs::read_to_string(daz_testkit::workspace().join("plugins.toml"))
        .expect("the repository's plugins.toml");
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
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    for sub in ["target", "target/release"] {
        fs::create_dir(root.join(sub)).expect("mkdir");
        fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let port = free_port();
    let config = repo_config.replace("127.0.0.1:9464", &format!("127.0.0.1:{port}"));
    fs::write(root.join("plugins.toml"), &config).expect("write plugins.toml");
    for file in &files {
        install(root, &built.join(file), &format!("target/release/{file}"));
    }
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
