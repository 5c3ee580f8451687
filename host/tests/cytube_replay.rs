//! Replays the captured Cytube sessions (`shared/fixtures/cytube/`) through the host's
//! inbound pipeline — frame parser, room state, bus publishing with priorities and tags —
//! and checks what plugins would see against what the logs say happened.

use std::sync::Arc;

use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority};
use daz_cytube_proto::frame;
use daz_cytube_sim::capture;
use daz_host::{
    cytube::{
        RoomShared,
        inbound::{Inbound, InboundPipeline, Signal},
        metrics::CytubeMetrics,
    },
    metrics::Metrics,
};

/// The wall-clock start of a recording: the first chat line's `time` minus its offset.
fn recording_start_ms(text: &str) -> i64 {
    for f in capture::frames(text) {
        let Some(t) = f.body.find("\"time\":1") else {
            continue;
        };
        let time: i64 = f.body[t + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap();
        return time - f.ms as i64;
    }
    panic!("no chat line with a time in the recording")
}

struct Replayed {
    room: Arc<RoomShared>,
    events: Vec<Arc<Envelope>>,
    signals: Vec<Signal>,
    frames: usize,
}

/// Feeds `who`'s view of `file` through a fresh pipeline as `42[…]` frames.
fn replay(file: &str, who: &str, me: &str) -> Option<Replayed> {
    let text = capture::read(file)?;
    let bus = Bus::new();
    let probe = Mailbox::new("probe", MailboxConfig::new(100_000));
    let id = bus.register("probe", probe.clone()).unwrap();
    bus.subscribe(id, "cytube.in.botchan.>").unwrap();
    let metrics = Metrics::new();
    let room = RoomShared::new("botchan", "botchan", "http://capture", Some(me.into()));
    let mut pipeline = InboundPipeline::new(bus, room.clone(), &CytubeMetrics::new(&metrics));
    pipeline.new_session_at(Some(me), recording_start_ms(&text));
    let mut signals = Vec::new();
    let lines = capture::received(&text, who);
    for l in &lines {
        let (lineno, (name, payload)) = (l.lineno, l.event());
        let f = frame::encode_event_raw(name, payload);
        match pipeline.handle_frame(&f) {
            Ok(Inbound::Event(sig)) => signals.extend(sig),
            Ok(other) => panic!("{file}:{lineno}: not an event: {other:?}"),
            Err(e) => panic!("{file}:{lineno}: {e}"),
        }
    }
    let mut events = Vec::new();
    probe.drain_into(&mut events, usize::MAX);
    // The mailbox serves high priority first; ids give the publishing order.
    events.sort_by_key(|e| e.id);
    // Every frame became exactly one event with its payload untouched.
    assert_eq!(events.len(), lines.len(), "{file} {who}");
    for (l, env) in lines.iter().zip(&events) {
        let (lineno, (name, payload)) = (l.lineno, l.event());
        assert_eq!(
            &*env.subject,
            format!("cytube.in.botchan.{name}"),
            "line {lineno}"
        );
        assert_eq!(
            env.payload_str().unwrap(),
            payload.unwrap_or("null"),
            "line {lineno}"
        );
        assert_eq!(env.room.as_deref(), Some("botchan"));
        assert_eq!(&*env.source, "cytube:botchan");
        let high = matches!(name, "chatMsg" | "pm" | "login");
        assert_eq!(env.priority == Priority::High, high, "line {lineno} {name}");
    }
    Some(Replayed {
        room,
        events,
        signals,
        frames: lines.len(),
    })
}

fn chat_tags(events: &[Arc<Envelope>]) -> Vec<(String, bool, bool)> {
    events
        .iter()
        .filter(|e| e.subject.ends_with(".chatMsg"))
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            (
                v["msg"].as_str().unwrap_or_default().to_owned(),
                e.has_tag("backlog"),
                e.has_tag("self"),
            )
        })
        .collect()
}

#[test]
fn registered_session_through_the_client_pipeline() {
    let Some(r) = replay("registered-channel-session.log", "bot", "testbot") else {
        return;
    };
    assert!(r.frames > 100, "{} frames", r.frames);
    // The handshake signals arrive in the captured order.
    let joined = r.signals.iter().position(|s| *s == Signal::Joined).unwrap();
    let login = r
        .signals
        .iter()
        .position(|s| matches!(s, Signal::Login(l) if l.success))
        .unwrap();
    assert!(
        joined < login,
        "the account login finished after the join burst"
    );
    assert!(r.signals.iter().any(|s| matches!(s, Signal::SelfChat(_))));
    assert!(r.signals.iter().any(|s| matches!(s, Signal::SelfPm(_))));
    // 25 lines sent at once: 5 dropped with `cooldown 100`, 4 more under antiflood with
    // `cooldown 1000`; each one reaches the governor as a signal.
    let cooldowns: Vec<u64> = r
        .signals
        .iter()
        .filter_map(|s| match s {
            Signal::Cooldown(ms) => Some(*ms),
            _ => None,
        })
        .collect();
    assert_eq!(
        cooldowns.iter().filter(|ms| **ms == 100).count(),
        5,
        "{cooldowns:?}"
    );
    assert!(
        r.signals
            .iter()
            .any(|s| matches!(s, Signal::SpamFiltered(_)))
    );
    assert!(
        r.signals
            .iter()
            .any(|s| matches!(s, Signal::Kick(k) if k.contains("setMotd")))
    );
    // Nothing in this session was backlog; the bot's own lines are flagged.
    let chats = chat_tags(&r.events);
    assert!(chats.iter().all(|(_, backlog, _)| !backlog), "{chats:?}");
    let own: Vec<&str> = chats.iter().filter(|c| c.2).map(|c| c.0.as_str()).collect();
    assert!(own.contains(&"hello from testbot"), "{own:?}");
    assert!(!chats.iter().any(|c| c.0 == "waves" && c.2));
    let pm_self: Vec<bool> = r
        .events
        .iter()
        .filter(|e| e.subject.ends_with(".pm"))
        .map(|e| e.has_tag("self"))
        .collect();
    assert_eq!(pm_self, [false, true], "received, then our own reply");

    // The room state plugins and the API read.
    let st = r.room.state.read();
    assert_eq!(st.me.name.as_deref(), Some("testbot"));
    assert_eq!(st.me.rank, 1.0);
    assert_eq!(st.playlist_uids(), [0]);
    assert_eq!(st.current_uid, Some(0));
    assert_eq!(st.motd, "Welcome <b>bots</b>! ");
    assert!(st.playlist_locked);
    drop(st);
    let json: serde_json::Value = serde_json::from_str(&r.room.to_json()).unwrap();
    assert_eq!(
        json["state"]["playlist"][0]["media"]["id"],
        "cytube_test_stream_a"
    );
    assert_eq!(json["state"]["users"][0]["name"], "testbot");
}

#[test]
fn a_rejoin_burst_is_backlog_even_from_the_bot_itself() {
    // dup2 logs in as testbot while the old testbot socket is still in the channel:
    // its join burst replays testbot's earlier lines.
    let Some(r) = replay("guest-errors-throttle-session.log", "dup2", "testbot") else {
        return;
    };
    let chats = chat_tags(&r.events);
    let burst: Vec<&(String, bool, bool)> = chats.iter().take(15).collect();
    assert_eq!(burst.len(), 15);
    assert!(
        burst.iter().all(|(_, backlog, me)| *backlog && *me),
        "{burst:?}"
    );
    assert_eq!(burst[0].0, "flood 10");
    assert_eq!(burst[14].0, "back");
    // After the burst, live lines are not backlog.
    assert!(
        chats.iter().skip(15).all(|(_, backlog, _)| !backlog),
        "{chats:?}"
    );
}

#[test]
fn guest_views_replay_with_their_login_outcomes() {
    let Some(g1) = replay("guest-errors-throttle-session.log", "g1", "guestbot") else {
        return;
    };
    let st = g1.room.state.read();
    assert!(st.me.logged_in && st.me.guest);
    assert!(st.unregistered);
    drop(st);
    let g2 = replay("guest-errors-throttle-session.log", "g2", "guestbot").unwrap();
    assert!(g2.signals.iter().any(|s| matches!(
        s,
        Signal::Login(l) if !l.success
            && l.error.as_deref() == Some("Guest logins are restricted to one per IP address per 60 seconds.")
    )));
    let pw = replay("guest-errors-throttle-session.log", "pwguest", "pwguest").unwrap();
    assert!(pw.signals.contains(&Signal::NeedPassword(false)));
    assert!(pw.signals.contains(&Signal::PasswordAccepted));
    assert!(pw.signals.contains(&Signal::Kick("bye bye".into())));
    let dup1 = replay("guest-errors-throttle-session.log", "dup1", "testbot").unwrap();
    assert!(
        dup1.signals
            .contains(&Signal::Kick("Duplicate login".into()))
    );
}

#[test]
fn raw_engineio_frames_parse_as_the_client_sees_them() {
    let Some(text) = capture::read("raw-engineio-frames.log") else {
        return;
    };
    let bus = Bus::new();
    let metrics = Metrics::new();
    let room = RoomShared::new(
        "rawchan",
        "rawchan",
        "http://capture",
        Some("rawguest".into()),
    );
    let mut p = InboundPipeline::new(bus, room.clone(), &CytubeMetrics::new(&metrics));
    p.new_session_at(Some("rawguest"), recording_start_ms(&text));
    let mut kinds = Vec::new();
    for f in capture::frames(&text) {
        if f.dir != capture::Dir::In || f.is_truncated() {
            continue; // sent, or cut by the recorder
        }
        let line = format!("line {}: {}", f.lineno, f.body);
        match p
            .handle_frame(&f.body)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
        {
            Inbound::Open(info) => {
                assert_eq!(
                    (info.ping_interval_ms, info.ping_timeout_ms),
                    (25_000, 120_000)
                );
                kinds.push("open");
            }
            Inbound::ConnectAck => kinds.push("ack"),
            Inbound::Ping(None) => kinds.push("ping"),
            Inbound::Event(_) => kinds.push("event"),
            other => panic!("{line}: {other:?}"),
        }
    }
    assert_eq!(&kinds[..2], ["open", "ack"]);
    assert_eq!(kinds.last(), Some(&"ping"));
    assert!(
        kinds.iter().filter(|k| **k == "event").count() >= 12,
        "{kinds:?}"
    );
    let st = room.state.read();
    assert!(st.me.logged_in && st.me.guest);
    assert!(st.unregistered);
    assert_eq!(
        p.published() as usize,
        kinds.iter().filter(|k| **k == "event").count()
    );
}
