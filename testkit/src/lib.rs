//! Test support shared by the host's and the plugins' integration tests: building
//! plugin crates into real `.so` files, starting a real host on port 0 with a private
//! plugin directory, deploying plugin files the safe way, probing the bus, and waiting on
//! conditions with a timeout.
//!
//! # Layout
//!
//! - this file: [`TestHost`], plugin builds and deploys, [`Probe`], [`wait_until`] and
//!   [`wait`].
//! - [`cytube`]: a host against the Cytube simulator ([`cytube::Rig`]), `[[rooms]]`
//!   tables, async bus probes.
//! - [`features`]: the feature plugins end to end: the default plugin set as real
//!   `.so` files, storage on SQLite or PostgreSQL, simulated users ([`features::Rig`]).
//! - [`bad_input`], [`binary`], [`compat`], [`db`], [`logs`], [`pg`], [`process`]: bad
//!   plugin files, the built `daz` binary, compatibility fixtures, test databases, log
//!   capture, a private PostgreSQL, child processes.

pub mod bad_input;
pub mod binary;
pub mod compat;
pub mod cytube;
pub mod db;
pub mod features;
pub mod logs;
pub mod pg;
pub mod process;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::{Envelope, Mailbox, MailboxConfig, SubscriberId};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_owned()
}

/// The `[plugins.<name>.config]` table of the repository's default `plugins.toml` as
/// JSON (an empty object when the plugin has none there): what a feature plugin's tests
/// hand `create` to show that the configuration the repository ships starts.
pub fn default_config(name: &str) -> serde_json::Value {
    let path = workspace().join("plugins.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: toml::Table = toml::from_str(&text).expect("plugins.toml parses");
    let table = file
        .get("plugins")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("config"))
        .cloned()
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    serde_json::to_value(table).expect("a TOML table is JSON")
}

/// The cargo executable running the tests.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The plugin crates tests load, built together by [`build_plugins`].
pub const PLUGIN_PACKAGES: &[&str] = &[
    "daz-plugin-example",
    "daz-fixture-v1",
    "daz-fixture-v2",
    "daz-fixture-panicky",
    "daz-fixture-blocker",
    "daz-fixture-not-a-plugin",
    "daz-fixture-other-abi-stable",
];

/// Builds the workspace's plugin crates once per test process, into a target directory
/// of their own (the outer `cargo test` holds the lock on the main one), and returns the
/// directory holding the `.so` files. `extra` names more packages to build (a plugin
/// crate testing itself through a real host).
///
/// Every call builds the same set: [`PLUGIN_PACKAGES`], every plugin crate in
/// `plugins/` and `extra`. Cargo unifies the dependencies' features over the packages it
/// builds together, so building a different set would compile the same plugins again
/// with other bytes, rewriting a file another test has deployed (and a refused file
/// would come back as a new one).
pub fn build_plugins(extra: &[&str]) -> PathBuf {
    build_plugins_profile(extra, false)
}

/// [`build_plugins`], optimised when `release` (for long runs like the soak): the files
/// land in `target/test-plugins/release`.
pub fn build_plugins_profile(extra: &[&str], release: bool) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, bool)>> = std::sync::Mutex::new(Vec::new());
    let target = workspace().join("target").join("test-plugins");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let workspace_plugins = workspace_plugin_packages();
    let mut wanted: Vec<&str> = PLUGIN_PACKAGES.to_vec();
    for p in workspace_plugins
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        if !wanted.contains(&p) {
            wanted.push(p);
        }
    }
    if wanted
        .iter()
        .any(|p| !built.iter().any(|(b, r)| b == p && *r == release))
    {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(workspace()).args(["build", "--quiet"]);
        if release {
            cmd.arg("--release");
        }
        for p in &wanted {
            cmd.args(["-p", p]);
        }
        let status = cmd
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the plugins {wanted:?} failed");
        built.extend(wanted.iter().map(|p| ((*p).to_owned(), release)));
    }
    target.join(if release { "release" } else { "debug" })
}

/// The package names of the plugin crates in `plugins/` (those building a `cdylib`).
fn workspace_plugin_packages() -> Vec<String> {
    let Ok(dirs) = fs::read_dir(workspace().join("plugins")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dirs
        .filter_map(|d| fs::read_to_string(d.ok()?.path().join("Cargo.toml")).ok())
        .filter(|manifest| manifest.contains("\"cdylib\""))
        .filter_map(|manifest| {
            let line = manifest.lines().find(|l| l.starts_with("name = \""))?;
            Some(
                line.trim_start_matches("name = \"")
                    .trim_end_matches('"')
                    .to_owned(),
            )
        })
        .collect();
    names.sort();
    names
}

/// The directory of the built test plugins.
pub fn fixture_dir() -> PathBuf {
    build_plugins(&[])
}

/// Path of a built plugin library, e.g. `fixture("daz_fixture_v1")`.
pub fn fixture(lib: &str) -> PathBuf {
    fixture_dir().join(format!("lib{lib}.so"))
}

/// Deploys `src` as `dir/name` the safe way: write a temporary file in the same
/// directory, then rename it over the target (a new inode, never a partial file).
pub fn deploy(src: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::copy(src, &tmp).expect("copy plugin");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&tmp, dir.join(name)).expect("rename plugin into place");
}

/// Writes raw bytes as a plugin file (for bad-input tests), via rename.
pub fn deploy_bytes(bytes: &[u8], dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).expect("write");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (re-checking every 2 ms, yielding to the runtime) until `cond` holds; panics
/// with `what` after `timeout`. The async form of [`wait_until`].
pub async fn wait(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A private directory for one host, laid out as the README's: an empty `plugins/`
/// beside where `plugins.toml` goes. Both are 0755 whatever the umask: the loader
/// refuses a plugin directory that others can write.
pub fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).expect("mkdir");
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A host started for a test, with its own plugin directory and configuration file.
pub struct TestHost {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub plugin_dir: PathBuf,
    pub config_path: PathBuf,
}

/// The `[host]` table tests use: fast stability checks, short probation thresholds, and
/// no preflight (tests that have the `daz` binary turn it on with
/// `preflight_exe = "..."` in `extra`).
pub fn host_table(extra: &str) -> String {
    let preflight = if extra.contains("preflight") {
        ""
    } else {
        "preflight = false\n"
    };
    format!(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\n{preflight}stable_interval_ms = 2\ndebounce_ms = 20\nhandler_deadline_ms = 300\nprobation_ms = 30000\nprobation_failures = 3\nquarantine_panics = 5\nshutdown_timeout_ms = 1000\n{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n"
    )
}

impl TestHost {
    /// Starts a host with `config_text` (a whole plugins.toml) after deploying `files`
    /// (`(fixture path, file name)`) into its plugin directory.
    pub async fn start(config_text: &str, files: &[(PathBuf, &str)]) -> TestHost {
        // Host logs go to the test's captured output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let dir = host_dir();
        let plugin_dir = dir.path().join("plugins");
        for (src, name) in files {
            deploy(src, &plugin_dir, name);
        }
        let config_path = dir.path().join("plugins.toml");
        fs::write(&config_path, config_text).expect("write config");
        let config = Config::load(&config_path).expect("valid test config");
        let app = App::start(
            config,
            StartOptions {
                config_path: Some(config_path.clone()),
                ..StartOptions::default()
            },
        )
        .await
        .expect("host starts");
        TestHost {
            app,
            dir,
            plugin_dir,
            config_path,
        }
    }

    /// A probe subscriber on the bus: a mailbox subscribed to `patterns`.
    pub fn probe(&self, name: &str, patterns: &[&str]) -> Probe {
        let mailbox = Mailbox::new(name, MailboxConfig::new(4_000_000));
        let id = self
            .app
            .bus
            .register(name, mailbox.clone())
            .expect("register probe");
        for p in patterns {
            self.app.bus.subscribe(id, p).expect("subscribe probe");
        }
        Probe { mailbox, id }
    }

    /// Publishes a JSON event.
    pub fn publish(&self, subject: &str, payload: serde_json::Value) {
        let env = Envelope::builder(subject, serde_json::to_vec(&payload).expect("json"))
            .source("test")
            .build()
            .expect("valid subject");
        self.app.bus.publish(env).expect("publish");
    }

    /// Publishes a Cytube chat line as the Cytube client does.
    pub fn chat(&self, room: &str, user: &str, msg: &str) {
        let payload = serde_json::json!({"username": user, "msg": msg, "meta": {}, "time": 0});
        let env = Envelope::builder(
            format!("cytube.in.{room}.chatMsg"),
            serde_json::to_vec(&payload).expect("json"),
        )
        .room(room)
        .source(format!("cytube:{room}"))
        .build()
        .expect("valid subject");
        self.app.bus.publish(env).expect("publish");
    }

    /// The state of a plugin's slot.
    pub fn status(&self, name: &str) -> daz_host::plugins::PluginStatus {
        self.status_opt(name).expect("plugin is configured")
    }

    /// The state of a plugin's slot, if it is configured.
    pub fn status_opt(&self, name: &str) -> Option<daz_host::plugins::PluginStatus> {
        self.app
            .plugins
            .status()
            .into_iter()
            .find(|s| s.name == name)
    }

    /// The version a plugin serves.
    pub fn version(&self, name: &str) -> Option<String> {
        self.status(name).slot.and_then(|s| s.version)
    }

    /// The admin token the host generated in its runtime directory (as the CLI finds
    /// it), if it generated one.
    pub fn generated_token(&self) -> Option<String> {
        let file = self.app.admin_token_file.as_ref()?;
        Some(
            fs::read_to_string(file)
                .expect("read the generated token")
                .trim()
                .to_owned(),
        )
    }

    /// `GET` a path on the host's HTTP server, with the generated admin token if there
    /// is one (as the CLI sends it).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.app.http_addr.expect("http enabled"));
        let mut req = reqwest::Client::new().get(&url);
        if let Some(token) = self.generated_token() {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("http request");
        let code = resp.status().as_u16();
        (code, resp.text().await.expect("body"))
    }
}

/// A test subscriber.
pub struct Probe {
    pub mailbox: Arc<Mailbox>,
    pub id: SubscriberId,
}

impl Probe {
    /// The next event, or panic after `timeout`.
    #[track_caller]
    pub fn next(&self, timeout: Duration) -> Arc<Envelope> {
        match self.mailbox.pop_blocking(timeout) {
            Some(env) => env,
            None => panic!(
                "no event reached probe {} within {timeout:?}",
                self.mailbox.name()
            ),
        }
    }

    /// The next event's payload as JSON.
    #[track_caller]
    pub fn next_json(&self, timeout: Duration) -> serde_json::Value {
        let env = self.next(timeout);
        serde_json::from_slice(&env.payload).expect("json payload")
    }

    /// Waits for an event satisfying `pred`, discarding others.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Arc<Envelope> {
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            assert!(!left.is_zero(), "no matching event within {timeout:?}");
            if let Some(env) = self.mailbox.pop_blocking(left)
                && pred(&env)
            {
                return env;
            }
        }
    }
}
