-- A chat line is one row of event_log however often it arrives: live, and again in the
-- chat backlog the server replays on every join. The storage plugin gives each chatMsg
-- row a line key, the SHA-256 (hex) of its room, user, server time (epoch ms) and text,
-- and the unique index makes every later copy a no-op (INSERT … ON CONFLICT DO
-- NOTHING). Other rows have no key (NULLs never conflict). Rows logged before this
-- migration keep a NULL key. The SQLite twin is ../sqlite/0002_chat_line_key.sql.
ALTER TABLE event_log ADD COLUMN line_key TEXT;
CREATE UNIQUE INDEX event_log_line_key ON event_log (line_key);
