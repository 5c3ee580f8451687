//! Polls as the real server runs them: `newPoll` below `pollctl` is ignored without a
//! word, a timeout outside 1..86400 gets `errorMsg`, votes send `updatePoll`, a timeout
//! closes the poll by itself with a bare `closePoll` (no final `updatePoll`), and a new
//! poll closes the open one first. The polls plugin relies on each of these.

mod common;

use common::*;
use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use serde_json::json;

fn config() -> SimConfig {
    SimConfig {
        accounts: vec![
            Account::new("chanboss", "chanboss-pass-123"),
            Account::new("otheruser", "otheruser-pass-123"),
        ],
        channels: vec![ChannelConfig::registered("botchan").rank("chanboss", 5.0)],
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn a_timeout_closes_the_poll_by_itself_and_votes_update_it() {
    let sim = start(config()).await;
    let mut boss = sim
        .actor("boss")
        .await
        .timeout(WAIT)
        .connect()
        .await
        .unwrap();
    boss.join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    let mut user = sim
        .actor("user")
        .await
        .timeout(WAIT)
        .connect()
        .await
        .unwrap();
    user.join_and_login("botchan", "otheruser", Some("otheruser-pass-123"))
        .await
        .unwrap();

    // Rank 1 is below pollctl (1.5): ignored without a word. The chat echo after it
    // proves the server got that far.
    user.emit(
        "newPoll",
        Some(json!({"title": "mine?", "opts": ["a", "b"], "obscured": false})),
    )
    .unwrap();
    user.chat("after the poll").unwrap();
    user.expect_where("chatMsg", WAIT, |m| m["msg"] == "after the poll")
        .await
        .unwrap();
    assert!(user.received_named("newPoll").is_empty());
    assert!(user.received_named("errorMsg").is_empty());
    assert!(sim.channel("botchan").unwrap().poll.is_none());

    boss.emit(
        "newPoll",
        Some(json!({"title": "t", "opts": ["a", "b"], "obscured": false, "timeout": 0})),
    )
    .unwrap();
    let err = boss.expect("errorMsg", WAIT).await.unwrap();
    assert_eq!(
        err["msg"],
        "Poll timeout must be between 1 and 86400 seconds"
    );

    boss.emit(
        "newPoll",
        Some(
            json!({"title": "<b>Tea?</b>", "opts": ["yes", "no"], "obscured": false, "timeout": 1}),
        ),
    )
    .unwrap();
    let opened = user.expect("newPoll", WAIT).await.unwrap();
    assert_eq!(opened["title"], "&lt;b&gt;Tea?&lt;/b&gt;");
    assert_eq!(opened["initiator"], "chanboss");
    assert_eq!(opened["counts"], json!([0, 0]));
    user.emit("vote", Some(json!({"option": 1}))).unwrap();
    let updated = boss.expect("updatePoll", WAIT).await.unwrap();
    assert_eq!(updated["counts"], json!([0, 1]));
    let mark = user.mark();
    user.expect("closePoll", WAIT).await.unwrap();
    assert!(sim.channel("botchan").unwrap().poll.is_none());
    let since: Vec<String> = user
        .received_since(mark)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with("Poll"))
        .collect();
    assert_eq!(since, ["closePoll"], "no final updatePoll comes with it");
}

#[tokio::test]
async fn a_new_poll_closes_the_open_one_first() {
    let sim = start(config()).await;
    let mut boss = sim
        .actor("boss")
        .await
        .timeout(WAIT)
        .connect()
        .await
        .unwrap();
    boss.join_and_login("botchan", "chanboss", Some("chanboss-pass-123"))
        .await
        .unwrap();
    for title in ["first", "second"] {
        boss.emit(
            "newPoll",
            Some(json!({"title": title, "opts": ["a", "b"], "obscured": false})),
        )
        .unwrap();
    }
    boss.expect_where("newPoll", WAIT, |p| p["title"] == "second")
        .await
        .unwrap();
    let polls: Vec<String> = boss
        .received()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with("Poll"))
        .collect();
    assert_eq!(polls, ["newPoll", "closePoll", "newPoll"]);
    assert_eq!(
        sim.channel("botchan").unwrap().poll.unwrap()["title"],
        "second"
    );
}
