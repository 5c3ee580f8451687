//! The Cytube client against the simulator: every join/login variant and every failure
//! of CYTUBE.md becomes the right state, a typed error kind, a `host.room.*` event and an
//! operator-readable message; credentials never show.

use daz_cytube_sim::{Account, ChannelConfig, SimConfig};
use daz_host::cytube::{ConnState, RoomError, client};
use daz_testkit::cytube::{Rig, T, account_room, bot_room, json, password_file, room_table};
use daz_testkit::wait;

fn sim_with(channels: Vec<ChannelConfig>, accounts: Vec<Account>) -> SimConfig {
    SimConfig {
        channels,
        accounts,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_login_reaches_logged_in_and_is_listed() {
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan")],
            vec![Account::new("testbot", "hunter2-secret")],
        ),
        |sim, dir| bot_room(sim, dir, "hunter2-secret", ""),
    )
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    // Each transition was counted once (and published; the reconnect tests watch the
    // events themselves).
    let metrics = rig.host.get("/metrics").await.1;
    for state in ["connecting", "connected", "joined", "logged_in"] {
        let line =
            format!("daz_cytube_state_transitions_total{{room=\"main\",state=\"{state}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let room = rig.room("main");
    {
        let st = room.state.read();
        assert!(st.me.logged_in && !st.me.guest);
        assert_eq!(st.me.name.as_deref(), Some("testbot"));
        assert_eq!(st.me.rank, 1.0);
        assert!(st.user("testbot").is_some());
    }
    let snap = rig.sim.channel("botchan").expect("channel");
    assert!(snap.user("testbot").is_some());

    let (code, list) = rig.get_json("/api/rooms").await;
    assert_eq!(code, 200);
    assert_eq!(list["rooms"][0]["room"], "main");
    assert_eq!(list["rooms"][0]["state"], "logged_in");
    assert_eq!(list["rooms"][0]["me"], "testbot");
    let (code, one) = rig.get_json("/api/rooms/main").await;
    assert_eq!(code, 200);
    assert_eq!(one["state"]["me"]["name"], "testbot");
    let (code, _) = rig.get_json("/api/rooms/nope").await;
    assert_eq!(code, 404);
    // The password is nowhere: not in the API, not in any lifecycle event.
    let (_, body) = rig.host.get("/api/rooms/main").await;
    assert!(!body.contains("hunter2"));
    let metrics = rig.host.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"daz_cytube_connection_state{room="main"} 4"#),
        "{metrics}"
    );
    assert!(!metrics.contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_login_on_an_unregistered_channel() {
    let rig = Rig::start(SimConfig::default(), |sim, _| {
        room_table(sim, "g", "guestchan", "username = \"guestbot\"", "")
    })
    .await;
    rig.wait_state("g", ConnState::LoggedIn).await;
    let room = rig.room("g");
    let st = room.state.read();
    assert!(st.me.logged_in && st.me.guest);
    assert_eq!(st.me.rank, 0.0);
    assert!(st.unregistered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_reads_but_cannot_chat() {
    let rig = Rig::start(
        sim_with(vec![ChannelConfig::registered("quiet")], vec![]),
        |sim, _| room_table(sim, "q", "quiet", "", ""),
    )
    .await;
    rig.wait_state("q", ConnState::Joined).await;
    let sim = rig.sim.clone();
    wait(T, "the anonymous socket in the channel", || {
        sim.channel("quiet").is_some_and(|c| c.anonymous == 1)
    })
    .await;
    let failed = rig.probe("anon-plugin", &[]);
    rig.request(
        "anon-plugin",
        "q",
        "chatMsg",
        serde_json::json!({"msg": "hi"}),
    );
    let env = failed.wait_subject("cytube.out.q.failed").await;
    let f = json(&env);
    assert_eq!(f["code"], "anonymous");
    assert_eq!(f["original"]["payload"]["msg"], "hi");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("configure a username")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_password_prompt_is_answered() {
    let mut chan = ChannelConfig::registered("locked");
    chan.password = Some("sesame".into());
    let rig = Rig::start(sim_with(vec![chan], vec![]), |sim, dir| {
        let ok = room_table(
            sim,
            "ok",
            "locked",
            &format!(
                "username = \"guest_ok\"\nchannel_password_file = {}",
                password_file(dir, "cpw", "sesame")
            ),
            "",
        );
        let wrong = room_table(
            sim,
            "wrong",
            "locked",
            &format!(
                "channel_password_file = {}",
                password_file(dir, "cpw2", "not-sesame")
            ),
            "",
        );
        let none = room_table(sim, "none", "locked", "", "");
        format!("{ok}{wrong}{none}")
    })
    .await;
    rig.wait_state("ok", ConnState::LoggedIn).await;
    rig.wait_state("wrong", ConnState::Failed).await;
    rig.wait_state("none", ConnState::Failed).await;
    let wrong = rig.room("wrong").status.lock().clone();
    let err = wrong.last_error.expect("an error");
    assert_eq!(err.kind, "wrong_channel_password");
    assert!(
        err.message.contains("channel_password_file"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("not-sesame"));
    let none = rig.room("none").status.lock().clone();
    assert_eq!(
        none.last_error.expect("an error").kind,
        "channel_password_required"
    );
    // Failed rooms stay down: one connect each.
    assert_eq!(wrong.connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_account_password_fails_without_retrying_or_leaking() {
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan")],
            vec![Account::new("testbot", "right-one")],
        ),
        |sim, dir| bot_room(sim, dir, "wrong-one-xyz", ""),
    )
    .await;
    rig.wait_state("main", ConnState::Failed).await;
    let err = rig.room("main").status.lock().last_error.clone().unwrap();
    assert_eq!(err.kind, "login_wrong_password");
    assert!(
        err.message
            .contains("Invalid username/password combination"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("password_env / password_file"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("wrong-one-xyz"));
    let (_, body) = rig.host.get("/api/rooms/main").await;
    assert!(!body.contains("wrong-one-xyz"));
    assert_eq!(rig.room("main").status.lock().connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_guest_from_one_ip_waits_out_the_guest_limit() {
    let rig = Rig::start(SimConfig::default(), |sim, _| {
        let a = room_table(sim, "first", "open", "username = \"guest_a\"", "");
        let b = room_table(sim, "second", "open", "username = \"guest_b\"", "");
        format!("{a}{b}")
    })
    .await;
    // Both rooms connect from 127.0.0.1: the second guest login within 60 s is refused,
    // and the retry is scheduled after the server's window.
    let (a, b) = (rig.room("first"), rig.room("second"));
    wait(T, "a guest-limit refusal", || {
        [&a, &b].iter().any(|r| {
            r.status
                .lock()
                .last_error
                .as_ref()
                .is_some_and(|e| e.kind == "login_guest_limit")
        })
    })
    .await;
    let refused = if a.status.lock().last_error.is_some() {
        &a
    } else {
        &b
    };
    let status = refused.status.lock().clone();
    assert_eq!(status.state, ConnState::Disconnected);
    let retry_in = status.retry_at_ms.unwrap() - daz_host::now_ms();
    assert!(retry_in >= 59_000, "{retry_in}");
    assert!(status.last_error.unwrap().message.contains("60 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_use_is_retried_with_backoff() {
    let sim = daz_cytube_sim::Simulator::start(SimConfig::default())
        .await
        .unwrap();
    let mut taker = sim.actor("taker").await.connect().await.unwrap();
    taker
        .join_and_login("open", "taken_name", None)
        .await
        .unwrap();
    let rig = Rig::on(sim, |sim, _| {
        room_table(sim, "x", "open", "username = \"taken_name\"", "")
    })
    .await;
    let room = rig.room("x");
    wait(T, "repeated name-in-use refusals", || {
        let st = room.status.lock();
        st.connects >= 2
            && st
                .last_error
                .as_ref()
                .is_some_and(|e| e.kind == "login_name_in_use")
    })
    .await;
    assert_ne!(room.conn_state(), ConnState::Failed);
    // Once the name is free, the retry gets in.
    taker.leave().await.unwrap();
    rig.wait_state("x", ConnState::LoggedIn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_login_stops_by_default_and_retries_by_policy() {
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan")],
            vec![Account::new("testbot", "pw1"), Account::new("other", "pw2")],
        ),
        |sim, dir| {
            let pw = password_file(dir, "pw", "pw1");
            room_table(
                sim,
                "stopper",
                "botchan",
                &format!("username = \"testbot\"\npassword_file = {pw}"),
                "",
            )
        },
    )
    .await;
    rig.wait_state("stopper", ConnState::LoggedIn).await;
    let mut intruder = rig.sim.actor("intruder").await.connect().await.unwrap();
    intruder
        .join_and_login("botchan", "testbot", Some("pw1"))
        .await
        .unwrap();
    rig.wait_state("stopper", ConnState::Failed).await;
    let status = rig.room("stopper").status.lock().clone();
    let err = status.last_error.unwrap();
    assert_eq!(err.kind, "duplicate_login");
    assert!(err.message.contains("second bot"), "{}", err.message);
    assert_eq!(status.connects, 1, "no reconnect loop");

    // With `retry`, it comes back — but only after the long policy delay.
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan")],
            vec![Account::new("testbot", "pw1")],
        ),
        |sim, dir| {
            account_room(sim, dir, "retry", "botchan", ("testbot", "pw1"), "[rooms.reconnect]\non_duplicate_login = \"retry\"\npolicy_retry_ms = 700\ninitial_delay_ms = 10\nmax_delay_ms = 20\n")
        },
    )
    .await;
    rig.wait_state("retry", ConnState::LoggedIn).await;
    let life = rig.probe("life", &["host.room.retry.disconnected"]);
    let mut intruder = rig.sim.actor("intruder").await.connect().await.unwrap();
    intruder
        .join_and_login("botchan", "testbot", Some("pw1"))
        .await
        .unwrap();
    let env = life.wait_subject("host.room.retry.disconnected").await;
    assert_eq!(json(&env)["kind"], "duplicate_login");
    assert_eq!(json(&env)["retry_in_ms"], 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_is_not_retried_and_other_kicks_are() {
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan").rank("chanboss", 5.0)],
            vec![
                Account::new("testbot", "pw1"),
                Account::new("chanboss", "boss"),
            ],
        ),
        |sim, dir| bot_room(sim, dir, "pw1", ""),
    )
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    let boss = rig.user("botchan", "chanboss", Some("boss")).await;
    // A plain kick: reconnects.
    let life = rig.probe("life", &["host.room.main.>"]);
    boss.chat("/kick testbot go away").unwrap();
    let env = life.wait_subject("host.room.main.disconnected").await;
    assert_eq!(json(&env)["kind"], "kicked");
    life.wait_subject("host.room.main.logged_in").await;
    // A ban: stays down.
    boss.chat("/kick testbot You're banned!").unwrap();
    let env = life.wait_subject("host.room.main.failed").await;
    assert_eq!(json(&env)["kind"], "banned");
    assert!(json(&env)["error"].as_str().unwrap().contains("moderator"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reports_an_unknown_channel_clearly() {
    let sim = daz_cytube_sim::Simulator::start(SimConfig::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let err = client::discover(&http, &sim.base_url(), "bad$chan")
        .await
        .unwrap_err();
    assert!(matches!(err, RoomError::UnknownChannel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("check `site` and `channel`"), "{msg}");
    let ok = client::discover(&http, &sim.base_url(), "fine")
        .await
        .unwrap();
    assert_eq!(ok.ws_url, sim.ws_url());
    // Nothing listening: a discovery error that says what to check.
    let err = client::discover(&http, "http://127.0.0.1:9", "fine")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is `site` right"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused() {
    use futures_util::{SinkExt, StreamExt};
    // A server that answers the websocket with a 2 MiB frame.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let big = format!("0{{\"sid\":\"{}\"}}", "x".repeat(2 << 20));
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::Text(big.into()))
            .await;
        while ws.next().await.is_some() {}
    });
    let endpoint = client::Endpoint {
        ws_url: format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        secure: false,
    };
    let err = client::open_session(&endpoint, std::time::Duration::from_secs(5))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, RoomError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("oversized"), "{err}");
}

/// Peak resident memory of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A hostile site: `/socketconfig` answers 200 with an endless body (1 MiB chunks, as
/// fast as the client reads), with or without a `Content-Length` that says so.
async fn endless_site(announce: bool) -> String {
    use axum::{body::Body, http::header, response::Response, routing::get};
    let app = axum::Router::new().route(
        "/socketconfig/{file}",
        get(move || async move {
            let chunk = axum::body::Bytes::from(vec![b' '; 1 << 20]);
            let body = Body::from_stream(futures_util::stream::repeat_with(move || {
                Ok::<_, std::io::Error>(chunk.clone())
            }));
            let mut resp = Response::builder().header(header::CONTENT_TYPE, "application/json");
            if announce {
                resp = resp.header(header::CONTENT_LENGTH, u64::MAX / 2);
            }
            resp.body(body).unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_endless_body_is_cut_and_memory_stays_flat() {
    let site = endless_site(false).await;
    let announced = endless_site(true).await;
    let http = reqwest::Client::new();
    let before = peak_rss_kib();
    // Many attempts, as a room reconnecting against the site would make.
    for _ in 0..50 {
        let err = client::discover(&http, &site, "chan").await.unwrap_err();
        assert!(matches!(err, RoomError::Discovery { .. }), "{err:?}");
        assert!(err.to_string().contains("larger than"), "{err}");
        let err = client::discover(&http, &announced, "chan")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("announces"), "{err}");
    }
    let after = peak_rss_kib();
    println!(
        "peak RSS before {before} KiB, after 100 hostile discoveries {after} KiB (+{} KiB)",
        after.saturating_sub(before)
    );
    // Unbounded reading grew by gigabytes; the cap keeps each attempt to a few
    // chunks. 64 MiB leaves room for the allocator and the server side of the test.
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "peak RSS grew from {before} to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_that_never_ends_is_timed_out_and_retried() {
    // A site that accepts, answers headers, then dribbles a byte a second forever.
    use axum::{body::Body, routing::get};
    let app = axum::Router::new().route(
        "/socketconfig/{file}",
        get(|| async {
            let body = Body::from_stream(futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b" ")),
                    (),
                ))
            }));
            axum::response::Response::new(body)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let rig = Rig::start(SimConfig::default(), |_sim, _dir| {
        format!(
            "\n[[rooms]]\nname = \"main\"\nsite = \"http://{addr}\"\nchannel = \"chan\"\n[rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 200\nconnect_timeout_ms = 500\n"
        )
    })
    .await;
    let life = rig.probe("life", &["host.room.main.disconnected"]);
    for _ in 0..2 {
        let env = life.wait_subject("host.room.main.disconnected").await;
        let body = json(&env);
        assert_eq!(body["kind"], "timeout", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("socketconfig"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ban_stops_retries_until_a_moderator_unbans() {
    // The server's ban: `/ban` → kick "You're banned!" + disconnect; every rejoin is
    // kicked the same way; unban by requestBanlist → banlist → unban {id, name}.
    let rig = Rig::start(
        sim_with(
            vec![ChannelConfig::registered("botchan").rank("chanboss", 5.0)],
            vec![
                Account::new("testbot", "pw1"),
                Account::new("chanboss", "boss"),
            ],
        ),
        |sim, dir| {
            bot_room(sim, dir, "pw1", "[rooms.reconnect]\ninitial_delay_ms = 50\nmax_delay_ms = 400\nconnect_burst = 1000\nconnect_refill_ms = 10\non_ban = \"retry\"\npolicy_retry_ms = 100\n")
        },
    )
    .await;
    rig.wait_state("main", ConnState::LoggedIn).await;
    let life = rig.probe("life", &["host.room.main.>"]);
    let mut boss = rig.user("botchan", "chanboss", Some("boss")).await;
    boss.chat("/ban testbot spamming").unwrap();
    // The moderator sees the server's whisper line.
    boss.expect_where("chatMsg", T, |v| {
        v["username"] == "[server]" && v["msg"] == "chanboss namebanned testbot"
    })
    .await
    .unwrap();
    let env = life.wait_subject("host.room.main.disconnected").await;
    assert_eq!(json(&env)["kind"], "banned", "{}", json(&env));
    // The retry is kicked again: still banned.
    let env = life
        .wait_for(T, "a second ban kick", |e| {
            &*e.subject == "host.room.main.disconnected"
        })
        .await;
    assert_eq!(json(&env)["kind"], "banned");
    assert_ne!(rig.room("main").conn_state(), ConnState::LoggedIn);
    // Unban the way a moderator's client does.
    boss.emit("requestBanlist", None).unwrap();
    let list = boss.expect("banlist", T).await.unwrap();
    let ban = list
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "testbot"))
        .cloned()
        .expect("the ban is listed");
    boss.emit(
        "unban",
        Some(serde_json::json!({"id": ban["id"], "name": "testbot"})),
    )
    .unwrap();
    boss.expect("banlistRemove", T).await.unwrap();
    rig.wait_state("main", ConnState::LoggedIn).await;
}
