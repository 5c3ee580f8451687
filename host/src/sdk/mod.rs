//! The plugin author's commands: `daz new-plugin` ([`scaffold`]) creates a plugin crate
//! that builds outside this repository.

pub mod scaffold;
