//! The host killed with SIGKILL mid-stream, while the database is unreachable and the
//! event log lives in the journal; a restarted host replays the journal into the
//! database: every journaled event arrives, once.
//!
//! The host runs as a separate `daz` process connected to the Cytube simulator, whose
//! users keep chatting while it is killed.

mod common;

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Kind, TestDb, wait_until};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_plugin_storage::journal::Journal;
use daz_testkit::{binary::daz_binary, build_plugins, deploy};

const WAIT: Duration = Duration::from_secs(60);

fn write_config(dir: &std::path::Path, url: &str, site: Option<&str>) -> std::path::PathBuf {
    let rooms = site
        .map(|s| format!("[[rooms]]\nsite = \"{s}\"\nchannel = \"room\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\npreflight = false\nwatch = false\n\
         [http]\nenabled = false\n{rooms}\
         [plugins.storage]\nfile = \"libdaz_plugin_storage.so\"\n[plugins.storage.config]\n\
         database_url = \"{url}\"\nprefer_env = false\njournal_dir = \"{}\"\n\
         spill_after_ms = 50\nconnect_timeout_ms = 300\nflush_interval_ms = 20\n",
        dir.join("journal").display()
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `daz run`; its output (logs) goes to `log` when given.
fn spawn_daz(
    dir: &std::path::Path,
    config: &std::path::Path,
    log: Option<&std::path::Path>,
) -> Child {
    let out = || match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => Stdio::null(),
    };
    Command::new(daz_binary())
        .current_dir(dir)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdout(out())
        .stderr(out())
        .spawn()
        .expect("daz starts")
}

fn journal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("journal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

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
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    deploy(&so, &plugins, "libdaz_plugin_storage.so");

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
    let (mut journal, recovery) = Journal::open(&dir.path().join("journal"), 8 << 20).unwrap();
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
