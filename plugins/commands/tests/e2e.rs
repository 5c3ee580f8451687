//! The feature plugins end to end: a Cytube simulator, a real host logged in as the
//! bot, the plugins as real `.so` files, and the storage plugin on SQLite and on
//! PostgreSQL. Users are simulator actors typing in the channel or by PM; what the bot
//! answers is read where a user sees it, and what the plugins stored is read back
//! through the storage plugin's SQL service.

use std::time::Duration;

use daz_bus::Envelope;
use daz_cytube_sim::Simulator;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{
        BOT, PW, ROOM, Rig, Setup, T, bot_lines, bot_pms, bot_says, sim_config, test_plugin_dir,
        user,
    },
};
use serde_json::{Value, json};

const ALL: &[&str] = &[
    "ping",
    "help",
    "about",
    "reload",
    "seen",
    "np",
    "stats",
    "activity",
    "deadletters",
    "hello",
];

fn drain(mailbox: &daz_bus::Mailbox) -> Vec<std::sync::Arc<Envelope>> {
    let mut out = Vec::new();
    mailbox.drain_into(&mut out, usize::MAX);
    out
}

fn truthy(v: &Value) -> bool {
    v == &json!(true) || v == &json!(1)
}

/// Commands through the router to every feature plugin, ranks from the live room state,
/// declarations following disable/enable, state across a hot reload, and what the
/// trackers and analytics stored.
async fn features(kind: Kind) {
    let dir = test_plugin_dir();
    let sim = Simulator::start(sim_config(|c| c))
        .await
        .expect("simulator");
    // A command typed before the bot joins reaches it only as join backlog: ignored.
    let mut early = user(&sim, "mod", Some(PW)).await;
    early.chat("!ping").expect("chat");
    early
        .expect_where("chatMsg", T, |v| v["msg"] == "!ping")
        .await
        .expect("echo");
    let db = TestDb::new(kind);
    let rig = Rig::start(&sim, &db, &Setup::default(), &dir, ALL).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;

    bob.chat("!ping").expect("chat");
    assert_eq!(bot_says(&mut bob, "pong").await, "pong");
    bot_says(&mut early, "pong").await;
    assert_eq!(
        bot_lines(&early).iter().filter(|l| *l == "pong").count(),
        1,
        "the backlog's !ping was answered: {:?}",
        bot_lines(&early)
    );

    // help shows what the caller's rank allows.
    bob.chat("!help").expect("chat");
    let page = bot_says(&mut bob, "Commands (1/").await;
    assert!(
        page.contains("!seen") && !page.contains("!reload"),
        "{page}"
    );
    alice.chat("!help").expect("chat");
    // Everyone sees every answer in the channel: wait for the page only alice gets.
    let page = bot_says(&mut alice, "!reload").await;
    assert!(page.starts_with("Commands ("), "{page}");
    assert!(page.chars().count() <= 320);

    // Admin commands: refused below the rank, done for a channel admin.
    bob.chat("!reload example").expect("chat");
    bot_says(&mut bob, "bob, !reload is for channel admins and above.").await;
    alice.chat("!plugins").expect("chat");
    let line = bot_says(&mut alice, "Plugins").await;
    assert!(line.contains("usertracker 0.1.0 serving"), "{line}");

    // The example plugin answers !hello directly; disabling it removes its command from
    // the registry, enabling it brings it back.
    bob.chat("!hello").expect("chat");
    bot_says(&mut bob, "Hello, bob!").await;
    alice.chat("!disable example").expect("chat");
    bot_says(&mut alice, "disable example").await;
    let hello_gone = ALL
        .iter()
        .filter(|c| **c != "hello")
        .copied()
        .collect::<Vec<_>>();
    rig.wait_commands(&hello_gone).await;
    let listed = rig.request("commands.list", json!({})).expect("list");
    assert!(
        !listed["commands"]
            .as_array()
            .expect("commands")
            .iter()
            .any(|c| c["name"] == "hello"),
        "{listed}"
    );
    let mark = bob.mark();
    bob.chat("!hello").expect("chat");
    bob.chat("!ping").expect("chat");
    bot_says(&mut bob, "pong").await;
    assert!(
        !bob.received_since(mark).iter().any(|(n, v)| n == "chatMsg"
            && v["username"] == BOT
            && v["msg"].as_str().is_some_and(|m| m.contains("Hello"))),
        "a disabled plugin answered"
    );
    alice.chat("!enable example").expect("chat");
    bot_says(&mut alice, "enable example").await;
    rig.wait_commands(&["hello"]).await;
    bob.chat("!hello").expect("chat");
    bot_says(&mut bob, "Hello, bob!").await;

    // PM in, PM out.
    bob.pm(BOT, "!ping").expect("pm");
    bot_pms(&mut bob, "pong").await;
    // A command declared for chat and PM (the default scope) answers by PM too: !help
    // lists !hello, so a PM !hello must not go unanswered.
    bob.pm(BOT, "!hello").expect("pm");
    bot_pms(&mut bob, "Hello, bob!").await;

    // The user tracker, across a hot reload of itself.
    bob.chat("!seen alice").expect("chat");
    bot_says(&mut bob, "alice is here now").await;
    alice.chat("!reload usertracker").expect("chat");
    bot_says(&mut alice, "reload usertracker").await;
    bob.chat("!seen bob").expect("chat");
    bot_says(&mut bob, "bob is here now (for").await;
    alice.leave().await.expect("alice leaves");
    // alice typed 5 lines in one stay; the reload neither lost nor doubled them. (Once
    // her session is closed in the database, the tracker has seen her leave: commands
    // travel at a higher priority than user-list events and may overtake them.)
    let rows = rig
        .wait_rows(
            "alice's closed session",
            "SELECT messages FROM user_sessions WHERE room = $1 AND user_name = 'alice' AND left_at IS NOT NULL",
            json!([{"type": "text", "value": ROOM}]),
            |r| r.len() == 1 && r[0][0] == json!(5),
        )
        .await;
    assert_eq!(rows.len(), 1);
    bob.chat("!seen alice").expect("chat");
    bot_says(&mut bob, "alice was last seen").await;
    rig.wait_rows(
        "bob's one session and his totals",
        "SELECT COUNT(*) AS n, MAX(a.messages) AS m FROM user_sessions s JOIN user_activity a \
         ON a.room = s.room AND a.user_name = s.user_name WHERE s.room = $1 AND s.user_name = 'bob'",
        json!([{"type": "text", "value": ROOM}]),
        |r| r.len() == 1 && r[0][0] == json!(1) && r[0][1].as_i64().unwrap_or(0) >= 8,
    )
    .await;

    // The media tracker: what plays, then a completed play once the item ends.
    bob.chat("!np").expect("chat");
    let np = bot_says(&mut bob, "Now playing: First Song").await;
    assert!(np.contains(" / 10:00]"), "{np}");
    sim.advance_playback_in(ROOM, 610_000);
    let plays = rig
        .wait_rows(
            "the first play, completed",
            "SELECT completed, watched_seconds FROM media_plays WHERE room = $1 AND media_id = 'vid00000001' AND ended_at IS NOT NULL",
            json!([{"type": "text", "value": ROOM}]),
            |r| r.len() == 1,
        )
        .await;
    assert!(truthy(&plays[0][0]), "{plays:?}");
    assert!(plays[0][1].as_f64().unwrap_or(0.0) >= 540.0, "{plays:?}");
    bob.chat("!np").expect("chat");
    bot_says(&mut bob, "Now playing: Second Song").await;

    // Analytics from the event log (the storage plugin's default rules log the commands),
    // on the bus, in !stats, !activity and the metrics.
    let start = std::time::Instant::now();
    let summary = loop {
        let s = rig.request("analytics.summary", json!({"room": ROOM}));
        if let Ok(s) = &s
            && s["day"]["commands"].as_i64().unwrap_or(0) >= 14
            && s["day"]["plays"].as_i64().unwrap_or(0) >= 2
        {
            break s.clone();
        }
        assert!(start.elapsed() < T, "analytics never caught up: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // alice and bob (mod's only line was before the bot joined: backlog).
    assert!(
        summary["day"]["chatters"].as_i64().unwrap_or(0) >= 2,
        "{summary}"
    );
    assert!(
        summary["day"]["joins"].as_i64().unwrap_or(0) >= 2,
        "{summary}"
    );
    bob.chat("!stats").expect("chat");
    let stats = bot_says(&mut bob, "Today: ").await;
    assert!(
        stats.contains("messages from") && stats.contains("plays ("),
        "{stats}"
    );
    bob.chat("!activity").expect("chat");
    bot_says(&mut bob, "This hour: ").await;
    let start = std::time::Instant::now();
    loop {
        let (_, metrics) = rig.host.get("/metrics").await;
        if metrics.contains(&format!(
            "daz_plugin_analytics_messages{{plugin=\"analytics\",room=\"{ROOM}\",window=\"day\"}}"
        )) {
            break;
        }
        assert!(start.elapsed() < T, "no analytics metrics: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_on_sqlite() {
    features(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_on_postgres() {
    features(Kind::Postgres).await;
}

fn retry_setup(policy: &str) -> Setup {
    Setup {
        retry: Some(format!(
            "confirm_ms = 1500\ntick_ms = 50\n[plugins.retry.config.policies.chatMsg]\n{policy}\n"
        )),
        usertracker: None,
        mediatracker: None,
        analytics: None,
        example: false,
        ..Setup::default()
    }
}

/// New accounts may not chat for an hour in this channel, so the bot's answers are
/// dropped (`spamFiltered`): the retry plugin redoes them, gives up into a dead
/// letter, and an admin replays it once the bot may chat.
async fn retries_and_dead_letters(kind: Kind) {
    let dir = test_plugin_dir();
    let sim = Simulator::start(sim_config(|mut c| {
        c.opts = json!({"new_user_chat_delay": 3600});
        c
    }))
    .await
    .expect("simulator");
    let db = TestDb::new(kind);
    let setup = retry_setup(
        "max_attempts = 2\ninitial_delay_ms = 200\nmax_delay_ms = 2000\nmultiplier = 2.0\njitter = 0.0",
    );
    let rig = Rig::start(&sim, &db, &setup, &dir, &["ping", "deadletters", "replay"]).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut moderator = user(&sim, "mod", Some(PW)).await;

    moderator.chat("!ping").expect("chat");
    let dead = rig
        .wait_rows(
            "the dead letter",
            "SELECT id, kind, attempts, reason FROM dead_letters",
            json!([]),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(dead[0][1], "chatMsg");
    assert_eq!(dead[0][2], json!(2));
    let reason = dead[0][3].as_str().unwrap_or_default();
    assert!(
        reason.contains("spam_filtered") && reason.contains("gave up after 2 attempts"),
        "{reason}"
    );
    // The original and both attempts really reached the server, which refused each.
    let refused = sim
        .frames_sent_to(BOT)
        .iter()
        .filter(|(n, _)| n == "spamFiltered")
        .count();
    assert_eq!(refused, 3);
    rig.wait_rows(
        "the queue row gone",
        "SELECT id FROM retry_queue",
        json!([]),
        |r| r.is_empty(),
    )
    .await;

    // Admins see it by PM (PMs are not held back for new accounts)…
    alice.pm(BOT, "!deadletters").expect("pm");
    let listing = bot_pms(&mut alice, "1 dead letter: ").await;
    assert!(listing.contains("chatMsg in lobby"), "{listing}");
    // …and replay it once the bot's account is old enough to chat.
    sim.advance_clock(Duration::from_secs(7200));
    alice.pm(BOT, "!replay all").expect("pm");
    bot_pms(&mut alice, "Replayed 1 dead letter.").await;
    bot_says(&mut moderator, "pong").await;
    rig.wait_rows(
        "the dead letter marked replayed and the queue empty again",
        "SELECT d.replayed_at, (SELECT COUNT(*) FROM retry_queue) AS waiting FROM dead_letters d",
        json!([]),
        |r| r.len() == 1 && !r[0][0].is_null() && r[0][1] == json!(0),
    )
    .await;
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_on_sqlite() {
    retries_and_dead_letters(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_dead_letters_on_postgres() {
    retries_and_dead_letters(Kind::Postgres).await;
}

/// A plugin that does nothing about failures (here a bare bus subscriber named `asker`
/// with no subscriptions) still has its failed chat retried: the host publishes the
/// failure report, the retry plugin (subscribed to `cytube.out.*.failed`) redoes it, and
/// the asker gets its own report exactly once.
async fn failures_of_any_plugin_are_retried(kind: Kind) {
    let dir = test_plugin_dir();
    let sim = Simulator::start(sim_config(|mut c| {
        c.opts = json!({"new_user_chat_delay": 3600});
        c
    }))
    .await
    .expect("simulator");
    let db = TestDb::new(kind);
    let setup = Setup {
        builtins: None,
        ..retry_setup(
            "max_attempts = 2\ninitial_delay_ms = 100\nmax_delay_ms = 1000\nmultiplier = 2.0\njitter = 0.0",
        )
    };
    let rig = Rig::start(&sim, &db, &setup, &dir, &["deadletters"]).await;
    let asker = rig.host.probe("asker", &[]);
    let watcher = rig.host.probe("failure-watcher", &["cytube.out.*.failed"]);
    let env = Envelope::builder(
        format!("cytube.out.{ROOM}.chatMsg"),
        serde_json::to_vec(&json!({"msg": "hello from a plain plugin"})).expect("json"),
    )
    .room(ROOM)
    .source("asker")
    .build()
    .expect("valid subject");
    let id = env.id.to_string();
    rig.host.app.bus.publish(env).expect("publish");
    let dead = rig
        .wait_rows(
            "the dead letter",
            "SELECT id, kind, attempts, reason FROM dead_letters",
            json!([]),
            |r| r.len() == 1,
        )
        .await;
    assert_eq!(dead[0][0], json!(id));
    assert_eq!(dead[0][2], json!(2));
    // The original and both redos reached the server, which refused each.
    let refused = sim
        .frames_sent_to(BOT)
        .iter()
        .filter(|(n, _)| n == "spamFiltered")
        .count();
    assert_eq!(refused, 3);
    // The asker got its own report, once; the redos' reports are the retry plugin's.
    let mine: Vec<Value> = drain(&asker.mailbox)
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).expect("json"))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["original"]["source"], "asker");
    assert_eq!(mine[0]["original"]["id"], json!(id));
    assert_eq!(mine[0]["code"], "spam_filtered");
    let seen: Vec<String> = drain(&watcher.mailbox)
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_slice(&e.payload).expect("json");
            v["original"]["source"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(seen, ["asker", "retry", "retry"]);
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_of_any_plugin_are_retried_on_sqlite() {
    failures_of_any_plugin_are_retried(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_of_any_plugin_are_retried_on_postgres() {
    failures_of_any_plugin_are_retried(Kind::Postgres).await;
}

/// An operation waiting for its next attempt when the host stops is redone by the next
/// host, from the retry queue in the database.
async fn the_retry_queue_survives_a_restart(kind: Kind) {
    let dir = test_plugin_dir();
    let sim = Simulator::start(sim_config(|mut c| {
        c.opts = json!({"new_user_chat_delay": 3600});
        c
    }))
    .await
    .expect("simulator");
    let db = TestDb::new(kind);
    let setup = retry_setup(
        "max_attempts = 3\ninitial_delay_ms = 6000\nmax_delay_ms = 6000\nmultiplier = 1.0\njitter = 0.0",
    );
    let rig = Rig::start(&sim, &db, &setup, &dir, &["ping"]).await;
    let alice = user(&sim, "alice", Some(PW)).await;
    let mut moderator = user(&sim, "mod", Some(PW)).await;
    moderator.chat("!ping").expect("chat");
    rig.wait_rows(
        "the queued operation",
        "SELECT kind, attempts FROM retry_queue",
        json!([]),
        |r| r.len() == 1 && r[0][1] == json!(0),
    )
    .await;
    rig.host.app.shutdown().await;
    // New accounts may chat now; a new host takes over the database.
    alice
        .emit("setOptions", Some(json!({"new_user_chat_delay": 0})))
        .expect("setOptions");
    sim.wait_for(T, |s| {
        s.channel(ROOM)
            .is_some_and(|c| c.opts["new_user_chat_delay"].as_f64() == Some(0.0))
    })
    .await
    .expect("options changed");
    let mark = moderator.mark();
    let rig = Rig::start(&sim, &db, &setup, &dir, &["ping"]).await;
    bot_says(&mut moderator, "pong").await;
    assert_eq!(
        moderator
            .received_since(mark)
            .iter()
            .filter(|(n, v)| n == "chatMsg" && v["username"] == BOT && v["msg"] == "pong")
            .count(),
        1
    );
    rig.wait_rows(
        "the queue emptied after the confirm window",
        "SELECT id FROM retry_queue",
        json!([]),
        |r| r.is_empty(),
    )
    .await;
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_queue_survives_a_restart_on_sqlite() {
    the_retry_queue_survives_a_restart(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_queue_survives_a_restart_on_postgres() {
    the_retry_queue_survives_a_restart(Kind::Postgres).await;
}
