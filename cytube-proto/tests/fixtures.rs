//! Every frame of the three captures parses, and every event in them decodes to
//! its typed form.

use daz_cytube_proto::events::{ClientEvent, ServerEvent};
use daz_cytube_proto::frame::{self, EioPacket, SioPacket};
use daz_cytube_sim::capture::{Dir, fixtures_dir, frames, is_truncated, split_event};

const SESSION_LOGS: [&str; 2] = [
    "registered-channel-session.log",
    "guest-errors-throttle-session.log",
];

/// Client frames the capture sent wrong on purpose (the server answered them with
/// `errorMsg`); they must NOT decode.
const DELIBERATELY_BAD_CLIENT_FRAMES: [(&str, &str); 2] = [
    ("chatMsg", r#"{"msg":12345}"#),
    ("login", r#""notanobject""#),
];

#[test]
fn raw_engineio_frames_all_parse() {
    let Some(dir) = fixtures_dir() else { return };
    let text = std::fs::read_to_string(dir.join("raw-engineio-frames.log")).unwrap();
    let lines = frames(&text);
    let (mut parsed, mut truncated, mut events) = (0, 0, 0);
    let (mut opens, mut pings, mut pongs, mut connects) = (0, 0, 0, 0);
    for l in &lines {
        if is_truncated(&l.body) {
            truncated += 1;
            continue;
        }
        let pkt = frame::parse(&l.body)
            .unwrap_or_else(|e| panic!("line {}: {:?}: {e}", l.lineno, l.body));
        parsed += 1;
        match pkt {
            EioPacket::Open(info) => {
                opens += 1;
                assert_eq!(info.ping_interval_ms, 25_000);
                assert_eq!(info.ping_timeout_ms, 120_000);
                assert_eq!(info.max_payload, 1_048_576);
                assert_eq!(
                    frame::encode_open(&info),
                    l.body,
                    "open re-encodes verbatim"
                );
            }
            EioPacket::Ping(None) => pings += 1,
            EioPacket::Pong(None) => pongs += 1,
            EioPacket::Message(SioPacket::Connect(_)) => connects += 1,
            EioPacket::Message(SioPacket::Event { name, payload, ack }) => {
                events += 1;
                assert_eq!(ack, None);
                let known = match l.dir {
                    Dir::In => {
                        let ev = ServerEvent::decode(&name, payload).unwrap_or_else(|e| {
                            panic!("line {}: {e}", l.lineno);
                        });
                        !matches!(ev, ServerEvent::Unknown { .. })
                    }
                    Dir::Out => {
                        let ev = ClientEvent::decode(&name, payload).unwrap_or_else(|e| {
                            panic!("line {}: {e}", l.lineno);
                        });
                        !matches!(ev, ClientEvent::Unknown { .. })
                    }
                };
                assert!(known, "line {}: event {name:?} is not known", l.lineno);
            }
            other => panic!("line {}: unexpected packet {other:?}", l.lineno),
        }
    }
    // The capture has 24 frame lines, two of them cut by the recorder.
    assert_eq!(lines.len(), 24);
    assert_eq!(truncated, 2, "truncated lines");
    assert_eq!(parsed, 22);
    assert_eq!((opens, pings, pongs, connects, events), (1, 1, 1, 2, 17));
}

#[test]
fn session_log_events_all_decode() {
    let Some(dir) = fixtures_dir() else { return };
    for file in SESSION_LOGS {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let lines = frames(&text);
        let (mut decoded, mut truncated, mut bad_on_purpose) = (0, 0, 0);
        for l in &lines {
            if is_truncated(&l.body) {
                truncated += 1;
                continue;
            }
            let (name, payload) = split_event(&l.body);
            // Go through the real frame codec, as the client would.
            let wire = frame::encode_event_raw(name, payload);
            let pkt = frame::parse(&wire)
                .unwrap_or_else(|e| panic!("{file}:{}: frame {wire:?}: {e}", l.lineno));
            let EioPacket::Message(SioPacket::Event { name, payload, .. }) = pkt else {
                panic!("{file}:{}: not an event", l.lineno);
            };
            match l.dir {
                Dir::In => match ServerEvent::decode(&name, payload) {
                    Ok(ServerEvent::Unknown { name, .. }) => {
                        panic!("{file}:{}: server event {name:?} is not known", l.lineno)
                    }
                    Ok(ev) => {
                        decoded += 1;
                        // Re-encoding gives a frame that decodes to the same event name.
                        let again = ev.to_frame().unwrap();
                        assert!(frame::parse(&again).is_ok(), "{again}");
                    }
                    Err(e) => panic!("{file}:{}: {e}", l.lineno),
                },
                Dir::Out => {
                    let bad = DELIBERATELY_BAD_CLIENT_FRAMES
                        .iter()
                        .any(|(n, p)| *n == name && Some(*p) == payload.map(|p| p.get()));
                    match ClientEvent::decode(&name, payload) {
                        Ok(ClientEvent::Unknown { name, .. }) => {
                            panic!("{file}:{}: client event {name:?} is not known", l.lineno)
                        }
                        Ok(_) if bad => {
                            panic!("{file}:{}: a malformed frame decoded", l.lineno)
                        }
                        Ok(_) => decoded += 1,
                        Err(_) if bad => bad_on_purpose += 1,
                        Err(e) => panic!("{file}:{}: {e}", l.lineno),
                    }
                }
            }
        }
        let expected_truncated = if file.starts_with("registered") { 6 } else { 0 };
        assert_eq!(truncated, expected_truncated, "{file}: truncated lines");
        assert_eq!(
            decoded + truncated + bad_on_purpose,
            lines.len(),
            "{file}: every line is accounted for"
        );
        println!(
            "{file}: {decoded} decoded, {truncated} truncated, {bad_on_purpose} bad on purpose"
        );
    }
}

#[test]
fn chat_html_from_captures_unescapes() {
    use daz_cytube_proto::events::unescape_chat;
    let Some(dir) = fixtures_dir() else { return };
    let text = std::fs::read_to_string(dir.join("registered-channel-session.log")).unwrap();
    let mut seen = Vec::new();
    for l in frames(&text) {
        let (name, Some(payload)) = split_event(&l.body) else {
            continue;
        };
        if l.dir == Dir::In && name == "chatMsg" && l.who.as_deref() == Some("bot") {
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(payload).unwrap();
            if let ServerEvent::ChatMsg(m) = ServerEvent::decode(name, Some(&raw)).unwrap() {
                seen.push(unescape_chat(&m.msg));
            }
        }
    }
    assert!(seen.contains(&"hi bot, see https://example.org/x".to_owned()));
    assert!(seen.contains(&">implying".to_owned()));
}
