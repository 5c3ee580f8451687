//! `daz-sim`: runs the Cytube simulator for offline demos, optionally with a
//! script of actors, and prints the base URL a bot connects to.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use daz_cytube_sim::script::{self, Script};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};

/// A Cytube server simulator (Socket.IO 4 over websocket) for offline demos.
#[derive(Debug, Parser)]
#[command(name = "daz-sim", version)]
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

    let sim = Simulator::start(cfg).await?;
    println!("{}", sim.base_url());
    for actor in script.map(|s| s.actors).unwrap_or_default() {
        tokio::spawn(script::run_actor(sim.clone(), actor));
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    sim.shutdown().await;
    Ok(())
}
