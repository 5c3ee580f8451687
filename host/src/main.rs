//! `daz`: run the bot host, or check a plugin file.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    plugins::preflight::{self, PreflightReport},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "daz",
    version,
    about = "A chat-bot host for Cytube channels with hot-swappable plugins"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host (the default).
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "plugins.toml", env = "DAZ_CONFIG")]
        config: PathBuf,
    },
    /// Load a plugin file in a child process and print its metadata or the exact error.
    CheckPlugin {
        /// The plugin library.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The offline demo: a simulated Cytube channel with scripted users, and the bot
    /// with the example plugin answering !hello, hot-swapped while it runs.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// The example plugin's library (default: next to this executable).
        #[arg(long)]
        plugin: Option<PathBuf>,
    },
    /// Validate a configuration file.
    ConfigCheck {
        /// The configuration file.
        #[arg(default_value = "plugins.toml")]
        config: PathBuf,
    },
    /// Internal: the child side of the preflight check.
    #[command(name = "__preflight", hide = true)]
    Preflight { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Preflight { file }) => {
            ExitCode::from(u8::try_from(preflight::run_child(&file)).unwrap_or(2))
        }
        Some(Command::CheckPlugin { file, json }) => check_plugin(&file, json),
        Some(Command::ConfigCheck { config }) => match Config::load(&config) {
            Ok(c) => {
                println!("{}: ok ({} plugins)", config.display(), c.plugins.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Some(Command::Run { config }) => run(cli.json_logs, config),
        Some(Command::Demo { seconds, plugin }) => demo(cli.json_logs, seconds, plugin),
        None => run(
            cli.json_logs,
            std::env::var_os("DAZ_CONFIG")
                .map_or_else(|| PathBuf::from("plugins.toml"), PathBuf::from),
        ),
    }
}

fn check_plugin(file: &std::path::Path, json: bool) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let result = preflight::run(&exe, file, file, std::time::Duration::from_secs(30));
    if json {
        let report = match &result {
            Ok(meta) => PreflightReport::Ok(meta.clone()),
            Err(e) => PreflightReport::Err(e.clone()),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    match result {
        Ok(meta) => {
            if !json {
                println!("plugin:      {}", meta.name);
                println!("version:     {}", meta.version);
                println!("plugin-api:  {}", meta.api_version);
                println!("description: {}", meta.description);
                println!(
                    "commands:    {}",
                    meta.manifest
                        .commands
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if !json {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(json_logs: bool, config_path: PathBuf) -> ExitCode {
    telemetry::init(json_logs);
    let result = (|| -> anyhow::Result<()> {
        let config = Config::load(&config_path)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("daz-rt")
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async {
            let signals = daz_host::shutdown::Signals::install()
                .context("cannot install the signal handlers")?;
            let app = App::start(
                config,
                StartOptions {
                    config_path: Some(config_path.clone()),
                    ..StartOptions::default()
                },
            )
            .await?;
            signals
                .wait(app.plugins.clone(), Some(config_path.clone()))
                .await;
            app.shutdown().await;
            Ok(())
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "daz stopped");
            eprintln!("daz: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn demo(json_logs: bool, seconds: Option<u64>, plugin: Option<PathBuf>) -> ExitCode {
    // The narration is the demo's output; only warnings and errors are logged, unless
    // RUST_LOG asks for more.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded here: the runtime and every other thread start below.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    telemetry::init(json_logs);
    let result = (|| -> anyhow::Result<()> {
        let plugin = match plugin {
            Some(p) => p,
            None => daz_host::cytube::demo::find_example_plugin(&|l| println!("{l}"))?,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("daz-rt")
            .build()
            .context("cannot start the async runtime")?;
        let report = rt.block_on(daz_host::cytube::demo::run(
            daz_host::cytube::demo::DemoOptions {
                plugin,
                duration: seconds.map(std::time::Duration::from_secs),
                out: std::sync::Arc::new(|line: &str| println!("{line}")),
            },
        ))?;
        if report.replies.is_empty() {
            anyhow::bail!("the bot never answered; run with RUST_LOG=info to see why");
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daz demo: {e:#}");
            ExitCode::from(1)
        }
    }
}
