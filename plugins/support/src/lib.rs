//! # daz-feature-support
//!
//! Pieces the feature plugins (`commands`, `builtins`, the trackers, `analytics`,
//! `retry`, `polls`, `playlist`, …) share. It is a plain library linked into each
//! plugin, not a plugin itself.
//!
//! # Layout
//!
//! * [`rank`] — Cytube ranks in words (`2 (moderators)`), for refusals.
//! * [`store`] — [`store::Store`]: the plugin's link to the storage plugin: waits until
//!   the SQL service answers, applies the plugin's migrations, queues writes and flushes
//!   them in batches, keeping them (bounded) while the service is away and handing them
//!   to the next version on a hot reload.
//! * [`text`] — chat-sized text: lengths as the server counts them, truncation, pages
//!   under the 320-character limit.
//! * [`time`] — durations for people, RFC 3339 from the database, hour and day buckets.
//! * [`tracker`] — what the tracker plugins share: their hot-reload state
//!   ([`tracker::Tracked`]) and their start (settings check, subscriptions, flush timer,
//!   store).

pub mod rank;
pub mod store;
pub mod text;
pub mod time;
pub mod tracker;
