//! The SQL service: answers `sql.query`, `sql.exec`, `sql.batch`, `sql.migrate`,
//! `sql.info`, `sql.state.save` and `sql.state.load` (wire types in
//! [`daz_plugin_api::sql`]).
//!
//! Statements run with typed parameters only; values are never pasted into SQL text.
//! Every request has a timeout (on PostgreSQL also enforced by the server through
//! `statement_timeout`, so a runaway query is cancelled there, not only abandoned here).
//! Every failure becomes an error message for the requester that carries the
//! database's own message; nothing here panics on bad input.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use daz_plugin_api::{
    SavedState,
    sql::{
        BatchRequest, BatchResult, Column, Dialect, ExecRequest, ExecResult, Info, MigrateRequest,
        MigrateResult, Param, QueryRequest, Rows, StateLoadRequest, StateLoadResult,
        StateSaveRequest, StatementOutcome, base64_encode, rfc3339_from_ms,
    },
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{
    Column as _, Connection, Executor, Postgres, Row, Sqlite, TypeInfo, ValueRef,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgRow, PgTypeInfo, types::Oid},
    sqlite::SqliteRow,
};

use crate::{db::Db, metrics::Metrics};

/// Limits of the service.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Timeout when a request names none.
    pub default_timeout: Duration,
    /// Upper bound of a requester's timeout.
    pub max_timeout: Duration,
    /// Rows a query returns at most.
    pub max_rows: u64,
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    db: Db,
    limits: Limits,
    metrics: Metrics,
}

/// A NULL whose type PostgreSQL infers from the statement (parameter type OID 0), so a
/// NULL fits any column.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("{} (code {code})", d.message()),
            None => d.message().to_owned(),
        },
        sqlx::Error::PoolTimedOut => {
            "the database is unreachable (no connection within the connect timeout)".to_owned()
        }
        sqlx::Error::Io(io) => format!("the database is unreachable: {io}"),
        other => other.to_string(),
    }
}

fn timestamp(i: usize, s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "parameter ${}: timestamp {s:?} is not RFC 3339 ({e})",
                i + 1
            )
        })
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_pg<'q>(mut q: PgQuery<'q>, params: &'q [Param]) -> Result<PgQuery<'q>, String> {
    for (i, p) in params.iter().enumerate() {
        q = match p {
            Param::Null => q.bind(UntypedNull),
            Param::Bool(v) => q.bind(*v),
            Param::Int(v) => q.bind(*v),
            Param::Float(v) => q.bind(*v),
            Param::Text(v) => q.bind(v.as_str()),
            Param::Bytes(v) => q.bind(v.as_slice()),
            Param::Timestamp(v) => q.bind(timestamp(i, v)?),
            Param::Json(v) => q.bind(sqlx::types::Json(v)),
        };
    }
    Ok(q)
}

fn bind_sqlite<'q>(mut q: SqliteQuery<'q>, params: &'q [Param]) -> Result<SqliteQuery<'q>, String> {
    for (i, p) in params.iter().enumerate() {
        q = match p {
            Param::Null => q.bind(None::<i64>),
            Param::Bool(v) => q.bind(*v),
            Param::Int(v) => q.bind(*v),
            Param::Float(v) => q.bind(*v),
            Param::Text(v) => q.bind(v.as_str()),
            Param::Bytes(v) => q.bind(v.as_slice()),
            // The core schema's convention: RFC 3339 UTC text, millisecond precision.
            Param::Timestamp(v) => q.bind(rfc3339_from_ms(timestamp(i, v)?.timestamp_millis())),
            Param::Json(v) => q.bind(v.to_string()),
        };
    }
    Ok(q)
}

fn rfc3339(t: DateTime<Utc>) -> serde_json::Value {
    serde_json::Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn pg_value(row: &PgRow, i: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(J::Null);
    }
    let ty = raw.type_info().name().to_owned();
    let err = |e: sqlx::Error| format!("column {} ({ty}): {e}", i + 1);
    let v = match ty.as_str() {
        "BOOL" => J::from(row.try_get::<bool, _>(i).map_err(err)?),
        "INT2" => J::from(row.try_get::<i16, _>(i).map_err(err)?),
        "INT4" => J::from(row.try_get::<i32, _>(i).map_err(err)?),
        "INT8" => J::from(row.try_get::<i64, _>(i).map_err(err)?),
        "OID" => J::from(row.try_get::<Oid, _>(i).map_err(err)?.0),
        "FLOAT4" => J::from(row.try_get::<f32, _>(i).map_err(err)?),
        "FLOAT8" => J::from(row.try_get::<f64, _>(i).map_err(err)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" | "CITEXT" | "UNKNOWN" => {
            J::from(row.try_get::<String, _>(i).map_err(err)?)
        }
        "BYTEA" => J::from(base64_encode(&row.try_get::<Vec<u8>, _>(i).map_err(err)?)),
        "TIMESTAMPTZ" => rfc3339(row.try_get::<DateTime<Utc>, _>(i).map_err(err)?),
        "TIMESTAMP" => rfc3339(
            row.try_get::<chrono::NaiveDateTime, _>(i)
                .map_err(err)?
                .and_utc(),
        ),
        "DATE" => J::from(
            row.try_get::<chrono::NaiveDate, _>(i)
                .map_err(err)?
                .to_string(),
        ),
        "TIME" => J::from(
            row.try_get::<chrono::NaiveTime, _>(i)
                .map_err(err)?
                .to_string(),
        ),
        "JSON" | "JSONB" => row.try_get::<J, _>(i).map_err(err)?,
        "TEXT[]" | "VARCHAR[]" | "NAME[]" => {
            J::from(row.try_get::<Vec<String>, _>(i).map_err(err)?)
        }
        "INT2[]" => J::from(row.try_get::<Vec<i16>, _>(i).map_err(err)?),
        "INT4[]" => J::from(row.try_get::<Vec<i32>, _>(i).map_err(err)?),
        "INT8[]" => J::from(row.try_get::<Vec<i64>, _>(i).map_err(err)?),
        "FLOAT8[]" => J::from(row.try_get::<Vec<f64>, _>(i).map_err(err)?),
        "BOOL[]" => J::from(row.try_get::<Vec<bool>, _>(i).map_err(err)?),
        "VOID" => J::Null,
        other => {
            return Err(format!(
                "column {:?} has type {other}, which the SQL service does not return as JSON; \
                 cast it in the query (::text, ::float8, ::bigint)",
                row.columns()[i].name()
            ));
        }
    };
    Ok(v)
}

fn sqlite_value(row: &SqliteRow, i: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(J::Null);
    }
    let declared = row.columns()[i].type_info().name().to_ascii_uppercase();
    let storage = raw.type_info().name().to_owned();
    let err = |e: sqlx::Error| format!("column {} ({storage}): {e}", i + 1);
    let v = match storage.as_str() {
        "INTEGER" | "INT" | "BOOLEAN" | "NUMERIC" => {
            let n = row.try_get::<i64, _>(i).map_err(err)?;
            if declared == "BOOLEAN" || declared == "BOOL" {
                J::from(n != 0)
            } else {
                J::from(n)
            }
        }
        "REAL" => J::from(row.try_get::<f64, _>(i).map_err(err)?),
        "BLOB" => J::from(base64_encode(&row.try_get::<Vec<u8>, _>(i).map_err(err)?)),
        // SQLite has no JSON type (and sqlx reports no declared JSON): JSON stored as
        // text comes back as text; `Row::json` in the SDK decodes either form.
        _ => J::String(row.try_get::<String, _>(i).map_err(err)?),
    };
    Ok(v)
}

fn columns<C: sqlx::Column>(cols: &[C]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            db_type: c.type_info().name().to_owned(),
        })
        .collect()
}

/// Reply bytes or an error message.
pub type Answer = Result<Vec<u8>, String>;

fn json<T: Serialize>(v: &T) -> Answer {
    serde_json::to_vec(v).map_err(|e| format!("cannot encode the reply: {e}"))
}

fn parse<'a, T: serde::Deserialize<'a>>(subject: &str, payload: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| {
        format!("malformed {subject} request: {e}; see daz_plugin_api::sql for the request shapes")
    })
}

impl Service {
    /// A service on `db`.
    pub fn new(db: Db, limits: Limits, metrics: Metrics) -> Self {
        Self {
            db,
            limits,
            metrics,
        }
    }

    fn timeout(&self, requested: Option<u64>) -> Duration {
        requested
            .map(Duration::from_millis)
            .unwrap_or(self.limits.default_timeout)
            .min(self.limits.max_timeout)
            .max(Duration::from_millis(1))
    }

    /// Answers one request.
    pub async fn handle(&self, subject: &str, payload: &[u8]) -> Answer {
        let started = Instant::now();
        let kind = subject.strip_prefix("sql.").unwrap_or(subject);
        let answer = match subject {
            "sql.query" => self.query(parse(subject, payload)?).await,
            "sql.exec" => self.exec(parse(subject, payload)?).await,
            "sql.batch" => self.batch(parse(subject, payload)?).await,
            "sql.migrate" => self.migrate(parse(subject, payload)?).await,
            "sql.info" => self.info().await,
            "sql.state.save" => self.save_state(parse(subject, payload)?).await,
            "sql.state.load" => self.load_state(parse(subject, payload)?).await,
            other => Err(format!(
                "unknown request {other}; the storage plugin answers sql.query, sql.exec, \
                 sql.batch, sql.migrate, sql.info, sql.state.save and sql.state.load"
            )),
        };
        let kind = match kind {
            "query" | "exec" | "batch" | "migrate" | "info" => kind,
            k if k.starts_with("state") => "state",
            _ => "other",
        };
        self.metrics
            .request(kind, answer.is_ok(), started.elapsed());
        if answer.is_err() {
            self.metrics.db_error("query");
        }
        answer
    }

    async fn bounded<T>(
        &self,
        timeout: Duration,
        f: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        // The server-side statement_timeout fires first on PostgreSQL; this bound
        // covers waiting for a connection and SQLite.
        match tokio::time::timeout(timeout + Duration::from_millis(250), f).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the statement did not finish within {} ms and was abandoned",
                timeout.as_millis()
            )),
        }
    }

    async fn query(&self, req: QueryRequest) -> Answer {
        let timeout = self.timeout(req.timeout_ms);
        let max = req
            .max_rows
            .unwrap_or(self.limits.max_rows)
            .min(self.limits.max_rows);
        let rows = self
            .bounded(timeout, async {
                match &self.db {
                    Db::Pg(pool) => {
                        let mut conn = pool.acquire().await.map_err(|e| db_message(&e))?;
                        let mut tx = conn.begin().await.map_err(|e| db_message(&e))?;
                        set_pg_timeout(&mut tx, timeout).await?;
                        let rows = {
                            let q = bind_pg(sqlx::query(&req.sql), &req.params)?;
                            collect(q.fetch(&mut *tx), max, pg_value).await?
                        };
                        tx.commit().await.map_err(|e| db_message(&e))?;
                        Ok(rows)
                    }
                    Db::Sqlite(pool) => {
                        let q = bind_sqlite(sqlx::query(&req.sql), &req.params)?;
                        collect(q.fetch(pool), max, sqlite_value).await
                    }
                }
            })
            .await?;
        json(&rows)
    }

    async fn exec(&self, req: ExecRequest) -> Answer {
        let timeout = self.timeout(req.timeout_ms);
        let rows_affected = self
            .bounded(timeout, async {
                match &self.db {
                    Db::Pg(pool) => {
                        let mut conn = pool.acquire().await.map_err(|e| db_message(&e))?;
                        let mut tx = conn.begin().await.map_err(|e| db_message(&e))?;
                        set_pg_timeout(&mut tx, timeout).await?;
                        let n = bind_pg(sqlx::query(&req.sql), &req.params)?
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| db_message(&e))?
                            .rows_affected();
                        tx.commit().await.map_err(|e| db_message(&e))?;
                        Ok(n)
                    }
                    Db::Sqlite(pool) => Ok(bind_sqlite(sqlx::query(&req.sql), &req.params)?
                        .execute(pool)
                        .await
                        .map_err(|e| db_message(&e))?
                        .rows_affected()),
                }
            })
            .await?;
        json(&ExecResult { rows_affected })
    }

    async fn batch(&self, req: BatchRequest) -> Answer {
        let timeout = self.timeout(req.timeout_ms);
        let n = req.statements.len();
        let results = self
            .bounded(timeout, async {
                let mut results = Vec::with_capacity(n);
                let fail = |i: usize, e: String| {
                    format!(
                        "statement {} of {n} failed: {e}; the whole batch was rolled back",
                        i + 1
                    )
                };
                match (&self.db, req.atomic) {
                    (Db::Pg(pool), true) => {
                        let mut conn = pool.acquire().await.map_err(|e| db_message(&e))?;
                        let mut tx = conn.begin().await.map_err(|e| db_message(&e))?;
                        set_pg_timeout(&mut tx, timeout).await?;
                        for (i, s) in req.statements.iter().enumerate() {
                            let q =
                                bind_pg(sqlx::query(&s.sql), &s.params).map_err(|e| fail(i, e))?;
                            let r = q
                                .execute(&mut *tx)
                                .await
                                .map_err(|e| fail(i, db_message(&e)))?;
                            results.push(StatementOutcome {
                                rows_affected: Some(r.rows_affected()),
                                error: None,
                            });
                        }
                        tx.commit().await.map_err(|e| db_message(&e))?;
                    }
                    (Db::Sqlite(pool), true) => {
                        let mut tx = pool.begin().await.map_err(|e| db_message(&e))?;
                        for (i, s) in req.statements.iter().enumerate() {
                            let q = bind_sqlite(sqlx::query(&s.sql), &s.params)
                                .map_err(|e| fail(i, e))?;
                            let r = q
                                .execute(&mut *tx)
                                .await
                                .map_err(|e| fail(i, db_message(&e)))?;
                            results.push(StatementOutcome {
                                rows_affected: Some(r.rows_affected()),
                                error: None,
                            });
                        }
                        tx.commit().await.map_err(|e| db_message(&e))?;
                    }
                    (Db::Pg(pool), false) => {
                        for s in &req.statements {
                            let r = match bind_pg(sqlx::query(&s.sql), &s.params) {
                                Ok(q) => q.execute(pool).await.map_err(|e| db_message(&e)),
                                Err(e) => Err(e),
                            };
                            results.push(outcome(r.map(|r| r.rows_affected())));
                        }
                    }
                    (Db::Sqlite(pool), false) => {
                        for s in &req.statements {
                            let r = match bind_sqlite(sqlx::query(&s.sql), &s.params) {
                                Ok(q) => q.execute(pool).await.map_err(|e| db_message(&e)),
                                Err(e) => Err(e),
                            };
                            results.push(outcome(r.map(|r| r.rows_affected())));
                        }
                    }
                }
                Ok(results)
            })
            .await?;
        json(&BatchResult { results })
    }

    async fn info(&self) -> Answer {
        let connected = tokio::time::timeout(Duration::from_secs(2), self.db.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        json(&Info {
            dialect: self.db.dialect(),
            connected,
        })
    }

    async fn save_state(&self, req: StateSaveRequest) -> Answer {
        let SavedState {
            plugin,
            version,
            data,
        } = req.state;
        valid_plugin_name(&plugin)?;
        let now = Utc::now();
        let r = match &self.db {
            Db::Pg(pool) => sqlx::query(
                "INSERT INTO plugin_state (plugin, schema_version, data, saved_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (plugin) DO UPDATE SET \
                     schema_version = excluded.schema_version, data = excluded.data, \
                     saved_at = excluded.saved_at",
            )
            .bind(&plugin)
            .bind(i64::from(version))
            .bind(sqlx::types::Json(&data))
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
            Db::Sqlite(pool) => sqlx::query(
                "INSERT INTO plugin_state (plugin, schema_version, data, saved_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (plugin) DO UPDATE SET \
                     schema_version = excluded.schema_version, data = excluded.data, \
                     saved_at = excluded.saved_at",
            )
            .bind(&plugin)
            .bind(i64::from(version))
            .bind(data.to_string())
            .bind(rfc3339_from_ms(now.timestamp_millis()))
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        };
        r.map_err(|e| format!("cannot save the state of {plugin}: {}", db_message(&e)))?;
        json(&serde_json::json!({}))
    }

    async fn load_state(&self, req: StateLoadRequest) -> Answer {
        const Q: &str = "SELECT schema_version, data, saved_at FROM plugin_state WHERE plugin = $1";
        let found: Option<(i64, serde_json::Value, String)> = match &self.db {
            Db::Pg(pool) => sqlx::query_as::<_, (i64, serde_json::Value, DateTime<Utc>)>(Q)
                .bind(&req.plugin)
                .fetch_optional(pool)
                .await
                .map(|r| r.map(|(v, d, t)| (v, d, t.to_rfc3339_opts(SecondsFormat::Millis, true)))),
            Db::Sqlite(pool) => sqlx::query_as::<_, (i64, String, String)>(Q)
                .bind(&req.plugin)
                .fetch_optional(pool)
                .await
                .map(|r| {
                    r.map(|(v, d, t)| {
                        (
                            v,
                            serde_json::from_str(&d).unwrap_or(serde_json::Value::Null),
                            t,
                        )
                    })
                }),
        }
        .map_err(|e| {
            format!(
                "cannot load the state of {}: {}",
                req.plugin,
                db_message(&e)
            )
        })?;
        let result = match found {
            None => StateLoadResult {
                state: None,
                saved_at: None,
            },
            Some((version, data, saved_at)) => StateLoadResult {
                state: Some(SavedState {
                    plugin: req.plugin.clone(),
                    version: u32::try_from(version).unwrap_or(0),
                    data,
                }),
                saved_at: Some(saved_at),
            },
        };
        json(&result)
    }

    async fn migrate(&self, req: MigrateRequest) -> Answer {
        valid_plugin_name(&req.plugin)?;
        let dialect = self.db.dialect();
        let prefix = format!("{}_", req.plugin.replace('-', "_"));
        let mut last = 0;
        for m in &req.migrations {
            if m.version <= last {
                return Err(format!(
                    "migrations of {} must have increasing versions above 0; {} follows {last}",
                    req.plugin, m.version
                ));
            }
            last = m.version;
            let sql = match dialect {
                Dialect::Postgres => &m.postgres,
                Dialect::Sqlite => &m.sqlite,
            };
            check_prefix(sql, &prefix).map_err(|e| {
                format!(
                    "migration {} ({}) of {}: {e}",
                    m.version, m.name, req.plugin
                )
            })?;
        }
        let ledger: Vec<(i64, String)> = sqlx_ledger(&self.db, &req.plugin)
            .await
            .map_err(|e| format!("cannot read the migration ledger: {}", db_message(&e)))?;
        for (version, checksum) in &ledger {
            match req.migrations.iter().find(|m| m.version == *version) {
                None => {
                    return Err(format!(
                        "the database has migration {version} of {}, which this build of the plugin \
                         does not declare: a newer build migrated it. Upgrade the plugin or use another database",
                        req.plugin
                    ));
                }
                Some(m) => {
                    let sql = match dialect {
                        Dialect::Postgres => &m.postgres,
                        Dialect::Sqlite => &m.sqlite,
                    };
                    if &checksum_of(sql) != checksum {
                        return Err(format!(
                            "migration {version} ({}) of {} was changed after it was applied; \
                             never edit an applied migration, add a new one",
                            m.name, req.plugin
                        ));
                    }
                }
            }
        }
        let mut applied = Vec::new();
        for m in &req.migrations {
            if ledger.iter().any(|(v, _)| *v == m.version) {
                continue;
            }
            let sql = match dialect {
                Dialect::Postgres => &m.postgres,
                Dialect::Sqlite => &m.sqlite,
            };
            apply_migration(&self.db, &req.plugin, m.version, &m.name, sql)
                .await
                .map_err(|e| {
                    format!(
                        "migration {} ({}) of {} failed and was rolled back: {}",
                        m.version,
                        m.name,
                        req.plugin,
                        db_message(&e)
                    )
                })?;
            applied.push(m.version);
        }
        if !applied.is_empty() {
            self.metrics.info(&format!(
                "applied migrations {applied:?} of plugin {}",
                req.plugin
            ));
        }
        json(&MigrateResult {
            dialect,
            applied,
            current: last.max(ledger.iter().map(|(v, _)| *v).max().unwrap_or(0)),
        })
    }
}

fn outcome(r: Result<u64, String>) -> StatementOutcome {
    match r {
        Ok(n) => StatementOutcome {
            rows_affected: Some(n),
            error: None,
        },
        Err(e) => StatementOutcome {
            rows_affected: None,
            error: Some(e),
        },
    }
}

async fn set_pg_timeout(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    timeout: Duration,
) -> Result<(), String> {
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(timeout.as_millis().to_string())
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| db_message(&e))
}

async fn collect<'e, R: Row, S>(
    mut stream: S,
    max: u64,
    value: fn(&R, usize) -> Result<serde_json::Value, String>,
) -> Result<Rows, String>
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin + 'e,
    R::Database: sqlx::Database,
{
    use futures_util::StreamExt;
    let mut out = Rows::default();
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| db_message(&e))?;
        if out.columns.is_empty() {
            out.columns = columns(row.columns());
        }
        if out.rows.len() as u64 >= max {
            out.truncated = true;
            break;
        }
        let values = (0..row.columns().len())
            .map(|i| value(&row, i))
            .collect::<Result<Vec<_>, _>>()?;
        out.rows.push(values);
    }
    Ok(out)
}

fn valid_plugin_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} is not valid (lowercase letters, digits, - and _)"
        ))
    }
}

/// The checksum recorded for a migration's SQL.
pub fn checksum_of(sql: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(sql.as_bytes())))
}

/// Checks that the tables, indexes and views a migration creates, alters or drops are
/// named with the plugin's prefix. A guard against a plugin touching the core schema or
/// another plugin's tables by mistake, not a sandbox.
pub fn check_prefix(sql: &str, prefix: &str) -> Result<(), String> {
    let lowered = sql.to_ascii_lowercase();
    let tokens: Vec<&str> = lowered
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';' || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    let name_ok = |raw: &str| {
        let name = raw.trim_matches('"');
        let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
        name.starts_with(prefix)
    };
    let skip = |i: &mut usize, words: &[&str]| {
        if tokens.get(*i..*i + words.len()) == Some(words) {
            *i += words.len();
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        i += 1;
        let kind_at = |j: usize| matches!(tokens.get(j), Some(&"table" | &"index" | &"view"));
        let mut j = i;
        match t {
            "create" => {
                skip(&mut j, &["unique"]);
                skip(&mut j, &["temp"]);
                skip(&mut j, &["temporary"]);
                if !kind_at(j) {
                    continue;
                }
                let kind = tokens[j];
                j += 1;
                skip(&mut j, &["if", "not", "exists"]);
                let Some(name) = tokens.get(j) else { continue };
                if !name_ok(name) {
                    return Err(format!(
                        "{kind} {name} must be named {prefix}… (plugin tables carry the plugin's name)"
                    ));
                }
                if kind == "index" {
                    skip(&mut j, &[name]);
                    if tokens.get(j) == Some(&"on")
                        && let Some(table) = tokens.get(j + 1)
                        && !name_ok(table)
                    {
                        return Err(format!(
                            "index {name} is on table {table}, which is not this plugin's ({prefix}…)"
                        ));
                    }
                }
            }
            "alter" | "drop" => {
                if !kind_at(j) {
                    continue;
                }
                let kind = tokens[j];
                j += 1;
                skip(&mut j, &["if", "exists"]);
                skip(&mut j, &["only"]);
                if let Some(name) = tokens.get(j)
                    && !name_ok(name)
                {
                    return Err(format!(
                        "{t} {kind} {name}: only this plugin's tables ({prefix}…) may be changed"
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

async fn sqlx_ledger(db: &Db, plugin: &str) -> Result<Vec<(i64, String)>, sqlx::Error> {
    const Q: &str =
        "SELECT version, checksum FROM plugin_migrations WHERE plugin = $1 ORDER BY version";
    match db {
        Db::Pg(p) => sqlx::query_as(Q).bind(plugin).fetch_all(p).await,
        Db::Sqlite(p) => sqlx::query_as(Q).bind(plugin).fetch_all(p).await,
    }
}

async fn apply_migration(
    db: &Db,
    plugin: &str,
    version: i64,
    name: &str,
    sql: &str,
) -> Result<(), sqlx::Error> {
    const LEDGER: &str = "INSERT INTO plugin_migrations (plugin, version, name, checksum, applied_at) \
                          VALUES ($1, $2, $3, $4, $5)";
    let checksum = checksum_of(sql);
    match db {
        Db::Pg(p) => {
            let mut tx = p.begin().await?;
            // Two hosts migrating the same plugin at once take turns.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("daz-plugin-migrations:{plugin}"))
                .execute(&mut *tx)
                .await?;
            tx.execute(sqlx::raw_sql(sql)).await?;
            sqlx::query(LEDGER)
                .bind(plugin)
                .bind(version)
                .bind(name)
                .bind(&checksum)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin().await?;
            tx.execute(sqlx::raw_sql(sql)).await?;
            sqlx::query(LEDGER)
                .bind(plugin)
                .bind(version)
                .bind(name)
                .bind(&checksum)
                .bind(rfc3339_from_ms(Utc::now().timestamp_millis()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_may_only_touch_their_plugins_tables() {
        let p = "notes_";
        assert!(check_prefix("CREATE TABLE notes_items (id INT)", p).is_ok());
        assert!(check_prefix("create table if not exists \"notes_x\"(id int);", p).is_ok());
        assert!(check_prefix("CREATE UNIQUE INDEX notes_i ON notes_items (id)", p).is_ok());
        assert!(check_prefix("ALTER TABLE notes_items ADD COLUMN y TEXT", p).is_ok());
        let e = check_prefix("CREATE TABLE event_log2 (x INT)", p).unwrap_err();
        assert!(e.contains("notes_"), "{e}");
        assert!(check_prefix("CREATE INDEX notes_i ON event_log (id)", p).is_err());
        assert!(check_prefix("DROP TABLE IF EXISTS event_log", p).is_err());
        assert!(check_prefix("ALTER TABLE public.user_sessions ADD x INT", p).is_err());
        // Words inside other statements are not mistaken for DDL.
        assert!(check_prefix("INSERT INTO notes_items VALUES ('create table x')", p).is_ok());
    }

    #[test]
    fn checksums_change_with_the_sql() {
        assert_eq!(checksum_of("a"), checksum_of("a"));
        assert_ne!(checksum_of("a"), checksum_of("b"));
        assert!(checksum_of("a").starts_with("sha256:"));
    }

    #[test]
    fn plugin_names_are_checked() {
        assert!(valid_plugin_name("user-tracker_2").is_ok());
        assert!(valid_plugin_name("Bad Name").is_err());
        assert!(valid_plugin_name("").is_err());
    }
}
