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
//! * [`stage`] — the simulator, the private directory and the host in it (shared with
//!   `daz dev`).

pub mod files;
mod narrate;
pub mod plan;
pub mod stage;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use daz_cytube_sim::script::Script;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    app::App,
    config::Config,
    plugins::{ReloadOutcome, Trigger},
};

pub use narrate::Answer;
use plan::{DemoPlugin, Plan, Reply, StepKind};
use stage::Stage;

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
    let stage = Stage::start(
        &plan,
        &|p: &DemoPlugin| opts.plugin_dir.join(p.file()),
        &script,
        false,
    )
    .await?;
    say(&format!(
        "[sim]    Cytube simulator at {}",
        stage.sim.base_url()
    ));
    let (sim, app) = (&stage.sim, &stage.app);
    let mut swapped = Vec::new();
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
        let token =
            std::fs::read_to_string(stage.dir.path().join("admin-token")).unwrap_or_default();
        say(&format!(
            "[http]   admin API token (for `daz --url {url} plugins`, curl): {}",
            token.trim()
        ));
        report.status_url = Some(url);
    }

    // The narrator: a bus subscriber like any plugin.
    let mut narrator = stage.narrator(say.clone())?;

    for actor in script.actors.clone() {
        tokio::spawn(daz_cytube_sim::script::run_actor(sim.clone(), actor));
    }

    let guided = async {
        stage.wait_logged_in(STEP_TIMEOUT).await?;
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
                    narrator.drain();
                    guide.chat(text)?;
                    wait_answer(
                        &mut narrator.answers,
                        &plan.guide,
                        reply == Reply::Pm,
                        expect,
                    )
                    .await
                }
                StepKind::Pm {
                    text,
                    expect,
                    reply,
                } => {
                    narrator.drain();
                    guide.pm("bot", text)?;
                    wait_answer(
                        &mut narrator.answers,
                        &plan.guide,
                        reply == Reply::Pm,
                        expect,
                    )
                    .await
                }
                StepKind::Swap { plugin } => {
                    swapped.push((plugin.to_owned(), step.config.clone()));
                    stage.write_config(&plan, &swapped)?;
                    swap(app, &stage.config_path, plugin, &*say).await
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
    report.chat_seen = narrator.stop(app).await;
    stage.shutdown().await;
    say(&format!(
        "[demo]   done: {} of {} steps answered; {} chat line(s) seen",
        report.steps.iter().filter(|s| s.ok).count(),
        plan.steps.len(),
        report.chat_seen
    ));
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
