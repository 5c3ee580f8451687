//! `!tell` and `!remind` end to end: a Cytube simulator, a real host with the whole
//! default plugin set plus `tell` as real `.so` files, the storage plugin on SQLite and
//! on PostgreSQL. Messages and reminders survive a hot reload and a host restart; bad
//! input gets a clear answer.

use daz_cytube_sim::{SimHandle, Simulator};
use daz_testkit::{
    db::{Kind, TestDb},
    features::{PW, Rig, Setup, bot_says, sim_config, user},
};
use serde_json::json;

/// `[plugins.tell.config]`.
const TELL: &str = "tick_ms = 200";

async fn start(sim: &SimHandle, db: &TestDb) -> Rig {
    let setup = Setup::repeating(&["tell", "remind"]);
    Rig::with_plugin(sim, db, &setup, "tell", TELL, &["tell", "remind", "ping"]).await
}

async fn tell(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c))
        .await
        .expect("simulator");
    let db = TestDb::new(kind);
    let rig = start(&sim, &db).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;

    // bob is away: the message waits.
    alice
        .chat("!tell bob see <b>this</b> ünïcode 🎉")
        .expect("chat");
    bot_says(&mut alice, "I'll tell bob when they next chat or join.").await;
    // Bad input.
    alice.chat("!tell").expect("chat");
    bot_says(&mut alice, "Usage: !tell <user> <message>").await;
    alice.chat("!tell <script>x</script> hi").expect("chat");
    bot_says(&mut alice, "That is not a user name").await;
    alice
        .chat(&format!("!tell bob {}", "y".repeat(305)))
        .expect("chat");
    bot_says(
        &mut alice,
        "That message is 305 characters long; the most is 300.",
    )
    .await;
    alice.chat("!remind in 10 parsecs tea").expect("chat");
    bot_says(&mut alice, "Sorry, I don't understand the time \"10\"").await;
    alice.chat("!remind at 25:00 film").expect("chat");
    bot_says(&mut alice, "\"25:00\" is not a time of day").await;

    // A reminder set before a hot reload comes after it.
    alice.chat("!remind in 2s tea time").expect("chat");
    bot_says(&mut alice, "OK alice, I'll remind you in 2s.").await;
    alice.chat("!reload tell").expect("chat");
    bot_says(&mut alice, "reload tell").await;
    bot_says(&mut alice, "alice, reminder: tea time").await;

    // bob joins: the message is delivered, once.
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let line = bot_says(&mut bob, "bob, alice said").await;
    assert!(line.ends_with("ago: see <b>this</b> ünïcode 🎉"), "{line}");

    // Kept in the database: a restart loses nothing.
    alice.chat("!tell mod after the restart").expect("chat");
    bot_says(&mut alice, "I'll tell mod").await;
    alice.chat("!remind in 4s stretch").expect("chat");
    bot_says(&mut alice, "I'll remind you").await;
    rig.wait_rows(
        "both waiting in the database",
        "SELECT (SELECT COUNT(*) FROM tell_messages WHERE delivered_at IS NULL), \
         (SELECT COUNT(*) FROM tell_reminders WHERE delivered_at IS NULL)",
        json!([]),
        |r| r.len() == 1 && r[0][0] == json!(1) && r[0][1] == json!(1),
    )
    .await;
    rig.host.app.shutdown().await;
    let rig = start(&sim, &db).await;
    bot_says(&mut alice, "alice, reminder").await;
    let mut moder = user(&sim, "mod", Some(PW)).await;
    bot_says(&mut moder, "mod, alice said").await;
    rig.wait_rows(
        "everything delivered",
        "SELECT COUNT(*) FROM tell_messages WHERE delivered_at IS NULL",
        json!([]),
        |r| r.len() == 1 && r[0][0] == json!(0),
    )
    .await;
    assert_eq!(
        bob.received_named("chatMsg")
            .iter()
            .filter(|v| v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("bob, alice said")))
            .count(),
        1
    );
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_remind_on_sqlite() {
    tell(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_remind_on_postgres() {
    tell(Kind::Postgres).await;
}
