//! Subject grammar (NATS style), the reference matcher, and the token trie
//! [`SubscriptionIndex`] the bus uses to find subscribers without scanning them all.
//!
//! Grammar: a subject is a non-empty list of non-empty tokens separated by `.`. Subjects
//! that are published to contain no wildcards, whitespace or control characters. In a
//! subscription PATTERN a token may also be `*` (exactly one token) or, as the last token
//! only, `>` (one or more trailing tokens). A wildcard is always a whole token: `a.b*` is
//! rejected rather than silently treated as a literal.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use smallvec::SmallVec;

pub use crate::error::SubjectError;

/// Longest subject or pattern accepted, in bytes. Bounds the matcher's recursion depth and
/// keeps a misbehaving publisher from making every lookup expensive.
pub const MAX_SUBJECT_LEN: usize = 512;

/// Checks that `s` is a concrete subject one can publish to.
pub fn validate_subject(s: &str) -> Result<(), SubjectError> {
    check(s, false)
}

/// Checks that `p` is a valid subscription pattern (wildcards allowed).
pub fn validate_pattern(p: &str) -> Result<(), SubjectError> {
    check(p, true)
}

/// Byte classes for [`check`].
const ORDINARY: u8 = 0;
const DOT: u8 = 1;
const WILD: u8 = 2;
const FORBIDDEN: u8 = 3;
const NON_ASCII: u8 = 4;

static CLASS: [u8; 256] = {
    let mut t = [ORDINARY; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            b'.' => DOT,
            b'*' | b'>' => WILD,
            0..=b' ' | 0x7f => FORBIDDEN,
            0x80..=0xff => NON_ASCII,
            _ => ORDINARY,
        };
        i += 1;
    }
    t
};

/// Validation runs on every publish, so it is one table-driven pass over the bytes that
/// tracks token boundaries and wildcards, plus a char-level pass only when non-ASCII bytes
/// are present (for Unicode whitespace and control characters). Multi-byte UTF-8 sequences
/// never contain `.`, `*` or `>` bytes, so scanning tokens byte-wise is exact.
fn check(input: &str, pattern: bool) -> Result<(), SubjectError> {
    if input.is_empty() {
        return Err(SubjectError::Empty);
    }
    if input.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong {
            input: shorten(input),
            len: input.len(),
            max: MAX_SUBJECT_LEN,
        });
    }
    let bytes = input.as_bytes();
    // Forbidden characters are reported before token errors, wherever they are.
    let mut seen = 0u8;
    for &b in bytes {
        seen |= 1 << CLASS[usize::from(b)];
    }
    if seen & (1 << FORBIDDEN) != 0 {
        let ch = bytes
            .iter()
            .find(|&&b| CLASS[usize::from(b)] == FORBIDDEN)
            .map_or(' ', |&b| char::from(b));
        return Err(SubjectError::InvalidChar {
            input: input.to_owned(),
            ch,
        });
    }
    if seen & (1 << NON_ASCII) != 0 {
        if let Some(ch) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubjectError::InvalidChar {
                input: input.to_owned(),
                ch,
            });
        }
    }
    if seen & (1 << WILD) == 0 {
        // Only empty tokens can be wrong now.
        let empty_at = if bytes[0] == b'.' {
            Some(0)
        } else if bytes[bytes.len() - 1] == b'.' {
            Some(bytes.iter().filter(|&&b| b == b'.').count())
        } else {
            bytes
                .windows(2)
                .position(|w| w == b"..")
                .map(|pos| bytes[..=pos].iter().filter(|&&b| b == b'.').count())
        };
        return match empty_at {
            Some(index) => Err(SubjectError::EmptyToken {
                input: input.to_owned(),
                index,
            }),
            None => Ok(()),
        };
    }
    let mut index = 0;
    let mut rest = bytes;
    loop {
        let end = rest.iter().position(|&b| b == b'.');
        let token = &rest[..end.unwrap_or(rest.len())];
        check_token(input, token, index, end.is_none(), pattern)?;
        match end {
            Some(i) => rest = &rest[i + 1..],
            None => return Ok(()),
        }
        index += 1;
    }
}

fn check_token(
    input: &str,
    token: &[u8],
    index: usize,
    last: bool,
    pattern: bool,
) -> Result<(), SubjectError> {
    if token.is_empty() {
        return Err(SubjectError::EmptyToken {
            input: input.to_owned(),
            index,
        });
    }
    if !token.iter().any(|&b| b == b'*' || b == b'>') {
        return Ok(());
    }
    if !pattern {
        return Err(SubjectError::WildcardInSubject {
            input: input.to_owned(),
        });
    }
    match token {
        b"*" => Ok(()),
        b">" if last => Ok(()),
        b">" => Err(SubjectError::MisplacedFullWildcard {
            input: input.to_owned(),
        }),
        _ => Err(SubjectError::PartialWildcard {
            input: input.to_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        }),
    }
}

/// Keeps error messages readable when someone feeds a huge string.
fn shorten(s: &str) -> String {
    let mut end = 64.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reference matcher: does `pattern` match `subject`?
///
/// Token by token: a literal token matches itself, `*` matches any one token, `>` matches
/// one or more remaining tokens. Inputs are not validated (callers validate once, when
/// subscribing and publishing); on malformed input the answer is a plain token comparison and
/// never panics. The trie [`SubscriptionIndex`] must agree with this function.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subj = subject.split('.');
    for p in pattern.split('.') {
        match (p, subj.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (lit, Some(s)) if lit == s => {}
            _ => return false,
        }
    }
    subj.next().is_none()
}

/// Does the token-aligned `prefix` cover `subject`? `a.b` covers `a.b` and `a.b.c`, but not
/// `a.bc`. An empty prefix covers nothing.
pub fn has_token_prefix(subject: &str, prefix: &str) -> bool {
    if prefix.is_empty() || !subject.starts_with(prefix) {
        return false;
    }
    subject.len() == prefix.len() || subject.as_bytes()[prefix.len()] == b'.'
}

/// FNV-1a over the token bytes. Tokens are short and chosen by the host and plugins, not by
/// remote users (room and event names come from a fixed vocabulary), so a fast non-keyed hash
/// is fine here and measurably cheaper than SipHash on the publish path.
#[derive(Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type TokenMap<V> = HashMap<Box<str>, V, BuildHasherDefault<TokenHasher>>;

/// One trie level. Invariant: a node with no values and no children is removed by
/// [`SubscriptionIndex::remove`], so the trie never keeps dead branches.
struct Node<T> {
    /// Children reached by a literal token.
    exact: TokenMap<Node<T>>,
    /// Child reached by `*`.
    star: Option<Box<Node<T>>>,
    /// Values whose pattern ends at this node.
    here: SmallVec<[T; 1]>,
    /// Values whose pattern is this node's path followed by `>`.
    tail: SmallVec<[T; 1]>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            exact: TokenMap::default(),
            star: None,
            here: SmallVec::new(),
            tail: SmallVec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.star.is_none() && self.here.is_empty() && self.tail.is_empty()
    }
}

/// Maps subscription patterns to values (the bus stores subscribers) and answers "which
/// values match this subject" by walking a token trie: the cost depends on the subject's
/// length and the number of wildcard branches, not on the number of subscriptions.
///
/// The same `(pattern, value)` pair is stored once. A value reachable through several
/// patterns is reported once per lookup. Results come sorted by `T`'s order.
pub struct SubscriptionIndex<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for SubscriptionIndex<T> {
    fn default() -> Self {
        SubscriptionIndex {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> std::fmt::Debug for SubscriptionIndex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Ord> SubscriptionIndex<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored `(pattern, value)` pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`. Returns `Ok(false)` if that exact pair was already there.
    pub fn insert(&mut self, pattern: &str, value: T) -> Result<bool, SubjectError> {
        validate_pattern(pattern)?;
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(tok) = tokens.next() {
            let last = tokens.peek().is_none();
            match tok {
                ">" => {
                    // Validation guarantees `>` is last.
                    return Ok(push_unique(&mut node.tail, value, &mut self.len));
                }
                "*" => node = node.star.get_or_insert_with(Box::default),
                lit => node = node.exact.entry(lit.into()).or_default(),
            }
            if last {
                return Ok(push_unique(&mut node.here, value, &mut self.len));
            }
        }
        // Unreachable for a validated (non-empty) pattern; stay total anyway.
        Ok(false)
    }

    /// Removes the pair `(pattern, value)`; returns whether it was present. Prunes branches
    /// left empty.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        if validate_pattern(pattern).is_err() {
            return false;
        }
        let tokens: SmallVec<[&str; 8]> = pattern.split('.').collect();
        let removed = remove_rec(&mut self.root, &tokens, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every value whose pattern matches `subject` to `out` (after clearing it),
    /// sorted and without duplicates. `subject` is not validated; an invalid subject simply
    /// matches what the token walk finds.
    /// `out` is a `SmallVec` so the bus can collect on the stack in the common case.
    pub fn collect_into<'a, A>(&'a self, subject: &str, out: &mut SmallVec<A>)
    where
        A: smallvec::Array<Item = &'a T>,
    {
        out.clear();
        collect_rec(&self.root, Some(subject), &mut |v| out.push(v));
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup_by(|a, b| *a == *b);
        }
    }

    /// Convenience form of [`collect_into`](Self::collect_into).
    pub fn matching(&self, subject: &str) -> Vec<&T> {
        let mut out: SmallVec<[&T; 8]> = SmallVec::new();
        self.collect_into(subject, &mut out);
        out.into_vec()
    }
}

fn push_unique<T: Ord>(slot: &mut SmallVec<[T; 1]>, value: T, len: &mut usize) -> bool {
    if slot.contains(&value) {
        return false;
    }
    slot.push(value);
    *len += 1;
    true
}

fn remove_from<T: Ord>(slot: &mut SmallVec<[T; 1]>, value: &T) -> bool {
    match slot.iter().position(|v| v == value) {
        Some(i) => {
            slot.remove(i);
            true
        }
        None => false,
    }
}

fn remove_rec<T: Ord>(node: &mut Node<T>, tokens: &[&str], value: &T) -> bool {
    let Some((&tok, rest)) = tokens.split_first() else {
        return remove_from(&mut node.here, value);
    };
    match tok {
        ">" => remove_from(&mut node.tail, value),
        "*" => {
            let Some(child) = node.star.as_deref_mut() else {
                return false;
            };
            let removed = remove_rec(child, rest, value);
            if child.is_empty() {
                node.star = None;
            }
            removed
        }
        lit => {
            let Some(child) = node.exact.get_mut(lit) else {
                return false;
            };
            let removed = remove_rec(child, rest, value);
            if child.is_empty() {
                node.exact.remove(lit);
            }
            removed
        }
    }
}

/// Splits off the first token: `("a", Some("b.c"))` for `"a.b.c"`, `("c", None)` for `"c"`.
/// A byte scan is cheaper than `str::split` for the short tokens subjects have.
fn next_token(rest: &str) -> (&str, Option<&str>) {
    match rest.bytes().position(|b| b == b'.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// `rest` is the unmatched part of the subject, `None` once every token is consumed.
fn collect_rec<'a, T>(node: &'a Node<T>, rest: Option<&str>, out: &mut impl FnMut(&'a T)) {
    let Some(rest) = rest else {
        node.here.iter().for_each(&mut *out);
        return;
    };
    // At least one token remains, so `>` patterns ending here match.
    node.tail.iter().for_each(&mut *out);
    let (tok, next) = next_token(rest);
    // Skip hashing when there is nothing to look up (common below wildcard branches).
    if !node.exact.is_empty() {
        if let Some(child) = node.exact.get(tok) {
            collect_rec(child, next, out);
        }
    }
    if let Some(child) = node.star.as_deref() {
        collect_rec(child, next, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_subjects() {
        for s in [
            "a",
            "a.b",
            "cytube.in.room1.chatMsg",
            "sql.query",
            "x-y_z.ä",
        ] {
            assert_eq!(validate_subject(s), Ok(()), "{s}");
            assert_eq!(validate_pattern(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn invalid_subjects() {
        assert_eq!(validate_subject(""), Err(SubjectError::Empty));
        for (s, at) in [(".", 0), ("a.", 1), (".a", 0), ("a..b", 1), ("a.b.c..d", 3)] {
            assert_eq!(
                validate_subject(s),
                Err(SubjectError::EmptyToken {
                    input: s.into(),
                    index: at
                }),
                "{s}"
            );
            assert!(validate_pattern(&format!("{s}.*")).is_err(), "{s}");
        }
        for s in ["a b", "a\tb", "a.b\n", "a\u{0}"] {
            assert!(
                matches!(validate_subject(s), Err(SubjectError::InvalidChar { .. })),
                "{s:?}"
            );
        }
        for s in ["a.*", "a.>", "*", ">", "a.b*"] {
            assert!(
                matches!(
                    validate_subject(s),
                    Err(SubjectError::WildcardInSubject { .. })
                ),
                "{s}"
            );
        }
        let long = "a.".repeat(300) + "a";
        assert!(matches!(
            validate_subject(&long),
            Err(SubjectError::TooLong { .. })
        ));
    }

    #[test]
    fn patterns() {
        for p in ["*", ">", "a.*", "a.>", "*.*.c", "a.*.>"] {
            assert_eq!(validate_pattern(p), Ok(()), "{p}");
        }
        for p in [">.a", "a.>.b"] {
            assert!(
                matches!(
                    validate_pattern(p),
                    Err(SubjectError::MisplacedFullWildcard { .. })
                ),
                "{p}"
            );
        }
        for p in ["a*", "a.b>", "**", "a.>>"] {
            assert!(
                matches!(
                    validate_pattern(p),
                    Err(SubjectError::PartialWildcard { .. })
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = validate_pattern("a.>.b").unwrap_err().to_string();
        assert!(
            e.contains("a.>.b") && e.contains("must end the pattern"),
            "{e}"
        );
    }

    #[test]
    fn reference_matcher() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "a"));
        assert!(matches("*.b.>", "x.b.c.d"));
        assert!(!matches("a.b", "a.bc"));
    }

    #[test]
    fn token_prefix() {
        assert!(has_token_prefix("a.b", "a.b"));
        assert!(has_token_prefix("a.b.c", "a.b"));
        assert!(!has_token_prefix("a.bc", "a.b"));
        assert!(!has_token_prefix("a", "a.b"));
        assert!(!has_token_prefix("a", ""));
    }

    #[test]
    fn index_basic() {
        let mut idx = SubscriptionIndex::new();
        assert!(idx.insert("cytube.in.*.chatMsg", 1).unwrap());
        assert!(idx.insert("cytube.in.room1.>", 2).unwrap());
        assert!(idx.insert("cytube.in.room1.chatMsg", 3).unwrap());
        assert!(idx.insert("cytube.>", 1).unwrap());
        assert!(!idx.insert("cytube.>", 1).unwrap(), "duplicate pair");
        assert!(idx.insert("a.b*", 9).is_err());
        assert_eq!(idx.len(), 4);
        // 1 is reachable twice but reported once; output sorted.
        assert_eq!(idx.matching("cytube.in.room1.chatMsg"), vec![&1, &2, &3]);
        assert_eq!(idx.matching("cytube.in.room2.chatMsg"), vec![&1]);
        assert_eq!(idx.matching("cytube.in.room1"), vec![&1]);
        assert_eq!(idx.matching("cytube"), Vec::<&i32>::new());
        assert_eq!(idx.matching("other"), Vec::<&i32>::new());
    }

    #[test]
    fn index_remove_prunes() {
        let mut idx = SubscriptionIndex::new();
        idx.insert("a.*.c", 1).unwrap();
        idx.insert("a.b.>", 2).unwrap();
        idx.insert("a.b.c", 3).unwrap();
        assert!(!idx.remove("a.*.c", &2), "wrong value");
        assert!(!idx.remove("a.x.c", &1), "wrong pattern");
        assert!(idx.remove("a.*.c", &1));
        assert!(!idx.remove("a.*.c", &1), "already removed");
        assert_eq!(idx.matching("a.b.c"), vec![&2, &3]);
        assert!(idx.remove("a.b.>", &2));
        assert!(idx.remove("a.b.c", &3));
        assert!(idx.is_empty());
        assert!(idx.root.is_empty(), "trie pruned back to an empty root");
    }
}
