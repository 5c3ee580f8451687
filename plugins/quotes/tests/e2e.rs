//! `!quote` end to end: a Cytube simulator, a real host with the whole default plugin
//! set plus `quotes` as real `.so` files, the storage plugin on SQLite and on
//! PostgreSQL. A user's past line comes from the event log the storage plugin keeps;
//! saved quotes are added, found, shown and removed with rank checks.

use daz_cytube_sim::Simulator;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{PW, ROOM, Rig, Setup, bot_says, sim_config, user},
};
use serde_json::json;

async fn quotes(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c))
        .await
        .expect("simulator");
    let db = TestDb::new(kind);
    let setup = Setup::repeating(&["quote"]);
    let rig = Rig::with_plugin(&sim, &db, &setup, "quotes", "", &["quote"]).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;

    // bob's line reaches the event log; !quote bob finds it (and not his commands).
    bob.chat("the cake is a lie <3").expect("chat");
    bob.chat("!quote").expect("chat");
    bot_says(&mut bob, "No quotes yet; add one with !quote add <text>.").await;
    rig.wait_rows(
        "bob's line in the event log",
        "SELECT message FROM event_log WHERE room = $1 AND user_name = 'bob' AND event = 'chatMsg'",
        json!([{"type": "text", "value": ROOM}]),
        |r| r.len() == 2,
    )
    .await;
    for _ in 0..3 {
        alice.chat("!quote BOB").expect("chat");
        bot_says(&mut alice, "bob: “the cake is a lie <3”").await;
    }
    alice.chat("!quote nobody").expect("chat");
    bot_says(&mut alice, "I have no lines from nobody.").await;
    alice.chat("!quote <script>").expect("chat");
    bot_says(&mut alice, "That is not a user name").await;

    bob.chat("!quote add Ünïcode <b>bold</b> 100% wisdom")
        .expect("chat");
    bot_says(&mut bob, "Quote #1 added.").await;
    alice.chat("!quote add second one").expect("chat");
    bot_says(&mut alice, "Quote #2 added.").await;
    alice
        .chat(&format!("!quote add {}", "z".repeat(305)))
        .expect("chat");
    bot_says(
        &mut alice,
        "That quote is 305 characters long; the most is 300.",
    )
    .await;
    alice.chat("!quote search WISDOM 100%").expect("chat");
    bot_says(&mut alice, "1 found: #1 Ünïcode <b>bold</b> 100% wisdom").await;
    alice.chat("!quote search 100_").expect("chat");
    bot_says(&mut alice, "No quote has all of those words.").await;
    alice.chat("!quote #2").expect("chat");
    bot_says(&mut alice, "#2: second one (added by alice)").await;

    // Removal: bob may remove his own, not alice's; alice (admin) may.
    bob.chat("!quote remove 2").expect("chat");
    bot_says(
        &mut bob,
        "Only moderators, or whoever added a quote, can remove it.",
    )
    .await;
    bob.chat("!quote remove 1").expect("chat");
    bot_says(&mut bob, "Quote #1 removed.").await;
    alice.chat("!quote remove #2").expect("chat");
    bot_says(&mut alice, "Quote #2 removed.").await;
    alice.chat("!quote remove 2").expect("chat");
    bot_says(&mut alice, "There is no quote #2.").await;
    rig.wait_rows(
        "the quote book empty",
        "SELECT COUNT(*) FROM quotes_quotes",
        json!([]),
        |r| r.len() == 1 && r[0][0] == json!(0),
    )
    .await;
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_on_sqlite() {
    quotes(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_on_postgres() {
    quotes(Kind::Postgres).await;
}
