//! The plugin author's commands: `daz new-plugin` ([`scaffold`]) creates a plugin crate
//! that builds outside this repository; `daz check-plugin --config` ([`trial`]) starts
//! and stops a built plugin once, in a child process, with its configuration; `daz dev`
//! ([`dev`], feature `demo`) runs it in a simulated channel and hot-swaps it on every
//! save.

#[cfg(feature = "demo")]
pub mod dev;
pub mod scaffold;
pub mod trial;
