//! The filters, free of I/O: their definitions (from `plugins.toml` or added in chat),
//! validation and compilation (bad patterns are refused with the reason), the text
//! normalisation that defeats evasion by case, spacing, look-alike digits and invisible
//! characters, and the checks of one chat line against one filter.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::action::Action;

/// What a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A word or phrase, matched on whole words after normalisation.
    Word,
    /// A regular expression (case-insensitive), on the plain text and on the normalised
    /// text.
    Regex,
    /// Any link, except to the `allow`ed domains.
    Link,
    /// The same line `lines` times within `window_ms`.
    Repeat,
    /// `lines` lines within `window_ms`.
    Flood,
    /// Mostly capital letters (`ratio`) in a line with at least `min_letters` letters.
    Caps,
    /// A link from a user who joined less than `window_ms` ago.
    NewUserLink,
}

impl Kind {
    /// The name used in `plugins.toml` and chat.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Word => "word",
            Kind::Regex => "regex",
            Kind::Link => "link",
            Kind::Repeat => "repeat",
            Kind::Flood => "flood",
            Kind::Caps => "caps",
            Kind::NewUserLink => "new_user_link",
        }
    }
}

/// One filter as written in `plugins.toml` (`[[plugins.moderation.config.filters]]`) or
/// stored after `!filter add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// A short name, shown in `!filter list`, the audit and the warning.
    pub name: String,
    /// What it looks at.
    pub kind: Kind,
    /// The word or phrase (`word`) or the expression (`regex`).
    #[serde(default)]
    pub pattern: String,
    /// Lines (`repeat`, `flood`).
    #[serde(default)]
    pub lines: Option<u32>,
    /// Time window, ms (`repeat`, `flood`, `new_user_link`).
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// Letters a line needs before `caps` looks at it.
    #[serde(default)]
    pub min_letters: Option<u32>,
    /// Share of capitals that trips `caps` (0–1).
    #[serde(default)]
    pub ratio: Option<f64>,
    /// Domains links may point to (`link`, `new_user_link`); subdomains included.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The least the filter does when it trips.
    #[serde(default = "default_action")]
    pub action: Action,
    /// Whether a hit adds a strike and the action escalates with the strikes (see the
    /// `ladder` setting). Without it, a hit does exactly `action` and adds no strike.
    #[serde(default = "yes")]
    pub escalate: bool,
    /// Told to the user (warning PM) and given as the kick or ban reason.
    #[serde(default)]
    pub reason: String,
}

fn default_action() -> Action {
    Action::Warn
}

fn yes() -> bool {
    true
}

/// Limits on filters.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest pattern, in characters.
    pub max_pattern_len: usize,
    /// Compiled size limit of a regular expression, bytes.
    pub regex_size_limit: usize,
}

/// Why a filter is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A checked, compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Its definition.
    pub spec: FilterSpec,
    /// `word`: the normalised words of the phrase.
    words: Vec<String>,
    /// `regex`: the compiled expression.
    regex: Option<Regex>,
}

impl Filter {
    /// Checks and compiles a definition.
    pub fn compile(spec: FilterSpec, limits: Limits) -> Result<Filter, Refused> {
        let name_ok = !spec.name.is_empty()
            && spec.name.chars().count() <= 32
            && spec
                .name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_'));
        if !name_ok {
            return Err(Refused(format!(
                "filter name {:?} must be 1–32 letters, digits, - or _",
                spec.name
            )));
        }
        let len = spec.pattern.chars().count();
        if len > limits.max_pattern_len {
            return Err(Refused(format!(
                "the pattern is {len} characters long; at most {} are allowed",
                limits.max_pattern_len
            )));
        }
        let needs = |what: &str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(Refused(format!(
                    "a {} filter needs {what}",
                    spec.kind.as_str()
                )))
            }
        };
        let mut words = Vec::new();
        let mut regex = None;
        match spec.kind {
            Kind::Word => {
                words = normalise(&spec.pattern);
                needs("a word or phrase with letters or digits", !words.is_empty())?;
            }
            Kind::Regex => {
                needs("a pattern", !spec.pattern.trim().is_empty())?;
                let compiled = RegexBuilder::new(&spec.pattern)
                    .case_insensitive(true)
                    .size_limit(limits.regex_size_limit)
                    .dfa_size_limit(limits.regex_size_limit)
                    .nest_limit(32)
                    .build()
                    .map_err(|e| Refused(format!("bad regular expression: {}", one_line(&e))))?;
                if compiled.is_match("") {
                    return Err(Refused(
                        "the expression matches an empty line, so it would match every line"
                            .to_owned(),
                    ));
                }
                regex = Some(compiled);
            }
            Kind::Repeat | Kind::Flood => {
                needs(
                    "lines of at least 2",
                    spec.lines.is_some_and(|n| (2..=1000).contains(&n)),
                )?;
                needs(
                    "window_ms between 1 and 86400000",
                    spec.window_ms
                        .is_some_and(|w| (1..=86_400_000).contains(&w)),
                )?;
            }
            Kind::Caps => {
                needs(
                    "ratio between 0.5 and 1",
                    spec.ratio.is_none_or(|r| (0.5..=1.0).contains(&r)),
                )?;
            }
            Kind::NewUserLink => {
                needs(
                    "window_ms between 1 and 604800000",
                    spec.window_ms
                        .is_some_and(|w| (1..=604_800_000).contains(&w)),
                )?;
            }
            Kind::Link => {}
        }
        Ok(Filter { spec, words, regex })
    }

    /// The one line `!filter list` shows.
    pub fn describe(&self) -> String {
        let what = match self.spec.kind {
            Kind::Word | Kind::Regex => {
                format!("{} {:?}", self.spec.kind.as_str(), self.spec.pattern)
            }
            Kind::Repeat | Kind::Flood => format!(
                "{} {} lines/{}s",
                self.spec.kind.as_str(),
                self.spec.lines.unwrap_or(0),
                self.spec.window_ms.unwrap_or(0) / 1000
            ),
            // Cytube reads `_text_` as italics: no underscores in chat.
            k => k.as_str().replace('_', " "),
        };
        format!(
            "{} ({what} → {})",
            self.spec.name,
            self.spec.action.as_str()
        )
    }

    /// Whether the line's text trips this filter (the content filters: word, regex,
    /// link, caps; the others need the user's history, see [`crate::model`]).
    pub fn matches_text(&self, line: &Line) -> bool {
        match self.spec.kind {
            Kind::Word => {
                contains_phrase(&line.words, &self.words)
                    // `a b a d w o r d`: the spelled-out word inside a longer run.
                    || (self.words.len() == 1
                        && line.runs.iter().any(|r| r.contains(self.words[0].as_str())))
            }
            Kind::Regex => self
                .regex
                .as_ref()
                .is_some_and(|r| r.is_match(&line.plain) || r.is_match(&line.squashed)),
            Kind::Link => line
                .links
                .iter()
                .any(|host| !allowed(host, &self.spec.allow)),
            Kind::Caps => {
                let min = self.spec.min_letters.unwrap_or(12) as usize;
                let ratio = self.spec.ratio.unwrap_or(0.8);
                line.letters >= min && line.upper as f64 >= ratio * line.letters as f64
            }
            Kind::NewUserLink | Kind::Repeat | Kind::Flood => false,
        }
    }

    /// Whether the line carries a link this filter does not allow (`new_user_link`).
    pub fn has_disallowed_link(&self, line: &Line) -> bool {
        line.links
            .iter()
            .any(|host| !allowed(host, &self.spec.allow))
    }
}

fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    // The regex crate draws the pattern and a caret on several lines; keep the reason.
    text.lines()
        .filter(|l| l.trim_start().starts_with("error:"))
        .map(|l| l.trim().trim_start_matches("error:").trim().to_owned())
        .next()
        .unwrap_or_else(|| text.lines().last().unwrap_or("").trim().to_owned())
}

fn allowed(host: &str, allow: &[String]) -> bool {
    allow.iter().any(|d| {
        let d = d.trim().trim_start_matches('.').to_lowercase();
        host == d || host.ends_with(&format!(".{d}"))
    })
}

fn contains_phrase(words: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase)
}

/// A chat line, prepared once for every filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// The text as typed (HTML removed).
    pub plain: String,
    /// The normalised words (see [`normalise`]).
    pub words: Vec<String>,
    /// The words joined from runs of single characters (`b a d` → `bad`).
    pub runs: Vec<String>,
    /// The normalised words joined by single spaces: what `repeat` compares and
    /// `regex` also sees.
    pub squashed: String,
    /// The hosts of the links in it, lowercase.
    pub links: Vec<String>,
    /// Letters.
    pub letters: usize,
    /// Capital letters.
    pub upper: usize,
}

impl Line {
    /// Prepares a line from the plain text (already HTML-unescaped) and the raw HTML
    /// the server sent (whose `href`s also name links).
    pub fn new(plain: &str, html: &str) -> Line {
        let marked = normalise_marked(plain);
        let runs = marked
            .iter()
            .filter(|(_, run)| *run)
            .map(|(w, _)| w.clone())
            .collect();
        let words: Vec<String> = marked.into_iter().map(|(w, _)| w).collect();
        let squashed = words.join(" ");
        let mut links = link_hosts(plain);
        for host in href_hosts(html) {
            if !links.contains(&host) {
                links.push(host);
            }
        }
        let letters = plain.chars().filter(|c| c.is_alphabetic()).count();
        let upper = plain.chars().filter(|c| c.is_uppercase()).count();
        Line {
            plain: plain.to_owned(),
            words,
            runs,
            squashed,
            links,
            letters,
            upper,
        }
    }
}

/// Lowercase words with evasion undone: invisible characters (zero-width spaces, soft
/// hyphens, other format characters) removed, look-alike digits and signs read as the
/// letters they imitate (`0`→o, `1`→i, `3`→e, `4`→a, `5`→s, `7`→t, `@`→a, `$`→s), and a
/// run of single letters separated by spaces or punctuation (`b a d`, `b.a.d`) read as
/// one word. Filter words go through the same function, so they compare equal.
pub fn normalise(text: &str) -> Vec<String> {
    normalise_marked(text).into_iter().map(|(w, _)| w).collect()
}

/// [`normalise`], with each word marked `true` when it was joined from single
/// characters.
fn normalise_marked(text: &str) -> Vec<(String, bool)> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        let c = match c {
            '0' => 'o',
            '1' => 'i',
            '3' => 'e',
            '4' => 'a',
            '5' => 's',
            '7' => 't',
            '@' => 'a',
            '$' => 's',
            c => c,
        };
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    // Join runs of single characters.
    let mut out: Vec<(String, bool)> = Vec::with_capacity(words.len());
    let mut run = String::new();
    let mut run_len = 0;
    for w in words {
        if w.chars().count() == 1 {
            run.push_str(&w);
            run_len += 1;
        } else {
            if run_len > 0 {
                out.push((std::mem::take(&mut run), run_len > 1));
                run_len = 0;
            }
            out.push((w, false));
        }
    }
    if run_len > 0 {
        out.push((run, run_len > 1));
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    )
}

fn link_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // A scheme or `www.`, or a bare domain with a common top-level domain.
        Regex::new(
            r"(?i)(?:\b[a-z][a-z0-9+.-]{1,15}://|\bwww\.)([^\s/?#<>]+)|\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:com|net|org|io|gg|tv|be|ly|me|co|ru|uk|de|fr|xyz|info|biz|link|site|online|top|app|dev|to|cc|live|stream|click|us))\b",
        )
        .unwrap_or_else(|e| unreachable!("the link expression is valid: {e}"))
    })
}

/// The hosts of the links in plain text, lowercase (`https://Example.com/x` →
/// `example.com`; `www.example.com` → `www.example.com`).
pub fn link_hosts(text: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for caps in link_regex().captures_iter(text) {
        let whole = caps.get(0).map_or("", |m| m.as_str()).to_lowercase();
        let host = match (caps.get(1), caps.get(2)) {
            (Some(h), _) => {
                let h = h.as_str().to_lowercase();
                // `user@host:port` → host.
                let h = h.rsplit('@').next().unwrap_or("").to_owned();
                let h = h.split(':').next().unwrap_or("").to_owned();
                if whole.starts_with("www.") {
                    format!("www.{h}")
                } else {
                    h
                }
            }
            (None, Some(d)) => d.as_str().to_lowercase(),
            _ => continue,
        };
        let host = host.trim_end_matches('.').to_owned();
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

fn href_hosts(html: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("href=\"") {
        rest = &rest[i + 6..];
        let end = rest.find('"').unwrap_or(rest.len());
        for h in link_hosts(&rest[..end]) {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        rest = &rest[end..];
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_pattern_len: 200,
        regex_size_limit: 1 << 16,
    };

    fn spec(kind: Kind, pattern: &str) -> FilterSpec {
        FilterSpec {
            name: "t".into(),
            kind,
            pattern: pattern.into(),
            lines: None,
            window_ms: None,
            min_letters: None,
            ratio: None,
            allow: Vec::new(),
            action: Action::Warn,
            escalate: true,
            reason: String::new(),
        }
    }

    fn hits(f: &Filter, text: &str) -> bool {
        f.matches_text(&Line::new(text, text))
    }

    #[test]
    fn words_match_through_case_spacing_leet_and_invisible_characters() {
        let f = Filter::compile(spec(Kind::Word, "badword"), LIMITS).unwrap();
        for evasion in [
            "this is a badword",
            "BADWORD!",
            "b a d w o r d",
            "b.a.d.w.o.r.d",
            "B-A-D-W-O-R-D lol",
            "b4dw0rd",
            "bad\u{200B}word",
            "you are a b a d w o r d",
            "ba\u{00AD}dword",
        ] {
            assert!(hits(&f, evasion), "{evasion:?} slipped through");
        }
        for clean in ["badwords are bad", "a bad word", "goodword", "", "b a d"] {
            assert!(!hits(&f, clean), "{clean:?} was caught");
        }
        let phrase = Filter::compile(spec(Kind::Word, "Go Away"), LIMITS).unwrap();
        assert!(hits(&phrase, "please, go   AWAY now"));
        assert!(!hits(&phrase, "go, then come away"));
    }

    #[test]
    fn unicode_words_are_lowercased_not_mangled() {
        let f = Filter::compile(spec(Kind::Word, "Ärger"), LIMITS).unwrap();
        assert!(hits(&f, "so viel ÄRGER heute"));
        let f = Filter::compile(spec(Kind::Word, "кот"), LIMITS).unwrap();
        assert!(hits(&f, "мой КОТ спит"));
        assert!(Filter::compile(spec(Kind::Word, "!!! ..."), LIMITS).is_err());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let err = Filter::compile(spec(Kind::Regex, "(unclosed"), LIMITS).unwrap_err();
        assert!(err.0.starts_with("bad regular expression: "), "{err}");
        assert!(err.0.contains("unclosed"), "{err}");
        assert!(!err.0.contains('\n'), "{err}");
        let err = Filter::compile(spec(Kind::Regex, "a*"), LIMITS).unwrap_err();
        assert!(err.0.contains("empty line"), "{err}");
        let err = Filter::compile(spec(Kind::Regex, &"a".repeat(201)), LIMITS).unwrap_err();
        assert!(err.0.contains("201 characters"), "{err}");
        // Small in text, huge compiled: refused by the size limit, not built.
        let err = Filter::compile(spec(Kind::Regex, r"\w{500}\w{500}"), LIMITS).unwrap_err();
        assert!(err.0.contains("size limit"), "{err}");
        let mut bad = spec(Kind::Flood, "");
        bad.lines = Some(1);
        bad.window_ms = Some(1000);
        assert!(
            Filter::compile(bad, LIMITS)
                .unwrap_err()
                .0
                .contains("lines")
        );
        let mut bad_name = spec(Kind::Link, "");
        bad_name.name = "no spaces".into();
        assert!(Filter::compile(bad_name, LIMITS).is_err());
    }

    #[test]
    fn regexes_are_case_insensitive_and_see_the_normalised_text() {
        let f = Filter::compile(spec(Kind::Regex, r"free\s*nitro"), LIMITS).unwrap();
        assert!(hits(&f, "FREE NITRO here"));
        assert!(hits(&f, "f r e e nitro"));
        assert!(!hits(&f, "nitro is not free"));
    }

    #[test]
    fn links_are_found_in_every_shape_and_allowed_domains_pass() {
        assert_eq!(
            link_hosts("see https://Example.com/x?y"),
            vec!["example.com"]
        );
        assert_eq!(link_hosts("www.spam.net now"), vec!["www.spam.net"]);
        assert_eq!(link_hosts("go to spam.xyz"), vec!["spam.xyz"]);
        assert_eq!(link_hosts("http://user@evil.org:8080/"), vec!["evil.org"]);
        assert!(link_hosts("no links. just text.").is_empty());
        assert!(link_hosts("version 1.2.3").is_empty());
        let mut s = spec(Kind::Link, "");
        s.allow = vec!["youtube.com".into(), "youtu.be".into()];
        let f = Filter::compile(s, LIMITS).unwrap();
        assert!(!hits(
            &f,
            "https://www.youtube.com/watch?v=x and youtu.be/abc"
        ));
        assert!(hits(&f, "https://youtube.com.evil.org/x"));
        assert!(hits(&f, "youtube.com and spam.io"));
        // The server wraps links in <a href>; the href counts even if the text hides it.
        let line = Line::new(
            "click",
            r#"<a href="https://evil.org/x" target="_blank">click</a>"#,
        );
        assert!(f.matches_text(&line));
    }

    #[test]
    fn caps_needs_enough_letters() {
        let f = Filter::compile(spec(Kind::Caps, ""), LIMITS).unwrap();
        assert!(hits(&f, "WHY IS EVERYONE SO LOUD"));
        assert!(!hits(&f, "OK LOL"));
        assert!(!hits(&f, "Why is everyone so loud"));
        assert!(!hits(&f, "1234567890123456789 !!!!"));
    }
}
