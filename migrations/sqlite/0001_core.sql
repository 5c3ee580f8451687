-- The core schema of daz on SQLite. Owned by the storage plugin (plugins/storage),
-- applied at its start with sqlx's migrator. The PostgreSQL twin is
-- ../postgres/0001_core.sql; keep the two in step.
--
-- SQLite has no array, JSON or timestamp types: tags are a JSON array in text, raw
-- payloads are JSON text, and times are RFC 3339 UTC text with millisecond precision
-- (fixed width, so they sort and compare as text).

CREATE TABLE event_log (
    id            TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    room          TEXT,
    event         TEXT NOT NULL,
    user_name     TEXT,
    message       TEXT,
    media_id      TEXT,
    media_type    TEXT,
    media_title   TEXT,
    media_seconds INTEGER,
    priority      INTEGER NOT NULL,
    tags          TEXT NOT NULL DEFAULT '[]',
    raw           TEXT,
    server_time   TEXT,
    received_at   TEXT NOT NULL
);
CREATE INDEX event_log_room_time ON event_log (room, received_at);
CREATE INDEX event_log_event_time ON event_log (event, received_at);
CREATE INDEX event_log_user_time ON event_log (user_name, received_at);

CREATE TABLE user_sessions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    room             TEXT NOT NULL,
    user_name        TEXT NOT NULL,
    rank             REAL,
    joined_at        TEXT NOT NULL,
    left_at          TEXT,
    last_activity_at TEXT,
    messages         INTEGER NOT NULL DEFAULT 0,
    afk_seconds      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX user_sessions_room_user ON user_sessions (room, user_name, joined_at);
CREATE INDEX user_sessions_open ON user_sessions (room) WHERE left_at IS NULL;

CREATE TABLE user_activity (
    room          TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    messages      INTEGER NOT NULL DEFAULT 0,
    sessions      INTEGER NOT NULL DEFAULT 0,
    rank          REAL,
    PRIMARY KEY (room, user_name)
);

CREATE TABLE media_plays (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    room            TEXT NOT NULL,
    media_id        TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    title           TEXT,
    seconds         INTEGER,
    queued_by       TEXT,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    watched_seconds REAL,
    completed       INTEGER
);
CREATE INDEX media_plays_room_time ON media_plays (room, started_at);
CREATE INDEX media_plays_media ON media_plays (media_type, media_id);

CREATE TABLE plugin_state (
    plugin         TEXT PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    data           TEXT NOT NULL,
    saved_at       TEXT NOT NULL
);

CREATE TABLE retry_queue (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    operation       TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX retry_queue_due ON retry_queue (next_attempt_at);

CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    operation   TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    failed_at   TEXT NOT NULL,
    replayed_at TEXT
);
CREATE INDEX dead_letters_time ON dead_letters (failed_at);

CREATE TABLE plugin_migrations (
    plugin     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (plugin, version)
);
