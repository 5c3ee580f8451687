//! Conformance at the Engine.IO level: replays `raw-engineio-frames.log` and
//! compares every raw text frame the client receives (open packet, connect
//! ack, events, ping) by kind, event name and JSON shape.

mod common;

use std::time::Duration;

use common::*;
use daz_cytube_sim::{
    SimConfig,
    capture::{self, fixtures_dir},
};
use serde_json::Value;

/// A raw frame reduced to what must match: its kind and the JSON shape.
#[derive(Debug, PartialEq)]
enum Kind {
    Open(Value),
    ConnectAck(Value),
    Event(String, Option<Value>),
    Ping,
    Other(String),
}

fn kind(frame: &str, truncated: bool) -> Kind {
    if let Some(json) = frame.strip_prefix('0') {
        return Kind::Open(shape(&serde_json::from_str(json).unwrap()));
    }
    if let Some(json) = frame.strip_prefix("40") {
        return Kind::ConnectAck(shape(&serde_json::from_str(json).unwrap()));
    }
    if let Some(body) = frame.strip_prefix("42") {
        if truncated {
            // `42["name",…` cut by the capture: only the name is known.
            let name = body
                .trim_start_matches("[\"")
                .split('"')
                .next()
                .unwrap_or_default();
            return Kind::Event(name.to_owned(), None);
        }
        let arr: Vec<Value> = serde_json::from_str(body).unwrap();
        let name = arr[0].as_str().unwrap().to_owned();
        return Kind::Event(name, arr.get(1).map(shape));
    }
    if frame == "2" {
        return Kind::Ping;
    }
    Kind::Other(frame.to_owned())
}

#[tokio::test]
async fn raw_engineio_frames_match_capture() {
    let Some(dir) = fixtures_dir() else {
        return;
    };
    let log = std::fs::read_to_string(dir.join("raw-engineio-frames.log")).unwrap();
    let expected: Vec<(String, bool)> = capture::frames(&log)
        .into_iter()
        .filter(|f| f.dir == capture::Dir::In)
        .map(|f| {
            let truncated = f.is_truncated();
            (f.body, truncated)
        })
        .collect();
    let sim = start(SimConfig {
        ping_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let mut a = sim.actor("raw").await.connect().await.unwrap();
    a.join_and_login("rawchan", "rawguest", None).await.unwrap();
    a.chat("raw hello").unwrap();
    a.wait_raw(WAIT, |raw| raw.iter().any(|f| f == "2"))
        .await
        .unwrap();
    let raw = a.raw_frames();
    let upto = raw.iter().position(|f| f == "2").unwrap() + 1;
    let actual: Vec<Kind> = raw[..upto].iter().map(|f| kind(f, false)).collect();
    // Event names everywhere, payload shapes where the capture has them whole.
    let expected_kinds: Vec<Kind> = expected.iter().map(|(f, t)| kind(f, *t)).collect();
    assert_eq!(
        actual.len(),
        expected_kinds.len(),
        "actual {actual:?}\nexpected {expected_kinds:?}"
    );
    for (i, (a, e)) in actual.iter().zip(&expected_kinds).enumerate() {
        if let (Kind::Event(an, _), Kind::Event(en, None)) = (a, e) {
            assert_eq!(an, en, "frame {i}");
            continue;
        }
        assert_eq!(a, e, "frame {i}");
    }
    // Our pong went out and the connection stays up.
    a.wait_raw(WAIT, |raw| raw.iter().filter(|f| *f == "2").count() >= 2)
        .await
        .unwrap();
    assert!(a.closed().is_none());
}
