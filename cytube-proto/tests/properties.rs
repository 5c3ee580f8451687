//! Property tests: the parser never panics, encoders round-trip, the playlist
//! linked list agrees with a plain vector model, the limiter's waits are exact,
//! and split messages fit and reassemble.

use std::time::{Duration, Instant};

use daz_cytube_proto::events::{
    After, Delete, Media, MoveAfter, MoveVideo, PlaylistItem, Queue, ServerEvent, Uid,
};
use daz_cytube_proto::flood::{FloodParams, RateLimiter, raw_len, split_message};
use daz_cytube_proto::frame::{self, EioPacket, SioPacket};
use daz_cytube_proto::room::RoomState;
use proptest::prelude::*;
use serde_json::Value;

/// Valid frames to mutate (from the captures and the protocol doc).
const SEEDS: &[&str] = &[
    r#"0{"sid":"mtcL1J0glOJTfhueAAAr","upgrades":[],"pingInterval":25000,"pingTimeout":120000,"maxPayload":1048576}"#,
    "40",
    r#"40{"sid":"Vr1QGl9Eh58VveOSAAAs"}"#,
    r#"42["usercount",3]"#,
    r#"42["channelNotRegistered"]"#,
    r#"421["x",{}]"#,
    r#"4312["ok"]"#,
    r#"42["queue",{"item":{"media":{"id":"a","title":"A","seconds":8,"duration":"00:08","type":"tw","meta":{}},"uid":1,"temp":false,"queueby":"x"},"after":0}]"#,
    r#"42["chatMsg",{"username":"a","msg":"&gt;hi","meta":{},"time":1}]"#,
    r#"42["moveVideo",{"from":2,"after":"prepend"}]"#,
    r#"42["userlist",[{"name":"a","rank":1.5,"profile":{"image":"","text":""},"meta":{"afk":false,"muted":false}}]]"#,
    "2",
    "3probe",
    r#"44{"message":"Rate limit exceeded"}"#,
];

/// Feeds whatever `parse` accepted into the decoders and the room state: none
/// of them may panic either.
fn exercise(input: &str) {
    if let Ok(EioPacket::Message(SioPacket::Event { name, payload, .. })) = frame::parse(input) {
        if let Ok(ev) = ServerEvent::decode(&name, payload) {
            let mut room = RoomState::default();
            let _ = room.apply(&ev);
            let _ = serde_json::to_string(&room);
            let _ = ev.to_frame();
        }
        let _ = daz_cytube_proto::events::ClientEvent::decode(&name, payload);
    }
}

fn mutated_seed() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 1..6),
    )
        .prop_map(|(seed, edits)| {
            let mut chars: Vec<char> = seed.chars().collect();
            for (idx, c, op) in edits {
                let len = chars.len();
                match op {
                    0 if len > 0 => {
                        chars.remove(idx.index(len));
                    }
                    1 => chars.insert(idx.index(len + 1), c),
                    _ if len > 0 => chars[idx.index(len)] = c,
                    _ => chars.push(c),
                }
            }
            chars.into_iter().collect()
        })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e15f64..1e15).prop_map(Value::from),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_strings(s in ".*") {
        exercise(&s);
    }

    #[test]
    fn parse_never_panics_on_lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn parse_never_panics_on_prefixed_garbage(
        prefix in prop::sample::select(&["0", "1", "2", "3", "4", "40", "41", "42", "43", "44",
            "45", "46", "421", "4299999999999999999999", "42/", "42/x,", "40/", "43"][..]),
        rest in ".{0,64}",
    ) {
        exercise(&format!("{prefix}{rest}"));
        exercise(&format!("{prefix}[{rest}"));
        exercise(&format!("{prefix}[\"{rest}"));
    }

    #[test]
    fn parse_never_panics_on_mutated_frames(s in mutated_seed()) {
        exercise(&s);
    }

    #[test]
    fn event_encode_parse_round_trip(
        name in ".*",
        payload in prop::option::of(json_value()),
        ack in prop::option::of(any::<u64>()),
    ) {
        let json = payload.as_ref().map(|v| serde_json::to_string(v).unwrap());
        let frame = match ack {
            Some(id) => frame::encode_event_raw_with_ack(&name, json.as_deref(), id),
            None => frame::encode_event_raw(&name, json.as_deref()),
        };
        if ack.is_none() {
            prop_assert_eq!(&frame, &frame::encode_event(&name, payload.as_ref()).unwrap());
        }
        let parsed = frame::parse(&frame);
        if frame.len() > frame::MAX_FRAME_BYTES {
            prop_assert!(parsed.is_err());
            return Ok(());
        }
        let Ok(EioPacket::Message(SioPacket::Event { name: n, payload: p, ack: a })) = parsed else {
            return Err(TestCaseError::fail(format!("{frame:?} did not parse as an event")));
        };
        prop_assert_eq!(n.as_ref(), name.as_str());
        prop_assert_eq!(a, ack);
        // The payload comes back verbatim (compared as text: serde_json's default
        // float parsing is not exact, and verbatim is the stronger claim anyway).
        prop_assert_eq!(p.map(|raw| raw.get()), json.as_deref());
    }

    #[test]
    fn split_parts_fit_and_reassemble(
        text in prop::collection::vec(prop_oneof![
            4 => "[a-z]{1,12}",
            2 => "[ \t\n]{1,3}",
            1 => "[<>&\"'()]{1,4}",
            1 => "[é😀\u{1}\u{3000}]{1,3}",
            1 => "&(amp|lt|#39|#x1F600);",
            1 => "[a-z]{30,90}",
        ], 0..60).prop_map(|v| v.concat()),
        max in 6usize..120,
    ) {
        let parts = split_message(&text, max);
        let mut pos = 0;
        for part in &parts {
            prop_assert!(!part.is_empty());
            prop_assert_eq!(part.trim(), part.as_str(), "part has edge whitespace");
            prop_assert!(raw_len(part) <= max, "{:?} is {} raw units > {}", part, raw_len(part), max);
            // Between parts only whitespace was dropped.
            let rest = &text[pos..];
            let skipped = rest.len() - rest.trim_start().len();
            prop_assert!(rest[skipped..].starts_with(part.as_str()), "{:?} not next in {:?}", part, rest);
            pos += skipped + part.len();
        }
        prop_assert!(text[pos..].trim().is_empty(), "lost tail {:?}", &text[pos..]);
    }

    #[test]
    fn limiter_waits_are_exact(
        burst in 1u32..25,
        sustained in 0.5f64..20.0,
        reset_ms in 0u64..5000,
        gaps in prop::collection::vec(0u64..400, 1..80),
    ) {
        let p = FloodParams { burst, sustained, reset_after: Duration::from_millis(reset_ms) };
        let mut l = RateLimiter::new(p);
        let mut now = Instant::now();
        for gap in gaps {
            now += Duration::from_millis(gap);
            let before = l.clone();
            match l.try_acquire(now) {
                Ok(()) => prop_assert_eq!(before.next_allowed(now), now),
                Err(wait) => {
                    prop_assert!(wait > Duration::ZERO);
                    prop_assert_eq!(before.next_allowed(now), now + wait);
                    // Refused: nothing was recorded, and exactly `wait` later it passes.
                    let mut probe = l.clone();
                    prop_assert!(probe.try_acquire(now + wait).is_ok());
                    let mut early = l.clone();
                    prop_assert!(early.try_acquire(now + wait - Duration::from_micros(1)).is_err());
                }
            }
        }
    }

    #[test]
    fn playlist_matches_a_vector_model(ops in prop::collection::vec((0u8..5, 0u64..12, 0u64..12), 0..80)) {
        let mut room = RoomState::default();
        let mut model: Vec<u64> = Vec::new();
        for (op, a, b) in ops {
            let ev = match op {
                0 | 1 => {
                    // queue a after b (op 0) or at the head (op 1)
                    let after = if op == 0 { After::Uid(b) } else { After::Prepend };
                    model.retain(|&u| u != a);
                    let at = match after {
                        After::Prepend => 0,
                        After::Uid(x) => model.iter().position(|&u| u == x).map_or(model.len(), |i| i + 1),
                    };
                    model.insert(at, a);
                    ServerEvent::Queue(Queue { item: item(a), after })
                }
                2 => {
                    model.retain(|&u| u != a);
                    ServerEvent::Delete(Delete { uid: Uid(a) })
                }
                _ => {
                    let after = match b % 4 {
                        0 => MoveAfter::Prepend,
                        1 => MoveAfter::Append,
                        _ => MoveAfter::Uid(b),
                    };
                    if model.contains(&a) && after != MoveAfter::Uid(a) {
                        model.retain(|&u| u != a);
                        let at = match after {
                            MoveAfter::Prepend => 0,
                            MoveAfter::Append => model.len(),
                            MoveAfter::Uid(x) => model.iter().position(|&u| u == x).map_or(model.len(), |i| i + 1),
                        };
                        model.insert(at, a);
                    }
                    ServerEvent::MoveVideo(MoveVideo { from: Uid(a), after })
                }
            };
            let _ = room.apply(&ev);
            prop_assert_eq!(room.playlist_uids(), model.clone());
            prop_assert_eq!(room.playlist.len(), model.len());
        }
    }
}

fn item(uid: u64) -> PlaylistItem {
    PlaylistItem {
        media: Media {
            id: format!("m{uid}"),
            media_type: "yt".into(),
            ..Media::default()
        },
        uid: Uid(uid),
        temp: false,
        queueby: String::new(),
    }
}
