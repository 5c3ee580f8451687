//! The feature plugins end to end, for their crates' tests and benches: a Cytube
//! simulator with a registered channel and accounts, a real host on port 0 connected to
//! it as the bot, the feature plugins built as real `.so` files, and the storage plugin
//! on a fresh SQLite file or a fresh PostgreSQL database. Every wait is on a condition
//! with a timeout, never a sleep.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use daz_bus::Envelope;
use daz_cytube_proto::events::unescape_chat;
use daz_cytube_sim::{Account, Actor, ChannelConfig, MediaSpec, SimConfig, SimHandle};
use daz_host::cytube::ConnState;

use crate::{TestHost, build_plugins, cytube::account_room, db::TestDb, host_table, wait};
use serde_json::{Value, json};

/// Default wait.
pub const T: Duration = Duration::from_secs(30);
/// The bot's account.
pub const BOT: &str = "daz_bot";
const BOT_PW: &str = "bot-account-pw";
/// The room (bus name and channel).
pub const ROOM: &str = "lobby";
/// Password of every user account.
pub const PW: &str = "user-pw";

/// The plugin crates the tests load.
pub const FEATURES: &[&str] = &[
    "daz-plugin-storage",
    "daz-plugin-commands",
    "daz-plugin-builtins",
    "daz-plugin-usertracker",
    "daz-plugin-mediatracker",
    "daz-plugin-analytics",
    "daz-plugin-retry",
];

/// The simulator the tests use: a registered channel with a playlist, the bot's account
/// and three users: alice (channel admin), bob (registered), mod (moderator).
pub fn sim_config(channel: impl FnOnce(ChannelConfig) -> ChannelConfig) -> SimConfig {
    let chan = ChannelConfig::registered(ROOM)
        .rank("alice", 3.0)
        .rank("mod", 2.0)
        .media(MediaSpec::yt("vid00000001", "First Song", 600))
        .media(MediaSpec::yt("vid00000002", "Second Song", 600));
    SimConfig {
        channels: vec![channel(chan)],
        accounts: vec![
            Account::new(BOT, BOT_PW),
            Account::new("alice", PW),
            Account::new("bob", PW),
            Account::new("mod", PW),
        ],
        guest_login_interval: Duration::from_millis(10),
        usercount_interval: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

/// Plugin configuration bodies (the keys under `[plugins.<name>.config]`, sub-tables
/// written out in full: `[plugins.<name>.config.<table>]`); `None` leaves a plugin out.
#[derive(Debug, Clone)]
pub struct Setup {
    pub commands: Option<String>,
    pub builtins: Option<String>,
    pub usertracker: Option<String>,
    pub mediatracker: Option<String>,
    pub analytics: Option<String>,
    pub retry: Option<String>,
    pub example: bool,
    pub storage: bool,
    /// Extra keys of the `[[rooms]]` table's `[rooms.outbound]`.
    pub outbound: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            // The tests type faster than the declared cooldowns allow.
            commands: Some(
                "admins = [\"root\"]\nrefresh_ms = 5000\n\
                 [plugins.commands.config.overrides.seen]\nuser_cooldown_ms = 0\n\
                 [plugins.commands.config.overrides.np]\nuser_cooldown_ms = 0\n\
                 [plugins.commands.config.overrides.help]\nuser_cooldown_ms = 0\n"
                    .into(),
            ),
            builtins: Some(String::new()),
            usertracker: Some("flush_interval_ms = 200\n".into()),
            mediatracker: Some("flush_interval_ms = 200\n".into()),
            analytics: Some("refresh_ms = 1000\n".into()),
            retry: Some(String::new()),
            example: true,
            storage: true,
            outbound: String::new(),
        }
    }
}

impl Setup {
    /// The default set, with the router letting a user repeat each of `commands` at once
    /// (the tests type faster than the declared cooldowns allow).
    pub fn repeating(commands: &[&str]) -> Setup {
        let mut setup = Setup::default();
        let table = setup.commands.get_or_insert_with(String::new);
        for name in commands {
            table.push_str(&format!(
                "[plugins.commands.config.overrides.{name}]\nuser_cooldown_ms = 0\n"
            ));
        }
        setup
    }
}

/// The host's `plugins.toml` for `sim`, `db` and `setup`.
pub fn host_config(sim: &SimHandle, db: &TestDb, setup: &Setup) -> String {
    let mut c = host_table("create_timeout_ms = 20000");
    c.push_str(&account_room(
        sim,
        db.dir.path(),
        ROOM,
        ROOM,
        (BOT, BOT_PW),
        &format!("[rooms.outbound]\n{}\n", setup.outbound),
    ));
    if setup.storage {
        c.push_str(&format!(
            "\n[plugins.storage]\nfile = \"libdaz_plugin_storage.so\"\n[plugins.storage.config]\n\
             database_url = \"{}\"\nprefer_env = false\njournal_dir = \"{}\"\nflush_interval_ms = 20\n",
            db.url,
            db.dir.path().join("journal").display()
        ));
        // No rules: the storage plugin's default rules (chat, joins, media, commands)
        // are what the trackers and analytics are tested against.
    }
    let tables = [
        ("commands", &setup.commands),
        ("builtins", &setup.builtins),
        ("usertracker", &setup.usertracker),
        ("mediatracker", &setup.mediatracker),
        ("analytics", &setup.analytics),
        ("retry", &setup.retry),
    ];
    for (name, body) in tables {
        if let Some(body) = body {
            c.push_str(&format!(
                "\n[plugins.{name}]\nfile = \"libdaz_plugin_{name}.so\"\n[plugins.{name}.config]\n{body}\n"
            ));
        }
    }
    if setup.example {
        c.push_str(
            "\n[plugins.example]\nfile = \"libdaz_plugin_example.so\"\n[plugins.example.config]\ncommand = \"hello\"\n",
        );
    }
    c
}

/// The plugin files a host with `setup` needs, from `dir`.
pub fn plugin_files(dir: &Path, setup: &Setup) -> Vec<(PathBuf, &'static str)> {
    let mut files = Vec::new();
    let mut add = |on: bool, lib: &'static str| {
        if on {
            files.push((dir.join(lib), lib));
        }
    };
    add(setup.storage, "libdaz_plugin_storage.so");
    add(setup.commands.is_some(), "libdaz_plugin_commands.so");
    add(setup.builtins.is_some(), "libdaz_plugin_builtins.so");
    add(setup.usertracker.is_some(), "libdaz_plugin_usertracker.so");
    add(
        setup.mediatracker.is_some(),
        "libdaz_plugin_mediatracker.so",
    );
    add(setup.analytics.is_some(), "libdaz_plugin_analytics.so");
    add(setup.retry.is_some(), "libdaz_plugin_retry.so");
    add(setup.example, "libdaz_plugin_example.so");
    files
}

/// The test plugins, built once per test process (debug).
pub fn test_plugin_dir() -> PathBuf {
    build_plugins(FEATURES)
}

/// A host connected to the simulator.
pub struct Rig {
    pub host: TestHost,
}

impl Rig {
    /// Starts a host with `setup` on `db`, with plugin files from `dir`, and waits until
    /// the bot is logged in and the router lists `commands`.
    pub async fn start(
        sim: &SimHandle,
        db: &TestDb,
        setup: &Setup,
        dir: &Path,
        commands: &[&str],
    ) -> Rig {
        let config = host_config(sim, db, setup);
        let host = TestHost::start(&config, &plugin_files(dir, setup)).await;
        let rig = Rig { host };
        rig.wait_logged_in().await;
        rig.wait_commands(commands).await;
        rig
    }

    /// Starts a host with `setup` plus the feature plugin `plugin` (crate
    /// `daz-plugin-<plugin>`, built with the default set), whose
    /// `[plugins.<plugin>.config]` holds `config` (sub-tables written out in full), and
    /// waits until the bot is logged in and the router lists `commands`.
    pub async fn with_plugin(
        sim: &SimHandle,
        db: &TestDb,
        setup: &Setup,
        plugin: &str,
        config: &str,
        commands: &[&str],
    ) -> Rig {
        let crate_name = format!("daz-plugin-{plugin}");
        let mut crates = FEATURES.to_vec();
        crates.push(&crate_name);
        let dir = build_plugins(&crates);
        let lib = format!("libdaz_plugin_{plugin}.so");
        let mut text = host_config(sim, db, setup);
        text.push_str(&format!(
            "\n[plugins.{plugin}]\nfile = \"{lib}\"\n[plugins.{plugin}.config]\n{config}\n"
        ));
        let mut files: Vec<(PathBuf, &str)> = plugin_files(&dir, setup);
        files.push((dir.join(&lib), &lib));
        let rig = Rig {
            host: TestHost::start(&text, &files).await,
        };
        rig.wait_logged_in().await;
        rig.wait_commands(commands).await;
        rig
    }

    /// Waits until the bot is logged in.
    pub async fn wait_logged_in(&self) {
        let room = self
            .host
            .app
            .room_registry
            .get(ROOM)
            .expect("room configured");
        wait(T, "the bot to log in", || {
            room.conn_state() == ConnState::LoggedIn
        })
        .await;
    }

    /// Waits until the router's registry holds every command in `names`.
    pub async fn wait_commands(&self, names: &[&str]) {
        if names.is_empty() {
            return;
        }
        let start = Instant::now();
        loop {
            let listed: Vec<String> = self
                .request("commands.list", json!({}))
                .ok()
                .and_then(|v| {
                    v["commands"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|c| c["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                })
                .unwrap_or_default();
            if names.iter().all(|n| listed.iter().any(|l| l == n)) {
                return;
            }
            assert!(
                start.elapsed() < T,
                "the router never listed {names:?} (it lists {listed:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request on the bus; `Err` carries an error reply's text.
    pub fn request(&self, subject: &str, payload: Value) -> Result<Value, String> {
        let env = Envelope::builder(subject, serde_json::to_vec(&payload).expect("json"))
            .source("test")
            .build()
            .expect("valid subject");
        let bus = self.host.app.bus.clone();
        let reply = tokio::task::block_in_place(|| bus.request(env, None, Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let body: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
        if reply.is_error {
            Err(body["error"].as_str().unwrap_or_default().to_owned())
        } else {
            Ok(body)
        }
    }

    /// Rows of a query through the storage plugin (`$1`… bound to `params`).
    pub fn sql(&self, sql: &str, params: Value) -> Result<Vec<Vec<Value>>, String> {
        let r = self.request("sql.query", json!({"sql": sql, "params": params}))?;
        Ok(r["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|row| row.as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Waits until a query's rows satisfy `pred`; returns them.
    pub async fn wait_rows(
        &self,
        what: &str,
        sql: &str,
        params: Value,
        mut pred: impl FnMut(&[Vec<Value>]) -> bool,
    ) -> Vec<Vec<Value>> {
        let start = Instant::now();
        loop {
            let rows = self.sql(sql, params.clone());
            if let Ok(rows) = &rows
                && pred(rows)
            {
                return rows.clone();
            }
            assert!(
                start.elapsed() < T,
                "timed out waiting for {what}; last answer: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A user logged in to the room (`pw` `None` for a guest).
pub async fn user(sim: &SimHandle, name: &str, pw: Option<&str>) -> Actor {
    let mut a = sim
        .actor(name)
        .await
        .timeout(T)
        .connect()
        .await
        .expect("actor connects");
    a.join_and_login(ROOM, name, pw)
        .await
        .expect("actor joins and logs in");
    a
}

fn text_of(v: &Value) -> String {
    unescape_chat(v["msg"].as_str().unwrap_or_default())
}

/// Waits for the bot to say a line containing `part` in the channel; returns it.
pub async fn bot_says(actor: &mut Actor, part: &str) -> String {
    let v = actor
        .expect_where("chatMsg", T, |v| {
            v["username"] == BOT && text_of(v).contains(part)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the bot never said {part:?} to {}: {e}; it said {:?}",
                actor.name(),
                bot_lines(actor)
            )
        });
    text_of(&v)
}

/// Waits for the bot to send this actor a PM containing `part`; returns it.
pub async fn bot_pms(actor: &mut Actor, part: &str) -> String {
    let v = actor
        .expect_where("pm", T, |v| {
            v["username"] == BOT && text_of(v).contains(part)
        })
        .await
        .unwrap_or_else(|e| panic!("the bot never PMed {part:?} to {}: {e}", actor.name()));
    text_of(&v)
}

/// Every line the bot said in the channel that this actor received so far.
pub fn bot_lines(actor: &Actor) -> Vec<String> {
    actor
        .received_named("chatMsg")
        .iter()
        .filter(|v| v["username"] == BOT)
        .map(text_of)
        .collect()
}
