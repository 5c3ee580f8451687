//! End-to-end basics over real websockets: handshake, join/login, chat, PM,
//! socketconfig, anonymous sockets.

mod common;

use std::time::Duration;

use common::*;
use daz_cytube_sim::{ActorError, SimConfig};
use serde_json::json;

#[tokio::test]
async fn handshake_announces_configured_heartbeats() {
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(1500),
        ping_timeout: Duration::from_millis(700),
        ..SimConfig::default()
    })
    .await;
    let actor = sim.actor("a").await.connect().await.unwrap();
    let open = actor.open_info().unwrap();
    assert_eq!(open.ping_interval_ms, 1500);
    assert_eq!(open.ping_timeout_ms, 700);
    assert_eq!(open.max_payload, 1_048_576);
    assert!(open.upgrades.is_empty());
    assert_eq!(open.sid.len(), 20);
    assert_eq!(actor.sid().unwrap().len(), 20);
    let mut actor = actor;
    assert_eq!(actor.expect("rank", WAIT).await.unwrap(), json!(-1));
}

#[tokio::test]
async fn guest_chat_is_echoed_to_sender_and_others() {
    let sim = start(capture_config()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    let mut b = sim.actor("b").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    b.join_and_login("room", "bob", None).await.unwrap();
    a.chat("hi <b>bob</b> & see https://x.test/a").unwrap();
    let got = b.expect("chatMsg", WAIT).await.unwrap();
    assert_eq!(got["username"], "alice");
    assert_eq!(
        got["msg"],
        "hi &lt;b&gt;bob&lt;/b&gt; &amp; see <a href=\"https://x.test/a\" target=\"_blank\" rel=\"noopener noreferrer\">https://x.test/a</a>"
    );
    let own = a.expect("chatMsg", WAIT).await.unwrap();
    assert_eq!(own, got);
    let snap = sim.channel("room").unwrap();
    assert_eq!(snap.users.len(), 2);
    assert!(!snap.registered);
    assert_eq!(snap.backlog.len(), 1);
}

#[tokio::test]
async fn anonymous_sockets_count_but_cannot_chat_or_pm() {
    let sim = start(capture_config()).await;
    let mut g = sim.actor("g").await.connect().await.unwrap();
    g.join_and_login("room", "guest1", None).await.unwrap();
    let mut anon = sim.actor("anon").await.connect().await.unwrap();
    anon.join("room").await.unwrap();
    anon.chat("hello?").unwrap();
    anon.pm("guest1", "psst").unwrap();
    let err = anon.expect("errorMsg", WAIT).await.unwrap();
    assert_eq!(err["msg"], "You must be signed in to send PMs");
    // The chat was dropped: nobody saw it, and it is not in the backlog.
    let snap = sim.channel("room").unwrap();
    assert_eq!(snap.anonymous, 1);
    assert_eq!(snap.usercount(), 2);
    assert!(snap.backlog.is_empty());
    assert!(g.received_named("chatMsg").is_empty());
}

#[tokio::test]
async fn pm_reaches_both_sides() {
    let sim = start(capture_config()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    let mut b = sim.actor("b").await.connect().await.unwrap();
    a.join_and_login("room", "alice", None).await.unwrap();
    b.join_and_login("room", "bob", None).await.unwrap();
    a.pm("Bob", ">hey").unwrap();
    let to_b = b.expect("pm", WAIT).await.unwrap();
    let to_a = a.expect("pm", WAIT).await.unwrap();
    assert_eq!(to_a, to_b);
    assert_eq!(to_b["to"], "bob");
    assert_eq!(to_b["msg"], "&gt;hey");
    assert_eq!(to_b["meta"], json!({"addClass": "greentext"}));
    a.pm("alice", "me").unwrap();
    assert_eq!(
        a.expect("errorMsg", WAIT).await.unwrap()["msg"],
        "You can't PM yourself!"
    );
    a.pm("nobodyhere", "x").unwrap();
    assert_eq!(
        a.expect("errorMsg", WAIT).await.unwrap()["msg"],
        "PM failed: nobodyhere isn't connected to this channel."
    );
}

#[tokio::test]
async fn socketconfig_serves_this_server_and_404s_bad_names() {
    let sim = start(SimConfig::default()).await;
    let (status, body) = http_get(sim.addr(), "/socketconfig/botchan.json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"servers": [{"url": sim.base_url(), "secure": false}]})
    );
    let (status, body) = http_get(sim.addr(), "/socketconfig/bad$chan.json").await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"error": "Channel \"bad$chan\" does not exist."}));
}

#[tokio::test]
async fn invalid_channel_name_is_an_error_then_a_kick() {
    let sim = start(SimConfig::default()).await;
    let mut a = sim.actor("bad").await.connect().await.unwrap();
    let err = a.join("bad$chan").await.unwrap_err();
    assert!(
        matches!(err, ActorError::Kicked { ref reason, .. } if reason == "Invalid channel name"),
        "{err}"
    );
    assert_eq!(names(&a.received()), ["rank", "errorMsg", "kick"]);
    assert_eq!(
        a.wait_closed(WAIT).await.unwrap(),
        daz_cytube_sim::Closed::ServerDisconnect
    );
}

#[tokio::test]
async fn only_the_first_join_counts() {
    let sim = start(SimConfig::default()).await;
    let mut a = sim.actor("a").await.connect().await.unwrap();
    a.join_and_login("first", "alice", None).await.unwrap();
    a.emit("joinChannel", Some(json!({"name": "second"})))
        .unwrap();
    a.chat("still here").unwrap();
    a.expect("chatMsg", WAIT).await.unwrap();
    assert_eq!(sim.channels(), ["first"]);
}
