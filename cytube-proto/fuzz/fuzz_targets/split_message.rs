//! Fuzzes `flood::split_message`, the governor's splitter for long chat lines:
//! every part fits `max` UTF-16 units after the server's escaping, no part is
//! empty or starts or ends with whitespace, and the parts keep every
//! non-whitespace character of the input, in order. The first byte picks `max`
//! (6..=320: below 6 one escaped character can be longer than `max`).

#![no_main]

use daz_cytube_proto::flood::{escaped_len, split_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let max = 6 + usize::from(m) % 315;
    let text = String::from_utf8_lossy(rest);
    let parts = split_message(&text, max);
    for p in &parts {
        assert!(!p.is_empty(), "an empty part");
        assert_eq!(p.trim(), p, "a part padded with whitespace");
        let len = escaped_len(p);
        assert!(len <= max, "a part of {len} escaped units, max {max}: {p:?}");
    }
    let kept = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(kept(&text), kept(&parts.concat()), "characters lost or changed");
});
