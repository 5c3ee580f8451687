//! 100 rooms on one host: memory per room and CPU at 100 events/s per room.
//!
//! The simulator runs in a child process (this binary again, with `DAZ_BENCH_SIM=1`),
//! so the figures are the host's alone: 100 registered channels, one account per room,
//! each channel playing a long item at 500x speed, which makes the server send
//! `mediaUpdate` every 10 ms — 100 events/s per room, 10 000/s in all. The host runs
//! the 100 clients plus one subscriber on `cytube.in.>` that counts what it receives.
//!
//! Reported: memory per room — live heap bytes (counted by this binary's allocator)
//! and resident memory growth, from a host with no rooms to a host with 100 logged-in
//! rooms, divided by 100 — the event rate delivered, and the host's CPU time per wall
//! second over a 10 s window (1.0 = one core busy), plus the baseline row: the same
//! rooms connected to channels where nothing plays.
//!
//! `cargo bench -p daz-host --bench cytube_rooms` (~40 s)

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use daz_bus::{Mailbox, MailboxConfig};
use daz_cytube_sim::{Account, ChannelConfig, MediaSpec, SimConfig, Simulator};
use daz_host::{
    app::{App, StartOptions},
    config::Config,
    cytube::ConnState,
};

/// The system allocator, counting live bytes (the host's heap, sim excluded: it runs
/// in the child).
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ROOMS: usize = 100;
const TIME_SCALE: f64 = 500.0;
const WINDOW: Duration = Duration::from_secs(10);

/// The child: a simulator sized for 100 bots from one IP, printing its URL.
fn run_sim_child(paused: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channels = (0..ROOMS)
            .map(|i| {
                let c = ChannelConfig::registered(format!("room{i}"));
                if paused {
                    c
                } else {
                    c.media(MediaSpec::new("tw", format!("live{i}"), "Live", 10_000_000))
                }
            })
            .collect();
        let sim = Simulator::start(SimConfig {
            channels,
            accounts: (0..ROOMS)
                .map(|i| Account::new(format!("bot{i}"), "pw"))
                .collect(),
            time_scale: TIME_SCALE,
            connect_burst: 10_000,
            max_sockets_per_ip: 10_000,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        println!("{}", sim.base_url());
        // Runs until the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        sim.shutdown().await;
    });
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Measured {
    heap_per_room: f64,
    rss_per_room: f64,
    events_per_sec: f64,
    cpu_cores: f64,
}

fn spawn_sim(paused: bool) -> (std::process::Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DAZ_BENCH_SIM", if paused { "paused" } else { "playing" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the simulator child starts");
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    (child, url.trim().to_owned())
}

async fn measure(url: &str, dir: &std::path::Path) -> Measured {
    let mut rooms = String::new();
    for i in 0..ROOMS {
        rooms.push_str(&format!(
            "[[rooms]]\nname = \"room{i}\"\nsite = \"{url}\"\nchannel = \"room{i}\"\nusername = \"bot{i}\"\npassword_file = \"pw\"\n[rooms.reconnect]\nconnect_burst = 10000\nconnect_refill_ms = 1\n\n"
        ));
    }
    let head = "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\npreflight = false\nwatch = false\n[http]\nenabled = false\n";
    std::fs::write(dir.join("empty.toml"), head).unwrap();
    std::fs::write(dir.join("rooms.toml"), format!("{head}\n{rooms}")).unwrap();

    // Baseline: a host with no rooms.
    let empty = App::start(
        Config::load(&dir.join("empty.toml")).unwrap(),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let rss0 = rss_bytes();
    let heap0 = LIVE.load(Ordering::Relaxed);
    empty.shutdown().await;

    let app = App::start(
        Config::load(&dir.join("rooms.toml")).unwrap(),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let ready = app
            .room_registry
            .all()
            .iter()
            .filter(|r| r.conn_state() == ConnState::LoggedIn)
            .count();
        if ready == ROOMS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {ready} of {ROOMS} rooms logged in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A subscriber counting everything (an async task: a spinning worker thread would
    // add its own CPU to the figure).
    let mailbox = Mailbox::new("counter", MailboxConfig::new(1 << 20));
    let id = app.bus.register("counter", mailbox.clone()).unwrap();
    app.bus.subscribe(id, "cytube.in.>").unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = {
        let count = count.clone();
        let mailbox = mailbox.clone();
        tokio::spawn(async move {
            while mailbox.recv().await.is_some() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_bytes();
    let heap1 = LIVE.load(Ordering::Relaxed);
    let (c0, e0, t0) = (cpu_time(), count.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (c1, e1, wall) = (cpu_time(), count.load(Ordering::Relaxed), t0.elapsed());
    mailbox.close();
    app.bus.unregister(id);
    let _ = counter.await;
    app.shutdown().await;
    Measured {
        heap_per_room: (heap1 - heap0) as f64 / ROOMS as f64,
        rss_per_room: rss1.saturating_sub(rss0) as f64 / ROOMS as f64,
        events_per_sec: (e1 - e0) as f64 / wall.as_secs_f64(),
        cpu_cores: (c1 - c0).as_secs_f64() / wall.as_secs_f64(),
    }
}

fn main() {
    match std::env::var("DAZ_BENCH_SIM").as_deref() {
        Ok("paused") => return run_sim_child(true),
        Ok(_) => return run_sim_child(false),
        Err(_) => {}
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("cytube_rooms: run with `cargo bench` to measure");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    println!("{ROOMS} rooms on one host against a simulator in a child process:");
    for (label, paused) in [
        ("idle (channels paused, baseline)", true),
        ("100 events/s per room", false),
    ] {
        let (mut child, url) = spawn_sim(paused);
        let m = rt.block_on(measure(&url, dir.path()));
        drop(child.stdin.take());
        let _ = child.wait();
        println!(
            "{label:<34} heap/room={:>6.1} KiB  rss/room={:>6.1} KiB  events/s={:>7.0} ({:>5.1}/room)  cpu={:.3} cores ({:.1} µs/event)",
            m.heap_per_room / 1024.0,
            m.rss_per_room / 1024.0,
            m.events_per_sec,
            m.events_per_sec / ROOMS as f64,
            m.cpu_cores,
            if m.events_per_sec > 0.0 {
                m.cpu_cores * 1e6 / m.events_per_sec
            } else {
                0.0
            }
        );
    }
}
