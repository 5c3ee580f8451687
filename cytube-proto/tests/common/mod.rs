//! Reading the captured Cytube traffic in `shared/fixtures/cytube/` (format in
//! its README): `+<ms> [who] <- event payload`, `-> …`, and non-frame notes.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

/// Direction of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received from the server (`<-`).
    In,
    /// Sent by the client (`->`).
    Out,
}

/// One captured frame line.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based line number in the file.
    pub lineno: usize,
    /// Milliseconds since the capture started.
    pub ms: u64,
    /// `bot`, `owner`, … (`None` in the raw Engine.IO log).
    pub who: Option<String>,
    /// Direction.
    pub dir: Dir,
    /// Everything after the arrow.
    pub body: String,
}

/// Directory of the captures, or `None` (with a note) when it is absent.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/cytube");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} not found; skipping the capture tests (they need shared/ beside the repo)",
            dir.display()
        );
        None
    }
}

/// Whether the capture cut this line (`...(N chars)`): its JSON is incomplete.
pub fn is_truncated(body: &str) -> bool {
    let Some(open) = body.rfind("...(") else {
        return false;
    };
    let tail = &body[open + 4..];
    tail.strip_suffix(" chars)")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the frame lines of a capture; notes, connects and disconnects are skipped.
pub fn frame_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let Some(rest) = raw.strip_prefix('+') else {
            continue;
        };
        let Some((ms, rest)) = rest.split_once("ms ") else {
            continue;
        };
        let Ok(ms) = ms.parse::<u64>() else { continue };
        let (who, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once("] ") {
                Some((who, r)) => (Some(who.to_owned()), r),
                None => continue,
            },
            None => (None, rest),
        };
        let (dir, body) = if let Some(b) = rest.strip_prefix("<- ") {
            (Dir::In, b)
        } else if let Some(b) = rest.strip_prefix("-> ") {
            (Dir::Out, b)
        } else {
            continue;
        };
        out.push(Line {
            lineno: i + 1,
            ms,
            who,
            dir,
            body: body.to_owned(),
        });
    }
    out
}

/// Splits a session-log body into the event name and its payload text
/// (`None` when absent or logged as `undefined`).
pub fn split_event(body: &str) -> (&str, Option<&str>) {
    match body.split_once(' ') {
        Some((name, payload)) => {
            let payload = payload.trim();
            if payload.is_empty() || payload == "undefined" {
                (name, None)
            } else {
                (name, Some(payload))
            }
        }
        None => (body, None),
    }
}
