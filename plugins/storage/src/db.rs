//! The database: a sqlx pool on PostgreSQL or SQLite, the core migrations, and the
//! event log's batch writers (binary COPY through a staging table, or UNNEST, on
//! PostgreSQL; multi-row INSERT in one transaction on SQLite). Every batch write is
//! idempotent on the event id, and on a chat line's line key ([`LogRow::line_key`]):
//! conflicts on either are skipped (`ON CONFLICT DO NOTHING`, `INSERT OR IGNORE`).

use std::{str::FromStr, sync::OnceLock, time::Duration};

use daz_plugin_api::sql::{Dialect, rfc3339_from_ms};
use sqlx::{
    Connection, PgPool, SqlitePool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{
    config::{redact_url, scrub},
    row::LogRow,
};

/// The core schema, embedded at build time (a plugin file must not depend on the
/// source tree at run time).
pub static PG_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");
/// The core schema for SQLite.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not one we can use.
    #[error(
        "database_url {url} is not usable: {why} (use postgres://user@host/db or sqlite://path.db)"
    )]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// Why.
        why: String,
    },
    /// The database carries a migration this build does not know.
    #[error(
        "the database has core migration {version} ({description}), which this build of the \
         storage plugin does not know: a newer daz migrated it. Upgrade the storage plugin, or \
         point database_url at another database"
    )]
    NewerSchema {
        /// The unknown version.
        version: i64,
        /// Its description as recorded.
        description: String,
    },
    /// A migration failed or was refused.
    #[error("migrating the core schema failed: {0}")]
    Migrate(String),
    /// Any other database error.
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
}

impl DbError {
    /// Whether trying again later may help (the database is down or busy), as opposed
    /// to a refusal an operator must fix.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Sql(e) => is_transient(e),
            DbError::Migrate(_) | DbError::NewerSchema { .. } | DbError::BadUrl { .. } => false,
        }
    }
}

/// Whether an error means "the database is unreachable or busy right now".
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08), operator intervention such as a
            // shutdown (57P), insufficient resources (53), serialization failures and
            // deadlocks (40). SQLite: BUSY (5) and LOCKED (6) and their extended codes.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code.starts_with("40")
                || matches!(code.parse::<i32>(), Ok(c) if c & 0xff == 5 || c & 0xff == 6)
        }
        _ => false,
    }
}

/// The pool.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL.
    Pg(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// How PostgreSQL batches are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgWrite {
    /// Binary COPY into a temporary staging table, then `INSERT … SELECT … ON CONFLICT
    /// DO NOTHING`.
    #[default]
    Copy,
    /// One `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING`.
    Unnest,
}

impl Db {
    /// Creates the pool without connecting (the first use connects), so the plugin
    /// starts even while the database is down.
    pub fn open_lazy(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Db, DbError> {
        // A parse error may quote the URL or one of its parameters.
        let bad = |why: String| DbError::BadUrl {
            url: redact_url(url),
            why: scrub(&why, url),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(connect_timeout)
                .connect_lazy_with(opts.application_name("daz-storage"));
            Ok(Db::Pg(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| bad(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(connect_timeout)
                .connect_lazy_with(opts);
            Ok(Db::Sqlite(pool))
        } else {
            Err(bad(
                "the scheme is neither postgres:// nor sqlite:".to_owned()
            ))
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Closes every connection (waits for them to be returned).
    pub async fn close(&self) {
        match self {
            Db::Pg(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Pg(p) => p.acquire().await?.ping().await,
            Db::Sqlite(p) => p.acquire().await?.ping().await,
        }
    }

    /// Versions and descriptions recorded in `_sqlx_migrations`, if the table exists.
    async fn applied(&self) -> Result<Vec<(i64, String)>, sqlx::Error> {
        const Q: &str = "SELECT version, description FROM _sqlx_migrations ORDER BY version";
        match self {
            Db::Pg(p) => {
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(p)
                        .await?;
                if !exists {
                    return Ok(Vec::new());
                }
                sqlx::query_as(Q).fetch_all(p).await
            }
            Db::Sqlite(p) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await?;
                if n == 0 {
                    return Ok(Vec::new());
                }
                sqlx::query_as(Q).fetch_all(p).await
            }
        }
    }

    /// Applies the core migrations; refuses a database migrated by a newer build.
    pub async fn migrate(&self) -> Result<Vec<i64>, DbError> {
        let migrator = match self {
            Db::Pg(_) => &PG_MIGRATOR,
            Db::Sqlite(_) => &SQLITE_MIGRATOR,
        };
        let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        let applied = self.applied().await?;
        if let Some((version, description)) =
            applied.iter().find(|(v, _)| !known.contains(v)).cloned()
        {
            return Err(DbError::NewerSchema {
                version,
                description,
            });
        }
        let result = match self {
            Db::Pg(p) => migrator.run(p).await,
            Db::Sqlite(p) => migrator.run(p).await,
        };
        match result {
            Ok(()) => Ok(known
                .into_iter()
                .filter(|v| !applied.iter().any(|(a, _)| a == v))
                .collect()),
            Err(MigrateError::Execute(e)) if is_transient(&e) => Err(DbError::Sql(e)),
            Err(MigrateError::Execute(e)) => Err(DbError::Migrate(e.to_string())),
            Err(MigrateError::VersionMismatch(v)) => Err(DbError::Migrate(format!(
                "core migration {v} was changed after it was applied to this database; \
                 restore the original file or migrate a fresh database"
            ))),
            Err(e) => Err(DbError::Migrate(e.to_string())),
        }
    }

    /// Writes a batch of event rows; returns how many were new (the rest were already
    /// there: a replay).
    ///
    /// `fresh` says the rows were never offered to the database before (they come
    /// straight from memory, not from the journal): on PostgreSQL they are then copied
    /// straight into `event_log`, which is as fast as COPY gets; should one of them
    /// exist after all, the unique key refuses the COPY and the batch goes through the
    /// idempotent staging path instead.
    pub async fn write_rows(
        &self,
        rows: &[LogRow],
        pg: PgWrite,
        fresh: bool,
    ) -> Result<u64, sqlx::Error> {
        if rows.is_empty() {
            return Ok(0);
        }
        match (self, pg) {
            (Db::Pg(p), PgWrite::Copy) if fresh => match pg_copy_direct(p, rows).await? {
                Some(n) => Ok(n),
                None => pg_copy_staged(p, rows).await,
            },
            (Db::Pg(p), PgWrite::Copy) => pg_copy_staged(p, rows).await,
            (Db::Pg(p), PgWrite::Unnest) => pg_unnest(p, rows).await,
            (Db::Sqlite(p), _) => sqlite_insert(p, rows).await,
        }
    }
}

/// The `event_log` columns, in table order.
pub const COLUMNS: &str = "id, subject, room, event, user_name, message, media_id, media_type, \
     media_title, media_seconds, priority, tags, raw, server_time, received_at, line_key";

/// Binary COPY encoding of event rows (the PostgreSQL `COPY … FORMAT binary` stream).
pub mod copy {
    use super::LogRow;

    /// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
    const PG_EPOCH_MS: i64 = 946_684_800_000;
    /// The `text` type's OID (array element type).
    const TEXT_OID: u32 = 25;

    /// The stream header.
    pub fn header(out: &mut Vec<u8>) {
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
    }

    /// The stream trailer.
    pub fn trailer(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }

    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn opt_text(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(s) => field(out, s.as_bytes()),
            None => null(out),
        }
    }

    fn time(out: &mut Vec<u8>, ms: i64) {
        field(out, &((ms - PG_EPOCH_MS) * 1000).to_be_bytes());
    }

    /// One tuple of `event_log` (16 fields, table order).
    pub fn row(out: &mut Vec<u8>, r: &LogRow) {
        out.extend_from_slice(&16i16.to_be_bytes());
        field(out, r.id.as_bytes());
        field(out, r.subject.as_bytes());
        opt_text(out, r.room.as_deref());
        field(out, r.event.as_bytes());
        opt_text(out, r.user.as_deref());
        opt_text(out, r.message.as_deref());
        opt_text(out, r.media_id.as_deref());
        opt_text(out, r.media_type.as_deref());
        opt_text(out, r.media_title.as_deref());
        match r.media_seconds {
            Some(s) => field(out, &s.to_be_bytes()),
            None => null(out),
        }
        field(out, &r.priority.to_be_bytes());
        // text[]: ndim, has-null flag, element type, then (size, lower bound) per
        // dimension and the elements; an empty array has no dimensions.
        let mut arr = Vec::with_capacity(20 + r.tags.len() * 16);
        let ndim: i32 = if r.tags.is_empty() { 0 } else { 1 };
        arr.extend_from_slice(&ndim.to_be_bytes());
        arr.extend_from_slice(&0i32.to_be_bytes());
        arr.extend_from_slice(&TEXT_OID.to_be_bytes());
        if ndim == 1 {
            arr.extend_from_slice(&i32::try_from(r.tags.len()).unwrap_or(0).to_be_bytes());
            arr.extend_from_slice(&1i32.to_be_bytes());
            for t in &r.tags {
                field(&mut arr, t.as_bytes());
            }
        }
        field(out, &arr);
        // jsonb: a version byte, then the text.
        out.extend_from_slice(
            &(i32::try_from(r.raw.len()).unwrap_or(i32::MAX - 1) + 1).to_be_bytes(),
        );
        out.push(1);
        out.extend_from_slice(r.raw.as_bytes());
        match r.server_time_ms {
            Some(t) => time(out, t),
            None => null(out),
        }
        time(out, r.received_ms);
        opt_text(out, r.line_key().as_deref());
    }

    /// A whole COPY stream for `rows`.
    pub fn encode(rows: &[LogRow]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * 400 + 32);
        header(&mut out);
        for r in rows {
            row(&mut out, r);
        }
        trailer(&mut out);
        out
    }
}

/// Binary COPY straight into `event_log`; `None` when a row already exists (the
/// transaction is rolled back and nothing was written).
async fn pg_copy_direct(pool: &PgPool, rows: &[LogRow]) -> Result<Option<u64>, sqlx::Error> {
    let data = copy::encode(rows);
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let copied = async {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY event_log ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        copy.send(data).await?;
        copy.finish().await
    }
    .await;
    match copied {
        Ok(n) => {
            tx.commit().await?;
            Ok(Some(n))
        }
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => {
            tx.rollback().await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn pg_copy_staged(pool: &PgPool, rows: &[LogRow]) -> Result<u64, sqlx::Error> {
    let data = copy::encode(rows);
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // A session-local staging table without indexes: COPY fills it at full speed, the
    // INSERT … ON CONFLICT moves the new rows over, the commit empties it.
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS event_log_stage \
         (LIKE event_log INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *tx)
    .await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY event_log_stage ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO event_log ({COLUMNS}) SELECT {COLUMNS} FROM event_log_stage \
         ON CONFLICT DO NOTHING"
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(inserted)
}

/// Joins tags for UNNEST (a one-dimensional array cannot hold arrays); the separator
/// is a control character tags never carry.
const TAG_SEP: char = '\u{1f}';

async fn pg_unnest(pool: &PgPool, rows: &[LogRow]) -> Result<u64, sqlx::Error> {
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let mut subjects = Vec::with_capacity(n);
    let mut rooms = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut messages = Vec::with_capacity(n);
    let mut media_ids = Vec::with_capacity(n);
    let mut media_types = Vec::with_capacity(n);
    let mut media_titles = Vec::with_capacity(n);
    let mut media_seconds = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut raws = Vec::with_capacity(n);
    let mut server_times = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for r in rows {
        keys.push(r.line_key());
        ids.push(r.id.as_str());
        subjects.push(r.subject.as_str());
        rooms.push(r.room.as_deref());
        events.push(r.event.as_str());
        users.push(r.user.as_deref());
        messages.push(r.message.as_deref());
        media_ids.push(r.media_id.as_deref());
        media_types.push(r.media_type.as_deref());
        media_titles.push(r.media_title.as_deref());
        media_seconds.push(r.media_seconds);
        priorities.push(r.priority);
        tags.push(
            r.tags
                .iter()
                .map(|t| t.replace(TAG_SEP, " "))
                .collect::<Vec<_>>()
                .join(&TAG_SEP.to_string()),
        );
        raws.push(r.raw.as_str());
        server_times.push(
            r.server_time_ms
                .and_then(chrono::DateTime::from_timestamp_millis),
        );
        received.push(chrono::DateTime::from_timestamp_millis(r.received_ms));
    }
    let sql = format!(
        "INSERT INTO event_log ({COLUMNS}) \
         SELECT id, subject, room, event, user_name, message, media_id, media_type, media_title, \
                media_seconds, priority, string_to_array(tags, E'\\x1f'), raw::jsonb, server_time, \
                received_at, line_key \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::int8[], $11::int2[], $12::text[], \
                     $13::text[], $14::timestamptz[], $15::timestamptz[], $16::text[]) \
              AS t({COLUMNS}) \
         ON CONFLICT DO NOTHING"
    );
    let done = sqlx::query(&sql)
        .bind(ids)
        .bind(subjects)
        .bind(rooms)
        .bind(events)
        .bind(users)
        .bind(messages)
        .bind(media_ids)
        .bind(media_types)
        .bind(media_titles)
        .bind(media_seconds)
        .bind(priorities)
        .bind(tags)
        .bind(raws)
        .bind(server_times)
        .bind(received)
        .bind(keys)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Rows per INSERT statement on SQLite (16 parameters each, well under SQLite's
/// 32766-parameter limit).
const SQLITE_CHUNK: usize = 500;

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT OR IGNORE INTO event_log ({COLUMNS}) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

async fn sqlite_insert(pool: &SqlitePool, rows: &[LogRow]) -> Result<u64, sqlx::Error> {
    static FULL: OnceLock<String> = OnceLock::new();
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in rows.chunks(SQLITE_CHUNK) {
        let partial;
        let sql: &str = if chunk.len() == SQLITE_CHUNK {
            FULL.get_or_init(|| sqlite_insert_sql(SQLITE_CHUNK))
        } else {
            partial = sqlite_insert_sql(chunk.len());
            &partial
        };
        let mut q = sqlx::query(sql);
        for r in chunk {
            q = q
                .bind(r.id.as_str())
                .bind(r.subject.as_str())
                .bind(r.room.as_deref())
                .bind(r.event.as_str())
                .bind(r.user.as_deref())
                .bind(r.message.as_deref())
                .bind(r.media_id.as_deref())
                .bind(r.media_type.as_deref())
                .bind(r.media_title.as_deref())
                .bind(r.media_seconds)
                .bind(r.priority)
                .bind(serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".to_owned()))
                .bind(r.raw.as_str())
                .bind(r.server_time_ms.map(rfc3339_from_ms))
                .bind(rfc3339_from_ms(r.received_ms))
                .bind(r.line_key());
        }
        inserted += q.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}
