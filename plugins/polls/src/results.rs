//! A poll as the plugin follows it ([`Tracked`], built from the server's `newPoll` /
//! `updatePoll`), and the one-line results announced when it closes.

use daz_feature_support::text;
use daz_plugin_api::cytube::{Poll, unescape_chat};
use serde::{Deserialize, Serialize};

/// The open poll of a room, as last reported by the server, in plain text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    /// The question (the server's HTML turned back into text).
    pub title: String,
    /// The options, in order.
    pub options: Vec<String>,
    /// Votes per option; `None` where the server hid them from the bot (an obscured
    /// poll and a bot below `viewhiddenpoll`).
    pub counts: Vec<Option<u64>>,
    /// Who opened it (the bot for polls asked for with `!poll`).
    pub initiator: String,
    /// When the server opened it, epoch ms.
    pub opened_ms: i64,
    /// Whether its results are announced when it closes.
    pub announce: bool,
    /// Who asked the bot for it, if anyone.
    pub asked_by: Option<String>,
}

impl Tracked {
    /// From the server's payload.
    pub fn from_poll(p: &Poll, announce: bool, asked_by: Option<String>) -> Self {
        Tracked {
            title: unescape_chat(&p.title),
            options: p.options.iter().map(|o| unescape_chat(o)).collect(),
            counts: p.counts.iter().map(|c| c.0).collect(),
            initiator: p.initiator.clone(),
            opened_ms: p.timestamp,
            announce,
            asked_by,
        }
    }

    /// Total votes, when every count is known.
    pub fn total(&self) -> Option<u64> {
        self.counts.iter().try_fold(0u64, |a, c| c.map(|c| a + c))
    }

    /// `option count` items, in order.
    fn items(&self) -> Vec<String> {
        self.options
            .iter()
            .zip(self.counts.iter().chain(std::iter::repeat(&None)))
            .map(|(o, c)| match c {
                Some(n) => format!("{} {n}", text::fit(o, 60)),
                None => format!("{} ?", text::fit(o, 60)),
            })
            .collect()
    }

    /// The verdict: who won, a tie, no votes, or hidden counts.
    fn verdict(&self) -> String {
        let Some(total) = self.total() else {
            return "the counts were hidden from me".to_owned();
        };
        if total == 0 {
            return "no votes".to_owned();
        }
        let best = self.counts.iter().flatten().copied().max().unwrap_or(0);
        let winners: Vec<&str> = self
            .options
            .iter()
            .zip(&self.counts)
            .filter(|(_, c)| **c == Some(best))
            .map(|(o, _)| o.as_str())
            .collect();
        let votes = if total == 1 { "vote" } else { "votes" };
        match winners.as_slice() {
            [one] => format!(
                "“{}” wins with {best} of {total} {votes}",
                text::fit(one, 60)
            ),
            many if many.len() <= 3 => format!(
                "a tie between {} ({best} each, {total} {votes})",
                many.iter()
                    .map(|w| format!("“{}”", text::fit(w, 40)))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            many => format!(
                "a tie between {} options ({best} each, {total} {votes})",
                many.len()
            ),
        }
    }

    /// The line said when the poll closes.
    pub fn announcement(&self) -> String {
        let head = format!(
            "Poll closed: “{}” — {}. ",
            text::fit(&self.title, 80),
            self.verdict()
        );
        text::join_fitting(&head, &self.items(), " · ", text::MAX_CHAT)
    }

    /// The line `!poll` answers while it is open.
    pub fn status(&self) -> String {
        let head = format!("Open poll: “{}” — ", text::fit(&self.title, 80));
        text::join_fitting(&head, &self.items(), " · ", text::MAX_CHAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(options: &[&str], counts: &[Option<u64>]) -> Tracked {
        Tracked {
            title: "Best pizza?".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            counts: counts.to_vec(),
            initiator: "bot".into(),
            opened_ms: 0,
            announce: true,
            asked_by: None,
        }
    }

    #[test]
    fn winners_ties_no_votes_and_hidden_counts() {
        let t = tracked(&["margherita", "pepperoni"], &[Some(3), Some(1)]);
        assert_eq!(
            t.announcement(),
            "Poll closed: “Best pizza?” — “margherita” wins with 3 of 4 votes. margherita 3 · pepperoni 1"
        );
        let t = tracked(&["a", "b", "c"], &[Some(2), Some(0), Some(2)]);
        assert!(
            t.announcement()
                .contains("a tie between “a” and “c” (2 each, 4 votes)"),
            "{}",
            t.announcement()
        );
        let t = tracked(&["a", "b"], &[Some(0), Some(0)]);
        assert!(t.announcement().contains("— no votes. a 0 · b 0"));
        let t = tracked(&["a", "b"], &[Some(1), Some(0)]);
        assert!(t.announcement().contains("wins with 1 of 1 vote."));
        let t = tracked(&["a", "b"], &[None, None]);
        assert!(t.announcement().contains("hidden from me. a ? · b ?"));
    }

    #[test]
    fn long_polls_fit_one_line() {
        let options: Vec<String> = (0..50).map(|i| format!("{i}{}", "x".repeat(90))).collect();
        let refs: Vec<&str> = options.iter().map(String::as_str).collect();
        let mut t = tracked(&refs, &vec![Some(1); 50]);
        t.title = "t".repeat(255);
        for line in [t.announcement(), t.status()] {
            assert!(text::chat_len(&line) <= text::MAX_CHAT, "{line}");
            assert!(line.contains("more"), "{line}");
        }
    }

    #[test]
    fn the_servers_html_becomes_text() {
        let p: Poll = serde_json::from_value(serde_json::json!({
            "title": "&lt;b&gt;Q&lt;/b&gt; &amp; more",
            "options": ["&lt;i&gt;", "ü"],
            "counts": [1, "?"],
            "initiator": "bot",
            "timestamp": 5
        }))
        .unwrap();
        let t = Tracked::from_poll(&p, true, Some("bob".into()));
        assert_eq!(t.title, "<b>Q</b> & more");
        assert_eq!(t.options, vec!["<i>", "ü"]);
        assert_eq!(t.counts, vec![Some(1), None]);
        assert_eq!(t.total(), None);
    }
}
