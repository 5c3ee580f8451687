//! Chat-sized text. Cytube cuts a message to 320 UTF-16 units of the RAW text, *before*
//! it HTML-escapes it (so `&` counts 1 though it arrives as `&amp;`; an emoji counts 2):
//! the measure is the governor's own, [`flood::raw_len`], so a line built here to fit is
//! never split or cut by the host. The host's governor splits longer replies into
//! several messages, but replies meant to be read as one line (a help page, a status
//! line) are built here to fit in one.

use daz_cytube_proto::flood;

/// Longest chat message, in UTF-16 units of the raw text.
pub const MAX_CHAT: usize = flood::MAX_CHAT_LEN;

/// Length of `text` as the server's 320-unit cut counts it (UTF-16 units of the raw
/// text, before escaping).
pub fn chat_len(text: &str) -> usize {
    flood::raw_len(text)
}

/// `text` cut (at a character boundary) so that it fits in `max`, with `…` at the end
/// when something was cut.
pub fn fit(text: &str, max: usize) -> String {
    if chat_len(text) <= max {
        return text.to_owned();
    }
    let ellipsis = '…';
    let budget = max.saturating_sub(ellipsis.len_utf16());
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = chat_len(c.encode_utf8(&mut [0; 4]));
        if used + w > budget {
            break;
        }
        used += w;
        out.push(c);
    }
    let mut out = out.trim_end().to_owned();
    out.push(ellipsis);
    out
}

/// Packs `items` into pages of at most `max` units: each page is
/// `header(page, pages)` followed by items joined with `sep`. The header is measured at
/// its longest (the page numbers only grow), so every page fits. An item too long for a
/// page on its own is cut with [`fit`]. No items give no pages.
pub fn pages(
    header: impl Fn(usize, usize) -> String,
    items: &[String],
    sep: &str,
    max: usize,
) -> Vec<String> {
    if items.is_empty() {
        return Vec::new();
    }
    // Page numbers never exceed the item count, so this header is the longest.
    let widest = chat_len(&header(items.len(), items.len()));
    let room = max.saturating_sub(widest).max(1);
    let sep_len = chat_len(sep);
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut used = 0;
    for item in items {
        let item = if chat_len(item) > room {
            fit(item, room)
        } else {
            item.clone()
        };
        let len = chat_len(&item);
        match groups.last_mut() {
            Some(g) if used + sep_len + len <= room => {
                used += sep_len + len;
                g.push(item);
            }
            _ => {
                used = len;
                groups.push(vec![item]);
            }
        }
    }
    let total = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| format!("{}{}", header(i + 1, total), g.join(sep)))
        .collect()
}

/// Joins `items` with `sep` after `head`, dropping the items that do not fit and saying
/// how many were left out (`… +3 more`).
pub fn join_fitting(head: &str, items: &[String], sep: &str, max: usize) -> String {
    let mut out = head.to_owned();
    for (i, item) in items.iter().enumerate() {
        let joined = if i == 0 {
            format!("{out}{item}")
        } else {
            format!("{out}{sep}{item}")
        };
        let left = items.len() - i - 1;
        let tail = if left > 0 {
            format!(" … +{left} more")
        } else {
            String::new()
        };
        if chat_len(&joined) + chat_len(&tail) > max {
            let more = items.len() - i;
            return fit(&format!("{out} … +{more} more"), max);
        }
        out = joined;
    }
    fit(&out, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue: the limit is 320 UTF-16 units of the raw text before escaping; measuring
    /// the escaped text cut lines full of `&<>"'` to a fraction of what fits.
    #[test]
    fn escaping_does_not_count_towards_the_limit() {
        assert_eq!(chat_len("a&b"), 3);
        assert_eq!(chat_len("\"x\""), 3);
        assert_eq!(chat_len("<😀>"), 4);
        // The governor measures the same way: what fits here is one line there.
        let full = "&<>\"'".repeat(64);
        assert_eq!(chat_len(&full), MAX_CHAT);
        assert_eq!(fit(&full, MAX_CHAT), full);
        assert_eq!(flood::split_message(&full, MAX_CHAT), [full.as_str()]);
        let text = "&".repeat(100);
        let cut = fit(&text, 50);
        assert_eq!(cut, format!("{}…", "&".repeat(49)));
        assert_eq!(fit("short", 50), "short");
        // An emoji is never split from its surrogate pair: it does not fit in 1 unit.
        assert_eq!(fit("😀😀", 3), "😀…");
    }

    #[test]
    fn pages_fit_and_keep_every_item() {
        let items: Vec<String> = (0..80).map(|i| format!("command{i}")).collect();
        let p = pages(
            |n, of| format!("Commands ({n}/{of}): "),
            &items,
            ", ",
            MAX_CHAT,
        );
        assert!(p.len() > 1);
        for page in &p {
            assert!(chat_len(page) <= MAX_CHAT, "{page}");
        }
        let joined = p.join(" ");
        for item in &items {
            assert!(joined.contains(item.as_str()));
        }
        assert!(p[0].starts_with(&format!("Commands (1/{}): ", p.len())));
        assert!(pages(|_, _| String::new(), &[], ", ", 10).is_empty());
    }

    #[test]
    fn an_item_longer_than_a_page_is_cut() {
        let items = vec!["x".repeat(500), "y".into()];
        let p = pages(|_, _| "h: ".into(), &items, ", ", 100);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|page| chat_len(page) <= 100));
    }

    #[test]
    fn join_fitting_says_what_was_left_out() {
        let items: Vec<String> = (0..50).map(|i| format!("plugin{i} 0.1.0")).collect();
        let line = join_fitting("Plugins: ", &items, ", ", 120);
        assert!(chat_len(&line) <= 120, "{line}");
        assert!(line.contains("more"), "{line}");
        let few = join_fitting("Plugins: ", &items[..2], ", ", 120);
        assert_eq!(few, "Plugins: plugin0 0.1.0, plugin1 0.1.0");
    }
}
