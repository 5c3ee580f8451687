//! The outbound governor against the simulator's real flood limits: 100 lines at once
//! all delivered, without a `cooldown`, in the minimum time the server's limiter allows;
//! the same under channel antiflood; long messages split; kick-worthy frames refused;
//! the server's refusals reported to the plugin that asked.

use std::time::{Duration, Instant};

use daz_cytube_proto::{
    events::unescape_chat,
    flood::{FloodParams, MAX_CHAT_LEN},
};
use daz_cytube_sim::{Account, Actor, ChannelConfig, ProcessingLag, SimConfig, SimHandle};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{Rig, T, json, room_table};
use daz_testkit::wait;

/// A host logged in as `testbot` (rank 1) on `channel`, and a watcher in the channel.
async fn rig_with(channel: ChannelConfig, sections: &str) -> (Rig, Actor) {
    let rig = Rig::logged_in(
        SimConfig {
            channels: vec![channel],
            accounts: vec![Account::new("chanboss", "boss")],
            ..SimConfig::default()
        },
        sections,
    )
    .await;
    let watcher = rig.user("botchan", "watcher", None).await;
    (rig, watcher)
}

/// The bot's chat lines the watcher got, in order.
fn bot_lines(watcher: &Actor) -> Vec<String> {
    watcher
        .received_named("chatMsg")
        .iter()
        .filter(|v| v["username"] == "testbot")
        .map(|v| v["msg"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_lines(watcher: &Actor, n: usize) -> Vec<String> {
    watcher
        .wait_for(Duration::from_secs(60), |frames| {
            frames
                .iter()
                .filter(|(name, v)| name == "chatMsg" && v["username"] == "testbot")
                .count()
                >= n
        })
        .await
        .unwrap();
    bot_lines(watcher)
}

fn cooldowns_sent_to_bot(sim: &SimHandle) -> usize {
    sim.frames_sent_to("testbot")
        .iter()
        .filter(|(name, _)| name == "cooldown")
        .count()
}

/// Minimum time for `n` messages sent at once through a limiter with `p`.
fn minimum(p: FloodParams, n: u32) -> Duration {
    p.interval().unwrap() * n.saturating_sub(p.burst)
}

const FAST: &str = "[rooms.outbound]\nmargin_ms = 8\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_lines_arrive_without_cooldown_in_the_minimum_time() {
    let (rig, watcher) = rig_with(ChannelConfig::registered("botchan"), FAST).await;
    let start = Instant::now();
    for i in 0..100 {
        rig.request(
            "flooder",
            "main",
            "chatMsg",
            serde_json::json!({"msg": format!("line {i}"), "meta": {}}),
        );
    }
    let lines = wait_lines(&watcher, 100).await;
    let took = start.elapsed();
    let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "all delivered, in order");
    assert_eq!(
        cooldowns_sent_to_bot(&rig.sim),
        0,
        "the server never dropped one"
    );
    // 20 at once, then one per 100 ms: the 100th 8 s later, the least the server allows.
    let min = minimum(FloodParams::CHAT, 100);
    assert_eq!(min, Duration::from_millis(8000));
    assert!(took >= min, "{took:?}");
    // How close to the minimum it comes is the bench's business (benches/governor.rs).
    let metrics = rig.host.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"daz_cytube_outbound_sent_total{plugin="flooder",room="main"} 100"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"daz_cytube_outbound_delayed_total{plugin="flooder",room="main"} 80"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_antiflood_is_respected_below_rank_two() {
    let mut chan = ChannelConfig::registered("botchan");
    chan.opts = serde_json::json!({
        "chat_antiflood": true,
        "chat_antiflood_params": {"burst": 4, "sustained": 2, "cooldown": 2}
    });
    let (rig, watcher) = rig_with(chan, FAST).await;
    let room = rig.room("main");
    wait(T, "channel options", || {
        room.state
            .read()
            .options
            .as_ref()
            .is_some_and(|o| o.chat_antiflood)
    })
    .await;
    let start = Instant::now();
    for i in 0..10 {
        rig.request(
            "af",
            "main",
            "chatMsg",
            serde_json::json!({"msg": format!("af {i}")}),
        );
    }
    let lines = wait_lines(&watcher, 10).await;
    let took = start.elapsed();
    assert_eq!(lines.len(), 10);
    assert_eq!(cooldowns_sent_to_bot(&rig.sim), 0);
    // Burst 4, then 2 per second: 3 s at least.
    let p = FloodParams {
        burst: 4,
        sustained: 2.0,
        reset_after: Duration::from_secs(2),
    };
    let min = minimum(p, 10);
    assert_eq!(min, Duration::from_secs(3));
    assert!(took >= min, "{took:?} vs {min:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_messages_are_split_so_nothing_is_truncated() {
    let (rig, watcher) = rig_with(ChannelConfig::registered("botchan"), FAST).await;
    let words: Vec<String> = (0..150).map(|i| format!("w{i}<&>\"q\"")).collect();
    let text = words.join(" ");
    assert!(text.len() > 3 * MAX_CHAT_LEN);
    rig.request(
        "splitter",
        "main",
        "chatMsg",
        serde_json::json!({"msg": text}),
    );
    // Parts arrive until every word is there.
    watcher
        .wait_for(T, |frames| {
            frames
                .iter()
                .filter(|(n, v)| n == "chatMsg" && v["username"] == "testbot")
                .any(|(_, v)| v["msg"].as_str().is_some_and(|m| m.contains("w149")))
        })
        .await
        .unwrap();
    let parts = bot_lines(&watcher);
    assert!(parts.len() >= 4, "{}", parts.len());
    for p in &parts {
        // The server's rule: 320 units of RAW text (the echo is longer, escaped).
        assert!(
            unescape_chat(p).encode_utf16().count() <= MAX_CHAT_LEN,
            "{p}"
        );
    }
    let back: Vec<String> = parts.iter().map(|p| unescape_chat(p)).collect();
    assert_eq!(
        back.join(" "),
        text,
        "the parts add up to the text, nothing cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_worthy_frames_are_refused_and_the_bot_stays() {
    let (rig, _watcher) = rig_with(ChannelConfig::registered("botchan"), FAST).await;
    let plugin = rig.probe("admin-plugin", &[]);
    rig.request(
        "admin-plugin",
        "main",
        "setMotd",
        serde_json::json!({"motd": "pwned"}),
    );
    rig.request(
        "admin-plugin",
        "main",
        "assignLeader",
        serde_json::json!({"name": "testbot"}),
    );
    for event in ["setMotd", "assignLeader"] {
        let env = plugin.wait_subject("cytube.out.main.failed").await;
        let f = json(&env);
        assert_eq!(f["code"], "kick_worthy");
        assert_eq!(f["original"]["event"], event);
        assert!(f["reason"].as_str().unwrap().contains("rank is 1"), "{f}");
        assert_eq!(env.correlation_id.as_deref(), f["original"]["id"].as_str());
    }
    // Nothing was sent: the bot was not kicked, the MOTD is unchanged.
    rig.request(
        "admin-plugin",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "still here"}),
    );
    rig.sim
        .wait_for_frame("watcher", "chatMsg", 0, T)
        .await
        .unwrap();
    assert_eq!(rig.room("main").conn_state(), ConnState::LoggedIn);
    assert_eq!(rig.room("main").status.lock().connects, 1);
    assert_ne!(rig.sim.channel("botchan").unwrap().motd, "pwned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusals_reach_the_plugin_that_asked_and_every_watcher_once() {
    let (rig, _watcher) = rig_with(
        ChannelConfig::registered("botchan").rank("chanboss", 5.0),
        "[rooms.outbound]\nmargin_ms = 8\non_muted = \"fail\"\n",
    )
    .await;
    let asker = rig.probe("asker", &[]);
    let bystander = rig.probe("bystander", &["cytube.out.main.failed"]);
    // A PM to someone who is not there.
    rig.request(
        "asker",
        "main",
        "pm",
        serde_json::json!({"to": "nobody", "msg": "hello?"}),
    );
    let env = asker.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "server_error");
    assert_eq!(f["original"]["payload"]["to"], "nobody");
    // Muted by a moderator: chat is refused with noflood.
    let boss = rig.user("botchan", "chanboss", Some("boss")).await;
    boss.chat("/mute testbot").unwrap();
    let room = rig.room("main");
    wait(T, "the bot muted", || {
        room.state
            .read()
            .user("testbot")
            .is_some_and(|u| u.meta.muted)
    })
    .await;
    rig.request(
        "asker",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "can you hear me"}),
    );
    let env = asker.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "muted");
    assert_eq!(f["original"]["payload"]["msg"], "can you hear me");
    // Known muted (its own setUserMeta): failed at once, never sent to earn noflood.
    assert!(f["reason"].as_str().unwrap().contains("muted"), "{f}");
    // Published: the other subscriber of the subject saw both reports, and the asker
    // (not subscribed) got each exactly once.
    let seen: Vec<serde_json::Value> = bystander.drain().iter().map(|e| json(e)).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["code"], "server_error");
    assert_eq!(seen[1]["code"], "muted");
    assert!(seen.iter().all(|f| f["original"]["source"] == "asker"));
    assert!(asker.drain().is_empty(), "a report reached the asker twice");
    // A plugin subscribed to the failure subject that asks gets its report once too.
    let watcher = rig.probe(
        "watching-asker",
        &["cytube.out.main.failed", "cytube.out.*.failed"],
    );
    rig.request(
        "watching-asker",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "still muted"}),
    );
    let env = watcher.wait_subject("cytube.out.main.failed").await;
    assert_eq!(json(&env)["original"]["source"], "watching-asker");
    let env = bystander.wait_subject("cytube.out.main.failed").await;
    assert_eq!(json(&env)["original"]["source"], "watching-asker");
    assert!(
        watcher.drain().is_empty(),
        "a report reached its asker twice"
    );
    assert!(asker.drain().is_empty());
    let metrics = rig.host.get("/metrics").await.1;
    assert!(
        metrics.contains(
            r#"daz_cytube_outbound_failed_total{code="muted",plugin="asker",room="main"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_account_is_told_it_is_spam_filtered() {
    let mut chan = ChannelConfig::unregistered("botchan");
    chan.opts = serde_json::json!({"new_user_chat_delay": 600});
    let rig = Rig::start(
        SimConfig {
            channels: vec![chan],
            ..SimConfig::default()
        },
        |sim, _| room_table(sim, "main", "botchan", "username = \"newbie\"", FAST),
    )
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    let asker = rig.probe("asker", &[]);
    rig.request(
        "asker",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "first words"}),
    );
    let env = asker.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "spam_filtered");
    assert!(
        f["reason"].as_str().unwrap().contains("NEW_USER_CHAT"),
        "{f}"
    );
}

/// A host and a watcher against a simulator that lags like the real server (30–110 ms
/// behind the socket under a burst).
async fn lagging_rig(channel: ChannelConfig, sections: &str) -> (Rig, Actor) {
    let rig = Rig::logged_in(
        SimConfig {
            channels: vec![channel],
            accounts: vec![Account::new("chanboss", "boss")],
            processing_lag: ProcessingLag::REAL,
            ..SimConfig::default()
        },
        sections,
    )
    .await;
    let watcher = rig.user("botchan", "watcher", None).await;
    (rig, watcher)
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix} {i:03}")).collect()
}

/// Lines received that are not exactly `expected` in order: (reordered or
/// duplicated, lost).
fn compare(got: &[String], expected: &[String]) -> (usize, usize) {
    let dup_or_reordered = got.iter().zip(expected).filter(|(g, e)| g != e).count()
        + got.len().saturating_sub(expected.len());
    let lost = expected.iter().filter(|e| !got.contains(e)).count();
    (dup_or_reordered, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_server_gives_no_cooldown_in_bursts_of_100_and_500() {
    let (rig, watcher) = lagging_rig(ChannelConfig::registered("botchan"), "").await;
    let mut expected = Vec::new();
    for (prefix, n) in [("a", 100), ("b", 500)] {
        let lines = numbered(prefix, n);
        for l in &lines {
            rig.request("flooder", "main", "chatMsg", serde_json::json!({"msg": l}));
        }
        expected.extend(lines);
        let got = watcher
            .wait_for(Duration::from_secs(180), |frames| {
                frames
                    .iter()
                    .filter(|(name, v)| name == "chatMsg" && v["username"] == "testbot")
                    .count()
                    >= expected.len()
            })
            .await;
        assert!(got.is_ok(), "burst of {n} not delivered");
        assert_eq!(cooldowns_sent_to_bot(&rig.sim), 0, "burst of {n}");
    }
    assert_eq!(bot_lines(&watcher), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stall_mid_burst_reorders_duplicates_and_loses_nothing() {
    let (rig, watcher) = lagging_rig(ChannelConfig::registered("botchan"), "").await;
    let lines = numbered("s", 60);
    for l in &lines {
        rig.request("flooder", "main", "chatMsg", serde_json::json!({"msg": l}));
    }
    // The server stops processing for 1.5 s once part of the burst is through.
    wait_lines(&watcher, 25).await;
    rig.sim.pause_processing(Duration::from_millis(1_500));
    let got = wait_lines(&watcher, 60).await;
    // Anything late (a duplicate) would arrive within the answer window.
    let failed = rig.probe("failures", &["cytube.out.main.failed"]);
    rig.request(
        "flooder",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "end"}),
    );
    wait_lines(&watcher, 61).await;
    let got_all = bot_lines(&watcher);
    assert_eq!(got_all.last().map(String::as_str), Some("end"));
    let (bad, lost) = compare(&got, &lines);
    assert_eq!((bad, lost), (0, 0), "{got:?}");
    assert_eq!(got_all.len(), 61, "{got_all:?}");
    assert_eq!(cooldowns_sent_to_bot(&rig.sim), 0);
    assert!(failed.drain().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_722_character_text_of_markup_characters_is_three_lines() {
    let (rig, watcher) = rig_with(ChannelConfig::registered("botchan"), FAST).await;
    let text: String = "&<>\"' ".chars().cycle().take(722).collect();
    rig.request(
        "splitter",
        "main",
        "chatMsg",
        serde_json::json!({"msg": text}),
    );
    let parts = wait_lines(&watcher, 3).await;
    // Nothing more comes: a marker line right after is the fourth.
    rig.request(
        "splitter",
        "main",
        "chatMsg",
        serde_json::json!({"msg": "marker"}),
    );
    let all = wait_lines(&watcher, 4).await;
    assert_eq!(all[3], "marker", "{all:?}");
    let back: Vec<String> = parts.iter().take(3).map(|p| unescape_chat(p)).collect();
    let kept = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(
        kept(&back.concat()),
        kept(&text),
        "nothing cut by the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_dropped_lines_are_refused_and_matching_stays_in_step() {
    let (rig, watcher) = rig_with(ChannelConfig::registered("botchan"), FAST).await;
    let asker = rig.probe("asker", &[]);
    for msg in ["one", "\u{1}\u{2}\u{7}", "two", "three"] {
        rig.request("asker", "main", "chatMsg", serde_json::json!({"msg": msg}));
    }
    let env = asker.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "refused", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("blank"), "{f}");
    let got = wait_lines(&watcher, 3).await;
    assert_eq!(got, ["one", "two", "three"]);
    // No permission to chat: the server would drop it without a word.
    let mut chan = ChannelConfig::registered("botchan");
    chan.permissions = serde_json::json!({"chat": 2});
    let (rig, _watcher) = rig_with(chan, FAST).await;
    let asker = rig.probe("asker", &[]);
    let room = rig.room("main");
    wait(T, "permissions", || {
        room.state.read().permissions.get("chat") == Some(2.0)
    })
    .await;
    rig.request("asker", "main", "chatMsg", serde_json::json!({"msg": "hi"}));
    let env = asker.wait_subject("cytube.out.main.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "no_permission", "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_bot_holds_its_chat_and_delivers_it_once_unmuted() {
    let (rig, watcher) = rig_with(
        ChannelConfig::registered("botchan").rank("chanboss", 5.0),
        FAST,
    )
    .await;
    let failures = rig.probe("failures", &["cytube.out.main.failed"]);
    let boss = rig.user("botchan", "chanboss", Some("boss")).await;
    boss.chat("/mute testbot").unwrap();
    let room = rig.room("main");
    wait(T, "the bot muted", || {
        room.state
            .read()
            .user("testbot")
            .is_some_and(|u| u.meta.muted)
    })
    .await;
    for msg in ["held one", "held two"] {
        rig.request("asker", "main", "chatMsg", serde_json::json!({"msg": msg}));
    }
    // Held: the server gets nothing to refuse (no noflood at all).
    wait(T, "both held", || room.status.lock().outbound_queued == 2).await;
    assert!(
        rig.sim
            .frames_sent_to("testbot")
            .iter()
            .all(|(n, _)| n != "noflood"),
        "a held line was sent"
    );
    boss.chat("/unmute testbot").unwrap();
    let got = wait_lines(&watcher, 2).await;
    assert_eq!(got, ["held one", "held two"]);
    assert!(failures.drain().is_empty(), "nothing failed");
}
