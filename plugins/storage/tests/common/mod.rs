//! Shared helpers of the storage plugin's integration tests: a fresh database per test
//! (a new PostgreSQL database on the shared server, or an SQLite file in a temp dir),
//! direct queries to check what was written, and a private PostgreSQL server for the
//! outage tests.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// The shared PostgreSQL server of the project machines (trust auth).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// Both, for suites that run on each.
pub const BOTH: [Kind; 2] = [Kind::Sqlite, Kind::Postgres];

/// A fresh, empty database; dropped (PostgreSQL) or deleted (SQLite) with the value.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

/// Runs `f` on a runtime of its own, on a thread of its own: callable from plain tests
/// and from inside async tests alike.
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub fn new(kind: Kind) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Sqlite => TestDb {
                kind,
                url: format!("sqlite://{}", dir.path().join("daz.db").display()),
                dir,
                pg_name: None,
            },
            Kind::Postgres => {
                let name = format!(
                    "daz_storage_test_{}_{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                );
                pg_admin(&format!("DROP DATABASE IF EXISTS {name}"));
                pg_admin(&format!("CREATE DATABASE {name}"));
                TestDb {
                    kind,
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// The journal directory tests give the plugin.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Runs a query returning one integer.
    pub fn scalar(&self, sql: &str) -> i64 {
        let url = self.url.clone();
        let sql = sql.to_owned();
        block_on(async move {
            match self.kind {
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let v: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                    pool.close().await;
                    v
                }
                Kind::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    let v: i64 = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                    pool.close().await;
                    v
                }
            }
        })
    }

    /// Runs a query returning text rows (first column).
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let url = self.url.clone();
        let sql = sql.to_owned();
        block_on(async move {
            match self.kind {
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let v: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&pool).await.unwrap();
                    pool.close().await;
                    v
                }
                Kind::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    let v: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&pool).await.unwrap();
                    pool.close().await;
                    v
                }
            }
        })
    }

    /// Runs a statement.
    pub fn exec(&self, sql: &str) {
        let url = self.url.clone();
        let sql = sql.to_owned();
        block_on(async move {
            match self.kind {
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
                Kind::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
            }
        });
    }

    /// Rows in the event log, and distinct ids among them (one snapshot).
    pub fn event_counts(&self) -> (i64, i64) {
        self.try_event_counts().expect("the event log is readable")
    }

    /// [`TestDb::event_counts`], or `None` while the database or the table is not there
    /// yet.
    pub fn try_event_counts(&self) -> Option<(i64, i64)> {
        let url = self.url.clone();
        const Q: &str = "SELECT count(*), count(DISTINCT id) FROM event_log";
        block_on(async move {
            match self.kind {
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.ok()?;
                    let v: Option<(i64, i64)> = sqlx::query_as(Q).fetch_one(&pool).await.ok();
                    pool.close().await;
                    v
                }
                Kind::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
                    let v: Option<(i64, i64)> = sqlx::query_as(Q).fetch_one(&pool).await.ok();
                    pool.close().await;
                    v
                }
            }
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs one statement on the shared server's `postgres` database.
pub fn pg_admin(sql: &str) {
    let sql = sql.to_owned();
    block_on(async move {
        let pool = sqlx::PgPool::connect(PG_ADMIN_URL)
            .await
            .expect("the shared PostgreSQL on 127.0.0.1:5432 is up (see .ci/run)");
        sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

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
