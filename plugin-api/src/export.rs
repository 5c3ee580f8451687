//! Turning a [`Plugin`] into a loadable library: the [`crate::export_plugin!`] macro and
//! the adapter behind it.
//!
//! Every entry point the host can call is wrapped in `catch_unwind` *inside the plugin*:
//! a panic that crossed the `extern "C"` boundary would abort the host, and one inside an
//! abi_stable trait-object method makes abi_stable exit the process. The adapter turns
//! each panic into an error of kind `Panic` carrying the panic message.
//!
//! Dropping the plugin is an entry point too: the host drops the trait object through
//! abi_stable's `extern "C"` destructor, which aborts the process on a panic. The
//! adapter drops the author's value inside `catch_unwind` and reports a panic there
//! through the host's log instead.

use std::{
    mem::ManuallyDrop,
    panic::{AssertUnwindSafe, catch_unwind},
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};

use crate::{Error, Event, Host, Plugin, error::ErrorKind, state::SavedState};
use daz_plugin_abi::{
    self as abi, AbiError, EventView, HostBox, PluginBox, PluginInfo, PluginMod, PluginModRef,
    PluginObj,
};

/// The version of this SDK, compiled into every plugin built with it.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Extracts the message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn guarded<T>(
    what: &str,
    plugin: &str,
    f: impl FnOnce() -> crate::Result<T>,
) -> RResult<T, AbiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into_abi()),
        Err(payload) => RResult::RErr(
            Error::with_kind(
                ErrorKind::Panic,
                format!(
                    "plugin {plugin} panicked in {what}: {}",
                    panic_message(&*payload)
                ),
            )
            .into_abi(),
        ),
    }
}

/// The host the panic hook logs through: the most recently created instance's (a plugin
/// library normally serves one slot; each version is its own library with its own copy
/// of this static and of std's hook).
static PANIC_LOG: std::sync::Mutex<Option<HostBox>> = std::sync::Mutex::new(None);

/// Routes panics inside this plugin through the host's log instead of std's default
/// hook, which prints a raw `thread '…' panicked at …` message (and, with
/// `RUST_BACKTRACE`, a backtrace) straight to the host's stderr, outside its log format.
/// The panic itself is still caught by [`guarded`] and reported as an error.
fn install_panic_hook(host: &HostBox) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    *PANIC_LOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(host.clone());
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = panic_message(info.payload());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let host = PANIC_LOG
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            match host {
                Some(host) => {
                    let fields = [
                        abi::KeyValue {
                            key: RStr::from_str("location"),
                            value: RStr::from_str(&location),
                        },
                        abi::KeyValue {
                            key: RStr::from_str("panic"),
                            value: RStr::from_str(&message),
                        },
                    ];
                    host.log(
                        abi::LOG_ERROR,
                        RStr::from_str("plugin panicked (caught; reported as an error)"),
                        RSlice::from_slice(&fields),
                    );
                }
                None => eprintln!("plugin panicked at {location}: {message}"),
            }
        }));
    });
}

/// The trait object the host drives, wrapping the author's plugin.
struct Adapter<P: Plugin> {
    /// The author's plugin; dropped by hand in [`Adapter`]'s `Drop`, inside
    /// `catch_unwind`, because a panic in its destructor would otherwise unwind into
    /// abi_stable's `extern "C"` destructor and abort the host.
    plugin: ManuallyDrop<P>,
    /// Where a panic in the plugin's destructor is reported.
    host: Host,
}

impl<P: Plugin> Drop for Adapter<P> {
    fn drop(&mut self) {
        // SAFETY: `plugin` is dropped exactly once, here, and never used afterwards.
        let plugin = &mut self.plugin;
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(plugin) }));
        if let Err(payload) = result {
            let message = format!(
                "plugin {} panicked while being dropped: {}",
                P::NAME,
                panic_message(&*payload)
            );
            // The payload's own destructor is plugin code too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            let _ = catch_unwind(AssertUnwindSafe(|| self.host.error(&message)));
        }
    }
}

impl<P: Plugin> PluginObj for Adapter<P> {
    fn on_event(&mut self, event: EventView<'_>) -> RResult<(), AbiError> {
        let plugin = &mut self.plugin;
        guarded("on_event", P::NAME, || {
            plugin.on_event(&Event::from_view(event))
        })
    }

    fn export_state(&mut self) -> RResult<RVec<u8>, AbiError> {
        let plugin = &mut self.plugin;
        guarded("export_state", P::NAME, || match plugin.export_state()? {
            None => Ok(RVec::new()),
            Some(state) => Ok(RVec::from(
                SavedState::from_schema(P::NAME, &state)?.to_bytes()?,
            )),
        })
    }

    fn shutdown(&mut self) -> RResult<(), AbiError> {
        let plugin = &mut self.plugin;
        guarded("shutdown", P::NAME, || plugin.shutdown())
    }
}

/// The root module's `create` for plugin type `P`.
pub extern "C" fn create<P: Plugin>(
    host: HostBox,
    config_json: RStr<'_>,
    previous_state: ROption<RSlice<'_, u8>>,
) -> RResult<PluginBox, AbiError> {
    install_panic_hook(&host);
    create_instance::<P>(host, config_json, previous_state)
}

/// `create` without the panic hook: the testing harness runs plugins inside the test
/// process, whose panics (failed assertions) must keep std's hook.
pub(crate) fn create_instance<P: Plugin>(
    host: HostBox,
    config_json: RStr<'_>,
    previous_state: ROption<RSlice<'_, u8>>,
) -> RResult<PluginBox, AbiError> {
    guarded("create", P::NAME, || {
        let config: P::Config = serde_json::from_str(config_json.as_str()).map_err(|e| {
            Error::config(format!(
                "the config table of plugin {} is invalid: {e}",
                P::NAME
            ))
        })?;
        let previous = match previous_state.into_option() {
            Some(bytes) if !bytes.is_empty() => {
                let saved = SavedState::from_bytes(bytes.as_slice())?;
                if saved.plugin != P::NAME {
                    return Err(Error::state(format!(
                        "refusing state written by plugin {} (this is {})",
                        saved.plugin,
                        P::NAME
                    )));
                }
                Some(saved.into_schema::<P::State>()?)
            }
            _ => None,
        };
        let host = Host::from_abi(host);
        let plugin = P::create(host.clone(), config, previous)?;
        Ok(PluginBox::from_value(
            Adapter {
                plugin: ManuallyDrop::new(plugin),
                host,
            },
            TD_Opaque,
        ))
    })
}

/// The root module's `manifest` for plugin type `P`.
pub extern "C" fn manifest<P: Plugin>() -> RString {
    // Serializing plain data cannot fail; a panic inside a user's manifest() must not
    // unwind into the host, so catch it and report an empty manifest with the error.
    match catch_unwind(|| (P::manifest(), P::examples())) {
        Ok((m, examples)) => {
            let mut m = P::REQUIRES.iter().fold(m, |m, r| m.requires(*r));
            m.sdk_version = SDK_VERSION.to_owned();
            m.examples = examples;
            RString::from(serde_json::to_string(&m).unwrap_or_else(|_| "{}".to_owned()))
        }
        Err(payload) => {
            RString::from(serde_json::json!({ "error": panic_message(&*payload) }).to_string())
        }
    }
}

/// Builds the metadata record. Called by the code [`crate::export_plugin!`] generates.
pub fn info<P: Plugin>(version: &'static str, panic_unwind: bool) -> PluginInfo {
    PluginInfo {
        name: RStr::from_str(P::NAME),
        version: RStr::from_str(version),
        api_version: RStr::from_str(abi::ABI_VERSION),
        panic_unwind,
        description: RStr::from_str(P::DESCRIPTION),
    }
}

/// Builds the root module. Called by the code [`crate::export_plugin!`] generates.
pub fn root_module<P: Plugin>(info: extern "C" fn() -> PluginInfo) -> PluginModRef {
    PluginMod {
        info,
        create: create::<P>,
        manifest: manifest::<P>,
    }
    .leak_into_prefix()
}

/// Makes the crate a loadable daz plugin.
///
/// Put it once in the plugin crate's `lib.rs`, whose `Cargo.toml` has
/// `crate-type = ["cdylib", "rlib"]`:
///
/// ```ignore
/// daz_plugin_api::export_plugin!(MyPlugin);
/// ```
///
/// It exports the abi_stable root module under the symbol the host looks for, records the
/// crate's version and whether it was built with `panic = "unwind"`, and wraps every
/// entry point so that a panic becomes an error instead of crossing into the host.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // The symbol is abi_stable 0.11's root-module loader name; plugin-api's tests
        // check it against `abi_stable::library::ROOT_MODULE_LOADER_NAME`.
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::LibHeader = {
            extern "C" fn __daz_plugin_info() -> $crate::__private::abi::PluginInfo {
                $crate::__private::info::<$plugin>(
                    ::core::env!("CARGO_PKG_VERSION"),
                    ::core::cfg!(panic = "unwind"),
                )
            }
            fn __daz_plugin_module() -> $crate::__private::abi::PluginModRef {
                $crate::__private::root_module::<$plugin>(__daz_plugin_info)
            }
            extern "C" fn __daz_plugin_root() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(__daz_plugin_module)
            }
            // SAFETY: `__daz_plugin_root` returns the root module of type `PluginModRef`,
            // the type the header is declared for.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::__private::abi::PluginModRef>(
                    __daz_plugin_root,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Manifest, NoConfig, NoState};

    struct NeedsStorage;

    impl Plugin for NeedsStorage {
        const NAME: &'static str = "needs_storage";
        const REQUIRES: &'static [&'static str] = &["storage"];
        type Config = NoConfig;
        type State = NoState;

        fn create(_: Host, _: NoConfig, _: Option<NoState>) -> crate::Result<Self> {
            Ok(Self)
        }

        fn manifest() -> Manifest {
            Manifest::default().requires("storage").requires("commands")
        }

        fn examples() -> Vec<crate::ChatExample> {
            vec![crate::ChatExample::silent("!x").by("bob")]
        }
    }

    #[test]
    fn requires_is_in_the_manifest_once() {
        let json = manifest::<NeedsStorage>().into_string();
        let m: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(m.requires, ["storage", "commands"]);
    }

    #[test]
    fn a_manifest_without_requires_requires_nothing() {
        let m: Manifest = serde_json::from_str(r#"{"commands": []}"#).unwrap();
        assert!(m.requires.is_empty());
        assert!(m.examples.is_empty());
    }

    #[test]
    fn the_chat_examples_travel_in_the_manifest() {
        let json = manifest::<NeedsStorage>().into_string();
        let m: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(m.examples, [crate::ChatExample::silent("!x").by("bob")]);
    }
}
