//! What the real CyTube 3.86 server does on join and to moderators, one behaviour per
//! test (see `CYTUBE.md`, "Details seen on the real server"): `setCurrent` twice on
//! join and again after the login's playlist, a guest login finishing before the join
//! burst, the moderators' extra `userlist`, `[server]` whisper lines, and live media
//! repeating `changeMedia` at `currentTime` 0 on every join.

mod common;

use common::*;
use daz_cytube_sim::{Actor, ChannelConfig, MediaSpec, SimHandle};
use serde_json::{Value, json};

/// The names of the frames `a` received, in order.
fn received_names(a: &Actor) -> Vec<String> {
    names(&a.received())
}

/// Index of the first frame named `name` at or after `from`.
fn index_of(names: &[String], name: &str, from: usize) -> Option<usize> {
    names
        .iter()
        .skip(from)
        .position(|n| n == name)
        .map(|i| i + from)
}

/// The capture server with an item playing in `botchan`.
async fn playing(media: MediaSpec) -> SimHandle {
    let mut cfg = capture_config();
    cfg.channels = vec![
        ChannelConfig::registered("botchan")
            .rank("chanboss", 5.0)
            .media(media),
    ];
    start(cfg).await
}

#[tokio::test]
async fn set_current_comes_twice_on_join_and_again_after_the_login_playlist() {
    let sim = playing(MediaSpec::yt("dQw4w9WgXcQ", "Song", 213)).await;
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    // An account login takes longer than the join: the join burst comes first.
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    bot.expect("setUserRank", WAIT).await.unwrap();
    let got = received_names(&bot);
    let playlist = index_of(&got, "playlist", 0).expect("a playlist in the join burst");
    let change = index_of(&got, "changeMedia", 0).expect("changeMedia in the join burst");
    let userlist = index_of(&got, "userlist", 0).expect("a userlist");
    let burst: Vec<&str> = got[playlist..=change].iter().map(String::as_str).collect();
    assert_eq!(
        burst,
        ["playlist", "setCurrent", "setCurrent", "changeMedia"],
        "{got:?}"
    );
    assert!(change < userlist, "{got:?}");
    // After the login: the playlist again, followed by setCurrent once more.
    let login = index_of(&got, "login", 0).unwrap();
    let again = index_of(&got, "playlist", login).expect("the playlist again at login");
    assert_eq!(got[again + 1], "setCurrent", "{got:?}");
    let uids: Vec<Value> = bot.received_named("setCurrent");
    assert_eq!(uids, vec![json!(0); 3]);
    // Only the join burst repeats changeMedia; the login's playlist does not.
    assert_eq!(bot.received_named("changeMedia").len(), 1);
}

#[tokio::test]
async fn a_guest_login_finishes_before_the_join_burst() {
    let sim = start(capture_config()).await;
    let mut guest = sim.actor("g").await.connect().await.unwrap();
    guest
        .join_and_login("botchan", "guestbot", None)
        .await
        .unwrap();
    let got = received_names(&guest);
    let login = index_of(&got, "login", 0).unwrap();
    let perms = index_of(&got, "setPermissions", 0).unwrap();
    assert_eq!(&got[..login + 1], ["rank", "rank", "login"], "{got:?}");
    assert!(login < perms, "{got:?}");
    assert_eq!(guest.received_named("rank")[1], json!(0));
    // Already logged in when the burst is built: in the userlist, no addUser for itself.
    let list = &guest.received_named("userlist")[0];
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "guestbot"),
        "{list}"
    );
    assert!(guest.received_named("addUser").is_empty(), "{got:?}");

    // An account's login finishes after the burst: its userlist lacks it, and it
    // learns of itself by addUser.
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    bot.expect_where("addUser", WAIT, |v| v["name"] == "testbot")
        .await
        .unwrap();
    let got = received_names(&bot);
    assert!(
        index_of(&got, "userlist", 0).unwrap() < index_of(&got, "login", 0).unwrap(),
        "{got:?}"
    );
    let list = &bot.received_named("userlist")[0];
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "testbot"),
        "{list}"
    );
}

#[tokio::test]
async fn moderators_get_a_second_userlist_with_ips_aliases_and_shadow_mutes() {
    let sim = start(capture_config()).await;
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    bot.expect("setUserRank", WAIT).await.unwrap();
    // A registered user of rank 1 gets one userlist, without the moderator fields.
    let lists = bot.received_named("userlist");
    assert_eq!(lists.len(), 1);
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    owner
        .expect_where("setUserRank", WAIT, |v| v["name"] == "chanboss")
        .await
        .unwrap();
    let got: Vec<String> = received_names(&owner)
        .into_iter()
        .filter(|n| n != "usercount")
        .collect();
    let login = index_of(&got, "login", 0).unwrap();
    // After the login: rank 5, then the moderators' userlist, as in the capture.
    let after: Vec<&str> = got[login..].iter().map(String::as_str).collect();
    assert_eq!(
        after,
        [
            "login",
            "addUser",
            "rank",
            "userlist",
            "setPlaylistMeta",
            "playlist",
            "setUserRank"
        ],
        "{got:?}"
    );
    let lists = owner.received_named("userlist");
    assert_eq!(lists.len(), 2);
    let plain = &lists[0][0]["meta"];
    assert!(plain.get("aliases").is_none(), "{plain}");
    let moderated = &lists[1][0];
    assert_eq!(moderated["name"], "testbot");
    for key in ["smuted", "aliases", "ip"] {
        assert!(moderated["meta"].get(key).is_some(), "{key}: {moderated}");
    }

    // A promotion past rank 2 brings the moderators' userlist too.
    let b = bot.mark();
    owner
        .emit(
            "setChannelRank",
            Some(json!({"name": "testbot", "rank": 2})),
        )
        .unwrap();
    bot.expect_where("setUserRank", WAIT, |v| v["name"] == "testbot")
        .await
        .unwrap();
    let since: Vec<String> = names(&bot.received_since(b));
    let at = index_of(&since, "userlist", 0).expect("a userlist on promotion");
    assert_eq!(since[at + 1], "rank", "{since:?}");
    assert!(bot.received_since(b)[at].1[0]["meta"].get("ip").is_some());
}

#[tokio::test]
async fn moderators_get_server_whisper_lines_for_joins_kicks_and_bans() {
    let sim = start(capture_config()).await;
    let mut owner = sim.actor("owner").await.connect().await.unwrap();
    owner
        .join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    let mut bot = sim.actor("bot").await.connect().await.unwrap();
    bot.join_and_login("botchan", "testbot", Some("testbot-pass-123"))
        .await
        .unwrap();
    let mut g = sim.actor("g").await.connect().await.unwrap();
    g.join_and_login("botchan", "visitor", None).await.unwrap();
    let mut g2 = sim.actor("g2").await.connect().await.unwrap();
    g2.join_and_login("botchan", "pest", None).await.unwrap();
    owner.chat("/kick visitor").unwrap();
    g.expect("kick", WAIT).await.unwrap();
    owner.chat("/ban pest").unwrap();
    g2.expect("kick", WAIT).await.unwrap();
    let mut lines = Vec::new();
    for want in [
        "testbot joined (aliases: testbot)",
        "visitor joined (aliases: visitor)",
        "chanboss kicked visitor",
        "chanboss namebanned pest",
    ] {
        let v = owner
            .expect_where("chatMsg", WAIT, |v| {
                v["username"] == "[server]" && v["msg"] == want
            })
            .await
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(v["meta"]["addClass"], "server-whisper", "{v}");
        lines.push(v);
    }
    // A rank-1 account sees none of them.
    let seen_by_bot: Vec<Value> = bot
        .received_named("chatMsg")
        .into_iter()
        .filter(|v| v["username"] == "[server]")
        .collect();
    assert!(seen_by_bot.is_empty(), "{seen_by_bot:?}");
}

/// Issue: the real server repeats `changeMedia` with `currentTime` 0 for a live item
/// on every join (it keeps no clock for media without a length), which made every
/// rejoin of the bot look like a new play.
#[tokio::test]
async fn live_media_come_back_at_zero_on_every_join() {
    let sim = playing(MediaSpec::new("tw", "somechannel", "Live", 0)).await;
    let mut first = sim.actor("first").await.connect().await.unwrap();
    first
        .join_and_login("botchan", "viewer", None)
        .await
        .unwrap();
    // Lead-in over, then a minute of playback.
    sim.advance_playback_in("botchan", 63_000);
    assert_eq!(sim.channel("botchan").unwrap().position, 0.0);
    for round in 0..3 {
        let name = format!("rejoin{round}");
        // Each actor comes from its own address: no guest-login limit in the way.
        let mut a = sim.actor(&name).await.connect().await.unwrap();
        a.join_and_login("botchan", &name, None).await.unwrap();
        let change = a.expect("changeMedia", WAIT).await.unwrap();
        assert_eq!(
            change["currentTime"].as_f64(),
            Some(0.0),
            "round {round}: {change}"
        );
        assert_eq!(change["paused"], json!(false), "round {round}: {change}");
        a.leave().await.unwrap();
        sim.advance_playback_in("botchan", 30_000);
    }
    // No clock, no mediaUpdate for a live media once it plays.
    let updates = first.received_named("mediaUpdate");
    assert_eq!(
        updates,
        vec![json!({"currentTime": 0, "paused": false})],
        "only the end of the lead-in"
    );

    // A recorded media moves on: a later join gets its position.
    let sim = playing(MediaSpec::yt("dQw4w9WgXcQ", "Song", 213)).await;
    sim.advance_playback_in("botchan", 63_000);
    let mut a = sim.actor("late").await.connect().await.unwrap();
    a.join_and_login("botchan", "late", None).await.unwrap();
    let change = a.expect("changeMedia", WAIT).await.unwrap();
    assert_eq!(change["currentTime"].as_f64(), Some(60.0), "{change}");
}
