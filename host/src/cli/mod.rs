//! The client commands of `daz`: they talk to a running host's admin API and print a
//! table for people or, with `--json`, the API's JSON for scripts.
//!
//! * [`client`] — the host's address and token, requests, the live event stream.
//! * this file — the commands, their output and their exit codes ([`Exit`]).
//!
//! The token is never taken on the command line (other users see arguments in `ps`):
//! `DAZ_ADMIN_TOKEN`, `--token-file`, or the configuration's `[http] token_env` /
//! `token_file`.

pub mod client;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use reqwest::Method;

use client::{Client, Frame};

/// Exit codes of the client commands (also in `daz --help` and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The host answered that the action failed (unknown plugin or room, a reload
    /// refused, the retry plugin not loaded, …).
    Failed = 1,
    /// Wrong usage or configuration (bad arguments, unreadable config or token file).
    Usage = 2,
    /// The host cannot be reached.
    Unreachable = 3,
    /// The host refused the token (missing or wrong).
    Unauthorized = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// The exit-code table for `--help`.
pub const EXIT_CODES_HELP: &str =
    "Exit codes of the client commands (plugins, rooms, say, events, retry):
  0  ok
  1  the action failed (unknown plugin or room, reload refused, retry plugin not loaded, ...)
  2  usage or configuration error (bad arguments, invalid plugins.toml or token file)
  3  cannot reach the host (not running, wrong --url)
  4  unauthorized (missing or wrong admin token)
config check exits 0 when the file is valid and 2 when it is not; run exits 2 on an
invalid configuration (or a non-loopback listen without a token) and 1 when the host fails.";

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// For people (stderr).
    pub message: String,
    /// The API's JSON answer, printed on stdout with `--json`.
    pub body: Option<serde_json::Value>,
}

impl Failure {
    /// A failure with `message`.
    pub fn new(exit: Exit, message: String) -> Failure {
        Failure {
            exit,
            message,
            body: None,
        }
    }

    fn with_body(mut self, body: serde_json::Value) -> Failure {
        self.body = Some(body);
        self
    }
}

/// Where the host is and how to authenticate (every client command).
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The host's admin API, like http://127.0.0.1:9464 (default: from the
    /// configuration's `[http] listen`).
    #[arg(long, env = "DAZ_URL", global = true)]
    pub url: Option<String>,
    /// A file holding the admin token (default: $DAZ_ADMIN_TOKEN, then the
    /// configuration's `[http] token_env` / `token_file`).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The configuration file to read the address and token keys from (default:
    /// ./plugins.toml if it exists).
    #[arg(long, short, env = "DAZ_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `daz plugins …`.
#[derive(Subcommand, Debug, Clone)]
pub enum PluginsCommand {
    /// Every configured plugin: state, version, file hash, load time, counters.
    List,
    /// Load the plugin's file again and swap it in.
    Reload {
        /// The plugin (its `[plugins.<name>]` table).
        name: String,
    },
    /// Start a plugin (until the next change of plugins.toml).
    Enable {
        /// The plugin.
        name: String,
    },
    /// Stop a plugin (until the next change of plugins.toml).
    Disable {
        /// The plugin.
        name: String,
    },
    /// Swap the previous version back in.
    Rollback {
        /// The plugin.
        name: String,
    },
}

/// `daz retry …`.
#[derive(Subcommand, Debug, Clone)]
pub enum RetryCommand {
    /// Operations that failed for good (the retry plugin's dead letters).
    Dead,
    /// Send a dead letter again (`all` for every one).
    Replay {
        /// The dead letter's id, or `all`.
        id: String,
    },
}

/// A client command.
#[derive(Debug, Clone)]
pub enum Command {
    /// `daz plugins`.
    Plugins(Option<PluginsCommand>),
    /// `daz rooms [ROOM]`.
    Rooms(Option<String>),
    /// `daz say ROOM MESSAGE`.
    Say {
        /// The room.
        room: String,
        /// The words of the message.
        message: Vec<String>,
        /// Send it as a private message to this user.
        pm: Option<String>,
    },
    /// `daz events`.
    Events {
        /// Subject pattern.
        subject: Option<String>,
        /// How many recent events.
        limit: usize,
        /// Keep printing new events.
        follow: bool,
    },
    /// `daz retry`.
    Retry(RetryCommand),
    /// `daz login-url`.
    LoginUrl,
}

/// Runs a client command and returns the process exit code.
pub fn run(args: &ClientArgs, command: Command) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daz: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match rt.block_on(execute(args, command)) {
        Ok(()) => Exit::Ok.into(),
        Err(f) => {
            if args.json
                && let Some(body) = &f.body
            {
                println!("{}", pretty(body));
            }
            eprintln!("daz: {}", f.message);
            f.exit.into()
        }
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn execute(args: &ClientArgs, command: Command) -> Result<(), Failure> {
    let client = Client::new(args)?;
    match command {
        Command::Plugins(None | Some(PluginsCommand::List)) => {
            let v = client.call(Method::GET, "/api/plugins", None).await?;
            print_or(args, &v, plugins_table)
        }
        Command::Plugins(Some(cmd)) => {
            let (action, name) = match &cmd {
                PluginsCommand::Reload { name } => ("reload", name),
                PluginsCommand::Enable { name } => ("enable", name),
                PluginsCommand::Disable { name } => ("disable", name),
                PluginsCommand::Rollback { name } => ("rollback", name),
                PluginsCommand::List => unreachable!("handled above"),
            };
            let v = client
                .call(
                    Method::POST,
                    &format!("/api/plugins/{}/{action}", seg(name)),
                    None,
                )
                .await?;
            print_or(args, &v, |v| {
                v["detail"].as_str().unwrap_or("done").to_owned()
            })
        }
        Command::LoginUrl => {
            let v = client.call(Method::POST, "/api/login-url", None).await?;
            print_or(args, &v, |v| v["url"].as_str().unwrap_or("?").to_owned())
        }
        Command::Rooms(None) => {
            let v = client.call(Method::GET, "/api/rooms", None).await?;
            print_or(args, &v, rooms_table)
        }
        Command::Rooms(Some(room)) => {
            let v = client
                .call(Method::GET, &format!("/api/rooms/{}", seg(&room)), None)
                .await?;
            print_or(args, &v, room_detail)
        }
        Command::Say { room, message, pm } => {
            let text = message.join(" ");
            let mut body = serde_json::json!({ "message": text });
            if let Some(to) = &pm {
                body["pm_to"] = serde_json::Value::String(to.clone());
            }
            let v = client
                .call(
                    Method::POST,
                    &format!("/api/rooms/{}/say", seg(&room)),
                    Some(body),
                )
                .await?;
            print_or(args, &v, |v| {
                format!(
                    "handed to {room}{} (id {})",
                    pm.as_ref()
                        .map(|p| format!(" as a PM to {p}"))
                        .unwrap_or_default(),
                    v["id"].as_str().unwrap_or("?")
                )
            })
        }
        Command::Events {
            subject,
            limit,
            follow,
        } => events(args, &client, subject, limit, follow).await,
        Command::Retry(RetryCommand::Dead) => {
            let v = client.call(Method::GET, "/api/retry/dead", None).await?;
            print_or(args, &v, dead_table)
        }
        Command::Retry(RetryCommand::Replay { id }) => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/api/retry/dead/{}/replay", seg(&id)),
                    None,
                )
                .await?;
            print_or(args, &v, |v| {
                format!("replayed {}", v["replayed"].as_u64().unwrap_or(0))
            })
        }
    }
}

fn print_or(
    args: &ClientArgs,
    v: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value) -> String,
) -> Result<(), Failure> {
    if args.json {
        println!("{}", pretty(v));
    } else {
        let text = human(v);
        if !text.is_empty() {
            println!("{}", text.trim_end());
        }
    }
    Ok(())
}

async fn events(
    args: &ClientArgs,
    client: &Client,
    subject: Option<String>,
    limit: usize,
    follow: bool,
) -> Result<(), Failure> {
    let mut query = format!("limit={limit}");
    if let Some(s) = &subject {
        query.push_str(&format!("&subject={}", seg(s)));
    }
    // Subscribed before the recent events are read: nothing falls between the two, and
    // ids (ordered by time) drop what both return.
    let mut stream = match follow {
        true => Some(
            client
                .stream(&format!(
                    "/api/events/stream{}",
                    subject
                        .as_ref()
                        .map(|s| format!("?subject={}", seg(s)))
                        .unwrap_or_default()
                ))
                .await?,
        ),
        false => None,
    };
    let v = client
        .call(Method::GET, &format!("/api/events?{query}"), None)
        .await?;
    let listed = v["events"].as_array().cloned().unwrap_or_default();
    let mut last_id = String::new();
    if args.json && !follow {
        println!("{}", pretty(&v));
    } else {
        for e in &listed {
            print_event(args, e);
        }
    }
    if let Some(last) = listed.last() {
        last_id = last["id"].as_str().unwrap_or_default().to_owned();
    }
    let Some(stream) = stream.as_mut() else {
        return Ok(());
    };
    loop {
        match stream.next_frame().await? {
            Some(Frame::Event { name: None, data }) => {
                let e: serde_json::Value =
                    serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
                if e["id"].as_str().is_some_and(|id| id <= last_id.as_str()) {
                    continue;
                }
                print_event(args, &e);
            }
            Some(Frame::Event {
                name: Some(n),
                data,
            }) if n == "lagged" => {
                eprintln!("daz: this client fell behind; events were skipped: {data}");
            }
            Some(_) => {}
            None => {
                return Err(Failure::new(
                    Exit::Unreachable,
                    format!("the host at {} closed the event stream", client.base()),
                ));
            }
        }
    }
}

fn print_event(args: &ClientArgs, e: &serde_json::Value) {
    use std::io::Write;
    let line = if args.json {
        e.to_string()
    } else {
        let payload = e["payload"].to_string();
        format!(
            "{}  {}  {}  {}",
            clock(e["ts_ms"].as_i64().unwrap_or(0)),
            e["subject"].as_str().unwrap_or("?"),
            e["source"].as_str().unwrap_or("?"),
            cut(&payload, 160)
        )
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `HH:MM:SS.mmm` (UTC) of a unix-ms time.
fn clock(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// "3m12s" for a duration in ms.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A text table: columns padded to their widest cell, the last one left ragged.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn plugins_table(v: &serde_json::Value) -> String {
    let now = crate::now_ms();
    let rows = v["plugins"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let mut state = s(&p["state"]);
            if p["stuck"] == true {
                state.push_str(" (stuck)");
            }
            if p["enabled"] == false {
                state = "disabled".to_owned();
            }
            vec![
                s(&p["name"]),
                state,
                s(&p["version"]),
                p["sha256"]
                    .as_str()
                    .map_or("-".to_owned(), |h| h.chars().take(12).collect()),
                p["loaded_at_ms"]
                    .as_i64()
                    .map_or("-".to_owned(), |t| format!("{} ago", age(now - t))),
                s(&p["events_handled"]),
                s(&p["panics"]),
                s(&p["mailbox_depth"]),
                s(&p["leaked_versions"]),
                p["last_error"]
                    .as_str()
                    .map_or(String::new(), |e| cut(e, 60)),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "VERSION",
            "SHA256",
            "LOADED",
            "HANDLED",
            "PANICS",
            "QUEUE",
            "LEAKED",
            "LAST ERROR",
        ],
        rows,
    )
}

fn rooms_table(v: &serde_json::Value) -> String {
    let rows = v["rooms"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                s(&r["room"]),
                s(&r["channel"]),
                s(&r["state"]),
                s(&r["me"]),
                s(&r["rank"]),
                s(&r["users"]),
                s(&r["playlist"]),
                s(&r["outbound_queued"]),
                r["last_error"]["message"]
                    .as_str()
                    .map_or(String::new(), |e| cut(e, 60)),
            ]
        })
        .collect();
    table(
        &[
            "ROOM",
            "CHANNEL",
            "STATE",
            "BOT",
            "RANK",
            "USERS",
            "PLAYLIST",
            "QUEUED",
            "LAST ERROR",
        ],
        rows,
    )
}

fn room_detail(v: &serde_json::Value) -> String {
    let st = &v["state"];
    let status = &v["status"];
    let mut out = String::new();
    let mut kv = |k: &str, val: String| out.push_str(&format!("{k:<12} {val}\n"));
    kv("room:", s(&v["room"]));
    kv(
        "channel:",
        format!("{} on {}", s(&v["channel"]), s(&v["site"])),
    );
    kv(
        "state:",
        format!(
            "{} for {}",
            s(&status["state"]),
            age(crate::now_ms() - status["since_ms"].as_i64().unwrap_or(0))
        ),
    );
    kv(
        "bot:",
        format!(
            "{} (rank {})",
            st["me"]["name"].as_str().unwrap_or("anonymous"),
            s(&st["me"]["rank"])
        ),
    );
    if let Some(e) = status["last_error"]["message"].as_str() {
        kv("last error:", e.to_owned());
    }
    let playing = &st["now_playing"]["media"];
    kv(
        "playing:",
        playing["title"]
            .as_str()
            .map_or("nothing".to_owned(), str::to_owned),
    );
    kv(
        "playlist:",
        format!("{} items", st["playlist"].as_array().map_or(0, Vec::len)),
    );
    let users: Vec<String> = st["users"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|u| format!("{} ({})", s(&u["name"]), s(&u["rank"])))
        .collect();
    kv(
        "users:",
        format!(
            "{} listed, {} connected: {}",
            users.len(),
            s(&st["usercount"]),
            users.join(", ")
        ),
    );
    out
}

fn dead_table(v: &serde_json::Value) -> String {
    let dead = v["dead"].as_array().map(Vec::as_slice).unwrap_or_default();
    if dead.is_empty() {
        return "no dead letters".to_owned();
    }
    let now = crate::now_ms();
    let rows = dead
        .iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["kind"]),
                s(&d["room"]),
                s(&d["attempts"]),
                d["failed_ms"]
                    .as_i64()
                    .map_or("-".to_owned(), |t| format!("{} ago", age(now - t))),
                cut(d["reason"].as_str().unwrap_or(""), 80),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "ROOM", "ATTEMPTS", "FAILED", "REASON"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns() {
        let t = table(
            &["A", "BB"],
            vec![vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w");
    }

    #[test]
    fn times_read_well() {
        assert_eq!(clock(3_723_004), "01:02:03.004");
        assert_eq!(age(59_000), "59s");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(7_200_000), "2h00m");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
