//! Shared helpers of the storage plugin's integration tests: the plugin's configuration
//! for a test database ([`daz_testkit::db`]), and the real `daz` binary with it
//! ([`daz`]).
#![allow(dead_code)]

pub mod daz;

use daz_testkit::db::TestDb;

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
