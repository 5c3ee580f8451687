//! `daz dev [PATH]`: the plugin author's loop. It builds the plugin crate at PATH, puts
//! it on the demo's stage ([`crate::demo::stage`]: the Cytube simulator, a host with the
//! plugin plus the plugins it needs — storage on SQLite in a private directory, the
//! command router, the built-ins), shows the channel on the output and lets the author
//! chat as user `dev` from the input ([`daz_cytube_sim::console::run_as`]). It runs the
//! plugin's declared chat examples, then watches `src/` and `Cargo.toml`: on every save
//! it rebuilds ([`build`]: the dev profile, see there why), swaps the new file in
//! through the host's reload transaction (the same `PluginManager::reload` a changed
//! plugin file triggers in production: state handed over, the old version serving
//! until the new one is created), prints how long the save took to serve, and runs the
//! examples again ([`examples`]).
//!
//! A build that fails prints cargo's messages and changes nothing: the version before
//! keeps serving. Ctrl-C, `/quit` or the end of the input stops everything cleanly.

pub mod build;
pub mod examples;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use daz_cytube_sim::script::Script;
use daz_plugin_api::ChatExample;
use notify::{
    EventKind, RecursiveMode,
    event::{AccessKind, AccessMode, ModifyKind},
};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::io::AsyncBufRead;

use crate::{
    demo::{
        files,
        plan::{DemoPlugin, Plan},
        stage::{self, Stage},
    },
    plugins::{ReloadOutcome, Trigger, preflight},
};
use examples::ExampleUsers;

/// The simulated channel: the bot's account and one channel, nobody else (the author
/// and the examples' users are the only people there).
const CHANNEL: &str = r#"
[[accounts]]
name = "bot"
password = "bot-pass"

[[channels]]
name = "demo"
registered = true
ranks = [["bot", 2]]
motd = "daz dev: the plugin under development is in this channel"
"#;

/// How long the bot may take to get into the channel.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Saves closer together than this become one rebuild.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What `daz dev` needs.
pub struct DevOptions {
    /// The plugin crate's directory.
    pub crate_dir: PathBuf,
    /// Where the stage's own plugins are (default: beside this executable, see
    /// [`files::plugin_dir`]).
    pub plugin_dir: Option<PathBuf>,
    /// What the author types.
    pub input: Box<dyn AsyncBufRead + Unpin + Send>,
    /// Where lines go (stdout for `daz dev`).
    pub out: Arc<dyn Fn(&str) + Send + Sync>,
    /// Ends the loop when it completes (Ctrl-C for `daz dev`). Polled from the start:
    /// its signal handler must be installed before the future is handed over, or a
    /// signal during the first build or the host's start would kill the process.
    pub stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// A saved file under watch, as the debouncer reported it.
struct Saved {
    /// When the first save of the batch happened.
    at: Instant,
}

/// Whether a file event is a change to a watched file: a write, create, rename or
/// removal of a `.rs` file under `src/` or of `Cargo.toml` — not a read (cargo reads
/// every source on each build, which would otherwise trigger the next build forever),
/// and not an editor's swap or backup file.
fn is_save(event: &notify::Event, src: &Path, manifest: &Path) -> bool {
    let kind_ok = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    kind_ok
        && event.paths.iter().any(|p| {
            p == manifest || (p.starts_with(src) && p.extension().is_some_and(|e| e == "rs"))
        })
}

/// Runs the loop until `opts.stop` completes or the input ends.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let say = opts.out.clone();
    let crate_dir = std::fs::canonicalize(&opts.crate_dir).with_context(|| {
        format!(
            "{} does not exist; run `daz dev` in a plugin crate (one `daz new-plugin` made) or pass its directory",
            opts.crate_dir.display()
        )
    })?;
    let manifest = crate_dir.join("Cargo.toml");
    anyhow::ensure!(
        manifest.is_file(),
        "{} has no Cargo.toml; run `daz dev` in a plugin crate (one `daz new-plugin` made) or pass its directory",
        crate_dir.display()
    );

    say(&format!(
        "[build]  cargo build (dev profile) of {} …",
        crate_dir.display()
    ));
    let mut stop = opts.stop;
    let first = async {
        let built = {
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || build::build(&manifest)).await??
        };
        say(&format!(
            "[build]  built {} in {:.1} s",
            built.lib.display(),
            built.took.as_secs_f64()
        ));
        // The plugin's name (its table) and examples, read in a child process like the
        // host's preflight, so that a library that crashes on load costs only the child.
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let lib = built.lib.clone();
        let meta = tokio::task::spawn_blocking(move || {
            preflight::run(&exe, &lib, &lib, Duration::from_secs(30))
        })
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::Ok((built, meta))
    };
    // The first build can take minutes (a new crate compiles its dependencies): Ctrl-C
    // must not wait for it.
    let (built, meta) = tokio::select! {
        r = first => r?,
        () = &mut stop => {
            say("[dev]    stopped");
            return Ok(());
        }
    };

    let mut plan = Plan::dev()?;
    anyhow::ensure!(
        !plan.plugins.iter().any(|p| p.name == meta.name),
        "the plugin is named {:?}, like one of the plugins `daz dev` runs beside it ({}); \
         give it another NAME",
        meta.name,
        plan.plugins
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let plugin_dir = files::plugin_dir(&plan, opts.plugin_dir, &|l| say(l))?;
    let stem = built
        .lib
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("lib"))
        .context("the plugin library is not named lib<name>.so")?
        .to_owned();
    let dev_plugin = DemoPlugin {
        name: meta.name.clone(),
        package: stem,
        about: meta.description.clone(),
        config: toml::Table::new(),
    };
    let file = dev_plugin.file();
    plan.plugins.push(dev_plugin);
    let script = Script::parse(CHANNEL, false).context("the dev loop's channel")?;
    let lib = built.lib.clone();
    let name = meta.name.clone();
    let stage = Stage::start(
        &plan,
        &|p: &DemoPlugin| {
            if p.name == name {
                lib.clone()
            } else {
                plugin_dir.join(p.file())
            }
        },
        &script,
        true,
    )
    .await?;
    let result = serve(
        &stage, &say, &meta.name, &file, &manifest, &crate_dir, opts.input, stop, started,
    )
    .await;
    say("[dev]    stopping");
    stage.shutdown().await;
    say("[dev]    stopped");
    result
}

/// The loop proper, on a started stage.
#[allow(clippy::too_many_arguments)]
async fn serve(
    stage: &Stage,
    say: &Arc<dyn Fn(&str) + Send + Sync>,
    name: &str,
    file: &str,
    manifest: &Path,
    crate_dir: &Path,
    input: Box<dyn AsyncBufRead + Unpin + Send>,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    started: Instant,
) -> anyhow::Result<()> {
    say(&format!(
        "[host]   {} loaded beside {}; Cytube simulator at {}",
        name,
        stage_plugins(stage, name),
        stage.sim.base_url()
    ));
    stage.wait_logged_in(JOIN_TIMEOUT).await?;
    let mut narrator = stage.narrator(Arc::new(|_: &str| {}))?;
    say(&format!(
        "[dev]    serving {:.1} s after start; watching {} and Cargo.toml — save to rebuild and swap",
        started.elapsed().as_secs_f64(),
        crate_dir.join("src").display()
    ));

    let console = tokio::spawn(daz_cytube_sim::console::run_as(
        stage.sim.clone(),
        stage::ROOM,
        "dev",
        input,
        say.clone(),
    ));
    let mut users = ExampleUsers::new(stage.sim.clone(), stage::ROOM);

    // Saves, debounced, from the watcher's thread.
    let (saves_tx, mut saves) = tokio::sync::mpsc::unbounded_channel::<Saved>();
    let src = crate_dir.join("src");
    let watched_manifest = manifest.to_owned();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        if let Ok(events) = result {
            let first = events
                .iter()
                .filter(|e| is_save(e, &src, &watched_manifest))
                .map(|e| e.time)
                .min();
            if let Some(at) = first {
                let _ = saves_tx.send(Saved { at });
            }
        }
    })
    .context("cannot start the file watcher")?;
    debouncer
        .watch(crate_dir.join("src"), RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", crate_dir.join("src").display()))?;
    debouncer
        .watch(crate_dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", crate_dir.display()))?;

    let looped = async {
        run_examples(stage, name, &mut users, &mut narrator, say).await;
        while let Some(first) = saves.recv().await {
            // Saves during the build are in the next one; the time is the first save's.
            let mut at = first.at;
            while let Ok(more) = saves.try_recv() {
                at = at.min(more.at);
            }
            say("[build]  change seen; rebuilding …");
            let built = {
                let manifest = manifest.to_owned();
                tokio::task::spawn_blocking(move || build::build(&manifest)).await?
            };
            let built = match built {
                Ok(b) => b,
                Err(e) => {
                    say(&format!(
                        "[build]  {e:#} — the version before keeps serving; save again to retry"
                    ));
                    continue;
                }
            };
            let target = stage.dir.path().join("plugins").join(file);
            stage::install(&built.lib, &target)?;
            let plugins = stage.app.plugins.clone();
            let plugin = name.to_owned();
            let outcome =
                tokio::task::spawn_blocking(move || plugins.reload(&plugin, Trigger::FileChanged))
                    .await?;
            match outcome {
                Ok(ReloadOutcome::Swapped(s)) => say(&format!(
                    "[dev]    swapped in {:.1}s (save → new version serving; build {:.1} s, swap {} µs)",
                    at.elapsed().as_secs_f64(),
                    built.took.as_secs_f64(),
                    s.micros
                )),
                Ok(ReloadOutcome::Unchanged { .. }) => {
                    say("[dev]    the build is the version already serving; nothing to swap");
                    continue;
                }
                Ok(ReloadOutcome::PreviouslyRejected { .. }) => {
                    say("[dev]    this build was refused before; the version before keeps serving");
                    continue;
                }
                Err(e) => {
                    say(&format!(
                        "[dev]    the new version was refused: {e} — the version before keeps serving"
                    ));
                    continue;
                }
            }
            run_examples(stage, name, &mut users, &mut narrator, say).await;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = looped => r,
        _ = console => Ok(()),
        () = stop => Ok(()),
    };
    drop(debouncer);
    users.leave().await;
    narrator.stop(&stage.app).await;
    result
}

/// The plugins beside the one under development, for the start line.
fn stage_plugins(stage: &Stage, name: &str) -> String {
    stage
        .app
        .plugins
        .status()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n != name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the serving version's declared examples and prints one line each, then a
/// summary.
async fn run_examples(
    stage: &Stage,
    name: &str,
    users: &mut ExampleUsers,
    narrator: &mut stage::Narrator,
    say: &Arc<dyn Fn(&str) + Send + Sync>,
) {
    let examples: Vec<ChatExample> = stage
        .app
        .plugins
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .and_then(|s| s.meta)
        .map(|m| m.manifest.examples)
        .unwrap_or_default();
    if examples.is_empty() {
        say("[example] the plugin declares no chat examples (Plugin::examples)");
        return;
    }
    let results = users.run(&examples, narrator).await;
    for r in &results {
        say(&r.line());
    }
    let passed = results.iter().filter(|r| r.outcome.is_ok()).count();
    say(&format!(
        "[example] {passed} of {} examples pass",
        results.len()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn only_writes_to_sources_and_the_manifest_are_saves() {
        let (src, manifest) = (Path::new("/p/src"), Path::new("/p/Cargo.toml"));
        let save = |e: notify::Event| is_save(&e, src, manifest);
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(save(event(write, "/p/src/lib.rs")));
        assert!(save(event(write, "/p/src/deep/mod.rs")));
        assert!(save(event(write, "/p/Cargo.toml")));
        assert!(save(event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/p/src/lib.rs"
        )));
        assert!(save(event(
            EventKind::Create(CreateKind::File),
            "/p/src/new.rs"
        )));
        // Regression guard: cargo reading the sources must not start the next build.
        assert!(!save(event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/p/src/lib.rs"
        )));
        assert!(!save(event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/p/src/lib.rs"
        )));
        assert!(!save(event(
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            "/p/src/lib.rs"
        )));
        // Editor droppings and the build's own files.
        assert!(!save(event(write, "/p/src/.lib.rs.swp")));
        assert!(!save(event(write, "/p/Cargo.lock")));
        assert!(!save(event(write, "/p/target/debug/libp.so")));
    }
}
