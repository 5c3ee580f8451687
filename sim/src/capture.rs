//! Reading the captured CyTube traffic in `shared/fixtures/cytube/`: the one parser of
//! its line format, for every test and bench that replays or checks against it.
//!
//! A capture line is `+<ms> [client] <- event payload` (received), `+<ms> [client] ->
//! event payload` (sent), `+<ms> [client] (connect)` and the like (connection status),
//! or `+<ms> ---- note` (what the next step does). The raw Engine.IO log has no
//! `[client]`: `+<ms> <- 0{…}`. The recorder cut some long payloads with `...(N chars)`;
//! their JSON is incomplete. Lines that are none of these are skipped.

use std::path::PathBuf;

use serde_json::Value;

/// The directory of the captures, or `None` (with a note on stdout) when it is absent:
/// the captures live in `shared/` beside the repository, and the checks that need them
/// are skipped without it.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/cytube");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} not found; the capture checks are skipped (they need shared/ beside the repo)",
            dir.display()
        );
        None
    }
}

/// The text of capture `file` (e.g. `registered-channel-session.log`), or `None` when
/// the captures are absent (see [`fixtures_dir`]).
///
/// # Panics
/// When the captures are there but `file` cannot be read: a test naming a capture that
/// does not exist is wrong, not skipped.
pub fn read(file: &str) -> Option<String> {
    let path = fixtures_dir()?.join(file);
    Some(
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading the capture {}: {e}", path.display())),
    )
}

/// Direction of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received from the server (`<-`).
    In,
    /// Sent by the client (`->`).
    Out,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// 1-based line number in the file.
    pub lineno: usize,
    /// Milliseconds since the capture started.
    pub ms: u64,
    /// `bot`, `owner`, … (`None` in the raw Engine.IO log).
    pub who: Option<String>,
    /// Direction.
    pub dir: Dir,
    /// Everything after the arrow: `event payload` in a session log, the raw frame in
    /// the Engine.IO log.
    pub body: String,
}

impl Frame {
    /// Whether the recorder cut this frame: its JSON is incomplete.
    pub fn is_truncated(&self) -> bool {
        is_truncated(&self.body)
    }

    /// The event name and its payload text (session logs).
    pub fn event(&self) -> (&str, Option<&str>) {
        split_event(&self.body)
    }

    /// The payload, parsed (session logs).
    pub fn payload(&self) -> Payload {
        if self.is_truncated() {
            return Payload::Truncated;
        }
        match self.event().1 {
            None => Payload::None,
            // A payload that is not JSON is one the recorder mangled: its shape is
            // unknown, like a cut one.
            Some(p) => serde_json::from_str(p).map_or(Payload::Truncated, Payload::Json),
        }
    }
}

/// A captured payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// No payload (absent or logged as `undefined`).
    None,
    /// Parsed JSON.
    Json(Value),
    /// Cut by the recorder (`...(N chars)`): shape unknown.
    Truncated,
}

/// One line of a capture.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `---- note`: what the next step does.
    Note {
        /// Milliseconds since the capture started.
        ms: u64,
        /// The note's text.
        text: String,
    },
    /// A frame received or sent.
    Frame(Frame),
    /// A connection status: `(connect)`, `(disconnect) reason`, `(connect_error) …`.
    Status {
        /// Milliseconds since the capture started.
        ms: u64,
        /// The client, if the line names one.
        who: Option<String>,
        /// The rest of the line.
        what: String,
    },
}

/// Whether the recorder cut this frame body (`...(N chars)`): its JSON is incomplete.
pub fn is_truncated(body: &str) -> bool {
    let Some(open) = body.rfind("...(") else {
        return false;
    };
    let tail = &body[open + 4..];
    tail.strip_suffix(" chars)")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Splits a session-log frame body into the event name and its payload text (`None`
/// when absent or logged as `undefined`).
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

/// Parses every line of a capture: notes, frames and statuses, in file order.
pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let Some(rest) = raw.strip_prefix('+') else {
            continue;
        };
        let Some((ms, rest)) = rest.split_once("ms ") else {
            continue;
        };
        let Ok(ms) = ms.parse::<u64>() else { continue };
        if let Some(note) = rest.strip_prefix("---- ") {
            out.push(Line::Note {
                ms,
                text: note.to_owned(),
            });
            continue;
        }
        let (who, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once("] ") {
                Some((who, r)) => (Some(who.to_owned()), r),
                None => continue,
            },
            None => (None, rest),
        };
        let frame = |dir, body: &str| {
            Line::Frame(Frame {
                lineno: i + 1,
                ms,
                who: who.clone(),
                dir,
                body: body.to_owned(),
            })
        };
        out.push(if let Some(body) = rest.strip_prefix("<- ") {
            frame(Dir::In, body)
        } else if let Some(body) = rest.strip_prefix("-> ") {
            frame(Dir::Out, body)
        } else {
            Line::Status {
                ms,
                who,
                what: rest.to_owned(),
            }
        });
    }
    out
}

/// The frame lines of a capture, in file order; notes and statuses are skipped.
pub fn frames(text: &str) -> Vec<Frame> {
    lines(text)
        .into_iter()
        .filter_map(|l| match l {
            Line::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// The whole frames `who` received, in order (those the recorder cut are left out).
pub fn received(text: &str, who: &str) -> Vec<Frame> {
    frames(text)
        .into_iter()
        .filter(|f| f.dir == Dir::In && f.who.as_deref() == Some(who) && !f.is_truncated())
        .collect()
}

/// A capture cut at each `----` note.
#[derive(Debug, Clone)]
pub struct Section {
    /// The note opening the section (empty for what precedes the first note).
    pub note: String,
    /// When the note was written, in ms since the capture started.
    pub start_ms: u64,
    /// The frames and statuses up to the next note.
    pub lines: Vec<Line>,
}

impl Section {
    /// The frames `who` received in this section, in order (cut ones included: their
    /// [`Frame::payload`] says so).
    pub fn received<'a>(&'a self, who: &'a str) -> impl Iterator<Item = &'a Frame> + 'a {
        self.lines.iter().filter_map(move |l| match l {
            Line::Frame(f) if f.dir == Dir::In && f.who.as_deref() == Some(who) => Some(f),
            _ => None,
        })
    }
}

/// Cuts a capture into sections at each `----` note; the first section holds what
/// precedes the first note.
pub fn sections(text: &str) -> Vec<Section> {
    let mut out = vec![Section {
        note: String::new(),
        start_ms: 0,
        lines: Vec::new(),
    }];
    for line in lines(text) {
        match line {
            Line::Note { ms, text } => out.push(Section {
                note: text,
                start_ms: ms,
                lines: Vec::new(),
            }),
            other => {
                if let Some(last) = out.last_mut() {
                    last.lines.push(other);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
+14ms ---- first step
+20ms [bot] (connect)
+21ms [bot] -> joinChannel {\"name\":\"botchan\"}
+22ms [bot] <- setMotd \"hi\"
+23ms [owner] <- playlist [{\"uid\":1}...(900 chars)
+24ms [owner] -> closePoll undefined
not a capture line
+x ms [bot] <- ignored
+30ms ---- second step
+31ms [bot] <- mediaUpdate {\"currentTime\":1
+32ms <- 0{\"sid\":\"a\"}
";

    #[test]
    fn every_kind_of_line_parses_and_junk_is_skipped() {
        let all = lines(LOG);
        assert_eq!(all.len(), 9, "{all:#?}");
        assert_eq!(
            all[0],
            Line::Note {
                ms: 14,
                text: "first step".into()
            }
        );
        assert_eq!(
            all[1],
            Line::Status {
                ms: 20,
                who: Some("bot".into()),
                what: "(connect)".into()
            }
        );
        let Line::Frame(f) = &all[2] else {
            panic!("{:?}", all[2])
        };
        assert_eq!((f.lineno, f.ms, f.dir), (3, 21, Dir::Out));
        assert_eq!(f.event(), ("joinChannel", Some("{\"name\":\"botchan\"}")));
        let raw = frames(LOG).pop().expect("frames");
        assert_eq!(
            (raw.who, raw.dir, raw.body.as_str()),
            (None, Dir::In, "0{\"sid\":\"a\"}")
        );
    }

    #[test]
    fn payloads_are_whole_absent_or_cut() {
        let f = frames(LOG);
        assert_eq!(f[1].payload(), Payload::Json(Value::String("hi".into())));
        assert!(f[2].is_truncated());
        assert_eq!(f[2].payload(), Payload::Truncated);
        assert_eq!(f[3].event(), ("closePoll", None));
        assert_eq!(f[3].payload(), Payload::None);
        // Not cut by the recorder, yet not JSON: its shape is unknown.
        assert!(!f[4].is_truncated());
        assert_eq!(f[4].payload(), Payload::Truncated);
        assert!(!is_truncated("chatMsg {\"msg\":\"...(12 apples)\"}"));
    }

    #[test]
    fn received_keeps_whole_frames_of_one_client() {
        let bot: Vec<u64> = received(LOG, "bot").iter().map(|f| f.ms).collect();
        assert_eq!(bot, [22, 31]);
        assert!(
            received(LOG, "owner").is_empty(),
            "the cut frame is left out"
        );
    }

    #[test]
    fn sections_split_at_notes() {
        let s = sections(LOG);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].note.as_str(), s[0].lines.len()), ("", 0));
        assert_eq!((s[1].note.as_str(), s[1].start_ms), ("first step", 14));
        assert_eq!(s[1].lines.len(), 5);
        assert_eq!(s[1].received("owner").count(), 1);
        assert_eq!(s[2].received("bot").map(|f| f.ms).collect::<Vec<_>>(), [31]);
    }
}
