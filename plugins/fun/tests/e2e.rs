//! `!roll`, `!choose` and `!8ball` end to end: a Cytube simulator, a real host with the
//! whole default plugin set plus `fun` as real `.so` files (storage on SQLite and on
//! PostgreSQL), answers read where users see them, including bad, huge, HTML and
//! unicode input.

use daz_cytube_sim::Simulator;
use daz_testkit::{
    db::{Kind, TestDb},
    features::{PW, Rig, Setup, bot_says, sim_config, user},
};

async fn fun(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c))
        .await
        .expect("simulator");
    let db = TestDb::new(kind);
    let setup = Setup::repeating(&["roll", "choose", "8ball"]);
    let rig = Rig::with_plugin(&sim, &db, &setup, "fun", "", &["roll", "choose", "8ball"]).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let mut guest = user(&sim, "guest7", None).await;

    bob.chat("!roll 2d6+3").expect("chat");
    let line = bot_says(&mut bob, "bob rolls 2d6+3: ").await;
    let (dice, total) = line
        .trim_start_matches("bob rolls 2d6+3: ")
        .trim_end_matches('.')
        .split_once(" = ")
        .expect("a total");
    let parts: Vec<i64> = dice
        .split(" + ")
        .map(|d| d.parse().expect("a number"))
        .collect();
    assert!(parts[..2].iter().all(|d| (1..=6).contains(d)), "{line}");
    assert_eq!(
        parts.iter().sum::<i64>(),
        total.parse::<i64>().expect("total")
    );
    bob.chat("!roll 100000d6").expect("chat");
    bot_says(&mut bob, "At most 100 dice").await;
    bob.chat("!roll <script>").expect("chat");
    bot_says(&mut bob, "Usage: !roll [NdM+K]").await;
    bob.chat("!roll 100d1000000").expect("chat");
    let long = bot_says(&mut bob, "bob rolls 100d1000000: ").await;
    assert!(long.contains(" + … = "), "{long}");

    // Guests play too; HTML and unicode come back as typed.
    guest.chat("!choose <b>tea</b> | <b>tea</b>").expect("chat");
    bot_says(&mut guest, "guest7: <b>tea</b>").await;
    guest.chat("!pick 🍕 or 🍕").expect("chat");
    bot_says(&mut guest, "guest7: 🍕").await;
    guest
        .chat(&format!(
            "!choose {} | {}",
            "x".repeat(150),
            "x".repeat(150)
        ))
        .expect("chat");
    let pick = bot_says(&mut guest, "guest7: xxxx").await;
    assert!(pick.chars().count() <= 320, "{pick}");
    guest.chat("!choose alone").expect("chat");
    bot_says(&mut guest, "Usage: !choose").await;
    guest.chat("!8ball will the tests pass?").expect("chat");
    let answer = bot_says(&mut guest, "guest7: 🎱 ").await;
    let answer = answer.trim_start_matches("guest7: 🎱 ");
    assert!(daz_plugin_fun::EIGHT_BALL.contains(&answer), "{answer}");
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fun_on_sqlite() {
    fun(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fun_on_postgres() {
    fun(Kind::Postgres).await;
}
