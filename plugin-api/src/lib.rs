//! # daz-plugin-api
//!
//! Everything needed to write a plugin for **daz**, the Cytube bot host: a plugin is a
//! shared library (`.so`) the host loads at run time and hot-swaps when the file changes,
//! without dropping an event or losing the plugin's state.
//!
//! ## Quick start
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! daz-plugin-api = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs` — a plugin that answers `!hello` and counts how often it did, keeping the
//! count across hot reloads:
//!
//! ```
//! use daz_plugin_api::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! pub struct Hello {
//!     host: Host,
//!     greeting: String,
//!     count: u64,
//! }
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     #[serde(default = "default_greeting")]
//!     greeting: String,
//! }
//! fn default_greeting() -> String { "hello".into() }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Counter { count: u64 }
//! impl StateSchema for Counter { const VERSION: u32 = 1; }
//!
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     type Config = Config;
//!     type State = Counter;
//!
//!     fn create(host: Host, config: Config, previous: Option<Counter>) -> Result<Self> {
//!         host.subscribe("cytube.in.*.chatMsg")?;
//!         let count = previous.map_or(0, |s| s.count);
//!         Ok(Hello { host, greeting: config.greeting, count })
//!     }
//!
//!     fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
//!         if event.is_backlog() || event.is_self() {
//!             return Ok(());
//!         }
//!         #[derive(Deserialize)]
//!         struct Chat { username: String, msg: String }
//!         let chat: Chat = event.json()?;
//!         if chat.msg.trim() == "!hello" {
//!             self.count += 1;
//!             let room = event.room().unwrap_or_default();
//!             let line = format!("{}, {} (#{})", self.greeting, chat.username, self.count);
//!             self.host.chat(room, &line)?;
//!         }
//!         Ok(())
//!     }
//!
//!     fn export_state(&mut self) -> Result<Option<Counter>> {
//!         Ok(Some(Counter { count: self.count }))
//!     }
//! }
//!
//! daz_plugin_api::export_plugin!(Hello);
//!
//! // Unit-test it in-process with the `testing` feature, no `.so` needed:
//! use daz_plugin_api::testing::Harness;
//! let mut h = Harness::<Hello>::new(serde_json::json!({"greeting": "hi"})).unwrap();
//! h.chat("lobby", "alice", "!hello").unwrap();
//! assert_eq!(h.chat_replies(), vec!["hi, alice (#1)".to_string()]);
//! h.reload().unwrap(); // export state, create a fresh instance from it
//! h.chat("lobby", "bob", "!hello").unwrap();
//! assert_eq!(h.chat_replies()[1], "hi, bob (#2)");
//! ```
//!
//! Build it with `cargo build --release` and put the `.so` in the host's plugin
//! directory (write it elsewhere, then `mv` it in), with a `[plugins.hello]` table in
//! `plugins.toml`.
//!
//! ## Layout
//!
//! What authors touch:
//! * [`Plugin`] — the trait to implement, with default hooks; [`Manifest`] and
//!   [`CommandSpec`] for declarations; [`ChatExample`] for examples.
//! * [`export_plugin!`] — makes the crate loadable; catches every panic.
//! * [`Host`] — the host's services: publish, send, request/reply, subscribe, timers,
//!   logging, metrics, room state.
//! * [`Event`] / [`Message`] / [`Priority`] — events in, messages out.
//! * [`cytube`] — typed Cytube events ([`cytube::ServerEvent`], [`cytube::ChatMsg`],
//!   [`cytube::User`], …) decoded by [`Event::cytube_event`].
//! * [`StateSchema`] / [`SavedState`] — typed, versioned state hand-off.
//! * [`command_line`] — parsing a chat line as a command (`!name arg "quoted arg"`),
//!   for plugins that read raw chat.
//! * [`routing`] — commands as the command router delivers them (`command.<name>`):
//!   the [`routing::Command`] payload and [`routing::reply`]; what a plugin that
//!   declares commands uses.
//! * [`sql`] — the storage plugin's SQL service: typed parameters, rows as JSON,
//!   per-plugin migrations, state snapshots.
//! * `testing` (feature `testing`) — an in-process harness with a fake host.
//! * [`prelude`] — all of the above in one `use`.
//!
//! What the host is written against: the separate crate `daz-plugin-abi`, the raw,
//! versioned boundary. Authors never see its types, and its version — not this
//! crate's — decides whether a built plugin loads: a plugin built against an older
//! minor of this SDK keeps loading as long as the ABI is the same (see
//! `COMPATIBILITY.md`).
//!
//! ## The rules of the boundary
//!
//! * Events are lent to the plugin for one call; copy what you keep.
//! * What the plugin hands the host is copied before the call returns.
//! * Every entry point catches panics; a panic becomes an error the host counts. A plugin
//!   that keeps panicking is quarantined; one that panics right after a hot reload is
//!   rolled back to the previous version.
//! * A plugin must be built with `panic = "unwind"` (the default); the host refuses
//!   `panic = "abort"` builds.
//! * A plugin that needs async I/O builds its own runtime (it does not see the host's) and
//!   shuts it down, joining its threads, in [`Plugin::shutdown`].

pub mod command_line;
pub mod cytube;
mod error;
mod event;
#[doc(hidden)]
pub mod export;
mod host;
mod plugin;
pub mod prelude;
pub mod routing;
pub mod sql;
mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Message, OwnedEvent, Priority, TAG_BACKLOG, TAG_REPEAT, TAG_SELF};
pub use host::{Host, Level, Published, Reply, TimerId};
pub use plugin::{ChatExample, CommandScope, CommandSpec, Manifest, NoConfig, NoState, Plugin};
pub use state::{SavedState, StateSchema};

/// The command-line parser under its former name: [`command_line`]. Kept so that
/// plugins written against SDK 0.2.0 keep compiling (see `COMPATIBILITY.md`: a renamed
/// public path is a breaking change; the old path stays until the next minor).
#[doc(hidden)]
pub use command_line as command;
/// The router's contract under its former name: [`routing`]. Kept for plugins written
/// against SDK 0.2.0, like [`command`].
#[doc(hidden)]
pub use routing as commands;

/// Items the [`export_plugin!`] macro expands to, and the raw ABI for the host and the
/// SDK's own tests. Not part of the public API: no semver promise covers it.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::{SDK_VERSION, info, root_module};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader,
        RootModuleResult,
    };
    pub use daz_plugin_abi as abi;
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_macro_uses_abi_stables_root_module_symbol() {
        // The literal in `export_plugin!` must be abi_stable's mangled loader name, or the
        // host would find no root module in any plugin.
        assert_eq!(
            daz_plugin_abi::ROOT_MODULE_SYMBOL,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    /// Plugins written against SDK 0.2.0 name the parser `command` and the router's
    /// contract `commands`; both paths still lead to the same items.
    #[test]
    fn the_former_module_paths_still_resolve() {
        use crate::{command, command_line, commands, routing};
        let parsed: command::ParsedCommand =
            command::parse_command("!roll 2", "!", command::CommandLimits::default()).unwrap();
        let same: command_line::ParsedCommand = parsed;
        assert_eq!(same.name, "roll");
        assert_eq!(commands::subject("roll"), routing::subject("roll"));
        let _: fn(&crate::Host, &routing::Command, &str) -> crate::Result<crate::Published> =
            commands::reply;
    }
}
