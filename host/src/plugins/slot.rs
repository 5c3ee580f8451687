//! A plugin slot: the mailbox, the worker thread and the instance currently serving.
//!
//! The mailbox and the bus registration belong to the **slot**, not to an instance: when
//! a new version is swapped in, events published meanwhile wait in the same mailbox and
//! the new version handles them. Nothing is lost or handled twice.
//!
//! The worker thread is the only thread that ever calls into the instance, so every
//! lifecycle step happens *between* two events: the worker reads its control channel
//! (swap, rollback, stop) before the next event. What a swap and a rollback do on the
//! worker (export the state, create the new instance, switch, shut the old one down,
//! probation) is the reload transaction's, in [`super::reload`]; this module owns the
//! mechanics around it: the worker's loop, delivery, the handler deadline, failure
//! counting, and quarantine (a plugin that keeps panicking outside probation is
//! unsubscribed and its mailbox drained, and counted, until an operator reloads or
//! re-enables it).

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use crossbeam_channel::{Receiver, Sender};
use daz_bus::{Bus, Envelope, Mailbox, Priority, SubscriberId};
use daz_plugin_abi::{EventView, PluginBox};
use daz_plugin_api::ErrorKind;
use parking_lot::Mutex;
use serde::Serialize;
use smallvec::SmallVec;

use super::{
    control,
    host_api::{HostApi, HostServices},
    loader::LoadedLibrary,
    reload::{Probation, SwapError, SwapReport},
};
use crate::metrics::subject_prefix;

/// Subject of the envelope that wakes a worker to read its control channel.
const WAKE_SUBJECT: &str = "_host.slot.wake";

/// Lifecycle settings of a slot.
#[derive(Debug, Clone)]
pub struct SlotSettings {
    /// Max time for `create`.
    pub create_timeout: Duration,
    /// Max time for one `on_event` before the slot is reported stuck.
    pub handler_deadline: Duration,
    /// Probation after a swap.
    pub probation: Duration,
    /// Failures during probation that trigger a rollback.
    pub probation_failures: u32,
    /// Panics within `quarantine_window` that quarantine the plugin.
    pub quarantine_panics: u32,
    /// Window for `quarantine_panics`.
    pub quarantine_window: Duration,
}

/// Where a slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// No instance yet.
    Starting,
    /// An instance is serving events.
    Serving,
    /// Stopped receiving events after repeated panics.
    Quarantined,
    /// The first load failed; nothing serves.
    Failed,
    /// Stopped (disabled or removed).
    Stopped,
}

/// What the API and health endpoints show about a slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Lifecycle state.
    pub state: SlotState,
    /// Version serving (if any).
    pub version: Option<String>,
    /// SHA-256 of the file serving.
    pub sha256: Option<String>,
    /// When the serving version was loaded (unix ms).
    pub loaded_at_ms: Option<i64>,
    /// The version a rollback would return to.
    pub previous_version: Option<String>,
    /// Superseded versions of this plugin kept mapped.
    pub leaked_versions: u32,
    /// The last error, in words.
    pub last_error: Option<String>,
    /// Probation ends at (unix ms), if on probation.
    pub probation_until_ms: Option<i64>,
}

/// A request to the worker, read between two events.
pub(super) enum Command {
    /// Swap this library in (see [`super::reload`]).
    Swap {
        lib: Arc<LoadedLibrary>,
        config_json: String,
        done: Sender<Result<SwapReport, SwapError>>,
    },
    /// Roll back to the previous version.
    Rollback {
        done: Sender<Result<SwapReport, SwapError>>,
    },
    /// Shut the instance down and end the worker.
    Stop { done: Sender<()> },
}

/// State shared between a slot's worker and everybody else.
pub struct SlotShared {
    /// Plugin name (= bus name).
    pub name: Arc<str>,
    /// The slot's mailbox.
    pub mailbox: Arc<Mailbox>,
    /// The slot's bus registration.
    pub sub_id: SubscriberId,
    pub(super) status: Mutex<SlotStatus>,
    /// Unix ms at which the running handler started, 0 when idle.
    busy_since_ms: AtomicI64,
    stuck: AtomicBool,
    handled: AtomicU64,
    panics: AtomicU64,
    errors: AtomicU64,
    /// Hashes refused for this plugin (failed load or rolled back). Owned by the manager
    /// and shared with every slot the plugin gets, so a refusal outlives a stop and a
    /// restart of the slot: it holds for the life of the process.
    rejected: Arc<Mutex<HashSet<String>>>,
    /// The library of the instance serving now (set by the worker at every switch).
    pub(super) serving: Mutex<Option<Arc<LoadedLibrary>>>,
    control: Sender<Command>,
}

impl SlotShared {
    /// A snapshot of the status.
    pub fn status(&self) -> SlotStatus {
        self.status.lock().clone()
    }

    /// Events handled so far.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Panics so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether the running handler is past its deadline.
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// The library serving now, if any.
    pub fn serving_lib(&self) -> Option<Arc<LoadedLibrary>> {
        self.serving.lock().clone()
    }

    /// Whether a file hash was refused for this plugin.
    pub fn is_rejected(&self, sha256: &str) -> bool {
        self.rejected.lock().contains(sha256)
    }

    /// Remembers a refused hash.
    pub fn reject(&self, sha256: &str) {
        self.rejected.lock().insert(sha256.to_owned());
    }

    /// Forgets a refused hash (an operator insisted and it loaded).
    pub fn forget_rejected(&self, sha256: &str) {
        self.rejected.lock().remove(sha256);
    }

    /// Records a load error for the status.
    pub fn set_error(&self, message: String) {
        let mut st = self.status.lock();
        st.last_error = Some(message);
        if st.state == SlotState::Starting {
            st.state = SlotState::Failed;
        }
    }

    /// Checks the handler deadline; returns `true` when the slot just became stuck.
    pub fn check_stuck(&self, deadline: Duration, now_ms: i64) -> bool {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        let over =
            since != 0 && now_ms - since > i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        over && !self.stuck.swap(true, Ordering::Relaxed)
    }

    /// How long the running handler has been running, if any.
    pub fn busy_for_ms(&self, now_ms: i64) -> Option<i64> {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| now_ms - since)
    }

    fn command(&self, cmd: Command) -> bool {
        if self.control.send(cmd).is_err() {
            return false;
        }
        // Wake the worker if it is parked on an empty mailbox.
        if let Ok(env) = Envelope::builder(WAKE_SUBJECT, &b"null"[..])
            .priority(Priority::Critical)
            .source("host")
            .build()
        {
            let _ = self.mailbox.push(Arc::new(env));
        }
        true
    }

    pub(super) fn ask(
        &self,
        make: impl FnOnce(Sender<Result<SwapReport, SwapError>>) -> Command,
        timeout: Duration,
    ) -> Result<SwapReport, SwapError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let unresponsive = || SwapError::Unresponsive {
            plugin: self.name.to_string(),
            ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        if !self.command(make(tx)) {
            return Err(unresponsive());
        }
        rx.recv_timeout(timeout).map_err(|_| unresponsive())?
    }
}

/// A running slot.
pub struct Slot {
    /// Shared state.
    pub shared: Arc<SlotShared>,
    thread: Option<JoinHandle<()>>,
}

impl Slot {
    /// Registers the slot's mailbox on the bus and starts its worker (with no instance).
    pub fn start(
        name: &str,
        mailbox: Arc<Mailbox>,
        services: Arc<HostServices>,
        settings: SlotSettings,
        rejected: Arc<Mutex<HashSet<String>>>,
    ) -> Result<Slot, String> {
        let sub_id = services
            .bus
            .register(name, mailbox.clone())
            .map_err(|e| e.to_string())?;
        let (control, control_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(SlotShared {
            name: Arc::from(name),
            mailbox,
            sub_id,
            status: Mutex::new(SlotStatus {
                state: SlotState::Starting,
                version: None,
                sha256: None,
                loaded_at_ms: None,
                previous_version: None,
                leaked_versions: 0,
                last_error: None,
                probation_until_ms: None,
            }),
            busy_since_ms: AtomicI64::new(0),
            stuck: AtomicBool::new(false),
            handled: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rejected,
            serving: Mutex::new(None),
            control,
        });
        let bus = services.bus.clone();
        let metrics = &services.metrics;
        let worker = Worker {
            delivered: metrics.bus_delivered.with_label_values(&[name]),
            duration: metrics.handler_duration.with_label_values(&[name]),
            panics_metric: metrics.panics.with_label_values(&[name]),
            errors_metric: metrics.errors.with_label_values(&[name]),
            depth: metrics.mailbox_depth.with_label_values(&[name]),
            shared: shared.clone(),
            services,
            settings,
            control: control_rx,
            current: None,
            config_json: String::new(),
            previous: None,
            probation: None,
            panic_times: VecDeque::new(),
            quarantined: false,
        };
        let thread = std::thread::Builder::new()
            .name(format!("daz-plugin-{name}"))
            .spawn(move || worker.run())
            .map_err(|e| format!("{name}: cannot start its worker thread: {e}"));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                shared.mailbox.close();
                bus.unregister(sub_id);
                return Err(e);
            }
        };
        Ok(Slot {
            shared,
            thread: Some(thread),
        })
    }

    /// Stops the instance (shutdown), unregisters from the bus and joins the worker,
    /// waiting at most `timeout` (a stuck worker is abandoned).
    pub fn stop(mut self, bus: &Bus, timeout: Duration) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let answered =
            self.shared.command(Command::Stop { done: tx }) && rx.recv_timeout(timeout).is_ok();
        bus.unregister(self.shared.sub_id);
        self.shared.mailbox.close();
        if answered {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::error!(plugin = %self.shared.name, "worker did not stop in time; abandoning its thread");
        }
        self.shared.status.lock().state = SlotState::Stopped;
    }
}

/// The instance serving, with the library it came from and its host API.
pub(super) struct Instance {
    pub(super) obj: PluginBox,
    pub(super) lib: Arc<LoadedLibrary>,
    pub(super) api: HostApi,
}

/// The slot's thread: the only one that calls into the instance.
pub(super) struct Worker {
    /// What the rest of the host sees of this slot.
    pub(super) shared: Arc<SlotShared>,
    /// The bus, metrics and timers instances are given.
    pub(super) services: Arc<HostServices>,
    pub(super) settings: SlotSettings,
    control: Receiver<Command>,
    /// The instance serving; `None` before the first load, after a quarantine or a stop.
    pub(super) current: Option<Instance>,
    /// The configuration the serving instance was created with (a rollback re-creates
    /// the previous version with it).
    pub(super) config_json: String,
    /// The library a rollback returns to (still mapped).
    pub(super) previous: Option<Arc<LoadedLibrary>>,
    /// Set after a swap to a new version, until `settings.probation` has passed.
    pub(super) probation: Option<Probation>,
    /// Recent panics, for `settings.quarantine_panics` within the window.
    pub(super) panic_times: VecDeque<Instant>,
    pub(super) quarantined: bool,
    delivered: prometheus::IntCounter,
    duration: prometheus::Histogram,
    panics_metric: prometheus::IntCounter,
    errors_metric: prometheus::IntCounter,
    depth: prometheus::IntGauge,
}

enum Flow {
    Continue,
    Exit,
}

impl Worker {
    fn run(mut self) {
        let mut batch: Vec<Arc<Envelope>> = Vec::with_capacity(64);
        loop {
            while let Ok(cmd) = self.control.try_recv() {
                if let Flow::Exit = self.handle_command(cmd) {
                    return;
                }
            }
            if self.shared.mailbox.drain_into(&mut batch, 64) == 0 {
                if self.shared.mailbox.is_closed() && self.control.is_empty() {
                    // Closed without a Stop: shut the instance down and leave.
                    self.stop_instance();
                    return;
                }
                self.depth.set(0);
                self.shared.mailbox.wait_nonempty(Duration::from_secs(1));
                continue;
            }
            self.depth
                .set(i64::try_from(self.shared.mailbox.len()).unwrap_or(i64::MAX));
            for env in batch.drain(..) {
                if &*env.subject == WAKE_SUBJECT {
                    // Commands are read before the next event.
                    while let Ok(cmd) = self.control.try_recv() {
                        if let Flow::Exit = self.handle_command(cmd) {
                            return;
                        }
                    }
                    continue;
                }
                self.deliver(&env);
                if !self.control.is_empty() {
                    while let Ok(cmd) = self.control.try_recv() {
                        if let Flow::Exit = self.handle_command(cmd) {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Swap {
                lib,
                config_json,
                done,
            } => {
                let r = self.swap(lib, config_json);
                let _ = done.send(r);
                Flow::Continue
            }
            Command::Rollback { done } => {
                let r = self.rollback("requested by an operator");
                let _ = done.send(r);
                Flow::Continue
            }
            Command::Stop { done } => {
                self.stop_instance();
                let _ = done.send(());
                Flow::Exit
            }
        }
    }

    fn stop_instance(&mut self) {
        *self.shared.serving.lock() = None;
        if let Some(inst) = self.current.take() {
            inst.api.retire();
            let mut obj = inst.obj;
            if let Err(e) = obj.shutdown().into_result() {
                tracing::warn!(plugin = %self.shared.name, error = %e.message, "plugin shutdown returned an error");
            }
            drop(obj);
            self.retired(&inst.lib);
            control::announce_stopped(&self.services.bus, &self.shared.name, "stopped by the host");
        }
        let mut st = self.shared.status.lock();
        st.state = SlotState::Stopped;
    }

    pub(super) fn retired(&self, lib: &LoadedLibrary) {
        // The library stays mapped for the life of the process (see loader docs).
        if lib.mark_retired(&self.services.metrics) {
            self.shared.status.lock().leaked_versions += 1;
        }
    }

    pub(super) fn serving(&self, lib: &LoadedLibrary) {
        if lib.mark_serving(&self.services.metrics) {
            let mut st = self.shared.status.lock();
            st.leaked_versions = st.leaked_versions.saturating_sub(1);
        }
    }

    fn deliver(&mut self, env: &Envelope) {
        let Some(inst) = self.current.as_mut() else {
            // No instance (first load failed, or quarantined): the event cannot be
            // handled. Count it as dropped so the loss is visible.
            self.services
                .metrics
                .bus_dropped
                .with_label_values(&[
                    &*self.shared.name,
                    subject_prefix(&env.subject),
                    env.priority.as_str(),
                ])
                .inc();
            return;
        };
        let mut id_buf = [0u8; ulid::ULID_LEN];
        let id: &str = env.id.array_to_str(&mut id_buf);
        let tags: SmallVec<[RStr<'_>; 4]> = env.tags.iter().map(|t| RStr::from_str(t)).collect();
        let view = EventView {
            id: RStr::from_str(id),
            subject: RStr::from_str(&env.subject),
            room: RStr::from_str(env.room.as_deref().unwrap_or("")),
            source: RStr::from_str(&env.source),
            priority: env.priority as u8,
            tags: RSlice::from_slice(&tags),
            correlation_id: RStr::from_str(env.correlation_id.as_deref().unwrap_or("")),
            reply_to: RStr::from_str(env.reply_to.as_deref().unwrap_or("")),
            timestamp_ms: env.timestamp_ms,
            payload: RSlice::from_slice(&env.payload),
        };
        self.shared
            .busy_since_ms
            .store(crate::now_ms().max(1), Ordering::Relaxed);
        let started = Instant::now();
        let result = inst.obj.on_event(view);
        self.duration.observe(started.elapsed().as_secs_f64());
        self.shared.busy_since_ms.store(0, Ordering::Relaxed);
        if self.shared.stuck.swap(false, Ordering::Relaxed) {
            self.services
                .metrics
                .stuck
                .with_label_values(&[&*self.shared.name])
                .set(0);
            tracing::warn!(plugin = %self.shared.name, "handler returned after being reported stuck");
        }
        self.shared.handled.fetch_add(1, Ordering::Relaxed);
        self.delivered.inc();
        if let Some(e) = result.into_result().err() {
            let kind = ErrorKind::from_abi(e.kind);
            let message = e.message.into_string();
            self.on_failure(kind, message, env);
        }
    }

    fn on_failure(&mut self, kind: ErrorKind, message: String, env: &Envelope) {
        let name = self.shared.name.clone();
        let panicked = kind == ErrorKind::Panic;
        if panicked {
            self.shared.panics.fetch_add(1, Ordering::Relaxed);
            self.panics_metric.inc();
            tracing::warn!(plugin = %name, subject = %env.subject, error = %message, "plugin panicked handling an event");
        } else {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            self.errors_metric.inc();
            tracing::debug!(plugin = %name, subject = %env.subject, error = %message, "plugin returned an error");
        }
        self.shared.status.lock().last_error = Some(message.clone());
        if let Some(reply_to) = &env.reply_to {
            // The requester is waiting; answer with the error unless the plugin already
            // replied (then the inbox is gone and this is refused, harmlessly).
            let payload =
                serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
            let _ = self
                .services
                .bus
                .reply(reply_to, daz_bus::Reply::error(name.clone(), payload));
        }
        let now = Instant::now();
        if let Some(p) = self.probation.as_mut()
            && now < p.until
        {
            p.failures += 1;
            if p.failures >= self.settings.probation_failures {
                let reason = format!(
                    "{} failures within its probation, the last: {message}",
                    p.failures
                );
                match self.rollback(&reason) {
                    Ok(_) => return,
                    Err(e) => tracing::error!(plugin = %name, error = %e, "rollback failed"),
                }
            }
        }
        if panicked {
            self.panic_times.push_back(now);
            while self
                .panic_times
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.settings.quarantine_window)
            {
                self.panic_times.pop_front();
            }
            if self.panic_times.len() >= self.settings.quarantine_panics as usize {
                self.quarantine(&message);
            }
        }
    }

    fn quarantine(&mut self, last: &str) {
        if self.quarantined {
            return;
        }
        self.quarantined = true;
        let name = self.shared.name.clone();
        tracing::error!(
            plugin = %name,
            panics = self.panic_times.len(),
            last_error = %last,
            "plugin quarantined after repeated panics: it receives no events until reloaded or re-enabled"
        );
        self.services
            .metrics
            .quarantined
            .with_label_values(&[&*name])
            .set(1);
        for p in self.services.bus.subscriptions(self.shared.sub_id) {
            let _ = self.services.bus.unsubscribe(self.shared.sub_id, &p);
        }
        let mut drained = Vec::new();
        self.shared.mailbox.drain_into(&mut drained, usize::MAX);
        for env in drained.iter().filter(|e| &*e.subject != WAKE_SUBJECT) {
            self.services
                .metrics
                .bus_dropped
                .with_label_values(&[&*name, subject_prefix(&env.subject), env.priority.as_str()])
                .inc();
        }
        *self.shared.serving.lock() = None;
        if let Some(inst) = self.current.take() {
            inst.api.retire();
            let mut obj = inst.obj;
            let _ = obj.shutdown();
            drop(obj);
            self.retired(&inst.lib);
        }
        control::announce_quarantined(&self.services.bus, &name, last);
        let mut st = self.shared.status.lock();
        st.state = SlotState::Quarantined;
        st.last_error = Some(format!("quarantined after repeated panics: {last}"));
    }
}
