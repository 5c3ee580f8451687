//! Typed Cytube events, both directions.
//!
//! [`ServerEvent`] covers every server → client event in `CYTUBE.md`;
//! [`ClientEvent`] every client → server request. Each has `decode(name,
//! payload)` (from a parsed [`crate::frame::SioPacket::Event`]), `name()` and
//! `to_frame()`, so the host, the simulator and the plugin SDK share one
//! vocabulary.
//!
//! Decoding rules:
//! - An unknown event name is never an error: it becomes `Unknown { name, payload }`
//!   so a newer server cannot break the client.
//! - A known name whose payload does not fit is a [`DecodeError`] naming the
//!   event and the mismatch.
//! - Events that carry nothing (`channelNotRegistered`, `closePoll`, …) ignore
//!   whatever payload arrives (`closePoll` comes as `null`).

mod client;
mod html;
pub mod lenient;
mod types;

pub use client::*;
pub use html::unescape_chat;
pub use lenient::Uid;
pub use types::*;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::frame::{self, FrameError};

/// A known event whose payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event needs a payload and arrived without one.
    #[error(
        "event \"{event}\" arrived without a payload, but it carries {expected}; the peer may speak another Cytube version"
    )]
    MissingPayload {
        /// Event name.
        event: &'static str,
        /// The Rust type expected.
        expected: &'static str,
    },
    /// The payload does not match the event's shape.
    #[error(
        "event \"{event}\" has a payload that is not a valid {expected}: {source}; the peer may speak another Cytube version"
    )]
    BadPayload {
        /// Event name.
        event: &'static str,
        /// The Rust type expected.
        expected: &'static str,
        /// What serde_json found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// The event whose payload failed.
    pub fn event(&self) -> &'static str {
        match self {
            DecodeError::MissingPayload { event, .. } | DecodeError::BadPayload { event, .. } => {
                event
            }
        }
    }
}

/// How an event payload type reads and writes its JSON.
trait Payload: Sized {
    fn from_json(json: &str) -> serde_json::Result<Self>;
    fn to_json(&self) -> serde_json::Result<String>;
}

macro_rules! serde_payload {
    ($($t:ty),* $(,)?) => {$(
        impl Payload for $t {
            fn from_json(json: &str) -> serde_json::Result<Self> {
                serde_json::from_str(json)
            }
            fn to_json(&self) -> serde_json::Result<String> {
                serde_json::to_string(self)
            }
        }
    )*};
}

serde_payload!(
    bool,
    String,
    Uid,
    Map<String, Value>,
    Vec<User>,
    Vec<PlaylistItem>,
    Vec<Emote>,
    User,
    ChatMsg,
    Pm,
    Permissions,
    ChannelCssJs,
    ChannelOpts,
    PlaylistMeta,
    ChangeMedia,
    MediaUpdate,
    Queue,
    Delete,
    MoveVideo,
    SetTemp,
    QueueFail,
    QueueWarn,
    Poll,
    UserLeave,
    SetUserRank,
    SetAfk,
    SetUserMeta,
    SetUserProfile,
    LoginReply,
    Voteskip,
    ErrorMsg,
    Kick,
    NoFlood,
    SpamFiltered,
    ChannelRankFail,
    Announcement,
    Emote,
    ChatMsgOut,
    PmOut,
    QueueOut,
    JoinChannel,
    Login,
    MoveMedia,
    AssignLeader,
    NewPoll,
    Vote,
    SetChannelRank,
    SetMotd,
    LeaderMediaUpdate,
);

impl Payload for f64 {
    fn from_json(json: &str) -> serde_json::Result<Self> {
        lenient::f64_from_json(json)
    }
    fn to_json(&self) -> serde_json::Result<String> {
        lenient::f64_to_json(*self)
    }
}

impl Payload for u64 {
    fn from_json(json: &str) -> serde_json::Result<Self> {
        lenient::u64_from_json(json)
    }
    fn to_json(&self) -> serde_json::Result<String> {
        Ok(self.to_string())
    }
}

fn decode_payload<T: Payload>(
    event: &'static str,
    expected: &'static str,
    payload: Option<&RawValue>,
) -> Result<T, DecodeError> {
    let raw = payload.ok_or(DecodeError::MissingPayload { event, expected })?;
    T::from_json(raw.get()).map_err(|source| DecodeError::BadPayload {
        event,
        expected,
        source,
    })
}

/// Generates an event enum with `decode`, `name`, `payload_json` and `to_frame`.
/// `unit` events carry no payload; `typed` events carry one of the given type.
macro_rules! event_enum {
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident {
            unit { $( $(#[$um:meta])* $UVar:ident = $uname:literal, )* }
            typed { $( $(#[$tm:meta])* $TVar:ident($Ty:ty) = $tname:literal, )* }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub enum $Enum {
            $( $(#[$um])* $UVar, )*
            $( $(#[$tm])* $TVar($Ty), )*
            /// An event this crate does not know, kept raw.
            Unknown {
                /// Event name as sent.
                name: String,
                /// Payload as sent (`None` when absent).
                payload: Option<Box<RawValue>>,
            },
        }

        impl $Enum {
            /// Every event name this enum decodes (all others become `Unknown`).
            pub const KNOWN_NAMES: &'static [&'static str] = &[$($uname,)* $($tname,)*];

            /// Decodes one event. Unknown names give `Unknown`; a known name with a
            /// payload that does not fit gives a [`DecodeError`].
            pub fn decode(name: &str, payload: Option<&RawValue>) -> Result<Self, DecodeError> {
                match name {
                    $( $uname => Ok($Enum::$UVar), )*
                    $( $tname => decode_payload::<$Ty>($tname, stringify!($Ty), payload)
                        .map($Enum::$TVar), )*
                    _ => Ok($Enum::Unknown {
                        name: name.to_owned(),
                        payload: payload.map(ToOwned::to_owned),
                    }),
                }
            }

            /// The wire name of this event.
            pub fn name(&self) -> &str {
                match self {
                    $( $Enum::$UVar => $uname, )*
                    $( $Enum::$TVar(_) => $tname, )*
                    $Enum::Unknown { name, .. } => name,
                }
            }

            /// The payload as JSON text; `None` for events without one.
            pub fn payload_json(&self) -> Result<Option<String>, FrameError> {
                match self {
                    $( $Enum::$UVar => Ok(None), )*
                    $( $Enum::$TVar(p) => p.to_json().map(Some).map_err(FrameError::Encode), )*
                    $Enum::Unknown { payload, .. } => Ok(payload.as_ref().map(|p| p.get().to_owned())),
                }
            }

            /// The complete `42[…]` frame for this event.
            pub fn to_frame(&self) -> Result<String, FrameError> {
                let json = self.payload_json()?;
                Ok(frame::encode_event_raw(self.name(), json.as_deref()))
            }
        }
    };
}

event_enum! {
    /// Every server → client event of `CYTUBE.md`.
    pub enum ServerEvent {
        unit {
            /// The channel is unregistered (sent on join).
            ChannelNotRegistered = "channelNotRegistered",
            /// The viewer's own voteskip vote was cleared.
            ClearVoteskipVote = "clearVoteskipVote",
            /// Chat was cleared (`/clear`).
            ClearChat = "clearchat",
            /// The open poll closed.
            ClosePoll = "closePoll",
            /// The channel password was accepted.
            CancelNeedPassword = "cancelNeedPassword",
        }
        typed {
            /// The bot's own rank.
            Rank(f64) = "rank",
            /// Permission thresholds.
            SetPermissions(Permissions) = "setPermissions",
            /// Playlist lock.
            SetPlaylistLocked(bool) = "setPlaylistLocked",
            /// All channel emotes.
            EmoteList(Vec<Emote>) = "emoteList",
            /// One emote added or changed.
            UpdateEmote(Emote) = "updateEmote",
            /// One emote removed.
            RemoveEmote(Emote) = "removeEmote",
            /// A chat line.
            ChatMsg(ChatMsg) = "chatMsg",
            /// A private message (to or from the bot).
            Pm(Pm) = "pm",
            /// Drink counter.
            DrinkCount(u64) = "drinkCount",
            /// Channel CSS / JS.
            ChannelCssJs(ChannelCssJs) = "channelCSSJS",
            /// MOTD HTML.
            SetMotd(String) = "setMotd",
            /// Channel options.
            ChannelOpts(ChannelOpts) = "channelOpts",
            /// Playlist size and length.
            SetPlaylistMeta(PlaylistMeta) = "setPlaylistMeta",
            /// The whole playlist, in order.
            Playlist(Vec<PlaylistItem>) = "playlist",
            /// The uid now current.
            SetCurrent(Uid) = "setCurrent",
            /// New media starts.
            ChangeMedia(ChangeMedia) = "changeMedia",
            /// Playback position.
            MediaUpdate(MediaUpdate) = "mediaUpdate",
            /// An item was queued.
            Queue(Queue) = "queue",
            /// An item was deleted.
            Delete(Delete) = "delete",
            /// An item moved.
            MoveVideo(MoveVideo) = "moveVideo",
            /// An item's temp flag changed.
            SetTemp(SetTemp) = "setTemp",
            /// A queue request failed.
            QueueFail(QueueFail) = "queueFail",
            /// A queue request succeeded with a warning.
            QueueWarn(QueueWarn) = "queueWarn",
            /// A poll opened.
            NewPoll(Poll) = "newPoll",
            /// Poll counts changed.
            UpdatePoll(Poll) = "updatePoll",
            /// Everyone in the channel (replaces the list).
            Userlist(Vec<User>) = "userlist",
            /// Someone joined (or re-joined).
            AddUser(User) = "addUser",
            /// Someone left.
            UserLeave(UserLeave) = "userLeave",
            /// Someone's rank changed.
            SetUserRank(SetUserRank) = "setUserRank",
            /// Someone went AFK or came back.
            SetAfk(SetAfk) = "setAFK",
            /// Someone's meta changed (AFK, mute).
            SetUserMeta(SetUserMeta) = "setUserMeta",
            /// Someone's profile changed.
            SetUserProfile(SetUserProfile) = "setUserProfile",
            /// The leader's name (`""`: none).
            SetLeader(String) = "setLeader",
            /// Connected sockets, anonymous ones included.
            Usercount(u64) = "usercount",
            /// Reply to `login`.
            Login(LoginReply) = "login",
            /// Voteskip tally.
            Voteskip(Voteskip) = "voteskip",
            /// An error for the bot.
            ErrorMsg(ErrorMsg) = "errorMsg",
            /// The bot is being kicked; a disconnect follows.
            Kick(Kick) = "kick",
            /// A chat / PM was dropped by flood control; retry after this many ms.
            Cooldown(u64) = "cooldown",
            /// A chat was refused (e.g. muted).
            NoFlood(NoFlood) = "noflood",
            /// A chat was dropped by the new-account restriction.
            SpamFiltered(SpamFiltered) = "spamFiltered",
            /// A rank change failed.
            ChannelRankFail(ChannelRankFail) = "channelRankFail",
            /// The channel wants a password (`true`: the last one was wrong).
            NeedPassword(bool) = "needPassword",
            /// A site announcement.
            Announcement(Announcement) = "announcement",
        }
    }
}

event_enum! {
    /// Every client → server request of `CYTUBE.md`.
    pub enum ClientEvent {
        unit {
            /// Skip to the next item.
            PlayNext = "playNext",
            /// Shuffle the playlist.
            ShufflePlaylist = "shufflePlaylist",
            /// Empty the playlist.
            ClearPlaylist = "clearPlaylist",
            /// Ask for the full playlist (once per 60 s).
            RequestPlaylist = "requestPlaylist",
            /// Close the open poll.
            ClosePoll = "closePoll",
            /// Vote to skip the current item.
            Voteskip = "voteskip",
        }
        typed {
            /// Join a channel (first one per socket only).
            JoinChannel(JoinChannel) = "joinChannel",
            /// Log in (account or guest).
            Login(Login) = "login",
            /// Send a chat line (or a slash command).
            ChatMsg(ChatMsgOut) = "chatMsg",
            /// Send a private message.
            Pm(PmOut) = "pm",
            /// Queue media.
            Queue(QueueOut) = "queue",
            /// Delete an item (bare uid).
            Delete(Uid) = "delete",
            /// Move an item.
            MoveMedia(MoveMedia) = "moveMedia",
            /// Jump to an item (bare uid).
            JumpTo(Uid) = "jumpTo",
            /// Change an item's temp flag.
            SetTemp(SetTemp) = "setTemp",
            /// Give or take the leader.
            AssignLeader(AssignLeader) = "assignLeader",
            /// Open a poll.
            NewPoll(NewPoll) = "newPoll",
            /// Vote in the open poll.
            Vote(Vote) = "vote",
            /// Change someone's channel rank.
            SetChannelRank(SetChannelRank) = "setChannelRank",
            /// Change the MOTD (KICKS without the rank).
            SetMotd(SetMotd) = "setMotd",
            /// Change channel options (KICKS without the rank).
            SetOptions(Map<String, Value>) = "setOptions",
            /// Change permissions (KICKS without the rank).
            SetPermissions(Permissions) = "setPermissions",
            /// Answer `needPassword`.
            ChannelPassword(String) = "channelPassword",
            /// Leader's playback position.
            MediaUpdate(LeaderMediaUpdate) = "mediaUpdate",
        }
    }
}

impl ClientEvent {
    /// `chatMsg {msg, meta:{}}`.
    pub fn chat(msg: impl Into<String>) -> Self {
        ClientEvent::ChatMsg(ChatMsgOut {
            msg: msg.into(),
            meta: Map::new(),
        })
    }

    /// `pm {to, msg, meta:{}}`.
    pub fn pm(to: impl Into<String>, msg: impl Into<String>) -> Self {
        ClientEvent::Pm(PmOut {
            to: to.into(),
            msg: msg.into(),
            meta: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{EioPacket, SioPacket, parse};

    fn decode_frame(frame: &str) -> Result<ServerEvent, DecodeError> {
        match parse(frame).unwrap() {
            EioPacket::Message(SioPacket::Event { name, payload, .. }) => {
                ServerEvent::decode(&name, payload)
            }
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn decodes_captured_frames() {
        let ev =
            decode_frame(r#"42["login",{"success":true,"name":"rawguest","guest":true}]"#).unwrap();
        let ServerEvent::Login(reply) = ev else {
            panic!("{ev:?}")
        };
        assert!(reply.success && reply.guest);
        assert_eq!(reply.name.as_deref(), Some("rawguest"));

        assert!(matches!(
            decode_frame(r#"42["rank",1.5]"#).unwrap(),
            ServerEvent::Rank(r) if r == 1.5
        ));
        assert!(matches!(
            decode_frame(r#"42["channelNotRegistered"]"#).unwrap(),
            ServerEvent::ChannelNotRegistered
        ));
        assert!(matches!(
            decode_frame(r#"42["closePoll",null]"#).unwrap(),
            ServerEvent::ClosePoll
        ));
        assert!(matches!(
            decode_frame(r#"42["setCurrent","2"]"#).unwrap(),
            ServerEvent::SetCurrent(Uid(2))
        ));
        let ev = decode_frame(r#"42["changeMedia",{"id":"a","title":"T","seconds":8,"duration":"00:08","type":"tw","meta":{},"currentTime":-3,"paused":true}]"#).unwrap();
        let ServerEvent::ChangeMedia(cm) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (
                cm.media.id.as_str(),
                cm.media.seconds,
                cm.current_time,
                cm.paused
            ),
            ("a", 8.0, -3.0, true)
        );
    }

    #[test]
    fn unknown_events_are_kept_raw() {
        let ev = decode_frame(r#"42["costanza",{"x":[1]}]"#).unwrap();
        let ServerEvent::Unknown { name, payload } = &ev else {
            panic!("{ev:?}")
        };
        assert_eq!(name, "costanza");
        assert_eq!(payload.as_ref().map(|p| p.get()), Some(r#"{"x":[1]}"#));
        assert_eq!(ev.to_frame().unwrap(), r#"42["costanza",{"x":[1]}]"#);
    }

    #[test]
    fn malformed_known_payload_names_the_event() {
        let err = decode_frame(r#"42["chatMsg",12]"#).unwrap_err();
        assert_eq!(err.event(), "chatMsg");
        assert!(err.to_string().contains("\"chatMsg\""), "{err}");
        let err = decode_frame(r#"42["queue",{"item":{}}]"#).unwrap_err();
        assert!(err.to_string().contains("Queue"), "{err}");
        let err = ServerEvent::decode("usercount", None).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::MissingPayload {
                event: "usercount",
                ..
            }
        ));
    }

    #[test]
    fn client_events_match_the_capture_format() {
        assert_eq!(
            ClientEvent::chat("hello from testbot").to_frame().unwrap(),
            r#"42["chatMsg",{"msg":"hello from testbot","meta":{}}]"#
        );
        assert_eq!(
            ClientEvent::Delete(Uid(1)).to_frame().unwrap(),
            r#"42["delete",1]"#
        );
        assert_eq!(
            ClientEvent::PlayNext.to_frame().unwrap(),
            r#"42["playNext"]"#
        );
        let q = ClientEvent::Queue(QueueOut {
            id: "cytube_test_stream_c".into(),
            media_type: "tw".into(),
            pos: QueuePos::Next,
            temp: Some(true),
            duration: Some(40.0),
            title: None,
        });
        assert_eq!(
            q.to_frame().unwrap(),
            r#"42["queue",{"id":"cytube_test_stream_c","type":"tw","pos":"next","temp":true,"duration":40}]"#
        );
        assert_eq!(
            ClientEvent::Login(Login {
                name: "testbot".into(),
                pw: None
            })
            .to_frame()
            .unwrap(),
            r#"42["login",{"name":"testbot"}]"#
        );
    }

    #[test]
    fn client_type_errors_are_decode_errors() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"msg":12345}"#).unwrap();
        let err = ClientEvent::decode("chatMsg", Some(&raw)).unwrap_err();
        assert!(
            err.to_string().contains("invalid type: integer `12345`"),
            "{err}"
        );
        let raw: Box<RawValue> = serde_json::from_str(r#""notanobject""#).unwrap();
        assert!(ClientEvent::decode("login", Some(&raw)).is_err());
    }

    #[test]
    fn server_events_round_trip_through_frames() {
        let frames = [
            r#"42["rank",1.5]"#,
            r#"42["rank",-1]"#,
            r#"42["usercount",3]"#,
            r#"42["setMotd","Welcome <b>bots</b>! "]"#,
            r#"42["setLeader",""]"#,
            r#"42["delete",{"uid":12}]"#,
            r#"42["queue",{"item":{"media":{"id":"x","title":"X","seconds":8,"duration":"00:08","type":"tw","meta":{}},"uid":1,"temp":false,"queueby":"chanboss"},"after":0}]"#,
            r#"42["moveVideo",{"from":2,"after":"prepend"}]"#,
            r#"42["chatMsg",{"username":"chanboss","msg":"waves","meta":{"action":true,"addClass":"action"},"time":1795339107644}]"#,
            r#"42["mediaUpdate",{"currentTime":5.002,"paused":false}]"#,
            r#"42["userlist",[{"name":"testbot","rank":1,"profile":{"image":"","text":""},"meta":{"afk":false,"muted":false}}]]"#,
            r#"42["login",{"success":false,"error":"That username is reserved."}]"#,
            r#"42["cooldown",100]"#,
            r#"42["needPassword",false]"#,
            r#"42["cancelNeedPassword"]"#,
        ];
        for f in frames {
            let ev = decode_frame(f).unwrap();
            assert!(!matches!(ev, ServerEvent::Unknown { .. }), "{f}");
            assert_eq!(ev.to_frame().unwrap(), f);
        }
    }

    #[test]
    fn known_names_are_unique() {
        let mut names = ServerEvent::KNOWN_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ServerEvent::KNOWN_NAMES.len());
        let mut names = ClientEvent::KNOWN_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ClientEvent::KNOWN_NAMES.len());
    }
}
