//! The moderation plugin end to end: a Cytube simulator with a registered channel, a
//! real host logged in as the bot (a channel admin), the whole default plugin set plus
//! moderation as real `.so` files, and the storage plugin on SQLite and on PostgreSQL.
//! Users flood, post links and evade a word filter by case and spacing; moderators
//! manage filters and pardon in chat; what the bot does is read where users see it (PMs,
//! kicks, mutes in the simulator) and in the audit table and on the bus.

use std::sync::Arc;

use daz_bus::Envelope;
use daz_cytube_sim::{Account, Actor, SimHandle, Simulator};
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, ROOM, Rig, Setup, T, bot_pms, bot_says, sim_config, user},
    wait,
};
use serde_json::{Value, json};

/// `[plugins.moderation.config]` for most tests.
const MODERATION: &str = r#"
flush_interval_ms = 200
exempt_rank = 4
ladder = ["warn", "warn", "kick"]
[[plugins.moderation.config.filters]]
name = "flood"
kind = "flood"
lines = 5
window_ms = 10000
[[plugins.moderation.config.filters]]
name = "links"
kind = "link"
allow = ["youtube.com"]
[[plugins.moderation.config.filters]]
name = "newlinks"
kind = "new_user_link"
window_ms = 600000
action = "kick"
[[plugins.moderation.config.filters]]
name = "slurs"
kind = "word"
pattern = "badword"
reason = "no slurs here"
"#;

async fn start(sim: &SimHandle, db: &TestDb) -> Rig {
    start_with(sim, db, MODERATION).await
}

/// A host with the default plugin set and moderation configured by `moderation` (the
/// keys of `[plugins.moderation.config]`).
async fn start_with(sim: &SimHandle, db: &TestDb, moderation: &str) -> Rig {
    let setup = Setup::default();
    Rig::with_plugin(
        sim,
        db,
        &setup,
        "moderation",
        moderation,
        &["filter", "pardon", "ping"],
    )
    .await
}

fn audit(rig: &Rig) -> Vec<Vec<Value>> {
    rig.sql(
        "SELECT user_name, filter, requested, action, outcome, strikes FROM moderation_actions \
         WHERE by_user = 'filter' ORDER BY id",
        json!([]),
    )
    .unwrap_or_default()
}

async fn wait_audit(
    rig: &Rig,
    what: &str,
    pred: impl Fn(&[Vec<Value>]) -> bool,
) -> Vec<Vec<Value>> {
    rig.wait_rows(
        what,
        "SELECT user_name, filter, requested, action, outcome, strikes FROM moderation_actions \
         WHERE by_user = 'filter' ORDER BY id",
        json!([]),
        |r| pred(r),
    )
    .await
}

async fn kicked(actor: &mut Actor) -> String {
    let v = actor
        .expect_where("kick", T, |_| true)
        .await
        .unwrap_or_else(|e| panic!("{} was never kicked: {e}", actor.name()));
    v["reason"].as_str().unwrap_or_default().to_owned()
}

fn is_muted(sim: &SimHandle, name: &str) -> bool {
    sim.channel(ROOM)
        .and_then(|c| c.user(name).map(|u| u.muted))
        .unwrap_or(false)
}

async fn moderation(kind: Kind) {
    let sim = Simulator::start(sim_config(|c| c.rank(BOT, 3.0)))
        .await
        .expect("simulator");
    // alice, bob and mod are there before the bot: not new users.
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let mut moder = user(&sim, "mod", Some(PW)).await;
    let db = TestDb::new(kind);
    let rig = start(&sim, &db).await;
    let actions = rig.host.probe("action-watcher", &["moderation.action"]);

    // bob floods: 5 lines in a burst earn one warning by PM (strike 1).
    for i in 0..5 {
        bob.chat(&format!("spam line {i}")).expect("chat");
    }
    let pm = bot_pms(&mut bob, "Warning").await;
    assert_eq!(pm, "Warning: please do not flood the chat (strike 1).");
    // A link (strike 2); an allowed domain is fine.
    bob.chat("watch https://www.youtube.com/watch?v=abc")
        .expect("chat");
    bob.chat("or go to https://spam.example.xyz/win")
        .expect("chat");
    bot_pms(&mut bob, "links are not allowed here (strike 2)").await;
    // Evading the word filter by case and spacing: strike 3 is a kick, with the reason.
    bob.chat("you are a B a D w O r D").expect("chat");
    assert_eq!(kicked(&mut bob).await, "no slurs here");
    let rows = wait_audit(&rig, "bob's three actions", |r| r.len() >= 3).await;
    let bob_rows: Vec<(String, String, i64)> = rows
        .iter()
        .filter(|r| r[0] == "bob")
        .map(|r| {
            (
                r[1].as_str().unwrap_or_default().to_owned(),
                r[3].as_str().unwrap_or_default().to_owned(),
                r[5].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        bob_rows,
        vec![
            ("flood".to_owned(), "warn".to_owned(), 1),
            ("links".to_owned(), "warn".to_owned(), 2),
            ("slurs".to_owned(), "kick".to_owned(), 3),
        ]
    );

    // alice has the bot's own rank: the filter trips, the bot spares her and sends
    // nothing (no PM, no kick frame reaches the server).
    alice.chat("badword").expect("chat");
    let rows = wait_audit(&rig, "alice spared", |r| r.iter().any(|r| r[0] == "alice")).await;
    let spared = rows.iter().find(|r| r[0] == "alice").expect("alice's row");
    assert_eq!(spared[3], Value::Null);
    assert!(
        spared[4]
            .as_str()
            .is_some_and(|o| o.starts_with("spared: the user's rank 3")),
        "{spared:?}"
    );
    assert!(
        !alice
            .received_named("pm")
            .iter()
            .any(|v| v["username"] == BOT),
        "alice was warned"
    );

    // Moderators manage filters live; bad input gets a clear answer.
    moder
        .chat("!filter add word \"free nitro\" mute")
        .expect("chat");
    bot_says(
        &mut moder,
        "Filter #1 added: word1 (word \"free nitro\" → mute)",
    )
    .await;
    moder.chat("!filter add regex (unclosed").expect("chat");
    let refused = bot_says(&mut moder, "Filter refused").await;
    assert!(refused.contains("bad regular expression"), "{refused}");
    moder
        .chat(&format!("!filter add regex {}", "x".repeat(280)))
        .expect("chat");
    bot_says(&mut moder, "is 280 characters long; at most 200").await;
    moder.chat("!filter add word Ärger <b>").expect("chat");
    bot_says(
        &mut moder,
        "Filter #2 added: word2 (word \"Ärger <b>\" → warn)",
    )
    .await;
    moder.chat("!pardon <script>").expect("chat");
    bot_says(&mut moder, "That is not a user name").await;
    moder.chat("!pardon nobody_here").expect("chat");
    bot_says(&mut moder, "nobody_here has no strikes.").await;
    moder.chat("!filter remove slurs").expect("chat");
    bot_says(&mut moder, "Filter slurs comes from plugins.toml").await;
    // Below the rank, the router refuses.
    let mut carol = user(&sim, "carol", None).await;
    carol.chat("!filter list").expect("chat");
    bot_says(&mut carol, "carol, !filter is for moderators and above.").await;

    // A guest the bot saw join posts a link: kicked at once (new users' links).
    let mut guest = user(&sim, "dave", None).await;
    guest.chat("hello www.spam.net").expect("chat");
    assert_eq!(kicked(&mut guest).await, "new users may not post links yet");

    // carol trips the live filter through look-alike digits: muted at once (the
    // filter's own action), told so by PM; the server mutes her.
    carol.chat("FR33 N1TRO for everyone").expect("chat");
    bot_pms(&mut carol, "You are muted").await;
    wait(T, "carol muted in the channel", || is_muted(&sim, "carol")).await;

    // The plugin is hot-reloaded: strikes and live filters carry over.
    alice.chat("!reload moderation").expect("chat");
    bot_says(&mut alice, "reload moderation").await;
    moder.chat("!filter list").expect("chat");
    // One page or more, however the server's line length cuts the list.
    let mut list = bot_says(&mut moder, "Filters (1/").await;
    let pages: usize = list["Filters (1/".len()..]
        .split(')')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a page count");
    for page in 2..=pages {
        list += &bot_says(&mut moder, &format!("Filters ({page}/{pages})")).await;
    }
    assert!(
        list.contains("#1 word1") && list.contains("#2 word2"),
        "{list}"
    );
    assert!(
        list.contains("newlinks (new user link → kick) [config]"),
        "{list}"
    );
    moder.chat("!pardon CAROL").expect("chat");
    bot_says(&mut moder, "carol pardoned: 1 strike cleared, unmuted.").await;
    wait(T, "carol unmuted", || !is_muted(&sim, "carol")).await;
    // Unicode and HTML in a word filter: carol's line is warned, strike 1 again.
    carol.chat("so viel ÄRGER <b> heute").expect("chat");
    bot_pms(&mut carol, "(strike 1)").await;

    // Every action went to the bus too. The plugin sends the warning before it
    // publishes the action, so the PM can reach carol first: wait for the bus.
    // (mod, checked too with `exempt_rank = 4`, may have typed the commands fast
    // enough to be warned for flooding.)
    let filtered = |v: &Value| v["by"] == "filter" && v["user"] != "mod";
    let mut published: Vec<Value> = Vec::new();
    wait(T, "the seven filter actions on the bus", || {
        let mut out: Vec<Arc<Envelope>> = Vec::new();
        actions.mailbox.drain_into(&mut out, usize::MAX);
        published.extend(
            out.iter()
                .map(|e| serde_json::from_slice::<Value>(&e.payload).expect("json")),
        );
        published.iter().filter(|v| filtered(v)).count() >= 7
    })
    .await;
    let users: Vec<&str> = published
        .iter()
        .filter(|v| filtered(v))
        .map(|v| v["user"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        users,
        ["bob", "bob", "bob", "alice", "dave", "carol", "carol"],
        "{published:?}"
    );
    wait_audit(&rig, "carol's second warning", |r| {
        r.iter().filter(|r| r[0] == "carol").count() == 2
    })
    .await;
    let rows: Vec<Vec<Value>> = audit(&rig).into_iter().filter(|r| r[0] != "mod").collect();
    assert_eq!(rows.len(), 7, "{rows:?}");
    rig.host.app.shutdown().await;
}

/// `[plugins.moderation.config]` with a filter whose action is a ban: "forbidden" bans
/// at once.
const BANS: &str = r#"
flush_interval_ms = 200
exempt_rank = 5
[[plugins.moderation.config.filters]]
name = "forbidden"
kind = "word"
pattern = "forbidden"
action = "ban"
reason = "that word is banned here"
"#;

/// The names on the channel's ban list, as a moderator asks for it.
async fn banlist(admin: &mut Actor) -> Vec<String> {
    admin.emit("requestBanlist", None).expect("requestBanlist");
    let list = admin
        .expect("banlist", T)
        .await
        .expect("the server answers with the ban list");
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The bot (a channel admin, rank 3) bans a registered user and a moderator below it
/// through the filter's `ban` action (the server kicks them with "You're banned!" and
/// lists them), and spares users of its own rank and above: no frame is sent for them.
async fn bans(kind: Kind) {
    let mut cfg = sim_config(|c| c.rank(BOT, 3.0).rank("owner", 4.0));
    cfg.accounts.push(Account::new("owner", PW));
    let sim = Simulator::start(cfg).await.expect("simulator");
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let mut moder = user(&sim, "mod", Some(PW)).await;
    let owner = user(&sim, "owner", Some(PW)).await;
    let db = TestDb::new(kind);
    let rig = start_with(&sim, &db, BANS).await;

    bob.chat("this is FORBIDDEN talk").expect("chat");
    assert_eq!(kicked(&mut bob).await, "You're banned!");
    bob.wait_closed(T)
        .await
        .expect("the server disconnects bob");
    moder.chat("forbidden").expect("chat");
    assert_eq!(kicked(&mut moder).await, "You're banned!");
    assert_eq!(banlist(&mut alice).await, ["bob", "mod"]);
    // A banned name cannot come back.
    let mut again = sim
        .actor("bob-again")
        .await
        .timeout(T)
        .connect()
        .await
        .expect("connects");
    let _ = again.join_and_login(ROOM, "bob", Some(PW)).await;
    assert_eq!(kicked(&mut again).await, "You're banned!");

    // alice has the bot's rank, owner a higher one: spared, nothing sent.
    alice.chat("forbidden").expect("chat");
    owner.chat("forbidden!").expect("chat");
    let rows = wait_audit(&rig, "four filter hits", |r| r.len() == 4).await;
    let outcome = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .map(|r| (r[3].clone(), r[4].as_str().unwrap_or_default().to_owned()))
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
    };
    assert_eq!(outcome("bob").0, json!("ban"));
    assert_eq!(outcome("mod").0, json!("ban"));
    for (name, rank) in [("alice", 3), ("owner", 4)] {
        let (action, why) = outcome(name);
        assert_eq!(action, Value::Null, "{name}");
        assert!(
            why.starts_with(&format!("spared: the user's rank {rank}")),
            "{name}: {why}"
        );
    }
    assert_eq!(banlist(&mut alice).await, ["bob", "mod"]);
    assert!(alice.closed().is_none() && owner.closed().is_none());
    assert!(alice.received_named("kick").is_empty() && owner.received_named("kick").is_empty());
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_filter_bans_below_the_bots_rank_on_sqlite() {
    bans(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_filter_bans_below_the_bots_rank_on_postgres() {
    bans(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_on_sqlite() {
    moderation(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_on_postgres() {
    moderation(Kind::Postgres).await;
}
