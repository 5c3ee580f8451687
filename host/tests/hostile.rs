//! Hostile plugins and faults against a real host: each test reproduces an attack or a
//! fault that once broke the host and shows that it now holds.
//!
//! - a plugin whose destructor panics (on a reload, a disable and at shutdown): the host
//!   and the other plugins go on;
//! - plugin file trust: a symlink into a directory other users can write is refused, and
//!   files swapped by rename while the host reloads never get a refused file loaded
//!   (trust is decided on the descriptor the bytes are read from);
//! - `daz config check` never echoes a secret given where a variable name belongs and
//!   warns about missing variables and files;
//! - the admin API with the default configuration: a generated token the CLI finds, a
//!   one-time login URL for the status page, no cross-origin form post, no foreign
//!   `Host` (DNS rebinding), also with `[http] open = true`;
//! - HTTP server limits: slowloris and idle connections closed after the header timeout,
//!   connections over the cap closed while `/health` still answers, event streams over
//!   their cap refused, bodies capped, and the soft open-file limit raised at start so a
//!   connection flood cannot make plugin loading fail.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use daz_host::plugins::{ReloadError, Trigger, loader::LoadError, slot::SlotState};
use daz_testkit::{TestHost, fixture, host_table, wait_until};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_panics_in_drop_does_not_abort_the_host() {
    let config = format!(
        "{}\n[plugins.panicky]\nfile = \"panicky.so\"\n[plugins.panicky.config]\npanic_in_drop = true\n\n[plugins.example]\nfile = \"example.so\"\n",
        host_table("")
    );
    let h = TestHost::start(
        &config,
        &[
            (fixture("daz_fixture_panicky"), "panicky.so"),
            (fixture("daz_plugin_example"), "example.so"),
        ],
    )
    .await;
    let dropping = h.probe("probe-dropping", &["panicky.dropping"]);
    let alive = h.probe("probe-alive", &["panicky.alive"]);
    let chat = h.probe("probe-chat", &["cytube.out.>"]);

    // A reload drops the old instance: its destructor panics inside the host's process.
    h.app.plugins.reload("panicky", Trigger::Explicit).unwrap();
    dropping.next(T);
    // The new instance serves; the host and the other plugin go on.
    h.publish("panicky.ok", serde_json::json!({}));
    alive.next(T);
    h.chat("r", "u", "!hello");
    chat.next(T);
    assert_eq!(h.status("panicky").slot.unwrap().state, SlotState::Serving);

    // Disabling it drops the instance again.
    h.app.plugins.set_enabled("panicky", false).unwrap();
    dropping.next(T);
    wait_until(T, "the plugin is disabled", || !h.status("panicky").enabled);
    h.chat("r", "u", "!hello");
    chat.next(T);
    let (code, body) = h.get("/health/live").await;
    assert_eq!(code, 200, "{body}");

    // And at shutdown, after enabling it again.
    h.app.plugins.set_enabled("panicky", true).unwrap();
    h.publish("panicky.ok", serde_json::json!({}));
    alive.next(T);
    h.app.shutdown().await;
    dropping.next(T);
}

fn versioned_host_config() -> String {
    format!(
        "{}\n[plugins.versioned]\nfile = \"versioned.so\"\n",
        host_table("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_into_a_world_writable_directory_is_refused() {
    let h = TestHost::start(
        &versioned_host_config(),
        &[(fixture("daz_fixture_v1"), "versioned.so")],
    )
    .await;
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));
    // A directory anyone may write into (no sticky bit), holding a file that is itself
    // private and owned by this user: only the directory betrays it.
    let shared = h.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    fs::copy(fixture("daz_fixture_v2"), shared.join("versioned.so")).unwrap();
    fs::set_permissions(
        shared.join("versioned.so"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let link = h.plugin_dir.join(".versioned.link");
    std::os::unix::fs::symlink(shared.join("versioned.so"), &link).unwrap();
    fs::rename(&link, h.plugin_dir.join("versioned.so")).unwrap();

    let err = h
        .app
        .plugins
        .reload("versioned", Trigger::Explicit)
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ReloadError::Load(LoadError::Untrusted { .. }))
            && text.contains("shared")
            && text.contains("writable by others")
            && text.contains("sticky"),
        "{text}"
    );
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));

    // With the sticky bit (as /tmp), other users cannot rename this user's file: allowed.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    h.app
        .plugins
        .reload("versioned", Trigger::Explicit)
        .unwrap();
    assert_eq!(h.version("versioned").as_deref(), Some("2.0.0"));
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_by_rename_during_reloads_is_never_loaded() {
    let h = TestHost::start(
        &versioned_host_config(),
        &[(fixture("daz_fixture_v1"), "versioned.so")],
    )
    .await;
    assert_eq!(h.version("versioned").as_deref(), Some("1.0.0"));
    // The good file (private) and a foreign one the trust check must refuse (writable by
    // others), both kept as sources; a thread renames hard links of each over the
    // plugin path in a tight loop.
    let good = h.plugin_dir.join(".good");
    let foreign = h.plugin_dir.join(".foreign");
    fs::copy(fixture("daz_fixture_v1"), &good).unwrap();
    fs::set_permissions(&good, fs::Permissions::from_mode(0o644)).unwrap();
    fs::copy(fixture("daz_fixture_v2"), &foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o666)).unwrap();
    let target = h.plugin_dir.join("versioned.so");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, dir, target) = (
            stop.clone(),
            swaps.clone(),
            h.plugin_dir.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let tmp = dir.join(".swap.tmp");
            while !stop.load(Ordering::Relaxed) {
                for src in [&good, &foreign] {
                    let _ = fs::remove_file(&tmp);
                    // Errors end the thread (the test's directory is gone after a
                    // failure); the loop below then sees no more swaps.
                    if fs::hard_link(src, &tmp).is_err() || fs::rename(&tmp, &target).is_err() {
                        return;
                    }
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let (mut reloads, mut loaded, mut refused) = (0u64, 0u64, 0u64);
    // Enough reloads that both files were met many times (the thread swaps far faster
    // than a reload runs); the cap only ends a run that cannot show anything.
    while reloads < 300 || loaded < 20 || refused < 20 {
        assert!(
            reloads < 100_000,
            "{reloads} reloads: {loaded} loaded, {refused} refused"
        );
        reloads += 1;
        match h.app.plugins.reload("versioned", Trigger::Explicit) {
            Ok(_) => loaded += 1,
            Err(ReloadError::Load(LoadError::Untrusted { why, .. })) => {
                assert!(why.contains("writable by others"), "{why}");
                refused += 1;
            }
            Err(e) => panic!("reload {reloads}: {e}"),
        }
        assert_eq!(
            h.version("versioned").as_deref(),
            Some("1.0.0"),
            "reload {reloads} loaded the foreign file"
        );
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "race: {reloads} reloads ({loaded} loaded the good file, {refused} refused the foreign one) against {} renames in {:?}; the foreign file was never loaded",
        swaps.load(Ordering::Relaxed),
        started.elapsed()
    );
    h.app.shutdown().await;
}

/// `daz config check` as a user runs it: a secret pasted where a variable name belongs
/// is refused without being echoed; a missing variable or file is a warning, not "ok".
#[test]
fn config_check_never_echoes_a_secret_and_warns_about_what_is_missing() {
    const SECRET: &str = "hunter2 s3cr3t";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    let check = |text: &str| {
        fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_daz"))
            .args(["config", "check"])
            .arg(&path)
            .env_remove("DAZ_TEST_UNSET_PASSWORD")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let room = "[[rooms]]\nsite = \"https://cytu.be\"\nchannel = \"c\"\nusername = \"bot\"\n";
    for text in [
        format!("[http]\ntoken_env = \"{SECRET}\"\n"),
        format!("{room}password_env = \"{SECRET}\"\n"),
    ] {
        let (code, stdout, stderr) = check(&text);
        assert_eq!(code, Some(2), "{stdout}{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "the secret is echoed: {stdout}{stderr}"
        );
        assert!(
            stderr.contains("not an environment variable name"),
            "{stderr}"
        );
    }
    let (code, stdout, stderr) = check(&format!(
        "{room}password_env = \"DAZ_TEST_UNSET_PASSWORD\"\n[plugins.gone]\nfile = \"gone.so\"\n"
    ));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("valid, with 2 warnings"), "{stdout}");
    assert!(
        stderr.contains("DAZ_TEST_UNSET_PASSWORD is not set")
            && stderr.contains("gone.so does not exist"),
        "{stderr}"
    );
}

/// Sends one raw HTTP/1.1 request and returns the whole answer (the connection closes).
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

async fn example_host(http_extra: &str) -> TestHost {
    let config = format!(
        "{}{http_extra}\n[plugins.example]\nfile = \"example.so\"\n",
        host_table("")
    );
    TestHost::start(&config, &[(fixture("daz_plugin_example"), "example.so")]).await
}

/// What a web page in the operator's browser can send without a CORS preflight: a form
/// post, from its own origin.
fn form_post(addr: std::net::SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n{extra}Connection: close\r\n\r\na=b"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_form_post_cannot_disable_a_plugin() {
    for http_extra in ["", "open = true\n"] {
        let h = example_host(http_extra).await;
        let addr = h.app.http_addr.unwrap();
        let path = "/api/plugins/example/disable";
        let auth = h
            .generated_token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        // From another origin: refused whatever it carries.
        for extra in ["", auth.as_str()] {
            let answer = raw_http(addr, &form_post(addr, path, extra)).await;
            assert_eq!(status_of(&answer), 403, "{http_extra}: {answer}");
        }
        // Same origin (or no Origin at all), but a form body: refused too.
        let answer = raw_http(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n{auth}Connection: close\r\n\r\na=b"
            ),
        )
        .await;
        assert_eq!(status_of(&answer), 415, "{http_extra}: {answer}");
        assert!(
            h.status("example").enabled,
            "{http_extra}: the plugin was disabled"
        );
        // The JSON API itself still works for whoever may use it.
        let answer = raw_http(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n{auth}Connection: close\r\n\r\n{{}}"
            ),
        )
        .await;
        assert_eq!(status_of(&answer), 200, "{http_extra}: {answer}");
        wait_until(T, "the plugin is disabled", || !h.status("example").enabled);
        h.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_cannot_read_rooms_or_events() {
    for http_extra in ["", "open = true\n"] {
        let h = example_host(http_extra).await;
        let addr = h.app.http_addr.unwrap();
        let auth = h
            .generated_token()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        for path in [
            "/api/rooms",
            "/api/events",
            "/api/events/stream",
            "/api/plugins",
            "/",
        ] {
            // DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its name.
            let answer = raw_http(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: evil.example:{}\r\n{auth}Connection: close\r\n\r\n",
                    addr.port()
                ),
            )
            .await;
            assert_eq!(status_of(&answer), 421, "{http_extra} {path}: {answer}");
            assert!(!answer.contains("\"rooms\"") && !answer.contains("\"events\""));
        }
        let answer = raw_http(
            addr,
            &format!("GET /api/rooms HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status_of(&answer), 200, "{http_extra}: {answer}");
        // Metrics and health answer whatever name a scraper uses.
        let answer = raw_http(
            addr,
            "GET /health/live HTTP/1.1\r\nHost: monitor.internal\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        h.app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_api_wants_the_generated_token_and_the_login_url_works_once() {
    use std::os::unix::fs::MetadataExt;
    let h = example_host("").await;
    let file = h
        .app
        .admin_token_file
        .clone()
        .expect("a token was generated");
    assert_eq!(file, h.dir.path().join("runtime").join("admin-token"));
    assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let base = format!("http://{}", h.app.http_addr.unwrap());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{base}/api/plugins"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401, "no token, no session");
    let (code, _) = h.get("/api/plugins").await;
    assert_eq!(code, 200, "with the generated token");

    // The one-time login URL: sets an HttpOnly, SameSite=Strict session cookie once.
    let url = h.app.access.login_url().expect("a login URL");
    assert!(url.starts_with(&format!("{base}/?login=")), "{url}");
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let resp = http
        .get(format!("{base}/api/plugins"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the session opens the API");
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 303);
    assert!(
        again.headers().get("set-cookie").is_none(),
        "the code works once"
    );
    let resp = http
        .get(format!("{base}/api/plugins"))
        .header("cookie", "daz_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    h.app.shutdown().await;
}

/// The README's way: `daz` in a directory with plugins.toml, then `daz plugins` from the
/// same directory, with no token in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_uses_the_generated_token_without_being_told() {
    use tokio::io::AsyncBufReadExt;
    let dir = daz_testkit::host_dir();
    let plugins = dir.path().join("plugins");
    daz_testkit::deploy(&fixture("daz_plugin_example"), &plugins, "example.so");
    let port = daz_testkit::process::free_port();
    fs::write(
        dir.path().join("plugins.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[plugins.example]\nfile = \"example.so\"\n"
        ),
    )
    .unwrap();
    let daz = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_daz"));
        cmd.args(args)
            .current_dir(dir.path())
            .env_remove("DAZ_ADMIN_TOKEN")
            .env_remove("DAZ_URL")
            .env_remove("DAZ_CONFIG")
            .kill_on_drop(true);
        cmd
    };
    let mut host = daz(&[])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(host.stderr.take().unwrap()).lines();
    let login = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(i) = line.find("http://") {
                return line[i..].to_owned();
            }
        }
        panic!("daz ended without printing a login URL");
    })
    .await
    .expect("the login URL is printed at start");
    assert!(
        login.starts_with(&format!("http://127.0.0.1:{port}/?login=")),
        "{login}"
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let token_file = dir.path().join(".daz/runtime/admin-token");
    assert!(token_file.exists());

    // The URL is printed before the plugins load: ask until the list shows the example
    // (every answer, the first included, comes with the token the CLI found itself).
    let started = Instant::now();
    let stdout = loop {
        let out = daz(&["--json", "plugins"]).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.contains("\"example\"") {
            break stdout;
        }
        assert!(started.elapsed() < T, "the example never loaded: {stdout}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let token = fs::read_to_string(&token_file).unwrap();
    assert!(!stdout.contains(token.trim()), "the token is printed");
    let out = daz(&["login-url"]).output().await.unwrap();
    let url = String::from_utf8_lossy(&out.stdout);
    assert!(
        url.trim()
            .starts_with(&format!("http://127.0.0.1:{port}/?login="))
            && url.trim() != login,
        "{url}"
    );

    // Somewhere else (no plugins.toml, so no token): refused, exit 4.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_daz"))
        .args(["--url", &format!("http://127.0.0.1:{port}"), "plugins"])
        .current_dir(elsewhere.path())
        .env_remove("DAZ_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4));

    // SAFETY: plain kill(2) on the child this test started.
    unsafe { libc::kill(host.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(T, host.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

async fn closed(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(T, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = example_host("open = true\nheader_timeout_ms = 1000\n").await;
    let addr = h.app.http_addr.unwrap();
    // Headers sent a byte at a time, far slower than the timeout allows: the whole head
    // would take minutes, the server closes the connection long before.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let closed_early = loop {
        if sent == head.len() {
            break false;
        }
        if slow.write_all(&head.as_bytes()[sent..=sent]).await.is_err() {
            break true;
        }
        sent += 1;
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "only a timeout answer may come"
            ),
            Err(_) => {}
        }
    };
    assert!(closed_early, "the slow client got to send its whole head");
    eprintln!(
        "slowloris: closed after {} of {} header bytes, {:?}",
        sent,
        head.len(),
        started.elapsed()
    );
    // A connection that sends nothing, and one idle after a request: both closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut idle).await, "an idle connection stays open");
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed(&mut kept).await,
        "an idle keep-alive connection stays open"
    );
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_and_health_still_answers() {
    use tokio::io::AsyncWriteExt;
    // A long header timeout: whatever closes connections here is the cap.
    let h = example_host(
        "open = true\nmax_connections = 8\nmax_streams = 4\nheader_timeout_ms = 600000\n",
    )
    .await;
    let addr = h.app.http_addr.unwrap();
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Every new connection closes the oldest idle one: /health answers at once.
    let (code, _) = h.get("/health/live").await;
    assert_eq!(code, 200);
    let mut closed_count = 0;
    for s in &mut idle[..32] {
        if closed(s).await {
            closed_count += 1;
        }
    }
    assert_eq!(closed_count, 32, "the oldest idle connections were closed");

    // Connections that are all busy (live streams) are not closed for a newcomer; the
    // newcomer is.
    let h2 = example_host(
        "open = true\nmax_connections = 3\nmax_streams = 8\nheader_timeout_ms = 600000\n",
    )
    .await;
    let addr2 = h2.app.http_addr.unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr2).await.unwrap();
        s.write_all(format!("GET /api/events/stream HTTP/1.1\r\nHost: {addr2}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        read_until(&mut s, ": ready").await;
        streams.push(s);
    }
    let mut newcomer = tokio::net::TcpStream::connect(addr2).await.unwrap();
    let _ = newcomer
        .write_all(format!("GET /health/live HTTP/1.1\r\nHost: {addr2}\r\n\r\n").as_bytes())
        .await;
    assert!(
        closed(&mut newcomer).await,
        "a connection over the cap was served"
    );
    drop(streams);
    h2.app.shutdown().await;
    drop(idle);
    h.app.shutdown().await;
}

async fn open_stream(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

async fn read_until(s: &mut tokio::net::TcpStream, what: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(what) {
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {what:?} in {:?}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {what:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_over_their_cap_are_refused_and_bodies_are_capped() {
    let h = example_host("max_streams = 2\n").await;
    let addr = h.app.http_addr.unwrap();
    let token = h.generated_token().unwrap();
    let mut a = open_stream(addr, &token).await;
    read_until(&mut a, ": ready").await;
    let mut b = open_stream(addr, &token).await;
    read_until(&mut b, ": ready").await;
    let mut c = open_stream(addr, &token).await;
    let answer = read_until(&mut c, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    // A stream that ends gives its place back.
    drop(a);
    let mut tries = 0;
    loop {
        tries += 1;
        let mut d = open_stream(addr, &token).await;
        let answer = read_until(&mut d, "\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tries < 5000,
            "the closed stream's place never came back: {answer}"
        );
        tokio::task::yield_now().await;
    }
    // A body over the limit is refused before it is read whole.
    let big = format!("{{\"message\": \"{}\"}}", "x".repeat(1 << 20));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/rooms/lobby/say"))
        .bearer_auth(h.generated_token().unwrap())
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    drop(b);
    h.app.shutdown().await;
}

/// Under a low soft open-file limit, a flood of idle connections must not make plugin
/// loading fail: the host raises the soft limit to the hard one at start, and the
/// connection cap keeps the server's share bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_low_fd_limit_does_not_break_plugin_loading() {
    let dir = daz_testkit::host_dir();
    let plugins = dir.path().join("plugins");
    daz_testkit::deploy(&fixture("daz_fixture_v1"), &plugins, "versioned.so");
    let port = daz_testkit::process::free_port();
    fs::write(
        dir.path().join("plugins.toml"),
        format!(
            "[host]\nstable_interval_ms = 2\ndebounce_ms = 20\n[http]\nlisten = \"127.0.0.1:{port}\"\nheader_timeout_ms = 600000\n\n[plugins.versioned]\nfile = \"versioned.so\"\n"
        ),
    )
    .unwrap();
    // As a user meets it: a shell with `ulimit -Sn 128` starts daz.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "ulimit -Sn 128 && exec {}",
        env!("CARGO_BIN_EXE_daz")
    ));
    let log = dir.path().join("host.log");
    cmd.current_dir(dir.path())
        .env_remove("DAZ_ADMIN_TOKEN")
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(dir.path().join("host.err")).unwrap());
    let mut host = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = host.id().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let token_file = dir.path().join(".daz/runtime/admin-token");
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..3000 {
        if token_file.exists()
            && http
                .get(format!("{base}/health/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "the host did not become ready");
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        nums[0], nums[1],
        "the soft limit was raised to the hard one: {line}"
    );

    // More idle connections than the soft limit the host was started with.
    let mut flood = Vec::new();
    for _ in 0..400 {
        flood.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // A plugin deploy (a new file renamed into place, then a reload) still loads: it
    // needs descriptors for the file, its private copy and the library.
    daz_testkit::deploy(&fixture("daz_fixture_v2"), &plugins, "versioned.so");
    let token = fs::read_to_string(&token_file).unwrap();
    let resp = http
        .post(format!("{base}/api/plugins/versioned/reload"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}: {}", fs::read_to_string(&log).unwrap());
    let v: serde_json::Value = http
        .get(format!("{base}/api/plugins"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["plugins"][0]["version"], "2.0.0", "{v}");
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("raised the open-file limit"),
        "the host says it raised the limit"
    );
    drop(flood);
    // SAFETY: plain kill(2) on the child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(T, host.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}
