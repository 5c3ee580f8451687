//! Property tests for the subject grammar: the trie index agrees with the reference
//! matcher, the `*` and `>` laws hold, and arbitrary input never panics.

use daz_bus::subject::{SubscriptionIndex, matches, validate_pattern, validate_subject};
use proptest::prelude::*;

/// Few distinct tokens so that random patterns and subjects actually collide.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("room1")].prop_map(String::from)
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..6).prop_map(|t| t.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    let tok = prop_oneof![3 => token(), 1 => Just("*".to_string())];
    (prop::collection::vec(tok, 0..5), any::<bool>()).prop_filter_map(
        "a pattern needs a token",
        |(mut toks, tail)| {
            if tail {
                toks.push(">".into());
            }
            (!toks.is_empty()).then(|| toks.join("."))
        },
    )
}

/// Straightforward restatement of the grammar, to check the optimized validator against.
fn reference_valid(s: &str, pattern: bool) -> bool {
    if s.is_empty() || s.len() > 512 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let toks: Vec<&str> = s.split('.').collect();
    toks.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && (!t.contains(['*', '>'])
                || (pattern && (*t == "*" || (*t == ">" && i == toks.len() - 1))))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validator_agrees_with_reference(s in "[ab.*> \t\u{85}é]{0,10}|\\PC{0,12}") {
        prop_assert_eq!(validate_subject(&s).is_ok(), reference_valid(&s, false), "{:?}", s);
        prop_assert_eq!(validate_pattern(&s).is_ok(), reference_valid(&s, true), "{:?}", s);
    }

    #[test]
    fn index_agrees_with_reference(
        subs in prop::collection::vec((pattern(), 0u32..6), 0..40),
        subjects in prop::collection::vec(subject(), 1..10),
    ) {
        let mut idx = SubscriptionIndex::new();
        for (p, v) in &subs {
            prop_assert!(validate_pattern(p).is_ok(), "generated pattern {p} is valid");
            idx.insert(p, *v).unwrap();
        }
        for s in &subjects {
            let mut want: Vec<u32> = subs
                .iter()
                .filter(|(p, _)| matches(p, s))
                .map(|(_, v)| *v)
                .collect();
            want.sort_unstable();
            want.dedup();
            let got: Vec<u32> = idx.matching(s).into_iter().copied().collect();
            prop_assert_eq!(got, want, "subject {}", s);
        }
        // Removing everything leaves an empty index that matches nothing.
        for (p, v) in &subs {
            idx.remove(p, v);
        }
        prop_assert!(idx.is_empty());
        for s in &subjects {
            prop_assert!(idx.matching(s).is_empty());
        }
    }

    #[test]
    fn literal_and_star_laws(s in subject(), pick in any::<prop::sample::Index>()) {
        prop_assert!(validate_subject(&s).is_ok());
        // A subject is a pattern that matches itself.
        prop_assert!(matches(&s, &s));
        let toks: Vec<&str> = s.split('.').collect();
        // Replacing any one token by `*` still matches; so does all-`*` of the same length.
        let i = pick.index(toks.len());
        let mut starred = toks.clone();
        starred[i] = "*";
        prop_assert!(matches(&starred.join("."), &s));
        let all_star = vec!["*"; toks.len()].join(".");
        prop_assert!(matches(&all_star, &s));
        // `*` never matches a different number of tokens.
        let longer = format!("{all_star}.*");
        prop_assert!(!matches(&longer, &s));
        if toks.len() > 1 {
            let shorter = vec!["*"; toks.len() - 1].join(".");
            prop_assert!(!matches(&shorter, &s));
        }
    }

    #[test]
    fn full_wildcard_laws(s in subject(), k in 0usize..6) {
        let toks: Vec<&str> = s.split('.').collect();
        // `>` alone matches everything.
        prop_assert!(matches(">", &s));
        // prefix.> matches iff at least one token follows the prefix.
        let k = k.min(toks.len());
        let mut p = toks[..k].to_vec();
        p.push(">");
        let p = p.join(".");
        prop_assert_eq!(matches(&p, &s), k < toks.len(), "pattern {}", p);
        // The index agrees.
        let mut idx = SubscriptionIndex::new();
        idx.insert(&p, 1u8).unwrap();
        prop_assert_eq!(idx.matching(&s).len() == 1, k < toks.len());
    }

    #[test]
    fn arbitrary_input_never_panics(s in ".{0,40}", t in "[a-c.*> ]{0,12}") {
        for input in [&s, &t] {
            let subj = validate_subject(input);
            let pat = validate_pattern(input);
            // Every subject is also a pattern.
            if subj.is_ok() {
                prop_assert!(pat.is_ok());
                prop_assert!(!input.contains(['*', '>']));
            }
            if pat.is_ok() {
                prop_assert!(!input.is_empty());
                prop_assert!(input.split('.').all(|tok| !tok.is_empty()));
                prop_assert!(!input.chars().any(char::is_whitespace));
            }
            let _ = matches(input, &t);
            let _ = matches(&t, input);
            let mut idx = SubscriptionIndex::new();
            prop_assert_eq!(idx.insert(input, 0u8).is_ok(), pat.is_ok());
            prop_assert_eq!(idx.len(), usize::from(pat.is_ok()));
            let _ = idx.matching(input);
            prop_assert_eq!(idx.remove(input, &0u8), pat.is_ok());
        }
    }
}
