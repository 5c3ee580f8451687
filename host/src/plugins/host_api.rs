//! The host's side of the plugin callback table: one [`HostApi`] per plugin instance.
//!
//! Every method copies what the plugin lends it into host-owned types before returning
//! (the boundary's memory rule), and every value it returns to the plugin is allocated
//! by the host. Errors go back as `AbiError`s of kind `Host` with a message that says
//! what was refused and why.
//!
//! Subscriptions made while the instance is being created are *staged*: they take effect
//! in one step when the instance starts serving, replacing the previous version's set, so
//! a hot reload neither loses events matching the old set nor delivers events matching
//! the new set to the old version.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use daz_bus::{Bus, Envelope, Priority, RequestError, SubscriberId};
use daz_plugin_abi::{
    AbiError, ERROR_KIND_HOST, HostObj, KeyValue, MetricOp, OutMessage, PublishOutcome, ReplyData,
};
use parking_lot::Mutex;

use crate::metrics::Metrics;

use super::logging;

/// Read-only room state for plugins (filled by the Cytube client).
pub trait RoomDirectory: Send + Sync {
    /// A room's state as JSON, or `None` if the host has no such room.
    fn room_state_json(&self, room: &str) -> Option<String>;

    /// One listed user of a room as JSON: `None` if the host has no such room,
    /// `Some(None)` if the room lists nobody by that name. Keyed: never walks the room.
    fn room_user_json(&self, room: &str, name: &str) -> Option<Option<String>>;

    /// The bot's identity in a room as JSON, or `None` if the host has no such room.
    fn room_me_json(&self, room: &str) -> Option<String>;
}

/// A directory with no rooms (hosts without Cytube connections, tests).
pub struct NoRooms;

impl RoomDirectory for NoRooms {
    fn room_state_json(&self, _room: &str) -> Option<String> {
        None
    }

    fn room_user_json(&self, _room: &str, _name: &str) -> Option<Option<String>> {
        None
    }

    fn room_me_json(&self, _room: &str) -> Option<String> {
        None
    }
}

/// Services shared by every plugin instance.
pub struct HostServices {
    /// The bus.
    pub bus: Bus,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where timers run.
    pub runtime: tokio::runtime::Handle,
    /// Room state.
    pub rooms: Arc<dyn RoomDirectory>,
    next_timer: AtomicU64,
}

impl HostServices {
    /// Bundles the services.
    pub fn new(
        bus: Bus,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        rooms: Arc<dyn RoomDirectory>,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            metrics,
            runtime,
            rooms,
            next_timer: AtomicU64::new(1),
        })
    }
}

struct ApiInner {
    plugin: Arc<str>,
    sub_id: SubscriberId,
    services: Arc<HostServices>,
    /// `Some` while the instance is being created.
    staged: Mutex<Option<Vec<String>>>,
    timers: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    retired: AtomicBool,
}

/// The callback table of one plugin instance. Cheap to clone.
#[derive(Clone)]
pub struct HostApi(Arc<ApiInner>);

fn err(message: impl Into<String>) -> AbiError {
    AbiError::new(ERROR_KIND_HOST, RString::from(message.into()))
}

impl HostApi {
    /// A table for a new instance whose subscriptions are staged until [`HostApi::commit`].
    pub fn staged(plugin: Arc<str>, sub_id: SubscriberId, services: Arc<HostServices>) -> Self {
        Self(Arc::new(ApiInner {
            plugin,
            sub_id,
            services,
            staged: Mutex::new(Some(Vec::new())),
            timers: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
        }))
    }

    /// Makes the staged subscriptions the slot's subscriptions: adds the new ones first,
    /// then removes the old ones that are not in the new set, so no event matching both
    /// is missed in between.
    pub fn commit(&self) {
        let staged = self.0.staged.lock().take().unwrap_or_default();
        let bus = &self.0.services.bus;
        let before = bus.subscriptions(self.0.sub_id);
        for p in &staged {
            if let Err(e) = bus.subscribe(self.0.sub_id, p) {
                tracing::warn!(plugin = %self.0.plugin, pattern = %p, error = %e, "staged subscription refused");
            }
        }
        for p in before.iter().filter(|p| !staged.contains(p)) {
            let _ = bus.unsubscribe(self.0.sub_id, p);
        }
    }

    /// The instance was replaced: cancel its timers and refuse subscription changes from
    /// it (it may still publish until its `shutdown` returns).
    pub fn retire(&self) {
        self.0.retired.store(true, Ordering::Release);
        for (_, t) in self.0.timers.lock().drain() {
            t.abort();
        }
    }

    /// Number of live timers.
    pub fn timer_count(&self) -> usize {
        self.0.timers.lock().len()
    }

    fn envelope(&self, m: &OutMessage<'_>) -> Result<Envelope, AbiError> {
        let mut b = Envelope::builder(m.subject.as_str(), m.payload.as_slice())
            .source(self.0.plugin.clone())
            .priority(priority(m.priority));
        if !m.room.is_empty() {
            b = b.room(m.room.as_str());
        }
        for t in m.tags.iter() {
            b = b.tag(t.as_str());
        }
        if !m.correlation_id.is_empty() {
            b = b.correlation_id(m.correlation_id.as_str());
        }
        b.build()
            .map_err(|e| err(format!("cannot publish on {:?}: {e}", m.subject.as_str())))
    }
}

fn priority(p: u8) -> Priority {
    match p {
        0 => Priority::Normal,
        1 => Priority::High,
        2 => Priority::Urgent,
        _ => Priority::Critical,
    }
}

fn outcome(report: &daz_bus::PublishReport) -> PublishOutcome {
    PublishOutcome {
        delivered: report.delivered,
        dropped: u32::try_from(report.dropped.len()).unwrap_or(u32::MAX),
    }
}

impl HostObj for HostApi {
    fn plugin_name(&self) -> RString {
        RString::from(&*self.0.plugin)
    }

    fn publish(&self, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
        let env = match self.envelope(&message) {
            Ok(e) => e,
            Err(e) => return RResult::RErr(e),
        };
        match self.0.services.bus.publish(env) {
            Ok(report) => RResult::ROk(outcome(&report)),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn send(&self, to: RStr<'_>, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError> {
        let env = match self.envelope(&message) {
            Ok(e) => e,
            Err(e) => return RResult::RErr(e),
        };
        match self.0.services.bus.send(to.as_str(), env) {
            Ok(report) => RResult::ROk(outcome(&report)),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn request(&self, message: OutMessage<'_>, timeout_ms: u64) -> RResult<ReplyData, AbiError> {
        let env = match self.envelope(&message) {
            Ok(e) => e,
            Err(e) => return RResult::RErr(e),
        };
        let result = self.0.services.bus.request(
            env,
            Some(self.0.sub_id),
            Duration::from_millis(timeout_ms),
        );
        match result {
            Ok(reply) => RResult::ROk(ReplyData {
                payload: RVec::from(reply.payload.to_vec()),
                is_error: reply.is_error,
                source: RString::from(&*reply.source),
            }),
            Err(e @ RequestError::SelfRequest { .. }) => RResult::RErr(err(format!(
                "{e} (a plugin's handler cannot wait for its own answer)"
            ))),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn reply(
        &self,
        reply_to: RStr<'_>,
        payload: RSlice<'_, u8>,
        is_error: bool,
    ) -> RResult<(), AbiError> {
        let source = self.0.plugin.clone();
        let bytes: Arc<[u8]> = Arc::from(payload.as_slice());
        let reply = if is_error {
            daz_bus::Reply::error(source, bytes)
        } else {
            daz_bus::Reply::ok(source, bytes)
        };
        match self.0.services.bus.reply(reply_to.as_str(), reply) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn subscribe(&self, pattern: RStr<'_>) -> RResult<(), AbiError> {
        let p = pattern.as_str();
        if let Err(e) = daz_bus::validate_pattern(p) {
            return RResult::RErr(err(format!("cannot subscribe to {p:?}: {e}")));
        }
        if self.0.retired.load(Ordering::Acquire) {
            return RResult::RErr(err(
                "this plugin instance was replaced; it cannot subscribe",
            ));
        }
        if let Some(staged) = self.0.staged.lock().as_mut() {
            if !staged.iter().any(|s| s == p) {
                staged.push(p.to_owned());
            }
            return RResult::ROk(());
        }
        match self.0.services.bus.subscribe(self.0.sub_id, p) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn unsubscribe(&self, pattern: RStr<'_>) -> RResult<bool, AbiError> {
        let p = pattern.as_str();
        if self.0.retired.load(Ordering::Acquire) {
            return RResult::RErr(err(
                "this plugin instance was replaced; it cannot unsubscribe",
            ));
        }
        if let Some(staged) = self.0.staged.lock().as_mut() {
            let before = staged.len();
            staged.retain(|s| s != p);
            return RResult::ROk(staged.len() != before);
        }
        match self.0.services.bus.unsubscribe(self.0.sub_id, p) {
            Ok(found) => RResult::ROk(found),
            Err(e) => RResult::RErr(err(e.to_string())),
        }
    }

    fn set_timer(
        &self,
        subject: RStr<'_>,
        payload: RSlice<'_, u8>,
        delay_ms: u64,
        repeat_ms: u64,
    ) -> RResult<u64, AbiError> {
        if self.0.retired.load(Ordering::Acquire) {
            return RResult::RErr(err(
                "this plugin instance was replaced; it cannot set timers",
            ));
        }
        let subject = subject.as_str().to_owned();
        if let Err(e) = daz_bus::validate_subject(&subject) {
            return RResult::RErr(err(format!("timer subject {subject:?}: {e}")));
        }
        let payload: Arc<[u8]> = Arc::from(payload.as_slice());
        let id = self.0.services.next_timer.fetch_add(1, Ordering::Relaxed);
        let bus = self.0.services.bus.clone();
        let plugin = self.0.plugin.clone();
        let me = Arc::downgrade(&self.0);
        let fire = move || {
            let env = Envelope::builder(subject.as_str(), payload.clone())
                .source("host.timer")
                .build();
            match env {
                Ok(env) => {
                    if let Err(e) = bus.send(&plugin, env) {
                        crate::warn_limited!(plugin = %plugin, timer = id, error = %e, "timer event not delivered");
                    }
                }
                Err(e) => tracing::warn!(plugin = %plugin, error = %e, "timer subject invalid"),
            }
        };
        let task = self.0.services.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            fire();
            if repeat_ms == 0 {
                if let Some(inner) = me.upgrade() {
                    inner.timers.lock().remove(&id);
                }
                return;
            }
            let mut every = tokio::time::interval(Duration::from_millis(repeat_ms));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                fire();
            }
        });
        self.0.timers.lock().insert(id, task.abort_handle());
        RResult::ROk(id)
    }

    fn cancel_timer(&self, id: u64) -> RResult<bool, AbiError> {
        match self.0.timers.lock().remove(&id) {
            Some(t) => {
                t.abort();
                RResult::ROk(true)
            }
            None => RResult::ROk(false),
        }
    }

    fn log(&self, level: u8, message: RStr<'_>, fields: RSlice<'_, KeyValue<'_>>) {
        let kv: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.key.as_str(), f.value.as_str()))
            .collect();
        logging::emit(
            &self.0.plugin,
            logging::level_from_abi(level),
            message.as_str(),
            &kv,
        );
    }

    fn metric(&self, op: MetricOp<'_>) -> RResult<(), AbiError> {
        let labels: Vec<(&str, &str)> = op
            .labels
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        match self.0.services.metrics.plugin_metric(
            &self.0.plugin,
            op.kind,
            op.name.as_str(),
            op.help.as_str(),
            &labels,
            op.value,
        ) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(err(e.0)),
        }
    }

    fn room_state(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
        match self.0.services.rooms.room_state_json(room.as_str()) {
            Some(json) => RResult::ROk(RString::from(json)),
            None => RResult::RErr(err(format!("the host has no room {:?}", room.as_str()))),
        }
    }

    fn now_ms(&self) -> i64 {
        crate::now_ms()
    }

    fn room_user(&self, room: RStr<'_>, name: RStr<'_>) -> RResult<ROption<RString>, AbiError> {
        match self
            .0
            .services
            .rooms
            .room_user_json(room.as_str(), name.as_str())
        {
            Some(user) => RResult::ROk(user.map(RString::from).into()),
            None => RResult::RErr(err(format!("the host has no room {:?}", room.as_str()))),
        }
    }

    fn room_me(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
        match self.0.services.rooms.room_me_json(room.as_str()) {
            Some(json) => RResult::ROk(RString::from(json)),
            None => RResult::RErr(err(format!("the host has no room {:?}", room.as_str()))),
        }
    }
}
