//! The storage plugin driven in-process through the SDK's test harness (the same
//! adapter the host uses), against a fresh PostgreSQL database and an SQLite file:
//! logger rules and batching, idempotence, SQL service type round trips and errors,
//! plugin migrations, state snapshots, the core schema guard, and journal replay.

mod common;

use std::time::{Duration, Instant};

use common::config;
use daz_plugin_api::{OwnedEvent, Priority, testing::Harness};
use daz_plugin_storage::Storage;
use daz_testkit::{
    db::{BOTH, Kind, TestDb},
    wait_until,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn harness(db: &TestDb, extra: Value) -> Harness<Storage> {
    Harness::<Storage>::new(config(db, extra)).expect("storage starts")
}

/// Sends a request and waits for the plugin's (asynchronous) reply.
fn ask(h: &mut Harness<Storage>, subject: &str, payload: Value) -> Result<Value, String> {
    let mut ev = h.event(subject, &payload);
    let inbox = format!("_INBOX.{}", ev.id);
    ev.reply_to = inbox.clone();
    h.feed(&ev).map_err(|e| e.to_string())?;
    let mut reply = None;
    wait_until(WAIT, "a reply", || {
        reply = h.replies().into_iter().find(|r| r.reply_to == inbox);
        reply.is_some()
    });
    let reply = reply.unwrap();
    if reply.is_error {
        Err(reply.payload["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    } else {
        Ok(reply.payload)
    }
}

fn cytube(h: &mut Harness<Storage>, room: &str, event: &str, payload: Value) -> OwnedEvent {
    let mut ev = h.event(&format!("cytube.in.{room}.{event}"), &payload);
    ev.room = room.to_owned();
    ev.priority = Priority::High;
    ev
}

#[test]
fn default_rules_log_chat_joins_and_media_but_not_media_ticks() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        let events = [
            cytube(
                &mut h,
                "lobby",
                "chatMsg",
                json!({"username": "alice", "msg": "hi", "time": 1_700_000_000_123i64}),
            ),
            cytube(
                &mut h,
                "lobby",
                "mediaUpdate",
                json!({"currentTime": 3.5, "paused": false}),
            ),
            cytube(
                &mut h,
                "lobby",
                "addUser",
                json!({"name": "bob", "rank": 1}),
            ),
            cytube(
                &mut h,
                "lobby",
                "changeMedia",
                json!({"id": "abc", "type": "yt", "title": "Song", "seconds": 212}),
            ),
            cytube(&mut h, "lobby", "usercount", json!(5)),
        ];
        let subs = h.subscriptions();
        for ev in &events {
            // The real bus only delivers what the plugin subscribed to.
            if subs.iter().any(|p| {
                let p: Vec<String> = p.split('.').map(str::to_owned).collect();
                daz_plugin_storage::row::pattern_matches(&p, &ev.subject)
            }) {
                h.feed(ev).unwrap();
            }
        }
        wait_until(WAIT, "3 rows", || db.event_counts().0 == 3);
        let events_logged = db.strings("SELECT event FROM event_log ORDER BY id");
        assert_eq!(
            events_logged,
            vec!["chatMsg", "addUser", "changeMedia"],
            "{kind:?}"
        );
        assert_eq!(
            db.strings("SELECT user_name FROM event_log WHERE event = 'chatMsg'"),
            vec!["alice"]
        );
        assert_eq!(
            db.strings("SELECT message FROM event_log WHERE event = 'chatMsg'"),
            vec!["hi"]
        );
        assert_eq!(
            db.strings("SELECT media_title FROM event_log WHERE event = 'changeMedia'"),
            vec!["Song"]
        );
        assert_eq!(
            db.scalar(
                "SELECT CAST(media_seconds AS BIGINT) FROM event_log WHERE event = 'changeMedia'"
            ),
            212
        );
        assert_eq!(
            db.scalar("SELECT CAST(priority AS BIGINT) FROM event_log WHERE event = 'addUser'"),
            1
        );
        h.shutdown().unwrap();
    }
}

#[test]
fn configured_rules_select_by_subject_and_tags_first_match_wins() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(
            &db,
            json!({"rules": [
                {"subject": "cytube.in.*.chatMsg", "tags": ["backlog"], "log": false},
                {"subject": "cytube.in.*.chatMsg"},
                {"subject": "custom.>", "tags": ["audit"]},
                {"subject": "disabled.x", "enabled": false},
            ]}),
        );
        let mut backlog = cytube(
            &mut h,
            "r",
            "chatMsg",
            json!({"username": "a", "msg": "old"}),
        );
        backlog.tags = vec!["backlog".into()];
        let live = cytube(
            &mut h,
            "r",
            "chatMsg",
            json!({"username": "a", "msg": "new"}),
        );
        let mut audit = h.event("custom.thing.done", &json!({"x": 1}));
        audit.tags = vec!["audit".into()];
        let plain = h.event("custom.thing.done", &json!({"x": 2}));
        let disabled = h.event("disabled.x", &json!({}));
        for ev in [&backlog, &live, &audit, &plain, &disabled] {
            h.feed(ev).unwrap();
        }
        wait_until(WAIT, "2 rows", || db.event_counts().0 == 2);
        h.shutdown().unwrap();
        assert_eq!(db.event_counts().0, 2, "{kind:?}");
        let ids = db.strings("SELECT id FROM event_log ORDER BY id");
        assert_eq!(ids, vec![live.id.clone(), audit.id.clone()]);
        assert!(!h.subscriptions().contains(&"disabled.x".to_owned()));
    }
}

#[test]
fn batches_are_written_by_size_and_age_and_flushed_on_shutdown() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        // A batch by size only: the age limit is far away.
        let mut h = harness(&db, json!({"batch_size": 50, "flush_interval_ms": 600_000}));
        for i in 0..120 {
            h.chat("lobby", "alice", &format!("m{i}")).unwrap();
        }
        wait_until(WAIT, "two full batches", || db.event_counts().0 == 100);
        // The last 20 wait for their age (10 minutes) or the stop.
        assert_eq!(db.event_counts().0, 100, "{kind:?}");
        h.shutdown().unwrap();
        assert_eq!(db.event_counts(), (120, 120), "{kind:?}");

        // By age: a lone event, far below the batch size, is committed once it is
        // older than the flush interval, with no stop or flush asked for. (How soon
        // is measured by `cargo bench -p daz-plugin-storage`, not here.)
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({"batch_size": 1000, "flush_interval_ms": 200}));
        h.chat("lobby", "alice", "timed").unwrap();
        wait_until(WAIT, "the row written by age", || db.event_counts().0 == 1);
        h.shutdown().unwrap();
    }
}

#[test]
fn the_same_event_id_is_written_once() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        let ev = cytube(
            &mut h,
            "lobby",
            "chatMsg",
            json!({"username": "a", "msg": "x"}),
        );
        h.feed(&ev).unwrap();
        wait_until(WAIT, "1 row", || db.event_counts().0 == 1);
        // A replay in a later batch, and twice in one batch.
        h.feed(&ev).unwrap();
        h.feed(&ev).unwrap();
        let other = cytube(
            &mut h,
            "lobby",
            "chatMsg",
            json!({"username": "a", "msg": "y"}),
        );
        h.feed(&other).unwrap();
        wait_until(WAIT, "2 rows", || db.event_counts().0 == 2);
        h.shutdown().unwrap();
        assert_eq!(db.event_counts(), (2, 2), "{kind:?}");
    }
}

/// Issue: the chat backlog the server replays on every join was logged again each time
/// (22 distinct lines made 183 rows). A chat line is one row, identified by room, user,
/// server time and text, whatever its envelope id; through every write path.
#[test]
fn a_chat_line_is_one_row_however_often_it_arrives() {
    let paths = [
        (Kind::Postgres, json!({"postgres_write": "copy"})),
        (Kind::Postgres, json!({"postgres_write": "unnest"})),
        (Kind::Sqlite, json!({})),
    ];
    for (kind, extra) in paths {
        let db = TestDb::new(kind);
        let mut h = harness(&db, extra.clone());
        let line = |h: &mut Harness<Storage>, user: &str, msg: &str, time: i64| {
            cytube(
                h,
                "lobby",
                "chatMsg",
                json!({"username": user, "msg": msg, "meta": {}, "time": time}),
            )
        };
        // Live, then in three backlogs (each copy a new envelope id), some copies in
        // one batch, some in later ones.
        let lines = [
            ("ann", "hello", 1_700_000_000_000i64),
            ("ben", "hello", 1_700_000_000_000),
            ("ann", "hello", 1_700_000_001_000),
            ("ann", "bye", 1_700_000_000_000),
        ];
        for (u, m, t) in lines {
            let ev = line(&mut h, u, m, t);
            h.feed(&ev).unwrap();
        }
        wait_until(WAIT, "4 rows", || db.event_counts().0 == 4);
        for _ in 0..3 {
            for (u, m, t) in lines {
                let mut ev = line(&mut h, u, m, t);
                ev.tags = vec!["backlog".to_owned()];
                h.feed(&ev).unwrap();
            }
        }
        // The same text from the same user at another time is another line (and, fed
        // last, it reaching the database means every copy before it was handled).
        let again = line(&mut h, "ann", "hello", 1_700_000_009_000);
        h.feed(&again).unwrap();
        wait_until(WAIT, "5 rows", || db.event_counts().0 == 5);
        h.shutdown().unwrap();
        assert_eq!(db.event_counts(), (5, 5), "{kind:?} {extra}");
        assert_eq!(
            db.scalar("SELECT count(*) FROM event_log WHERE line_key IS NOT NULL"),
            5
        );
    }
}

fn types_table(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => {
            "CREATE TABLE t (b BOOLEAN, i BIGINT, f DOUBLE PRECISION, s TEXT, y BYTEA, ts TIMESTAMPTZ, j JSONB, n TEXT)"
        }
        Kind::Sqlite => {
            "CREATE TABLE t (b BOOLEAN, i INTEGER, f REAL, s TEXT, y BLOB, ts TEXT, j JSON, n TEXT)"
        }
    }
}

#[test]
fn sql_service_round_trips_every_type() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        ask(&mut h, "sql.exec", json!({"sql": types_table(kind)})).unwrap();
        let params = json!([
            {"type": "bool", "value": true},
            {"type": "int", "value": -9_007_199_254_740_993i64},
            {"type": "float", "value": 2.5},
            {"type": "text", "value": "héllo 'quoted' \"x\""},
            {"type": "bytes", "value": "AAH/"},
            {"type": "timestamp", "value": "2024-05-01T12:00:00.123Z"},
            {"type": "json", "value": {"a": [1, 2, {"b": null}]}},
            {"type": "null"},
        ]);
        let r = ask(
            &mut h,
            "sql.exec",
            json!({"sql": "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", "params": params}),
        )
        .unwrap();
        assert_eq!(r["rows_affected"], 1, "{kind:?}");
        let rows = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT b, i, f, s, y, ts, j, n FROM t"}),
        )
        .unwrap();
        let names: Vec<&str> = rows["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["b", "i", "f", "s", "y", "ts", "j", "n"]);
        let row = &rows["rows"][0];
        assert_eq!(row[0], json!(true), "{kind:?}");
        assert_eq!(row[1], json!(-9_007_199_254_740_993i64));
        assert_eq!(row[2], json!(2.5));
        assert_eq!(row[3], json!("héllo 'quoted' \"x\""));
        assert_eq!(row[4], json!("AAH/"));
        assert_eq!(row[5], json!("2024-05-01T12:00:00.123Z"), "{kind:?}");
        let j = match kind {
            Kind::Postgres => row[6].clone(),
            // SQLite has no JSON type: the text comes back.
            Kind::Sqlite => serde_json::from_str(row[6].as_str().unwrap()).unwrap(),
        };
        assert_eq!(j, json!({"a": [1, 2, {"b": null}]}), "{kind:?}");
        assert_eq!(row[7], Value::Null);
        // Parameters are values, never SQL: an injection attempt is just text.
        let r = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT count(*) AS n FROM t WHERE s = $1", "params": [{"type": "text", "value": "x' OR '1'='1"}]}),
        )
        .unwrap();
        assert_eq!(r["rows"][0][0], json!(0));
        // max_rows truncates.
        for _ in 0..3 {
            ask(&mut h, "sql.exec", json!({"sql": "INSERT INTO t (i) VALUES ($1)", "params": [{"type": "int", "value": 1}]})).unwrap();
        }
        let r = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT i FROM t", "max_rows": 2}),
        )
        .unwrap();
        assert_eq!(r["rows"].as_array().unwrap().len(), 2);
        assert_eq!(r["truncated"], json!(true));
        let info = ask(&mut h, "sql.info", json!({})).unwrap();
        assert_eq!(info["connected"], json!(true));
        assert_eq!(
            info["dialect"],
            json!(if kind == Kind::Postgres {
                "postgres"
            } else {
                "sqlite"
            })
        );
        h.shutdown().unwrap();
    }
}

#[test]
fn bad_requests_get_clear_errors_and_no_panic() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        let e = ask(&mut h, "sql.query", json!({"sq": "SELECT 1"})).unwrap_err();
        assert!(
            e.contains("malformed sql.query request") && e.contains("sql"),
            "{e}"
        );
        let mut raw = h.event("sql.exec", &json!(null));
        raw.payload = b"{not json".to_vec();
        raw.reply_to = "_INBOX.raw".into();
        h.feed(&raw).unwrap();
        wait_until(WAIT, "raw reply", || {
            h.replies()
                .iter()
                .any(|r| r.reply_to == "_INBOX.raw" && r.is_error)
        });
        let e = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT * FROM no_such_table"}),
        )
        .unwrap_err();
        assert!(e.contains("no_such_table"), "{kind:?}: {e}");
        let e = ask(&mut h, "sql.exec", json!({"sql": "SELEC 1"})).unwrap_err();
        assert!(e.to_lowercase().contains("syntax"), "{kind:?}: {e}");
        let e = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT $1", "params": [{"type": "timestamp", "value": "yesterday"}]}),
        )
        .unwrap_err();
        assert!(e.contains("$1") && e.contains("RFC 3339"), "{e}");
        let e = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT 1", "params": [{"type": "decimal", "value": 1}]}),
        )
        .unwrap_err();
        assert!(e.contains("malformed") && e.contains("decimal"), "{e}");
        let e = ask(&mut h, "sql.nope", json!({})).unwrap_err();
        assert!(e.contains("unknown request sql.nope"), "{e}");
        if kind == Kind::Postgres {
            // A wrong parameter type is the database's error, returned as is.
            ask(&mut h, "sql.exec", json!({"sql": "CREATE TABLE n (i INT)"})).unwrap();
            let e = ask(
                &mut h,
                "sql.exec",
                json!({"sql": "INSERT INTO n VALUES ($1)", "params": [{"type": "text", "value": "seven"}]}),
            )
            .unwrap_err();
            assert!(e.contains("integer") && e.contains("text"), "{e}");
            // NULL fits any column.
            ask(
                &mut h,
                "sql.exec",
                json!({"sql": "INSERT INTO n VALUES ($1)", "params": [{"type": "null"}]}),
            )
            .unwrap();
            // The server cancels a statement past its timeout.
            let start = Instant::now();
            let e = ask(
                &mut h,
                "sql.query",
                json!({"sql": "SELECT pg_sleep(60)", "timeout_ms": 200}),
            )
            .unwrap_err();
            assert!(e.contains("statement timeout"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(30));
        } else {
            let start = Instant::now();
            let e = ask(
                &mut h,
                "sql.query",
                json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "timeout_ms": 200}),
            )
            .unwrap_err();
            assert!(e.contains("did not finish within 200 ms"), "{e}");
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        // The service still answers after all that.
        let r = ask(&mut h, "sql.query", json!({"sql": "SELECT 1 AS one"})).unwrap();
        assert_eq!(r["rows"][0][0], json!(1));
        h.shutdown().unwrap();
    }
}

#[test]
fn batches_are_atomic_or_independent() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        ask(
            &mut h,
            "sql.exec",
            json!({"sql": "CREATE TABLE k (id INTEGER PRIMARY KEY)"}),
        )
        .unwrap();
        let ins = |n: i64| json!({"sql": "INSERT INTO k VALUES ($1)", "params": [{"type": "int", "value": n}]});
        let e = ask(
            &mut h,
            "sql.batch",
            json!({"statements": [ins(1), ins(2), ins(1)]}),
        )
        .unwrap_err();
        assert!(
            e.contains("statement 3 of 3") && e.contains("rolled back"),
            "{e}"
        );
        assert_eq!(
            db.scalar("SELECT count(*) FROM k"),
            0,
            "{kind:?}: nothing of the failed batch stays"
        );
        let r = ask(&mut h, "sql.batch", json!({"statements": [ins(1), ins(2)]})).unwrap();
        assert_eq!(r["results"][1]["rows_affected"], 1);
        let r = ask(
            &mut h,
            "sql.batch",
            json!({"atomic": false, "statements": [ins(3), ins(1), ins(4)]}),
        )
        .unwrap();
        assert_eq!(r["results"][0]["rows_affected"], 1);
        assert!(
            r["results"][1]["error"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("unique"),
            "{r}"
        );
        assert_eq!(r["results"][2]["rows_affected"], 1);
        assert_eq!(db.scalar("SELECT count(*) FROM k"), 4);
        h.shutdown().unwrap();
    }
}

#[test]
fn plugin_migrations_apply_once_and_refuse_changes() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        let m1 = json!({"version": 1, "name": "notes", "postgres": "CREATE TABLE notes_items (id BIGINT PRIMARY KEY, body TEXT)", "sqlite": "CREATE TABLE notes_items (id INTEGER PRIMARY KEY, body TEXT)"});
        let m2 = json!({"version": 2, "name": "index", "postgres": "CREATE INDEX notes_body ON notes_items (body); ALTER TABLE notes_items ADD COLUMN at TEXT", "sqlite": "CREATE INDEX notes_body ON notes_items (body); ALTER TABLE notes_items ADD COLUMN at TEXT"});
        let r = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "notes", "migrations": [m1, m2]}),
        )
        .unwrap();
        assert_eq!(r["applied"], json!([1, 2]), "{kind:?}");
        assert_eq!(r["current"], json!(2));
        let r = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "notes", "migrations": [m1, m2]}),
        )
        .unwrap();
        assert_eq!(r["applied"], json!([]));
        assert_eq!(
            db.scalar("SELECT count(*) FROM plugin_migrations WHERE plugin = 'notes'"),
            2
        );
        ask(
            &mut h,
            "sql.exec",
            json!({"sql": "INSERT INTO notes_items (id, body, at) VALUES (1, 'x', 'y')"}),
        )
        .unwrap();
        // An applied migration edited afterwards.
        let mut changed = m1.clone();
        changed["postgres"] = json!("CREATE TABLE notes_items (id BIGINT)");
        changed["sqlite"] = json!("CREATE TABLE notes_items (id INTEGER)");
        let e = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "notes", "migrations": [changed, m2]}),
        )
        .unwrap_err();
        assert!(
            e.contains("migration 1") && e.contains("changed after it was applied"),
            "{e}"
        );
        // An older build that does not know version 2.
        let e = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "notes", "migrations": [m1]}),
        )
        .unwrap_err();
        assert!(
            e.contains("migration 2") && e.contains("newer build"),
            "{e}"
        );
        // Tables must carry the plugin's name.
        let bad = json!({"version": 1, "name": "x", "postgres": "CREATE TABLE items (id INT)", "sqlite": "CREATE TABLE items (id INT)"});
        let e = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "other", "migrations": [bad]}),
        )
        .unwrap_err();
        assert!(e.contains("other_"), "{e}");
        // A failing migration is rolled back with its ledger entry.
        let failing = json!({"version": 1, "name": "bad", "postgres": "CREATE TABLE broken_t (id INT); INSERT INTO broken_t VALUES ('x')", "sqlite": "CREATE TABLE broken_t (id INT); INSERT INTO nope VALUES (1)"});
        let e = ask(
            &mut h,
            "sql.migrate",
            json!({"plugin": "broken", "migrations": [failing]}),
        )
        .unwrap_err();
        assert!(e.contains("rolled back"), "{e}");
        assert_eq!(
            db.scalar("SELECT count(*) FROM plugin_migrations WHERE plugin = 'broken'"),
            0
        );
        let e = ask(
            &mut h,
            "sql.query",
            json!({"sql": "SELECT * FROM broken_t"}),
        )
        .unwrap_err();
        assert!(e.contains("broken_t"), "{kind:?}: {e}");
        h.shutdown().unwrap();
    }
}

#[test]
fn plugin_state_snapshots_survive_a_restart() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        let r = ask(&mut h, "sql.state.load", json!({"plugin": "counter"})).unwrap();
        assert_eq!(r["state"], Value::Null);
        ask(
            &mut h,
            "sql.state.save",
            json!({"state": {"plugin": "counter", "version": 2, "data": {"n": 7}}}),
        )
        .unwrap();
        ask(
            &mut h,
            "sql.state.save",
            json!({"state": {"plugin": "counter", "version": 3, "data": {"n": 8}}}),
        )
        .unwrap();
        h.shutdown().unwrap();
        drop(h);
        let mut h = harness(&db, json!({}));
        let r = ask(&mut h, "sql.state.load", json!({"plugin": "counter"})).unwrap();
        assert_eq!(
            r["state"],
            json!({"plugin": "counter", "version": 3, "data": {"n": 8}}),
            "{kind:?}"
        );
        assert!(r["saved_at"].as_str().unwrap().ends_with('Z'));
        h.shutdown().unwrap();
    }
}

#[test]
fn a_database_with_an_unknown_newer_core_migration_is_refused() {
    for kind in BOTH {
        let db = TestDb::new(kind);
        let mut h = harness(&db, json!({}));
        h.shutdown().unwrap();
        drop(h);
        let checksum = if kind == Kind::Postgres {
            "'\\x00'::bytea"
        } else {
            "X'00'"
        };
        db.exec(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', TRUE, {checksum}, 0)"
        ));
        let err = Harness::<Storage>::new(config(&db, json!({})))
            .err()
            .expect("refused");
        let msg = err.message();
        assert!(
            msg.contains("99990101000000")
                && msg.contains("from the future")
                && msg.contains("newer"),
            "{kind:?}: {msg}"
        );
    }
}

#[test]
fn events_go_to_the_journal_while_the_database_is_unreachable_and_are_replayed() {
    let db = TestDb::new(Kind::Postgres);
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut down = config(
        &db,
        json!({"connect_timeout_ms": 300, "spill_after_ms": 100}),
    );
    down["database_url"] = json!(format!("postgres://postgres@127.0.0.1:{dead_port}/nope"));
    let mut h = Harness::<Storage>::new(down).expect("starts although the database is down");
    assert!(
        h.logs().iter().any(|l| l.message.contains("unreachable")),
        "{:?}",
        h.logs()
    );
    for i in 0..500 {
        h.chat("lobby", "alice", &format!("m{i}")).unwrap();
    }
    // A requester gets the connection failure as its answer, not a hang.
    let e = ask(&mut h, "sql.query", json!({"sql": "SELECT 1"})).unwrap_err();
    assert!(e.contains("unreachable") || e.contains("refused"), "{e}");
    let journal = db.journal_dir();
    wait_until(WAIT, "a journal segment", || {
        std::fs::read_dir(&journal)
            .map(|d| d.count() > 1)
            .unwrap_or(false)
    });
    h.shutdown().unwrap();
    drop(h);
    // A restart on a reachable database replays everything, once.
    let mut h = harness(&db, json!({}));
    wait_until(WAIT, "500 rows", || db.event_counts().0 == 500);
    h.shutdown().unwrap();
    assert_eq!(db.event_counts(), (500, 500));
    let messages = db.strings("SELECT message FROM event_log ORDER BY id");
    assert_eq!(messages.first().map(String::as_str), Some("m0"));
    let segments = std::fs::read_dir(&journal).unwrap().count();
    assert_eq!(
        segments, 1,
        "only the LOCK file remains once the journal is replayed"
    );
}

/// Issue: a database password given as a URL query parameter (`?password=…`) was
/// printed in two log lines. No credential form of the URL reaches a log line or an
/// error.
#[test]
fn no_database_credential_reaches_a_log_line_or_an_error() {
    let db = TestDb::new(Kind::Postgres);
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("postgres://postgres@127.0.0.1:{dead_port}/nope?password=Qs3cr3tQ"),
        format!("postgres://postgres:Qs3cr3tQ@127.0.0.1:{dead_port}/nope?sslpassword=Qs3cr3tQ"),
        format!("postgresql://127.0.0.1:{dead_port}/nope?user=postgres&pass%77ord=Qs3cr3tQ"),
    ] {
        let mut c = config(&db, json!({"connect_timeout_ms": 200}));
        c["database_url"] = json!(url);
        let mut h = Harness::<Storage>::new(c).expect("starts although the database is down");
        h.chat("lobby", "alice", "hello").unwrap();
        h.shutdown().unwrap();
        let logs: Vec<String> = h.logs().iter().map(|l| l.message.clone()).collect();
        assert!(
            logs.iter()
                .any(|l| l.contains("=***") || l.contains(":***@")),
            "the URL is shown, redacted: {logs:?}"
        );
        assert!(
            logs.iter().all(|l| !l.contains("s3cr3t")),
            "{url}: {logs:?}"
        );
    }
    // A URL the driver cannot parse: the error quotes no credential either.
    let mut c = config(&db, json!({}));
    c["database_url"] =
        json!("postgres://postgres:Qs3cr3tQ@127.0.0.1:notaport/x?password=Qs3cr3tQ");
    let err = Harness::<Storage>::new(c)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("database_url"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}
