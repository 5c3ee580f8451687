//! A faithful Cytube server simulator: a real Socket.IO 4 server over
//! websocket on a loopback port, enforcing the real server's rules (join and
//! login bursts, ranks and permissions, chat sanitizing, flood limits, playlist
//! and playback, kicks), for the host's tests and the offline demo.
//!
//! Ground truth is `shared/docs/CYTUBE.md` and the captures in
//! `shared/fixtures/cytube/`; the integration tests replay those captures.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig {
//!     accounts: vec![Account::new("bot", "pw")],
//!     channels: vec![ChannelConfig::registered("room")],
//!     ..SimConfig::default()
//! })
//! .await?;
//! let mut alice = sim.actor("alice").await.connect().await?;
//! alice.join_and_login("room", "alice", None).await?;
//! alice.chat("hello")?;
//! alice.expect("chatMsg", std::time::Duration::from_secs(2)).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`SimConfig`], [`Account`], [`ChannelConfig`], [`MediaSpec`].
//! - `server`: the listener (`/socketconfig/<chan>.json`, `/socket.io/`),
//!   [`Simulator`], [`SimHandle`] (inspection, waiting, faults, restart).
//! - `conn`: one websocket: Engine.IO handshake, heartbeats, frame I/O.
//! - `world`: the server's state and rules (channels, sessions, chat, media, admin).
//! - [`actor`]: in-process clients speaking the real protocol.
//! - [`capture`]: the reader of the captured traffic in `shared/fixtures/cytube/`,
//!   for the tests and benches that replay it or check against it.
//! - [`script`]: the demo script format run by the `daz-sim` binary.
//! - [`console`]: `daz-sim --interactive`, acting as users by hand from stdin.
//! - [`snapshot`]: read-only views for assertions.
//! - `json`, `text`, `throttle`: ordered JSON output, the server's text rules
//!   (sanitizing, names, hashes), the per-IP connect budget.
//!
//! Frames are encoded and parsed with `daz_cytube_proto::frame`; the per-user
//! chat/PM and queue limiters are `daz_cytube_proto::flood::RateLimiter`, so
//! the simulator and the host's outbound governor share one model of them.

pub mod actor;
pub mod capture;
pub mod config;
mod conn;
pub mod console;
mod json;
pub mod script;
mod server;
pub mod snapshot;
mod text;
mod throttle;
mod world;

pub use actor::{Actor, ActorBuilder, ActorError, Closed};
pub use config::{Account, ChannelConfig, MediaSpec, ProcessingLag, SimConfig};
pub use server::{SimError, SimHandle, Simulator};
pub use snapshot::{ChannelSnapshot, ItemSnapshot, UserSnapshot};
