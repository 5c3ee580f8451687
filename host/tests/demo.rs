//! The offline demo as its users run it: the built `daz demo`, with every plugin of the
//! repository, prints the bot's answer to each scripted command (chat and PM), the hot
//! swap with the plugin's state kept, and the status page's URL (which really serves,
//! with the printed token); no DEBUG line from a dependency reaches its output.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use daz_host::demo::plan::Plan;
use daz_testkit::build_plugins;

/// How long the whole guided part may take on a loaded machine.
const T: Duration = Duration::from_secs(240);

/// The demo's plugin libraries, built as the tests build plugins.
fn demo_plugins() -> std::path::PathBuf {
    let plan = Plan::shipped().expect("the shipped plan");
    let packages: Vec<&str> = plan.plugins.iter().map(|p| p.package.as_str()).collect();
    build_plugins(&packages)
}

/// `GET path` on the demo's HTTP server, with the admin token if given; the whole
/// response.
fn get(addr: &str, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the status page's server");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the response");
    out
}

#[test]
fn daz_demo_answers_every_scripted_command_swaps_with_state_and_shows_the_status_page() {
    let dir = demo_plugins();
    let mut child = Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["demo", "--seconds", "600", "--plugin-dir"])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daz runs");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let start = Instant::now();
    // Until the guide is through its steps (or the demo ends early).
    loop {
        let left = T.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with("[guide]") && line.contains("steps done");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = lines.join("\n");

    // The status page serves while the demo runs: its one-time login URL logs a browser
    // in (a session cookie), and the printed token opens the admin API.
    let login = lines
        .iter()
        .find_map(|l| l.strip_prefix("[http]   status page: http://"))
        .unwrap_or_else(|| panic!("no status page line:\n{text}"));
    let (addr, rest) = login.split_once('/').unwrap();
    let login_path = format!("/{}", rest.split_whitespace().next().unwrap());
    assert!(login_path.starts_with("/?login="), "{login}");
    let redeemed = get(addr, &login_path, None);
    assert!(redeemed.starts_with("HTTP/1.1 303"), "{redeemed}");
    assert!(
        redeemed.to_ascii_lowercase().contains("set-cookie: "),
        "{redeemed}"
    );
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("[http]   admin API token"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no token line:\n{text}"));
    let index = get(addr, "/", Some(token));
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    let plugins = get(addr, "/api/plugins", Some(token));
    assert!(plugins.starts_with("HTTP/1.1 200"), "{plugins}");
    for p in &Plan::shipped().unwrap().plugins {
        assert!(
            plugins.contains(&format!("\"{}\"", p.name)),
            "{} in {plugins}",
            p.name
        );
    }

    // SIGINT ends it cleanly before --seconds.
    // SAFETY: signals the child this test started, by its id.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for line in rx.iter() {
        lines.push(line);
    }
    let status = child.wait().expect("daz exits");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let text = lines.join("\n");
    assert!(status.success(), "{text}\n{stderr}");

    // Every plugin of the repository is loaded.
    for p in &Plan::shipped().unwrap().plugins {
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("{} ", p.name))),
            "{} listed as loaded:\n{text}",
            p.name
        );
    }
    // An answer to each scripted command, in chat or by PM.
    let answered = |what: &str, answer: &str| {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("[bot]") && l.contains(answer)),
            "no answer to {what} ({answer:?}):\n{text}"
        );
    };
    answered("!help", "Commands (");
    answered("!seen mod_mia", "mod_mia");
    answered("!np", "Now playing");
    answered("!stats", "Today");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[bot]    (PM to newcomer)") && l.contains("Plugins:")),
        "no PM answer to !about:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[bot]    (PM to newcomer)") && l.contains("Warning:")),
        "no moderation warning for the line in capitals:\n{text}"
    );
    answered("!roll 2d6", "newcomer rolls 2d6: ");
    answered("!tell sam …", "I'll tell sam");
    answered("!quote add …", "Quote #1 added.");
    answered("!hello", "Hello, newcomer! (greeting #1)");
    // The swap, and the state kept across it.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[host]   example swapped in")),
        "{text}"
    );
    answered("!hello after the swap", "Hi again, newcomer! (greeting #2)");
    assert!(text.contains("[check]  the count went #1 → #2"), "{text}");
    let steps = Plan::shipped().unwrap().steps.len();
    assert!(
        text.contains(&format!("{steps} of {steps} steps done")),
        "{text}"
    );
    // The default log level lets no dependency's DEBUG (or TRACE) line through.
    for l in lines.iter().map(String::as_str).chain(stderr.lines()) {
        assert!(
            !l.contains(" DEBUG ") && !l.contains(" TRACE "),
            "{l}\n{text}"
        );
    }
}

#[test]
fn without_its_plugins_and_no_source_tree_daz_demo_says_how_to_build_them() {
    // A copy outside target/: no plugins beside it, no source tree to build them from.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("daz");
    std::fs::copy(env!("CARGO_BIN_EXE_daz"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["demo", "--seconds", "1"])
        .output()
        .expect("daz runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cargo build --release -p daz-plugin-storage -p daz-plugin-commands"),
        "{stderr}"
    );
    assert!(stderr.contains("--plugin-dir"), "{stderr}");
}
