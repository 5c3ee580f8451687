//! `!poll` end to end: a Cytube simulator with a registered channel (polls need rank
//! 1.5), a real host logged in as the bot (a moderator), the whole default plugin set
//! plus `polls` as real `.so` files, the storage plugin on SQLite and on PostgreSQL.
//! Polls go out as the server's own poll frames and are seen where users see them;
//! results are announced when the server's timeout closes a poll, when a moderator
//! closes it in the channel, and when it is closed through the bot; bad input and rank
//! checks (the caller's, and the bot's once it is demoted) are refused in chat.

use daz_cytube_sim::Simulator;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, ROOM, Rig, Setup, T, bot_says, sim_config, user},
};
use serde_json::json;

async fn polls(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c.rank(BOT, 2.0)))
        .await
        .expect("simulator");
    let db = TestDb::new(kind);
    let setup = Setup::repeating(&["poll"]);
    let rig = Rig::with_plugin(&sim, &db, &setup, "polls", "", &["poll"]).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let mut moderator = user(&sim, "mod", Some(PW)).await;

    // Refusals: the caller's rank, and input out of bounds. Nothing reaches the server.
    bob.chat("!poll lunch? | pasta | pizza").expect("chat");
    bot_says(
        &mut bob,
        "bob, opening polls is for rank 1.5 (leaders) and above here.",
    )
    .await;
    alice.chat("!poll lunch?").expect("chat");
    bot_says(&mut alice, "A poll needs at least two options.").await;
    alice.chat("!poll lunch? | pasta").expect("chat");
    bot_says(&mut alice, "A poll needs at least two options.").await;
    alice
        .chat("!poll lunch? | pasta | pizza | 0s")
        .expect("chat");
    bot_says(&mut alice, "from 1 second to 24 hours").await;
    alice
        .chat("!poll lunch? | pasta | pizza | 48h")
        .expect("chat");
    bot_says(&mut alice, "from 1 second to 24 hours").await;
    let eleven: Vec<String> = (1..=11).map(|i| format!("o{i}")).collect();
    alice
        .chat(&format!("!poll many? | {}", eleven.join(" | ")))
        .expect("chat");
    bot_says(&mut alice, "That is 11 options; a poll has at most 10.").await;
    alice
        .chat(&format!("!poll long? | a | {}", "x".repeat(101)))
        .expect("chat");
    bot_says(
        &mut alice,
        "Option 2 is 101 characters long; the most is 100.",
    )
    .await;
    alice.chat("!poll same? | Tea | tea").expect("chat");
    bot_says(&mut alice, "every option must differ").await;
    assert!(sim.channel(ROOM).expect("channel").poll.is_none());

    // HTML and unicode, with a timeout the server enforces; two votes.
    alice
        .chat("!poll <b>Best</b> pizza? 🍕 | margherita | <i>pepperoni</i> | 4s")
        .expect("chat");
    let opened = bob.expect("newPoll", T).await.expect("the poll opens");
    assert_eq!(opened["title"], "&lt;b&gt;Best&lt;/b&gt; pizza? 🍕");
    assert_eq!(opened["initiator"], BOT);
    bot_says(
        &mut alice,
        "Poll open: “<b>Best</b> pizza? 🍕”; it closes in 4s and I will post the results.",
    )
    .await;
    bob.emit("vote", Some(json!({"option": 1}))).expect("vote");
    moderator
        .emit("vote", Some(json!({"option": 1})))
        .expect("vote");
    bot_says(
        &mut bob,
        "Poll closed: “<b>Best</b> pizza? 🍕” — “<i>pepperoni</i>” wins with 2 of 2 votes. margherita 0 · <i>pepperoni</i> 2",
    )
    .await;

    // One at a time; a moderator closes the bot's poll in the channel.
    alice.chat("!poll Movie? | comedy | horror").expect("chat");
    bot_says(&mut alice, "close it with !poll close").await;
    alice.chat("!poll Again? | a | b").expect("chat");
    bot_says(&mut alice, "A poll is already open (“Movie?”)").await;
    bob.chat("!poll").expect("chat");
    bot_says(&mut bob, "Open poll: “Movie?” — comedy 0 · horror 0").await;
    moderator.emit("closePoll", None).expect("closePoll");
    bot_says(&mut bob, "Poll closed: “Movie?” — no votes.").await;

    // A moderator's own poll, closed through the bot, is announced too.
    moderator
        .emit(
            "newPoll",
            Some(json!({"title": "Snacks?", "opts": ["chips", "fruit"], "obscured": false})),
        )
        .expect("newPoll");
    moderator
        .expect_where("newPoll", T, |p| p["title"] == "Snacks?")
        .await
        .expect("the poll opens");
    alice
        .emit("vote", Some(json!({"option": 0})))
        .expect("vote");
    alice
        .expect_where("updatePoll", T, |p| p["counts"] == json!([1, 0]))
        .await
        .expect("the vote counts");
    alice.chat("!poll close").expect("chat");
    bot_says(
        &mut alice,
        "Poll closed: “Snacks?” — “chips” wins with 1 of 1 vote.",
    )
    .await;
    alice.chat("!poll close").expect("chat");
    bot_says(&mut alice, "No poll is open.").await;

    // Every closed poll is in the table; !poll last reads it back.
    let rows = rig
        .wait_rows(
            "three closed polls",
            "SELECT title, initiator, asked_by, counts FROM polls_results WHERE room = $1 ORDER BY id",
            json!([{"type": "text", "value": ROOM}]),
            |r| r.len() == 3,
        )
        .await;
    assert_eq!(rows[0][0], json!("<b>Best</b> pizza? 🍕"));
    assert_eq!(rows[0][2], json!("alice"));
    assert_eq!(rows[0][3], json!("[0,2]"));
    assert_eq!(rows[2][1], json!("mod"));
    bob.chat("!poll last").expect("chat");
    bot_says(&mut bob, "Last poll: “Snacks?” — “chips” wins").await;

    // Demoted below pollctl, the bot refuses instead of sending a frame the server
    // would ignore without a word.
    alice
        .emit("setChannelRank", Some(json!({"name": BOT, "rank": 1})))
        .expect("demote");
    alice
        .expect_where("setUserRank", T, |v| v["name"] == BOT && v["rank"] == 1)
        .await
        .expect("the bot is demoted");
    alice.chat("!poll t | a | b").expect("chat");
    bot_says(
        &mut alice,
        "I cannot open polls here: the channel lets rank 1.5 (leaders) and above do that and my rank is 1.",
    )
    .await;
    assert!(sim.channel(ROOM).expect("channel").poll.is_none());
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_on_sqlite() {
    polls(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_on_postgres() {
    polls(Kind::Postgres).await;
}
