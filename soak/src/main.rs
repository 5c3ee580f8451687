//! `daz-soak`: runs the soak (see the crate docs) and prints progress, then the summary
//! table. Exit code 0 when it passed, 1 when it failed, 2 when it could not run.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use daz_soak::{Database, Options};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Profile {
    /// 3 rooms, 2 000 lines/s, 10 minutes, a reload every 10 s, a drop every minute,
    /// PostgreSQL restarted twice.
    Full,
    /// 45 s at 300 lines/s, a reload every 5 s, one drop, one restart of a private
    /// PostgreSQL server.
    Ci,
}

/// Soak the host: simulated rooms at a target event rate, plugin reloads, PostgreSQL
/// restarts and dropped connections; then check the event log by envelope id.
#[derive(Debug, Parser)]
#[command(name = "daz-soak", version)]
struct Cli {
    /// Preset the flags below override.
    #[arg(long, value_enum, default_value = "full")]
    profile: Profile,
    /// Simulated rooms.
    #[arg(long)]
    rooms: Option<usize>,
    /// Target chat lines per second over all rooms.
    #[arg(long)]
    rate: Option<u32>,
    /// Load duration, seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds between plugin reloads.
    #[arg(long)]
    reload_interval: Option<u64>,
    /// Seconds between dropped connections.
    #[arg(long)]
    drop_interval: Option<u64>,
    /// PostgreSQL restarts over the run.
    #[arg(long)]
    pg_restarts: Option<u32>,
    /// Milliseconds PostgreSQL stays down per restart.
    #[arg(long)]
    pg_down_ms: Option<u64>,
    /// Seconds between progress lines.
    #[arg(long)]
    progress_interval: Option<u64>,
    /// PostgreSQL server for the event log (a fresh database is created on it); its
    /// local cluster is restarted with pg_ctlcluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Use a private PostgreSQL server started for the run instead (leaves the shared
    /// one alone).
    #[arg(long)]
    private_pg: bool,
    /// Directory with the plugin .so files (default: build them).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// RSS growth allowed beyond leaked libraries and the ledger, MiB.
    #[arg(long)]
    rss_slack_mib: Option<u64>,
    /// Keep the run's database.
    #[arg(long)]
    keep_db: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(daz_host::telemetry::filter("warn"))
        .with_writer(std::io::stderr)
        .finish()
        .with(daz_host::telemetry::cap())
        .init();
    let mut o = match cli.profile {
        Profile::Full => Options::full(),
        Profile::Ci => Options::ci(),
    };
    let secs = Duration::from_secs;
    if let Some(v) = cli.rooms {
        o.rooms = v;
    }
    if let Some(v) = cli.rate {
        o.rate = v;
    }
    if let Some(v) = cli.duration {
        o.duration = secs(v);
    }
    if let Some(v) = cli.reload_interval {
        o.reload_interval = secs(v);
    }
    if let Some(v) = cli.drop_interval {
        o.drop_interval = secs(v);
    }
    if let Some(v) = cli.pg_restarts {
        o.pg_restarts = v;
    }
    if let Some(v) = cli.pg_down_ms {
        o.pg_down = Duration::from_millis(v);
    }
    if let Some(v) = cli.progress_interval {
        o.progress_interval = secs(v);
    }
    if let Some(v) = cli.rss_slack_mib {
        o.rss_slack_mib = v;
    }
    if cli.private_pg {
        o.database = Database::Private;
    } else if let Some(url) = cli.database_url.filter(|u| !u.is_empty()) {
        o.database = Database::Server(url);
    }
    o.plugin_dir = cli.plugin_dir;
    o.release_plugins = !cfg!(debug_assertions);
    o.keep_db = cli.keep_db;

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daz-soak: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    match rt.block_on(daz_soak::run(o, &mut out)) {
        Ok(report) => {
            println!("\n{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("daz-soak: could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}
