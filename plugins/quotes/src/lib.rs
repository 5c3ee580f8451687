//! # daz-plugin-quotes — `!quote`
//!
//! * `!quote` — a random saved quote of the room; `!quote 12` — quote #12.
//! * `!quote <user>` — a random past chat line of that user, from the storage plugin's
//!   event log (commands left out).
//! * `!quote add <text>` — saves a quote; `!quote search <words>` — quotes holding every
//!   word; `!quote remove <id>` — by moderators (or whoever added it).
//!
//! Quotes live in the plugin's own table `quotes_quotes` (PostgreSQL and SQLite through
//! the storage plugin's per-plugin migrations); every answer is read from the database,
//! so a hot reload or a restart has nothing to hand over. Settings in `README.md` and
//! [`Config`].

use daz_feature_support::{store::Store, text};
use daz_plugin_api::{
    cytube::unescape_chat,
    prelude::*,
    routing::{self, Command},
    sql::{Migration, Param, Rows},
};
use serde::Deserialize;

/// The `[plugins.quotes.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Longest quote, in characters.
    pub max_chars: usize,
    /// Most quotes per room.
    pub max_quotes: i64,
    /// Rank that may remove any quote (the one who added a quote may always remove it).
    pub remove_rank: f64,
    /// Most results `!quote search` names.
    pub max_results: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_chars: 300,
            max_quotes: 10_000,
            remove_rank: 2.0,
            max_results: 5,
        }
    }
}

fn migrations() -> Vec<Migration> {
    let table = |id: &str, ts: &str| {
        format!(
            "CREATE TABLE quotes_quotes (id {id}, room TEXT NOT NULL, text TEXT NOT NULL, \
             added_by TEXT NOT NULL, added_at {ts} NOT NULL);\
             CREATE INDEX quotes_quotes_room ON quotes_quotes (room, id);"
        )
    };
    vec![Migration::new(
        1,
        "quotes",
        table("BIGSERIAL PRIMARY KEY", "TIMESTAMPTZ"),
        table("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
    )]
}

/// A valid Cytube user name.
fn valid_user(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `LIKE` pattern for `word` anywhere, with `\` as the escape character.
fn like(word: &str) -> String {
    let mut out = String::from("%");
    for c in word.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The plugin instance.
pub struct Quotes {
    host: Host,
    config: Config,
    store: Store,
}

impl Quotes {
    fn reply(&self, cmd: &Command, line: &str) -> Result<()> {
        routing::reply(&self.host, cmd, &text::fit(line, text::MAX_CHAT))?;
        Ok(())
    }

    fn query(&mut self, cmd: &Command, sql: &str, params: &[Param]) -> Result<Option<Rows>> {
        match self.store.query(sql, params) {
            Ok(rows) => Ok(Some(rows)),
            Err(e) => {
                self.host.log(
                    Level::Warn,
                    "a quotes query failed",
                    &[("error", e.message())],
                );
                self.reply(
                    cmd,
                    "The quote book is not available right now; try again later.",
                )?;
                Ok(None)
            }
        }
    }

    fn show(&self, cmd: &Command, rows: &Rows) -> Result<()> {
        let Some(row) = rows.row(0) else {
            return self.reply(cmd, "No quotes yet; add one with !quote add <text>.");
        };
        let id: i64 = row.get("id").unwrap_or(0);
        let quote: String = row.get("text").unwrap_or_default();
        let by: String = row.get("added_by").unwrap_or_default();
        self.reply(cmd, &format!("#{id}: {quote} (added by {by})"))
    }

    fn random(&mut self, cmd: &Command) -> Result<()> {
        if let Some(rows) = self.query(
            cmd,
            "SELECT id, text, added_by FROM quotes_quotes WHERE room = $1 ORDER BY RANDOM() LIMIT 1",
            &[cmd.room.clone().into()],
        )? {
            self.show(cmd, &rows)?;
        }
        Ok(())
    }

    fn by_id(&mut self, cmd: &Command, id: i64) -> Result<()> {
        let Some(rows) = self.query(
            cmd,
            "SELECT id, text, added_by FROM quotes_quotes WHERE room = $1 AND id = $2",
            &[cmd.room.clone().into(), id.into()],
        )?
        else {
            return Ok(());
        };
        if rows.is_empty() {
            return self.reply(cmd, &format!("There is no quote #{id}."));
        }
        self.show(cmd, &rows)
    }

    fn of_user(&mut self, cmd: &Command, who: &str) -> Result<()> {
        if !valid_user(who) {
            return self.reply(
                cmd,
                "That is not a user name. Usage: !quote [<user> | <id> | add <text> | search <words> | remove <id>]",
            );
        }
        let Some(rows) = self.query(
            cmd,
            "SELECT user_name, message FROM event_log WHERE room = $1 AND event = 'chatMsg' \
             AND lower(user_name) = lower($2) AND message NOT LIKE '!%' \
             ORDER BY RANDOM() LIMIT 1",
            &[cmd.room.clone().into(), who.into()],
        )?
        else {
            return Ok(());
        };
        let Some(row) = rows.row(0) else {
            return self.reply(cmd, &format!("I have no lines from {who}."));
        };
        let name: String = row.get("user_name").unwrap_or_else(|_| who.to_owned());
        let line = unescape_chat(&row.get::<String>("message").unwrap_or_default());
        self.reply(cmd, &format!("{name}: “{line}”"))
    }

    fn add(&mut self, cmd: &Command, quote: &str) -> Result<()> {
        let quote = quote.trim();
        if quote.is_empty() {
            return self.reply(cmd, "Usage: !quote add <text>");
        }
        let chars = quote.chars().count();
        if chars > self.config.max_chars {
            return self.reply(
                cmd,
                &format!(
                    "That quote is {chars} characters long; the most is {}.",
                    self.config.max_chars
                ),
            );
        }
        let Some(count) = self.query(
            cmd,
            "SELECT COUNT(*) AS n FROM quotes_quotes WHERE room = $1",
            &[cmd.room.clone().into()],
        )?
        else {
            return Ok(());
        };
        let n: i64 = count.row(0).and_then(|r| r.get("n").ok()).unwrap_or(0);
        if n >= self.config.max_quotes {
            return self.reply(cmd, &format!("The quote book is full ({n} quotes)."));
        }
        let Some(rows) = self.query(
            cmd,
            "INSERT INTO quotes_quotes (room, text, added_by, added_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
            &[
                cmd.room.clone().into(),
                quote.into(),
                cmd.username.clone().into(),
                Param::timestamp_ms(cmd.time),
            ],
        )?
        else {
            return Ok(());
        };
        let id: i64 = rows.row(0).and_then(|r| r.get("id").ok()).unwrap_or(0);
        self.reply(cmd, &format!("Quote #{id} added."))
    }

    fn search(&mut self, cmd: &Command, words: &[String]) -> Result<()> {
        let words: Vec<&String> = words
            .iter()
            .filter(|w| !w.trim().is_empty())
            .take(8)
            .collect();
        if words.is_empty() {
            return self.reply(cmd, "Usage: !quote search <words>");
        }
        let mut sql = String::from("SELECT id, text FROM quotes_quotes WHERE room = $1");
        let mut params: Vec<Param> = vec![cmd.room.clone().into()];
        for (i, w) in words.iter().enumerate() {
            sql.push_str(&format!(" AND lower(text) LIKE ${} ESCAPE '\\'", i + 2));
            params.push(like(&w.chars().take(100).collect::<String>()).into());
        }
        sql.push_str(" ORDER BY id");
        let Some(rows) = self.query(cmd, &sql, &params)? else {
            return Ok(());
        };
        if rows.is_empty() {
            return self.reply(cmd, "No quote has all of those words.");
        }
        let items: Vec<String> = rows
            .iter()
            .take(self.config.max_results)
            .map(|r| {
                let id: i64 = r.get("id").unwrap_or(0);
                let t: String = r.get("text").unwrap_or_default();
                format!("#{id} {}", text::fit(&t, 60))
            })
            .collect();
        let head = format!("{} found: ", rows.len());
        self.reply(
            cmd,
            &text::join_fitting(&head, &items, " · ", text::MAX_CHAT),
        )
    }

    fn remove(&mut self, cmd: &Command, id: Option<&String>) -> Result<()> {
        let Some(id) = id.and_then(|s| s.trim_start_matches('#').parse::<i64>().ok()) else {
            return self.reply(cmd, "Usage: !quote remove <id>");
        };
        let Some(rows) = self.query(
            cmd,
            "SELECT added_by FROM quotes_quotes WHERE room = $1 AND id = $2",
            &[cmd.room.clone().into(), id.into()],
        )?
        else {
            return Ok(());
        };
        let Some(row) = rows.row(0) else {
            return self.reply(cmd, &format!("There is no quote #{id}."));
        };
        let by: String = row.get("added_by").unwrap_or_default();
        if cmd.effective_rank() < self.config.remove_rank && !by.eq_ignore_ascii_case(&cmd.username)
        {
            return self.reply(
                cmd,
                "Only moderators, or whoever added a quote, can remove it.",
            );
        }
        if self
            .query(
                cmd,
                "DELETE FROM quotes_quotes WHERE room = $1 AND id = $2",
                &[cmd.room.clone().into(), id.into()],
            )?
            .is_some()
        {
            self.reply(cmd, &format!("Quote #{id} removed."))?;
        }
        Ok(())
    }

    fn quote(&mut self, cmd: &Command) -> Result<()> {
        let first = cmd.args.first().map(|s| s.to_lowercase());
        let after_first = cmd
            .rest
            .trim_start()
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r);
        match first.as_deref() {
            None => self.random(cmd),
            Some("add") => self.add(cmd, after_first),
            Some("search" | "find") => self.search(cmd, &cmd.args[1..]),
            Some("remove" | "rm" | "del" | "delete") => self.remove(cmd, cmd.args.get(1)),
            Some(w) => match w.trim_start_matches('#').parse::<i64>() {
                Ok(id) => self.by_id(cmd, id),
                Err(_) => self.of_user(cmd, &cmd.args[0]),
            },
        }
    }
}

impl Plugin for Quotes {
    const NAME: &'static str = "quotes";
    const REQUIRES: &'static [&'static str] = &["storage"];
    const DESCRIPTION: &'static str =
        "!quote: saved quotes, a user's past lines, search, removal by moderators";
    type Config = Config;
    type State = NoState;

    fn create(host: Host, config: Config, _previous: Option<NoState>) -> Result<Self> {
        if config.max_chars == 0 || config.max_results == 0 {
            return Err(Error::config("max_chars and max_results must be above 0"));
        }
        host.subscribe(&routing::subject("quote"))?;
        let store = Store::new(host.clone(), migrations(), 1, Vec::new());
        Ok(Quotes {
            host,
            config,
            store,
        })
    }

    fn manifest() -> Manifest {
        Manifest::default().command(CommandSpec {
            usage: "[<user> | <id> | add <text> | search <words> | remove <id>]".to_owned(),
            aliases: vec!["q".to_owned()],
            user_cooldown_ms: 2_000,
            ..CommandSpec::new("quote", "Quotes: random, by user, add, search, remove")
        })
    }

    fn examples() -> Vec<ChatExample> {
        // Run against a SQL service that holds quote #1 and one line of bob's.
        vec![
            ChatExample::new("!quote", "#1: to be or not to be (added by carol)"),
            ChatExample::new("!quote #1", "#1: to be or not to be"),
            ChatExample::new("!quote 9", "There is no quote #9."),
            ChatExample::new("!quote bob", "bob: “hello <world>”"),
            ChatExample::new("!quote nobody", "I have no lines from nobody."),
            ChatExample::new("!quote <b>x</b>", "That is not a user name"),
            ChatExample::new("!quote add I came, I saw", "Quote #2 added."),
            ChatExample::new("!quote add", "Usage: !quote add <text>"),
            ChatExample::new("!quote search be", "1 found: #1 to be or not to be"),
            ChatExample::new(
                "!quote remove 1",
                "Only moderators, or whoever added a quote",
            ),
        ]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<()> {
        if routing::is_failure(event) || !event.subject().starts_with(routing::SUBJECT_PREFIX) {
            return Ok(());
        }
        let cmd = Command::from_event(event)?;
        if cmd.command == "quote" {
            self.quote(&cmd)?;
        }
        Ok(())
    }
}

export_plugin!(Quotes);

#[cfg(test)]
mod tests {
    use daz_plugin_api::{
        routing::testing::{check_command_examples, command_for, feed},
        testing::Harness,
    };
    use serde_json::{Value, json};

    use super::*;

    fn rows(cols: &[&str], rows: Value) -> Value {
        let columns: Vec<Value> = cols
            .iter()
            .map(|c| json!({"name": c, "db_type": "TEXT"}))
            .collect();
        json!({"columns": columns, "rows": rows})
    }

    /// A SQL service holding quote #1 by carol and one line of bob's.
    fn sql(h: &mut Harness<Quotes>) {
        h.respond("sql.info", |_| {
            Ok(json!({"dialect": "sqlite", "connected": true}))
        });
        h.respond("sql.migrate", |_| {
            Ok(json!({"dialect": "sqlite", "applied": [1], "current": 1}))
        });
        h.respond("sql.query", |req| {
            let sql = req["sql"].as_str().unwrap_or_default();
            let p = &req["params"];
            let arg = |i: usize| p[i]["value"].clone();
            Ok(
                if sql.starts_with("SELECT user_name, message FROM event_log") {
                    if arg(1) == json!("bob") {
                        rows(
                            &["user_name", "message"],
                            json!([["bob", "hello &lt;world&gt;"]]),
                        )
                    } else {
                        rows(&["user_name", "message"], json!([]))
                    }
                } else if sql.starts_with("INSERT") {
                    rows(&["id"], json!([[2]]))
                } else if sql.starts_with("SELECT COUNT") {
                    rows(&["n"], json!([[1]]))
                } else if sql.contains("AND id = $2") && arg(1) != json!(1) {
                    rows(&["id", "text", "added_by"], json!([]))
                } else if sql.starts_with("SELECT added_by") {
                    rows(&["added_by"], json!([["carol"]]))
                } else {
                    rows(
                        &["id", "text", "added_by"],
                        json!([[1, "to be or not to be", "carol"]]),
                    )
                },
            )
        });
    }

    #[test]
    fn chat_examples() {
        let failures = check_command_examples::<Quotes>(json!({}), sql).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn search_words_are_literal_in_like() {
        assert_eq!(like("100%_A\\b"), "%100\\%\\_a\\\\b%");
    }

    #[test]
    fn moderators_and_the_author_remove() {
        let mut h = Harness::<Quotes>::new(json!({})).unwrap();
        sql(&mut h);
        for (user, rank) in [("mod", 2.0), ("carol", 0.0)] {
            let cmd = command_for::<Quotes>("!quote remove #1", user, rank, 0).unwrap();
            feed(&mut h, &cmd).unwrap();
            assert_eq!(h.chat_replies().last().unwrap(), "Quote #1 removed.");
        }
        let long = format!("!quote add {}", "x".repeat(301));
        let cmd = command_for::<Quotes>(&long, "bob", 0.0, 0).unwrap();
        feed(&mut h, &cmd).unwrap();
        assert_eq!(
            h.chat_replies().last().unwrap(),
            "That quote is 301 characters long; the most is 300."
        );
    }

    #[test]
    fn no_database_is_a_clear_answer() {
        let mut h = Harness::<Quotes>::new(json!({})).unwrap();
        let cmd = command_for::<Quotes>("!quote", "bob", 0.0, 0).unwrap();
        feed(&mut h, &cmd).unwrap();
        assert_eq!(
            h.chat_replies(),
            vec!["The quote book is not available right now; try again later."]
        );
    }

    #[test]
    fn the_default_configuration_starts() {
        Harness::<Quotes>::new(daz_testkit::default_config("quotes")).unwrap();
    }
}
