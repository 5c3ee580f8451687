//! The offline demo (`daz demo`): the whole bot as its users run it, against a
//! simulated channel, with no internet and no setup. Compiled with the `demo` cargo
//! feature (on by default); a host built without it carries no simulator.
//!
//! It starts, in this process:
//! 1. the Cytube simulator on a loopback port, with the lively demo channel
//!    (`sim/demo/lively.toml`: a moderator and a guest who chat, queue and PM);
//! 2. the host with every plugin of the plan (`demo.toml` beside this file: the
//!    router, the built-ins, the trackers, analytics, retry, storage on SQLite in the
//!    demo's private directory, the example, …), one room pointed at the simulator, and
//!    its HTTP server on a free loopback port, whose one-time login URL for the status
//!    page and admin token are printed;
//! 3. a guide user, driven by this module through the plan's steps once the bot is in
//!    the channel: commands in chat and by PM, each waiting for the bot's answer, and a
//!    hot swap of a plugin whose state must survive it.
//!
//! Everything that happens in the channel is narrated on the output, until Ctrl-C or
//! the `--seconds` limit. [`run`] returns a [`DemoReport`] so a caller can tell whether
//! every step was answered.
//!
//! * [`plan`] — `demo.toml`: the plugins and the steps, and the `plugins.toml` written
//!   from them.
//! * [`files`] — finding (or building, on the first run) the plugin libraries.
//! * `narrate` — bus events as narration lines.

pub mod files;
mod narrate;
pub mod plan;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use daz_bus::{Mailbox, MailboxConfig};
use daz_cytube_sim::{SimConfig, Simulator, script::Script};
use rand::Rng;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    app::{App, StartOptions},
    config::Config,
    cytube::ConnState,
    plugins::{ReloadOutcome, Trigger},
};

use narrate::{Answer, narrate};
use plan::{Plan, Reply, StepKind};

/// The shipped demo channel.
const LIVELY: &str = include_str!("../../../sim/demo/lively.toml");

/// How long the guide waits for the bot at each step (generous: the machine may be
/// busy building).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the demo needs.
pub struct DemoOptions {
    /// What to run (normally [`Plan::shipped`]).
    pub plan: Plan,
    /// The directory holding every plugin library of the plan ([`files::plugin_dir`]).
    pub plugin_dir: PathBuf,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Where narration lines go (stdout for `daz demo`).
    pub out: Arc<dyn Fn(&str) + Send + Sync>,
}

/// How one step went.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's label (`!help`, `PM !about`, `swap example`).
    pub label: String,
    /// The bot's answer (chat and PM steps) or the swap's summary.
    pub answer: Option<String>,
    /// The step succeeded.
    pub ok: bool,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The bot reached the channel and logged in.
    pub bot_joined: bool,
    /// The status page's URL.
    pub status_url: Option<String>,
    /// The steps run, in order (steps not reached before the end are absent).
    pub steps: Vec<StepReport>,
    /// Chat lines from the scripted users the bot saw (not backlog).
    pub chat_seen: u64,
}

impl DemoReport {
    /// Steps that ran and failed.
    pub fn failed(&self) -> impl Iterator<Item = &StepReport> {
        self.steps.iter().filter(|s| !s.ok)
    }
}

/// The demo's private directory: plugin copies, the password and token files, the
/// SQLite database. Removed when dropped.
fn prepare_dir(plan: &Plan, plugin_dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("daz-demo-").tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755))?;
    for p in &plan.plugins {
        let from = plugin_dir.join(p.file());
        let to = plugins.join(p.file());
        std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
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

/// Runs the demo. See the module docs.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let say = opts.out.clone();
    let plan = opts.plan;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    say(
        "daz offline demo — a simulated Cytube channel, scripted users, and the bot with every plugin of the repository.",
    );
    say(match opts.duration {
        Some(_) => "It stops by itself after --seconds, or at Ctrl-C.",
        None => "Press Ctrl-C to stop.",
    });

    let script = Script::parse(LIVELY, false).context("the shipped demo channel script")?;
    let mut sim_cfg = SimConfig::default();
    script.apply(&mut sim_cfg);
    let sim = Simulator::start(sim_cfg).await?;
    say(&format!("[sim]    Cytube simulator at {}", sim.base_url()));

    let dir = prepare_dir(&plan, &opts.plugin_dir)?;
    let config_path = dir.path().join("plugins.toml");
    let mut swapped = Vec::new();
    std::fs::write(
        &config_path,
        plan.plugins_toml(dir.path(), &sim.base_url(), &swapped),
    )?;
    let config = Config::load(&config_path)?;
    let app = App::start(
        config,
        StartOptions {
            config_path: Some(config_path.clone()),
            ..StartOptions::default()
        },
    )
    .await?;
    if !app.plugins.all_serving() {
        let failed: Vec<String> = app
            .plugins
            .status()
            .into_iter()
            .filter_map(|s| {
                let slot = s.slot?;
                slot.last_error.map(|e| format!("{}: {e}", s.name))
            })
            .collect();
        app.shutdown().await;
        sim.shutdown().await;
        anyhow::bail!("not every plugin loaded: {}", failed.join("; "));
    }
    say(&format!("[host]   {} plugins loaded:", plan.plugins.len()));
    for p in &plan.plugins {
        say(&format!("           {:<13} {}", p.name, p.about));
    }
    let mut report = DemoReport::default();
    if let Some(addr) = app.http_addr {
        let url = format!("http://{addr}/");
        match app.access.login_url() {
            Some(login) => say(&format!(
                "[http]   status page: {login}  (this link logs one browser in, once; then {url})"
            )),
            None => say(&format!("[http]   status page: {url}")),
        }
        let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap_or_default();
        say(&format!(
            "[http]   admin API token (for `daz --url {url} plugins`, curl): {}",
            token.trim()
        ));
        report.status_url = Some(url);
    }

    // The narrator: a bus subscriber like any plugin.
    let mailbox = Mailbox::new("demo-narrator", MailboxConfig::new(100_000));
    let id = app.bus.register("demo-narrator", mailbox.clone())?;
    for p in narrate::SUBJECTS {
        app.bus.subscribe(id, p)?;
    }
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let narrator = {
        let say = say.clone();
        let mailbox = mailbox.clone();
        tokio::spawn(async move {
            let mut chat_seen = 0;
            while let Some(env) = mailbox.recv().await {
                if let Some(answer) = narrate(&env, &*say, &mut chat_seen) {
                    let _ = answers_tx.send(answer);
                }
            }
            chat_seen
        })
    };

    for actor in script.actors.clone() {
        tokio::spawn(daz_cytube_sim::script::run_actor(sim.clone(), actor));
    }

    let guided = async {
        let room = app
            .room_registry
            .get("demo")
            .context("the demo room is missing")?;
        let joined = async {
            while room.conn_state() != ConnState::LoggedIn {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, joined)
            .await
            .context("the bot did not get into the channel")?;
        report.bot_joined = true;

        let mut guide = sim.actor(&plan.guide).await.connect().await?;
        guide.join_and_login("demo", &plan.guide, None).await?;
        say(&format!("[guide]  {} joins the channel", plan.guide));
        for step in &plan.steps {
            if let Some(note) = &step.note {
                say(&format!("[guide]  {}: {note}", plan.guide));
            }
            let outcome = match step.kind() {
                StepKind::Chat {
                    text,
                    expect,
                    reply,
                } => {
                    drain(&mut answers);
                    guide.chat(text)?;
                    wait_answer(&mut answers, &plan.guide, reply == Reply::Pm, expect).await
                }
                StepKind::Pm {
                    text,
                    expect,
                    reply,
                } => {
                    drain(&mut answers);
                    guide.pm("bot", text)?;
                    wait_answer(&mut answers, &plan.guide, reply == Reply::Pm, expect).await
                }
                StepKind::Swap { plugin } => {
                    swapped.push((plugin.to_owned(), step.config.clone()));
                    std::fs::write(
                        &config_path,
                        plan.plugins_toml(dir.path(), &sim.base_url(), &swapped),
                    )?;
                    swap(&app, &config_path, plugin, &*say).await
                }
            };
            let ok = outcome.is_ok();
            match &outcome {
                Ok(_) => {
                    if let Some(check) = &step.check {
                        say(&format!("[check]  {check}"));
                    }
                }
                Err(e) => say(&format!("[guide]  {}: {e}", step.label())),
            }
            report.steps.push(StepReport {
                label: step.label(),
                answer: outcome.ok(),
                ok,
            });
        }
        let answered = report.steps.iter().filter(|s| s.ok).count();
        say(&format!(
            "[guide]  {answered} of {} steps done; the scripted users keep chatting and the bot keeps listening.",
            plan.steps.len()
        ));
        anyhow::Ok(guide)
    };
    let guide = tokio::select! {
        r = guided => Some(r),
        () = until(deadline) => None,
    };
    let guide_finished = guide.is_some();
    // The guide stays in the channel until the end.
    let _guide = match guide {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            say(&format!("[guide]  stopped: {e:#}"));
            None
        }
        None => None,
    };
    if guide_finished {
        until(deadline).await;
    }

    say("[demo]   stopping");
    app.bus.unregister(id);
    mailbox.close();
    app.shutdown().await;
    sim.shutdown().await;
    report.chat_seen = narrator.await.unwrap_or_default();
    say(&format!(
        "[demo]   done: {} of {} steps answered; {} chat line(s) seen",
        report.steps.iter().filter(|s| s.ok).count(),
        plan.steps.len(),
        report.chat_seen
    ));
    drop(dir);
    Ok(report)
}

/// Re-reads the demo's `plugins.toml` (a swap step changed a plugin's table) and
/// applies it: that plugin is hot-swapped, its state handed to the new instance.
async fn swap(
    app: &App,
    config_path: &Path,
    plugin: &str,
    say: &dyn Fn(&str),
) -> anyhow::Result<String> {
    let new_config = Config::load(config_path)?;
    let plugins = app.plugins.clone();
    let results =
        tokio::task::spawn_blocking(move || plugins.apply(new_config, Trigger::ConfigChanged))
            .await?;
    let mut summary = None;
    for (name, r) in results {
        match r {
            Ok(ReloadOutcome::Swapped(s)) => {
                let line = format!(
                    "{name} swapped in {} µs ({} → {}), no event lost",
                    s.micros,
                    s.from.unwrap_or_default(),
                    s.to
                );
                say(&format!("[host]   {line}"));
                if name == plugin {
                    summary = Some(line);
                }
            }
            Ok(other) => say(&format!("[host]   {name}: {other:?}")),
            Err(e) => say(&format!("[host]   {name}: reload failed: {e}")),
        }
    }
    summary.with_context(|| format!("{plugin} was not swapped"))
}

/// Forgets answers that arrived before the next step (to the scripted users' commands).
fn drain(answers: &mut UnboundedReceiver<Answer>) {
    while answers.try_recv().is_ok() {}
}

/// Waits for the bot's answer to `guide` (by PM when `pm`) containing `expect`.
async fn wait_answer(
    answers: &mut UnboundedReceiver<Answer>,
    guide: &str,
    pm: bool,
    expect: &str,
) -> anyhow::Result<String> {
    let wait = async {
        while let Some(a) = answers.recv().await {
            let to_guide = match &a.pm_to {
                Some(to) => pm && to.eq_ignore_ascii_case(guide),
                None => !pm,
            };
            if to_guide && a.text.contains(expect) {
                return Some(a.text);
            }
        }
        None
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "no answer containing {expect:?} within {} s",
                STEP_TIMEOUT.as_secs()
            )
        })
}

/// Waits for Ctrl-C (SIGINT), or the deadline when there is one.
async fn until(deadline: Option<tokio::time::Instant>) {
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: only the deadline can end the demo.
            std::future::pending::<()>().await;
        }
    };
    match deadline {
        Some(d) => tokio::select! {
            () = tokio::time::sleep_until(d) => {}
            () = interrupted => {}
        },
        None => interrupted.await,
    }
}
