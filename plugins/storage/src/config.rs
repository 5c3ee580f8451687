//! The `[plugins.storage.config]` table: where the database is, what the logger logs,
//! how it batches, where the journal lives, and the SQL service's limits.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::db::PgWrite;

/// The environment variable that overrides `database_url`.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// The embedded default: an SQLite file in the host's working directory, created on the
/// first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://daz.db";

/// The plugin's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`. `DATABASE_URL` wins when both are set only if
    /// `prefer_env` is true (the default), so an operator can point a deployed config
    /// at another database without editing it.
    pub database_url: Option<String>,
    /// Let `DATABASE_URL` override `database_url`.
    pub prefer_env: bool,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a connection, ms.
    pub connect_timeout_ms: u64,
    /// The logger's rules, tried in order; the first match decides. When absent, the
    /// default rules log chat, PMs, joins/leaves, media and playlist changes.
    pub rules: Option<Vec<Rule>>,
    /// A batch is written when it holds this many events…
    pub batch_size: usize,
    /// …or when its oldest event has waited this long, ms.
    pub flush_interval_ms: u64,
    /// Events kept in memory while the database is unreachable before they spill to the
    /// journal.
    pub memory_queue: usize,
    /// After the database has been unreachable this long, ms, memory lets go of its
    /// copies of queued events (they are in the journal already) even below
    /// `memory_queue`, and the writer replays them from the journal.
    pub spill_after_ms: u64,
    /// The journal's directory (relative to the host's working directory).
    pub journal_dir: PathBuf,
    /// A journal segment is closed and a new one started past this size, bytes.
    pub journal_segment_bytes: u64,
    /// When the journal is made durable against a power loss (`fdatasync`), with
    /// Redis's `appendfsync` names: `"always"` (every accepted event), `"everysec"`
    /// (at most once a second; the default), `"no"` (left to the kernel). Every event
    /// is in the journal when accepted whatever this says, so a process crash loses
    /// nothing accepted.
    pub journal_fsync: crate::journal::Fsync,
    /// How long a batch write may take before it counts as failed, ms.
    pub write_timeout_ms: u64,
    /// How long a hot swap or shutdown waits for queued events to reach the database
    /// before putting them in the journal, ms.
    pub flush_on_stop_ms: u64,
    /// Default statement timeout of the SQL service, ms.
    pub query_timeout_ms: u64,
    /// Upper bound for a requester's own timeout, ms.
    pub max_query_timeout_ms: u64,
    /// Rows a `sql.query` returns at most.
    pub max_rows: u64,
    /// How batches are written to PostgreSQL: `copy` (binary COPY into a staging
    /// table, then one INSERT … ON CONFLICT) or `unnest` (one INSERT from arrays).
    pub postgres_write: PgWrite,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            prefer_env: true,
            max_connections: 8,
            connect_timeout_ms: 3_000,
            rules: None,
            batch_size: 2_000,
            flush_interval_ms: 200,
            memory_queue: 50_000,
            spill_after_ms: 1_000,
            journal_dir: PathBuf::from(".daz/journal"),
            journal_segment_bytes: 8 << 20,
            journal_fsync: crate::journal::Fsync::default(),
            write_timeout_ms: 10_000,
            flush_on_stop_ms: 3_000,
            query_timeout_ms: 5_000,
            max_query_timeout_ms: 60_000,
            max_rows: 10_000,
            postgres_write: PgWrite::default(),
        }
    }
}

/// One logger rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Subject pattern (`*` one token, `>` the rest).
    pub subject: String,
    /// The event must carry all these tags for the rule to match.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Log what matches (`false` makes an exclusion rule).
    #[serde(default = "yes")]
    pub log: bool,
    /// A disabled rule is skipped.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// A rule that logs `subject`.
    pub fn log(subject: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            tags: Vec::new(),
            log: true,
            enabled: true,
        }
    }
}

/// The Cytube events logged when no rules are configured: chat, PMs, joins and leaves,
/// media changes and playlist changes (not the `mediaUpdate` ticks). See also
/// [`DEFAULT_SUBJECTS`].
pub const DEFAULT_EVENTS: &[&str] = &[
    "chatMsg",
    "pm",
    "addUser",
    "userLeave",
    "changeMedia",
    "queue",
    "delete",
    "moveVideo",
    "setTemp",
    "playlist",
];

/// Subjects besides the Cytube events logged when no rules are configured: the command
/// router's `command.<name>` events, which the analytics plugin counts as commands used.
pub const DEFAULT_SUBJECTS: &[&str] = &["command.>"];

/// The default rules: one per [`DEFAULT_EVENTS`] entry (`cytube.in.*.<event>`), then
/// one per [`DEFAULT_SUBJECTS`] entry.
pub fn default_rules() -> Vec<Rule> {
    DEFAULT_EVENTS
        .iter()
        .map(|e| Rule::log(&format!("cytube.in.*.{e}")))
        .chain(DEFAULT_SUBJECTS.iter().map(|s| Rule::log(s)))
        .collect()
}

impl Config {
    /// The database URL in force and where it came from (for logs; never log the URL
    /// itself, it may hold a password).
    pub fn resolve_url(&self, env: Option<String>) -> (String, &'static str) {
        let env = env.filter(|s| !s.trim().is_empty());
        match (&self.database_url, env) {
            (Some(_), Some(e)) if self.prefer_env => (e, "DATABASE_URL"),
            (Some(c), _) => (c.clone(), "config"),
            (None, Some(e)) => (e, "DATABASE_URL"),
            (None, None) => (DEFAULT_DATABASE_URL.to_owned(), "default"),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.clone().unwrap_or_else(default_rules)
    }

    /// Checks values a typo could make absurd.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(format!(
                "batch_size must be between 1 and 100000, got {}",
                self.batch_size
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".to_owned());
        }
        if self.flush_interval_ms == 0 {
            return Err("flush_interval_ms must be above 0".to_owned());
        }
        for r in self.rules() {
            if r.subject.is_empty() || r.subject.split('.').any(str::is_empty) {
                return Err(format!(
                    "rule subject {:?} is not a valid pattern (dot-separated tokens, * or >)",
                    r.subject
                ));
            }
            let tokens: Vec<&str> = r.subject.split('.').collect();
            if tokens[..tokens.len() - 1].contains(&">") {
                return Err(format!(
                    "rule subject {:?}: > may only be the last token",
                    r.subject
                ));
            }
        }
        Ok(())
    }

    /// `flush_interval_ms` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
}

/// Whether a URL query parameter (percent-decoded, any case) may carry a credential:
/// libpq's `password` and `sslpassword`, and anything named like a secret (`passwd`,
/// `pwd`, `secret`, `token`, `key`, `auth`, `cred`…). Hiding a harmless value (a key
/// file's path) costs nothing; showing a password is not undone.
fn secret_param(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth", "cred"]
        .iter()
        .any(|s| key.contains(s))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hides every credential a database URL can carry, for logs and errors: the password
/// of the userinfo (`user:secret@host`), and the value of every query parameter that
/// may hold one (`?password=…`, `&sslpassword=…`, any name containing `pass`, `pwd`,
/// `secret`, `token`, `key`, `auth` or `cred`). A fragment is dropped. The user name, host, port, database and other parameters stay, so an
/// operator can still tell which database is meant.
pub fn redact_url(url: &str) -> String {
    let url = url.split('#').next().unwrap_or("");
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((userinfo, host)) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or("");
                    format!("{scheme}://{user}:***@{host}{path}")
                }
                _ => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if secret_param(k) => format!("{k}=***"),
                None if secret_param(p) => p.to_owned(),
                _ => p.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// The credentials `url` carries (userinfo password and secret query values, as
/// written and percent-decoded), longest first: what [`scrub`] hides.
fn secrets_of(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q.split('#').next().unwrap_or(""))),
        None => (url, None),
    };
    if let Some((_, rest)) = head.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
        {
            found.push(pw.to_owned());
        }
    }
    for p in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some((k, v)) = p.split_once('=')
            && secret_param(k)
        {
            found.push(v.to_owned());
        }
    }
    let decoded: Vec<String> = found.iter().map(|s| percent_decode(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

/// Replaces every credential of `url` that occurs in `text` (an error message from a
/// driver that may quote the URL or a parameter) with `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.to_owned();
    for s in secrets_of(url) {
        out = out.replace(&s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_comes_from_env_config_or_default() {
        let mut c = Config::default();
        assert_eq!(c.resolve_url(None).0, DEFAULT_DATABASE_URL);
        assert_eq!(
            c.resolve_url(Some("postgres://a/b".into())).1,
            "DATABASE_URL"
        );
        c.database_url = Some("sqlite://x.db".into());
        assert_eq!(c.resolve_url(None), ("sqlite://x.db".into(), "config"));
        assert_eq!(
            c.resolve_url(Some("postgres://a/b".into())).0,
            "postgres://a/b"
        );
        c.prefer_env = false;
        assert_eq!(
            c.resolve_url(Some("postgres://a/b".into())).0,
            "sqlite://x.db"
        );
        assert_eq!(c.resolve_url(Some("  ".into())).0, "sqlite://x.db");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://bob:secret@db:5432/daz?sslmode=require"),
            "postgres://bob:***@db:5432/daz?sslmode=require"
        );
        assert_eq!(redact_url("sqlite://daz.db"), "sqlite://daz.db");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }

    /// Issue: a password given as a query parameter was printed in two log lines.
    #[test]
    fn every_credential_form_of_a_database_url_is_redacted() {
        let cases = [
            "postgres://bob@db/daz?password=s3cr3t-1",
            "postgres://bob@db/daz?sslmode=require&password=s3cr3t-1&application_name=x",
            "postgresql://db/daz?user=bob&PASSWORD=s3cr3t-1",
            "postgres://db/daz?pass%77ord=s3cr3t-1",
            "postgres://db/daz?sslpassword=s3cr3t-1&sslkey=/k",
            "postgres://bob:s3cr3t-1@db/daz?password=s3cr3t-1#frag",
            "postgres://bob:s3cr3t-1@db",
            "postgres://bob:s3cr3t%2D1@db/daz",
            "postgres://bob@db/daz?password=s3cr3t%2D1",
            "postgres://bob@db/daz?options=-c&pwd=s3cr3t-1&token=s3cr3t-1",
            "sqlite://daz.db?mode=rwc&key=s3cr3t-1",
        ];
        for url in cases {
            let shown = redact_url(url);
            assert!(!shown.contains("s3cr3t"), "{url} -> {shown}");
            assert!(!shown.contains("%2D1"), "{url} -> {shown}");
            let err = format!("cannot parse {url}: bad value s3cr3t-1");
            let scrubbed = scrub(&err, url);
            assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        }
        assert_eq!(
            redact_url("postgres://bob@db:5432/daz?sslmode=require&password=x&application_name=y"),
            "postgres://bob@db:5432/daz?sslmode=require&password=***&application_name=y"
        );
    }

    #[test]
    fn defaults_log_chat_and_commands_but_not_media_ticks() {
        let rules = crate::row::Rules::new(default_rules());
        let logged = |subject: &str| {
            let ev = daz_plugin_api::OwnedEvent {
                subject: subject.to_owned(),
                payload: b"{}".to_vec(),
                ..daz_plugin_api::OwnedEvent::default()
            };
            ev.with_event(|e| rules.logs(&e))
        };
        assert!(logged("cytube.in.lobby.chatMsg"));
        assert!(logged("command.ping"));
        assert!(!logged("cytube.in.lobby.mediaUpdate"));
        assert!(!logged("cytube.out.lobby.chatMsg"));
    }

    #[test]
    fn bad_values_are_refused() {
        let c: Config = serde_json::from_value(serde_json::json!({"batch_size": 0})).unwrap();
        assert!(c.validate().unwrap_err().contains("batch_size"));
        let c: Config =
            serde_json::from_value(serde_json::json!({"rules": [{"subject": "a.>.b"}]})).unwrap();
        assert!(c.validate().unwrap_err().contains("last token"));
        let e = serde_json::from_value::<Config>(serde_json::json!({"batchsize": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field"));
    }
}
