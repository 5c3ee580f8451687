//! Links to media: a URL (or Cytube's short `type:id` form) turned into the `{type, id}`
//! of the server's `queue` frame, for the providers Cytube plays. Anything else is
//! refused with what the bot does accept.

use std::fmt;

/// Longest link accepted, in characters.
pub const MAX_LINK: usize = 500;

/// One piece of media as Cytube names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaRef {
    /// Provider type: `yt`, `vi`, `dm`, `sc`, `tw`, `tc`, `gd`, `fi`, `hl`, `rt`, `cm`.
    pub kind: String,
    /// The provider's id (the whole URL for `sc`, `fi`, `hl`, `rt`, `cm`).
    pub id: String,
}

impl MediaRef {
    fn new(kind: &str, id: impl Into<String>) -> Self {
        MediaRef {
            kind: kind.to_owned(),
            id: id.into(),
        }
    }

    /// Live streams: the server needs `playlistaddlive` for them.
    pub fn is_live(&self) -> bool {
        matches!(self.kind.as_str(), "tw" | "hl" | "rt" | "li")
    }
}

impl fmt::Display for MediaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// What the bot accepts, for refusals.
pub const ACCEPTED: &str = "YouTube, Vimeo, Dailymotion, SoundCloud, Twitch, Google Drive, or a direct https link to a .mp4/.webm/.mp3/.ogg file, an .m3u8 stream or a .json manifest";

const SHORT_KINDS: &[&str] = &[
    "yt", "vi", "dm", "sc", "tw", "tc", "gd", "fi", "hl", "rt", "cm",
];

fn youtube_id(id: &str) -> Option<String> {
    (id.len() == 11
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| id.to_owned())
}

fn word(id: &str, max: usize) -> Option<String> {
    (!id.is_empty()
        && id.len() <= max
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| id.to_owned())
}

/// Parses a link. `Err` is the answer for the user.
pub fn parse(link: &str) -> Result<MediaRef, String> {
    let link = link.trim().trim_start_matches('<').trim_end_matches('>');
    if link.is_empty() {
        return Err(format!("Add what? Give me a link: {ACCEPTED}."));
    }
    if link.chars().count() > MAX_LINK {
        return Err(format!("That link is longer than {MAX_LINK} characters."));
    }
    if let Some((kind, id)) = link.split_once(':')
        && SHORT_KINDS.contains(&kind)
        && !id.starts_with("//")
    {
        return short(kind, id);
    }
    let unknown = || format!("I cannot add that link. I take {ACCEPTED}.");
    let url = url::Url::parse(link).map_err(|_| unknown())?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches("www.")
        .trim_start_matches("m.")
        .to_ascii_lowercase();
    let scheme = url.scheme();
    if scheme == "rtmp" {
        return Ok(MediaRef::new("rt", link));
    }
    if scheme != "https" && scheme != "http" {
        return Err(unknown());
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let bad_id = |what: &str| format!("That {what} link has no valid id.");
    match host.as_str() {
        "youtube.com" | "music.youtube.com" | "youtube-nocookie.com" => {
            let id = match segments.as_slice() {
                ["watch"] => query("v"),
                ["shorts" | "embed" | "live" | "v", id, ..] => Some((*id).to_owned()),
                ["playlist"] => {
                    return Err(
                        "Playlists are not added whole; add the videos one by one.".to_owned()
                    );
                }
                _ => None,
            };
            id.as_deref()
                .and_then(youtube_id)
                .map(|id| MediaRef::new("yt", id))
                .ok_or_else(|| bad_id("YouTube"))
        }
        "youtu.be" => segments
            .first()
            .and_then(|id| youtube_id(id))
            .map(|id| MediaRef::new("yt", id))
            .ok_or_else(|| bad_id("YouTube")),
        "vimeo.com" | "player.vimeo.com" => segments
            .iter()
            .rev()
            .find(|s| s.chars().all(|c| c.is_ascii_digit()))
            .filter(|s| s.len() <= 20)
            .map(|id| MediaRef::new("vi", *id))
            .ok_or_else(|| bad_id("Vimeo")),
        "dailymotion.com" => match segments.as_slice() {
            ["embed", "video", id, ..] | ["video" | "embed", id, ..] => {
                word(id.split('_').next().unwrap_or_default(), 20)
                    .map(|id| MediaRef::new("dm", id))
                    .ok_or_else(|| bad_id("Dailymotion"))
            }
            _ => Err(bad_id("Dailymotion")),
        },
        "dai.ly" => segments
            .first()
            .and_then(|id| word(id, 20))
            .map(|id| MediaRef::new("dm", id))
            .ok_or_else(|| bad_id("Dailymotion")),
        "soundcloud.com" if segments.len() >= 2 => Ok(MediaRef::new(
            "sc",
            format!("https://soundcloud.com/{}", segments.join("/")),
        )),
        "soundcloud.com" => Err(bad_id("SoundCloud")),
        "clips.twitch.tv" => segments
            .first()
            .and_then(|id| word(id, 100))
            .map(|id| MediaRef::new("tc", id))
            .ok_or_else(|| bad_id("Twitch clip")),
        "twitch.tv" => match segments.as_slice() {
            [_, "clip", id, ..] => word(id, 100)
                .map(|id| MediaRef::new("tc", id))
                .ok_or_else(|| bad_id("Twitch clip")),
            [channel] => word(channel, 25)
                .map(|c| MediaRef::new("tw", c.to_ascii_lowercase()))
                .ok_or_else(|| bad_id("Twitch")),
            _ => Err(bad_id("Twitch")),
        },
        "drive.google.com" | "docs.google.com" => match segments.as_slice() {
            [.., "d", id, _] | [.., "d", id] => word(id, 100)
                .map(|id| MediaRef::new("gd", id))
                .ok_or_else(|| bad_id("Google Drive")),
            _ => query("id")
                .and_then(|id| word(&id, 100))
                .map(|id| MediaRef::new("gd", id))
                .ok_or_else(|| bad_id("Google Drive")),
        },
        _ => {
            let path = url.path().to_ascii_lowercase();
            let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
            let kind = match ext {
                "mp4" | "webm" | "ogv" | "ogg" | "mp3" | "oga" | "m4a" | "flac" => "fi",
                "m3u8" => "hl",
                "json" => "cm",
                _ => return Err(unknown()),
            };
            if scheme != "https" {
                return Err(
                    "Direct links must be https (the server refuses plain http).".to_owned(),
                );
            }
            Ok(MediaRef::new(kind, link))
        }
    }
}

/// Cytube's short form, `yt:dQw4w9WgXcQ`.
fn short(kind: &str, id: &str) -> Result<MediaRef, String> {
    let id = id.trim();
    let ok = match kind {
        "yt" => youtube_id(id).is_some(),
        "vi" => !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit()),
        "dm" => word(id, 20).is_some(),
        "tw" | "tc" | "gd" => word(id, 100).is_some(),
        // The URL types go through the URL rules.
        _ => {
            return parse(id).and_then(|m| {
                if m.kind == kind {
                    Ok(m)
                } else {
                    Err(format!("{id} is not a {kind} link."))
                }
            });
        }
    };
    if ok {
        Ok(MediaRef::new(kind, id))
    } else {
        Err(format!("“{id}” is not a valid {kind} id."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(link: &str) -> String {
        parse(link)
            .unwrap_or_else(|e| panic!("{link}: {e}"))
            .to_string()
    }

    #[test]
    fn every_provider_cytube_plays() {
        for (link, want) in [
            (
                "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=5",
                "yt:dQw4w9WgXcQ",
            ),
            ("https://youtu.be/dQw4w9WgXcQ?si=x", "yt:dQw4w9WgXcQ"),
            ("https://m.youtube.com/shorts/dQw4w9WgXcQ", "yt:dQw4w9WgXcQ"),
            ("youtube.com/watch?v=x", ""),
            ("yt:dQw4w9WgXcQ", "yt:dQw4w9WgXcQ"),
            ("https://vimeo.com/76979871", "vi:76979871"),
            ("https://player.vimeo.com/video/76979871", "vi:76979871"),
            (
                "https://www.dailymotion.com/video/x7tgad0_some-title",
                "dm:x7tgad0",
            ),
            ("https://dai.ly/x7tgad0", "dm:x7tgad0"),
            (
                "https://soundcloud.com/artist/track?x=1",
                "sc:https://soundcloud.com/artist/track",
            ),
            ("https://www.twitch.tv/SomeChannel", "tw:somechannel"),
            ("https://clips.twitch.tv/FunnyClipSlug", "tc:FunnyClipSlug"),
            (
                "https://www.twitch.tv/chan/clip/FunnyClipSlug",
                "tc:FunnyClipSlug",
            ),
            (
                "https://drive.google.com/file/d/1AbC_d-E/view",
                "gd:1AbC_d-E",
            ),
            (
                "https://cdn.example.org/a/film.MP4",
                "fi:https://cdn.example.org/a/film.MP4",
            ),
            (
                "https://live.example.org/s.m3u8",
                "hl:https://live.example.org/s.m3u8",
            ),
            (
                "rtmp://live.example.org/app/key",
                "rt:rtmp://live.example.org/app/key",
            ),
            (
                "https://example.org/manifest.json",
                "cm:https://example.org/manifest.json",
            ),
        ] {
            if want.is_empty() {
                assert!(parse(link).is_err(), "{link}");
            } else {
                assert_eq!(ok(link), want, "{link}");
            }
        }
    }

    #[test]
    fn bad_links_are_refused_with_the_reason() {
        let e = |l: &str| parse(l).expect_err(l);
        assert!(e("").contains("Give me a link"));
        assert!(e("https://example.org/page.html").contains("I cannot add that link"));
        assert!(e("<script>alert(1)</script>").contains("I cannot add that link"));
        assert!(e("javascript:alert(1)").contains("I cannot add that link"));
        assert!(e("ftp://example.org/a.mp4").contains("I cannot add that link"));
        assert!(e("http://example.org/a.mp4").contains("must be https"));
        assert!(e("https://youtu.be/short").contains("no valid id"));
        assert!(e("https://www.youtube.com/playlist?list=PL1").contains("one by one"));
        assert!(e("yt:bad id here").contains("not a valid yt id"));
        assert!(e("ünïcödé 🎵").contains("I cannot add that link"));
        assert!(e(&format!("https://youtu.be/{}", "a".repeat(600))).contains("longer than"));
        assert!(parse("https://www.twitch.tv/chan").unwrap().is_live());
    }
}
