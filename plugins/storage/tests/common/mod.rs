//! Shared helpers of the storage plugin's integration tests: a fresh database per test
//! and direct queries ([`daz_testkit::db`]), the plugin's configuration for it, and a
//! private PostgreSQL server for the outage tests.
#![allow(dead_code)]

pub mod daz;

use std::time::Duration;

#[allow(unused_imports)]
pub use daz_testkit::db::{BOTH, Kind, TestDb};

/// The plugin configuration for a test database.
pub fn config(db: &TestDb, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "database_url": db.url,
        "prefer_env": false,
        "journal_dir": db.journal_dir(),
        "flush_interval_ms": 20,
        "spill_after_ms": 200,
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

#[allow(unused_imports)]
pub use daz_testkit::pg::PrivatePg;

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    daz_testkit::wait_until(timeout, what, cond);
}
