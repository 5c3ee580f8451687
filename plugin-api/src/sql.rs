//! The SQL service: the wire types of the `sql.*` requests the storage plugin answers,
//! and helpers so any plugin can use the database in one call.
//!
//! The storage plugin owns the database (PostgreSQL or SQLite) and answers requests on
//! the bus. Statements always travel with **typed parameters**; there is no API that
//! pastes values into SQL text. Placeholders are `$1`, `$2`, … in both dialects.
//!
//! ```no_run
//! use daz_plugin_api::prelude::*;
//! use daz_plugin_api::sql::{self, Migration, Param};
//!
//! // Called from `create` of a plugin with `REQUIRES = &["storage"]` (see
//! // `Plugin::create` for what create may call).
//! fn setup(host: &Host) -> Result<()> {
//!     // Tables are named after the plugin's instance name (its `[plugins.<name>]`
//!     // table), so two instances of one plugin never share a table. The name is
//!     // 1-64 of a-z, 0-9, '-', '_': safe in an identifier once '-' becomes '_'.
//!     let table = format!("{}_notes", host.plugin_name().replace('-', "_"));
//!     // Applied once, recorded in the storage plugin's ledger.
//!     sql::migrate(host, &[Migration::both(1, "notes", &format!("CREATE TABLE {table} (user_name TEXT, note TEXT)"))])?;
//!     sql::exec(host, &format!("INSERT INTO {table} VALUES ($1, $2)"), &["alice".into(), "hi".into()])?;
//!     let rows = sql::query(host, &format!("SELECT note FROM {table} WHERE user_name = $1"), &[Param::from("alice")])?;
//!     for row in rows.iter() {
//!         let note: String = row.get("note")?;
//!         host.info(&note);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Requests and their subjects:
//!
//! | subject       | request             | reply              |
//! |---------------|---------------------|--------------------|
//! | `sql.query`   | [`QueryRequest`]    | [`Rows`]           |
//! | `sql.exec`    | [`ExecRequest`]     | [`ExecResult`]     |
//! | `sql.batch`   | [`BatchRequest`]    | [`BatchResult`]    |
//! | `sql.migrate` | [`MigrateRequest`]  | [`MigrateResult`]  |
//! | `sql.info`    | `{}`                | [`Info`]           |
//! | `sql.state.save` | [`StateSaveRequest`] | `{}`           |
//! | `sql.state.load` | [`StateLoadRequest`] | [`StateLoadResult`] |
//!
//! Values in rows come back as JSON: integers, floats, text, booleans, `null`, bytes as
//! base64 text, timestamps as RFC 3339 text, JSON columns as JSON (as text on SQLite,
//! which has no JSON type: [`Row::json`] reads both). A failed request comes back as an
//! error whose message carries the database's own message.

use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Host, Message, Result, SavedState};

/// Subject of [`QueryRequest`].
pub const SUBJECT_QUERY: &str = "sql.query";
/// Subject of [`ExecRequest`].
pub const SUBJECT_EXEC: &str = "sql.exec";
/// Subject of [`BatchRequest`].
pub const SUBJECT_BATCH: &str = "sql.batch";
/// Subject of [`MigrateRequest`].
pub const SUBJECT_MIGRATE: &str = "sql.migrate";
/// Subject of the `{}` request answered with [`Info`].
pub const SUBJECT_INFO: &str = "sql.info";
/// Subject of [`StateSaveRequest`].
pub const SUBJECT_STATE_SAVE: &str = "sql.state.save";
/// Subject of [`StateLoadRequest`].
pub const SUBJECT_STATE_LOAD: &str = "sql.state.load";

/// The per-statement timeout the storage plugin applies when a request names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the helpers wait for a reply beyond the statement timeout (queueing, the
/// bus hop, encoding the rows).
const REPLY_MARGIN: Duration = Duration::from_secs(2);

/// A typed statement parameter.
///
/// On the wire: `{"type": "int", "value": 3}`; `{"type": "null"}` for NULL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Param {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes (base64 on the wire).
    Bytes(#[serde(with = "base64_serde")] Vec<u8>),
    /// A point in time, RFC 3339 (`2024-05-01T12:00:00Z`); see [`Param::timestamp_ms`].
    Timestamp(String),
    /// A JSON document (`jsonb` on PostgreSQL, text on SQLite).
    Json(serde_json::Value),
}

impl Param {
    /// A timestamp from unix epoch milliseconds.
    pub fn timestamp_ms(ms: i64) -> Param {
        Param::Timestamp(rfc3339_from_ms(ms))
    }

    /// The wire name of the variant (`int`, `text`, …), for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Param::Null => "null",
            Param::Bool(_) => "bool",
            Param::Int(_) => "int",
            Param::Float(_) => "float",
            Param::Text(_) => "text",
            Param::Bytes(_) => "bytes",
            Param::Timestamp(_) => "timestamp",
            Param::Json(_) => "json",
        }
    }
}

impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<i32> for Param {
    fn from(v: i32) -> Self {
        Param::Int(i64::from(v))
    }
}
impl From<u32> for Param {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}
impl From<f64> for Param {
    fn from(v: f64) -> Self {
        Param::Float(v)
    }
}
impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<Vec<u8>> for Param {
    fn from(v: Vec<u8>) -> Self {
        Param::Bytes(v)
    }
}
impl From<serde_json::Value> for Param {
    fn from(v: serde_json::Value) -> Self {
        Param::Json(v)
    }
}
impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// One statement with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// SQL with `$1`, `$2`, … placeholders.
    pub sql: String,
    /// The values of the placeholders, in order.
    #[serde(default)]
    pub params: Vec<Param>,
}

impl Statement {
    /// A statement.
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// `sql.query`: run a statement and return its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// SQL with `$1`, `$2`, … placeholders.
    pub sql: String,
    /// The values of the placeholders, in order.
    #[serde(default)]
    pub params: Vec<Param>,
    /// Statement timeout in ms (default [`DEFAULT_TIMEOUT`] or the plugin's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// At most this many rows come back; [`Rows::truncated`] tells if more existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
}

/// `sql.exec`: run a statement that returns no rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// SQL with `$1`, `$2`, … placeholders.
    pub sql: String,
    /// The values of the placeholders, in order.
    #[serde(default)]
    pub params: Vec<Param>,
    /// Statement timeout in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `sql.batch`: several statements, in one transaction (`atomic`, the default) or each
/// on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The statements, run in order.
    pub statements: Vec<Statement>,
    /// All or nothing: the first failure rolls back the whole batch and fails the
    /// request. When `false`, every statement runs and reports its own outcome.
    #[serde(default = "yes")]
    pub atomic: bool,
    /// Timeout for the whole batch in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// What `sql.exec` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecResult {
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
}

/// The outcome of one statement of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatementOutcome {
    /// Rows affected, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
    /// The database's message, when it failed (non-atomic batches only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `sql.batch` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchResult {
    /// One outcome per statement, in order.
    pub results: Vec<StatementOutcome>,
}

/// A column of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// The database's type name (`INT8`, `TEXT`, `TIMESTAMPTZ`, …).
    pub db_type: String,
}

/// The rows of a `sql.query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Rows {
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// The rows; each has one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// More rows existed than `max_rows` allowed.
    #[serde(default)]
    pub truncated: bool,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, each readable by column name.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |values| Row {
            columns: &self.columns,
            values,
        })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> Option<Row<'_>> {
        self.rows.get(i).map(|values| Row {
            columns: &self.columns,
            values,
        })
    }

    /// Decodes every row as a `T` (a struct whose fields are column names).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        self.iter().map(|r| r.decode()).collect()
    }
}

/// One row of [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [Column],
    values: &'a [serde_json::Value],
}

impl<'a> Row<'a> {
    /// The raw JSON value of a column.
    pub fn value(&self, column: &str) -> Option<&'a serde_json::Value> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        self.values.get(i)
    }

    /// A column decoded as `T` (`Option<T>` for nullable columns).
    pub fn get<T: DeserializeOwned>(&self, column: &str) -> Result<T> {
        let v = self.value(column).ok_or_else(|| {
            Error::msg(format!(
                "the result has no column {column:?} (columns: {})",
                self.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        serde_json::from_value(v.clone())
            .map_err(|e| Error::msg(format!("column {column:?} holds {v}, which {e}")))
    }

    /// A bytes column (base64 on the wire) decoded; `None` for NULL.
    pub fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>> {
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(text) => base64_decode(&text)
                .map(Some)
                .ok_or_else(|| Error::msg(format!("column {column:?} is not base64 bytes"))),
        }
    }

    /// A JSON column decoded as `T`. PostgreSQL returns `json`/`jsonb` columns as JSON;
    /// SQLite has no JSON type and returns the text, which this parses.
    pub fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T> {
        match self.get::<serde_json::Value>(column)? {
            serde_json::Value::String(text) => serde_json::from_str(&text)
                .map_err(|e| Error::msg(format!("column {column:?} is not JSON text: {e}"))),
            v => serde_json::from_value(v)
                .map_err(|e| Error::msg(format!("column {column:?} does not decode: {e}"))),
        }
    }

    /// The whole row as a `T` whose fields are column names.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .zip(self.values)
            .map(|(c, v)| (c.name.clone(), v.clone()))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| Error::msg(format!("a row does not decode: {e}")))
    }
}

/// Which database the storage plugin runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// `sql.info`: what the service runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The dialect statements must be written in.
    pub dialect: Dialect,
    /// Whether the database is reachable right now.
    pub connected: bool,
}

/// One migration of a plugin's own tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Its version; versions are applied in increasing order, each once.
    pub version: i64,
    /// A short description.
    pub name: String,
    /// The SQL for PostgreSQL (may hold several statements).
    pub postgres: String,
    /// The SQL for SQLite (may hold several statements).
    pub sqlite: String,
}

impl Migration {
    /// A migration with different SQL per dialect.
    pub fn new(
        version: i64,
        name: impl Into<String>,
        postgres: impl Into<String>,
        sqlite: impl Into<String>,
    ) -> Self {
        Self {
            version,
            name: name.into(),
            postgres: postgres.into(),
            sqlite: sqlite.into(),
        }
    }

    /// A migration whose SQL is the same in both dialects.
    pub fn both(version: i64, name: impl Into<String>, sql: impl Into<String>) -> Self {
        let sql = sql.into();
        Self::new(version, name, sql.clone(), sql)
    }
}

/// `sql.migrate`: apply a plugin's migrations that are not applied yet.
///
/// Each migration runs in its own transaction together with its ledger entry. A version
/// recorded with different SQL than now, or a recorded version the request does not
/// know (a newer build migrated this database), is refused. Tables the migrations create
/// must be named `<plugin>_…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The plugin that owns the migrations.
    pub plugin: String,
    /// All of its migrations, in increasing version order.
    pub migrations: Vec<Migration>,
}

/// What `sql.migrate` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateResult {
    /// The dialect the SQL was taken from.
    pub dialect: Dialect,
    /// Versions applied by this request.
    pub applied: Vec<i64>,
    /// The highest version applied now.
    pub current: i64,
}

/// `sql.state.save`: keep a plugin's last exported state, so it survives a host restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSaveRequest {
    /// The state (its `plugin` field names the owner).
    pub state: SavedState,
}

/// `sql.state.load`: the last state saved for a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLoadRequest {
    /// The plugin.
    pub plugin: String,
}

/// The answer to [`StateLoadRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateLoadResult {
    /// The state, if one was saved.
    pub state: Option<SavedState>,
    /// When it was saved, RFC 3339.
    pub saved_at: Option<String>,
}

fn call<Req: Serialize, Resp: DeserializeOwned>(
    host: &Host,
    subject: &str,
    request: &Req,
    timeout: Duration,
) -> Result<Resp> {
    let reply = host.request(Message::new(subject, request)?, timeout + REPLY_MARGIN)?;
    reply.json()
}

fn timeout_of(ms: Option<u64>) -> Duration {
    ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// Runs a query and returns its rows. Blocks the calling plugin thread until the reply.
pub fn query(host: &Host, sql: &str, params: &[Param]) -> Result<Rows> {
    query_with(
        host,
        &QueryRequest {
            sql: sql.to_owned(),
            params: params.to_vec(),
            timeout_ms: None,
            max_rows: None,
        },
    )
}

/// Runs a query with explicit options.
pub fn query_with(host: &Host, request: &QueryRequest) -> Result<Rows> {
    call(host, SUBJECT_QUERY, request, timeout_of(request.timeout_ms))
}

/// Runs a statement that returns no rows.
pub fn exec(host: &Host, sql: &str, params: &[Param]) -> Result<ExecResult> {
    exec_with(
        host,
        &ExecRequest {
            sql: sql.to_owned(),
            params: params.to_vec(),
            timeout_ms: None,
        },
    )
}

/// Runs a statement with explicit options.
pub fn exec_with(host: &Host, request: &ExecRequest) -> Result<ExecResult> {
    call(host, SUBJECT_EXEC, request, timeout_of(request.timeout_ms))
}

/// Runs statements in one transaction (`atomic`) or each on its own.
pub fn batch(host: &Host, statements: Vec<Statement>, atomic: bool) -> Result<BatchResult> {
    let request = BatchRequest {
        statements,
        atomic,
        timeout_ms: None,
    };
    call(host, SUBJECT_BATCH, &request, DEFAULT_TIMEOUT)
}

/// Applies this plugin's migrations (named after [`Host::plugin_name`]).
pub fn migrate(host: &Host, migrations: &[Migration]) -> Result<MigrateResult> {
    let request = MigrateRequest {
        plugin: host.plugin_name().to_owned(),
        migrations: migrations.to_vec(),
    };
    // Migrations may build indexes on big tables: allow them longer.
    call(host, SUBJECT_MIGRATE, &request, Duration::from_secs(60))
}

/// Which database the service runs on.
pub fn info(host: &Host) -> Result<Info> {
    call(host, SUBJECT_INFO, &serde_json::json!({}), DEFAULT_TIMEOUT)
}

/// Saves a plugin's state snapshot.
pub fn save_state(host: &Host, state: &SavedState) -> Result<()> {
    let _: serde_json::Value = call(
        host,
        SUBJECT_STATE_SAVE,
        &StateSaveRequest {
            state: state.clone(),
        },
        DEFAULT_TIMEOUT,
    )?;
    Ok(())
}

/// The last state snapshot saved for `plugin`.
pub fn load_state(host: &Host, plugin: &str) -> Result<Option<SavedState>> {
    let r: StateLoadResult = call(
        host,
        SUBJECT_STATE_LOAD,
        &StateLoadRequest {
            plugin: plugin.to_owned(),
        },
        DEFAULT_TIMEOUT,
    )?;
    Ok(r.state)
}

/// RFC 3339 text (UTC, millisecond precision) for unix epoch milliseconds.
pub fn rfc3339_from_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding: how bytes travel in parameters and rows.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes [`base64_encode`]'s output; `None` if it is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, quad) in text.chunks(4).enumerate() {
        let last = i == text.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

mod base64_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::base64_encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::base64_decode(&text).ok_or_else(|| D::Error::custom("bytes must be base64 text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_use_the_tagged_wire_form() {
        let p = vec![
            Param::Null,
            Param::Int(3),
            Param::from("x"),
            Param::Bytes(vec![0, 255, 7]),
            Param::from(None::<i64>),
        ];
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"type": "null"},
                {"type": "int", "value": 3},
                {"type": "text", "value": "x"},
                {"type": "bytes", "value": "AP8H"},
                {"type": "null"},
            ])
        );
        let back: Vec<Param> = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text).unwrap(), bytes, "{text}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Zm8").is_none());
        assert!(base64_decode("Z=m8").is_none());
        assert!(base64_decode("Zm8*").is_none());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_ms(1_714_564_800_123),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(rfc3339_from_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_from_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rows_are_read_by_column_name() {
        let rows: Rows = serde_json::from_value(serde_json::json!({
            "columns": [{"name": "n", "db_type": "INT8"}, {"name": "b", "db_type": "BYTEA"}],
            "rows": [[1, "AP8="], [2, null]]
        }))
        .unwrap();
        let first = rows.row(0).unwrap();
        assert_eq!(first.get::<i64>("n").unwrap(), 1);
        assert_eq!(first.bytes("b").unwrap(), Some(vec![0, 255]));
        assert_eq!(rows.row(1).unwrap().bytes("b").unwrap(), None);
        let j: Rows = serde_json::from_value(serde_json::json!({
            "columns": [{"name": "j", "db_type": "TEXT"}],
            "rows": [["{\"a\": 1}"], [{"a": 2}]]
        }))
        .unwrap();
        let a = |r: Row<'_>| r.json::<serde_json::Value>("j").unwrap()["a"].clone();
        assert_eq!(a(j.row(0).unwrap()), 1);
        assert_eq!(a(j.row(1).unwrap()), 2);
        let err = first.get::<i64>("missing").unwrap_err();
        assert!(err.message().contains("columns: n, b"), "{err}");
        #[derive(Deserialize)]
        struct R {
            n: i64,
        }
        let all: Vec<R> = rows.decode().unwrap();
        assert_eq!(all.iter().map(|r| r.n).sum::<i64>(), 3);
    }

    /// A plugin using the helpers, against a responder standing in for the storage
    /// plugin: the requests carry the plugin's name, typed parameters and the SQL, and
    /// the replies decode.
    #[cfg(feature = "testing")]
    #[test]
    fn helpers_send_typed_requests_and_decode_replies() {
        use crate::{Event, NoConfig, NoState, Plugin, testing::Harness};
        use std::sync::{Arc, Mutex};

        struct Notes {
            host: Host,
        }
        impl Plugin for Notes {
            const NAME: &'static str = "notes";
            type Config = NoConfig;
            type State = NoState;
            fn create(host: Host, _: NoConfig, _: Option<NoState>) -> Result<Self> {
                host.subscribe("notes.go")?;
                Ok(Notes { host })
            }
            fn on_event(&mut self, _: &Event<'_>) -> Result<()> {
                let host = &self.host;
                migrate(
                    host,
                    &[Migration::both(
                        1,
                        "init",
                        "CREATE TABLE notes_t (n BIGINT)",
                    )],
                )?;
                let rows = query(host, "SELECT n FROM notes_t WHERE n > $1", &[Param::Int(2)])?;
                let total = rows
                    .iter()
                    .map(|r| r.get::<i64>("n"))
                    .sum::<Result<i64>>()?;
                exec(host, "INSERT INTO notes_t VALUES ($1)", &[total.into()])?;
                Ok(())
            }
        }

        let mut h = Harness::<Notes>::new(serde_json::json!({})).unwrap();
        let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let log = seen.clone();
        h.respond("sql.>", move |req| {
            log.lock().unwrap().push(req.clone());
            let sql = req["sql"].as_str().unwrap_or("");
            Ok(if req.get("migrations").is_some() {
                serde_json::json!({"dialect": "sqlite", "applied": [1], "current": 1})
            } else if sql.starts_with("SELECT") {
                serde_json::json!({"columns": [{"name": "n", "db_type": "INTEGER"}], "rows": [[3], [4]]})
            } else {
                serde_json::json!({"rows_affected": 1})
            })
        });
        assert!(h.publish("notes.go", &serde_json::json!({})).unwrap());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0]["plugin"], "notes");
        assert_eq!(
            seen[0]["migrations"][0]["sqlite"],
            "CREATE TABLE notes_t (n BIGINT)"
        );
        assert_eq!(
            seen[1]["params"],
            serde_json::json!([{"type": "int", "value": 2}])
        );
        // 3 + 4 from the decoded rows.
        assert_eq!(
            seen[2]["params"][0],
            serde_json::json!({"type": "int", "value": 7})
        );
    }

    #[test]
    fn batch_requests_are_atomic_by_default() {
        let r: BatchRequest =
            serde_json::from_value(serde_json::json!({"statements": [{"sql": "SELECT 1"}]}))
                .unwrap();
        assert!(r.atomic);
        assert!(r.statements[0].params.is_empty());
    }
}
