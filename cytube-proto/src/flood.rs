//! Flood-control arithmetic for the outbound governor: the server's rate limiter,
//! reproduced exactly, and chat-message splitting that survives the server's
//! escaping and truncation. Pure: the caller passes the time in.
//!
//! # The server's limiter (CyTube `newRateLimiter`)
//!
//! State: a counter and the time of the last *accepted* message. For each
//! message, in order:
//! 1. If more than `reset_after` passed since the last accepted message (in
//!    whole milliseconds, as the server counts), the counter restarts at 1 and
//!    the message passes.
//! 2. Else, if the counter is below `burst`, it is incremented and the message passes.
//! 3. Else the message passes only if at least `1/sustained` s passed since the
//!    last accepted one; otherwise it is DROPPED (the sender gets
//!    `cooldown <1000/sustained>`) and the state is left untouched.
//!
//! So 25 back-to-back chat messages give 20 delivered + 5 dropped (burst 20),
//! and with channel antiflood (burst 4) 8 give 4 + 4 — as captured.
//!
//! chatMsg and pm share ONE limiter per user; pm always uses the chat default
//! parameters, chatMsg uses the channel's antiflood parameters when they apply
//! (see [`chat_params`]). [`RateLimiter::try_acquire_with`] models that.
//!
//! # Message length
//!
//! The server cuts the RAW chat text to 320 UTF-16 code units (JavaScript
//! string length; an emoji counts 2) BEFORE it escapes it, so a line of 320
//! `<` arrives whole as 1280 units of `&lt;`. [`split_message`] keeps every part
//! within 320 units of raw text, so no part is ever truncated and no part is
//! wasted. [`echo_text`] predicts what the server echoes for a line (control
//! characters to spaces, the cut, `& < >` escaped), so the governor can match
//! echoes by content.

use std::time::{Duration, Instant};

use crate::events::{AntifloodParams, ChannelOpts};

/// Longest chat message the server keeps, in UTF-16 code units.
pub const MAX_CHAT_LEN: usize = 320;

/// Parameters of one limiter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodParams {
    /// Messages accepted back-to-back after an idle period.
    pub burst: u32,
    /// Messages per second accepted once the burst is spent. Zero or less
    /// means none until the reset.
    pub sustained: f64,
    /// Idle time after which the burst is available again.
    pub reset_after: Duration,
}

impl FloodParams {
    /// The server's floor for chat and PMs: burst 20, 10 per second, reset after 2 s.
    pub const CHAT: FloodParams = FloodParams {
        burst: 20,
        sustained: 10.0,
        reset_after: Duration::from_secs(2),
    };

    /// A channel's `chat_antiflood_params`. A missing or invalid cooldown falls
    /// back to `burst / sustained` seconds, as the server computes it.
    pub fn from_antiflood(p: &AntifloodParams) -> Self {
        let burst = u32::try_from(p.burst).unwrap_or(u32::MAX);
        let reset = if p.cooldown.is_finite() && p.cooldown >= 0.0 {
            p.cooldown
        } else {
            f64::from(burst) / p.sustained
        };
        FloodParams {
            burst,
            sustained: p.sustained,
            reset_after: secs(reset),
        }
    }

    /// The queue limiter: rank < 2 gets burst 3 then 1/s (reset 3 s); rank ≥ 2
    /// burst 10 then 2/s (reset 5 s).
    pub fn queue_for_rank(rank: f64) -> Self {
        let (burst, sustained) = if rank >= 2.0 { (10, 2.0) } else { (3, 1.0) };
        FloodParams {
            burst,
            sustained,
            reset_after: secs(f64::from(burst) / sustained),
        }
    }

    /// Minimum spacing once the burst is spent; `None` when `sustained` allows nothing.
    pub fn interval(&self) -> Option<Duration> {
        (self.sustained > 0.0 && self.sustained.is_finite()).then(|| secs(1.0 / self.sustained))
    }

    /// The value the server puts in `cooldown` when it drops a message (ms).
    pub fn server_cooldown_ms(&self) -> u64 {
        self.interval().map_or(u64::MAX, |d| d.as_millis() as u64)
    }
}

/// Seconds to a Duration, saturating instead of panicking on odd input.
fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    }
}

/// The limiter that applies to a bot's chat messages in a channel with
/// `opts` (none yet: the server floor), at `rank`.
pub fn chat_params(opts: Option<&ChannelOpts>, rank: f64) -> FloodParams {
    match opts {
        Some(o) if o.chat_antiflood && rank < 2.0 => {
            FloodParams::from_antiflood(&o.chat_antiflood_params)
        }
        _ => FloodParams::CHAT,
    }
}

/// The server's limiter, mirrored. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    params: FloodParams,
    count: u32,
    last: Option<Instant>,
}

enum Verdict {
    Reset,
    Burst,
    Sustained,
    Wait(Instant),
}

impl RateLimiter {
    /// A fresh limiter (the first message always passes).
    pub fn new(params: FloodParams) -> Self {
        RateLimiter {
            params,
            count: 0,
            last: None,
        }
    }

    /// Chat / PM floor: burst 20, 10/s, reset 2 s.
    pub fn chat_default() -> Self {
        Self::new(FloodParams::CHAT)
    }

    /// A channel's antiflood parameters.
    pub fn from_antiflood(p: &AntifloodParams) -> Self {
        Self::new(FloodParams::from_antiflood(p))
    }

    /// The queue limiter for `rank`.
    pub fn queue_for_rank(rank: f64) -> Self {
        Self::new(FloodParams::queue_for_rank(rank))
    }

    /// Current parameters.
    pub fn params(&self) -> FloodParams {
        self.params
    }

    /// Changes the parameters, keeping the state (the server does the same when
    /// options or ranks change).
    pub fn set_params(&mut self, params: FloodParams) {
        self.params = params;
    }

    fn verdict(&self, p: &FloodParams, now: Instant) -> Verdict {
        let Some(last) = self.last else {
            return Verdict::Reset;
        };
        let idle = now.saturating_duration_since(last);
        // The server compares whole milliseconds and resets only after strictly
        // more than `reset_after`: the first such time is one millisecond later.
        let reset_idle = p.reset_after.saturating_add(Duration::from_millis(1));
        if idle >= reset_idle {
            return Verdict::Reset;
        }
        if self.count < p.burst {
            return Verdict::Burst;
        }
        let reset_at = last
            .checked_add(reset_idle)
            .unwrap_or_else(|| now.checked_add(Duration::from_secs(86_400)).unwrap_or(now));
        match p.interval() {
            Some(iv) if idle >= iv => Verdict::Sustained,
            Some(iv) => Verdict::Wait(last.checked_add(iv).map_or(reset_at, |t| t.min(reset_at))),
            None => Verdict::Wait(reset_at),
        }
    }

    /// Takes one slot at `now`, or says how long until one is free (the message
    /// would be dropped now; nothing is recorded).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        let p = self.params;
        self.try_acquire_with(&p, now)
    }

    /// Like [`try_acquire`](Self::try_acquire) with other parameters on the same
    /// state: chatMsg and pm share one limiter but not one set of parameters.
    pub fn try_acquire_with(&mut self, p: &FloodParams, now: Instant) -> Result<(), Duration> {
        match self.verdict(p, now) {
            Verdict::Reset => self.count = 1,
            Verdict::Burst => self.count += 1,
            Verdict::Sustained => {}
            Verdict::Wait(at) => return Err(at.saturating_duration_since(now)),
        }
        self.last = Some(now);
        Ok(())
    }

    /// Messages counted since the last reset.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// When the last message was accepted.
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Records a message the server is known to have ACCEPTED at `at` (its echo came
    /// back), whatever this mirror would have said: the mirror follows the server.
    pub fn record_accepted(&mut self, p: &FloodParams, at: Instant) {
        match self.verdict(p, at) {
            Verdict::Reset => self.count = 1,
            Verdict::Burst => self.count += 1,
            Verdict::Sustained | Verdict::Wait(_) => {}
        }
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// Earliest instant (≥ `now`) at which a message would pass.
    pub fn next_allowed(&self, now: Instant) -> Instant {
        self.next_allowed_with(&self.params, now)
    }

    /// [`next_allowed`](Self::next_allowed) with other parameters.
    pub fn next_allowed_with(&self, p: &FloodParams, now: Instant) -> Instant {
        match self.verdict(p, now) {
            Verdict::Wait(at) => at.max(now),
            _ => now,
        }
    }
}

/// What the server's text sanitizer turns `c` into (`None`: unchanged).
fn entity_for(c: char) -> Option<&'static str> {
    Some(match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        '"' => "&quot;",
        '\'' => "&#39;",
        '(' => "&#40;",
        ')' => "&#41;",
        _ => return None,
    })
}

fn is_ascii_control(c: char) -> bool {
    c <= '\u{1f}'
}

/// What the server does to chat text before delivery, as far as the captures and
/// its source show: runs of ASCII control characters become one space (unless
/// the channel allows them), then `& < > " ' ( )` become entities.
///
/// Not included: link wrapping (`<a href…>`) and channel chat filters, which add
/// markup after escaping; and a final HTML sanitizer pass which may turn some
/// entities (quotes, parentheses) back into characters — so this is an upper
/// bound of the delivered length of plain text.
pub fn server_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut in_control = false;
    for c in text.chars() {
        if is_ascii_control(c) {
            if !in_control {
                out.push(' ');
            }
            in_control = true;
            continue;
        }
        in_control = false;
        match entity_for(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

/// Length of [`server_escape`]`(text)` as the server counts it: UTF-16 code units.
pub fn escaped_len(text: &str) -> usize {
    server_escape(text).encode_utf16().count()
}

/// Length of `text` as the server's 320-unit cut counts it: UTF-16 code units of the
/// raw text (before any escaping).
pub fn raw_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One character's contribution to [`raw_len`].
fn weight(c: char) -> usize {
    c.len_utf16()
}

/// `text` cut to at most `units` UTF-16 code units (never inside a surrogate pair),
/// as the server cuts chat text.
pub fn cut_utf16(text: &str, units: usize) -> &str {
    let mut count = 0;
    for (i, c) in text.char_indices() {
        count += c.len_utf16();
        if count > units {
            return &text[..i];
        }
    }
    text
}

/// Runs of ASCII control characters replaced by one space each, as the server does
/// to chat text (unless the channel allows them).
pub fn controls_to_spaces(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text.chars() {
        if is_ascii_control(c) {
            if !in_run {
                out.push(' ');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// Whether the server drops `text` silently as blank: nothing but whitespace once its
/// control characters are spaces (no echo, no `cooldown`, no error).
pub fn is_blank_for_server(text: &str) -> bool {
    controls_to_spaces(cut_utf16(text, MAX_CHAT_LEN))
        .trim()
        .is_empty()
}

/// The text the server echoes in `chatMsg.msg` for a plain chat line: cut to 320
/// raw units, control characters to spaces, then `&`, `<`, `>` escaped (quotes and
/// parentheses arrive as typed). Links and chat filters add markup on top; compare
/// with [`echo_plain`] applied to the echo for those.
pub fn echo_text(raw: &str) -> String {
    let cut = controls_to_spaces(cut_utf16(raw, MAX_CHAT_LEN));
    let mut out = String::with_capacity(cut.len() + 8);
    for c in cut.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// An echoed `chatMsg.msg` reduced to plain text: tags removed, the common entities
/// decoded, whitespace trimmed. Two lines that differ only in the markup the server
/// adds (links, filters) reduce to the same text.
pub fn echo_plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#40;", "(")
        .replace("&#41;", ")")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// If `s` starts with an HTML entity (`&name;`, `&#123;`, `&#x1F;`), its byte length.
fn entity_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('&')?;
    let body_start = usize::from(body.starts_with('#'));
    let name_len = body[body_start..]
        .bytes()
        .take(9)
        .take_while(u8::is_ascii_alphanumeric)
        .count();
    (name_len > 0 && body[body_start + name_len..].starts_with(';'))
        .then_some(1 + body_start + name_len + 1)
}

/// Where to cut a word that is too long on its own: at `cut` (a char boundary
/// where the prefix still fits), moved back before an HTML entity the user typed
/// if the cut would land inside it.
fn hard_cut(rest: &str, cut: usize) -> usize {
    if cut == 0 {
        // Even one character is over `max`: take it anyway to make progress.
        return rest.chars().next().map_or(rest.len(), char::len_utf8);
    }
    let window_start = rest[..cut]
        .char_indices()
        .rev()
        .nth(10)
        .map_or(0, |(i, _)| i);
    if let Some(rel) = rest[window_start..cut].rfind('&') {
        let amp = window_start + rel;
        if amp > 0 && entity_len(&rest[amp..]).is_some_and(|len| amp + len > cut) {
            return amp;
        }
    }
    cut
}

/// Splits `text` into chat messages of at most `max` (normally [`MAX_CHAT_LEN`])
/// UTF-16 units of raw text each: the server's own rule, applied before it escapes.
///
/// Splits at whitespace (which is dropped at the split point); a word longer
/// than `max` is cut between characters, never inside one, and not inside an
/// HTML entity typed by the user. Parts are never empty and never start or end
/// with whitespace; blank input gives no parts (the server drops blank posts).
/// With `max` below 6 a single heavy character (`"` → `&quot;`) can exceed it.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut used = 0usize;
        let mut cut = rest.len();
        let mut last_space: Option<usize> = None;
        for (i, c) in rest.char_indices() {
            let w = weight(c);
            if used + w > max {
                cut = i;
                break;
            }
            if c.is_whitespace() {
                last_space = Some(i);
            }
            used += w;
        }
        if cut == rest.len() {
            parts.push(rest.trim_end().to_owned());
            break;
        }
        let brk = if rest[cut..].starts_with(char::is_whitespace) {
            cut
        } else if let Some(sp) = last_space {
            sp
        } else {
            hard_cut(rest, cut)
        };
        // `rest` starts with non-whitespace, so a break at whitespace leaves a
        // non-empty part, and `hard_cut` returns at least one character.
        parts.push(rest[..brk].trim_end().to_owned());
        rest = rest[brk..].trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends `n` messages 0.2 ms apart (as a tight loop does) and counts
    /// (delivered, dropped, cooldown reported for drops).
    fn blast(l: &mut RateLimiter, start: Instant, n: u32) -> (u32, u32, Vec<Duration>) {
        let (mut ok, mut dropped, mut waits) = (0, 0, Vec::new());
        for i in 0..n {
            match l.try_acquire(start + Duration::from_micros(200 * u64::from(i))) {
                Ok(()) => ok += 1,
                Err(w) => {
                    dropped += 1;
                    waits.push(w);
                }
            }
        }
        (ok, dropped, waits)
    }

    #[test]
    fn capture_25_back_to_back_gives_20_and_5_cooldowns() {
        let mut l = RateLimiter::chat_default();
        let (ok, dropped, waits) = blast(&mut l, Instant::now(), 25);
        assert_eq!((ok, dropped), (20, 5));
        assert!(
            waits.iter().all(|w| *w <= ms(100) && *w > ms(90)),
            "{waits:?}"
        );
        assert_eq!(FloodParams::CHAT.server_cooldown_ms(), 100);
    }

    #[test]
    fn capture_antiflood_8_gives_4_and_4() {
        let p = AntifloodParams::default();
        let mut l = RateLimiter::from_antiflood(&p);
        let (ok, dropped, waits) = blast(&mut l, Instant::now(), 8);
        assert_eq!((ok, dropped), (4, 4));
        assert!(waits.iter().all(|w| *w > ms(990) && *w <= ms(1000)));
        assert_eq!(l.params().server_cooldown_ms(), 1000);
        assert_eq!(l.params().reset_after, Duration::from_secs(4));
    }

    #[test]
    fn sustained_rate_after_burst_and_reset_after_idle() {
        let t0 = Instant::now();
        let mut l = RateLimiter::chat_default();
        for _ in 0..20 {
            l.try_acquire(t0).unwrap();
        }
        assert_eq!(l.try_acquire(t0 + ms(99)), Err(ms(1)));
        assert_eq!(l.next_allowed(t0 + ms(50)), t0 + ms(100));
        l.try_acquire(t0 + ms(100)).unwrap();
        assert!(l.try_acquire(t0 + ms(150)).is_err());
        l.try_acquire(t0 + ms(200)).unwrap();
        // Exactly 2 s idle is not enough for a reset (the server needs more), but
        // the sustained slot is free; the burst comes back 1 ms later.
        l.try_acquire(t0 + ms(2200)).unwrap();
        assert!(l.try_acquire(t0 + ms(2200)).is_err());
        let t1 = t0 + ms(2200) + ms(2001);
        for _ in 0..20 {
            l.try_acquire(t1).unwrap();
        }
        assert!(l.try_acquire(t1).is_err());
    }

    #[test]
    fn drops_do_not_extend_the_cooldown() {
        let t0 = Instant::now();
        let mut l = RateLimiter::from_antiflood(&AntifloodParams::default());
        for _ in 0..4 {
            l.try_acquire(t0).unwrap();
        }
        for k in 1..10 {
            assert!(l.try_acquire(t0 + ms(k * 90)).is_err());
        }
        assert!(l.try_acquire(t0 + ms(1000)).is_ok());
    }

    #[test]
    fn pm_and_chat_share_state_with_different_params() {
        let t0 = Instant::now();
        let antiflood = FloodParams::from_antiflood(&AntifloodParams::default());
        let mut l = RateLimiter::new(antiflood);
        for _ in 0..4 {
            l.try_acquire(t0).unwrap();
        }
        assert!(l.try_acquire(t0).is_err(), "chat is over its burst");
        // A PM uses the chat floor (burst 20) on the same counter.
        assert!(l.try_acquire_with(&FloodParams::CHAT, t0).is_ok());
    }

    #[test]
    fn queue_limits_by_rank() {
        let t0 = Instant::now();
        let (ok, dropped, _) = blast(&mut RateLimiter::queue_for_rank(1.0), t0, 5);
        assert_eq!((ok, dropped), (3, 2));
        let (ok, dropped, _) = blast(&mut RateLimiter::queue_for_rank(2.0), t0, 12);
        assert_eq!((ok, dropped), (10, 2));
        assert_eq!(
            FloodParams::queue_for_rank(1.5).reset_after,
            Duration::from_secs(3)
        );
        assert_eq!(
            FloodParams::queue_for_rank(3.0).reset_after,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn chat_params_follow_channel_options() {
        let mut o = ChannelOpts::default();
        assert_eq!(chat_params(None, 1.0), FloodParams::CHAT);
        assert_eq!(chat_params(Some(&o), 1.0), FloodParams::CHAT);
        o.chat_antiflood = true;
        assert_eq!(chat_params(Some(&o), 1.0).burst, 4);
        assert_eq!(chat_params(Some(&o), 2.0), FloodParams::CHAT);
    }

    #[test]
    fn odd_params_never_panic() {
        let t0 = Instant::now();
        for p in [
            AntifloodParams {
                burst: 0,
                sustained: 0.0,
                cooldown: f64::NAN,
            },
            AntifloodParams {
                burst: 1,
                sustained: -1.0,
                cooldown: 1.0,
            },
            AntifloodParams {
                burst: u64::MAX,
                sustained: f64::INFINITY,
                cooldown: f64::INFINITY,
            },
            AntifloodParams {
                burst: 2,
                sustained: 1e-300,
                cooldown: 1e300,
            },
        ] {
            let mut l = RateLimiter::from_antiflood(&p);
            for i in 0..5 {
                let _ = l.try_acquire(t0 + ms(i));
                let _ = l.next_allowed(t0 + ms(i));
            }
        }
    }

    #[test]
    fn escaping_matches_the_server() {
        assert_eq!(server_escape(">implying"), "&gt;implying");
        assert_eq!(
            server_escape("a&b <c> \"d\" 'e' (f)"),
            "a&amp;b &lt;c&gt; &quot;d&quot; &#39;e&#39; &#40;f&#41;"
        );
        assert_eq!(server_escape("a\u{1}\u{2}\nb"), "a b");
        assert_eq!(escaped_len("😀"), 2);
        assert_eq!(escaped_len("é"), 1);
        assert_eq!(escaped_len("<"), 4);
    }

    #[test]
    fn splits_at_words() {
        let parts = split_message("aaa bbb ccc", 7);
        assert_eq!(parts, ["aaa bbb", "ccc"]);
        assert_eq!(split_message("  hello  ", 320), ["hello"]);
        assert!(split_message(" \n\t ", 320).is_empty());
        assert_eq!(split_message("aaa   bbb", 4), ["aaa", "bbb"]);
    }

    #[test]
    fn escaping_does_not_count_toward_the_limit() {
        // The server cuts the raw text: "<<" is 2 units, however long its escape.
        assert_eq!(split_message("<< <<", 8), ["<< <<"]);
        assert_eq!(split_message("<<<", 2), ["<<", "<"]);
        // A 722-character text full of &<>"' is 3 lines (320 + 320 + 82), not 10.
        let text: String = "&<>\"' ".chars().cycle().take(722).collect();
        let parts = split_message(&text, MAX_CHAT_LEN);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts.iter().all(|p| raw_len(p) <= MAX_CHAT_LEN));
    }

    #[test]
    fn echo_prediction_follows_the_server() {
        assert_eq!(
            echo_text("a&b <c> \"d\" 'e' (f)"),
            "a&amp;b &lt;c&gt; \"d\" 'e' (f)"
        );
        assert_eq!(echo_text("a\u{1}\u{2}\nb"), "a b");
        let long = "<".repeat(400);
        assert_eq!(echo_text(&long), "&lt;".repeat(320));
        assert!(is_blank_for_server("\u{1}\u{2} \t\n"));
        assert!(!is_blank_for_server(" x "));
        assert_eq!(
            echo_plain(
                "see <a href=\"https://x.example\" target=\"_blank\">https://x.example</a> &amp; &lt;3"
            ),
            "see https://x.example & <3"
        );
    }

    #[test]
    fn hard_split_never_breaks_chars_or_entities() {
        let parts = split_message(&"😀".repeat(5), 4);
        assert_eq!(parts, ["😀😀", "😀😀", "😀"]);
        let parts = split_message("abcdefg&amp;hij", 10);
        assert_eq!(parts, ["abcdefg", "&amp;hij"]);
        let long = "x".repeat(700);
        let parts = split_message(&long, MAX_CHAT_LEN);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [320, 320, 60]
        );
    }

    #[test]
    fn entity_detection() {
        assert_eq!(entity_len("&amp;x"), Some(5));
        assert_eq!(entity_len("&#39;"), Some(5));
        assert_eq!(entity_len("&#x1F600;"), Some(9));
        assert_eq!(entity_len("&;"), None);
        assert_eq!(entity_len("& amp;"), None);
        assert_eq!(entity_len("&amp"), None);
    }
}
