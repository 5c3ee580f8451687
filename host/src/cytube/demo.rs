//! The offline demo (`daz demo`): everything a newcomer needs to watch the bot work,
//! with no internet and no setup.
//!
//! It starts, in this process:
//! 1. the Cytube simulator on a loopback port, with the lively demo channel
//!    (`sim/demo/lively.toml`: a moderator and a guest who chat, queue and PM);
//! 2. the host, with the example plugin and one room pointed at the simulator;
//! 3. a guide user, `newcomer`, driven by this module: once the bot is in the channel
//!    it says `!hello`, waits for the answer, then the example plugin is hot-swapped
//!    (its greeting changes in `plugins.toml`) and it says `!hello` again — the answer
//!    shows the new greeting AND the greeting count carried across the swap.
//!
//! Everything that happens in the channel is narrated on the output, until Ctrl-C or
//! the `--seconds` limit. [`run`] returns a [`DemoReport`] so a test can check that the
//! bot answered and kept its count.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use daz_bus::{Envelope, Mailbox, MailboxConfig};
use daz_cytube_sim::{Actor, SimConfig, Simulator, script::Script};
use serde_json::Value;

use crate::{
    app::{App, StartOptions},
    config::Config,
    plugins::{ReloadOutcome, Trigger},
};

use super::room::ConnState;

/// The shipped demo channel.
const LIVELY: &str = include_str!("../../../sim/demo/lively.toml");

/// The file name of the example plugin's library.
pub const EXAMPLE_PLUGIN: &str = "libdaz_plugin_example.so";

/// How long the guide waits for the bot at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the demo needs.
pub struct DemoOptions {
    /// The example plugin's library.
    pub plugin: PathBuf,
    /// Stop after this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Where narration lines go (stdout for `daz demo`).
    pub out: Arc<dyn Fn(&str) + Send + Sync>,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The bot reached the channel and logged in.
    pub bot_joined: bool,
    /// The bot's answers to `!hello`, in order.
    pub replies: Vec<String>,
    /// The greeting counts in those answers.
    pub counts: Vec<u64>,
    /// The hot swap happened.
    pub swapped: bool,
    /// Chat lines from the scripted users the bot saw (not backlog).
    pub chat_seen: u64,
}

/// Finds the example plugin next to the running executable (`target/release/daz` →
/// `target/release/libdaz_plugin_example.so`). When it is missing and this executable
/// was built from a source tree that is still there, builds it with cargo into the
/// same target directory (the first `cargo run -p daz-host -- demo`); otherwise says
/// how to build it.
pub fn find_example_plugin(say: &dyn Fn(&str)) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    let here = dir.join(EXAMPLE_PLUGIN);
    if here.is_file() {
        return Ok(here);
    }
    let how = format!(
        "the example plugin {EXAMPLE_PLUGIN} is not next to {} — build it first: \
         `cargo build --release -p daz-plugin-example` (or pass --plugin <file>)",
        exe.display()
    );
    // target/<profile>/daz with the workspace it was built from.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let target = dir.parent();
    let (Some(target), true) = (
        target,
        matches!(profile, "release" | "debug") && workspace.join("Cargo.toml").is_file(),
    ) else {
        anyhow::bail!(how);
    };
    say("[setup]  building the example plugin (first run only)…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "daz-plugin-example",
            "--target-dir",
        ])
        .arg(target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo; {how}"))?;
    if !status.success() || !here.is_file() {
        anyhow::bail!("building the example plugin failed; {how}");
    }
    Ok(here)
}

/// The greeting count in an answer like "Hello, newcomer! (greeting #3)".
fn greeting_count(text: &str) -> Option<u64> {
    let start = text.rfind('#')? + 1;
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn plugins_toml(site: &str, greeting: &str) -> String {
    format!(
        r#"# Written by `daz demo`.
[host]
plugin_dir = "plugins"
runtime_dir = "runtime"
preflight = false
watch = false

[http]
listen = "127.0.0.1:0"

[plugins.example]
file = "{EXAMPLE_PLUGIN}"
[plugins.example.config]
greeting = "{greeting}"

[[rooms]]
name = "demo"
site = "{site}"
channel = "demo"
username = "bot"
password_file = "bot.password"
"#
    )
}

/// Copies the plugin into a private directory readable only as the host requires.
fn prepare_dir(dir: &Path, plugin: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755))?;
    let target = plugins.join(EXAMPLE_PLUGIN);
    std::fs::copy(plugin, &target).with_context(|| format!("cannot copy {}", plugin.display()))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))?;
    let pw = dir.join("bot.password");
    std::fs::write(&pw, "bot-pass\n")?;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Narrates one bus event; returns the bot's own chat line, if it is one.
fn narrate(env: &Envelope, say: &dyn Fn(&str), report: &mut DemoReport) -> Option<String> {
    let v: Value = serde_json::from_slice(&env.payload).unwrap_or(Value::Null);
    let text = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(plain)
            .unwrap_or_default()
    };
    let event = env.subject.rsplit('.').next().unwrap_or_default();
    if env.subject.starts_with("host.room.") {
        let line = match event {
            "connecting" => "connecting to the simulated Cytube server…".to_owned(),
            "connected" => "connected (Socket.IO session open); joining #demo".to_owned(),
            "joined" => "in the channel".to_owned(),
            "logged_in" => "logged in as `bot` — it now answers commands".to_owned(),
            "disconnected" | "failed" => format!(
                "{event}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("")
            ),
            other => other.to_owned(),
        };
        say(&format!("[room]   {line}"));
        return None;
    }
    match event {
        "chatMsg" => {
            let user = text("username");
            let msg = text("msg");
            if env.has_tag("self") && !env.has_tag("backlog") {
                say(&format!("[bot]    {msg}"));
                return Some(msg);
            }
            if env.has_tag("backlog") {
                say(&format!(
                    "[chat]   {user}: {msg}   (backlog, ignored by plugins)"
                ));
            } else {
                report.chat_seen += 1;
                say(&format!("[chat]   {user}: {msg}"));
            }
        }
        "pm" => say(&format!(
            "[pm]     {} → {}: {}",
            text("username"),
            text("to"),
            text("msg")
        )),
        "changeMedia" => say(&format!("[media]  now playing: {}", text("title"))),
        "queue" => {
            let title = v
                .pointer("/item/media/title")
                .and_then(Value::as_str)
                .unwrap_or_default();
            say(&format!("[media]  queued: {title}"));
        }
        "addUser" => say(&format!("[users]  + {}", text("name"))),
        "userLeave" => say(&format!("[users]  - {}", text("name"))),
        _ => {}
    }
    None
}

/// Chat HTML as plain text for the narration.
fn plain(html: &str) -> String {
    let text = daz_cytube_proto::events::unescape_chat(html);
    // Links arrive wrapped in <a>; show their text.
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Runs the demo. See the module docs.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoReport> {
    let say = opts.out.clone();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    say(
        "daz offline demo — a simulated Cytube channel, scripted users, and the bot with the example plugin.",
    );
    say(match opts.duration {
        Some(_) => "It stops by itself after --seconds.",
        None => "Press Ctrl-C to stop.",
    });

    let script = Script::parse(LIVELY, false).context("the shipped demo script")?;
    let mut sim_cfg = SimConfig::default();
    script.apply(&mut sim_cfg);
    let sim = Simulator::start(sim_cfg).await?;
    say(&format!("[sim]    Cytube simulator at {}", sim.base_url()));

    let dir = tempfile::Builder::new().prefix("daz-demo-").tempdir()?;
    prepare_dir(dir.path(), &opts.plugin)?;
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(&config_path, plugins_toml(&sim.base_url(), "Hello"))?;
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
        let status = app.plugins.status();
        anyhow::bail!(
            "the example plugin did not load: {}",
            status
                .first()
                .and_then(|s| s.slot.as_ref())
                .and_then(|s| s.last_error.clone())
                .unwrap_or_else(|| "unknown error".into())
        );
    }
    say("[host]   example plugin loaded; it answers !hello with a greeting and a running count");

    // The narrator: a bus subscriber like any plugin.
    let mailbox = Mailbox::new("demo-narrator", MailboxConfig::new(100_000));
    let id = app.bus.register("demo-narrator", mailbox.clone())?;
    for p in [
        "host.room.demo.>",
        "cytube.in.demo.chatMsg",
        "cytube.in.demo.pm",
        "cytube.in.demo.changeMedia",
        "cytube.in.demo.queue",
        "cytube.in.demo.addUser",
        "cytube.in.demo.userLeave",
    ] {
        app.bus.subscribe(id, p)?;
    }
    let (replies_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<String>();
    let narrator = {
        let say = say.clone();
        let mailbox = mailbox.clone();
        tokio::spawn(async move {
            let mut report = DemoReport::default();
            while let Some(env) = mailbox.recv().await {
                if let Some(line) = narrate(&env, &*say, &mut report) {
                    let _ = replies_tx.send(line);
                }
            }
            report
        })
    };

    for actor in script.actors.clone() {
        tokio::spawn(daz_cytube_sim::script::run_actor(sim.clone(), actor));
    }

    let mut report = DemoReport::default();
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

        let mut newcomer = sim.actor("newcomer").await.connect().await?;
        newcomer.join_and_login("demo", "newcomer", None).await?;
        say("[guide]  newcomer joins and asks the bot: !hello");
        let first = hello(&newcomer, &mut replies).await?;
        report.counts.extend(greeting_count(&first));
        report.replies.push(first);

        say(
            "[guide]  hot-swapping the example plugin: its greeting changes to \"Hi again\" in plugins.toml;",
        );
        say("         the new instance gets the old one's state, so the count must go on");
        std::fs::write(&config_path, plugins_toml(&sim.base_url(), "Hi again"))?;
        let new_config = Config::load(&config_path)?;
        let plugins = app.plugins.clone();
        let results =
            tokio::task::spawn_blocking(move || plugins.apply(new_config, Trigger::ConfigChanged))
                .await?;
        for (name, r) in results {
            match r {
                Ok(ReloadOutcome::Swapped(s)) => {
                    report.swapped = true;
                    say(&format!(
                        "[host]   {name} swapped in {} µs ({} → {}), no event lost",
                        s.micros,
                        s.from.unwrap_or_default(),
                        s.to
                    ));
                }
                Ok(other) => say(&format!("[host]   {name}: {other:?}")),
                Err(e) => say(&format!("[host]   {name}: reload failed: {e}")),
            }
        }
        say("[guide]  newcomer asks again: !hello");
        let second = hello(&newcomer, &mut replies).await?;
        report.counts.extend(greeting_count(&second));
        report.replies.push(second);
        if let [a, b] = report.counts[..] {
            say(&format!(
                "[check]  the count went #{a} → #{b} across the hot swap: the plugin kept its state"
            ));
        }
        say("[guide]  the scripted users keep chatting; the bot keeps listening.");
        anyhow::Ok(newcomer)
    };
    let newcomer = tokio::select! {
        r = guided => Some(r),
        () = until(deadline) => None,
    };
    let _newcomer = match newcomer {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            say(&format!("[guide]  stopped: {e:#}"));
            None
        }
        None => None,
    };
    until(deadline).await;

    say("[demo]   stopping");
    app.bus.unregister(id);
    mailbox.close();
    app.shutdown().await;
    sim.shutdown().await;
    let narrated = narrator.await.unwrap_or_default();
    report.chat_seen = narrated.chat_seen;
    say(&format!(
        "[demo]   done: the bot answered {} time(s); {} chat line(s) seen",
        report.replies.len(),
        report.chat_seen
    ));
    Ok(report)
}

/// Waits for the deadline, or Ctrl-C when there is none.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The guide says `!hello` and waits for the bot's answer.
async fn hello(
    guide: &Actor,
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<String> {
    guide.chat("!hello")?;
    let wait = async {
        while let Some(line) = replies.recv().await {
            if line.contains("newcomer") {
                return Some(line);
            }
        }
        None
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .ok()
        .flatten()
        .context("the bot did not answer !hello")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_counts_are_read_from_answers() {
        assert_eq!(greeting_count("Hello, newcomer! (greeting #3)"), Some(3));
        assert_eq!(greeting_count("no count"), None);
    }

    #[test]
    fn chat_html_is_narrated_as_text() {
        assert_eq!(
            plain("check <a href=\"https://example.org/x\">https://example.org/x</a> &gt;"),
            "check https://example.org/x >"
        );
    }

    #[test]
    fn the_written_configuration_is_valid() {
        let c = Config::parse(&plugins_toml("http://127.0.0.1:1", "Hi"), Path::new("x")).unwrap();
        assert_eq!(c.rooms[0].room_name(), "demo");
        assert!(!c.host.preflight);
    }
}
