//! # daz-soak
//!
//! A long run of the whole host under load and faults, with an exact account of the
//! event log at the end.
//!
//! What runs, in one process: a Cytube simulator with `rooms` registered channels; one
//! chatting user per channel (a moderator, so the server's flood limit does not apply)
//! typing `soak <seq>` lines at `rate / rooms` lines per second, `seq` unique over the
//! run; a real host ([`daz_host::app::App`]) whose bot sits in every channel, with the
//! repository's plugins as `.so` files, the storage plugin logging to a fresh PostgreSQL
//! database, and the `versioned` test fixture for file-driven reloads.
//!
//! Faults, on a schedule:
//! - every `reload_interval` a plugin reload, in turn: the storage plugin (an instance
//!   swap under load, state handed over through its journal), the `versioned` plugin's
//!   file replaced by the other version (the watcher's path), and one of the feature
//!   plugins;
//! - every `drop_interval` one room's connections cut by the simulator (TCP close, no
//!   goodbye; the bot and the chatter both reconnect);
//! - `pg_restarts` times, spread over the run, PostgreSQL stopped for `pg_down` and
//!   started again (the shared cluster with `pg_ctlcluster`, or a private server).
//!
//! Pass criteria (see [`report::Report::passed`]): every event the host published on a
//! logged subject is in `event_log` exactly once, by envelope id, and no row is there
//! that was not published ([`ledger`]); no live chat line logged twice; no mailbox stuck
//! and every mailbox drained at the end; RSS growth within the leaked-library bytes plus
//! what the soak's own ledger holds plus a fixed slack; every reload succeeded; the
//! faults really happened.
//!
//! ## Layout
//!
//! * this file: [`Options`], [`run`] (setup, the schedule, the drain, the check).
//! * [`ledger`]: what was published vs what was logged.
//! * [`report`]: the figures and the summary table.

pub mod ledger;
pub mod report;

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use daz_bus::{Mailbox, MailboxConfig};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, SimHandle, Simulator};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    cytube::ConnState,
    plugins::{ReloadOutcome, Trigger},
};
use daz_testkit::pg::{Cluster, PrivatePg};
use parking_lot::Mutex;
use prometheus::core::Collector;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    ledger::{Ledger, Verdict},
    report::Report,
};

/// The bot's account on the simulator.
const BOT: &str = "soakbot";
const BOT_PW: &str = "soak-bot-pw";
const USER_PW: &str = "soak-user-pw";

/// The events the storage plugin is told to log (its production default set), and the
/// probe's subscriptions: both sides count the same subjects.
pub const LOGGED_EVENTS: &[&str] = daz_plugin_storage::config::DEFAULT_EVENTS;

/// Feature plugins loaded beside storage; explicit reloads rotate over them.
pub const FEATURE_PLUGINS: &[&str] = &[
    "commands",
    "builtins",
    "usertracker",
    "mediatracker",
    "analytics",
    "retry",
    "example",
];

/// Where the event log lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// A PostgreSQL server by URL (a fresh database is created on it for the run and
    /// dropped after); restarts go through `pg_ctlcluster` on the local cluster.
    Server(String),
    /// A private PostgreSQL server started for the run (initdb in a temporary
    /// directory, its own port); restarts stop and start it. Leaves the shared server
    /// alone, so it is what tests use.
    Private,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated rooms (one bot connection each).
    pub rooms: usize,
    /// Target aggregate rate of chat lines, per second, over all rooms.
    pub rate: u32,
    /// How long the load runs.
    pub duration: Duration,
    /// A plugin reload every this often.
    pub reload_interval: Duration,
    /// One room's connections dropped every this often.
    pub drop_interval: Duration,
    /// PostgreSQL restarts, spread evenly over the run.
    pub pg_restarts: u32,
    /// How long PostgreSQL stays down per restart.
    pub pg_down: Duration,
    /// A progress line every this often.
    pub progress_interval: Duration,
    /// The database.
    pub database: Database,
    /// Directory holding the plugin `.so` files; `None` builds them (release when
    /// `release_plugins`).
    pub plugin_dir: Option<PathBuf>,
    /// Build the plugins optimised.
    pub release_plugins: bool,
    /// RSS growth allowed beyond leaked libraries and the ledger, MiB.
    pub rss_slack_mib: u64,
    /// Keep the run's database afterwards (its name is printed).
    pub keep_db: bool,
}

impl Options {
    /// The full profile: 3 rooms, 2 000 events/s, 10 minutes, a reload every 10 s, a
    /// drop every minute, PostgreSQL restarted twice.
    pub fn full() -> Options {
        Options {
            rooms: 3,
            rate: 2000,
            duration: Duration::from_secs(600),
            reload_interval: Duration::from_secs(10),
            drop_interval: Duration::from_secs(60),
            pg_restarts: 2,
            pg_down: Duration::from_secs(3),
            progress_interval: Duration::from_secs(10),
            database: Database::Server(
                std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            ),
            plugin_dir: None,
            release_plugins: true,
            rss_slack_mib: 64,
            keep_db: false,
        }
    }

    /// The CI profile: 45 s at 300 events/s (debug builds), a reload every 5 s, one drop,
    /// one restart of a private PostgreSQL server.
    pub fn ci() -> Options {
        Options {
            rate: 300,
            duration: Duration::from_secs(45),
            reload_interval: Duration::from_secs(5),
            drop_interval: Duration::from_secs(20),
            pg_restarts: 1,
            pg_down: Duration::from_secs(2),
            progress_interval: Duration::from_secs(5),
            database: Database::Private,
            release_plugins: false,
            ..Options::full()
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.rooms == 0 || self.rooms > 20 {
            bail!("--rooms must be between 1 and 20, got {}", self.rooms);
        }
        if self.rate == 0 {
            bail!("--rate must be at least 1 event per second");
        }
        if self.duration < Duration::from_secs(5) {
            bail!("--duration must be at least 5 s");
        }
        for (what, d) in [
            ("--reload-interval", self.reload_interval),
            ("--drop-interval", self.drop_interval),
            ("--progress-interval", self.progress_interval),
        ] {
            if d < Duration::from_secs(1) {
                bail!("{what} must be at least 1 s");
            }
        }
        Ok(())
    }
}

/// Runs the soak and returns its report (check [`Report::passed`]). Progress lines go to
/// `out` while it runs. Errors are setup failures (no database, no simulator); faults
/// during the run are findings in the report.
pub async fn run(opts: Options, out: &mut (dyn Write + Send)) -> anyhow::Result<Report> {
    opts.check()?;
    let started = Instant::now();
    let say = |out: &mut (dyn Write + Send), line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };

    // Plugins.
    let plugin_dir = match &opts.plugin_dir {
        Some(d) => d.clone(),
        None => {
            say(out, "soak: building the plugins".to_owned());
            let release = opts.release_plugins;
            tokio::task::spawn_blocking(move || {
                let extra: Vec<&str> = FEATURE_PLUGINS
                    .iter()
                    .filter(|p| **p != "example")
                    .map(|p| package_of(p))
                    .chain(["daz-plugin-storage"])
                    .collect();
                daz_testkit::build_plugins_profile(&extra, release)
            })
            .await
            .context("building the plugins")?
        }
    };

    // Database.
    let (private_pg, server_url, cluster) = match &opts.database {
        Database::Private => {
            say(out, "soak: starting a private PostgreSQL server".to_owned());
            let pg = tokio::task::spawn_blocking(PrivatePg::try_start).await??;
            let url = pg.url();
            (Some(pg), url, None)
        }
        Database::Server(url) => (None, url.clone(), Some(Cluster::find()?)),
    };
    let db = SoakDb::create(&server_url).await?;
    say(out, format!("soak: event log in database {}", db.name));

    let result = run_with(&opts, &plugin_dir, &db, private_pg.as_ref(), cluster, out).await;
    if opts.keep_db {
        say(out, format!("soak: kept database {}", db.name));
    } else if let Err(e) = db.drop_db().await {
        say(
            out,
            format!("soak: could not drop database {}: {e:#}", db.name),
        );
    }
    drop(private_pg);
    let mut report = result?;
    report.wall = started.elapsed();
    Ok(report)
}

fn package_of(plugin: &str) -> &'static str {
    match plugin {
        "commands" => "daz-plugin-commands",
        "builtins" => "daz-plugin-builtins",
        "usertracker" => "daz-plugin-usertracker",
        "mediatracker" => "daz-plugin-mediatracker",
        "analytics" => "daz-plugin-analytics",
        "retry" => "daz-plugin-retry",
        "storage" => "daz-plugin-storage",
        _ => "daz-plugin-example",
    }
}

/// The run's own database on the server.
struct SoakDb {
    admin_url: String,
    url: String,
    name: String,
}

impl SoakDb {
    async fn create(server_url: &str) -> anyhow::Result<SoakDb> {
        let mut url = url::Url::parse(server_url)
            .with_context(|| "the database URL is not a URL (postgres://user@host:port/db)")?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            bail!("the soak logs to PostgreSQL: the database URL must start with postgres://");
        }
        let name = format!(
            "daz_soak_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        let admin_url = url.to_string();
        exec(&admin_url, &format!("CREATE DATABASE {name}"))
            .await
            .context("creating the soak's database (is PostgreSQL up and DATABASE_URL right?)")?;
        url.set_path(&format!("/{name}"));
        Ok(SoakDb {
            admin_url,
            url: url.to_string(),
            name,
        })
    }

    async fn drop_db(&self) -> anyhow::Result<()> {
        exec(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await
    }
}

async fn exec(url: &str, sql: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    sqlx::raw_sql(sql).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Rows in the event log, or `None` while the database is away.
async fn count_rows(pool: &sqlx::PgPool) -> Option<i64> {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_log").fetch_one(pool),
    )
    .await
    .ok()?
    .ok()
}

/// Resident set size of this process, bytes.
pub fn rss_bytes() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The lowest RSS in the first and in the last quarter of the samples' time span (at
/// least 5 s each).
fn rss_windows(samples: &[(Duration, u64)]) -> (Option<u64>, Option<u64>) {
    let (Some((t0, _)), Some((t1, _))) = (samples.first(), samples.last()) else {
        return (None, None);
    };
    let w = ((*t1 - *t0) / 4).max(Duration::from_secs(5));
    let first = samples
        .iter()
        .filter(|(t, _)| *t <= *t0 + w)
        .map(|(_, r)| *r)
        .min();
    let last = samples
        .iter()
        .filter(|(t, _)| *t + w >= *t1)
        .map(|(_, r)| *r)
        .min();
    (first, last)
}

fn room_name(i: usize) -> String {
    format!("soak{i}")
}

fn chatter_name(i: usize) -> String {
    format!("chatter{i}")
}

fn sim_config(rooms: usize) -> SimConfig {
    let mut accounts = vec![Account::new(BOT, BOT_PW)];
    let mut channels = Vec::new();
    for i in 0..rooms {
        accounts.push(Account::new(chatter_name(i), USER_PW));
        channels.push(ChannelConfig::registered(room_name(i)).rank(chatter_name(i), 2.0));
    }
    SimConfig {
        accounts,
        channels,
        // The bot's rooms all connect from 127.0.0.1.
        connect_burst: 100,
        connect_refill: Duration::from_millis(100),
        max_sockets_per_ip: 100,
        frame_log_cap: 0,
        // One user per room stands for a crowd: the server's per-user floor
        // (10 lines/s) would otherwise cap the rate; the channel's own antiflood does
        // not apply to moderators.
        chat_floor: daz_cytube_proto::flood::FloodParams {
            burst: 1_000_000,
            sustained: 1_000_000.0,
            reset_after: Duration::from_secs(1),
        },
        ..SimConfig::default()
    }
}

fn host_config(opts: &Options, sim: &SimHandle, db: &SoakDb, dir: &Path) -> anyhow::Result<String> {
    let pw = dir.join("bot.pw");
    fs::write(&pw, format!("{BOT_PW}\n"))?;
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600))?;
    let mut c = String::from(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\npreflight = false\n\
         debounce_ms = 50\nstable_interval_ms = 5\nshutdown_timeout_ms = 20000\n\
         create_timeout_ms = 20000\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
    );
    for i in 0..opts.rooms {
        c.push_str(&format!(
            "\n[[rooms]]\nsite = \"{}\"\nchannel = \"{}\"\nusername = \"{BOT}\"\npassword_file = {:?}\n\
             [rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 1000\nconnect_timeout_ms = 5000\n",
            sim.base_url(),
            room_name(i),
            pw.display().to_string(),
        ));
    }
    c.push_str(&format!(
        "\n[plugins.storage]\nfile = \"libdaz_plugin_storage.so\"\nmailbox_capacity = 200000\n\
         [plugins.storage.config]\ndatabase_url = \"{}\"\nprefer_env = false\njournal_dir = {:?}\n",
        db.url,
        dir.join("journal").display().to_string()
    ));
    for e in LOGGED_EVENTS {
        c.push_str(&format!(
            "[[plugins.storage.config.rules]]\nsubject = \"cytube.in.*.{e}\"\n"
        ));
    }
    for p in FEATURE_PLUGINS {
        c.push_str(&format!(
            "\n[plugins.{p}]\nfile = \"libdaz_plugin_{p}.so\"\n"
        ));
    }
    c.push_str("\n[plugins.versioned]\nfile = \"versioned.so\"\n");
    Ok(c)
}

/// Counters shared by the chatters and the scheduler.
#[derive(Default)]
struct Load {
    /// Next sequence number.
    seq: AtomicU64,
    /// Lines handed to the chatters' sockets.
    sent: AtomicU64,
    /// Chatter reconnects.
    chatter_reconnects: AtomicU64,
}

async fn chatter(
    sim: SimHandle,
    room: String,
    name: String,
    per_second: f64,
    load: Arc<Load>,
    stop: CancellationToken,
) {
    let mut owed = 0.0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    'connect: while !stop.is_cancelled() {
        if !first {
            load.chatter_reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let actor = async {
            let mut a = sim.actor(&name).await.connect().await?;
            a.join_and_login(&room, &name, Some(USER_PW)).await?;
            a.set_record(false);
            Ok::<_, daz_cytube_sim::ActorError>(a)
        }
        .await;
        let actor = match actor {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "chatter cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue 'connect,
                }
            }
        };
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if actor.closed().is_some() {
                continue 'connect;
            }
            let now = Instant::now();
            owed += per_second * (now - last).as_secs_f64();
            last = now;
            let n = owed.floor() as u64;
            if n == 0 {
                continue;
            }
            owed -= n as f64;
            let frames: Vec<(String, Option<serde_json::Value>)> = (0..n)
                .map(|_| {
                    let seq = load.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    (
                        "chatMsg".to_owned(),
                        Some(json!({"msg": ledger::line(seq), "meta": {}})),
                    )
                })
                .collect();
            if actor.emit_batch(frames).is_err() {
                continue 'connect;
            }
            load.sent.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The probe: a mailbox on the host's bus with the logged subjects, drained into the
/// ledger by a thread of its own.
struct Probe {
    mailbox: Arc<Mailbox>,
    ledger: Arc<Mutex<Ledger>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(app: &App) -> anyhow::Result<Probe> {
        let mailbox = Mailbox::new("soak-probe", MailboxConfig::new(50_000_000));
        let id = app.bus.register("soak-probe", mailbox.clone())?;
        for e in LOGGED_EVENTS {
            app.bus.subscribe(id, &format!("cytube.in.*.{e}"))?;
        }
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (mb, lg) = (mailbox.clone(), ledger.clone());
        let thread = std::thread::Builder::new()
            .name("soak-probe".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(4096);
                loop {
                    if !mb.wait_nonempty(Duration::from_millis(200)) {
                        if mb.is_closed() {
                            break;
                        }
                        continue;
                    }
                    batch.clear();
                    mb.drain_into(&mut batch, 4096);
                    let mut l = lg.lock();
                    for env in &batch {
                        l.record(env);
                    }
                }
            })?;
        Ok(Probe {
            mailbox,
            ledger,
            thread: Some(thread),
        })
    }

    fn published(&self) -> u64 {
        self.ledger.lock().ids.len() as u64
    }

    fn finish(mut self) -> Ledger {
        // Drain what is left, then stop the thread.
        while !self.mailbox.is_empty() {
            std::thread::yield_now();
        }
        self.mailbox.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.ledger.lock())
    }
}

/// Reload outcomes.
#[derive(Debug, Default)]
struct Reloads {
    ok: u64,
    failed: Vec<String>,
}

async fn reload_once(
    app: &App,
    k: u64,
    plugin_dir: &Path,
    host_plugins: &Path,
) -> Result<(), String> {
    match k % 3 {
        0 | 2 => {
            let name = if k % 3 == 0 {
                "storage".to_owned()
            } else {
                FEATURE_PLUGINS[(k / 3) as usize % FEATURE_PLUGINS.len()].to_owned()
            };
            let plugins = app.plugins.clone();
            let n = name.clone();
            let r = tokio::task::spawn_blocking(move || plugins.reload(&n, Trigger::Explicit))
                .await
                .map_err(|e| format!("reload task: {e}"))?;
            match r {
                Ok(ReloadOutcome::Swapped(_)) => Ok(()),
                Ok(other) => Err(format!("reload of {name}: {other:?}")),
                Err(e) => Err(format!("reload of {name}: {e}")),
            }
        }
        _ => {
            // The versioned fixture's file replaced by the other version; the watcher
            // reloads it.
            let v2 = (k / 3) % 2 == 0;
            let (lib, want) = if v2 {
                ("libdaz_fixture_v2.so", "2.0.0")
            } else {
                ("libdaz_fixture_v1.so", "1.0.0")
            };
            let src = plugin_dir.join(lib);
            let dst = host_plugins.to_owned();
            tokio::task::spawn_blocking(move || daz_testkit::deploy(&src, &dst, "versioned.so"))
                .await
                .map_err(|e| format!("deploy: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let version = app
                    .plugins
                    .status()
                    .into_iter()
                    .find(|s| s.name == "versioned")
                    .and_then(|s| s.slot.and_then(|s| s.version));
                if version.as_deref() == Some(want) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "versioned did not switch to {want} within 20 s after its file changed (serving {version:?})"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

enum PgControl<'a> {
    Private(&'a PrivatePg),
    Cluster(Cluster),
}

impl PgControl<'_> {
    fn stop(&self) -> anyhow::Result<()> {
        match self {
            PgControl::Private(pg) => pg.try_down(),
            PgControl::Cluster(c) => c.ctl("stop"),
        }
    }
    fn start(&self) -> anyhow::Result<()> {
        match self {
            PgControl::Private(pg) => pg.try_up(),
            PgControl::Cluster(c) => c.ctl("start"),
        }
    }
}

fn leaked(app: &App) -> (i64, i64) {
    (
        app.metrics.leaked_libraries.get(),
        app.metrics.leaked_bytes.get(),
    )
}

async fn run_with(
    opts: &Options,
    plugin_dir: &Path,
    db: &SoakDb,
    private_pg: Option<&PrivatePg>,
    cluster: Option<Cluster>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Report> {
    let say = |out: &mut (dyn Write + Send), line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let pg = match (private_pg, cluster) {
        (Some(p), _) => PgControl::Private(p),
        (None, Some(c)) => PgControl::Cluster(c),
        (None, None) => bail!("no way to restart PostgreSQL"),
    };

    let sim = Simulator::start(sim_config(opts.rooms)).await?;
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let host_plugins = dir.path().join("plugins");
    fs::create_dir(&host_plugins)?;
    fs::set_permissions(&host_plugins, fs::Permissions::from_mode(0o755))?;
    for p in FEATURE_PLUGINS.iter().chain(&["storage"]) {
        let lib = format!("libdaz_plugin_{p}.so");
        let src = plugin_dir.join(&lib);
        if !src.is_file() {
            bail!(
                "{} is missing: build the plugins (cargo build --release --workspace) or pass --plugin-dir",
                src.display()
            );
        }
        daz_testkit::deploy(&src, &host_plugins, &lib);
    }
    daz_testkit::deploy(
        &plugin_dir.join("libdaz_fixture_v1.so"),
        &host_plugins,
        "versioned.so",
    );
    let config_path = dir.path().join("plugins.toml");
    fs::write(&config_path, host_config(opts, &sim, db, dir.path())?)?;
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    say(
        out,
        format!("soak: starting the host ({} plugins)", config.plugins.len()),
    );
    let app = App::start(
        config,
        StartOptions {
            config_path: Some(config_path.clone()),
            ..StartOptions::default()
        },
    )
    .await?;
    let probe = Probe::start(&app)?;

    // Every plugin serving, every room logged in.
    let t = Instant::now();
    loop {
        let logged_in = (0..opts.rooms).all(|i| {
            app.room_registry
                .get(&room_name(i))
                .is_some_and(|r| r.conn_state() == ConnState::LoggedIn)
        });
        if logged_in && app.plugins.all_serving() {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let states: Vec<String> = app
                .plugins
                .status()
                .iter()
                .map(|s| format!("{}: {:?}", s.name, s.slot.as_ref().map(|s| &s.state)))
                .collect();
            app.shutdown().await;
            bail!("the host did not get ready within 60 s (plugins: {states:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let load = Arc::new(Load::default());
    let stop = CancellationToken::new();
    let per_room = f64::from(opts.rate) / opts.rooms as f64;
    let mut chatters = Vec::new();
    for i in 0..opts.rooms {
        chatters.push(tokio::spawn(chatter(
            sim.clone(),
            room_name(i),
            chatter_name(i),
            per_room,
            load.clone(),
            stop.clone(),
        )));
    }
    say(
        out,
        format!(
            "soak: load on: {} rooms, {} lines/s, {} s; reload every {} s, drop every {} s, {} PostgreSQL restart(s)",
            opts.rooms,
            opts.rate,
            opts.duration.as_secs(),
            opts.reload_interval.as_secs(),
            opts.drop_interval.as_secs(),
            opts.pg_restarts
        ),
    );

    let count_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&db.url)?;
    let mut report = Report {
        rooms: opts.rooms,
        target_rate: opts.rate,
        duration: opts.duration,
        ..Report::default()
    };
    let connects0: u64 = (0..opts.rooms)
        .filter_map(|i| app.room_registry.get(&room_name(i)))
        .map(|r| r.status.lock().connects)
        .sum();
    let load_start = Instant::now();
    let warmup = (opts.reload_interval * 3).min(opts.duration / 4);
    let mut baseline: Option<(u64, i64, u64)> = None;
    let mut faults_seen_at: Option<Duration> = None;
    // RSS after the baseline, sampled with the load on.
    let mut rss_samples: Vec<(Duration, u64)> = Vec::new();
    report.rss_load_start = rss_bytes();
    let mut reloads = Reloads::default();
    let mut next_reload = opts.reload_interval;
    let mut next_drop = opts.drop_interval;
    let mut next_progress = opts.progress_interval;
    let restart_at: Vec<Duration> = (1..=opts.pg_restarts)
        .map(|i| opts.duration * i / (opts.pg_restarts + 1))
        .collect();
    let mut restarts_done = 0usize;
    let mut reload_k = 0u64;
    let mut drops = 0usize;
    let pg_down_now = Arc::new(AtomicBool::new(false));
    let mut sample = tokio::time::interval(Duration::from_millis(250));
    loop {
        sample.tick().await;
        let el = load_start.elapsed();
        if el >= opts.duration {
            break;
        }
        // Stuck handlers and mailbox depths.
        for s in app.plugins.status() {
            report.max_mailbox_depth = report.max_mailbox_depth.max(s.mailbox_depth);
            if s.stuck && !report.stuck.contains(&s.name) {
                report.stuck.push(s.name.clone());
            }
        }
        let rss = rss_bytes();
        report.rss_peak = report.rss_peak.max(rss);
        if baseline.is_some() {
            rss_samples.push((el, rss));
        }
        // The baseline is taken once every kind of fault has happened (each reload
        // kind, a drop, a PostgreSQL restart) and the warm-up is over: one-time
        // allocations (journal buffers, reconnects, a new plugin runtime) are in it, and
        // what grows after it grows with time.
        let faults_seen = report.reloads_by_kind.iter().all(|n| *n > 0)
            && (drops > 0 || opts.drop_interval >= opts.duration)
            && (restarts_done > 0 || opts.pg_restarts == 0);
        if faults_seen && faults_seen_at.is_none() {
            faults_seen_at = Some(el);
        }
        if baseline.is_none()
            && el >= warmup
            && faults_seen_at.is_some_and(|t| el >= t + Duration::from_secs(2))
        {
            report.baseline_at = el;
            let (_, bytes) = leaked(&app);
            baseline = Some((rss_bytes(), bytes, probe.ledger.lock().heap_bytes()));
        }
        if el >= next_reload {
            next_reload += opts.reload_interval;
            let r = reload_once(&app, reload_k, plugin_dir, &host_plugins).await;
            report.reloads_by_kind[(reload_k % 3) as usize] += 1;
            reload_k += 1;
            match r {
                Ok(()) => reloads.ok += 1,
                Err(e) => {
                    say(out, format!("soak: RELOAD FAILED: {e}"));
                    reloads.failed.push(e);
                }
            }
        }
        if el >= next_drop {
            next_drop += opts.drop_interval;
            let room = room_name(drops % opts.rooms);
            sim.drop_connections(Some(&room));
            drops += 1;
        }
        if restarts_done < restart_at.len() && el >= restart_at[restarts_done] {
            restarts_done += 1;
            say(
                out,
                format!(
                    "soak: [{:>4}s] stopping PostgreSQL for {} ms",
                    el.as_secs(),
                    opts.pg_down.as_millis()
                ),
            );
            pg_down_now.store(true, Ordering::Relaxed);
            let res = tokio::task::block_in_place(|| pg.stop());
            if let Err(e) = res {
                report.pg_errors.push(format!("stop: {e:#}"));
            }
            tokio::time::sleep(opts.pg_down).await;
            let res = tokio::task::block_in_place(|| pg.start());
            match res {
                Ok(()) => report.pg_restarts += 1,
                Err(e) => report.pg_errors.push(format!("start: {e:#}")),
            }
            pg_down_now.store(false, Ordering::Relaxed);
        }
        if el >= next_progress {
            next_progress += opts.progress_interval;
            let sent = load.sent.load(Ordering::Relaxed);
            let published = probe.published();
            let logged = count_rows(&count_pool)
                .await
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            say(
                out,
                format!(
                    "soak: [{:>4}s/{}s] sent {sent} ({:.0}/s)  published {published}  logged {logged}  rss {} MiB  reloads {}/{}  drops {drops}  pg restarts {restarts_done}",
                    el.as_secs(),
                    opts.duration.as_secs(),
                    sent as f64 / el.as_secs_f64(),
                    rss_bytes() >> 20,
                    reloads.ok,
                    reloads.ok + reloads.failed.len() as u64,
                ),
            );
        }
    }

    // Load off; let everything drain.
    stop.cancel();
    for c in chatters {
        let _ = c.await;
    }
    report.load_seconds = load_start.elapsed().as_secs_f64();
    report.sent = load.sent.load(Ordering::Relaxed);
    report.chatter_reconnects = load.chatter_reconnects.load(Ordering::Relaxed);
    report.drops = drops as u64;
    report.bot_reconnects = (0..opts.rooms)
        .filter_map(|i| app.room_registry.get(&room_name(i)))
        .map(|r| r.status.lock().connects)
        .sum::<u64>()
        .saturating_sub(connects0);
    say(
        out,
        "soak: load off; waiting for the host to drain".to_owned(),
    );
    let t = Instant::now();
    let mut last = (u64::MAX, -1i64);
    let mut stable_since = Instant::now();
    loop {
        let published = probe.published();
        let logged = count_rows(&count_pool).await.unwrap_or(-1);
        let depth: usize = app.plugins.status().iter().map(|s| s.mailbox_depth).sum();
        if (published, logged) != last {
            last = (published, logged);
            stable_since = Instant::now();
        }
        if depth == 0 && logged >= 0 && logged as u64 >= published {
            break;
        }
        if stable_since.elapsed() > Duration::from_secs(30)
            || t.elapsed() > Duration::from_secs(180)
        {
            report.not_drained = app
                .plugins
                .status()
                .iter()
                .filter(|s| s.mailbox_depth > 0)
                .map(|s| format!("{} ({} queued)", s.name, s.mailbox_depth))
                .collect();
            if report.not_drained.is_empty() {
                report.not_drained.push(format!(
                    "event log stalled at {logged} rows for {published} published"
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in app.plugins.status() {
        if s.stuck && !report.stuck.contains(&s.name) {
            report.stuck.push(s.name.clone());
        }
    }
    let ledger_end = probe.ledger.lock().heap_bytes();
    let rss_end = rss_bytes();
    report.rss_after_drain = rss_end;
    let (libs_end, bytes_end) = leaked(&app);
    let (rss0, bytes0, ledger0) = baseline.unwrap_or((rss_end, bytes_end, ledger_end));
    // Growth is the rise of the RSS floor: the lowest sample in the first quarter after
    // the baseline against the lowest in the last quarter. Transient peaks (a large
    // query result, a journal replay) come and go; a leak raises the floor.
    let (first, last) = rss_windows(&rss_samples);
    report.rss_start = first.unwrap_or(rss0);
    report.rss_end = last.unwrap_or(rss_end);
    report.leaked_libraries = libs_end;
    report.leaked_bytes = bytes_end;
    report.leaked_bytes_during = (bytes_end - bytes0).max(0) as u64;
    report.ledger_bytes = ledger_end.saturating_sub(ledger0);
    report.rss_slack = opts.rss_slack_mib << 20;
    report.reloads_ok = reloads.ok;
    report.reload_failures = reloads.failed;
    report.dropped_by_bus = app
        .metrics
        .bus_dropped
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum();
    count_pool.close().await;

    say(out, "soak: stopping the host".to_owned());
    app.shutdown().await;
    let ledger = probe.finish();
    sim.shutdown().await;
    report.by_event = ledger.by_event.clone();
    report.lines_live = ledger.live.nonzero();
    report.lines_backlog_only = (1..=ledger.live.len().max(ledger.backlog.len()))
        .filter(|s| ledger.live.get(*s) == 0 && ledger.backlog.get(*s) > 0)
        .count() as u64;
    report.lines_never_received = (1..=report.sent)
        .filter(|s| ledger.live.get(*s) == 0 && ledger.backlog.get(*s) == 0)
        .count() as u64;
    say(out, "soak: reading the event log back".to_owned());
    let log = ledger::read_log(&db.url).await?;
    report.verdict = Verdict::compare(&ledger, &log);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_windows_take_the_floor_of_each_quarter() {
        let s = |t: u64, r: u64| (Duration::from_secs(t), r);
        // A spike in the first quarter and one in the last do not count; the floors do.
        let samples = [
            s(0, 100),
            s(2, 300),
            s(4, 110),
            s(10, 120),
            s(16, 130),
            s(18, 500),
            s(20, 140),
        ];
        assert_eq!(rss_windows(&samples), (Some(100), Some(130)));
        assert_eq!(rss_windows(&[]), (None, None));
    }
}
