//! Helpers shared by the integration tests: simulator configs like the
//! captures' server, replaying a capture (read with [`daz_cytube_sim::capture`]), and
//! JSON shape comparison.

#![allow(dead_code)]

use std::time::Duration;

use daz_cytube_sim::capture::{Payload, Section};
use daz_cytube_sim::{Account, ChannelConfig, SimConfig, SimHandle, Simulator};
use serde_json::Value;

/// Generous wait for anything that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// The accounts and channels of the capture server.
pub fn capture_config() -> SimConfig {
    SimConfig {
        accounts: vec![
            Account::new("testbot", "testbot-pass-123"),
            Account::new("chanboss", "chanboss-pass-123"),
            Account::new("otheruser", "otheruser-pass-123"),
        ],
        channels: vec![ChannelConfig::registered("botchan").rank("chanboss", 5.0)],
        // Playback only moves when a test advances it.
        time_scale: 0.0001,
        ..SimConfig::default()
    }
}

pub async fn start(cfg: SimConfig) -> SimHandle {
    Simulator::start(cfg).await.expect("simulator starts")
}

/// Names of events in a frame list.
pub fn names(frames: &[(String, Value)]) -> Vec<String> {
    frames.iter().map(|(n, _)| n.clone()).collect()
}

/// Events `client` received in a section, minus `ignore`d names.
pub fn expected_for(section: &Section, client: &str, ignore: &[&str]) -> Vec<(String, Payload)> {
    section
        .received(client)
        .filter(|f| !ignore.contains(&f.event().0))
        .map(|f| (f.event().0.to_owned(), f.payload()))
        .collect()
}

/// The JSON "shape": keys and types, values ignored.
pub fn shape(v: &Value) -> Value {
    match v {
        Value::Null => Value::String("null".into()),
        Value::Bool(_) => Value::String("boolean".into()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// Compares an actual frame against a captured one: same name, and same
/// shape where the capture has the whole payload. Absent and `null`
/// payloads both read as `null` on our side.
pub fn frame_matches(actual: &(String, Value), expected: &(String, Payload)) -> bool {
    if actual.0 != expected.0 {
        return false;
    }
    match &expected.1 {
        Payload::Truncated => true,
        Payload::None => actual.1.is_null(),
        Payload::Json(v) => shape(v) == shape(&actual.1),
    }
}

/// Asserts the frames equal the capture (names in order, payload shapes).
pub fn assert_same(
    section: &str,
    client: &str,
    actual: &[(String, Value)],
    expected: &[(String, Payload)],
) {
    let ok = actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| frame_matches(a, e));
    assert!(
        ok,
        "section {section:?}, client {client}: frames differ from the capture\n  actual:   {:?}\n  expected: {:?}\n  first mismatch: {:?}",
        names(actual),
        expected.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        actual
            .iter()
            .zip(expected)
            .find(|(a, e)| !frame_matches(a, e))
    );
}

/// Asserts the captured frames appear, in order, among the actual ones (the
/// guest capture leaves some frames out for later joiners).
pub fn assert_subsequence(
    section: &str,
    client: &str,
    actual: &[(String, Value)],
    expected: &[(String, Payload)],
) {
    let mut it = actual.iter();
    for (i, e) in expected.iter().enumerate() {
        let found = it.by_ref().any(|a| frame_matches(a, e));
        assert!(
            found,
            "section {section:?}, client {client}: captured frame #{i} {:?} missing (in order) from\n  actual: {:?}\n  expected: {:?}",
            e,
            names(actual),
            expected.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        );
    }
}

/// Drops the named events.
pub fn without(frames: Vec<(String, Value)>, ignore: &[&str]) -> Vec<(String, Value)> {
    frames
        .into_iter()
        .filter(|(n, _)| !ignore.contains(&n.as_str()))
        .collect()
}

/// Replays a capture section by section against live actors.
pub struct Replay {
    pub sim: SimHandle,
    pub sections: Vec<Section>,
    last_ms: u64,
}

/// Events driven by wall-clock time, left out of every comparison.
pub const TIME_DRIVEN: &[&str] = &["mediaUpdate", "usercount"];

/// Events of a playback change (left out where the capture's playback moved
/// on by itself in the middle of an unrelated step).
pub const PLAYBACK: &[&str] = &["setCurrent", "changeMedia", "drinkCount", "voteskip"];

impl Replay {
    pub fn new(sim: SimHandle, log: &str) -> Self {
        Replay {
            sim,
            sections: daz_cytube_sim::capture::sections(log),
            last_ms: 0,
        }
    }

    /// Starts the section whose note begins with `prefix`: the simulator's
    /// rate-limit clock moves on by the time the capture spent since the
    /// previous section.
    pub fn begin(&mut self, prefix: &str) -> Section {
        let section = self
            .sections
            .iter()
            .find(|s| s.note.starts_with(prefix))
            .unwrap_or_else(|| panic!("capture has no section starting {prefix:?}"))
            .clone();
        if section.start_ms > self.last_ms {
            self.sim
                .advance_clock(Duration::from_millis(section.start_ms - self.last_ms));
            self.last_ms = section.start_ms;
        }
        section
    }

    /// Waits until `actor` has received (since `mark`) at least as many frames
    /// as the capture shows for `client` in `section`, then compares them:
    /// exactly, or as an in-order subsequence when `subsequence`.
    pub async fn check(
        &self,
        section: &Section,
        client: &str,
        actor: &daz_cytube_sim::Actor,
        mark: usize,
        ignore: &[&str],
        subsequence: bool,
    ) {
        let ignore: Vec<&str> = TIME_DRIVEN.iter().chain(ignore).copied().collect();
        let expected = expected_for(section, client, &ignore);
        let want = expected.len();
        let _ = actor
            .wait_for(WAIT, |frames| {
                let got = frames
                    .get(mark..)
                    .unwrap_or_default()
                    .iter()
                    .filter(|(n, _)| !ignore.contains(&n.as_str()))
                    .count();
                if subsequence {
                    // Enough to hold the expected frames in order.
                    let actual: Vec<(String, Value)> =
                        frames.get(mark..).unwrap_or_default().to_vec();
                    let mut it = actual.iter();
                    expected
                        .iter()
                        .all(|e| it.by_ref().any(|a| frame_matches(a, e)))
                } else {
                    got >= want
                }
            })
            .await;
        let actual = without(actor.received_since(mark), &ignore);
        if subsequence {
            assert_subsequence(&section.note, client, &actual, &expected);
        } else {
            assert_same(&section.note, client, &actual, &expected);
        }
    }
}

/// A bare HTTP/1.1 GET over a TCP socket (no HTTP client dependency needed).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
