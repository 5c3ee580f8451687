//! # daz-plugin-abi
//!
//! The binary boundary between the daz host and a plugin library: the root module every
//! plugin exports ([`PluginMod`]), the two trait objects ([`HostObj`], the host's
//! services; [`PluginObj`], one plugin instance), the plain `#[repr(C)]` records that
//! cross between them, and [`AbiError`].
//!
//! **This crate's version is the only version the host checks when it loads a plugin.**
//! Everything a plugin author writes against — the `Plugin` trait, the macros, typed
//! events, helpers, the test harness — lives in the SDK crate `daz-plugin-api`, which is
//! compiled *into* each plugin and can therefore evolve in minor versions without making a
//! built plugin unloadable. Plugin authors never use this crate directly.
//!
//! # The memory rule
//!
//! A plugin library may be unmapped (or replaced by another version) while the host
//! keeps running. Anything the plugin allocated — an `RString`, an `RVec`, a boxed trait
//! object, even an `RStr<'static>` pointing into the plugin's read-only data — turns into
//! a dangling pointer when that happens. So:
//!
//! * The host hands events to a plugin **by reference**: [`EventView`] borrows host-owned
//!   memory for the duration of one call and nothing more. A plugin that wants to keep
//!   any part of an event copies it.
//! * Whatever a plugin hands to the host (a published message, an error, exported state,
//!   its metadata) is **copied into host-owned types before the call returns** and the
//!   plugin's allocation is dropped while the library is certainly still mapped.
//! * The host's callback table ([`HostBox`]) is host code and host memory, which is always
//!   mapped, so a plugin may keep it for as long as it lives.
//!
//! # Evolution (see `plugin-api/COMPATIBILITY.md`)
//!
//! [`PluginMod`] and the two trait objects are abi_stable *prefix types*: fields and
//! methods may be appended after the `last_prefix_field` marker in a patch release.
//! The host accepts a plugin built against an older patch (an appended root-module
//! field it lacks reads as absent) and one built against a newer patch. Anything else —
//! a changed field type, a reordered field, a changed signature, a new error-kind
//! *meaning* — is a minor version bump: the host refuses plugins built against another
//! minor version with "rebuild it against …", and plugins whose types differ with an ABI
//! mismatch naming the field.
//!
//! Rules for future additions, one per direction:
//!
//! * **Old plugin, new host.** A method appended to [`PluginObj`] (or a field appended to
//!   [`PluginMod`]) may be missing in an older plugin, so the host calls it only through
//!   abi_stable's optional accessor and treats `None` as "this plugin predates it".
//! * **New plugin, old host.** A method appended to [`HostObj`] may be missing in an older
//!   host's vtable. Every such method therefore has a default body in the trait, which
//!   abi_stable compiles into the *plugin*: on a host whose vtable lacks the method, the
//!   call runs that body instead of jumping through a missing pointer. The default body
//!   returns an [`AbiError`] of kind [`ERROR_KIND_UNSUPPORTED`] (it never panics), and the
//!   SDK falls back to an older method where one gives the same answer (a keyed room
//!   lookup reads the whole-room JSON instead). A host-side method appended without a
//!   default body would abort a new plugin on an old host: never do that.

// abi_stable's `#[sabi_trait]` expands to impl blocks inside a const item.
#![allow(non_local_definitions)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

/// The version of this crate: the version of the plugin ABI, the only one the host
/// checks.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Error kinds carried across the boundary in [`AbiError::kind`].
///
/// A plain `u8` rather than an enum so that new kinds can be added without changing the
/// layout; unknown values are treated as [`ERROR_KIND_ERROR`].
pub const ERROR_KIND_ERROR: u8 = 0;
/// The plugin panicked; the SDK caught the panic inside the plugin.
pub const ERROR_KIND_PANIC: u8 = 1;
/// The plugin refused the configuration it was given.
pub const ERROR_KIND_CONFIG: u8 = 2;
/// The plugin refused the state handed over by a previous version.
pub const ERROR_KIND_STATE: u8 = 3;
/// A host service refused the call (unknown subject, full mailbox, timeout…).
pub const ERROR_KIND_HOST: u8 = 4;
/// The host does not offer the method: it was built against an older patch of this ABI
/// that predates it (see "Evolution" in the module docs). The SDK falls back to an older
/// method where one gives the same answer.
pub const ERROR_KIND_UNSUPPORTED: u8 = 5;

/// An error crossing the boundary in either direction.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiError {
    /// One of the `ERROR_KIND_*` constants.
    pub kind: u8,
    /// Human-readable message: what failed, why, and what to do.
    pub message: RString,
}

impl AbiError {
    /// Builds an error of the given kind.
    pub fn new(kind: u8, message: impl Into<RString>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Plugin metadata, returned by [`PluginMod::info`].
///
/// The strings point into the plugin's static data: the host copies them at once.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The plugin's name: the key of its `[plugins.<name>]` table and its bus name.
    pub name: RStr<'static>,
    /// The plugin crate's own version.
    pub version: RStr<'static>,
    /// The ABI version ([`ABI_VERSION`], this crate's) the plugin was compiled against.
    pub api_version: RStr<'static>,
    /// Whether the plugin was built with `panic = "unwind"`. A plugin built with
    /// `panic = "abort"` would take the whole host down on its first panic, so the host
    /// refuses it.
    pub panic_unwind: bool,
    /// One line describing the plugin.
    pub description: RStr<'static>,
}

/// A borrowed view of one bus event, valid for the duration of one call.
///
/// Empty strings stand for "absent" (no room, no correlation id, no reply subject).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Unique, sortable id (a ULID in its 26-character text form).
    pub id: RStr<'a>,
    /// The subject it was published on.
    pub subject: RStr<'a>,
    /// The Cytube room it concerns, or empty.
    pub room: RStr<'a>,
    /// Who published it: `host`, `cytube:<room>`, or a plugin name.
    pub source: RStr<'a>,
    /// 0 normal, 1 high, 2 urgent, 3 critical.
    pub priority: u8,
    /// Free-form tags (`backlog`, `self`, …).
    pub tags: RSlice<'a, RStr<'a>>,
    /// Correlates a request with its reply, or empty.
    pub correlation_id: RStr<'a>,
    /// Where a reply goes (for requests), or empty.
    pub reply_to: RStr<'a>,
    /// Publish time, unix epoch milliseconds.
    pub timestamp_ms: i64,
    /// The payload: JSON bytes.
    pub payload: RSlice<'a, u8>,
}

/// A message a plugin asks the host to publish or send; borrowed for one call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct OutMessage<'a> {
    /// The subject (no wildcards).
    pub subject: RStr<'a>,
    /// JSON bytes.
    pub payload: RSlice<'a, u8>,
    /// The room, or empty.
    pub room: RStr<'a>,
    /// 0 normal, 1 high, 2 urgent, 3 critical.
    pub priority: u8,
    /// Tags to attach.
    pub tags: RSlice<'a, RStr<'a>>,
    /// A correlation id, or empty.
    pub correlation_id: RStr<'a>,
}

/// What happened to a published message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// How many mailboxes received it.
    pub delivered: u32,
    /// How many deliveries were dropped because a mailbox was full (the message itself
    /// or a lower-priority one that made room for it).
    pub dropped: u32,
}

/// A reply to a request; host-owned.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ReplyData {
    /// JSON bytes.
    pub payload: RVec<u8>,
    /// The responder answered with an error.
    pub is_error: bool,
    /// The responder's name.
    pub source: RString,
}

/// A key/value pair (log fields, metric labels).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct KeyValue<'a> {
    /// The key.
    pub key: RStr<'a>,
    /// The value.
    pub value: RStr<'a>,
}

/// Metric operation kinds for [`MetricOp::kind`].
pub const METRIC_COUNTER_ADD: u8 = 0;
/// Set a gauge.
pub const METRIC_GAUGE_SET: u8 = 1;
/// Add to a gauge (may be negative).
pub const METRIC_GAUGE_ADD: u8 = 2;
/// Observe a value into a histogram.
pub const METRIC_HISTOGRAM_OBSERVE: u8 = 3;

/// One metric update; the host registers the metric on first use.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MetricOp<'a> {
    /// One of the `METRIC_*` constants.
    pub kind: u8,
    /// Metric name, without the `daz_plugin_` prefix the host adds.
    pub name: RStr<'a>,
    /// Help text (used on first registration).
    pub help: RStr<'a>,
    /// Extra labels (the host always adds `plugin`). Label names must be the same on
    /// every update of one metric.
    pub labels: RSlice<'a, KeyValue<'a>>,
    /// The value.
    pub value: f64,
}

/// Log levels for [`HostObj::log`].
pub const LOG_ERROR: u8 = 1;
/// Warning.
pub const LOG_WARN: u8 = 2;
/// Information.
pub const LOG_INFO: u8 = 3;
/// Debugging detail.
pub const LOG_DEBUG: u8 = 4;
/// Tracing detail.
pub const LOG_TRACE: u8 = 5;

/// The services the host offers one plugin instance.
///
/// Implemented by the host (and by the SDK's testing harness). Every call is
/// synchronous; `request` blocks the calling thread until the reply arrives or the
/// timeout passes — the reply is delivered straight to the waiting caller, never through
/// a mailbox, so a request cannot deadlock behind the events it waits for.
#[sabi_trait]
pub trait HostObj: Send + Sync + Clone {
    /// The name of the plugin this handle belongs to.
    fn plugin_name(&self) -> RString;

    /// Publishes to every subscriber of the subject.
    fn publish(&self, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError>;

    /// Sends to exactly the named plugin (or host component).
    fn send(&self, to: RStr<'_>, message: OutMessage<'_>) -> RResult<PublishOutcome, AbiError>;

    /// Sends a request to one responder and waits for its reply.
    fn request(&self, message: OutMessage<'_>, timeout_ms: u64) -> RResult<ReplyData, AbiError>;

    /// Answers a request received as an event with a `reply_to`.
    fn reply(
        &self,
        reply_to: RStr<'_>,
        payload: RSlice<'_, u8>,
        is_error: bool,
    ) -> RResult<(), AbiError>;

    /// Subscribes this plugin to a subject pattern (`*` one token, `>` the rest).
    fn subscribe(&self, pattern: RStr<'_>) -> RResult<(), AbiError>;

    /// Removes a subscription; `Ok(false)` if there was none.
    fn unsubscribe(&self, pattern: RStr<'_>) -> RResult<bool, AbiError>;

    /// Delivers `payload` to this plugin on `subject` after `delay_ms`, then every
    /// `repeat_ms` if that is not zero. Returns the timer id.
    fn set_timer(
        &self,
        subject: RStr<'_>,
        payload: RSlice<'_, u8>,
        delay_ms: u64,
        repeat_ms: u64,
    ) -> RResult<u64, AbiError>;

    /// Cancels a timer; `Ok(false)` if it had already fired (once) or never existed.
    fn cancel_timer(&self, id: u64) -> RResult<bool, AbiError>;

    /// Logs through the host's `tracing`, with the plugin's name as the target.
    fn log(&self, level: u8, message: RStr<'_>, fields: RSlice<'_, KeyValue<'_>>);

    /// Updates a metric in the host's Prometheus registry.
    fn metric(&self, op: MetricOp<'_>) -> RResult<(), AbiError>;

    /// The host's read-only state of a Cytube room, as JSON.
    fn room_state(&self, room: RStr<'_>) -> RResult<RString, AbiError>;

    /// Milliseconds since the unix epoch, by the host's clock.
    #[sabi(last_prefix_field)]
    fn now_ms(&self) -> i64;

    /// One listed user of a room, as the JSON of a Cytube `User` object (`name`, `rank`,
    /// `profile`, `meta`); `Ok(None)` if the room lists no such user. Names compare
    /// ASCII-case-insensitively, as the server compares them. A keyed lookup: its cost
    /// does not grow with the room, unlike [`HostObj::room_state`].
    ///
    /// Appended in 0.1.x: on an older host the default body answers
    /// [`ERROR_KIND_UNSUPPORTED`].
    fn room_user(&self, room: RStr<'_>, name: RStr<'_>) -> RResult<ROption<RString>, AbiError> {
        let _ = (room, name);
        RResult::RErr(unsupported("room_user"))
    }

    /// The bot's own identity in a room as JSON: `name`, `logged_in`, `guest`, `rank`
    /// (−1 until the server sends one) and `login_error`. A keyed lookup like
    /// [`HostObj::room_user`].
    ///
    /// Appended in 0.1.x: on an older host the default body answers
    /// [`ERROR_KIND_UNSUPPORTED`].
    fn room_me(&self, room: RStr<'_>) -> RResult<RString, AbiError> {
        let _ = room;
        RResult::RErr(unsupported("room_me"))
    }
}

/// The error a default body of an appended [`HostObj`] method returns on a host that
/// predates the method.
fn unsupported(method: &str) -> AbiError {
    AbiError::new(
        ERROR_KIND_UNSUPPORTED,
        format!(
            "this host predates the plugin-api method {method}; upgrade the host (daz-plugin-abi {ABI_VERSION} or later)"
        ),
    )
}

/// The host's callback table as a plugin holds it.
pub type HostBox = HostObj_TO<'static, RArc<()>>;

/// One plugin instance as the host drives it.
///
/// The SDK implements this for every `Plugin` and catches panics inside each
/// method, so none ever unwinds into the host.
#[sabi_trait]
pub trait PluginObj: Send {
    /// Handles one event.
    fn on_event(&mut self, event: EventView<'_>) -> RResult<(), AbiError>;

    /// Serializes the state to hand to the next version (hot reload) or to persist.
    fn export_state(&mut self) -> RResult<RVec<u8>, AbiError>;

    /// Stops the instance: release resources, join threads. The host drops the instance
    /// right after, while its library is still mapped.
    #[sabi(last_prefix_field)]
    fn shutdown(&mut self) -> RResult<(), AbiError>;
}

/// A plugin instance as the host holds it.
pub type PluginBox = PluginObj_TO<'static, RBox<()>>;

/// The constructor's signature: `(host, config JSON, previous state) -> instance`.
pub type CreateFn = extern "C" fn(
    host: HostBox,
    config_json: RStr<'_>,
    previous_state: ROption<RSlice<'_, u8>>,
) -> RResult<PluginBox, AbiError>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin's metadata.
    pub info: extern "C" fn() -> PluginInfo,

    /// Creates an instance from its configuration (a JSON object) and, on a hot reload,
    /// the state exported by the previous version.
    #[sabi(last_prefix_field)]
    pub create: extern "C" fn(
        host: HostBox,
        config_json: RStr<'_>,
        previous_state: ROption<RSlice<'_, u8>>,
    ) -> RResult<PluginBox, AbiError>,

    /// The plugin's manifest as JSON (the commands it declares, …). Appended after the
    /// prefix: a plugin built against a plugin-api that predates a field appended here
    /// still loads, and the host reads the missing entry as absent.
    pub manifest: extern "C" fn() -> RString,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "daz_plugin";
    const NAME: &'static str = "daz plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The exported symbol name of the root module (abi_stable 0.11's mangled name). The
/// SDK's `export_plugin!` macro must use this exact literal; a test keeps them equal.
pub const ROOT_MODULE_SYMBOL: &str = abi_stable::library::ROOT_MODULE_LOADER_NAME;
