//! `daz-sim`: runs the Cytube simulator for offline demos, optionally with a
//! script of actors, prints the base URL a bot connects to, and with `--interactive`
//! lets its user act as channel users from standard input ([`console`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use daz_cytube_sim::console;
use daz_cytube_sim::script::{self, Script};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};

/// What `daz-sim --help` shows after the options: the script format and the console.
const AFTER_HELP: &str = r#"The first line printed is the base URL a bot connects to (site = that URL in a
[[rooms]] table of plugins.toml).

SCRIPTS (--script FILE, .toml or .json; sim/demo/lively.toml is the demo's):
  [[accounts]]                      registered users: name, password, global_rank (1)
  name = "alice"
  password = "alice-pw"

  [[channels]]                      channels that exist up front
  name = "demo"
  registered = true                 ranks and state kept while empty
  ranks = [["alice", 3]]            channel ranks (2 moderator, 3 admin, 4 owner)
  motd = "Welcome!"
  playlist = [{ id = "clip1", type = "fi", title = "Demo clip", seconds = 90 }]

  [[media]]                         what `queue` finds by id and type
  id = "dQw4w9WgXcQ"
  type = "yt"
  title = "Never Gonna Give You Up"
  seconds = 213

  [[actors]]                        scripted users, each its own connection
  name = "alice"
  loop = true                       start over after the last step
  steps = [                         each step waits wait_ms (0), then acts
    { do = "join", channel = "demo" },              # password = "..." for a protected channel
    { do = "login", name = "alice", password = "alice-pw" },   # no password: a guest
    { do = "chat", msg = "hello", wait_ms = 1000 },
    { do = "pm", to = "bot", msg = "psst" },
    { do = "queue", id = "stream1", type = "tw", duration = 60 },   # pos = "next", temp, title
    { do = "emit", event = "voteskip" },            # any event, payload = {...}
    { do = "sleep", ms = 5000 },
    { do = "leave" },
  ]

CONSOLE (--interactive): one command per line on standard input; the channel's chat,
joins, leaves, media and the console users' PMs are printed as they happen.
  join NAME [PASSWORD]        connect NAME, join the channel, log in (guest without a password)
  say NAME TEXT...            NAME says TEXT in the channel
  pm NAME TO TEXT...          NAME sends TEXT to TO as a private message
  queue NAME TYPE ID [TITLE]  NAME queues media (e.g. `queue alice tw lofi`)
  leave NAME                  NAME disconnects
  users                       who is in the channel, with ranks
  help                        this list
  quit                        stop the simulator (so does the end of the input)
The console's channel is --console-channel, else the first --channel, else the script's
first channel, else "demo"."#;

/// A Cytube server simulator (Socket.IO 4 over websocket) for offline demos.
#[derive(Debug, Parser)]
#[command(name = "daz-sim", version, after_help = AFTER_HELP)]
struct Cli {
    /// Script of accounts, channels, media and actors (.toml or .json).
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Registered channel to create up front (repeatable).
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
    /// Account to create, as NAME:PASSWORD (repeatable).
    #[arg(long = "account", value_name = "NAME:PASSWORD")]
    accounts: Vec<String>,
    /// Media playback speed (1.0 = real time).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Engine.IO ping interval in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    ping_interval_ms: u64,
    /// Engine.IO ping timeout in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    ping_timeout_ms: u64,
    /// Act as channel users from standard input (see CONSOLE below).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// The channel the console's users join.
    #[arg(long, value_name = "NAME")]
    console_channel: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();

    let mut cfg = SimConfig {
        bind: SocketAddr::new(cli.host, cli.port),
        time_scale: cli.time_scale,
        ping_interval: Duration::from_millis(cli.ping_interval_ms),
        ping_timeout: Duration::from_millis(cli.ping_timeout_ms),
        ..SimConfig::default()
    };
    for name in &cli.channels {
        cfg.channels.push(ChannelConfig::registered(name.as_str()));
    }
    for spec in &cli.accounts {
        let (name, pw) = spec
            .split_once(':')
            .with_context(|| format!("--account {spec:?} must be NAME:PASSWORD"))?;
        cfg.accounts.push(Account::new(name, pw));
    }
    let script = match &cli.script {
        Some(path) => Some(Script::load(path)?),
        None => None,
    };
    if let Some(s) = &script {
        s.apply(&mut cfg);
    }

    let console_channel = cli
        .console_channel
        .clone()
        .or_else(|| cfg.channels.first().map(|c| c.name.clone()))
        .unwrap_or_else(|| "demo".to_owned());
    let sim = Simulator::start(cfg).await?;
    println!("{}", sim.base_url());
    for actor in script.map(|s| s.actors).unwrap_or_default() {
        tokio::spawn(script::run_actor(sim.clone(), actor));
    }
    if cli.interactive {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        let out: console::Out = std::sync::Arc::new(|line: &str| println!("{line}"));
        tokio::select! {
            () = console::run(sim.clone(), &console_channel, input, out) => {}
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        }
    } else {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    sim.shutdown().await;
    Ok(())
}
