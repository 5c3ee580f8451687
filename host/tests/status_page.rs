//! The status page end to end in a real browser: Debian's headless Chromium, driven
//! through chromedriver, against a real host with real plugins and a simulator room.
//!
//! The page asks for the admin token (or, opened through the one-time login URL the
//! host prints, needs none), lists the plugins and the room with its users and
//! what plays, and its buttons act on the host for real: a reload re-creates the plugin
//! instance (its reload count goes up, a new `host.plugin.<name>.loaded` event goes out
//! and the page shows the new start time), disable and enable change the host's
//! configuration and what the page shows. The event rate shows a number above zero while
//! events flow. Screenshots are saved to `target/test-artifacts/status-page.png` (and
//! `status-page-token.png`, the token prompt).
//!
//! Every wait polls the DOM (or the host) until a condition holds, with a timeout.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use daz_cytube_sim::{Account, ChannelConfig, MediaSpec, SimConfig, SimHandle, Simulator};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::account_room;
use daz_testkit::wait;
use daz_testkit::{TestHost, fixture};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "status-page-test-token-0123456789";
const ROOM: &str = "main";
const CHANNEL: &str = "statuschan";
const BOT: &str = "testbot";
const SONG: &str = "Status Page Song";

/// The browser is missing: the test fails with this message alone (no panic, no
/// backtrace), which says how to get it. It never skips: CI must catch a missing install.
struct MissingBrowser(String);

impl std::fmt::Debug for MissingBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the browser lives (Debian's packages), unless the environment says otherwise.
fn browser_paths() -> Result<(PathBuf, PathBuf), MissingBrowser> {
    let from_env =
        |var: &str, default: &str| PathBuf::from(std::env::var(var).unwrap_or(default.to_owned()));
    let chromium = from_env("DAZ_CHROMIUM", "/usr/bin/chromium");
    let driver = from_env("DAZ_CHROMEDRIVER", "/usr/bin/chromedriver");
    for (path, what) in [(&chromium, "chromium"), (&driver, "chromedriver")] {
        if !path.exists() {
            return Err(MissingBrowser(format!(
                "{what} not found at {}: the status page test drives Debian's headless \
                 Chromium through chromedriver. Run the tests with `scripts/test`, which \
                 installs them (or `apt-get install -y chromium chromium-driver`, or point \
                 DAZ_CHROMIUM / DAZ_CHROMEDRIVER at another build).",
                path.display()
            )));
        }
    }
    Ok((chromium, driver))
}

/// `target/test-artifacts` in the workspace.
fn artifacts() -> PathBuf {
    let dir = daz_testkit::workspace()
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// Headless Chromium under chromedriver, with a private profile. chromedriver runs in a
/// process group of its own, which is killed (by its id) on drop: a failed test leaves
/// no browser behind.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: signals the process group this test created for chromedriver.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a Chromium session.
    async fn start() -> Result<Browser, MissingBrowser> {
        let (chromium, driver_path) = browser_paths()?;
        let port = daz_testkit::process::free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                artifacts().join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests may run as root in a container: no setuid sandbox there.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--window-size=1400,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < T,
                "chromedriver did not listen on port {port} within {T:?}"
            );
            tokio::task::yield_now().await;
        }
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start a Chromium session through chromedriver: {e}")
            });
        Ok(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Ends the session (Chromium exits), then chromedriver.
    async fn close(self) {
        self.client
            .clone()
            .close()
            .await
            .expect("close the browser");
    }
}

/// Runs `script` in the page until it returns something other than `null`/`false`,
/// calling `between` before each try (to keep events flowing, for instance).
async fn until_js(client: &Client, what: &str, script: &str, mut between: impl FnMut()) -> Value {
    let start = Instant::now();
    loop {
        between();
        let v = client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script for {what} failed: {e}"));
        if !(v.is_null() || v == Value::Bool(false)) {
            return v;
        }
        assert!(
            start.elapsed() < T,
            "timed out after {T:?} waiting for the page to show {what}; last: {v}"
        );
        tokio::task::yield_now().await;
    }
}

async fn until(client: &Client, what: &str, script: &str) -> Value {
    until_js(client, what, script, || {}).await
}

/// The page's `data-state` of a plugin row once it equals `state`.
async fn plugin_state_is(client: &Client, plugin: &str, state: &str) {
    until(
        client,
        &format!("plugin {plugin} {state}"),
        &format!(
            "const r = document.querySelector('tr[data-plugin=\"{plugin}\"]');\n\
             return r && r.dataset.state === '{state}';"
        ),
    )
    .await;
}

/// Saves what the browser shows as `target/test-artifacts/<name>`.
async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    let path = artifacts().join(name);
    std::fs::write(&path, &png).expect("save the screenshot");
    eprintln!("screenshot: {}", path.display());
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn enter_token(client: &Client, token: &str) {
    let input = client
        .find(Locator::Css("#token-input"))
        .await
        .expect("token input");
    input.clear().await.expect("clear");
    input.send_keys(token).await.expect("type the token");
    click(client, "#token-submit").await;
}

fn sim_config() -> SimConfig {
    SimConfig {
        channels: vec![
            ChannelConfig::registered(CHANNEL)
                .media(MediaSpec::new("yt", "sPg0000001", SONG, 245))
                .media(MediaSpec::new("yt", "sPg0000002", "Next Up", 180)),
        ],
        accounts: vec![
            Account::new(BOT, "botpw"),
            Account::new("alice", "pw"),
            Account::new("bob", "pw"),
        ],
        ..SimConfig::default()
    }
}

async fn host(sim: &SimHandle, dir: &Path, http_extra: &str) -> TestHost {
    let room = account_room(sim, dir, ROOM, CHANNEL, (BOT, "botpw"), "");
    // host_table ends in the [http] table: extra keys land in it.
    let config = format!(
        "{}{http_extra}\n[plugins.example]\nfile = \"example.so\"\n\n[plugins.versioned]\nfile = \"versioned.so\"\n{room}",
        daz_testkit::host_table(""),
    );
    TestHost::start(
        &config,
        &[
            (fixture("daz_plugin_example"), "example.so"),
            (fixture("daz_fixture_v1"), "versioned.so"),
        ],
    )
    .await
}

/// Successful reloads of `plugin` so far, from the host's metrics.
async fn swapped(h: &TestHost, plugin: &str) -> u64 {
    let (code, text) = h.get("/metrics").await;
    assert_eq!(code, 200);
    let series = format!("daz_plugin_reloads_total{{plugin=\"{plugin}\",result=\"swapped\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().expect("a counter value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium() -> Result<(), MissingBrowser> {
    let browser = Browser::start().await?;
    let client = browser.client.clone();
    let sim = Simulator::start(sim_config()).await.expect("simulator");
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let mut actor = sim.actor(name).await.connect().await.expect("connect");
        actor
            .join_and_login(CHANNEL, name, Some("pw"))
            .await
            .expect("join");
        users.push(actor);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod token");
    let h = host(
        &sim,
        dir.path(),
        &format!("token_file = {:?}\n", token_file.display().to_string()),
    )
    .await;
    let room = h.app.room_registry.get(ROOM).expect("room configured");
    wait(T, "the bot to log in with both users listed", || {
        room.conn_state() == ConnState::LoggedIn && room.state.read().users.len() >= 3
    })
    .await;
    let addr = h.app.http_addr.expect("http enabled");
    // Without the token the API refuses: the page has to ask.
    let (code, _) = h.get("/api/plugins").await;
    assert_eq!(code, 401, "the admin API must want the token");

    client
        .goto(&format!("http://{addr}/"))
        .await
        .expect("open the status page");
    assert_eq!(client.title().await.expect("title"), "daz · status");

    // The token prompt: a wrong token is refused and asked again, the right one opens
    // the page and stays in the tab's session storage.
    until(
        &client,
        "the token prompt",
        "return document.getElementById('token-dialog').open;",
    )
    .await;
    enter_token(&client, "not-the-token").await;
    until(
        &client,
        "the refused-token message",
        "const d = document.getElementById('token-dialog');\n\
         return d.open && document.getElementById('token-message').textContent.includes('refused');",
    )
    .await;
    save_screenshot(&client, "status-page-token.png").await;
    enter_token(&client, TOKEN).await;
    until(
        &client,
        "the prompt closed",
        "return !document.getElementById('token-dialog').open;",
    )
    .await;
    let stored = client
        .execute("return sessionStorage.getItem('daz.adminToken');", vec![])
        .await
        .expect("read session storage");
    assert_eq!(stored, json!(TOKEN));

    // Plugins with their state and version.
    plugin_state_is(&client, "example", "serving").await;
    plugin_state_is(&client, "versioned", "serving").await;
    let versions = client
        .execute(
            "return ['example', 'versioned'].map(n => document.querySelector(\
             `tr[data-plugin=\"${n}\"] [data-field=\"version\"]`).textContent);",
            vec![],
        )
        .await
        .expect("versions");
    assert_eq!(versions, json!(["0.1.0", "1.0.0"]));

    // The room with its users and what plays.
    let shown = until(
        &client,
        "the room with its users and the current media",
        &format!(
            "const c = document.querySelector('article.room[data-room=\"{ROOM}\"]');\n\
             if (!c) return null;\n\
             const users = [...c.querySelectorAll('.users li')].map(li => li.textContent);\n\
             const title = c.querySelector('[data-field=\"media-title\"]');\n\
             if (!['alice', 'bob', '{BOT}'].every(u => users.includes(u))) return null;\n\
             if (!title || title.textContent !== '{SONG}') return null;\n\
             return {{users, state: c.querySelector('[data-field=\"room-state\"]').textContent}};"
        ),
    )
    .await;
    assert_eq!(shown["state"], "logged in", "{shown}");

    // Reload: the host really re-creates the instance (its reload count goes up and a
    // new `loaded` event goes out), and the page shows the new instance's start time,
    // which it learns from that event on the live stream.
    until(
        &client,
        "the live stream open",
        "return document.getElementById('stream-state').textContent === 'streaming';",
    )
    .await;
    let loaded = h.probe("status-page-loaded", &["host.plugin.example.loaded"]);
    let reloads_before = swapped(&h, "example").await;
    click(
        &client,
        "tr[data-plugin=\"example\"] button[data-action=\"reload\"]",
    )
    .await;
    let start = Instant::now();
    let event = loop {
        let left = T.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "no host.plugin.example.loaded after the reload click"
        );
        if let Some(env) = tokio::time::timeout(left, loaded.mailbox.recv())
            .await
            .ok()
            .flatten()
        {
            break env;
        }
    };
    let payload: Value = serde_json::from_slice(&event.payload).expect("loaded event json");
    assert_eq!(payload["name"], "example", "{payload}");
    // The event goes out during the swap; the count follows when the reload returns.
    let start = Instant::now();
    loop {
        let now = swapped(&h, "example").await;
        if now == reloads_before + 1 {
            break;
        }
        assert!(
            now <= reloads_before && start.elapsed() < T,
            "the host's reload count for example went {reloads_before} → {now}, wanted one more"
        );
        tokio::task::yield_now().await;
    }
    until(
        &client,
        "the new instance's start time",
        &format!(
            "const r = document.querySelector('tr[data-plugin=\"example\"]');\n\
             return r && r.dataset.loadedAt === '{}';",
            event.timestamp_ms
        ),
    )
    .await;
    until(
        &client,
        "the reload's result",
        "const t = document.getElementById('toast');\n\
         return !t.hidden && t.textContent.includes('example');",
    )
    .await;

    // Disable then enable: the host's configuration follows, and so does the page.
    click(
        &client,
        "tr[data-plugin=\"versioned\"] button[data-action=\"disable\"]",
    )
    .await;
    plugin_state_is(&client, "versioned", "disabled").await;
    assert!(
        !h.status("versioned").enabled,
        "the host still has it enabled"
    );
    let enable_button = client
        .find(Locator::Css(
            "tr[data-plugin=\"versioned\"] button[data-action=\"enable\"]",
        ))
        .await
        .expect("enable button");
    assert!(
        enable_button.is_enabled().await.expect("enabled?"),
        "enable is offered for a disabled plugin"
    );
    enable_button.click().await.expect("click enable");
    plugin_state_is(&client, "versioned", "serving").await;
    assert!(h.status("versioned").enabled, "the host did not enable it");

    // The event rate while events flow: chat lines keep arriving on the bus as the
    // page is polled, until the rate shows above zero and its graph has a few points.
    let mut n = 0u64;
    let rate = until_js(
        &client,
        "an event rate above zero",
        "const v = parseFloat(document.getElementById('rate').textContent.replace(/,/g, ''));\n\
         const points = document.getElementById('spark-line').getAttribute('points');\n\
         return v > 0 && points.trim().split(' ').length >= 4 ? v : null;",
        || {
            for _ in 0..5 {
                n += 1;
                h.chat(ROOM, "alice", &format!("line {n}"));
            }
        },
    )
    .await;
    assert!(rate.as_f64().unwrap_or(0.0) > 0.0, "{rate}");
    until(
        &client,
        "live events in the feed",
        "return document.querySelectorAll('#event-feed li').length > 3;",
    )
    .await;

    save_screenshot(&client, "status-page.png").await;

    browser.close().await;
    h.app.shutdown().await;
    drop(users);
    Ok(())
}

/// With the default configuration (a generated token), the page opened through the
/// one-time login URL the host prints at start never asks for the token: the login sets
/// an HttpOnly session cookie, and the page's requests carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_opened_through_the_login_url_never_asks() -> Result<(), MissingBrowser> {
    let browser = Browser::start().await?;
    let client = browser.client.clone();
    let sim = Simulator::start(sim_config()).await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&sim, dir.path(), "").await;
    let addr = h.app.http_addr.expect("http enabled");
    assert!(h.app.admin_token_file.is_some(), "a token was generated");
    let resp = reqwest::get(format!("http://{addr}/api/plugins"))
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401, "the API wants the token");
    let login = h.app.access.login_url().expect("a one-time login URL");
    client.goto(&login).await.expect("open the login URL");
    let at = client.current_url().await.expect("url");
    assert_eq!(
        at.as_str(),
        format!("http://{addr}/"),
        "the code leaves the address bar"
    );
    plugin_state_is(&client, "example", "serving").await;
    plugin_state_is(&client, "versioned", "serving").await;
    let asked = client
        .execute(
            "return [document.getElementById('token-dialog').open,\n\
                     document.getElementById('forget-token').hidden,\n\
                     sessionStorage.getItem('daz.adminToken')];",
            vec![],
        )
        .await
        .expect("read the page");
    assert_eq!(
        asked,
        json!([false, true, null]),
        "[prompt open, forget hidden, token]"
    );
    until(
        &client,
        "the room",
        &format!("return document.querySelector('article.room[data-room=\"{ROOM}\"]') !== null;"),
    )
    .await;
    browser.close().await;
    h.app.shutdown().await;
    Ok(())
}
