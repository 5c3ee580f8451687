//! A fresh database per test: a new database on the project's PostgreSQL server
//! (127.0.0.1:5432, trust auth; `.ci/run` starts it), or an SQLite file in a temp dir,
//! plus direct queries to check what was written.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
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
    /// A private directory (mode 0755) for the SQLite file, journals and secrets.
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
                .expect("a test runtime")
                .block_on(f)
        })
        .join()
        .expect("the query thread does not panic")
    })
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `f` on a pool of the database's kind (PostgreSQL or SQLite), closing it after.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {{
        let url = $db.url.clone();
        block_on(async move {
            match $db.kind {
                Kind::Postgres => {
                    let $pool = sqlx::PgPool::connect(&url).await.ok()?;
                    let v = $body;
                    $pool.close().await;
                    v
                }
                Kind::Sqlite => {
                    let $pool = sqlx::SqlitePool::connect(&url).await.ok()?;
                    let v = $body;
                    $pool.close().await;
                    v
                }
            }
        })
    }};
}

impl TestDb {
    /// A new database named `daz_test_<pid>_<n>` (PostgreSQL) or `daz.db` in a new temp
    /// dir (SQLite).
    pub fn new(kind: Kind) -> TestDb {
        let dir = tempfile::tempdir().expect("a temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        match kind {
            Kind::Sqlite => TestDb {
                kind,
                url: format!("sqlite://{}", dir.path().join("daz.db").display()),
                dir,
                pg_name: None,
            },
            Kind::Postgres => {
                let name = format!(
                    "daz_test_{}_{}",
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

    /// The journal directory tests give the storage plugin.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Runs a query returning one integer.
    pub fn scalar(&self, sql: &str) -> i64 {
        let q = sql.to_owned();
        with_pool!(self, |pool| Some(
            sqlx::query_scalar::<_, i64>(q.as_str())
                .fetch_one(&pool)
                .await
                .map_err(|e| format!("{q}: {e}"))
        ))
        .expect("the test database is reachable")
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs a query returning text rows (first column).
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let q = sql.to_owned();
        with_pool!(self, |pool| Some(
            sqlx::query_scalar::<_, String>(q.as_str())
                .fetch_all(&pool)
                .await
                .map_err(|e| format!("{q}: {e}"))
        ))
        .expect("the test database is reachable")
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs one or more statements.
    pub fn exec(&self, sql: &str) {
        let q = sql.to_owned();
        with_pool!(self, |pool| Some(
            sqlx::raw_sql(q.as_str())
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| format!("{q}: {e}"))
        ))
        .expect("the test database is reachable")
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Rows in the event log, and distinct ids among them (one snapshot).
    pub fn event_counts(&self) -> (i64, i64) {
        self.try_event_counts().expect("the event log is readable")
    }

    /// [`TestDb::event_counts`], or `None` while the database or the table is not there
    /// yet.
    pub fn try_event_counts(&self) -> Option<(i64, i64)> {
        const Q: &str = "SELECT count(*), count(DISTINCT id) FROM event_log";
        with_pool!(self, |pool| sqlx::query_as::<_, (i64, i64)>(Q)
            .fetch_one(&pool)
            .await
            .ok())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            // Never a panic in drop (it may run while a failed test unwinds).
            let _ = try_pg_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs one statement on the shared server's `postgres` database; panics with the
/// statement and the server's error if it fails.
pub fn pg_admin(sql: &str) {
    if let Err(e) = try_pg_admin(sql) {
        panic!("{e}");
    }
}

fn try_pg_admin(sql: &str) -> Result<(), String> {
    let sql = sql.to_owned();
    block_on(async move {
        let pool = sqlx::PgPool::connect(PG_ADMIN_URL).await.map_err(|e| {
            format!(
                "the shared PostgreSQL on 127.0.0.1:5432 is not reachable (.ci/run starts it): {e}"
            )
        })?;
        let result = sqlx::raw_sql(&sql).execute(&pool).await;
        pool.close().await;
        result.map(drop).map_err(|e| format!("{sql}: {e}"))
    })
}
