//! What the tracker plugins (`usertracker`, `mediatracker`) share: an in-memory model
//! of the rooms written to the database through a [`Store`] flushed by a timer, and
//! handed to the next version on a hot reload together with the writes not yet
//! flushed.
//!
//! * [`Tracked`] — the hot-reload state: the model and the pending writes.
//! * [`start`] — checks `flush_interval_ms`, subscribes to the Cytube events the
//!   tracker follows, arms the flush timer and builds the store from what the previous
//!   version handed over.

use std::time::Duration;

use daz_plugin_api::{
    Error, Host, Result, StateSchema,
    sql::{Migration, Statement},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::store::Store;

/// What a tracker hands over on a hot reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tracked<T> {
    /// The model.
    pub tracker: T,
    /// Writes not yet in the database.
    pub pending: Vec<Statement>,
}

impl<T: Serialize + DeserializeOwned> StateSchema for Tracked<T> {
    const VERSION: u32 = 1;
}

impl<T> Tracked<T> {
    /// The state to export: the model and a copy of the store's queue (see
    /// [`Store::hand_over`]).
    pub fn export(tracker: T, store: &mut Store) -> Self {
        Self {
            tracker,
            pending: store.hand_over(),
        }
    }
}

/// How a tracker starts.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    /// The Cytube events followed (`cytube.in.*.<event>` for each).
    pub events: &'a [&'a str],
    /// The subject of the flush timer.
    pub flush_subject: &'a str,
    /// The `flush_interval_ms` setting (must be above 0).
    pub flush_interval_ms: u64,
    /// The `max_pending` setting.
    pub max_pending: usize,
    /// The tracker's own tables.
    pub migrations: Vec<Migration>,
}

/// Checks the settings, subscribes to the Cytube events, arms the flush timer and
/// builds the store with the writes `pending` from the previous version.
pub fn start(host: &Host, setup: Setup<'_>, pending: Vec<Statement>) -> Result<Store> {
    if setup.flush_interval_ms == 0 {
        return Err(Error::config("flush_interval_ms must be above 0"));
    }
    for e in setup.events {
        host.subscribe(&format!("cytube.in.*.{e}"))?;
    }
    host.timer_every(
        setup.flush_subject,
        &serde_json::json!({}),
        Duration::from_millis(setup.flush_interval_ms),
    )?;
    Ok(Store::new(
        host.clone(),
        setup.migrations,
        setup.max_pending,
        pending,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daz_plugin_api::{Event, Plugin, sql::Param, testing::Harness};

    struct Counter {
        store: Store,
        seen: u64,
    }

    #[derive(Deserialize)]
    struct Cfg {
        flush_interval_ms: u64,
    }

    impl Plugin for Counter {
        const NAME: &'static str = "counter";
        type Config = Cfg;
        type State = Tracked<u64>;
        fn create(host: Host, config: Cfg, previous: Option<Tracked<u64>>) -> Result<Self> {
            let previous = previous.unwrap_or_default();
            let store = start(
                &host,
                Setup {
                    events: &["addUser"],
                    flush_subject: "counter.flush",
                    flush_interval_ms: config.flush_interval_ms,
                    max_pending: 10,
                    migrations: Vec::new(),
                },
                previous.pending,
            )?;
            Ok(Counter {
                store,
                seen: previous.tracker,
            })
        }
        fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
            if event.subject().starts_with("cytube.in.") {
                self.seen += 1;
                self.store
                    .push("INSERT INTO t VALUES ($1)", vec![Param::Int(1)]);
            }
            Ok(())
        }
        fn export_state(&mut self) -> Result<Option<Tracked<u64>>> {
            Ok(Some(Tracked::export(self.seen, &mut self.store)))
        }
    }

    #[test]
    fn the_model_and_unflushed_writes_survive_a_reload() {
        let mut h = Harness::<Counter>::new(serde_json::json!({"flush_interval_ms": 100})).unwrap();
        assert!(h.subscriptions().iter().any(|s| s == "cytube.in.*.addUser"));
        assert!(
            h.publish("cytube.in.lobby.addUser", &serde_json::json!({"name": "a"}))
                .unwrap()
        );
        assert!(h.timers().iter().any(|(s, _)| s == "counter.flush"));
        h.reload().unwrap();
        // The new instance got the model and the queued write, and hands them on again.
        let saved = String::from_utf8(h.export_state().unwrap()).unwrap();
        assert!(saved.contains("\"tracker\":1"), "{saved}");
        assert!(saved.contains("INSERT INTO t"), "{saved}");
    }

    #[test]
    fn a_zero_flush_interval_is_refused() {
        let e = Harness::<Counter>::new(serde_json::json!({"flush_interval_ms": 0}))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("flush_interval_ms"), "{e}");
    }
}
