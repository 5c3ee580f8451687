//! The stage both `daz demo` and `daz dev` play on: the Cytube simulator on a loopback
//! port, a private directory (plugin copies, the bot's password, the admin token, the
//! SQLite database), and a host started from the `plugins.toml` written there with one
//! room on the simulator. [`Narrator`] follows the room on the bus and hands back what
//! the bot says.
//!
//! What differs between the two commands stays with them: the demo's scripted users and
//! guide, the dev loop's builds and swaps.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use daz_bus::{Mailbox, MailboxConfig, SubscriberId};
use daz_cytube_sim::{SimConfig, SimHandle, Simulator, script::Script};
use rand::Rng;
use tokio::sync::mpsc::UnboundedReceiver;
use toml::Table;

use super::{
    narrate::{self, Answer},
    plan::{DemoPlugin, Plan},
};
use crate::{
    app::{App, StartOptions},
    config::Config,
    cytube::ConnState,
};

/// The room (and simulated channel) the stage's host sits in.
pub const ROOM: &str = "demo";

/// A running stage. Stop it with [`Stage::shutdown`]; dropping it removes the private
/// directory (the host and simulator stop with the runtime).
pub struct Stage {
    /// The simulator.
    pub sim: SimHandle,
    /// The host.
    pub app: App,
    /// The private directory, removed when the stage is dropped.
    pub dir: tempfile::TempDir,
    /// `plugins.toml` in it.
    pub config_path: PathBuf,
}

/// The stage's private directory, with every plugin of the plan copied into
/// `plugins/` from `source(plugin)`.
fn prepare_dir(
    plan: &Plan,
    source: &dyn Fn(&DemoPlugin) -> PathBuf,
) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("daz-demo-").tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755))?;
    for p in &plan.plugins {
        install(&source(p), &plugins.join(p.file()))?;
    }
    let private = |name: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    };
    private("bot.password", "bot-pass\n")?;
    let token: [u8; 16] = rand::rng().random();
    private("admin-token", &format!("{}\n", hex::encode(token)))?;
    Ok(dir)
}

/// Puts a plugin file in place the way an operator deploys one: a copy beside the
/// target, then a rename over it, so the host never reads a half-written file and a
/// file it has mapped is never overwritten in place.
pub fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension("so.new");
    std::fs::copy(from, &tmp).with_context(|| format!("cannot copy {}", from.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, to).with_context(|| format!("cannot move {}", to.display()))?;
    Ok(())
}

impl Stage {
    /// Starts the simulator with `script`'s accounts and channel, then the host with
    /// every plugin of `plan` (each copied from `source(plugin)`). Fails, with every
    /// plugin's reason, when not all of them load.
    pub async fn start(
        plan: &Plan,
        source: &dyn Fn(&DemoPlugin) -> PathBuf,
        script: &Script,
        preflight: bool,
    ) -> anyhow::Result<Stage> {
        let mut sim_cfg = SimConfig::default();
        script.apply(&mut sim_cfg);
        let sim = Simulator::start(sim_cfg).await?;
        let dir = match prepare_dir(plan, source) {
            Ok(d) => d,
            Err(e) => {
                sim.shutdown().await;
                return Err(e);
            }
        };
        let config_path = dir.path().join("plugins.toml");
        let text = plan.plugins_toml(dir.path(), &sim.base_url(), &[]);
        let text = if preflight {
            text.replacen("preflight = false", "preflight = true", 1)
        } else {
            text
        };
        std::fs::write(&config_path, text)?;
        let config = Config::load(&config_path)?;
        let app = match App::start(
            config,
            StartOptions {
                config_path: Some(config_path.clone()),
                ..StartOptions::default()
            },
        )
        .await
        {
            Ok(app) => app,
            Err(e) => {
                sim.shutdown().await;
                return Err(e);
            }
        };
        let stage = Stage {
            sim,
            app,
            dir,
            config_path,
        };
        if !stage.app.plugins.all_serving() {
            let failed: Vec<String> = stage
                .app
                .plugins
                .status()
                .into_iter()
                .filter_map(|s| {
                    let slot = s.slot?;
                    slot.last_error.map(|e| format!("{}: {e}", s.name))
                })
                .collect();
            stage.shutdown().await;
            anyhow::bail!("not every plugin loaded: {}", failed.join("; "));
        }
        Ok(stage)
    }

    /// Rewrites `plugins.toml` from `plan` with the swap steps' changes so far.
    pub fn write_config(&self, plan: &Plan, swapped: &[(String, Table)]) -> anyhow::Result<()> {
        std::fs::write(
            &self.config_path,
            plan.plugins_toml(self.dir.path(), &self.sim.base_url(), swapped),
        )
        .with_context(|| format!("cannot write {}", self.config_path.display()))
    }

    /// Waits until the bot is in the channel and logged in.
    pub async fn wait_logged_in(&self, timeout: Duration) -> anyhow::Result<()> {
        let room = self
            .app
            .room_registry
            .get(ROOM)
            .context("the stage's room is missing")?;
        // The room publishes no change notification to wait on; its state is a cheap
        // atomic read.
        let joined = async {
            while room.conn_state() != ConnState::LoggedIn {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, joined)
            .await
            .context("the bot did not get into the channel")
    }

    /// Follows the room on the bus: every event narrated through `say`, and the bot's
    /// own lines handed back in [`Narrator::answers`].
    pub fn narrator(&self, say: Arc<dyn Fn(&str) + Send + Sync>) -> anyhow::Result<Narrator> {
        let mailbox = Mailbox::new("demo-narrator", MailboxConfig::new(100_000));
        let id = self.app.bus.register("demo-narrator", mailbox.clone())?;
        for p in narrate::SUBJECTS {
            self.app.bus.subscribe(id, p)?;
        }
        let (answers_tx, answers) = tokio::sync::mpsc::unbounded_channel::<Answer>();
        let task = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let mut chat_seen = 0;
                while let Some(env) = mailbox.recv().await {
                    if let Some(answer) = narrate::narrate(&env, &*say, &mut chat_seen) {
                        let _ = answers_tx.send(answer);
                    }
                }
                chat_seen
            })
        };
        Ok(Narrator {
            answers,
            mailbox,
            id,
            task,
        })
    }

    /// Stops the host, then the simulator, then removes the private directory.
    pub async fn shutdown(self) {
        self.app.shutdown().await;
        self.sim.shutdown().await;
        drop(self.dir);
    }
}

/// A bus subscriber narrating the stage's room. Stop it with [`Narrator::stop`].
pub struct Narrator {
    /// What the bot said (chat lines and PMs), in order.
    pub answers: UnboundedReceiver<Answer>,
    mailbox: Arc<Mailbox>,
    id: SubscriberId,
    task: tokio::task::JoinHandle<u64>,
}

impl Narrator {
    /// Forgets the answers that arrived so far.
    pub fn drain(&mut self) {
        while self.answers.try_recv().is_ok() {}
    }

    /// Unsubscribes; returns how many live chat lines of other users it saw.
    pub async fn stop(self, app: &App) -> u64 {
        app.bus.unregister(self.id);
        self.mailbox.close();
        self.task.await.unwrap_or_default()
    }
}
