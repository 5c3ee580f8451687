//! Everything a plugin author usually needs: `use daz_plugin_api::prelude::*;`.

pub use crate::{
    CommandScope, CommandSpec, Error, ErrorKind, Event, Host, Level, Manifest, Message, NoConfig,
    NoState, Plugin, Priority, Published, Reply, Result, SavedState, StateSchema, TimerId, bail,
    command_line::{CommandLimits, ParsedCommand, parse_command},
    export_plugin,
    plugin::ChatExample,
};
