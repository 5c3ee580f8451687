//! Running a plugin's declared chat examples ([`ChatExample`], carried in its manifest)
//! against the live bot of `daz dev`: each example's user joins the simulated channel
//! (once), types the line, and the bot's next chat line containing the expected text
//! passes it. A silent example passes when the bot says nothing for
//! [`SILENT_WINDOW`] — the only way to observe silence.
//!
//! The examples run against the running instance, whose state carried over from the
//! versions before (hot swaps hand it on): an expectation that counts (`greeting #1`)
//! holds only on the first run.

use std::{collections::HashMap, time::Duration};

use daz_cytube_sim::{Actor, SimHandle};
use daz_plugin_api::ChatExample;

use crate::demo::stage::Narrator;

/// How long an example waits for the bot's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the bot must stay quiet for a silent example to pass.
pub const SILENT_WINDOW: Duration = Duration::from_millis(1500);

/// How one example went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleResult {
    /// `alice: !hello`.
    pub label: String,
    /// `Ok(what the bot said, or "(silent)")`, or why it failed.
    pub outcome: Result<String, String>,
}

impl ExampleResult {
    /// The line `daz dev` prints.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(answer) => format!("[example] pass  {}  →  {answer}", self.label),
            Err(why) => format!("[example] FAIL  {}  —  {why}", self.label),
        }
    }
}

/// The example users, connected once and kept in the channel.
pub struct ExampleUsers {
    sim: SimHandle,
    channel: String,
    actors: HashMap<String, Actor>,
}

impl ExampleUsers {
    /// Users of `channel` on `sim`, none connected yet.
    pub fn new(sim: SimHandle, channel: &str) -> ExampleUsers {
        ExampleUsers {
            sim,
            channel: channel.to_owned(),
            actors: HashMap::new(),
        }
    }

    async fn user(&mut self, name: &str) -> Result<&Actor, String> {
        let key = name.to_lowercase();
        if self.actors.get(&key).is_some_and(|a| a.closed().is_some()) {
            self.actors.remove(&key);
        }
        if !self.actors.contains_key(&key) {
            let mut actor = self
                .sim
                .actor(name)
                .await
                .timeout(ANSWER_TIMEOUT)
                .connect()
                .await
                .map_err(|e| format!("{name} cannot connect: {e}"))?;
            actor
                .join_and_login(&self.channel, name, None)
                .await
                .map_err(|e| format!("{name} cannot join: {e}"))?;
            self.actors.insert(key.clone(), actor);
        }
        self.actors
            .get(&key)
            .ok_or_else(|| format!("{name} is not connected"))
    }

    /// Runs `examples` in order, each waiting for the bot (see the module docs).
    pub async fn run(
        &mut self,
        examples: &[ChatExample],
        narrator: &mut Narrator,
    ) -> Vec<ExampleResult> {
        let mut results = Vec::with_capacity(examples.len());
        for example in examples {
            let label = format!("{}: {}", example.user, example.chat);
            let outcome = self.run_one(example, narrator).await;
            results.push(ExampleResult { label, outcome });
        }
        results
    }

    async fn run_one(
        &mut self,
        example: &ChatExample,
        narrator: &mut Narrator,
    ) -> Result<String, String> {
        let user = self.user(&example.user).await?;
        // Answers to earlier lines (the author's, another example's) are not this one's.
        narrator.drain();
        user.chat(&example.chat)
            .map_err(|e| format!("{} cannot chat: {e}", example.user))?;
        let Some(expect) = &example.expect else {
            return match tokio::time::timeout(SILENT_WINDOW, chat_line(narrator)).await {
                Ok(Some(said)) => Err(format!("expected silence, the bot said {said:?}")),
                Ok(None) | Err(_) => Ok("(silent)".to_owned()),
            };
        };
        let mut last = None;
        let wait = async {
            while let Some(said) = chat_line(narrator).await {
                if said.contains(expect.as_str()) {
                    return Some(said);
                }
                last = Some(said);
            }
            None
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, wait).await {
            Ok(Some(said)) => Ok(said),
            _ => Err(match last {
                Some(said) => format!("expected {expect:?}, the bot said {said:?}"),
                None => format!(
                    "expected {expect:?}, the bot said nothing within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    /// Disconnects every example user.
    pub async fn leave(&mut self) {
        for (_, actor) in self.actors.drain() {
            let _ = actor.leave().await;
        }
    }
}

/// The bot's next line in the channel (its PMs are skipped); `None` once the narrator
/// stopped.
async fn chat_line(narrator: &mut Narrator) -> Option<String> {
    while let Some(answer) = narrator.answers.recv().await {
        if answer.pm_to.is_none() {
            return Some(answer.text);
        }
    }
    None
}
