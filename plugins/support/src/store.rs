//! [`Store`]: a feature plugin's link to the storage plugin's SQL service.
//!
//! Plugins start in any order and the storage plugin may be reloaded, restarted or
//! unable to reach its database at any time, so a feature plugin never assumes the
//! service is there:
//!
//! * [`Store::ready`] asks the service which database it runs on and applies the
//!   plugin's migrations the first time it answers; until then it says "not ready"
//!   (cheaply: a missing service fails at once) and the plugin keeps working from
//!   memory.
//! * Writes are queued with [`Store::push`] and written by [`Store::flush`] in one
//!   atomic batch per call (the plugin calls it from a timer), so a chat message costs
//!   no database round trip on the plugin's thread.
//! * While the service is away the queue keeps the writes, up to `max_pending`; beyond
//!   that the oldest are dropped and counted (memory must stay bounded during a long
//!   outage). A batch the database refuses for its content is retried statement by
//!   statement so one bad statement cannot block the rest forever; the refused ones
//!   are logged and dropped.
//! * [`Store::hand_over`] gives the next version a copy of the queue on a hot reload.
//!   The copy, not the queue: if the swap fails after the export, this instance keeps
//!   serving with its queue intact. [`Store::shutdown`] flushes unless the queue was
//!   handed over since the last write or flush (then the next version owns it; a swap
//!   that failed is noticed at the next flush tick, which resumes ownership).

use std::collections::VecDeque;

use daz_plugin_api::{
    Host, Level, Result,
    sql::{self, Dialect, Migration, Param, Rows, Statement},
};

/// Statements per `sql.batch` request.
const CHUNK: usize = 500;

/// The link to the SQL service. See the module docs.
pub struct Store {
    host: Host,
    migrations: Vec<Migration>,
    dialect: Option<Dialect>,
    pending: VecDeque<Statement>,
    max_pending: usize,
    /// The last failure, to log each distinct outage once rather than on every tick.
    last_error: Option<String>,
    dropped: u64,
    /// The queue was handed to the next version and nothing happened since.
    handed_over: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .field("pending", &self.pending.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Store {
    /// A store for a plugin with its own `migrations` (may be empty when it only uses
    /// the core tables), keeping at most `max_pending` queued writes, starting with the
    /// writes a previous version handed over.
    pub fn new(
        host: Host,
        migrations: Vec<Migration>,
        max_pending: usize,
        restored: Vec<Statement>,
    ) -> Self {
        Self {
            host,
            migrations,
            dialect: None,
            pending: restored.into(),
            max_pending: max_pending.max(1),
            last_error: None,
            dropped: 0,
            handed_over: false,
        }
    }

    /// Whether the SQL service answers and the migrations are applied. The first time
    /// it answers, this learns the dialect and applies the migrations (blocking the
    /// plugin's thread for those requests); afterwards it is a field read.
    pub fn ready(&mut self) -> bool {
        if self.dialect.is_some() {
            return true;
        }
        let attempt = sql::info(&self.host).and_then(|info| {
            if !self.migrations.is_empty() {
                sql::migrate(&self.host, &self.migrations)?;
            }
            Ok(info.dialect)
        });
        match attempt {
            Ok(d) => {
                self.dialect = Some(d);
                if self.last_error.take().is_some() {
                    self.host.info("the SQL service answers again");
                }
                true
            }
            Err(e) => {
                self.note_error("the SQL service is not available yet", &e.to_string());
                false
            }
        }
    }

    /// Forgets that the service was ready (after a request failed as if it were gone),
    /// so the next [`Store::ready`] checks again and re-applies the migrations.
    pub fn reset(&mut self) {
        self.dialect = None;
    }

    /// The dialect, once [`Store::ready`] said yes.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Queues a write.
    pub fn push(&mut self, sql: &str, params: Vec<Param>) {
        self.handed_over = false;
        if self.pending.len() >= self.max_pending {
            self.pending.pop_front();
            self.dropped += 1;
            let _ = self.host.counter_add(
                "store_dropped_writes_total",
                "Queued writes dropped because the SQL service was away too long",
                &[],
                1.0,
            );
        }
        self.pending.push_back(Statement::new(sql, params));
    }

    /// Writes queued so far.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Writes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Flushes what it can and returns a copy of what is left, for the next version's
    /// state (see the module docs).
    pub fn hand_over(&mut self) -> Vec<Statement> {
        self.flush();
        self.handed_over = true;
        self.pending.iter().cloned().collect()
    }

    /// At shutdown: flushes, unless the queue was just handed to the next version.
    pub fn shutdown(&mut self) {
        if !self.handed_over {
            self.flush();
        }
    }

    /// Writes what is queued, in atomic batches. Returns how many statements were
    /// written; a service that is away leaves the queue as it was (an error is only
    /// returned for what an operator must see, and it is also logged).
    pub fn flush(&mut self) -> usize {
        self.handed_over = false;
        if self.pending.is_empty() || !self.ready() {
            return 0;
        }
        let mut written = 0;
        while !self.pending.is_empty() {
            let n = self.pending.len().min(CHUNK);
            let chunk: Vec<Statement> = self.pending.iter().take(n).cloned().collect();
            match sql::batch(&self.host, chunk.clone(), true) {
                Ok(_) => {
                    self.pending.drain(..n);
                    written += n;
                }
                Err(e) => {
                    let message = e.to_string();
                    if unreachable(&message) {
                        self.note_error("queued writes wait for the database", &message);
                        self.reset();
                        return written;
                    }
                    // The database refused the batch: find the statements it refuses
                    // and drop only those.
                    match sql::batch(&self.host, chunk.clone(), false) {
                        Ok(result) => {
                            for (stmt, outcome) in chunk.iter().zip(&result.results) {
                                if let Some(err) = &outcome.error {
                                    self.host.log(
                                        Level::Error,
                                        "the database refused a write; it is dropped (a bug in this plugin's SQL)",
                                        &[("sql", &stmt.sql), ("error", err)],
                                    );
                                }
                            }
                            self.pending.drain(..n);
                            written += n;
                        }
                        Err(e) => {
                            self.note_error("queued writes wait for the database", &e.to_string());
                            self.reset();
                            return written;
                        }
                    }
                }
            }
        }
        written
    }

    /// Runs a query now (for answers that need the database). Fails when the service
    /// is not ready.
    pub fn query(&mut self, sql: &str, params: &[Param]) -> Result<Rows> {
        if !self.ready() {
            return Err(daz_plugin_api::Error::msg(
                "the SQL service is not available; is the storage plugin loaded?",
            ));
        }
        sql::query(&self.host, sql, params).inspect_err(|e| {
            if unreachable(e.message()) {
                self.reset();
            }
        })
    }

    /// Runs a write now, in order after everything queued (flushing the queue first).
    pub fn exec_now(&mut self, sql: &str, params: Vec<Param>) -> Result<()> {
        self.push(sql, params);
        self.flush();
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(daz_plugin_api::Error::msg(format!(
                "the write is queued ({} waiting) until the SQL service answers",
                self.pending.len()
            )))
        }
    }

    fn note_error(&mut self, what: &str, message: &str) {
        if self.last_error.as_deref() != Some(message) {
            self.host.log(
                Level::Warn,
                what,
                &[
                    ("error", message),
                    ("pending", &self.pending.len().to_string()),
                ],
            );
            self.last_error = Some(message.to_owned());
        }
    }
}

/// Whether an error says the service or its database cannot be reached (as opposed to
/// the database refusing the statement).
fn unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no responder",
        "nobody",
        "no reply",
        "went away",
        "unreachable",
        "timed out",
        "timeout",
        "no connection",
        "closed",
        "not available",
        "mailbox",
    ]
    .iter()
    .any(|k| m.contains(k))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use daz_plugin_api::{NoConfig, Plugin, StateSchema, testing::Harness};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Pending(Vec<Statement>);
    impl StateSchema for Pending {
        const VERSION: u32 = 1;
    }

    use super::*;

    /// A plugin that only holds a store, so the tests can drive it through the fake
    /// host (whose responders play the SQL service).
    struct Holder {
        store: Store,
    }

    impl Plugin for Holder {
        const NAME: &'static str = "holder";
        type Config = NoConfig;
        type State = Pending;
        fn export_state(&mut self) -> Result<Option<Pending>> {
            Ok(Some(Pending(self.store.hand_over())))
        }
        fn create(host: Host, _: NoConfig, _: Option<Pending>) -> Result<Self> {
            host.subscribe("go")?;
            Ok(Holder {
                store: Store::new(
                    host,
                    vec![Migration::both(1, "t", "CREATE TABLE holder_t (x INT)")],
                    3,
                    Vec::new(),
                ),
            })
        }
        fn on_event(&mut self, event: &daz_plugin_api::Event<'_>) -> Result<()> {
            let n: u32 = event.json()?;
            for i in 0..n {
                self.store
                    .push("INSERT INTO holder_t VALUES ($1)", vec![Param::from(i)]);
            }
            self.store.flush();
            Ok(())
        }
    }

    #[test]
    fn writes_wait_for_the_service_then_go_in_one_batch() {
        let mut h = Harness::<Holder>::new(serde_json::json!({})).unwrap();
        // No SQL service yet: the writes stay queued (bounded to 3, oldest dropped).
        h.publish("go", &5u32).unwrap();
        assert!(h.published().iter().any(|m| m.subject == "sql.info"));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "sqlite", "connected": true}))
        });
        h.respond("sql.migrate", |_| {
            Ok(serde_json::json!({"dialect": "sqlite", "applied": [1], "current": 1}))
        });
        h.respond("sql.batch", move |req| {
            seen.lock().unwrap().push(req.clone());
            Ok(serde_json::json!({"results": []}))
        });
        h.publish("go", &0u32).unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 1);
        let stmts = batches[0]["statements"].as_array().unwrap();
        // 5 queued into a queue of 3: the two oldest were dropped.
        let values: Vec<i64> = stmts
            .iter()
            .map(|s| s["params"][0]["value"].as_i64().unwrap())
            .collect();
        assert_eq!(values, vec![2, 3, 4]);
        assert_eq!(batches[0]["atomic"], true);
        assert_eq!(
            h.metrics()["store_dropped_writes_total"],
            2.0,
            "{:?}",
            h.metrics()
        );
    }

    #[test]
    fn a_refused_statement_is_dropped_alone() {
        let mut h = Harness::<Holder>::new(serde_json::json!({})).unwrap();
        h.respond("sql.info", |_| {
            Ok(serde_json::json!({"dialect": "postgres", "connected": true}))
        });
        h.respond("sql.migrate", |_| {
            Ok(serde_json::json!({"dialect": "postgres", "applied": [], "current": 1}))
        });
        h.respond("sql.batch", |req| {
            if req["atomic"] == true {
                Err(daz_plugin_api::Error::msg(
                    "duplicate key value violates unique constraint (code 23505)",
                ))
            } else {
                Ok(serde_json::json!({"results": [
                    {"rows_affected": 1}, {"error": "duplicate key"}
                ]}))
            }
        });
        h.publish("go", &2u32).unwrap();
        let logs = h.logs();
        assert!(
            logs.iter().any(|l| l.message.contains("refused a write")
                && l.fields
                    .iter()
                    .any(|(k, v)| k == "error" && v == "duplicate key")),
            "{logs:?}"
        );
        // Nothing is left queued: the next flush sends nothing.
        let before = h.published().len();
        h.publish("go", &0u32).unwrap();
        assert_eq!(h.published().len(), before);
    }

    #[test]
    fn the_queue_is_handed_over_as_a_copy() {
        let mut h = Harness::<Holder>::new(serde_json::json!({})).unwrap();
        h.publish("go", &2u32).unwrap();
        // No SQL service: the state carries the two writes, and a second export (a
        // swap retried after one that failed) carries them again.
        for _ in 0..2 {
            let state: serde_json::Value =
                serde_json::from_slice(&h.export_state().unwrap()).unwrap();
            assert_eq!(state["data"].as_array().map(Vec::len), Some(2), "{state}");
        }
    }

    #[test]
    fn outage_errors_are_told_apart_from_refusals() {
        assert!(unreachable(
            "no responder for sql.batch (register one with Harness::respond)"
        ));
        assert!(unreachable(
            "storage answered with an error: the database is unreachable: connection refused"
        ));
        assert!(!unreachable(
            "storage answered with an error: syntax error at or near \"SELEC\" (code 42601)"
        ));
    }
}
