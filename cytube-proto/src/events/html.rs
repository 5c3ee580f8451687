//! Turning the sanitized HTML of `chatMsg` / `pm` back into plain text.
//!
//! The server escapes user text (`&` `<` `>` `"` `'` `(` `)` become entities) and
//! then adds markup of its own: links become `<a href=… target=… rel=…>URL</a>`,
//! chat filters may add tags. Because every `<` the user typed arrives as
//! `&lt;`, every literal `<…>` in the message is server markup, so stripping
//! tags before decoding entities never eats user text.

/// Plain text of a chat message: tags stripped (a link becomes its text, which is
/// the URL), then HTML entities decoded (`&gt;` → `>`, `&#39;` → `'`, …).
///
/// A `<` that never closes is kept as text.
pub fn unescape_chat(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        text.push_str(&rest[..lt]);
        let after = &rest[lt..];
        match after.find('>') {
            Some(gt) if looks_like_tag(&after[1..gt]) => rest = &after[gt + 1..],
            _ => {
                text.push('<');
                rest = &after[1..];
            }
        }
    }
    text.push_str(rest);
    html_escape::decode_html_entities(&text).into_owned()
}

/// `inner` is what sits between `<` and `>`: a tag starts with a letter, or `/`
/// and a letter.
fn looks_like_tag(inner: &str) -> bool {
    let name = inner.strip_prefix('/').unwrap_or(inner);
    name.starts_with(|c: char| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_from_capture_becomes_its_url() {
        let html = "hi bot, see <a href=\"https://example.org/x\" target=\"_blank\" rel=\"noopener noreferrer\">https://example.org/x</a>";
        assert_eq!(unescape_chat(html), "hi bot, see https://example.org/x");
    }

    #[test]
    fn entities_decode_after_tags_are_gone() {
        assert_eq!(unescape_chat("&gt;implying"), ">implying");
        assert_eq!(
            unescape_chat("a &amp; b &quot;c&quot; d&#39;s &#40;e&#41; &lt;b&gt;"),
            "a & b \"c\" d's (e) <b>"
        );
        assert_eq!(unescape_chat("<strong>bold</strong> text"), "bold text");
    }

    #[test]
    fn stray_angle_brackets_survive() {
        assert_eq!(unescape_chat("1 < 2"), "1 < 2");
        assert_eq!(unescape_chat("a <3 b > c"), "a <3 b > c");
        assert_eq!(unescape_chat("<"), "<");
        assert_eq!(unescape_chat("x <"), "x <");
    }
}
