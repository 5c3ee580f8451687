//! The playlist plugin end to end: a Cytube simulator with a registered (locked)
//! channel, a real host logged in as the bot (a moderator), the whole default plugin
//! set plus `playlist` as real `.so` files, the storage plugin on SQLite and on
//! PostgreSQL. Links are added and refused (bad links, the server's own refusal, the
//! per-user limit, the blacklist, rank), moderators skip and shuffle, the auto-DJ
//! refills the emptied playlist from the most played media, and a demoted bot says the
//! locked playlist would ignore it instead of sending.

use daz_cytube_sim::{MediaSpec, Simulator};
use daz_testkit::{
    db::{Kind, TestDb},
    features::{BOT, PW, ROOM, Rig, Setup, T, bot_says, sim_config, user},
    wait,
};
use serde_json::json;

/// `[plugins.playlist.config]`.
const PLAYLIST: &str = "
max_per_user = 2
autodj = true
autodj_batch = 1
autodj_cooldown_ms = 0
";

async fn playlist(kind: Kind) {
    let mut cfg = sim_config(|c| c.rank(BOT, 2.0));
    // What the simulator's metadata lookup knows; any other YouTube id fails as a
    // server without an API key fails.
    cfg.media = vec![
        MediaSpec::yt("dQw4w9WgXcQ", "Never Gonna <Give>", 213),
        MediaSpec::yt("vid00000001", "First Song", 600),
        MediaSpec::yt("vid00000002", "Second Song", 600),
    ];
    let sim = Simulator::start(cfg).await.expect("simulator");
    let db = TestDb::new(kind);
    let setup = Setup::repeating(&["add", "skip", "shuffle"]);
    let commands = ["add", "skip", "shuffle", "blacklist"];
    let rig = Rig::with_plugin(&sim, &db, &setup, "playlist", PLAYLIST, &commands).await;
    let mut alice = user(&sim, "alice", Some(PW)).await;
    let mut bob = user(&sim, "bob", Some(PW)).await;
    let mut moderator = user(&sim, "mod", Some(PW)).await;
    let on_playlist = |id: &str| {
        sim.channel(ROOM)
            .expect("channel")
            .playlist
            .iter()
            .any(|i| i.id == id && i.queueby == BOT)
    };

    // A registered user adds through the bot (the playlist is locked for rank 1).
    bob.chat("!add https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3")
        .expect("chat");
    bot_says(&mut bob, "Added “Never Gonna <Give>” (3:33) for bob.").await;
    assert!(on_playlist("dQw4w9WgXcQ"));
    // The server's refusal reaches the user.
    bob.chat("!add https://youtu.be/aaaaaaaaaaa").expect("chat");
    bot_says(
        &mut bob,
        "The server did not add it: The YouTube API now requires an API key.",
    )
    .await;
    bob.chat("!add https://www.twitch.tv/SomeStream")
        .expect("chat");
    bot_says(&mut bob, "Added “Twitch.tv - somestream” for bob.").await;
    bob.chat("!add yt:vid00000001").expect("chat");
    bot_says(
        &mut bob,
        "bob, you have 2 items on the playlist already (the most is 2)",
    )
    .await;

    // Bad input.
    bob.chat("!add <script>alert(1)</script>").expect("chat");
    bot_says(&mut bob, "I cannot add that link.").await;
    bob.chat("!add https://example.org/page.html")
        .expect("chat");
    bot_says(&mut bob, "I cannot add that link.").await;
    bob.chat("!add ftp://example.org/x.mp4").expect("chat");
    bot_says(&mut bob, "I cannot add that link.").await;
    // The server cuts a chat line at 320 units: what arrives is a broken link.
    bob.chat(&format!("!add https://youtu.be/{}", "é".repeat(600)))
        .expect("chat");
    bot_says(&mut bob, "That YouTube link has no valid id.").await;
    bob.chat("!add next https://vimeo.com/5").expect("chat");
    bot_says(&mut bob, "bob, adding next is for rank 2 (moderators)").await;
    alice
        .chat("!add https://youtu.be/dQw4w9WgXcQ")
        .expect("chat");
    bot_says(&mut alice, "That is already on the playlist.").await;

    // The blacklist, managed by moderators, kept in the database.
    bob.chat("!blacklist add https://vimeo.com/5")
        .expect("chat");
    bot_says(&mut bob, "bob, !blacklist is for rank 2 (moderators)").await;
    moderator
        .chat("!blacklist add https://vimeo.com/5")
        .expect("chat");
    bot_says(&mut moderator, "Blacklisted vi:5.").await;
    alice.chat("!add vi:5").expect("chat");
    bot_says(&mut alice, "That one is blacklisted here.").await;
    rig.wait_rows(
        "the blacklist entry",
        "SELECT media_type, media_id, added_by FROM playlist_blacklist WHERE room = $1",
        json!([{"type": "text", "value": ROOM}]),
        |r| r.len() == 1 && r[0] == vec![json!("vi"), json!("5"), json!("mod")],
    )
    .await;

    // Moderators skip (the bot may jump) and shuffle.
    bob.chat("!skip").expect("chat");
    bot_says(&mut bob, "bob, !skip is for rank 2 (moderators)").await;
    moderator.chat("!skip").expect("chat");
    bot_says(&mut moderator, "Skipping “First Song”.").await;
    bob.expect_where("changeMedia", T, |m| m["title"] == "Second Song")
        .await
        .expect("the next item plays");
    moderator.chat("!shuffle").expect("chat");
    bot_says(&mut moderator, "Shuffled the playlist (4 items).").await;

    // A burst of adds past the server's queue limiter (rank 2: 10 at once, then 2 per
    // second): the host paces the frames, so the server refuses none.
    let before = daz_testkit::features::bot_lines(&moderator).len();
    for i in 1..=14 {
        moderator
            .chat(&format!("!add https://www.twitch.tv/burst{i:02}"))
            .expect("chat");
    }
    for i in 1..=14 {
        bot_says(
            &mut moderator,
            &format!("Added “Twitch.tv - burst{i:02}” for mod."),
        )
        .await;
    }
    let burst = daz_testkit::features::bot_lines(&moderator).split_off(before);
    assert!(
        !burst
            .iter()
            .any(|l| l.contains("did not add") || l.contains("was not added")),
        "{burst:?}"
    );

    // The auto-DJ: once something has played, an emptied playlist is refilled from
    // the most played media.
    rig.wait_rows(
        "plays in the history",
        "SELECT COUNT(*) FROM media_plays WHERE room = $1",
        json!([{"type": "text", "value": ROOM}]),
        |r| r.len() == 1 && r[0][0].as_i64().unwrap_or(0) >= 2,
    )
    .await;
    for item in sim.channel(ROOM).expect("channel").playlist {
        moderator
            .emit("delete", Some(json!(item.uid)))
            .expect("delete");
    }
    bot_says(
        &mut moderator,
        "Auto-DJ: the playlist ran empty; queueing 1 item from the most played here.",
    )
    .await;
    wait(T, "the auto-DJ's item on the playlist", || {
        sim.channel(ROOM)
            .is_some_and(|c| c.playlist.len() == 1 && c.playlist[0].queueby == BOT)
    })
    .await;
    // (Each deletion of the playing item started the next one: every item has played
    // by now, the most recent play wins a tie.)
    let picked = sim.channel(ROOM).expect("channel").playlist[0].clone();
    let plays = rig
        .sql(
            "SELECT COUNT(*) FROM media_plays WHERE room = $1 AND media_type = $2 AND media_id = $3",
            json!([{"type": "text", "value": ROOM}, {"type": "text", "value": picked.media_type},
                   {"type": "text", "value": picked.id}]),
        )
        .expect("query");
    assert!(
        plays[0][0].as_i64().unwrap_or(0) >= 1,
        "{picked:?} never played"
    );

    // Demoted below playlistadd, the bot says so instead of sending a frame the locked
    // playlist would ignore without a word.
    alice
        .emit("setChannelRank", Some(json!({"name": BOT, "rank": 1})))
        .expect("demote");
    alice
        .expect_where("setUserRank", T, |v| v["name"] == BOT && v["rank"] == 1)
        .await
        .expect("the bot is demoted");
    alice
        .chat("!add https://youtu.be/dQw4w9WgXcQ")
        .expect("chat");
    bot_says(
        &mut alice,
        "The playlist is locked and adding needs rank 1.5 (leaders); my rank is 1.",
    )
    .await;
    moderator.chat("!skip").expect("chat");
    bot_says(&mut moderator, "I cannot skip here, so I voted to skip").await;
    assert_eq!(
        sim.channel(ROOM).expect("channel").playlist.len(),
        1,
        "nothing was queued while the bot was demoted"
    );
    rig.host.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_on_sqlite() {
    playlist(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_on_postgres() {
    playlist(Kind::Postgres).await;
}
