//! Event log throughput and latency, each beside a same-run baseline.
//!
//! * `pg_steady_state`: events/s through the logger's hot path (rule check, row
//!   extraction, queue, batches, binary COPY into a staging table + INSERT … ON CONFLICT,
//!   or UNNEST) against a raw sqlx binary COPY of the same rows straight into
//!   `event_log`, and one INSERT per event. Target: the logger ≥ 60 % of the raw COPY.
//! * `sqlite_steady_state`: the logger against a raw multi-row INSERT of the same rows
//!   in one transaction.
//! * `accept`: what accepting one event costs the plugin's worker thread (`on_event`:
//!   rule check, row extraction, queueing), with the journal append every accepted
//!   event now gets, under each `journal_fsync` policy, against the path it replaced in
//!   the same run: before the journal became a write-ahead log, `Pipeline::push` only
//!   queued the row in memory (lock, `VecDeque::push_back`, wake the writer) and rows
//!   reached the journal only after `spill_after` of outage. `memory_only` repeats that
//!   old push exactly, without the journal.
//! * `sqlite_steady_state` also runs the whole logger (accepted → committed) under each
//!   `journal_fsync` policy.
//! * Latency (printed after the groups): accepted → committed p50/p99 at 1 000 events/s
//!   with the default 200 ms flush interval.
//!
//! Each iteration empties `event_log` first (untimed), so every iteration writes into a
//! table of the same size. Needs the shared PostgreSQL on 127.0.0.1:5432.
//!
//! `cargo bench -p daz-plugin-storage` (`-- accept` for the journal's cost alone).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use criterion::{Criterion, SamplingMode, Throughput};
use daz_plugin_api::{OwnedEvent, Priority};
use daz_plugin_storage::{
    config::default_rules,
    db::{Db, PgWrite, copy},
    journal::Fsync,
    metrics::Metrics,
    pipeline::{Pipeline, Settings, run_ticker, run_writer},
    row::{LogRow, Rules},
};

const N: usize = 20_000;
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_BENCH: &str = "postgres://postgres@127.0.0.1:5432/daz_storage_bench";

fn events(n: usize, round: u64) -> Vec<OwnedEvent> {
    (0..n)
        .map(|i| {
            let payload = serde_json::json!({
                "username": format!("user{}", i % 50),
                "msg": format!("message number {i} with some ordinary chat text in it"),
                "meta": {},
                "time": 1_700_000_000_000i64 + i as i64,
            });
            OwnedEvent {
                id: format!("01BENCH{round:08}{i:011}"),
                subject: "cytube.in.lobby.chatMsg".into(),
                room: "lobby".into(),
                source: "cytube:lobby".into(),
                priority: Priority::High,
                timestamp_ms: 1_700_000_000_000 + i as i64,
                payload: serde_json::to_vec(&payload).unwrap(),
                ..OwnedEvent::default()
            }
        })
        .collect()
}

fn rows_of(events: &[OwnedEvent]) -> Vec<LogRow> {
    events
        .iter()
        .map(|e| e.with_event(|e| LogRow::from_event(&e)))
        .collect()
}

struct Logger {
    pipeline: Arc<Pipeline>,
    rules: Rules,
    _journal: tempfile::TempDir,
    _control: tokio::sync::mpsc::UnboundedSender<daz_plugin_storage::pipeline::FlushRequest>,
}

impl Logger {
    fn start(rt: &tokio::runtime::Runtime, db: &Db, pg_write: PgWrite, flush_ms: u64) -> Logger {
        Logger::start_with(rt, db, pg_write, flush_ms, Fsync::default())
    }

    fn start_with(
        rt: &tokio::runtime::Runtime,
        db: &Db,
        pg_write: PgWrite,
        flush_ms: u64,
        fsync: Fsync,
    ) -> Logger {
        let journal = tempfile::tempdir().unwrap();
        let (pipeline, _) = Pipeline::new(
            settings(journal.path(), pg_write, flush_ms, fsync),
            Metrics::none(),
        );
        pipeline.db_ready.store(true, Ordering::Release);
        let (control, rx) = tokio::sync::mpsc::unbounded_channel();
        rt.spawn(run_writer(pipeline.clone(), db.clone(), rx));
        // The plugin runs the ticker too: it is what syncs an `everysec` journal.
        rt.spawn(run_ticker(pipeline.clone()));
        Logger {
            pipeline,
            rules: Rules::new(default_rules()),
            _journal: journal,
            _control: control,
        }
    }

    /// What `on_event` does for a logged event.
    fn accept(&self, e: &OwnedEvent) {
        e.with_event(|e| {
            if self.rules.logs(&e) {
                self.pipeline.push(LogRow::from_event(&e));
            }
        });
    }

    fn committed(&self) -> u64 {
        let s = &self.pipeline.stats;
        s.written.load(Ordering::Acquire) + s.duplicates.load(Ordering::Acquire)
    }

    /// Accepts all events and waits until the database committed them.
    fn run(&self, events: &[OwnedEvent]) -> Duration {
        let target = self.committed() + events.len() as u64;
        let start = Instant::now();
        for e in events {
            self.accept(e);
        }
        while self.committed() < target {
            std::thread::sleep(Duration::from_micros(200));
        }
        start.elapsed()
    }
}

fn settings(dir: &std::path::Path, pg_write: PgWrite, flush_ms: u64, fsync: Fsync) -> Settings {
    Settings {
        batch_size: 2_000,
        flush_interval: Duration::from_millis(flush_ms),
        memory_queue: 200_000,
        spill_after: Duration::from_secs(5),
        journal_dir: dir.to_owned(),
        segment_bytes: 8 << 20,
        fsync,
        write_timeout: Duration::from_secs(30),
        pg_write,
    }
}

/// The accept path as it was before every accepted event was journaled (commit
/// 1ef9256's parent, `Pipeline::push` with the database up): the row is queued in
/// memory under the queue's lock and the writer is woken for the first row of a batch
/// and for a full one. Nothing reaches the disk.
struct MemoryOnly {
    queue: Mutex<VecDeque<(LogRow, Instant)>>,
    wake: tokio::sync::Notify,
    rules: Rules,
    batch_size: usize,
}

impl MemoryOnly {
    fn accept(&self, e: &OwnedEvent) {
        e.with_event(|e| {
            if self.rules.logs(&e) {
                let row = LogRow::from_event(&e);
                let mut q = self.queue.lock().unwrap();
                let first = q.is_empty();
                q.push_back((row, Instant::now()));
                let full = q.len() >= self.batch_size;
                drop(q);
                if first || full {
                    self.wake.notify_one();
                }
            }
        });
    }
}

/// The cost of accepting events on the plugin's worker thread: the old memory-only
/// push against today's push (journal append) under each fsync policy. Only the
/// producer is timed; nothing drains the queue (it holds every event of an iteration),
/// so the database plays no part. A fresh journal per iteration, made untimed.
fn bench_accept(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let rules = Rules::new(default_rules());
    let mut g = c.benchmark_group("accept");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(5));

    let evs = events(N, 0);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("memory_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = MemoryOnly {
                    queue: Mutex::new(VecDeque::new()),
                    wake: tokio::sync::Notify::new(),
                    rules: rules.clone(),
                    batch_size: 2_000,
                };
                let start = Instant::now();
                for e in &evs {
                    m.accept(e);
                }
                total += start.elapsed();
                assert_eq!(m.queue.lock().unwrap().len(), N);
            }
            total
        });
    });

    // `always` pays an fdatasync per event (about 1.5 ms on this disk): fewer events.
    for (name, fsync, n) in [
        ("journal_fsync_no", Fsync::No, N),
        ("journal_fsync_everysec", Fsync::Everysec, N),
        ("journal_fsync_always", Fsync::Always, 500),
    ] {
        let evs = &evs[..n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let (p, opened) = Pipeline::new(
                        settings(dir.path(), PgWrite::Copy, 200, fsync),
                        Metrics::none(),
                    );
                    opened.unwrap();
                    let logger = Logger {
                        pipeline: p.clone(),
                        rules: rules.clone(),
                        _journal: dir,
                        _control: tokio::sync::mpsc::unbounded_channel().0,
                    };
                    // The ticker's once-a-second fdatasync runs beside the producer,
                    // as in the plugin.
                    let ticker = rt.spawn(run_ticker(p.clone()));
                    let start = Instant::now();
                    for e in evs {
                        logger.accept(e);
                    }
                    total += start.elapsed();
                    ticker.abort();
                    assert_eq!(p.stats.journaled.load(Ordering::Relaxed), n as u64);
                }
                total
            });
        });
    }
    g.finish();
}

fn truncate(rt: &tokio::runtime::Runtime, db: &Db) {
    rt.block_on(async {
        match db {
            Db::Pg(p) => sqlx::query("TRUNCATE event_log")
                .execute(p)
                .await
                .map(|_| ()),
            Db::Sqlite(p) => sqlx::query("DELETE FROM event_log")
                .execute(p)
                .await
                .map(|_| ()),
        }
    })
    .unwrap();
}

fn pg_db(rt: &tokio::runtime::Runtime) -> Db {
    rt.block_on(async {
        let admin = sqlx::PgPool::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query("DROP DATABASE IF EXISTS daz_storage_bench WITH (FORCE)")
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE daz_storage_bench")
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    });
    let db = {
        let _g = rt.enter();
        Db::open_lazy(PG_BENCH, 8, Duration::from_secs(5)).unwrap()
    };
    rt.block_on(db.migrate()).unwrap();
    db
}

fn sqlite_db(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Db {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let db = {
        let _g = rt.enter();
        Db::open_lazy(&url, 4, Duration::from_secs(5)).unwrap()
    };
    rt.block_on(db.migrate()).unwrap();
    db
}

fn bench_pg(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let db = pg_db(rt);
    let Db::Pg(pool) = db.clone() else {
        unreachable!()
    };
    let mut round = 0u64;
    let mut g = c.benchmark_group("pg_steady_state");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("raw_copy_binary", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                truncate(rt, &db);
                round += 1;
                let rows = rows_of(&events(N, round));
                let start = Instant::now();
                rt.block_on(async {
                    let data = copy::encode(&rows);
                    let mut conn = pool.acquire().await.unwrap();
                    let mut copy_in = conn
                        .copy_in_raw(&format!(
                            "COPY event_log ({}) FROM STDIN (FORMAT binary)",
                            daz_plugin_storage::db::COLUMNS
                        ))
                        .await
                        .unwrap();
                    copy_in.send(data).await.unwrap();
                    copy_in.finish().await.unwrap();
                });
                total += start.elapsed();
            }
            total
        });
    });

    for (name, how) in [
        ("logger_copy", PgWrite::Copy),
        ("logger_unnest", PgWrite::Unnest),
    ] {
        let logger = Logger::start(rt, &db, how, 200);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    truncate(rt, &db);
                    round += 1;
                    let evs = events(N, round);
                    total += logger.run(&evs);
                }
                total
            });
        });
    }

    g.throughput(Throughput::Elements(1_000));
    g.bench_function("insert_per_event", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                truncate(rt, &db);
                round += 1;
                let rows = rows_of(&events(1_000, round));
                let start = Instant::now();
                rt.block_on(async {
                    for r in &rows {
                        db.write_rows(std::slice::from_ref(r), PgWrite::Unnest, true)
                            .await
                            .unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

fn bench_sqlite(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(rt, dir.path());
    let Db::Sqlite(pool) = db.clone() else {
        unreachable!()
    };
    let mut round = 0u64;
    let mut g = c.benchmark_group("sqlite_steady_state");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    // Every sample runs the same number of iterations (the `always` run's are long).
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("raw_multi_row_insert", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                truncate(rt, &db);
                round += 1;
                let rows = rows_of(&events(N, round));
                let start = Instant::now();
                rt.block_on(async {
                    // The same statements the logger sends, all rows in one transaction,
                    // without the queue and batching around them.
                    let mut tx = pool.begin().await.unwrap();
                    for chunk in rows.chunks(500) {
                        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
                            "INSERT OR IGNORE INTO event_log ({}) ",
                            daz_plugin_storage::db::COLUMNS
                        ));
                        q.push_values(chunk, |mut b, r| {
                            b.push_bind(r.id.as_str())
                                .push_bind(r.subject.as_str())
                                .push_bind(r.room.as_deref())
                                .push_bind(r.event.as_str())
                                .push_bind(r.user.as_deref())
                                .push_bind(r.message.as_deref())
                                .push_bind(r.media_id.as_deref())
                                .push_bind(r.media_type.as_deref())
                                .push_bind(r.media_title.as_deref())
                                .push_bind(r.media_seconds)
                                .push_bind(r.priority)
                                .push_bind(serde_json::to_string(&r.tags).unwrap())
                                .push_bind(r.raw.as_str())
                                .push_bind(
                                    r.server_time_ms.map(daz_plugin_api::sql::rfc3339_from_ms),
                                )
                                .push_bind(daz_plugin_api::sql::rfc3339_from_ms(r.received_ms))
                                .push_bind(r.line_key());
                        });
                        q.build().execute(&mut *tx).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                });
                total += start.elapsed();
            }
            total
        });
    });
    // `logger` is the default policy (`everysec`); `always` pays an fdatasync per
    // event, so it runs fewer events.
    for (name, fsync, n) in [
        ("logger", Fsync::Everysec, N),
        ("logger_fsync_no", Fsync::No, N),
        ("logger_fsync_always", Fsync::Always, 500),
    ] {
        let logger = Logger::start_with(rt, &db, PgWrite::Copy, 200, fsync);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    truncate(rt, &db);
                    round += 1;
                    let evs = events(n, round);
                    total += logger.run(&evs);
                }
                total
            });
        });
    }
    g.finish();
}

/// Accepted → committed latency at a steady 1 000 events/s.
fn latency(rt: &tokio::runtime::Runtime, name: &str, db: &Db) {
    truncate(rt, db);
    let logger = Logger::start(rt, db, PgWrite::Copy, 200);
    let evs = events(3_000, 9_999);
    let start = Instant::now();
    for (i, e) in evs.iter().enumerate() {
        let due = start + Duration::from_millis(i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        logger.accept(e);
    }
    while logger.committed() < evs.len() as u64 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let h = &logger.pipeline.stats.latency;
    let ms = |q: f64| h.quantile(q).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "latency/{name}: accepted -> committed at 1000 events/s (flush_interval 200 ms, {} events): p50 {:.1} ms, p99 {:.1} ms",
        h.count(),
        ms(0.5),
        ms(0.99)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().without_plots().configure_from_args();
    bench_accept(&mut c, &rt);
    bench_pg(&mut c, &rt);
    bench_sqlite(&mut c, &rt);
    let pg = pg_db(&rt);
    latency(&rt, "postgres", &pg);
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_db(&rt, dir.path());
    latency(&rt, "sqlite", &lite);
    c.final_summary();
}
