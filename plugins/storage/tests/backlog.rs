//! The chat backlog the server replays on every join, through the real `daz` binary,
//! the simulator and PostgreSQL: after several reconnects each chat line is one row of
//! `event_log`, whether it arrived live or in any number of backlogs.

mod common;

use std::time::Duration;

use common::daz::{spawn_daz, write_config};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, Simulator};
use daz_testkit::{binary::daz_binary, build_plugins, deploy, host_dir};
use daz_testkit::{
    db::{Kind, TestDb},
    wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

/// Issue: 22 distinct lines made 183 backlog rows in `event_log` after the bot
/// reconnected 11 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_replays_on_every_reconnect_add_no_row() {
    let so = build_plugins(&["daz-plugin-storage"]).join("libdaz_plugin_storage.so");
    let _ = daz_binary();
    let sim = Simulator::start(SimConfig {
        accounts: vec![Account::new("ann", "pw")],
        channels: vec![ChannelConfig::registered("room")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = host_dir();
    deploy(&so, &dir.path().join("plugins"), "libdaz_plugin_storage.so");
    let db = TestDb::new(Kind::Postgres);
    let config = write_config(dir.path(), &db.url, Some(&sim.base_url()));
    let log = dir.path().join("daz.log");
    let mut daz = spawn_daz(dir.path(), &config, Some(&log));
    let mut ann = sim.actor("ann").await.connect().await.unwrap();
    ann.join_and_login("room", "ann", Some("pw")).await.unwrap();
    let chat_rows = |text: &str| {
        db.scalar(&format!(
            "SELECT count(*) FROM event_log WHERE event = 'chatMsg' AND message = '{text}'"
        ))
    };
    // Lines the bot sees live, then again in the backlog of every rejoin.
    const RECONNECTS: usize = 4;
    let mut sent = Vec::new();
    for round in 0..=RECONNECTS {
        for i in 0..3 {
            let text = format!("round {round} line {i}");
            ann.chat(&text).unwrap();
            sent.push(text);
        }
        let last = sent.last().cloned().unwrap();
        tokio::task::block_in_place(|| {
            wait_until(WAIT, &format!("{last:?} logged"), || {
                db.try_event_counts().is_some() && chat_rows(&last) >= 1
            });
        });
        if round == RECONNECTS {
            break;
        }
        // The bot (and ann) lose their connections; the bot reconnects and gets the
        // backlog again, before any new line (the next round's lines, once logged,
        // say the backlog was handled).
        sim.drop_connections(Some("room"));
        tokio::task::block_in_place(|| {
            wait_until(WAIT, "the bot to rejoin", || {
                std::fs::read_to_string(&log)
                    .is_ok_and(|t| t.matches("state=\"joined\"").count() > round + 1)
            });
        });
        ann = sim.actor("ann").await.connect().await.unwrap();
        ann.join_and_login("room", "ann", Some("pw")).await.unwrap();
    }
    let joins = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("state=\"joined\"")
        .count();
    daz.kill().unwrap();
    daz.wait().unwrap();
    let backlog_rows = db
        .scalar("SELECT count(*) FROM event_log WHERE event = 'chatMsg' AND 'backlog' = ANY(tags)");
    for text in &sent {
        assert_eq!(
            chat_rows(text),
            1,
            "{text:?}: one row (bot joined {joins} times)"
        );
    }
    let distinct = db.scalar(
        "SELECT count(*) FROM (SELECT DISTINCT room, user_name, server_time, message \
         FROM event_log WHERE event = 'chatMsg') d",
    );
    let rows = db.scalar("SELECT count(*) FROM event_log WHERE event = 'chatMsg'");
    eprintln!(
        "{} lines sent, bot joined {joins} times: {rows} chat rows for {distinct} distinct lines ({backlog_rows} of them first seen in a backlog)",
        sent.len()
    );
    assert_eq!(rows, distinct);
    assert!(joins > RECONNECTS, "the bot rejoined {joins} times");
    sim.shutdown().await;
}
