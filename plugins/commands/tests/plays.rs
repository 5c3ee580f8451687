//! "A play is a play once; the bot is not a visitor", end to end: a live item plays in
//! the simulator, the bot's connection is dropped again and again, and each time the
//! server repeats `changeMedia` at `currentTime` 0 on the bot's rejoin (as the real
//! server does for live media) and the bot arrives again. The plays (analytics, the
//! media tracker's `media_plays`, `!stats`' most played, `!activity`) count the item
//! once, the joins leave the bot out, and the `[server]` whisper lines the moderator
//! bot gets are nobody's chat.

use std::time::{Duration, Instant};

use daz_cytube_sim::{MediaSpec, SimHandle};
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, ROOM, Rig, Setup, T, bot_says, sim_config, test_plugin_dir, user},
    wait,
};
use serde_json::{Value, json};

/// How often the bot loses its connection and rejoins.
const REJOINS: usize = 4;

const LIVE_TITLE: &str = "Live Stream";

/// The `changeMedia` the simulator sent the bot's most recent connection.
fn change_sent_to_bot(sim: &SimHandle) -> Option<Value> {
    sim.frames_sent_to(BOT)
        .into_iter()
        .find(|(n, _)| n == "changeMedia")
        .map(|(_, v)| v)
}

/// The first column of the first row, as a number.
fn count(rows: &[Vec<Value>]) -> i64 {
    rows.first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .unwrap_or(-1)
}

/// Issue: "most played" counted 7 plays (14 rows) of a live item that started 3 times,
/// and the bot's own rejoins counted as joins in `!stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_item_is_one_play_however_often_the_bot_rejoins() {
    let dir = test_plugin_dir();
    let mut config = sim_config(|mut c| {
        // Only the live stream: no other item plays or ends meanwhile.
        c.playlist = vec![MediaSpec::new("tw", "somechannel", LIVE_TITLE, 0)];
        // A moderator bot: on every join it gets the moderators' second userlist, and a
        // `[server]` whisper line for each arrival.
        c.rank(BOT, 2.0)
    });
    // The bot reconnects more often than the server's connect budget allows per IP.
    config.connect_burst = 100;
    let sim = daz_cytube_sim::Simulator::start(config)
        .await
        .expect("simulator");
    let db = TestDb::new(Kind::Sqlite);
    let rig = Rig::start(&sim, &db, &Setup::default(), &dir, &["stats", "activity"]).await;
    let room = rig
        .host
        .app
        .room_registry
        .get(ROOM)
        .expect("room configured");
    // Past the 3 s lead-in: the stream plays, and stays at position 0.
    sim.wait_for(T, |s| s.channel(ROOM).is_some_and(|c| c.position >= 0.0))
        .await
        .expect("the lead-in ends");
    let sessions = || room.status.get().sessions;
    assert_eq!(sessions(), 1);
    for rejoin in 1..=REJOINS {
        sim.drop_connections(Some(ROOM));
        wait(T, "the bot to rejoin", || sessions() == rejoin as u64 + 1).await;
        rig.wait_logged_in().await;
        let change = change_sent_to_bot(&sim).unwrap_or_default();
        assert_eq!(change["currentTime"].as_f64(), Some(0.0), "{change}");
    }

    // Every repeat reached the event log, as a row the counters must skip.
    let rows = rig
        .wait_rows(
            "a changeMedia row per join",
            "SELECT COUNT(*) FROM event_log WHERE room = $1 AND event = 'changeMedia'",
            json!([{"type": "text", "value": ROOM}]),
            |rows| count(rows) == (REJOINS + 1) as i64,
        )
        .await;
    assert_eq!(count(&rows), (REJOINS + 1) as i64);

    // One visitor, after all the bot's rejoins.
    let mut bob = user(&sim, "bob", Some(PW)).await;
    rig.wait_rows(
        "the whisper about bob logged",
        "SELECT COUNT(*) FROM event_log WHERE room = $1 AND event = 'chatMsg' AND user_name = '[server]'",
        json!([{"type": "text", "value": ROOM}]),
        |rows| count(rows) >= 1,
    )
    .await;
    rig.wait_rows(
        "bob's arrival logged",
        "SELECT COUNT(*) FROM event_log WHERE room = $1 AND event = 'addUser' AND user_name = 'bob'",
        json!([{"type": "text", "value": ROOM}]),
        |rows| count(rows) == 1,
    )
    .await;

    // The moderators' second userlist on every login replaced the list, never added to
    // it: the bot and bob.
    assert_eq!(room.summary().users, 2, "{:?}", room.summary());

    let plays = rig
        .wait_rows(
            "the media tracker's play",
            "SELECT COUNT(*) FROM media_plays WHERE room = $1",
            json!([{"type": "text", "value": ROOM}]),
            |rows| count(rows) >= 1,
        )
        .await;
    assert_eq!(count(&plays), 1, "one media_plays row");

    let start = Instant::now();
    let summary = loop {
        let s = rig.request("analytics.summary", json!({"room": ROOM}));
        if let Ok(s) = &s
            && s["day"]["joins"].as_i64().unwrap_or(0) >= 1
        {
            break s.clone();
        }
        assert!(start.elapsed() < T, "analytics never caught up: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(summary["day"]["plays"], json!(1), "{summary}");
    assert_eq!(summary["day"]["joins"], json!(1), "only bob: {summary}");
    // The `[server]` whisper is nobody's chat.
    assert_eq!(summary["day"]["messages"], json!(0), "{summary}");
    assert_eq!(summary["day"]["chatters"], json!(0), "{summary}");

    bob.chat("!stats").expect("chat");
    let stats = bot_says(&mut bob, "Today: ").await;
    assert!(stats.contains(" 1 joins,"), "{stats}");
    assert!(stats.contains("; 1 play ("), "{stats}");
    assert!(
        stats.contains(&format!("most played: {LIVE_TITLE} (1×)")),
        "{stats}"
    );
    bob.chat("!activity").expect("chat");
    let activity = bot_says(&mut bob, "This hour: ").await;
    assert!(activity.contains(" 1 joins, 1 plays,"), "{activity}");
    sim.shutdown().await;
}
