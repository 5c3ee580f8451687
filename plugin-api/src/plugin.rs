//! The [`Plugin`] trait authors implement, and the declarations a plugin makes about
//! itself ([`Manifest`]).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Event, Host, Result, state::StateSchema};

/// A daz plugin.
///
/// Implement it for your type and export it with [`crate::export_plugin!`]. The host
/// calls every method from the plugin's own worker thread, one at a time; a method may
/// block (the rest of the host keeps running) but should not block for long — the host
/// reports a handler that runs past its deadline as stuck.
///
/// Panics are caught inside the plugin and reported to the host as errors; a plugin
/// that keeps panicking is quarantined.
pub trait Plugin: Sized + Send + 'static {
    /// The plugin's name: its `[plugins.<name>]` table in `plugins.toml` and the name
    /// other plugins use to send to it. Lowercase letters, digits, `-` and `_`.
    const NAME: &'static str;

    /// One line describing the plugin.
    const DESCRIPTION: &'static str = "";

    /// The plugins this one needs running before it starts (their `[plugins.<name>]`
    /// table names, e.g. `&["storage"]` for a plugin that sends `sql.*` requests from
    /// `create`). The host starts plugins in dependency order and stops them in reverse
    /// order; a cycle or a missing required plugin is reported as a load error. Goes
    /// into the [`Manifest`] as `requires`.
    const REQUIRES: &'static [&'static str] = &[];

    /// The plugin's configuration: the `config` table of its `[plugins.<name>]` entry,
    /// decoded with serde. Use [`NoConfig`] if it takes none. Decoding errors are
    /// reported to the operator and the plugin is not started.
    type Config: DeserializeOwned;

    /// The state handed from one version to the next on a **hot reload**. Use [`NoState`]
    /// if there is none.
    ///
    /// It is not kept across a restart of the host: after a restart `create` gets
    /// `None`. A plugin whose state must outlive restarts saves it itself through the
    /// storage plugin — [`crate::sql::save_state`] (e.g. from [`Plugin::shutdown`], or
    /// after each change) and [`crate::sql::load_state`] in `create` — with
    /// `REQUIRES = &["storage"]` so that storage is running by then.
    type State: StateSchema;

    /// Creates an instance. `previous` is the state exported by the version being
    /// replaced, already migrated to [`Plugin::State`]. Subscribe to subjects here.
    ///
    /// **Load order and what `create` may call.** At start the host creates plugins one
    /// at a time in dependency order ([`Plugin::REQUIRES`]; otherwise in the order of
    /// `plugins.toml`); each starts receiving events as soon as its `create` returns.
    /// From `create` a plugin may subscribe, publish, set timers, log, record metrics and
    /// read room state (rooms may not be connected yet: expect an empty room). Requests
    /// (`Host::request`, the [`crate::sql`] helpers) reach only plugins already running:
    /// a plugin that uses SQL in `create` (migrations, loading its data) declares
    /// `REQUIRES = &["storage"]`, so storage has been created and answers `sql.*` by the
    /// time this `create` runs. Without it, a request from `create` can fail with "no
    /// responder"; then do the work later instead, from a one-shot timer
    /// ([`Host::timer_once`]) whose event retries until it succeeds. `create` runs under a
    /// deadline: keep it short.
    fn create(host: Host, config: Self::Config, previous: Option<Self::State>) -> Result<Self>;

    /// Declarations the host reads without creating an instance (commands, …).
    fn manifest() -> Manifest {
        Manifest::default()
    }

    /// Chat examples (a line in, what the plugin answers) that
    /// `testing::Harness::check_chat_examples` (feature `testing`) checks, that `daz dev`
    /// runs against the live plugin after every rebuild (they travel in the [`Manifest`]),
    /// and that serve as documentation. `daz dev` keeps the plugin's state across its hot
    /// swaps, so an expectation there should not depend on how often it ran before.
    fn examples() -> Vec<ChatExample> {
        Vec::new()
    }

    /// Handles one event. An `Err` is counted and logged; for a request the host
    /// answers the requester with the error if the plugin has not replied.
    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        let _ = event;
        Ok(())
    }

    /// Exports the state for the next version. `None` means nothing to hand over.
    fn export_state(&mut self) -> Result<Option<Self::State>> {
        Ok(None)
    }

    /// Stops the instance: release resources, join threads the plugin started.
    fn shutdown(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Configuration type for plugins that take none (accepts and ignores any table).
pub type NoConfig = serde::de::IgnoredAny;

/// State type for plugins that hand nothing over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoState;

impl StateSchema for NoState {
    const VERSION: u32 = 0;
}

/// Where a command may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandScope {
    /// In channel chat only.
    Chat,
    /// In private messages only.
    Pm,
    /// Both.
    #[default]
    Both,
}

/// A chat command a plugin declares; the command router builds its registry from these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandSpec {
    /// The command name, without the prefix (`help` for `!help`).
    pub name: String,
    /// Other names that invoke it.
    pub aliases: Vec<String>,
    /// One line for `!help`.
    pub description: String,
    /// Usage text (`<user>`).
    pub usage: String,
    /// The minimum Cytube rank (0 guest, 1 registered, 2 moderator, 3 admin…).
    pub min_rank: f64,
    /// Per-user cooldown in milliseconds.
    pub user_cooldown_ms: u64,
    /// Channel-wide cooldown in milliseconds.
    pub global_cooldown_ms: u64,
    /// Chat, PM or both.
    pub scope: CommandScope,
}

impl Default for CommandSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            aliases: Vec::new(),
            description: String::new(),
            usage: String::new(),
            min_rank: 0.0,
            user_cooldown_ms: 0,
            global_cooldown_ms: 0,
            scope: CommandScope::Both,
        }
    }
}

impl CommandSpec {
    /// A command open to everybody, in chat and PM.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            ..Self::default()
        }
    }
}

/// What a plugin declares about itself, read by the host at load time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// Chat commands this plugin answers.
    pub commands: Vec<CommandSpec>,
    /// Plugins that must be running before this one starts (see [`Plugin::REQUIRES`]).
    /// Missing in manifests of plugins built before it existed: read as empty.
    pub requires: Vec<String>,
    /// The version of daz-plugin-api the plugin was built with. Filled in by
    /// [`crate::export_plugin!`] (whatever `manifest()` returns); the host shows it
    /// (`daz check-plugin`, the admin API) but never refuses a plugin for it: only the ABI
    /// version decides (see `COMPATIBILITY.md`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sdk_version: String,
    /// The plugin's chat examples ([`Plugin::examples`]). Filled in by
    /// [`crate::export_plugin!`] so that the host can run them against the live plugin
    /// (`daz dev` does after every rebuild); empty in manifests of plugins built before
    /// it existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<ChatExample>,
}

impl Manifest {
    /// Adds a command.
    pub fn command(mut self, spec: CommandSpec) -> Self {
        self.commands.push(spec);
        self
    }

    /// Adds a plugin this one requires (see [`Plugin::REQUIRES`]).
    pub fn requires(mut self, plugin: impl Into<String>) -> Self {
        let plugin = plugin.into();
        if !self.requires.contains(&plugin) {
            self.requires.push(plugin);
        }
        self
    }
}

/// A chat line a user types and what the plugin should answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatExample {
    /// Who types it.
    pub user: String,
    /// What they type.
    pub chat: String,
    /// A text the reply must contain; `None` means the plugin must stay silent.
    pub expect: Option<String>,
}

impl ChatExample {
    /// `alice` types `chat` and the plugin answers with a line containing `expect`.
    pub fn new(chat: impl Into<String>, expect: impl Into<String>) -> Self {
        Self {
            user: "alice".to_owned(),
            chat: chat.into(),
            expect: Some(expect.into()),
        }
    }

    /// `alice` types `chat` and the plugin says nothing.
    pub fn silent(chat: impl Into<String>) -> Self {
        Self {
            user: "alice".to_owned(),
            chat: chat.into(),
            expect: None,
        }
    }

    /// Another user types it.
    pub fn by(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }
}
