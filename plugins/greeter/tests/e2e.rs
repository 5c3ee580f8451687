//! The greeter end to end: a Cytube simulator, a real host with the whole default
//! plugin set plus `greeter` as real `.so` files, the storage plugin on SQLite and on
//! PostgreSQL. First-time and returning greetings, the opt-out, and silence on the
//! bot's own (re)join.

use daz_cytube_sim::Simulator;
use daz_host::cytube::ConnState;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, ROOM, Rig, Setup, T, bot_lines, bot_says, sim_config, user},
    wait,
};
use serde_json::json;

async fn greeter(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c))
        .await
        .expect("simulator");
    // bob is there before the bot: the bot's arrival greets nobody.
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let db = TestDb::new(kind);
    let config = "cooldown_ms = 0\nflush_interval_ms = 100\n\
                  returning = \"Good to see you again, {user} <3\"\n";
    let setup = Setup::repeating(&["greet"]);
    let rig = Rig::with_plugin(&sim, &db, &setup, "greeter", config, &["greet", "ping"]).await;

    let carol = user(&sim, "carol", None).await;
    bot_says(&mut bob, "Welcome to the channel, carol!").await;
    carol.leave().await.expect("leave");
    let mut carol = user(&sim, "carol", None).await;
    bot_says(&mut bob, "Good to see you again, carol <3").await;
    carol.chat("!greet off").expect("chat");
    bot_says(&mut carol, "OK carol, no more greetings.").await;
    carol.leave().await.expect("leave");
    let _carol = user(&sim, "carol", None).await;
    // A later greeting proves carol's rejoin was handled before it: she got none.
    let _dave = user(&sim, "dave", None).await;
    bot_says(&mut bob, "Welcome to the channel, dave!").await;
    let greetings_of_carol = bot_lines(&bob)
        .iter()
        .filter(|l| l.contains("carol") && !l.starts_with("OK carol"))
        .count();
    assert_eq!(greetings_of_carol, 2, "{:?}", bot_lines(&bob));

    // The bot loses its connection and comes back: its user list greets nobody.
    let room = rig.host.app.room_registry.get(ROOM).expect("room");
    let sessions = room.status.get().sessions;
    sim.drop_connections(Some(ROOM));
    wait(T, "the bot back in the room", || {
        let s = room.status.get();
        s.sessions > sessions && s.state == ConnState::LoggedIn
    })
    .await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mark = alice.mark();
    bot_says(&mut alice, "Welcome to the channel, alice!").await;
    alice.chat("!ping").expect("chat");
    bot_says(&mut alice, "pong").await;
    let lines: Vec<String> = alice
        .received_since(mark)
        .iter()
        .filter(|(n, v)| n == "chatMsg" && v["username"] == BOT)
        .map(|(_, v)| v["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("bob") || l.contains("carol") || l.contains("dave")),
        "greeted on a reconnect: {lines:?}"
    );
    rig.wait_rows(
        "carol's opt-out stored",
        "SELECT opted_out FROM greeter_users WHERE room = $1 AND user_name = 'carol'",
        json!([{"type": "text", "value": ROOM}]),
        |r| r.len() == 1 && (r[0][0] == json!(true) || r[0][0] == json!(1)),
    )
    .await;
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_on_sqlite() {
    greeter(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_on_postgres() {
    greeter(Kind::Postgres).await;
}
