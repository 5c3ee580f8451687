//! Engine.IO 4 + Socket.IO 4 text frames: parsing (zero-copy) and encoding.
//!
//! One websocket text message is one Engine.IO packet: a type digit followed by
//! data. Type `4` (message) carries a Socket.IO packet: a type digit, an optional
//! namespace (`/nsp,`), an optional ack id and a JSON body.
//!
//! ```text
//! 0{"sid":…,"pingInterval":25000,…}   open            (server → client)
//! 2 / 3                                ping / pong     (server pings, client pongs)
//! 40 / 40{"sid":…}                     connect / connect ack
//! 42["name",payload]                   event (payload may be absent)
//! 421["name",payload]                  event asking for ack id 1
//! 431[…]                               ack for id 1
//! ```
//!
//! Invariants:
//! - [`parse`] never panics, whatever the input; every failure is a [`FrameError`].
//! - [`parse`] makes one serde_json pass over the JSON body and borrows the event
//!   payload as a [`RawValue`]; the event name borrows too unless it holds JSON
//!   escapes. Typed decoding happens later, only for events somebody wants.
//! - Only the main namespace `/` is supported (Cytube uses nothing else); a packet
//!   for another namespace is parsed far enough to name it and reported as
//!   [`FrameError::Namespace`].
//! - Every encoder output parses back to the same packet.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Largest frame accepted or produced: the `maxPayload` Cytube announces (1 MiB).
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Engine.IO close packet.
pub const CLOSE: &str = "1";
/// Engine.IO ping without data (the server's heartbeat).
pub const PING: &str = "2";
/// Engine.IO pong without data (the client's answer to [`PING`]).
pub const PONG: &str = "3";
/// Engine.IO upgrade packet.
pub const UPGRADE: &str = "5";
/// Engine.IO no-op packet.
pub const NOOP: &str = "6";
/// Socket.IO connect request to the main namespace (client → server).
pub const SIO_CONNECT: &str = "40";
/// Socket.IO disconnect from the main namespace.
pub const SIO_DISCONNECT: &str = "41";

/// Why a frame could not be parsed or encoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The websocket message was empty.
    #[error("empty frame: an Engine.IO frame starts with a packet-type digit 0-6")]
    Empty,
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error(
        "frame of {len} bytes exceeds the {max}-byte limit; the peer must send smaller payloads"
    )]
    TooLarge {
        /// Size of the offending frame in bytes.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The first character is not an Engine.IO 4 packet type.
    #[error(
        "unknown Engine.IO packet type {0:?} (expected a digit 0-6); is the peer speaking Engine.IO 4?"
    )]
    UnknownEioType(char),
    /// An Engine.IO message (`4`) without a Socket.IO packet type after it.
    #[error("Engine.IO message frame \"4\" carries no Socket.IO packet type")]
    MissingSioType,
    /// The character after `4` is not a Socket.IO 4 packet type.
    #[error("unknown Socket.IO packet type {0:?} (expected a digit 0-6)")]
    UnknownSioType(char),
    /// The JSON body is not valid JSON.
    #[error("invalid JSON in {context}: {source}")]
    BadJson {
        /// Which part of the frame held the JSON.
        context: &'static str,
        /// serde_json's description, with the column.
        #[source]
        source: serde_json::Error,
    },
    /// The frame is well-formed JSON but not a valid Socket.IO event or ack.
    #[error("malformed Socket.IO packet: {0}")]
    BadEvent(String),
    /// Extra or missing data where the packet type allows none / needs some.
    #[error("malformed {packet} packet: {why}")]
    Malformed {
        /// The packet type name.
        packet: &'static str,
        /// What was wrong.
        why: &'static str,
    },
    /// A packet addressed to a namespace other than `/`.
    #[error("Socket.IO packet for namespace {0:?}; only the main namespace \"/\" is supported")]
    Namespace(String),
    /// A valid but unsupported packet kind (Socket.IO binary packets).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A payload could not be serialized to JSON.
    #[error("could not serialize the event payload to JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Handshake data of the Engine.IO open packet (`0{…}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    /// Engine.IO session id.
    pub sid: String,
    /// Transports the server offers to upgrade to (empty on a websocket).
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// How often the server pings, in ms.
    #[serde(rename = "pingInterval")]
    pub ping_interval_ms: u64,
    /// How long after a missed ping the connection counts as dead, in ms.
    #[serde(rename = "pingTimeout")]
    pub ping_timeout_ms: u64,
    /// Largest frame the server accepts, in bytes. Engine.IO 3 servers omit it;
    /// it then defaults to the Engine.IO default of 1 000 000.
    #[serde(default = "default_max_payload")]
    pub max_payload: u64,
}

fn default_max_payload() -> u64 {
    1_000_000
}

/// One Engine.IO packet, borrowing from the frame it was parsed from.
#[derive(Debug, Clone)]
pub enum EioPacket<'a> {
    /// `0{…}`: handshake.
    Open(OpenInfo),
    /// `1`: the peer closes the transport.
    Close,
    /// `2` / `2probe`: ping, with optional data to echo.
    Ping(Option<&'a str>),
    /// `3` / `3probe`: pong, echoing the ping's data.
    Pong(Option<&'a str>),
    /// `4…`: a Socket.IO packet.
    Message(SioPacket<'a>),
    /// `5`: transport upgrade.
    Upgrade,
    /// `6`: no-op.
    Noop,
}

/// One Socket.IO packet on the main namespace.
#[derive(Debug, Clone)]
pub enum SioPacket<'a> {
    /// `40` / `40{…}`: connect request (client) or connect ack with `{"sid":…}` (server).
    Connect(Option<&'a RawValue>),
    /// `41`: disconnect.
    Disconnect,
    /// `42[name, payload?]`, optionally with an ack id (`421[…]`).
    Event {
        /// Event name, borrowed unless it held JSON escapes.
        name: Cow<'a, str>,
        /// The one argument, raw; `None` when the event has no argument
        /// (`42["channelNotRegistered"]`). JSON `null` is `Some("null")`.
        payload: Option<&'a RawValue>,
        /// Ack id the sender wants answered.
        ack: Option<u64>,
    },
    /// `43<id>[args…]`: answer to an event that asked for ack `id`.
    Ack {
        /// The ack id being answered.
        id: u64,
        /// The JSON array of answer arguments.
        args: &'a RawValue,
    },
    /// `44{…}`: the server refused the connect (e.g. `{"message":"Rate limit exceeded"}`).
    ConnectError(Option<&'a RawValue>),
}

/// Parses one websocket text frame.
///
/// Never panics. The result borrows from `frame`; see the module docs for what
/// is and is not validated.
pub fn parse(frame: &str) -> Result<EioPacket<'_>, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let Some(kind) = frame.chars().next() else {
        return Err(FrameError::Empty);
    };
    // `kind` is ASCII in every valid case, so `[1..]` is on a char boundary there;
    // other cases return before slicing.
    match kind {
        '0' => {
            let info: OpenInfo =
                serde_json::from_str(&frame[1..]).map_err(|source| FrameError::BadJson {
                    context: "Engine.IO open packet",
                    source,
                })?;
            Ok(EioPacket::Open(info))
        }
        '1' => no_data(&frame[1..], "Engine.IO close").map(|()| EioPacket::Close),
        '2' => Ok(EioPacket::Ping(non_empty(&frame[1..]))),
        '3' => Ok(EioPacket::Pong(non_empty(&frame[1..]))),
        '4' => parse_sio(&frame[1..]).map(EioPacket::Message),
        '5' => no_data(&frame[1..], "Engine.IO upgrade").map(|()| EioPacket::Upgrade),
        '6' => no_data(&frame[1..], "Engine.IO noop").map(|()| EioPacket::Noop),
        other => Err(FrameError::UnknownEioType(other)),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn no_data(rest: &str, packet: &'static str) -> Result<(), FrameError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Malformed {
            packet,
            why: "this packet type carries no data, but the frame has some",
        })
    }
}

fn parse_sio(body: &str) -> Result<SioPacket<'_>, FrameError> {
    let Some(kind) = body.chars().next() else {
        return Err(FrameError::MissingSioType);
    };
    if !kind.is_ascii_digit() {
        return Err(FrameError::UnknownSioType(kind));
    }
    let rest = strip_namespace(&body[1..])?;
    match kind {
        '0' => optional_json(rest, "Socket.IO connect").map(SioPacket::Connect),
        '1' => no_data(rest, "Socket.IO disconnect").map(|()| SioPacket::Disconnect),
        '2' => {
            let (ack, json) = split_ack_id(rest)?;
            let args: EventArgs<'_> =
                serde_json::from_str(json).map_err(|e| match e.classify() {
                    serde_json::error::Category::Data => FrameError::BadEvent(e.to_string()),
                    _ => FrameError::BadJson {
                        context: "Socket.IO event",
                        source: e,
                    },
                })?;
            Ok(SioPacket::Event {
                name: args.name,
                payload: args.payload,
                ack,
            })
        }
        '3' => {
            let (id, json) = split_ack_id(rest)?;
            let Some(id) = id else {
                return Err(FrameError::BadEvent(
                    "ack packet \"43\" has no ack id before its arguments".to_owned(),
                ));
            };
            let args: &RawValue =
                serde_json::from_str(json).map_err(|source| FrameError::BadJson {
                    context: "Socket.IO ack",
                    source,
                })?;
            if !args.get().starts_with('[') {
                return Err(FrameError::BadEvent(
                    "ack arguments must be a JSON array".to_owned(),
                ));
            }
            Ok(SioPacket::Ack { id, args })
        }
        '4' => optional_json(rest, "Socket.IO connect_error").map(SioPacket::ConnectError),
        '5' | '6' => Err(FrameError::Unsupported(
            "Socket.IO binary packets (types 5 and 6); Cytube never sends them",
        )),
        other => Err(FrameError::UnknownSioType(other)),
    }
}

/// Removes a `/nsp,` prefix. The main namespace `/` (rarely written out) passes;
/// any other namespace is reported.
fn strip_namespace(rest: &str) -> Result<&str, FrameError> {
    if !rest.starts_with('/') {
        return Ok(rest);
    }
    let (nsp, after) = match rest.find(',') {
        Some(comma) => (&rest[..comma], &rest[comma + 1..]),
        None => (rest, ""),
    };
    if nsp == "/" {
        Ok(after)
    } else {
        Err(FrameError::Namespace(nsp.to_owned()))
    }
}

/// Splits the leading decimal ack id (if any) from the JSON that follows.
fn split_ack_id(rest: &str) -> Result<(Option<u64>, &str), FrameError> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Ok((None, rest));
    }
    // Digits are ASCII, so `digits` is a char boundary.
    let id = rest[..digits].parse::<u64>().map_err(|_| {
        FrameError::BadEvent(format!(
            "ack id {} does not fit in 64 bits",
            &rest[..digits.min(40)]
        ))
    })?;
    Ok((Some(id), &rest[digits..]))
}

fn optional_json<'a>(
    rest: &'a str,
    context: &'static str,
) -> Result<Option<&'a RawValue>, FrameError> {
    if rest.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(rest)
        .map(Some)
        .map_err(|source| FrameError::BadJson { context, source })
}

/// `["name", payload?]`, deserialized in one pass with the payload left raw.
struct EventArgs<'a> {
    name: Cow<'a, str>,
    payload: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for EventArgs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EventArgsVisitor)
    }
}

struct EventArgsVisitor;

impl<'de> Visitor<'de> for EventArgsVisitor {
    type Value = EventArgs<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event array [\"name\"] or [\"name\", payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(EventName(name)) = seq.next_element::<EventName<'de>>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let payload = seq.next_element::<&'de RawValue>()?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "event {name:?} has more than one argument; Cytube events carry at most one"
            )));
        }
        Ok(EventArgs { name, payload })
    }
}

struct EventName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for EventName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(EventNameVisitor)
    }
}

struct EventNameVisitor;

impl<'de> Visitor<'de> for EventNameVisitor {
    type Value = EventName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event name as a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(EventName(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(EventName(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(EventName(Cow::Owned(v)))
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Appends `s` as a JSON string literal (with quotes) to `out`.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => {
                // Bytes below 0x20 are ASCII, so `i` is a char boundary.
                out.push_str(&s[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(esc);
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `0{…}`: the server's handshake.
pub fn encode_open(info: &OpenInfo) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("0{\"sid\":");
    push_json_str(&mut out, &info.sid);
    out.push_str(",\"upgrades\":[");
    for (i, up) in info.upgrades.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, up);
    }
    out.push_str("],\"pingInterval\":");
    out.push_str(&info.ping_interval_ms.to_string());
    out.push_str(",\"pingTimeout\":");
    out.push_str(&info.ping_timeout_ms.to_string());
    out.push_str(",\"maxPayload\":");
    out.push_str(&info.max_payload.to_string());
    out.push('}');
    out
}

/// `40{"sid":…}`: the server's connect ack to the main namespace.
pub fn encode_connect(sid: &str) -> String {
    let mut out = String::with_capacity(sid.len() + 12);
    out.push_str("40{\"sid\":");
    push_json_str(&mut out, sid);
    out.push('}');
    out
}

/// `44{"message":…}`: the server refuses a connect (e.g. "Rate limit exceeded").
pub fn encode_connect_error(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    out.push_str("44{\"message\":");
    push_json_str(&mut out, message);
    out.push('}');
    out
}

/// `2` or `2<data>`.
pub fn encode_ping(data: Option<&str>) -> String {
    format!("2{}", data.unwrap_or(""))
}

/// `3` or `3<data>` (echo the ping's data).
pub fn encode_pong(data: Option<&str>) -> String {
    format!("3{}", data.unwrap_or(""))
}

/// `42["name",payload]` (or `42["name"]` for `None`), serializing the payload.
///
/// Use `encode_event::<()>(name, None)` or [`encode_event_raw`] for payload-less events.
pub fn encode_event<T: Serialize + ?Sized>(
    name: &str,
    payload: Option<&T>,
) -> Result<String, FrameError> {
    let json = payload
        .map(serde_json::to_string)
        .transpose()
        .map_err(FrameError::Encode)?;
    Ok(encode_event_raw(name, json.as_deref()))
}

/// `42["name",<payload_json>]` from an already-serialized payload.
///
/// `payload_json` must be valid JSON; it is inserted verbatim.
pub fn encode_event_raw(name: &str, payload_json: Option<&str>) -> String {
    encode_event_inner(name, payload_json, None)
}

/// `42<ack>["name",<payload_json>]`: an event asking the peer to answer with ack `ack`.
pub fn encode_event_raw_with_ack(name: &str, payload_json: Option<&str>, ack: u64) -> String {
    encode_event_inner(name, payload_json, Some(ack))
}

fn encode_event_inner(name: &str, payload_json: Option<&str>, ack: Option<u64>) -> String {
    let payload_len = payload_json.map_or(0, str::len);
    let mut out = String::with_capacity(name.len() + payload_len + 28);
    out.push_str("42");
    if let Some(id) = ack {
        out.push_str(&id.to_string());
    }
    out.push('[');
    push_json_str(&mut out, name);
    if let Some(p) = payload_json {
        out.push(',');
        out.push_str(p);
    }
    out.push(']');
    out
}

/// `43<id>[args…]`: answers an event that asked for ack `id`. `args_json` must be
/// a JSON array.
pub fn encode_ack(id: u64, args_json: &str) -> String {
    format!("43{id}{args_json}")
}

impl EioPacket<'_> {
    /// The frame text for this packet; parsing it gives back an equal packet.
    pub fn encode(&self) -> String {
        match self {
            EioPacket::Open(info) => encode_open(info),
            EioPacket::Close => CLOSE.to_owned(),
            EioPacket::Ping(data) => encode_ping(*data),
            EioPacket::Pong(data) => encode_pong(*data),
            EioPacket::Upgrade => UPGRADE.to_owned(),
            EioPacket::Noop => NOOP.to_owned(),
            EioPacket::Message(sio) => sio.encode(),
        }
    }
}

impl SioPacket<'_> {
    /// The frame text (with the Engine.IO `4` prefix) for this packet.
    pub fn encode(&self) -> String {
        match self {
            SioPacket::Connect(None) => SIO_CONNECT.to_owned(),
            SioPacket::Connect(Some(raw)) => format!("40{}", raw.get()),
            SioPacket::Disconnect => SIO_DISCONNECT.to_owned(),
            SioPacket::Event { name, payload, ack } => {
                encode_event_inner(name, payload.map(RawValue::get), *ack)
            }
            SioPacket::Ack { id, args } => encode_ack(*id, args.get()),
            SioPacket::ConnectError(None) => "44".to_owned(),
            SioPacket::ConnectError(Some(raw)) => format!("44{}", raw.get()),
        }
    }
}

/// Serializes an [`EioPacket`] as its frame text (handy for logs and test fixtures).
impl Serialize for EioPacket<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(frame: &str) -> (Cow<'_, str>, Option<&RawValue>, Option<u64>) {
        match parse(frame).unwrap() {
            EioPacket::Message(SioPacket::Event { name, payload, ack }) => (name, payload, ack),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn open_packet_from_capture() {
        let f = r#"0{"sid":"mtcL1J0glOJTfhueAAAr","upgrades":[],"pingInterval":25000,"pingTimeout":120000,"maxPayload":1048576}"#;
        let EioPacket::Open(info) = parse(f).unwrap() else {
            panic!("not open")
        };
        assert_eq!(info.sid, "mtcL1J0glOJTfhueAAAr");
        assert!(info.upgrades.is_empty());
        assert_eq!(info.ping_interval_ms, 25_000);
        assert_eq!(info.ping_timeout_ms, 120_000);
        assert_eq!(info.max_payload, 1_048_576);
        assert_eq!(encode_open(&info), f);
    }

    #[test]
    fn open_packet_without_max_payload_defaults() {
        let EioPacket::Open(info) =
            parse(r#"0{"sid":"a","upgrades":["websocket"],"pingInterval":1,"pingTimeout":2}"#)
                .unwrap()
        else {
            panic!("not open")
        };
        assert_eq!(info.max_payload, 1_000_000);
        assert_eq!(info.upgrades, ["websocket"]);
    }

    #[test]
    fn heartbeat_and_control_packets() {
        assert!(matches!(parse("2").unwrap(), EioPacket::Ping(None)));
        assert!(matches!(parse("3").unwrap(), EioPacket::Pong(None)));
        assert!(matches!(
            parse("2probe").unwrap(),
            EioPacket::Ping(Some("probe"))
        ));
        assert!(matches!(
            parse("3probe").unwrap(),
            EioPacket::Pong(Some("probe"))
        ));
        assert!(matches!(parse("1").unwrap(), EioPacket::Close));
        assert!(matches!(parse("5").unwrap(), EioPacket::Upgrade));
        assert!(matches!(parse("6").unwrap(), EioPacket::Noop));
        assert!(matches!(
            parse("40").unwrap(),
            EioPacket::Message(SioPacket::Connect(None))
        ));
        assert!(matches!(
            parse("41").unwrap(),
            EioPacket::Message(SioPacket::Disconnect)
        ));
        assert!(matches!(
            parse("1x"),
            Err(FrameError::Malformed { packet, .. }) if packet == "Engine.IO close"
        ));
    }

    #[test]
    fn connect_ack_keeps_raw_sid_object() {
        let EioPacket::Message(SioPacket::Connect(Some(raw))) =
            parse(r#"40{"sid":"Vr1QGl9Eh58VveOSAAAs"}"#).unwrap()
        else {
            panic!("not a connect ack")
        };
        assert_eq!(raw.get(), r#"{"sid":"Vr1QGl9Eh58VveOSAAAs"}"#);
        assert_eq!(
            encode_connect("Vr1QGl9Eh58VveOSAAAs"),
            r#"40{"sid":"Vr1QGl9Eh58VveOSAAAs"}"#
        );
    }

    #[test]
    fn event_payload_kinds() {
        let (n, p, a) = event(r#"42["usercount",3]"#);
        assert_eq!(
            (n.as_ref(), p.map(RawValue::get), a),
            ("usercount", Some("3"), None)
        );
        let (n, p, _) = event(r#"42["channelNotRegistered"]"#);
        assert_eq!(
            (n.as_ref(), p.map(RawValue::get)),
            ("channelNotRegistered", None)
        );
        let (_, p, _) = event(r#"42["setMotd",""]"#);
        assert_eq!(p.map(RawValue::get), Some(r#""""#));
        let (_, p, _) = event(r#"42["delete",12]"#);
        assert_eq!(p.map(RawValue::get), Some("12"));
        let (_, p, _) = event(r#"42["closePoll",null]"#);
        assert_eq!(p.map(RawValue::get), Some("null"));
        let (_, p, _) = event(r#"42["emoteList",[]]"#);
        assert_eq!(p.map(RawValue::get), Some("[]"));
        let (_, p, _) = event(r#"42["setPlaylistLocked",false]"#);
        assert_eq!(p.map(RawValue::get), Some("false"));
        let (n, p, a) = event(r#"421["x",{}]"#);
        assert_eq!(
            (n.as_ref(), p.map(RawValue::get), a),
            ("x", Some("{}"), Some(1))
        );
    }

    #[test]
    fn event_name_borrows_unless_escaped() {
        let (n, _, _) = event(r#"42["chatMsg",{}]"#);
        assert!(matches!(n, Cow::Borrowed("chatMsg")));
        let (n, _, _) = event(r#"42["a\"b",1]"#);
        assert!(matches!(n, Cow::Owned(ref s) if s == "a\"b"));
    }

    #[test]
    fn whitespace_inside_json_is_tolerated() {
        let (n, p, _) = event("42[ \"a\" , { \"x\" : 1 } ]");
        assert_eq!(n, "a");
        assert_eq!(p.map(RawValue::get), Some("{ \"x\" : 1 }"));
    }

    #[test]
    fn ack_packets() {
        let EioPacket::Message(SioPacket::Ack { id, args }) = parse(r#"4317["ok",2]"#).unwrap()
        else {
            panic!("not an ack")
        };
        assert_eq!((id, args.get()), (17, r#"["ok",2]"#));
        assert!(matches!(parse("43[1]"), Err(FrameError::BadEvent(_))));
        assert!(matches!(parse("431{}"), Err(FrameError::BadEvent(_))));
    }

    #[test]
    fn rejects_what_is_not_an_event() {
        for bad in [
            "42",
            "42[]",
            "42{}",
            "42[1,2]",
            "42\"x\"",
            "42[\"a\",1,2]",
            "42[\"a\"]x",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, FrameError::BadEvent(_) | FrameError::BadJson { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(matches!(parse("42[\"a\""), Err(FrameError::BadJson { .. })));
        assert!(matches!(
            parse("4299999999999999999999[\"a\"]"),
            Err(FrameError::BadEvent(_))
        ));
    }

    #[test]
    fn reports_unsupported_and_unknown() {
        assert!(matches!(parse(""), Err(FrameError::Empty)));
        assert!(matches!(parse("4"), Err(FrameError::MissingSioType)));
        assert!(matches!(parse("7"), Err(FrameError::UnknownEioType('7'))));
        assert!(matches!(parse("é"), Err(FrameError::UnknownEioType('é'))));
        assert!(matches!(parse("47"), Err(FrameError::UnknownSioType('7'))));
        assert!(matches!(parse("4ä"), Err(FrameError::UnknownSioType('ä'))));
        assert!(matches!(
            parse("451-[\"x\"]"),
            Err(FrameError::Unsupported(_))
        ));
        assert!(matches!(parse("46"), Err(FrameError::Unsupported(_))));
        assert!(matches!(
            parse("42/admin,[\"x\"]"),
            Err(FrameError::Namespace(n)) if n == "/admin"
        ));
        assert!(matches!(
            parse("40/admin"),
            Err(FrameError::Namespace(n)) if n == "/admin"
        ));
        assert!(matches!(
            parse("42/,[\"x\"]").unwrap(),
            EioPacket::Message(SioPacket::Event { .. })
        ));
        let big = format!("42[\"x\",\"{}\"]", "a".repeat(MAX_FRAME_BYTES));
        assert!(matches!(
            parse(&big),
            Err(FrameError::TooLarge {
                max: MAX_FRAME_BYTES,
                ..
            })
        ));
    }

    #[test]
    fn connect_error_packet() {
        let frame = encode_connect_error("Rate limit exceeded");
        let EioPacket::Message(SioPacket::ConnectError(Some(raw))) = parse(&frame).unwrap() else {
            panic!("not a connect error")
        };
        assert_eq!(raw.get(), r#"{"message":"Rate limit exceeded"}"#);
    }

    #[test]
    fn encode_event_forms() {
        assert_eq!(
            encode_event("chatMsg", Some(&serde_json::json!({"msg": "hi"}))).unwrap(),
            r#"42["chatMsg",{"msg":"hi"}]"#
        );
        assert_eq!(
            encode_event::<()>("voteskip", None).unwrap(),
            r#"42["voteskip"]"#
        );
        assert_eq!(encode_event_raw("delete", Some("12")), r#"42["delete",12]"#);
        assert_eq!(
            encode_event_raw_with_ack("x", Some("{}"), 7),
            r#"427["x",{}]"#
        );
        assert_eq!(encode_ack(7, "[]"), "437[]");
    }

    #[test]
    fn json_string_escaping_round_trips() {
        let nasty = "q\"b\\s/\n\r\t\u{8}\u{c}\u{0}\u{1f}é😀\u{2028}";
        let mut out = String::new();
        push_json_str(&mut out, nasty);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, nasty);
        let frame = encode_event_raw(nasty, None);
        let (n, p, _) = event(&frame);
        assert_eq!((n.as_ref(), p.is_none()), (nasty, true));
    }

    #[test]
    fn packet_encode_round_trips() {
        for f in [
            "1",
            "2",
            "3probe",
            "5",
            "6",
            "40",
            r#"40{"sid":"x"}"#,
            "41",
            r#"42["a"]"#,
            r#"42["a",{"b":[1,2.5,"c"]}]"#,
            r#"4299["a",null]"#,
            r#"435["ok"]"#,
            r#"44{"message":"no"}"#,
        ] {
            assert_eq!(parse(f).unwrap().encode(), f);
        }
    }

    #[test]
    fn error_messages_say_what_and_why() {
        let msg = parse("9").unwrap_err().to_string();
        assert!(msg.contains("unknown Engine.IO packet type '9'"), "{msg}");
        let msg = parse("42[\"a\",1,2]").unwrap_err().to_string();
        assert!(msg.contains("more than one argument"), "{msg}");
    }
}
