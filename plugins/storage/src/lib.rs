//! # daz-plugin-storage
//!
//! The storage plugin: it owns the database (PostgreSQL for production, SQLite as the
//! embedded default), logs events from the bus according to rules, never loses one
//! while the database is away, and serves SQL to other plugins.
//!
//! `plugins.toml`:
//!
//! ```toml
//! [plugins.storage]
//! file = "libdaz_plugin_storage.so"
//! [plugins.storage.config]
//! database_url = "postgres://daz@127.0.0.1/daz"   # or DATABASE_URL; default sqlite://daz.db
//! journal_dir = ".daz/journal"
//! batch_size = 2000
//! flush_interval_ms = 200
//! [[plugins.storage.config.rules]]
//! subject = "cytube.in.*.mediaUpdate"
//! log = false                                      # exclusions first: the first match decides
//! [[plugins.storage.config.rules]]
//! subject = "cytube.in.>"
//! ```
//!
//! ## Layout
//!
//! * [`config`] — the plugin's settings and the default rules.
//! * [`row`] — [`row::LogRow`], an `event_log` row extracted from an event, and the rules.
//! * [`pipeline`] — memory queue → batches → database, spilling to the journal during
//!   outages; the writer task.
//! * [`journal`] — the append-only, CRC-checked local journal.
//! * [`db`] — the pool, core migrations, the batch writers (COPY/UNNEST, multi-row
//!   INSERT).
//! * [`service`] — the `sql.*` request handlers.
//! * [`metrics`] — metrics and logs through the host.
//!
//! ## Threads
//!
//! The plugin runs its own tokio runtime (a plugin cannot use the host's). `on_event`
//! runs on the host's worker thread for this plugin and never waits for the database:
//! events go into the pipeline's queue, requests are spawned onto the runtime and
//! answered from there with `host.reply`, so a slow query never holds up the logger.
//! `shutdown` flushes, closes the pool and shuts the runtime down, joining its threads.
//!
//! ## Hot swap
//!
//! `export_state` flushes what is queued (to the database, or to the journal if the
//! database is away) and releases the journal; the new instance opens the journal and
//! replays it. Rows are idempotent on the event id, so nothing is lost or duplicated.

pub mod config;
pub mod db;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod row;
pub mod service;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use daz_plugin_api::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    config::{Config, redact_url, scrub},
    db::{Db, DbError},
    metrics::Metrics,
    pipeline::{FlushReport, FlushRequest, Pipeline, Settings},
    row::{LogRow, Rules},
    service::{Limits, Service},
};

/// The plugin instance.
pub struct Storage {
    host: Host,
    rules: Rules,
    pipeline: Arc<Pipeline>,
    service: Arc<Service>,
    db: Db,
    runtime: Option<tokio::runtime::Runtime>,
    control: mpsc::UnboundedSender<FlushRequest>,
    writer: Option<tokio::task::JoinHandle<()>>,
    requests: Arc<InFlight>,
    flush_on_stop: Duration,
}

/// Requests being answered (waited for at shutdown, so a hot swap does not strand a
/// requester).
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// What one instance hands the next on a hot reload. The queued events themselves are
/// already in the database or the journal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Handover {
    /// Events the journal held at the hand-over.
    pub journal_pending: u64,
}

impl StateSchema for Handover {
    const VERSION: u32 = 1;
}

/// The subscription for the SQL service.
pub const SQL_SUBJECTS: &str = "sql.>";

impl Storage {
    /// The pipeline (tests and benches read its counters).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The database handle (tests and benches).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A handle on the plugin's runtime.
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }

    /// Asks the writer to flush and waits for the report.
    pub fn flush(&self, release_journal: bool, stop: bool) -> Option<FlushReport> {
        let (done, rx) = oneshot::channel();
        let req = FlushRequest {
            deadline: Instant::now() + self.flush_on_stop,
            release_journal,
            stop,
            done,
        };
        self.control.send(req).ok()?;
        self.pipeline.control_wake.notify_one();
        // Bounded by the deadline plus one batch write that may be running.
        let wait = self.flush_on_stop + self.pipeline.settings().write_timeout;
        let rt = self.runtime.as_ref()?;
        rt.block_on(async { tokio::time::timeout(wait, rx).await.ok()?.ok() })
    }

    fn stop(&mut self) {
        let Some(rt) = self.runtime.take() else {
            return;
        };
        let (done, rx) = oneshot::channel();
        let deadline = Instant::now() + self.flush_on_stop;
        let sent = self
            .control
            .send(FlushRequest {
                deadline,
                release_journal: true,
                stop: true,
                done,
            })
            .is_ok();
        self.pipeline.control_wake.notify_one();
        let wait = self.flush_on_stop + self.pipeline.settings().write_timeout;
        let requests = self.requests.clone();
        let writer = self.writer.take();
        let db = self.db.clone();
        let report = rt.block_on(async move {
            let report = if sent {
                tokio::time::timeout(wait, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            if let Some(w) = writer {
                let _ = tokio::time::timeout(Duration::from_secs(1), w).await;
            }
            // Let running requests answer (each is bounded by its own timeout).
            let until = Instant::now() + wait;
            while requests.count.load(Ordering::Acquire) > 0 && Instant::now() < until {
                let _ =
                    tokio::time::timeout(Duration::from_millis(50), requests.idle.notified()).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), db.close()).await;
            report
        });
        match report {
            Some(r) => self.host.info(&format!(
                "storage stopped: {} events written during the stop, {} put in the journal, {} waiting in the journal",
                r.written, r.journaled, r.journal_pending
            )),
            None => self.host.error(
                "storage stopped without confirming its flush; events still queued may be lost (see daz_plugin_storage_events_lost_total)",
            ),
        }
        // Joins the runtime's threads (the writer and request tasks are done or
        // abandoned past the deadline).
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connect_and_migrate(
    rt: &tokio::runtime::Runtime,
    db: &Db,
    within: Duration,
) -> Result<Vec<i64>, DbError> {
    rt.block_on(async {
        match tokio::time::timeout(within, db.migrate()).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Sql(sqlx::Error::PoolTimedOut)),
        }
    })
}

impl Plugin for Storage {
    const NAME: &'static str = "storage";
    const DESCRIPTION: &'static str = "Event log, journal and SQL service on PostgreSQL or SQLite";
    type Config = Config;
    type State = Handover;

    fn create(host: Host, config: Config, previous: Option<Handover>) -> Result<Self> {
        config.validate().map_err(Error::config)?;
        let (url, from) = config.resolve_url(std::env::var(config::DATABASE_URL_ENV).ok());
        let metrics = Metrics::new(host.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("daz-storage")
            .enable_all()
            .build()
            .map_err(|e| Error::msg(format!("cannot start the storage runtime: {e}")))?;
        let db = {
            let _enter = runtime.enter();
            Db::open_lazy(
                &url,
                config.max_connections,
                Duration::from_millis(config.connect_timeout_ms),
            )
            .map_err(|e| Error::config(e.to_string()))?
        };
        let ready = match connect_and_migrate(
            &runtime,
            &db,
            Duration::from_millis(config.connect_timeout_ms) + Duration::from_secs(2),
        ) {
            Ok(applied) => {
                if !applied.is_empty() {
                    host.info(&format!("applied core migrations {applied:?}"));
                }
                true
            }
            Err(e) if e.is_transient() => {
                host.warn(&format!(
                    "the database {} is unreachable ({}); the event log is kept in the journal until it is back",
                    redact_url(&url),
                    scrub(&e.to_string(), &url)
                ));
                false
            }
            Err(e) => return Err(Error::msg(scrub(&e.to_string(), &url))),
        };
        host.info(&format!(
            "storage on {} ({:?}, url from {from})",
            redact_url(&url),
            db.dialect()
        ));
        let settings = Settings {
            batch_size: config.batch_size,
            flush_interval: config.flush_interval(),
            memory_queue: config.memory_queue.max(config.batch_size),
            spill_after: Duration::from_millis(config.spill_after_ms),
            journal_dir: config.journal_dir.clone(),
            segment_bytes: config.journal_segment_bytes,
            fsync: config.journal_fsync,
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            pg_write: config.postgres_write,
        };
        let (pipeline, journal) = Pipeline::new(settings, metrics.clone());
        match journal {
            Ok(0) => {}
            Ok(n) => host.info(&format!(
                "replaying {n} events from the journal {}",
                config.journal_dir.display()
            )),
            Err(e) => host.error(&format!(
                "{e}; the logger runs without a journal: accepted events are kept in memory only (a crash takes them), and those that do not fit in memory during an outage are lost and counted"
            )),
        }
        if let Some(h) = previous
            && h.journal_pending > 0
        {
            host.info(&format!(
                "the previous version handed over {} events in the journal",
                h.journal_pending
            ));
        }
        pipeline
            .db_ready
            .store(ready, std::sync::atomic::Ordering::Release);
        if !ready {
            let (p, d, h, u) = (pipeline.clone(), db.clone(), host.clone(), url.clone());
            runtime.spawn(async move {
                let mut wait = Duration::from_millis(200);
                loop {
                    tokio::time::sleep(wait).await;
                    match d.migrate().await {
                        Ok(_) => {
                            h.info("the database is reachable; the core schema is in place");
                            p.db_ready.store(true, Ordering::Release);
                            p.ready_wake.notify_one();
                            return;
                        }
                        Err(e) if e.is_transient() => {
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => {
                            h.error(&format!(
                                "{}; the event log stays in the journal",
                                scrub(&e.to_string(), &u)
                            ));
                            return;
                        }
                    }
                }
            });
        }
        runtime.spawn(pipeline::run_ticker(pipeline.clone()));
        let (control, control_rx) = mpsc::unbounded_channel();
        let writer = runtime.spawn(pipeline::run_writer(
            pipeline.clone(),
            db.clone(),
            control_rx,
        ));
        let service = Arc::new(Service::new(
            db.clone(),
            Limits {
                default_timeout: Duration::from_millis(config.query_timeout_ms),
                max_timeout: Duration::from_millis(config.max_query_timeout_ms),
                max_rows: config.max_rows,
            },
            metrics,
        ));
        let rules = Rules::new(config.rules());
        for pattern in rules.subscriptions() {
            host.subscribe(&pattern)?;
        }
        host.subscribe(SQL_SUBJECTS)?;
        Ok(Storage {
            host,
            rules,
            pipeline,
            service,
            db,
            runtime: Some(runtime),
            control,
            writer: Some(writer),
            requests: Arc::new(InFlight::default()),
            flush_on_stop: Duration::from_millis(config.flush_on_stop_ms),
        })
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        let subject = event.subject();
        if subject.starts_with("sql.") {
            let Some(reply_to) = event.reply_to() else {
                return Ok(());
            };
            let Some(rt) = self.runtime.as_ref() else {
                return Err(Error::msg("the storage plugin is stopping"));
            };
            let (service, host, requests) = (
                self.service.clone(),
                self.host.clone(),
                self.requests.clone(),
            );
            let subject = subject.to_owned();
            let reply_to = reply_to.to_owned();
            let payload = event.payload().to_vec();
            requests.count.fetch_add(1, Ordering::AcqRel);
            rt.spawn(async move {
                let answer = service.handle(&subject, &payload).await;
                let _ = match answer {
                    Ok(bytes) => host.reply_raw(&reply_to, &bytes, false),
                    Err(message) => {
                        let bytes = serde_json::to_vec(&serde_json::json!({ "error": message }))
                            .unwrap_or_default();
                        host.reply_raw(&reply_to, &bytes, true)
                    }
                };
                if requests.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                    requests.idle.notify_waiters();
                }
            });
            return Ok(());
        }
        if self.rules.logs(event) {
            self.pipeline.push(LogRow::from_event(event));
        }
        Ok(())
    }

    fn export_state(&mut self) -> Result<Option<Handover>> {
        let report = self.flush(true, false).ok_or_else(|| {
            Error::msg("the storage writer did not confirm its flush; keeping this version")
        })?;
        Ok(Some(Handover {
            journal_pending: report.journal_pending,
        }))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop();
        Ok(())
    }
}

daz_plugin_api::export_plugin!(Storage);
