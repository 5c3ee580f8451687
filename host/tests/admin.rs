//! The admin API and the CLI against real hosts: real plugin files, a Cytube simulator
//! for the rooms, and the `daz` binary both as the host and as the client. Checks the
//! token on every route, the actions (reload really swaps, say really reaches the
//! channel), recent and live events, the retry plugin's dead letters, exit codes and
//! `--json`, and that neither the token nor a room password ever shows in any output.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use daz_cytube_sim::{Account, Actor, ChannelConfig, SimConfig, SimHandle, Simulator};
use daz_host::cytube::ConnState;
use daz_testkit::cytube::{T, bot_room, room_table};
use daz_testkit::wait;
use daz_testkit::{TestHost, build_plugins, deploy, deploy_bytes, fixture, host_table};
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token-5a0c7e19d2";
const BOT_PASSWORD: &str = "bot-pw-93f1c2ab77";

/// Writes the token file (mode 0600) in `dir`.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The `[host]` and `[http]` tables: no file watching (reloads happen only when asked),
/// the token from a file.
fn tables(token: &Path) -> String {
    format!(
        "{}token_file = {:?}\n",
        host_table("watch = false"),
        token.display().to_string()
    )
}

fn plugins_tables(retry: bool) -> String {
    let mut s = "\n[plugins.versioned]\nfile = \"versioned.so\"\n\n[plugins.example]\nfile = \"example.so\"\n".to_owned();
    if retry {
        s.push_str(
            "\n[plugins.retry]\nfile = \"retry.so\"\n[plugins.retry.config]\ntick_ms = 50\n",
        );
    }
    s
}

fn plugin_files(retry: bool) -> Vec<(PathBuf, &'static str)> {
    build_plugins(&["daz-plugin-retry"]);
    let mut files = vec![
        (fixture("daz_fixture_v1"), "versioned.so"),
        (fixture("daz_plugin_example"), "example.so"),
    ];
    if retry {
        files.push((fixture("daz_plugin_retry"), "retry.so"));
    }
    files
}

/// An HTTP client for one host.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(host: &TestHost) -> Api {
        Api {
            base: format!("http://{}", host.app.http_addr.expect("http")),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let code = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert!(!text.contains(TOKEN), "the token in a response: {text}");
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(TOKEN), None)
            .await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(TOKEN), body)
            .await
    }
}

/// Reads a Server-Sent Events response block by block.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(api: &Api, path_and_query: &str) -> Sse {
        let resp = api
            .http
            .get(format!("{}{path_and_query}", api.base))
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status().as_u16(), 200, "the stream opens");
        let mut s = Sse {
            resp,
            buf: String::new(),
        };
        assert_eq!(s.next_block().await, ": ready", "first the subscription");
        s
    }

    async fn next_block(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block = self.buf[..i].to_owned();
                self.buf.drain(..i + 2);
                return block;
            }
            let chunk = tokio::time::timeout(T, self.resp.chunk())
                .await
                .expect("an SSE block within the timeout")
                .expect("stream readable")
                .expect("stream open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `data:` event (keep-alive comments skipped).
    async fn next_event(&mut self) -> Value {
        loop {
            let block = self.next_block().await;
            if let Some(data) = block.strip_prefix("data: ") {
                return serde_json::from_str(data).expect("event json");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_wants_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let config = format!("{}{}", tables(&token), plugins_tables(false));
    let h = TestHost::start(&config, &plugin_files(false)).await;
    let api = Api::new(&h);
    use reqwest::Method;
    let routes: &[(Method, &str)] = &[
        (Method::GET, "/api/plugins"),
        (Method::POST, "/api/plugins/example/reload"),
        (Method::POST, "/api/plugins/example/enable"),
        (Method::POST, "/api/plugins/example/disable"),
        (Method::POST, "/api/plugins/example/rollback"),
        (Method::GET, "/api/rooms"),
        (Method::GET, "/api/rooms/main"),
        (Method::POST, "/api/rooms/main/say"),
        (Method::GET, "/api/events"),
        (Method::GET, "/api/events/stream"),
        (Method::GET, "/api/stats"),
        (Method::GET, "/api/retry/dead"),
        (Method::POST, "/api/retry/dead/x/replay"),
        (Method::GET, "/api/no-such-route"),
    ];
    for (method, path) in routes {
        for bad in [None, Some("wrong-token-wrong-token"), Some("")] {
            let (code, body) = api.send(method.clone(), path, bad, None).await;
            assert_eq!(code, 401, "{method} {path} with {bad:?}: {body}");
            assert!(
                body["error"].as_str().unwrap().contains("admin token"),
                "{body}"
            );
        }
    }
    // The query token is for the event stream only.
    let (code, _) = api
        .send(
            Method::GET,
            &format!("/api/plugins?token={TOKEN}"),
            None,
            None,
        )
        .await;
    assert_eq!(code, 401);
    let resp = api
        .http
        .get(format!("{}/api/events/stream?token=nope", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    Sse::open(&api, &format!("/api/events/stream?token={TOKEN}")).await;

    // Metrics and health stay open.
    for path in ["/metrics", "/health", "/health/live", "/health/ready"] {
        let (code, _) = api.send(Method::GET, path, None, None).await;
        assert_eq!(code, 200, "{path}");
    }

    // With the token, every route answers for itself.
    let (code, v) = api.get("/api/plugins").await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = api.get("/api/rooms").await;
    assert_eq!((code, &v["rooms"]), (200, &json!([])));
    let (code, v) = api.get("/api/rooms/main").await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = api
        .post("/api/rooms/main/say", Some(json!({"message": "hi"})))
        .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = api.get("/api/no-such-route").await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = api.get("/api/events?subject=a..b").await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("subject pattern"),
        "{v}"
    );
    let (code, v) = api.get("/api/stats").await;
    assert_eq!(code, 200);
    assert!(
        v["events_total"].as_u64().unwrap() > 0,
        "plugin lifecycle events: {v}"
    );
    assert!(v["events_per_second"].as_f64().is_some() && v["uptime_ms"].as_i64().is_some());
    // No retry plugin: the dead letters are unavailable, and say so.
    let (code, v) = api.get("/api/retry/dead").await;
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("retry plugin is not loaded"),
        "{v}"
    );
    let (code, _) = api.post("/api/retry/dead/x/replay", None).await;
    assert_eq!(code, 503);
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_actions_through_the_api_really_happen() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let config = format!("{}{}", tables(&token), plugins_tables(false));
    let h = TestHost::start(&config, &plugin_files(false)).await;
    let api = Api::new(&h);

    let (code, v) = api.get("/api/plugins").await;
    assert_eq!(code, 200);
    let versioned = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "versioned")
        .cloned()
        .expect("listed");
    assert_eq!(versioned["version"], "1.0.0");
    assert_eq!(versioned["state"], "serving");
    assert_eq!(versioned["enabled"], true);
    let v1_hash = versioned["sha256"].as_str().unwrap().to_owned();
    assert_eq!(v1_hash.len(), 64);
    assert!(versioned["loaded_at_ms"].as_i64().unwrap() > 0);
    for key in [
        "events_handled",
        "panics",
        "mailbox_depth",
        "leaked_versions",
    ] {
        assert!(versioned[key].is_u64(), "{key}: {versioned}");
    }
    assert_eq!(versioned["stuck"], false);

    // Events handled are counted.
    let seen = h.probe("probe-seen", &["test.seen"]);
    h.publish("test.seq", json!({"n": 1}));
    assert_eq!(seen.next_json(T)["version"], "1.0.0");

    // A new file, swapped in on request only (the watcher is off).
    deploy(&fixture("daz_fixture_v2"), &h.plugin_dir, "versioned.so");
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));
    let (code, v) = api.post("/api/plugins/versioned/reload", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ok"], true);
    assert!(v["detail"].as_str().unwrap().contains("2.0.0"), "{v}");
    assert_eq!(h.version("versioned").as_deref(), Some("2.0.0"));
    h.publish("test.seq", json!({"n": 2}));
    assert_eq!(seen.next_json(T)["version"], "2.0.0", "v2 handles events");
    let (_, v) = api.get("/api/plugins").await;
    let p = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "versioned")
        .unwrap()
        .clone();
    assert_eq!(p["version"], "2.0.0");
    assert_ne!(p["sha256"], v1_hash.as_str());
    assert!(p["events_handled"].as_u64().unwrap() >= 1, "{p}");

    // A broken file is refused with the reason; v2 keeps serving.
    deploy_bytes(b"not a plugin at all", &h.plugin_dir, "versioned.so");
    let (code, v) = api.post("/api/plugins/versioned/reload", None).await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("ELF"), "{v}");
    assert_eq!(h.version("versioned").as_deref(), Some("2.0.0"));

    let (code, v) = api.post("/api/plugins/versioned/rollback", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));

    let (code, v) = api.post("/api/plugins/example/disable", None).await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = api.get("/api/plugins").await;
    let ex = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "example")
        .unwrap()
        .clone();
    assert_eq!(ex["state"], Value::Null, "stopped: {ex}");
    let (code, v) = api.post("/api/plugins/example/rollback", None).await;
    assert_eq!(code, 409, "not running: {v}");
    let (code, v) = api.post("/api/plugins/example/enable", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(h.version("example").as_deref(), Some("0.1.0"));

    let (code, v) = api.post("/api/plugins/nosuch/reload", None).await;
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nosuch"));
    let (code, _) = api.post("/api/plugins/example/explode", None).await;
    assert_eq!(code, 404);
    h.app.shutdown().await;
}

/// A simulator with the bot's account and a watcher in the channel.
async fn sim_with_watcher(channel: &str) -> (SimHandle, Actor) {
    let sim = Simulator::start(SimConfig {
        channels: vec![ChannelConfig::registered(channel)],
        accounts: vec![Account::new("testbot", BOT_PASSWORD)],
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let mut watcher = sim.actor("watcher").await.connect().await.unwrap();
    watcher
        .join_and_login(channel, "watcher", None)
        .await
        .unwrap();
    (sim, watcher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_reaches_the_channel_and_events_are_listed_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let (sim, mut watcher) = sim_with_watcher("botchan").await;
    let room = bot_room(&sim, dir.path(), BOT_PASSWORD, "");
    let config = format!("{}{}{room}", tables(&token), plugins_tables(false));
    let h = TestHost::start(&config, &plugin_files(false)).await;
    let api = Api::new(&h);
    let shared = h.app.room_registry.get("main").unwrap();
    wait(T, "the bot logged in", || {
        shared.conn_state() == ConnState::LoggedIn
    })
    .await;

    // The live stream, subscribed before anything is said.
    let mut stream = Sse::open(
        &api,
        &format!("/api/events/stream?token={TOKEN}&subject=cytube.out.main.*"),
    )
    .await;

    let (code, v) = api
        .post(
            "/api/rooms/main/say",
            Some(json!({"message": "hello from the API"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ok"], true);
    let id = v["id"].as_str().unwrap().to_owned();
    watcher
        .expect_where("chatMsg", T, |m| {
            m["username"] == "testbot" && m["msg"] == "hello from the API"
        })
        .await
        .expect("the watcher reads it");
    let (code, v) = api
        .post(
            "/api/rooms/main/say",
            Some(json!({"message": "psst", "pm_to": "watcher"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    watcher
        .expect_where("pm", T, |m| {
            m["username"] == "testbot" && m["msg"] == "psst"
        })
        .await
        .expect("the watcher gets the PM");

    // The stream got both, in order, with the API's source.
    let ev = stream.next_event().await;
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["subject"], "cytube.out.main.chatMsg");
    assert_eq!(ev["source"], "host:admin");
    assert_eq!(ev["room"], "main");
    assert_eq!(ev["payload"]["msg"], "hello from the API");
    let ev = stream.next_event().await;
    assert_eq!(ev["subject"], "cytube.out.main.pm");

    // The ring buffer: filtered, newest last, limited.
    let (code, v) = api
        .get("/api/events?subject=cytube.out.main.*&limit=10")
        .await;
    assert_eq!(code, 200);
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{v}");
    assert_eq!(events[0]["id"], id.as_str());
    assert_eq!(events[1]["payload"]["to"], "watcher");
    for key in ["priority", "tags", "ts_ms"] {
        assert!(!events[0][key].is_null(), "{key}");
    }
    let (_, v) = api.get("/api/events?limit=1").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    // Inbound events are recorded too: the watcher's join was published.
    let (_, v) = api
        .get("/api/events?subject=cytube.in.main.>&limit=1000")
        .await;
    assert!(!v["events"].as_array().unwrap().is_empty(), "{v}");

    // Rooms through the API.
    let (code, v) = api.get("/api/rooms").await;
    assert_eq!(code, 200);
    assert_eq!(v["rooms"][0]["room"], "main");
    assert_eq!(v["rooms"][0]["state"], "logged_in");
    let (code, v) = api.get("/api/rooms/main").await;
    assert_eq!(code, 200);
    assert_eq!(v["username"], "testbot");

    // Bad requests are explained.
    let (code, v) = api
        .post("/api/rooms/main/say", Some(json!({"message": "  "})))
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = api
        .post("/api/rooms/main/say", Some(json!({"msg": "x"})))
        .await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = api
        .post(
            "/api/rooms/main/say",
            Some(json!({"message": "x", "pm_to": "no one"})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = api
        .post(
            "/api/rooms/main/say",
            Some(json!({"message": "x".repeat(5000)})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, _) = api
        .post("/api/rooms/other/say", Some(json!({"message": "x"})))
        .await;
    assert_eq!(code, 404);

    let (_, v) = api.get("/api/stats").await;
    assert!(v["events_total"].as_u64().unwrap() >= 2, "{v}");
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let (sim, _watcher) = sim_with_watcher("lurk").await;
    // No user name: the bot reads the channel but cannot chat, so what it is asked to
    // say fails for good (`anonymous`) and becomes a dead letter at once.
    let room = room_table(&sim, "lurk", "lurk", "", "");
    let config = format!("{}{}{room}", tables(&token), plugins_tables(true));
    let h = TestHost::start(&config, &plugin_files(true)).await;
    let api = Api::new(&h);
    let shared = h.app.room_registry.get("lurk").unwrap();
    wait(T, "the bot joined", || {
        shared.conn_state() == ConnState::Joined
    })
    .await;

    let (code, v) = api.get("/api/retry/dead").await;
    assert_eq!((code, v["dead"].clone()), (200, json!([])), "{v}");
    let (code, v) = api
        .post(
            "/api/rooms/lurk/say",
            Some(json!({"message": "anyone here?"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let mut dead = Value::Null;
    let start = std::time::Instant::now();
    while dead.as_array().is_none_or(Vec::is_empty) {
        assert!(start.elapsed() < T, "no dead letter: {dead}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        dead = api.get("/api/retry/dead").await.1["dead"].clone();
    }
    let letter = &dead[0];
    assert_eq!(letter["kind"], "chatMsg");
    assert_eq!(letter["room"], "lurk");
    assert!(
        letter["reason"].as_str().unwrap().contains("anonymous"),
        "{letter}"
    );
    let id = letter["id"].as_str().unwrap().to_owned();

    // The event log shows the failure report the room published about the admin API's
    // message (the retry plugin took it from the bus; nobody forwarded it).
    let (_, v) = api.get("/api/events?subject=cytube.out.lurk.failed").await;
    let reports = v["events"].as_array().unwrap();
    assert!(
        reports
            .iter()
            .any(|e| e["source"] == "cytube:lurk"
                && e["payload"]["original"]["source"] == "host:admin"),
        "{v}"
    );
    assert!(
        reports.iter().all(|e| e["source"] == "cytube:lurk"),
        "a report was republished: {v}"
    );

    let (code, v) = api
        .post("/api/retry/dead/no-such-letter/replay", None)
        .await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["replayed"], 0);
    let (code, v) = api
        .post(&format!("/api/retry/dead/{id}/replay"), None)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["replayed"], 1);
    // Redone by the retry plugin (which still cannot chat here).
    let (_, v) = api.get("/api/events?subject=cytube.out.lurk.chatMsg").await;
    let start = std::time::Instant::now();
    let mut v = v;
    while !v["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == "retry")
    {
        assert!(start.elapsed() < T, "never redone: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        v = api
            .get("/api/events?subject=cytube.out.lurk.chatMsg")
            .await
            .1;
    }
    h.app.shutdown().await;
}

/// Everything a `daz` process printed, for the final grep.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<String>>);

impl Transcript {
    fn add(&self, s: &str) {
        let mut t = self.0.lock().unwrap();
        t.push_str(s);
        t.push('\n');
    }
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// Output of one CLI run.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn daz() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_daz"));
    cmd.env_remove("DAZ_ADMIN_TOKEN")
        .env_remove("DAZ_URL")
        .env_remove("DAZ_CONFIG")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    cmd
}

async fn run_cli(transcript: &Transcript, args: &[&str], token: Option<&str>) -> Out {
    let mut cmd = daz();
    cmd.args(args);
    if let Some(t) = token {
        cmd.env("DAZ_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(T, cmd.output())
        .await
        .expect("the CLI finishes")
        .expect("the CLI runs");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    transcript.add(&format!(
        "$ daz {}\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_running_daz_and_never_shows_a_secret() {
    let transcript = Transcript::default();
    let dir = daz_testkit::host_dir();
    let plugin_dir = dir.path().join("plugins");
    for (src, name) in plugin_files(false) {
        deploy(&src, &plugin_dir, name);
    }
    let token = token_file(dir.path());
    let (sim, mut watcher) = sim_with_watcher("botchan").await;
    let room = bot_room(&sim, dir.path(), BOT_PASSWORD, "");
    let config_path = dir.path().join("plugins.toml");
    std::fs::write(
        &config_path,
        format!("{}{}{room}", tables(&token), plugins_tables(false)),
    )
    .unwrap();
    let config = config_path.to_str().unwrap().to_owned();

    // The host, as the `daz` binary, logging JSON lines to a transcript.
    let mut host = daz()
        .args(["--json-logs", "run", "--config", &config])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daz runs");
    let host_log = Transcript::default();
    for pipe in [
        Box::new(host.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(host.stderr.take().unwrap()),
    ] {
        let log = host_log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.add(&line);
            }
        });
    }
    let mut url = String::new();
    wait(T, "the host's HTTP address in its log", || {
        url = host_log
            .text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("HTTP server listening"))
            })
            .and_then(|l| l["addr"].as_str().map(|a| format!("http://{a}")))
            .unwrap_or_default();
        !url.is_empty()
    })
    .await;
    let u = url.as_str();
    let t = Some(TOKEN);
    // HTTP is up before the plugins are loaded: wait until they serve.
    let start = std::time::Instant::now();
    while reqwest::get(format!("{u}/health/ready"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(start.elapsed() < T, "the host never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Help documents the exit codes.
    let out = run_cli(&transcript, &["--help"], None).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("Exit codes") && out.stdout.contains("4  unauthorized"),
        "{}",
        out.stdout
    );

    // Plugins: a table for people, JSON for scripts.
    let out = run_cli(&transcript, &["plugins", "--url", u], t).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("versioned") && l.contains("serving") && l.contains("1.0.0")),
        "{}",
        out.stdout
    );
    let out = run_cli(&transcript, &["plugins", "list", "--json", "--url", u], t).await;
    assert_eq!(out.code, 0);
    let v = out.json();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 2);

    // The token from a file, and from the configuration's [http] token_file.
    let out = run_cli(
        &transcript,
        &[
            "plugins",
            "--url",
            u,
            "--token-file",
            token.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_cli(
        &transcript,
        &["plugins", "--url", u, "--config", &config],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The address comes from [http] listen unless --url says otherwise; port 0 cannot
    // be reached from outside.
    let out = run_cli(&transcript, &["plugins", "--config", &config], None).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--url"), "{}", out.stderr);

    // Unauthorized: 4, with a hint and no token.
    let out = run_cli(&transcript, &["plugins", "--url", u], None).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("DAZ_ADMIN_TOKEN"), "{}", out.stderr);
    let out = run_cli(
        &transcript,
        &["plugins", "--url", u],
        Some("wrong-but-long-token-123"),
    )
    .await;
    assert_eq!(out.code, 4);
    assert!(!out.stderr.contains("wrong-but-long-token-123"));

    // Unreachable: 3. Usage: 2.
    let out = run_cli(&transcript, &["plugins", "--url", "http://127.0.0.1:1"], t).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    let out = run_cli(&transcript, &["plugins", "frobnicate", "x", "--url", u], t).await;
    assert_eq!(out.code, 2);
    let out = run_cli(&transcript, &["events", "--subject", "a..b", "--url", u], t).await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    // Actions: failure 1, success 0; a reload really swaps.
    let out = run_cli(&transcript, &["plugins", "reload", "nosuch", "--url", u], t).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
    deploy(&fixture("daz_fixture_v2"), &plugin_dir, "versioned.so");
    let out = run_cli(
        &transcript,
        &["plugins", "reload", "versioned", "--url", u],
        t,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("2.0.0"), "{}", out.stdout);
    let out = run_cli(&transcript, &["plugins", "--json", "--url", u], t).await;
    let v = out.json();
    let p = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "versioned")
        .unwrap()
        .clone();
    assert_eq!(p["version"], "2.0.0");
    let out = run_cli(
        &transcript,
        &["plugins", "rollback", "versioned", "--json", "--url", u],
        t,
    )
    .await;
    assert_eq!(out.code, 0);
    assert_eq!(out.json()["ok"], true);
    let out = run_cli(
        &transcript,
        &["plugins", "disable", "example", "--url", u],
        t,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_cli(
        &transcript,
        &["plugins", "enable", "example", "--url", u],
        t,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Rooms.
    let mut logged_in = false;
    let start = std::time::Instant::now();
    while !logged_in {
        assert!(start.elapsed() < T, "the bot never logged in");
        let out = run_cli(&transcript, &["rooms", "--json", "--url", u], t).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        logged_in = out.json()["rooms"][0]["state"] == "logged_in";
    }
    let out = run_cli(&transcript, &["rooms", "--url", u], t).await;
    assert!(
        out.stdout.starts_with("ROOM") && out.stdout.contains("logged_in"),
        "{}",
        out.stdout
    );
    let out = run_cli(&transcript, &["rooms", "main", "--url", u], t).await;
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("testbot") && out.stdout.contains("watcher"),
        "{}",
        out.stdout
    );
    let out = run_cli(&transcript, &["rooms", "main", "--json", "--url", u], t).await;
    assert_eq!(out.json()["channel"], "botchan");
    let out = run_cli(&transcript, &["rooms", "nosuch", "--url", u], t).await;
    assert_eq!(out.code, 1);

    // Say, then find it in the events, and follow the live stream.
    let out = run_cli(
        &transcript,
        &["say", "main", "hello", "from", "the", "CLI", "--url", u],
        t,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    watcher
        .expect_where("chatMsg", T, |m| {
            m["username"] == "testbot" && m["msg"] == "hello from the CLI"
        })
        .await
        .expect("the watcher reads it");
    let out = run_cli(&transcript, &["say", "nosuch", "x", "--url", u], t).await;
    assert_eq!(out.code, 1);
    let out = run_cli(
        &transcript,
        &[
            "events",
            "--subject",
            "cytube.out.main.chatMsg",
            "--limit",
            "5",
            "--json",
            "--url",
            u,
        ],
        t,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["events"][0]["payload"]["msg"],
        "hello from the CLI"
    );
    let out = run_cli(
        &transcript,
        &["events", "--subject", "cytube.out.main.chatMsg", "--url", u],
        t,
    )
    .await;
    assert!(
        out.stdout.contains("cytube.out.main.chatMsg  host:admin"),
        "{}",
        out.stdout
    );

    let mut follower = daz()
        .args([
            "events",
            "--follow",
            "--json",
            "--limit",
            "0",
            "--subject",
            "cytube.out.main.chatMsg",
            "--url",
            u,
        ])
        .env("DAZ_ADMIN_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = Transcript::default();
    {
        let log = followed.clone();
        let pipe = follower.stdout.take().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.add(&line);
            }
        });
    }
    // Until the follower is subscribed nothing reaches it: say again until one arrives.
    let start = std::time::Instant::now();
    let mut n = 0;
    while followed.text().is_empty() {
        assert!(start.elapsed() < T, "the follower printed nothing");
        n += 1;
        let out = run_cli(
            &transcript,
            &["say", "main", &format!("follow {n}"), "--url", u],
            t,
        )
        .await;
        assert_eq!(out.code, 0);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while followed.text().is_empty() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let first: Value = serde_json::from_str(followed.text().lines().next().unwrap()).unwrap();
    assert!(
        first["payload"]["msg"]
            .as_str()
            .unwrap()
            .starts_with("follow "),
        "{first}"
    );
    follower.kill().await.unwrap();
    transcript.add(&followed.text());

    // Config checks.
    let out = run_cli(&transcript, &["config", "check", &config], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("ok (2 plugins, 1 rooms") && out.stdout.contains("with a token"),
        "{}",
        out.stdout
    );
    let out = run_cli(&transcript, &["config-check", &config], None).await;
    assert_eq!(out.code, 0);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[http]\ntoken = \"pasted-secret-value\"\n").unwrap();
    let out = run_cli(
        &transcript,
        &["config", "check", bad.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("line 2") && !out.stderr.contains("pasted-secret-value"),
        "{}",
        out.stderr
    );

    // A host that would listen beyond loopback without a token does not start.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, "[http]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = run_cli(
        &transcript,
        &["config", "check", open.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(out.code, 2);
    let out = run_cli(
        &transcript,
        &["run", "--config", open.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("not a loopback address")
            && out.stderr.contains("DAZ_ADMIN_TOKEN")
            && out.stderr.contains("token_file"),
        "{}",
        out.stderr
    );
    // With a token it does (shown by config check, which resolves it the same way).
    let out = run_cli(
        &transcript,
        &["config", "check", open.to_str().unwrap()],
        Some(TOKEN),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Stop the host and grep everything for the secrets.
    let pid = host.id().expect("running") as i32;
    // SAFETY: plain kill(2) on the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(T, host.wait())
        .await
        .expect("daz stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let log = host_log.text();
    assert!(
        log.contains("admin API action") && log.contains("refused"),
        "the host logged the API's work"
    );
    let everything = format!("{log}\n{}", transcript.text());
    for secret in [TOKEN, BOT_PASSWORD] {
        assert!(
            !everything.contains(secret),
            "{secret} appears in the output"
        );
    }
    drop(sim);
}
