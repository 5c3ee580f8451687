//! Text rules of the real server: chat message formatting (escaping, the
//! default chat filters, link wrapping), the MOTD HTML sanitizer, name
//! validation, `mm:ss` durations, and the small hashes Cytube exposes (CSS/JS
//! hashes and masked IPs are base64 MD5).
//!
//! Chat pipeline, as the real server runs it: the raw text is cut to 320 UTF-16
//! units, control characters become spaces, then `& < > " ' ( )` are escaped,
//! links are set aside, the default filters run (`` `code` ``, `*bold*`,
//! `_italic_`, `~~strike~~`, `[sp]spoiler[/sp]`), links come back wrapped in
//! `<a href=… target="_blank" rel="noopener noreferrer">` and a final HTML
//! sanitizer pass decodes and re-escapes text, which leaves only `& < >`
//! escaped. The code below produces that final form directly.

/// Longest chat message, in UTF-16 code units (JavaScript string length).
pub const MAX_CHAT_UNITS: usize = 320;

/// Cuts `s` to at most `units` UTF-16 code units (JavaScript `substring(0, n)`,
/// except that a surrogate pair is never split).
pub fn truncate_utf16(s: &str, units: usize) -> &str {
    let mut count = 0;
    for (i, c) in s.char_indices() {
        count += c.len_utf16();
        if count > units {
            return &s[..i];
        }
    }
    s
}

/// Replaces every run of ASCII control characters with one space.
pub fn strip_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if (c as u32) < 0x20 {
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

/// Escapes text for HTML output the way the final sanitizer leaves it.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Finds the next link (`\w+://host(:port)?(/path)*`) at or after `from`,
/// returning its byte range.
fn next_link(s: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut search = from;
    while let Some(rel) = s[search..].find("://") {
        let sep = search + rel;
        let mut start = sep;
        while start > from && is_word(bytes[start - 1]) {
            start -= 1;
        }
        if start < sep {
            if let Some(end) = link_tail(s, sep + 3) {
                return Some((start, end));
            }
        }
        search = sep + 3;
    }
    None
}

/// Matches `([^:/\[\]\s]+|\[[0-9a-f:]+\])(:\d+)?(/[^/\s]*)*` at `i`; returns the end.
fn link_tail(s: &str, i: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut j = i;
    if bytes.get(j) == Some(&b'[') {
        let mut k = j + 1;
        while k < bytes.len() && (bytes[k].is_ascii_hexdigit() || bytes[k] == b':') {
            k += 1;
        }
        if k == j + 1 || bytes.get(k) != Some(&b']') {
            return None;
        }
        j = k + 1;
    } else {
        let host_len = s[j..]
            .find(|c: char| c == ':' || c == '/' || c == '[' || c == ']' || c.is_whitespace())
            .unwrap_or(s.len() - j);
        if host_len == 0 {
            return None;
        }
        j += host_len;
    }
    if bytes.get(j) == Some(&b':') {
        let digits = bytes[j + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            j += 1 + digits;
        }
    }
    while bytes.get(j) == Some(&b'/') {
        j += 1;
        match s[j..].find(|c: char| c == '/' || c.is_whitespace()) {
            Some(off) => j += off,
            None => j = s.len(),
        }
    }
    Some(j)
}

/// Whether `s` contains a link (for `new_user_chat_link_delay`).
pub fn has_link(s: &str) -> bool {
    next_link(s, 0).is_some()
}

/// Replaces every non-overlapping `open(.+?)close` (or `(.*?)` when
/// `allow_empty`) with `pre…post`, scanning left to right like a global regex.
fn replace_pairs(
    s: &str,
    open: &str,
    close: &str,
    allow_empty: bool,
    pre: &str,
    post: &str,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(open) {
            let body_start = i + open.len();
            // The body needs at least one character unless empty bodies are allowed.
            let min_body = if allow_empty {
                0
            } else {
                s[body_start..]
                    .chars()
                    .next()
                    .map_or(usize::MAX, char::len_utf8)
            };
            if min_body != usize::MAX && body_start + min_body <= s.len() {
                let search_from = body_start + min_body;
                if let Some(rel) = s[search_from..].find(close) {
                    let body_end = search_from + rel;
                    out.push_str(pre);
                    out.push_str(&s[body_start..body_end]);
                    out.push_str(post);
                    i = body_end + close.len();
                    continue;
                }
            }
        }
        // Advance one character.
        let c_len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + c_len]);
        i += c_len;
    }
    out
}

/// Private-use character standing in for a link while filters run.
const LINK_PLACEHOLDER: char = '\u{eeee}';

/// Formats a chat or PM message body (already truncated and control-stripped).
pub fn format_chat(raw: &str, convert_links: bool) -> String {
    let escaped = escape_text(raw);
    let mut links = Vec::new();
    let mut intermediate = String::with_capacity(escaped.len());
    let mut pos = 0;
    while let Some((start, end)) = next_link(&escaped, pos) {
        intermediate.push_str(&escaped[pos..start]);
        intermediate.push(LINK_PLACEHOLDER);
        links.push(&escaped[start..end]);
        pos = end;
    }
    intermediate.push_str(&escaped[pos..]);

    let mut filtered = replace_pairs(&intermediate, "`", "`", false, "<code>", "</code>");
    filtered = replace_pairs(&filtered, "*", "*", false, "<strong>", "</strong>");
    filtered = replace_pairs(&filtered, "_", "_", false, "<em>", "</em>");
    filtered = replace_pairs(&filtered, "~~", "~~", false, "<s>", "</s>");
    filtered = replace_pairs(
        &filtered,
        "[sp]",
        "[/sp]",
        true,
        "<span class=\"spoiler\">",
        "</span>",
    );

    let mut out = String::with_capacity(filtered.len() + links.len() * 64);
    let mut links = links.into_iter();
    for c in filtered.chars() {
        if c == LINK_PLACEHOLDER {
            if let Some(link) = links.next() {
                if convert_links {
                    out.push_str("<a href=\"");
                    out.push_str(&link.replace('"', "&quot;"));
                    out.push_str("\" target=\"_blank\" rel=\"noopener noreferrer\">");
                    out.push_str(link);
                    out.push_str("</a>");
                } else {
                    out.push_str(link);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Tags the MOTD sanitizer keeps (sanitize-html defaults plus Cytube's extras).
const ALLOWED_TAGS: &[&str] = &[
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "nl",
    "li",
    "b",
    "i",
    "strong",
    "em",
    "strike",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "caption",
    "tbody",
    "tr",
    "th",
    "td",
    "pre",
    "button",
    "center",
    "details",
    "font",
    "img",
    "marquee",
    "s",
    "section",
    "span",
    "summary",
    "u",
    "small",
    "sub",
    "sup",
];

/// Tags removed together with their content.
const DROP_WITH_CONTENT: &[&str] = &["script", "style", "textarea", "option", "noscript"];

/// Attributes any kept tag may carry.
const GLOBAL_ATTRS: &[&str] = &[
    "id", "border", "class", "color", "height", "role", "style", "title", "valign", "width",
];

fn attr_allowed(tag: &str, attr: &str) -> bool {
    if GLOBAL_ATTRS.contains(&attr) || attr.starts_with("aria-") || attr.starts_with("data-") {
        return true;
    }
    matches!(
        (tag, attr),
        ("a", "href" | "name" | "target" | "rel")
            | ("font", "size")
            | ("img", "src")
            | (
                "marquee",
                "behavior" | "behaviour" | "direction" | "scrollamount"
            )
            | ("table", "cellpadding" | "cellspacing")
            | ("th" | "td", "colspan" | "rowspan")
    )
}

fn url_allowed(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    match v.find(':') {
        // Relative URLs have no scheme (or a colon only after a path separator).
        Some(colon) if !v[..colon].contains('/') => {
            matches!(&v[..colon], "http" | "https" | "ftp" | "mailto" | "mumble")
        }
        _ => true,
    }
}

/// One parsed tag: `<name attrs>` or `</name>`.
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(String, String)>,
    /// Byte length of the whole tag text.
    len: usize,
}

fn parse_tag(s: &str) -> Option<Tag> {
    let bytes = s.as_bytes();
    let end = s.find('>')?;
    let mut i = 1;
    let closing = bytes.get(1) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_len = bytes[i..end]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if name_len == 0 || !bytes[i].is_ascii_alphabetic() {
        return None;
    }
    let name = s[i..i + name_len].to_ascii_lowercase();
    let mut rest = &s[i + name_len..end];
    let self_closing = rest.trim_end().ends_with('/');
    if self_closing {
        rest = rest.trim_end().trim_end_matches('/');
    }
    let mut attrs = Vec::new();
    let mut r = rest.trim_start();
    while !r.is_empty() {
        let key_len = r
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(r.len());
        let key = r[..key_len].to_ascii_lowercase();
        r = r[key_len..].trim_start();
        let mut value = String::new();
        if let Some(after_eq) = r.strip_prefix('=') {
            let after_eq = after_eq.trim_start();
            if let Some(q) = after_eq.chars().next().filter(|c| *c == '"' || *c == '\'') {
                let body = &after_eq[1..];
                let close = body.find(q).unwrap_or(body.len());
                value = body[..close].to_owned();
                r = body.get(close + 1..).unwrap_or("");
            } else {
                let vlen = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
                value = after_eq[..vlen].to_owned();
                r = &after_eq[vlen..];
            }
        }
        if !key.is_empty() {
            attrs.push((key, value));
        }
        r = r.trim_start();
    }
    Some(Tag {
        name,
        closing,
        self_closing,
        attrs,
        len: end + 1,
    })
}

/// Sanitizes user HTML (the MOTD): keeps allowed tags and attributes, drops
/// other tags (keeping their text) and removes `<script>`/`<style>` with their
/// content.
pub fn sanitize_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
            continue;
        }
        if rest.starts_with('<') {
            if let Some(tag) = parse_tag(rest) {
                i += tag.len;
                if DROP_WITH_CONTENT.contains(&tag.name.as_str()) {
                    if !tag.closing && !tag.self_closing {
                        let close = format!("</{}", tag.name);
                        let lower = html[i..].to_ascii_lowercase();
                        i += match lower.find(&close) {
                            Some(at) => html[i + at..]
                                .find('>')
                                .map_or(html.len() - i, |e| at + e + 1),
                            None => html.len() - i,
                        };
                    }
                    continue;
                }
                if ALLOWED_TAGS.contains(&tag.name.as_str()) {
                    out.push('<');
                    if tag.closing {
                        out.push('/');
                    }
                    out.push_str(&tag.name);
                    if !tag.closing {
                        for (k, v) in &tag.attrs {
                            if !attr_allowed(&tag.name, k) {
                                continue;
                            }
                            if matches!(k.as_str(), "href" | "src") && !url_allowed(v) {
                                continue;
                            }
                            out.push(' ');
                            out.push_str(k);
                            out.push_str("=\"");
                            out.push_str(&v.replace('&', "&amp;").replace('"', "&quot;"));
                            out.push('"');
                        }
                    }
                    if tag.self_closing {
                        out.push_str(" /");
                    }
                    out.push('>');
                }
                continue;
            }
            out.push_str("&lt;");
            i += 1;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        match c {
            '>' => out.push_str("&gt;"),
            '&' if !starts_with_entity(rest) => out.push_str("&amp;"),
            _ => out.push(c),
        }
        i += c.len_utf8();
    }
    out
}

fn starts_with_entity(s: &str) -> bool {
    let body = &s[1..];
    let Some(semi) = body.find(';') else {
        return false;
    };
    let name = &body[..semi];
    if semi == 0 || semi > 10 {
        return false;
    }
    if let Some(num) = name.strip_prefix('#') {
        let num = num.strip_prefix(['x', 'X']).unwrap_or(num);
        !num.is_empty() && num.chars().all(|c| c.is_ascii_hexdigit())
    } else {
        name.chars().all(|c| c.is_ascii_alphanumeric())
    }
}

/// `^[\w-]{1,max}$`.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Channel names: 1–30 of `[A-Za-z0-9_-]`.
pub fn valid_channel_name(name: &str) -> bool {
    valid_name(name, 30)
}

/// User names: 1–20 of `[A-Za-z0-9_-]`.
pub fn valid_user_name(name: &str) -> bool {
    valid_name(name, 20)
}

/// Names reserved for staff: any `-`/`_`-separated part equal to `admin` or
/// `administrator` (case-insensitive), e.g. `x_admin`.
pub fn reserved_name(name: &str) -> bool {
    name.split(['-', '_']).any(|part| {
        part.eq_ignore_ascii_case("admin") || part.eq_ignore_ascii_case("administrator")
    })
}

/// `mm:ss`, or `hh:mm:ss` from one hour on (Cytube's `formatTime`).
pub fn format_time(seconds: u64) -> String {
    let h = seconds / 3600;
    let m = (seconds % 3600) / 60;
    let s = seconds % 60;
    if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// MD5 digest (RFC 1321). Used only for the opaque hashes Cytube shows.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const SHIFTS: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
    let mut k = [0u32; 64];
    for (i, slot) in k.iter_mut().enumerate() {
        // K[i] = floor(|sin(i + 1)| * 2^32), as the RFC defines the table.
        *slot = (((i + 1) as f64).sin().abs() * 4_294_967_296.0) as u32;
    }
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (j, word) in chunk.chunks_exact(4).enumerate() {
            m[j] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(SHIFTS[(i / 16) * 4 + i % 4]));
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (idx, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if idx <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `cssHash` / `jsHash` of channel CSS/JS: base64 MD5 of the text.
pub fn content_hash(text: &str) -> String {
    base64(&md5(text.as_bytes()))
}

/// The masked IP moderators see (`yFA.j8g.iXh.gvS`): each IPv4 octet becomes
/// three base64 characters of an MD5 over the octets before it, as Cytube
/// cloaks addresses. Other addresses are hashed whole into four parts.
pub fn mask_ip(ip: &str) -> String {
    let parts: Vec<&str> = if ip.contains('.') {
        ip.split('.').collect()
    } else {
        ip.split(':').filter(|p| !p.is_empty()).take(4).collect()
    };
    let mut acc = String::new();
    let mut masked: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let digest = base64(&md5(format!("{acc}{seg}{i}").as_bytes()));
            acc.push_str(seg);
            digest[..3].to_owned()
        })
        .collect();
    while masked.len() < 4 {
        masked.push("*".to_owned());
    }
    masked.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_vectors() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(md5(b"The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(hex(md5(&long)), "cabe45dcc9ae5b66ba86600cca6b8ba8");
    }

    #[test]
    fn empty_css_hash_is_the_captured_one() {
        assert_eq!(content_hash(""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn links_are_wrapped_as_captured() {
        assert_eq!(
            format_chat("hi bot, see https://example.org/x", true),
            "hi bot, see <a href=\"https://example.org/x\" target=\"_blank\" rel=\"noopener noreferrer\">https://example.org/x</a>"
        );
        assert_eq!(
            format_chat("see https://example.org/x", false),
            "see https://example.org/x"
        );
    }

    #[test]
    fn greentext_and_html_are_escaped() {
        assert_eq!(format_chat(">implying", true), "&gt;implying");
        assert_eq!(
            format_chat("<b>x</b> & y", true),
            "&lt;b&gt;x&lt;/b&gt; &amp; y"
        );
        assert_eq!(
            format_chat("it's (fine) \"ok\"", true),
            "it's (fine) \"ok\""
        );
    }

    #[test]
    fn default_filters_apply_outside_links() {
        assert_eq!(
            format_chat("*bold* _it_ `c` ~~s~~", true),
            "<strong>bold</strong> <em>it</em> <code>c</code> <s>s</s>"
        );
        assert_eq!(
            format_chat("[sp]secret[/sp]", true),
            "<span class=\"spoiler\">secret</span>"
        );
        assert_eq!(
            format_chat("http://a.b/x_y_z", true),
            "<a href=\"http://a.b/x_y_z\" target=\"_blank\" rel=\"noopener noreferrer\">http://a.b/x_y_z</a>"
        );
        assert_eq!(format_chat("a_b", true), "a_b");
        assert_eq!(format_chat("**", true), "**");
    }

    #[test]
    fn link_detection_follows_the_regex() {
        assert!(has_link("go to http://x.y now"));
        assert!(!has_link("no link: here"));
        assert!(!has_link("http:///nothing"));
        assert!(has_link("[ipv6] http://[::1]:8080/a"));
    }

    #[test]
    fn motd_script_is_removed_with_content() {
        assert_eq!(
            sanitize_html("Welcome <b>bots</b>! <script>alert(1)</script>"),
            "Welcome <b>bots</b>! "
        );
        assert_eq!(
            sanitize_html(
                "<a href=\"javascript:x\" onclick=\"y\">l</a><img src=\"https://i/x.png\">"
            ),
            "<a>l</a><img src=\"https://i/x.png\">"
        );
        assert_eq!(
            sanitize_html("1 < 2 &amp; 3 & 4"),
            "1 &lt; 2 &amp; 3 &amp; 4"
        );
    }

    #[test]
    fn names_and_times() {
        assert!(valid_channel_name("botchan"));
        assert!(!valid_channel_name("bad$chan"));
        assert!(!valid_user_name("bad name!"));
        assert!(!valid_user_name("abcdefghijklmnopqrstu"));
        assert!(reserved_name("x_admin"));
        assert!(reserved_name("Administrator"));
        assert!(!reserved_name("badminton"));
        assert_eq!(format_time(8), "00:08");
        assert_eq!(format_time(78), "01:18");
        assert_eq!(format_time(3723), "01:02:03");
    }

    #[test]
    fn truncation_counts_utf16_units() {
        let s = "a".repeat(400);
        assert_eq!(truncate_utf16(&s, 320).len(), 320);
        assert_eq!(truncate_utf16("😀😀", 3), "😀");
        assert_eq!(strip_control("a\n\r\tb"), "a b");
    }

    #[test]
    fn masked_ips_share_prefixes() {
        let a = mask_ip("10.1.2.3");
        let b = mask_ip("10.1.9.9");
        assert_eq!(a.split('.').count(), 4);
        assert_eq!(a[..7], b[..7]);
        assert_ne!(a, b);
    }
}
