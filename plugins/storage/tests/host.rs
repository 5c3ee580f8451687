//! The storage plugin as a real `.so` in a real host: SQL requests over the bus, the
//! event log fed by bus events, hot swaps under load, and a PostgreSQL outage while
//! events keep coming (a private server, stopped and started by the test).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use daz_bus::Envelope;
use daz_host::plugins::{ReloadOutcome, Trigger};
use daz_testkit::{
    TestHost, build_plugins,
    db::{BOTH, TestDb},
    host_table,
    pg::PrivatePg,
    wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn storage_so() -> std::path::PathBuf {
    build_plugins(&["daz-plugin-storage"]).join("libdaz_plugin_storage.so")
}

fn host_config(url: &str, journal: &std::path::Path, extra: &str) -> String {
    format!(
        "{}\n[plugins.storage]\nfile = \"libdaz_plugin_storage.so\"\n[plugins.storage.config]\n\
         database_url = \"{url}\"\nprefer_env = false\njournal_dir = \"{}\"\nflush_interval_ms = 50\n{extra}\n",
        host_table("create_timeout_ms = 20000"),
        journal.display()
    )
}

fn request(h: &TestHost, subject: &str, payload: Value) -> Result<Value, String> {
    let env = Envelope::builder(subject, serde_json::to_vec(&payload).unwrap())
        .source("test")
        .build()
        .unwrap();
    let reply = h
        .app
        .bus
        .request(env, None, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    if reply.is_error {
        Err(body["error"].as_str().unwrap_or_default().to_owned())
    } else {
        Ok(body)
    }
}

/// Rows and distinct ids in the event log, asked through the plugin itself: the test
/// process must not open the SQLite file while the plugin has it open, because the
/// plugin carries its own copy of SQLite, and SQLite's POSIX locks are per process, not
/// per library copy.
fn counts(h: &TestHost) -> (i64, i64) {
    let r = request(
        h,
        "sql.query",
        json!({"sql": "SELECT count(*) AS n, count(DISTINCT id) AS d FROM event_log"}),
    )
    .unwrap();
    (
        r["rows"][0][0].as_i64().unwrap(),
        r["rows"][0][1].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_requests_and_the_event_log_work_through_a_real_host() {
    let so = storage_so();
    for kind in BOTH {
        let db = TestDb::new(kind);
        let h = TestHost::start(
            &host_config(&db.url, &db.journal_dir(), ""),
            &[(so.clone(), "libdaz_plugin_storage.so")],
        )
        .await;
        let hh = &h;
        tokio::task::block_in_place(|| {
            request(
                hh,
                "sql.exec",
                json!({"sql": "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT)"}),
            )
            .unwrap();
            let r = request(
                hh,
                "sql.exec",
                json!({"sql": "INSERT INTO kv VALUES ($1, $2)", "params": [{"type": "text", "value": "a"}, {"type": "int", "value": 41}]}),
            )
            .unwrap();
            assert_eq!(r["rows_affected"], 1);
            let r = request(hh, "sql.query", json!({"sql": "SELECT v + 1 AS v FROM kv WHERE k = $1", "params": [{"type": "text", "value": "a"}]})).unwrap();
            assert_eq!(r["rows"][0][0], json!(42), "{kind:?}");
            let e = request(hh, "sql.query", json!({"sql": "SELECT nope FROM kv"})).unwrap_err();
            assert!(e.contains("nope"), "{e}");
            for i in 0..10 {
                hh.chat("lobby", "alice", &format!("line {i}"));
            }
            hh.publish("cytube.in.lobby.mediaUpdate", json!({"currentTime": 1}));
            wait_until(WAIT, "10 chat rows", || counts(hh).0 == 10);
        });
        let (_, metrics) = h.get("/metrics").await;
        assert!(
            metrics.contains("daz_plugin_storage_rows_written_total{plugin=\"storage\"} 10"),
            "{metrics}"
        );
        assert!(
            metrics.contains("daz_plugin_storage_query_seconds"),
            "{metrics}"
        );
        h.app.shutdown().await;
        assert_eq!(db.event_counts(), (10, 10));
    }
}

/// Publishes `total` chat events at about `per_sec`, numbered from 0.
fn publisher(
    h: &TestHost,
    total: u64,
    per_sec: u64,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let bus = h.app.bus.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            let due = start + Duration::from_micros(i * 1_000_000 / per_sec);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let payload = json!({"username": "loader", "msg": format!("n{i}"), "time": 0});
            let env = Envelope::builder(
                "cytube.in.load.chatMsg",
                serde_json::to_vec(&payload).unwrap(),
            )
            .room("load")
            .source("cytube:load")
            .build()
            .unwrap();
            bus.publish(env).unwrap();
            sent.fetch_add(1, Ordering::Release);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_under_load_loses_and_duplicates_nothing() {
    let so = storage_so();
    for kind in BOTH {
        let db = TestDb::new(kind);
        let h = TestHost::start(
            &host_config(&db.url, &db.journal_dir(), ""),
            &[(so.clone(), "libdaz_plugin_storage.so")],
        )
        .await;
        const TOTAL: u64 = 6_000;
        let sent = Arc::new(AtomicU64::new(0));
        let load = publisher(&h, TOTAL, 2_000, sent.clone());
        let manager = h.app.plugins.clone();
        let swaps = tokio::task::spawn_blocking(move || {
            let mut swaps = 0;
            for k in 1..=3u64 {
                while sent.load(Ordering::Acquire) < k * TOTAL / 4 {
                    std::thread::yield_now();
                }
                match manager.reload("storage", Trigger::Explicit) {
                    Ok(ReloadOutcome::Swapped(_)) => swaps += 1,
                    other => panic!("swap {k}: {other:?}"),
                }
            }
            swaps
        })
        .await
        .unwrap();
        assert_eq!(swaps, 3);
        tokio::task::block_in_place(|| {
            load.join().unwrap();
            wait_until(WAIT, "every event in the log", || {
                counts(&h).0 == TOTAL as i64
            });
        });
        h.app.shutdown().await;
        assert_eq!(db.event_counts(), (TOTAL as i64, TOTAL as i64), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_postgres_outage() {
    let so = storage_so();
    let pg = PrivatePg::start();
    let dir = tempfile::tempdir().unwrap();
    let h = TestHost::start(
        &host_config(
            &pg.url(),
            &dir.path().join("journal"),
            "spill_after_ms = 200\nconnect_timeout_ms = 500\nwrite_timeout_ms = 2000",
        ),
        &[(so, "libdaz_plugin_storage.so")],
    )
    .await;
    let count = || -> i64 {
        let url = pg.url();
        tokio::task::block_in_place(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let pool = sqlx::PgPool::connect(&url).await.ok()?;
                    let (n, d): (i64, i64) =
                        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM event_log")
                            .fetch_one(&pool)
                            .await
                            .ok()?;
                    pool.close().await;
                    assert_eq!(n, d, "no duplicates");
                    Some(n)
                })
                .unwrap_or(-1)
        })
    };
    const TOTAL: u64 = 6_000;
    let sent = Arc::new(AtomicU64::new(0));
    let load = publisher(&h, TOTAL, 1_500, sent.clone());
    let outage_done = Arc::new(AtomicBool::new(false));
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "a third published", || {
            sent.load(Ordering::Acquire) >= TOTAL / 3
        });
        wait_until(WAIT, "rows before the outage", || count() > 0);
        pg.down();
        wait_until(WAIT, "two thirds published", || {
            sent.load(Ordering::Acquire) >= 2 * TOTAL / 3
        });
        pg.up();
        outage_done.store(true, Ordering::Release);
        load.join().unwrap();
        wait_until(WAIT, "every event in the log", || count() == TOTAL as i64);
    });
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("daz_plugin_storage_db_errors_total"),
        "the outage was seen: {metrics}"
    );
    assert!(
        !metrics.contains("daz_plugin_storage_events_lost_total"),
        "{metrics}"
    );
    h.app.shutdown().await;
    assert!(outage_done.load(Ordering::Acquire));
    assert_eq!(count(), TOTAL as i64);
}
