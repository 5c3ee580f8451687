//! Payload structs of server → client events (see `shared/docs/CYTUBE.md`).
//!
//! Fields the server may omit are `#[serde(default)]`; unknown fields are
//! ignored; numbers go through [`super::lenient`] so uids, ranks and times
//! accept every spelling JavaScript produces. Fields that identify what an event
//! is about (a user name, a uid) are required: without them the event means
//! nothing, and decoding reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::lenient::{self, Uid};

fn is_false(b: &bool) -> bool {
    !*b
}

/// A user as listed by `userlist` / `addUser`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct User {
    /// Display name; compare case-insensitively.
    pub name: String,
    /// Channel rank (−1 anonymous … 255 site admin; 1.5 is the leader).
    #[serde(default, with = "lenient::f64")]
    pub rank: f64,
    /// Avatar and profile text.
    #[serde(default)]
    pub profile: Profile,
    /// AFK / mute flags (and, for moderators, more).
    #[serde(default)]
    pub meta: UserMeta,
}

/// `User.profile`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// Avatar URL.
    pub image: String,
    /// Profile text.
    pub text: String,
}

/// `User.meta`. Moderators also see `smuted`, `aliases` and a masked `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserMeta {
    /// Marked AFK.
    pub afk: bool,
    /// Muted in this channel.
    pub muted: bool,
    /// Shadow-muted (moderators only see this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smuted: Option<bool>,
    /// Known aliases (moderators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// Masked IP (moderators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `chatMsg.meta` / `pm.meta`. Absent flags are false / `None`; the server sends
/// `{}` for plain messages and so does serialization.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ChatMeta {
    /// `/me` action.
    #[serde(skip_serializing_if = "is_false")]
    pub action: bool,
    /// CSS class: action, spoiler, shout, greentext, drink, server-whisper.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_class: Option<String>,
    /// Apply `add_class` to the name and timestamp too.
    #[serde(skip_serializing_if = "is_false")]
    pub add_class_to_name_and_timestamp: bool,
    /// Show the sender name even for consecutive messages.
    #[serde(skip_serializing_if = "is_false")]
    pub force_show_name: bool,
    /// Moderator flair (the sender's rank).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modflair: Option<Value>,
    /// Site-admin flair `{labelclass, icon}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superadminflair: Option<Value>,
    /// Sent by a shadow-muted user (moderators only see these).
    #[serde(skip_serializing_if = "is_false")]
    pub shadow: bool,
}

/// `chatMsg`: a chat line. `msg` is sanitized HTML; see [`super::unescape_chat`].
///
/// Backlog lines sent on join carry old `time` values: never react to those.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatMsg {
    /// Sender (or the pseudo-users `[server]`, `[voteskip]`).
    pub username: String,
    /// Sanitized HTML text.
    pub msg: String,
    /// Flags.
    #[serde(default)]
    pub meta: ChatMeta,
    /// Epoch ms when the server accepted it.
    #[serde(default, with = "lenient::i64")]
    pub time: i64,
}

/// `pm`: a private message, delivered to both sender and recipient.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Pm {
    /// Sender.
    pub username: String,
    /// Sanitized HTML text.
    pub msg: String,
    /// Flags.
    #[serde(default)]
    pub meta: ChatMeta,
    /// Epoch ms.
    #[serde(default, with = "lenient::i64")]
    pub time: i64,
    /// Recipient.
    #[serde(default)]
    pub to: String,
}

/// A media description (`playlist` items, `changeMedia`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Media {
    /// Provider id (e.g. a YouTube id).
    pub id: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Length in seconds; use this, not `duration`. Live media may be 0.
    #[serde(default, with = "lenient::f64")]
    pub seconds: f64,
    /// `seconds` formatted as `mm:ss` / `hh:mm:ss`, for display only.
    #[serde(default)]
    pub duration: String,
    /// Provider type (`yt`, `tw`, `fi`, …).
    #[serde(rename = "type")]
    pub media_type: String,
    /// Provider-specific extras, kept as sent.
    #[serde(default)]
    pub meta: Map<String, Value>,
}

/// One playlist entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlaylistItem {
    /// What plays.
    pub media: Media,
    /// Position key: the playlist is a linked list of uids.
    pub uid: Uid,
    /// Temporary items are deleted after they play.
    #[serde(default)]
    pub temp: bool,
    /// Who queued it.
    #[serde(default)]
    pub queueby: String,
}

/// Where a `queue`d item goes: after a uid, or at the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Insert after this uid.
    Uid(u64),
    /// Insert at the head.
    Prepend,
}

/// Where `moveVideo` / `moveMedia` puts an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveAfter {
    /// After this uid.
    Uid(u64),
    /// At the head.
    Prepend,
    /// At the tail.
    Append,
}

fn position<'de, D: Deserializer<'de>>(d: D, allow_append: bool) -> Result<MoveAfter, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(Uid),
        Word(String),
    }
    match Raw::deserialize(d)? {
        Raw::Num(uid) => Ok(MoveAfter::Uid(uid.0)),
        Raw::Word(w) if w == "prepend" => Ok(MoveAfter::Prepend),
        Raw::Word(w) if w == "append" && allow_append => Ok(MoveAfter::Append),
        Raw::Word(w) => Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&w),
            &if allow_append {
                "a uid, \"prepend\" or \"append\""
            } else {
                "a uid or \"prepend\""
            },
        )),
    }
}

impl<'de> Deserialize<'de> for After {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match position(d, false)? {
            MoveAfter::Uid(u) => Ok(After::Uid(u)),
            _ => Ok(After::Prepend),
        }
    }
}

impl Serialize for After {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            After::Uid(u) => s.serialize_u64(*u),
            After::Prepend => s.serialize_str("prepend"),
        }
    }
}

impl<'de> Deserialize<'de> for MoveAfter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        position(d, true)
    }
}

impl Serialize for MoveAfter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MoveAfter::Uid(u) => s.serialize_u64(*u),
            MoveAfter::Prepend => s.serialize_str("prepend"),
            MoveAfter::Append => s.serialize_str("append"),
        }
    }
}

/// `queue {item, after}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    /// The new item.
    pub item: PlaylistItem,
    /// Where it goes.
    pub after: After,
}

/// `delete {uid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    /// The removed item.
    pub uid: Uid,
}

/// `moveVideo {from, after}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveVideo {
    /// The moved item.
    pub from: Uid,
    /// Its new place.
    pub after: MoveAfter,
}

/// `setTemp {uid, temp}` (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTemp {
    /// The item.
    pub uid: Uid,
    /// New temp flag.
    pub temp: bool,
}

/// `changeMedia`: the media fields plus the playback position.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChangeMedia {
    /// What now plays.
    #[serde(flatten)]
    pub media: Media,
    /// Position in seconds (−3 means "starts in 3 s").
    #[serde(rename = "currentTime", default, with = "lenient::f64")]
    pub current_time: f64,
    /// Paused.
    #[serde(default)]
    pub paused: bool,
}

/// `mediaUpdate {currentTime, paused}` (every 5 s while playing).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MediaUpdate {
    /// Position in seconds.
    #[serde(rename = "currentTime", with = "lenient::f64")]
    pub current_time: f64,
    /// Paused.
    #[serde(default)]
    pub paused: bool,
}

/// `setPlaylistMeta {count, rawTime, time}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlaylistMeta {
    /// Number of items.
    #[serde(with = "lenient::u64")]
    pub count: u64,
    /// Total length in seconds.
    #[serde(rename = "rawTime", with = "lenient::f64")]
    pub raw_time: f64,
    /// Total length formatted.
    pub time: String,
}

/// `chat_antiflood_params`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AntifloodParams {
    /// Messages allowed back-to-back.
    #[serde(with = "lenient::u64")]
    pub burst: u64,
    /// Messages per second after the burst.
    #[serde(with = "lenient::f64")]
    pub sustained: f64,
    /// Idle seconds after which the burst is available again.
    #[serde(with = "lenient::f64")]
    pub cooldown: f64,
}

impl Default for AntifloodParams {
    /// Cytube's defaults: burst 4, 1 per second, reset after 4 s.
    fn default() -> Self {
        AntifloodParams {
            burst: 4,
            sustained: 1.0,
            cooldown: 4.0,
        }
    }
}

/// `channelOpts`. The fields the bot acts on are typed; everything else is
/// kept in `rest` so that nothing the server sent is lost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelOpts {
    /// Chat antiflood for users below rank 2.
    pub chat_antiflood: bool,
    /// Its limits.
    pub chat_antiflood_params: AntifloodParams,
    /// Seconds a new account must wait before chatting.
    #[serde(with = "lenient::u64")]
    pub new_user_chat_delay: u64,
    /// Seconds a new account must wait before posting links.
    #[serde(with = "lenient::u64")]
    pub new_user_chat_link_delay: u64,
    /// Seconds before an idle user is marked AFK (0: never).
    #[serde(with = "lenient::u64")]
    pub afk_timeout: u64,
    /// Voteskip enabled.
    pub allow_voteskip: bool,
    /// Fraction of users needed to skip.
    #[serde(with = "lenient::f64")]
    pub voteskip_ratio: f64,
    /// Every other option, as sent.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `setPermissions`: permission name → minimum rank.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Permissions(pub BTreeMap<String, f64>);

impl Permissions {
    /// Minimum rank for `name`, if the server sent it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// Whether `rank` may do `name`. Unknown permissions are denied.
    pub fn allows(&self, name: &str, rank: f64) -> bool {
        self.get(name).is_some_and(|min| rank >= min)
    }
}

/// A poll option's vote count; `None` when the poll is obscured for this viewer
/// (the server then sends `"?"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoteCount(pub Option<u64>);

impl<'de> Deserialize<'de> for VoteCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Anything that is not a count ("?" for obscured polls) means "hidden".
        let count = match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        Ok(VoteCount(count))
    }
}

impl Serialize for VoteCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str("?"),
        }
    }
}

/// `newPoll` / `updatePoll`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Poll {
    /// Question.
    pub title: String,
    /// Options, in order (`vote {option: index}`).
    pub options: Vec<String>,
    /// Votes per option.
    pub counts: Vec<VoteCount>,
    /// Who opened it.
    pub initiator: String,
    /// Epoch ms when opened.
    #[serde(with = "lenient::i64")]
    pub timestamp: i64,
}

/// `login` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoginReply {
    /// Whether the login worked.
    pub success: bool,
    /// The (canonically cased) name on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Logged in as a guest.
    #[serde(default, skip_serializing_if = "is_false")]
    pub guest: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `kick {reason}`; the server disconnects right after.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Kick {
    /// Why.
    pub reason: String,
}

/// `errorMsg {msg, alert?, code?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorMsg {
    /// Human-readable message.
    pub msg: String,
    /// Show as an alert.
    #[serde(skip_serializing_if = "is_false")]
    pub alert: bool,
    /// Machine-readable code (e.g. `REQ_PLAYLIST_LIMIT_REACHED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `noflood {action, msg}` (e.g. muted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NoFlood {
    /// What was refused (`chat`).
    pub action: String,
    /// Why.
    pub msg: String,
}

/// `spamFiltered {reason}`: a new-account restriction dropped a message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpamFiltered {
    /// `NEW_USER_CHAT` or `NEW_USER_CHAT_LINK`.
    pub reason: String,
}

/// `queueFail {msg, link, id}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueFail {
    /// Why.
    pub msg: String,
    /// Link of the media that failed.
    pub link: Option<String>,
    /// Its id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `queueWarn {msg, link}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueWarn {
    /// Warning text.
    pub msg: String,
    /// Link of the media.
    pub link: Option<String>,
}

/// `voteskip {count, need}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Voteskip {
    /// Votes so far.
    #[serde(with = "lenient::u64")]
    pub count: u64,
    /// Votes needed.
    #[serde(with = "lenient::u64")]
    pub need: u64,
}

/// `userLeave {name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLeave {
    /// Who left.
    pub name: String,
}

/// `setUserRank {name, rank}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetUserRank {
    /// Whose rank.
    pub name: String,
    /// New rank.
    #[serde(with = "lenient::f64")]
    pub rank: f64,
}

/// `setAFK {name, afk}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAfk {
    /// Who.
    pub name: String,
    /// AFK now.
    pub afk: bool,
}

/// `setUserMeta {name, meta}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetUserMeta {
    /// Who.
    pub name: String,
    /// Their complete new meta.
    #[serde(default)]
    pub meta: UserMeta,
}

/// `setUserProfile {name, profile}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetUserProfile {
    /// Who.
    pub name: String,
    /// Their new profile.
    #[serde(default)]
    pub profile: Profile,
}

/// `channelRankFail {msg}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelRankFail {
    /// Why.
    pub msg: String,
}

/// `channelCSSJS`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelCssJs {
    /// Channel CSS.
    pub css: String,
    /// Its hash.
    #[serde(rename = "cssHash")]
    pub css_hash: String,
    /// Channel JS.
    pub js: String,
    /// Its hash.
    #[serde(rename = "jsHash")]
    pub js_hash: String,
}

/// One entry of `emoteList` (also `updateEmote` / `removeEmote`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Emote {
    /// The text that triggers it.
    pub name: String,
    /// Image URL.
    pub image: String,
    /// Regex source.
    pub source: String,
}

/// `announcement {title, text, from}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Announcement {
    /// Title.
    pub title: String,
    /// HTML text.
    pub text: String,
    /// Who announced.
    pub from: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_and_move_after_spellings() {
        assert_eq!(serde_json::from_str::<After>("0").unwrap(), After::Uid(0));
        assert_eq!(
            serde_json::from_str::<After>("\"12\"").unwrap(),
            After::Uid(12)
        );
        assert_eq!(
            serde_json::from_str::<After>("\"prepend\"").unwrap(),
            After::Prepend
        );
        assert!(serde_json::from_str::<After>("\"append\"").is_err());
        assert_eq!(
            serde_json::from_str::<MoveAfter>("\"append\"").unwrap(),
            MoveAfter::Append
        );
        let err = serde_json::from_str::<MoveAfter>("\"sideways\"").unwrap_err();
        assert!(
            err.to_string().contains("a uid, \"prepend\" or \"append\""),
            "{err}"
        );
        assert_eq!(serde_json::to_string(&MoveAfter::Uid(3)).unwrap(), "3");
        assert_eq!(
            serde_json::to_string(&After::Prepend).unwrap(),
            "\"prepend\""
        );
    }

    #[test]
    fn channel_opts_keep_unknown_fields() {
        let json = r#"{"allow_voteskip":true,"voteskip_ratio":0.5,"afk_timeout":600,"pagetitle":"botchan","chat_antiflood":true,"chat_antiflood_params":{"burst":4,"sustained":1,"cooldown":4},"new_user_chat_delay":86400,"new_user_chat_link_delay":0,"password":false}"#;
        let o: ChannelOpts = serde_json::from_str(json).unwrap();
        assert!(o.chat_antiflood);
        assert_eq!(o.chat_antiflood_params, AntifloodParams::default());
        assert_eq!(o.new_user_chat_delay, 86_400);
        assert_eq!(o.afk_timeout, 600);
        assert_eq!(o.rest.get("pagetitle"), Some(&Value::from("botchan")));
        assert_eq!(o.rest.get("password"), Some(&Value::from(false)));
        let back: Value = serde_json::to_value(&o).unwrap();
        let orig: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn obscured_poll_counts() {
        let p: Poll = serde_json::from_str(
            r#"{"title":"t","options":["a","b"],"counts":["?",2],"initiator":"x","timestamp":1}"#,
        )
        .unwrap();
        assert_eq!(p.counts, [VoteCount(None), VoteCount(Some(2))]);
        assert!(
            serde_json::to_string(&p)
                .unwrap()
                .contains(r#""counts":["?",2]"#)
        );
    }

    #[test]
    fn chat_meta_round_trips_compactly() {
        let m: ChatMeta = serde_json::from_str(
            r#"{"addClass":"server-whisper","addClassToNameAndTimestamp":true}"#,
        )
        .unwrap();
        assert_eq!(m.add_class.as_deref(), Some("server-whisper"));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"addClass":"server-whisper","addClassToNameAndTimestamp":true}"#
        );
        assert_eq!(serde_json::to_string(&ChatMeta::default()).unwrap(), "{}");
    }

    #[test]
    fn permissions_allow_by_rank() {
        let p: Permissions =
            serde_json::from_str(r#"{"chat":0,"playlistadd":1.5,"motdedit":3}"#).unwrap();
        assert!(p.allows("chat", 0.0));
        assert!(!p.allows("playlistadd", 1.0));
        assert!(p.allows("playlistadd", 1.5));
        assert!(!p.allows("nosuchperm", 255.0));
    }
}
