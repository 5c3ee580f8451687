-- The core schema of daz on PostgreSQL. Owned by the storage plugin (plugins/storage),
-- applied at its start with sqlx's migrator. The SQLite twin is ../sqlite/0001_core.sql;
-- keep the two in step (same tables, columns and meanings).

-- Every event the logger's rules select, once (the envelope id is the key, so a replay
-- after an outage or a restart never duplicates).
CREATE TABLE event_log (
    id            TEXT PRIMARY KEY,          -- envelope id (ULID: unique, sortable)
    subject       TEXT NOT NULL,             -- bus subject, e.g. cytube.in.lobby.chatMsg
    room          TEXT,
    event         TEXT NOT NULL,             -- Cytube event name (last subject token)
    user_name     TEXT,
    message       TEXT,
    media_id      TEXT,
    media_type    TEXT,
    media_title   TEXT,
    media_seconds BIGINT,
    priority      SMALLINT NOT NULL,         -- 0 normal, 1 high, 2 urgent, 3 critical
    tags          TEXT[] NOT NULL DEFAULT '{}',
    raw           JSONB,                     -- the payload as received
    server_time   TIMESTAMPTZ,               -- the server's own timestamp, when it sent one
    received_at   TIMESTAMPTZ NOT NULL       -- when the host published it
);
CREATE INDEX event_log_room_time ON event_log (room, received_at);
CREATE INDEX event_log_event_time ON event_log (event, received_at);
CREATE INDEX event_log_user_time ON event_log (user_name, received_at);

-- One row per stay of a user in a room (written by the user tracker).
CREATE TABLE user_sessions (
    id               BIGSERIAL PRIMARY KEY,
    room             TEXT NOT NULL,
    user_name        TEXT NOT NULL,
    rank             DOUBLE PRECISION,
    joined_at        TIMESTAMPTZ NOT NULL,
    left_at          TIMESTAMPTZ,
    last_activity_at TIMESTAMPTZ,
    messages         BIGINT NOT NULL DEFAULT 0,
    afk_seconds      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX user_sessions_room_user ON user_sessions (room, user_name, joined_at);
CREATE INDEX user_sessions_open ON user_sessions (room) WHERE left_at IS NULL;

-- Per user and room totals (last seen, message counts).
CREATE TABLE user_activity (
    room          TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    messages      BIGINT NOT NULL DEFAULT 0,
    sessions      BIGINT NOT NULL DEFAULT 0,
    rank          DOUBLE PRECISION,
    PRIMARY KEY (room, user_name)
);

-- One row per media play (written by the media tracker).
CREATE TABLE media_plays (
    id              BIGSERIAL PRIMARY KEY,
    room            TEXT NOT NULL,
    media_id        TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    title           TEXT,
    seconds         BIGINT,
    queued_by       TEXT,
    started_at      TIMESTAMPTZ NOT NULL,
    ended_at        TIMESTAMPTZ,
    watched_seconds DOUBLE PRECISION,
    completed       BOOLEAN
);
CREATE INDEX media_plays_room_time ON media_plays (room, started_at);
CREATE INDEX media_plays_media ON media_plays (media_type, media_id);

-- The last state each plugin exported, so it survives a host restart.
CREATE TABLE plugin_state (
    plugin         TEXT PRIMARY KEY,
    schema_version BIGINT NOT NULL,
    data           JSONB NOT NULL,
    saved_at       TIMESTAMPTZ NOT NULL
);

-- Operations waiting for another attempt (the retry plugin); id is the idempotency key.
CREATE TABLE retry_queue (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    operation       JSONB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX retry_queue_due ON retry_queue (next_attempt_at);

-- Operations that failed their last attempt, with the reason.
CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    operation   JSONB NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL,
    replayed_at TIMESTAMPTZ
);
CREATE INDEX dead_letters_time ON dead_letters (failed_at);

-- Migrations of plugins' own tables (sql.migrate), one row per applied version.
CREATE TABLE plugin_migrations (
    plugin     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plugin, version)
);
