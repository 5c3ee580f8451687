//! `daz`: run the bot host, talk to a running one through its admin API, or check a
//! plugin or configuration file.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use daz_host::{
    app::{App, StartOptions},
    cli::{self, ClientArgs, Exit, PluginsCommand, RetryCommand},
    config::Config,
    plugins::preflight::{self, PreflightReport},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "daz",
    version,
    about = "A chat-bot host for Cytube channels with hot-swappable plugins",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host (the default) with --config (default plugins.toml).
    Run,
    /// List plugins, or reload / enable / disable / roll back one (default: list).
    Plugins {
        #[command(subcommand)]
        command: Option<PluginsCommand>,
    },
    /// Every room's connection state, or one room's state in detail.
    Rooms {
        /// The room (its bus name).
        room: Option<String>,
    },
    /// Say something in a room (through the room's outbound governor).
    Say {
        /// The room.
        room: String,
        /// The message (several words are joined with spaces).
        #[arg(required = true, num_args = 1..)]
        message: Vec<String>,
        /// Send it as a private message to this user instead.
        #[arg(long)]
        pm: Option<String>,
    },
    /// Recent bus events, optionally filtered by subject, and with --follow the live
    /// stream.
    Events {
        /// Subject pattern, like cytube.in.*.chatMsg or host.>.
        #[arg(long)]
        subject: Option<String>,
        /// How many recent events to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing events as they happen (until Ctrl-C).
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a new one-time login URL for the status page (each works once).
    LoginUrl,
    /// The retry plugin's dead letters: list them or replay one.
    Retry {
        #[command(subcommand)]
        command: RetryCommand,
    },
    /// Load a plugin file in a child process and print its metadata or the exact error;
    /// with --config FILE (a plugins.toml, or a TOML file holding just the plugin's config
    /// table) also start the plugin once with that configuration and stop it.
    CheckPlugin {
        /// The plugin library.
        file: PathBuf,
    },
    /// Configuration file commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Validate a configuration file (same as `config check`).
    #[command(name = "config-check", hide = true)]
    ConfigCheck {
        /// The configuration file (default: --config, then plugins.toml).
        file: Option<PathBuf>,
    },
    /// The offline demo: a simulated Cytube channel with scripted users, and the bot with
    /// every plugin of the repository answering them, one plugin hot-swapped while it
    /// runs; prints the status page's URL.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// The directory holding the demo's plugin libraries (default: next to this
        /// executable, built there on the first run from the source tree).
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
    },
    /// The plugin author's loop: build the plugin crate at PATH (default: here), run it
    /// in a simulated channel beside the command router and storage, chat with it from
    /// the keyboard, and rebuild + hot-swap it and re-run its chat examples on every save.
    #[cfg(feature = "demo")]
    Dev {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The directory holding the router's, the built-ins' and storage's libraries
        /// (default: next to this executable, built there on the first run from the
        /// source tree).
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
    },
    /// Create a plugin crate that builds outside this repository: Cargo.toml, the example
    /// plugin as src/lib.rs, a harness test with chat examples, a README.
    NewPlugin {
        /// The plugin's name (lowercase letters, digits, '-', '_').
        name: String,
        /// The directory to create (default: ./NAME).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Take the SDK from this checkout's plugin-api/ directory (default: the source
        /// tree this daz was built from).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// Take the SDK from this git repository (the daz workspace) instead.
        #[arg(long)]
        sdk_git: Option<String>,
        /// With --sdk-git: the branch, tag or commit.
        #[arg(long, requires = "sdk_git")]
        sdk_rev: Option<String>,
    },
    /// Internal: the child side of `check-plugin --config`.
    #[command(name = "__trial-create", hide = true)]
    TrialCreate { file: PathBuf, config: PathBuf },
    /// Internal: the child side of the preflight check.
    #[command(name = "__preflight", hide = true)]
    Preflight { file: PathBuf },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: syntax, keys, values, and the admin token the
    /// host would use (exit 0 valid, 2 invalid).
    Check {
        /// The configuration file (default: --config, then plugins.toml).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = || {
        cli.client
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("plugins.toml"))
    };
    let client = |command| cli::run(&cli.client, command);
    match cli.command {
        Some(Command::Preflight { ref file }) => {
            ExitCode::from(u8::try_from(preflight::run_child(file)).unwrap_or(2))
        }
        // With --config (a plugins.toml, or a file holding just the plugin's config table)
        // the plugin is also started once with that configuration and stopped.
        Some(Command::CheckPlugin { ref file }) => {
            check_plugin(file, cli.client.config.as_deref(), cli.client.json)
        }
        Some(Command::TrialCreate {
            ref file,
            ref config,
        }) => {
            let report = match std::fs::read_to_string(config) {
                Ok(json) => daz_host::sdk::trial::run_child(file, &json),
                Err(e) => daz_host::sdk::trial::TrialReport::Load(format!(
                    "cannot read {}: {e}",
                    config.display()
                )),
            };
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some(Command::NewPlugin {
            ref name,
            ref path,
            ref sdk_path,
            ref sdk_git,
            ref sdk_rev,
        }) => new_plugin(daz_host::sdk::scaffold::NewPlugin {
            name: name.clone(),
            path: path.clone(),
            sdk: match (sdk_path, sdk_git) {
                (Some(p), _) => Some(daz_host::sdk::scaffold::SdkSource::Path(p.clone())),
                (None, Some(url)) => Some(daz_host::sdk::scaffold::SdkSource::Git {
                    url: url.clone(),
                    rev: sdk_rev.clone(),
                }),
                (None, None) => None,
            },
        }),
        Some(
            Command::Config {
                command: ConfigCommand::Check { ref file },
            }
            | Command::ConfigCheck { ref file },
        ) => config_check(&file.clone().unwrap_or_else(config_path)),
        Some(Command::Plugins { ref command }) => client(cli::Command::Plugins(command.clone())),
        Some(Command::Rooms { ref room }) => client(cli::Command::Rooms(room.clone())),
        Some(Command::Say {
            ref room,
            ref message,
            ref pm,
        }) => client(cli::Command::Say {
            room: room.clone(),
            message: message.clone(),
            pm: pm.clone(),
        }),
        Some(Command::Events {
            ref subject,
            limit,
            follow,
        }) => client(cli::Command::Events {
            subject: subject.clone(),
            limit,
            follow,
        }),
        Some(Command::Retry { ref command }) => client(cli::Command::Retry(command.clone())),
        Some(Command::LoginUrl) => client(cli::Command::LoginUrl),
        #[cfg(feature = "demo")]
        Some(Command::Demo {
            seconds,
            ref plugin_dir,
        }) => demo(cli.json_logs, seconds, plugin_dir.clone()),
        #[cfg(feature = "demo")]
        Some(Command::Dev {
            ref path,
            ref plugin_dir,
        }) => dev(cli.json_logs, path.clone(), plugin_dir.clone()),
        Some(Command::Run) | None => run(cli.json_logs, config_path()),
    }
}

fn new_plugin(req: daz_host::sdk::scaffold::NewPlugin) -> ExitCode {
    match daz_host::sdk::scaffold::create(&req) {
        Ok(created) => {
            let dir = created.dir.display();
            println!("created plugin {} in {dir}", req.name);
            println!("next:");
            println!("  cd {dir}");
            println!("  cargo test        # the harness: chat examples, reload, config");
            println!("  daz dev           # a simulated channel with the plugin; type to chat");
            println!(
                "  cargo build --release && daz check-plugin {}",
                created.release_lib.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            Exit::Usage.into()
        }
    }
}

fn config_check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage.into();
        }
    };
    let api = if config.http.enabled {
        use daz_host::http::auth::TokenSetting;
        match daz_host::http::auth::resolve(&config.http, &config.host.runtime_dir, |n| {
            std::env::var(n).ok()
        }) {
            Ok(TokenSetting::Configured(_)) => {
                format!("admin API on {} with a token", config.http.listen)
            }
            Ok(TokenSetting::Generated(path)) => format!(
                "admin API on {} with the token generated in {}",
                config.http.listen,
                path.display()
            ),
            Ok(TokenSetting::Open) => format!(
                "admin API on {} without a token (open = true: open to local users)",
                config.http.listen
            ),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return Exit::Usage.into();
            }
        }
    } else {
        "HTTP disabled".to_owned()
    };
    // Valid, but the host would not work as configured: say so (a variable may be set
    // only where the service runs, so these are warnings, not errors).
    let warnings = config.missing_references(|n| std::env::var(n).ok());
    for w in &warnings {
        eprintln!("{}: warning: {w}", path.display());
    }
    let verdict = match warnings.len() {
        0 => "ok".to_owned(),
        1 => "valid, with 1 warning".to_owned(),
        n => format!("valid, with {n} warnings"),
    };
    println!(
        "{}: {verdict} ({} plugins, {} rooms; {api})",
        path.display(),
        config.plugins.len(),
        config.rooms.len()
    );
    ExitCode::SUCCESS
}

fn check_plugin(
    file: &std::path::Path,
    plugin_config: Option<&std::path::Path>,
    json: bool,
) -> ExitCode {
    // The configuration is read first: a typo in it is the operator's to fix before
    // anything is loaded.
    let config = match plugin_config.map(daz_host::sdk::trial::read_toml) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("{e:#}");
            return Exit::Usage.into();
        }
    };
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
                println!("plugin ABI:  {}", meta.api_version);
                if !meta.manifest.sdk_version.is_empty() {
                    println!("SDK:         daz-plugin-api {}", meta.manifest.sdk_version);
                }
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
            let Some(config) = config else {
                return ExitCode::SUCCESS;
            };
            let config = match daz_host::sdk::trial::plugin_table(config, &meta.name) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e:#}");
                    return Exit::Usage.into();
                }
            };
            match daz_host::sdk::trial::run(&exe, file, &config) {
                daz_host::sdk::trial::TrialReport::Started => {
                    if !json {
                        println!("start:       ok (create and shutdown with the given config)");
                    }
                    ExitCode::SUCCESS
                }
                failed => {
                    eprintln!("plugin {}: {failed}", meta.name);
                    ExitCode::from(1)
                }
            }
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
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration; daz did not start");
            eprintln!("daz: {e}");
            return Exit::Usage.into();
        }
    };
    if config.http.enabled
        && let Err(e) = daz_host::http::auth::resolve(&config.http, &config.host.runtime_dir, |n| {
            std::env::var(n).ok()
        })
    {
        tracing::error!(error = %e, "invalid configuration; daz did not start");
        eprintln!("daz: {}: {e}", config_path.display());
        return Exit::Usage.into();
    }
    let result = (|| -> anyhow::Result<()> {
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

#[cfg(feature = "demo")]
fn demo(json_logs: bool, seconds: Option<u64>, plugin_dir: Option<PathBuf>) -> ExitCode {
    use daz_host::demo::{self, DemoOptions, files, plan::Plan};
    // The narration is the demo's output; only warnings and errors are logged, unless
    // RUST_LOG asks for more.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded here: the runtime and every other thread start below.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    telemetry::init(json_logs);
    let result = (|| -> anyhow::Result<()> {
        let plan = Plan::shipped()?;
        let plugin_dir = files::plugin_dir(&plan, plugin_dir, &|l| println!("{l}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("daz-rt")
            .build()
            .context("cannot start the async runtime")?;
        let report = rt.block_on(demo::run(DemoOptions {
            plan,
            plugin_dir,
            duration: seconds.map(std::time::Duration::from_secs),
            out: std::sync::Arc::new(|line: &str| println!("{line}")),
        }))?;
        let failed: Vec<&str> = report.failed().map(|s| s.label.as_str()).collect();
        if !report.bot_joined {
            anyhow::bail!("the bot never got into the channel; run with RUST_LOG=info to see why");
        }
        if !failed.is_empty() {
            anyhow::bail!(
                "the bot did not answer {}; run with RUST_LOG=info to see why",
                failed.join(", ")
            );
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

#[cfg(feature = "demo")]
fn dev(json_logs: bool, path: PathBuf, plugin_dir: Option<PathBuf>) -> ExitCode {
    use tokio::io::BufReader;
    // The channel and the build are the output; only warnings and errors are logged
    // (a refused swap, a plugin's own warnings), unless RUST_LOG asks for more.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded here: the runtime and every other thread start below.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    telemetry::init(json_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("daz-rt")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daz dev: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        // Installed before anything starts, so that Ctrl-C at any point ends the loop
        // through its shutdown instead of killing the process (and leaving the private
        // directory behind).
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot install the Ctrl-C handler")?;
        daz_host::sdk::dev::run(daz_host::sdk::dev::DevOptions {
            crate_dir: path,
            plugin_dir,
            input: Box::new(BufReader::new(tokio::io::stdin())),
            out: std::sync::Arc::new(|line: &str| println!("{line}")),
            stop: Box::pin(async move {
                interrupt.recv().await;
            }),
        })
        .await
    });
    // Standard input is read on a blocking thread that stays in read(2) until a line or
    // its end arrives; do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daz dev: {e:#}");
            ExitCode::from(1)
        }
    }
}
