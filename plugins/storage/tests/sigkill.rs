//! The host killed with SIGKILL mid-stream, while the database is unreachable and the
//! event log lives in the journal; a restarted host replays the journal into the
//! database: every journaled event arrives, once.
//!
//! The host runs as a separate `daz` process connected to the Cytube simulator, whose
//! users keep chatting while it is killed.

mod common;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::daz::{journal_bytes, metric, spawn_daz, write_config, write_config_with};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_plugin_storage::journal::{Fsync, Journal};
use daz_testkit::{
    binary::daz_binary,
    build_plugins,
    db::{Kind, TestDb},
    deploy, host_dir,
    process::free_port,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_is_replayed_after_the_host_is_killed_mid_stream() {
    let so = build_plugins(&["daz-plugin-storage"]).join("libdaz_plugin_storage.so");
    let _ = daz_binary();
    let users = ["ann", "ben", "cat", "dan"];
    let sim = Simulator::start(SimConfig {
        accounts: users.iter().map(|u| Account::new(*u, "pw")).collect(),
        channels: vec![ChannelConfig::registered("room")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = host_dir();
    deploy(&so, &dir.path().join("plugins"), "libdaz_plugin_storage.so");

    // Run 1: the database is unreachable, so events spill to the journal.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{dead}/none"),
        Some(&sim.base_url()),
    );
    let mut daz = spawn_daz(dir.path(), &config, None);

    // Users chat all along, through the kill.
    let chatting = Arc::new(AtomicBool::new(true));
    let mut chatters = Vec::new();
    for u in users {
        let actor = sim.actor(u).await.connect().await.unwrap();
        let flag = chatting.clone();
        chatters.push(tokio::spawn(async move {
            let mut actor = actor;
            actor.join_and_login("room", u, Some("pw")).await.unwrap();
            let mut i = 0;
            while flag.load(Ordering::Acquire) {
                let _ = actor.chat(&format!("{u} {i}"));
                i += 1;
                tokio::time::sleep(Duration::from_millis(1_100)).await;
            }
        }));
    }
    let d = dir.path().to_owned();
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "events in the journal", || journal_bytes(&d) > 4_000);
    });
    daz.kill().unwrap(); // SIGKILL
    daz.wait().unwrap();
    chatting.store(false, Ordering::Release);
    for c in chatters {
        c.await.unwrap();
    }

    // What the killed host had journaled.
    let (mut journal, recovery) =
        Journal::open(&dir.path().join("journal"), 8 << 20, Fsync::No).unwrap();
    assert!(recovery.records >= 5, "{recovery:?}");
    let (rows, _) = journal.read(usize::MAX).unwrap();
    let journaled: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(journaled.len() as u64, recovery.records);
    assert!(rows.iter().any(|r| r.event == "chatMsg"));
    drop(journal);

    // Run 2: a reachable database; the journal is replayed.
    let db = TestDb::new(Kind::Postgres);
    let config = write_config(dir.path(), &db.url, None);
    let log = dir.path().join("run2.log");
    let mut daz = spawn_daz(dir.path(), &config, Some(&log));
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "the journal replayed", || {
            db.try_event_counts()
                .is_some_and(|(n, _)| n >= journaled.len() as i64)
                && journal_bytes(&d) == 0
        });
        // The operator is told what is happening and when it is over.
        let done = format!(
            "journal written to the database: {} events",
            journaled.len()
        );
        wait_until(WAIT, "the replay's end in the log", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&done))
        });
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!(
                "replaying {} events from the journal",
                journaled.len()
            )),
            "{text}"
        );
    });
    daz.kill().unwrap();
    daz.wait().unwrap();
    let ids: HashSet<String> = db.strings("SELECT id FROM event_log").into_iter().collect();
    assert!(
        journaled.is_subset(&ids),
        "every journaled event is in the database"
    );
    let (n, distinct) = db.event_counts();
    assert_eq!(n, distinct, "no duplicates");
    assert_eq!(n, journaled.len() as i64);
    sim.shutdown().await;
}

/// Issue: events reached the journal only after `spill_after_ms` (1 s), so a SIGKILL
/// inside that second lost every event the storage plugin had accepted. Now each is in
/// the journal when accepted. The window is stretched to 10 minutes here so that the
/// kill lands inside it on any machine: the old code held all of these events in
/// memory only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_the_spill_window_loses_no_accepted_event() {
    const ACCEPTED: &str = "daz_plugin_storage_events_accepted_total";
    let so = build_plugins(&["daz-plugin-storage"]).join("libdaz_plugin_storage.so");
    let _ = daz_binary();
    let users = ["ann", "ben", "cat"];
    let sim = Simulator::start(SimConfig {
        accounts: users.iter().map(|u| Account::new(*u, "pw")).collect(),
        channels: vec![ChannelConfig::registered("room")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = host_dir();
    deploy(&so, &dir.path().join("plugins"), "libdaz_plugin_storage.so");
    let dead = free_port();
    let port = free_port();
    let config = write_config_with(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{dead}/none"),
        Some(&sim.base_url()),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        600_000,
    );
    let log1 = dir.path().join("run1.log");
    let mut daz = spawn_daz(dir.path(), &config, Some(&log1));
    // Four lines each: within the server's chat burst, so none is throttled.
    const LINES: usize = 12;
    let mut actors = Vec::new();
    for u in users {
        let mut actor = sim.actor(u).await.connect().await.unwrap();
        actor.join_and_login("room", u, Some("pw")).await.unwrap();
        for i in 0..LINES / users.len() {
            let _ = actor.chat(&format!("{u} line {i}"));
        }
        actors.push(actor);
    }
    // Kill as soon as the plugin says it accepted the chat lines (and whatever joins
    // came with them); the counter is updated after each event is journaled.
    let mut accepted = 0.0;
    tokio::task::block_in_place(|| {
        let until = std::time::Instant::now() + WAIT;
        while accepted < LINES as f64 {
            accepted = metric(port, ACCEPTED).unwrap_or(0.0);
            assert!(
                std::time::Instant::now() < until,
                "the storage plugin accepted {accepted} events in {WAIT:?}; the host said:\n{}",
                std::fs::read_to_string(&log1).unwrap_or_default()
            );
            std::thread::yield_now();
        }
    });
    daz.kill().unwrap(); // SIGKILL
    daz.wait().unwrap();

    let db = TestDb::new(Kind::Postgres);
    let config = write_config(dir.path(), &db.url, None);
    let mut daz = spawn_daz(dir.path(), &config, None);
    let d = dir.path().to_owned();
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "the journal replayed", || {
            db.try_event_counts()
                .is_some_and(|(n, _)| n as f64 >= accepted)
                && journal_bytes(&d) == 0
        });
    });
    daz.kill().unwrap();
    daz.wait().unwrap();
    let (n, distinct) = db.event_counts();
    assert_eq!(n, distinct, "no duplicates");
    let chat = db.scalar("SELECT count(*) FROM event_log WHERE event = 'chatMsg'");
    eprintln!(
        "SIGKILL inside the spill window: {accepted} events accepted before the kill, {n} in the database after the restart ({chat} chat lines of {LINES} sent): 0 accepted events lost"
    );
    assert!(
        n as f64 >= accepted,
        "{n} rows for {accepted} accepted events"
    );
    drop(actors);
    sim.shutdown().await;
}
