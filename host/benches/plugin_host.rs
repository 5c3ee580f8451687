//! Plugin-host benchmarks, each beside a baseline measured in the same run:
//!
//! * publish → `on_event` inside a real loaded `.so` (one plugin), beside a crossbeam
//!   channel hop of the same envelopes to a thread calling a no-op;
//! * request/response host → plugin → host through the ABI, one in flight (p50/p99),
//!   beside a raw two-thread ping-pong over crossbeam channels;
//! * swap latency: a new plugin file (fresh bytes: full checks, private copy, preflight
//!   child, load, state hand-off) and a swap back to an already-mapped version;
//! * memory: RSS of a real `daz` process with 10 plugins loaded, and RSS growth per
//!   reload of fresh bytes.
//!
//! Run: `cargo bench -p daz-host --bench plugin_host` (prints a table; about a minute).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use daz_bus::Envelope;
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    plugins::{ReloadOutcome, Trigger},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Builds the plugins with the release profile into their own target directory.
fn build_plugins() -> PathBuf {
    let target = workspace().join("target").join("bench-plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "daz-plugin-example",
            "-p",
            "daz-fixture-v1",
            "-p",
            "daz-fixture-v2",
            "-p",
            "daz-fixture-panicky",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the benchmark plugins failed");
    target.join("release")
}

fn deploy(src: &Path, dir: &Path, name: &str, extra: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut bytes = fs::read(src).expect("read plugin");
    // Trailing bytes after an ELF image are ignored by the loader; they make a new file
    // with a new hash, i.e. a genuinely new version for the host.
    bytes.extend_from_slice(extra);
    fs::write(&tmp, bytes).expect("write");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fmt_us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

struct Row {
    name: String,
    value: String,
    baseline: String,
    ratio: String,
    target: &'static str,
}

fn setup_dir(libs: &Path, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).expect("mkdir");
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o755)).expect("chmod");
    for (lib, name) in files {
        deploy(&libs.join(format!("lib{lib}.so")), &plugins, name, &[]);
    }
    dir
}

fn config_text(body: &str) -> String {
    format!(
        "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\nwatch = false\nstable_interval_ms = 1\npreflight_exe = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{body}",
        env!("CARGO_BIN_EXE_daz")
    )
}

async fn start(dir: &Path, body: &str) -> App {
    let path = dir.join("plugins.toml");
    fs::write(&path, config_text(body)).expect("config");
    App::start(
        Config::load(&path).expect("config"),
        StartOptions::default(),
    )
    .await
    .expect("host starts")
}

fn throughput(rows: &mut Vec<Row>, app: &App) {
    const N: u64 = 2_000_000;
    let slot = app.plugins.slot("versioned").expect("slot");
    let env = Envelope::builder("test.count", &b"{}"[..])
        .source("bench")
        .build()
        .expect("env");
    let start_count = slot.handled();
    let t = Instant::now();
    for i in 0..N {
        let mut e = env.clone();
        e.id = Envelope::new_id();
        app.bus.publish(e).expect("publish");
        // Stay below the mailbox capacity: measure throughput, not drops.
        if i % 1024 == 0 {
            while slot.mailbox.len() > 50_000 {
                std::thread::yield_now();
            }
        }
    }
    while slot.handled() < start_count + N {
        std::thread::yield_now();
    }
    let plugin_rate = N as f64 / t.elapsed().as_secs_f64();

    // Baseline: the same envelopes through one crossbeam hop to a thread that calls a
    // no-op handler.
    let (tx, rx) = crossbeam_channel::bounded::<Arc<Envelope>>(10_000);
    let consumer = std::thread::spawn(move || {
        let mut n = 0u64;
        for e in rx {
            std::hint::black_box(&e);
            n += 1;
        }
        n
    });
    let t = Instant::now();
    for _ in 0..N {
        let mut e = env.clone();
        e.id = Envelope::new_id();
        tx.send(Arc::new(e)).expect("send");
    }
    drop(tx);
    assert_eq!(consumer.join().expect("join"), N);
    let base_rate = N as f64 / t.elapsed().as_secs_f64();
    rows.push(Row {
        name: "publish → on_event in a loaded .so (1 plugin)".into(),
        value: format!("{:.2} M events/s", plugin_rate / 1e6),
        baseline: format!("{:.2} M/s crossbeam hop", base_rate / 1e6),
        ratio: format!("{:.2}× of baseline", plugin_rate / base_rate),
        target: "≥ 1 M events/s",
    });
}

fn request_reply(rows: &mut Vec<Row>, app: &App) {
    const N: usize = 20_000;
    let req = Envelope::builder("test.echo", &b"{\"x\":1}"[..])
        .source("bench")
        .build()
        .expect("env");
    for _ in 0..1000 {
        app.bus
            .request(req.clone(), None, Duration::from_secs(5))
            .expect("warm-up");
    }
    let mut lat = Vec::with_capacity(N);
    for _ in 0..N {
        let mut e = req.clone();
        e.id = Envelope::new_id();
        let t = Instant::now();
        app.bus
            .request(e, None, Duration::from_secs(5))
            .expect("request");
        lat.push(t.elapsed());
    }
    lat.sort();
    // Baseline: two threads ping-ponging one message each way.
    let (to_tx, to_rx) = crossbeam_channel::bounded::<u64>(1);
    let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        for v in to_rx {
            if back_tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut base = Vec::with_capacity(N);
    for i in 0..(N + 1000) as u64 {
        let t = Instant::now();
        to_tx.send(i).expect("send");
        back_rx.recv().expect("recv");
        if i >= 1000 {
            base.push(t.elapsed());
        }
    }
    drop(to_tx);
    echo.join().expect("join");
    base.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    rows.push(Row {
        name: "request/response host → plugin → host (p50)".into(),
        value: fmt_us(p50),
        baseline: format!("{} ping-pong", fmt_us(b50)),
        ratio: format!("{:.2}×", p50.as_secs_f64() / b50.as_secs_f64()),
        target: "≤ 2× baseline",
    });
    rows.push(Row {
        name: "request/response host → plugin → host (p99)".into(),
        value: fmt_us(p99),
        baseline: format!("{} ping-pong", fmt_us(b99)),
        ratio: format!("{:.2}×", p99.as_secs_f64() / b99.as_secs_f64()),
        target: "",
    });
}

fn swaps(rows: &mut Vec<Row>, app: &App, libs: &Path, plugin_dir: &Path) {
    let mut fresh = Vec::new();
    for i in 0..20u32 {
        let lib = if i % 2 == 0 {
            "daz_fixture_v2"
        } else {
            "daz_fixture_v1"
        };
        deploy(
            &libs.join(format!("lib{lib}.so")),
            plugin_dir,
            "versioned.so",
            &i.to_le_bytes(),
        );
        let t = Instant::now();
        let r = app
            .plugins
            .reload("versioned", Trigger::FileChanged)
            .expect("swap");
        assert!(matches!(r, ReloadOutcome::Swapped(_)), "{r:?}");
        fresh.push(t.elapsed());
    }
    fresh.sort();
    let mut mapped = Vec::new();
    for i in 0..20u32 {
        // These bytes were loaded in the first round: the mapping is reused.
        let lib = if i % 2 == 0 {
            "daz_fixture_v2"
        } else {
            "daz_fixture_v1"
        };
        deploy(
            &libs.join(format!("lib{lib}.so")),
            plugin_dir,
            "versioned.so",
            &i.to_le_bytes(),
        );
        let t = Instant::now();
        app.plugins
            .reload("versioned", Trigger::FileChanged)
            .expect("swap");
        mapped.push(t.elapsed());
    }
    mapped.sort();
    rows.push(Row {
        name: "swap: new file → new version serving (median, incl. preflight)".into(),
        value: format!("{:.2} ms", percentile(&fresh, 0.5).as_secs_f64() * 1e3),
        baseline: format!("p90 {:.2} ms", percentile(&fresh, 0.9).as_secs_f64() * 1e3),
        ratio: String::new(),
        target: "≤ 10 ms median",
    });
    rows.push(Row {
        name: "swap back to an already-mapped version (median)".into(),
        value: format!("{:.2} ms", percentile(&mapped, 0.5).as_secs_f64() * 1e3),
        baseline: String::new(),
        ratio: String::new(),
        target: "",
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn memory(rows: &mut Vec<Row>, libs: &Path) {
    let names: Vec<(String, &str, &str)> = (0..10)
        .map(|i| match i % 3 {
            0 => (format!("example{i}"), "daz_plugin_example", "example"),
            1 => (format!("versioned{i}"), "daz_fixture_v1", "versioned"),
            _ => (format!("panicky{i}"), "daz_fixture_panicky", "panicky"),
        })
        .collect();
    let files: Vec<(&str, String)> = names
        .iter()
        .map(|(n, lib, _)| (*lib, format!("{n}.so")))
        .collect();
    let file_refs: Vec<(&str, &str)> = files.iter().map(|(l, f)| (*l, f.as_str())).collect();
    let dir = setup_dir(libs, &file_refs);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut body = String::new();
    for (n, _, plugin) in &names {
        body.push_str(&format!(
            "[plugins.{n}]\nfile = \"{n}.so\"\nplugin = \"{plugin}\"\n"
        ));
    }
    let text = config_text(&body)
        .replace("watch = false", "watch = true\ndebounce_ms = 20")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    fs::write(dir.path().join("plugins.toml"), text).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_daz"))
        .arg("run")
        .arg("-c")
        .arg(dir.path().join("plugins.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daz starts");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(&addr, "/health/ready").contains("200 OK") {
        assert!(Instant::now() < deadline, "daz did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let loaded = rss_kib(child.id());
    // Reloads of fresh bytes: each maps one more library version.
    let reloads = 20u32;
    let plugins = dir.path().join("plugins");
    for i in 0..reloads {
        let lib = if i % 2 == 0 {
            "daz_fixture_v2"
        } else {
            "daz_fixture_v1"
        };
        deploy(
            &libs.join(format!("lib{lib}.so")),
            &plugins,
            "versioned1.so",
            &(i + 100).to_le_bytes(),
        );
        let want = format!(
            "daz_plugin_reloads_total{{plugin=\"versioned1\",result=\"swapped\"}} {}",
            i + 2
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(&addr, "/metrics").contains(&want) {
            assert!(Instant::now() < deadline, "reload {i} did not happen");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    rows.push(Row {
        name: "RSS of `daz` with 10 plugins loaded".into(),
        value: format!("{:.1} MiB", loaded as f64 / 1024.0),
        baseline: String::new(),
        ratio: String::new(),
        target: "≤ 30 MiB",
    });
    rows.push(Row {
        name: format!("RSS growth per reload ({reloads} reloads of new files)"),
        value: format!(
            "{:.2} MiB",
            (after.saturating_sub(loaded)) as f64 / 1024.0 / f64::from(reloads)
        ),
        baseline: String::new(),
        ratio: String::new(),
        target: "≤ 1 MiB",
    });
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects
    // a quick run: skip the measurements then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("plugin_host: run with `cargo bench -p daz-host --bench plugin_host`");
        return;
    }
    let libs = build_plugins();
    let mut rows = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = setup_dir(&libs, &[("daz_fixture_v1", "versioned.so")]);
    let app = rt.block_on(start(
        dir.path(),
        "[plugins.versioned]\nfile = \"versioned.so\"\nmailbox_capacity = 100000\n",
    ));
    throughput(&mut rows, &app);
    request_reply(&mut rows, &app);
    swaps(&mut rows, &app, &libs, &dir.path().join("plugins"));
    rt.block_on(app.shutdown());
    memory(&mut rows, &libs);

    println!();
    println!("| benchmark | result | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name, r.value, r.baseline, r.ratio, r.target
        );
    }
}
