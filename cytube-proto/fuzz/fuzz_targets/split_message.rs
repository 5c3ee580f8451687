//! Fuzzes `flood::split_message`, the governor's splitter for long chat lines:
//! every part fits `max` UTF-16 units of RAW text (the server cuts the raw text
//! to 320 units before it escapes it), no part is empty or starts or ends with
//! whitespace, and the parts keep every non-whitespace character of the input,
//! in order. The first byte picks `max` (2..=320: one character is at most 2
//! units).

#![no_main]

use daz_cytube_proto::flood::{raw_len, split_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let max = 2 + usize::from(m) % 319;
    let text = String::from_utf8_lossy(rest);
    let parts = split_message(&text, max);
    for p in &parts {
        assert!(!p.is_empty(), "an empty part");
        assert_eq!(p.trim(), p, "a part padded with whitespace");
        let len = raw_len(p);
        assert!(len <= max, "a part of {len} raw units, max {max}: {p:?}");
    }
    let kept = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(kept(&text), kept(&parts.concat()), "characters lost or changed");
});
