//! Measures what unread live event streams cost the host: starts a host in this process
//! (default limits), opens `N` (default 3000) `GET /api/events/stream` connections that
//! never read, publishes events of 1 KiB for a while, and prints the resident memory
//! before and after (`VmRSS`), with how many streams were served and how many refused.
//!
//! ```sh
//! cargo run -p daz-host --example sse_streams_rss -- 3000
//! ```
//!
//! The client sockets live in this process too; their user-space cost is a few hundred
//! bytes each (the kernel's socket buffers are not resident memory of the process).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let streams: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(3000);
    let dir = tempfile::tempdir()?;
    let text = "[host]\nplugin_dir = \"plugins\"\nruntime_dir = \"runtime\"\n[http]\nlisten = \"127.0.0.1:0\"\n";
    let config = daz_host::config::Config::parse(text, std::path::Path::new("plugins.toml"))?
        .with_base_dir(dir.path());
    std::fs::create_dir_all(dir.path().join("plugins"))?;
    let app = daz_host::app::App::start(config, daz_host::app::StartOptions::default()).await?;
    let addr = app.http_addr.expect("http enabled");
    let token = std::fs::read_to_string(app.admin_token_file.as_ref().expect("generated"))?;
    let token = token.trim();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();

    let started = Instant::now();
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "GET /api/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        conns.push(s);
    }
    // Events the streams would carry: 20 000 of 1 KiB.
    let payload = serde_json::to_vec(&serde_json::json!({ "pad": "x".repeat(1000) }))?;
    for i in 0..20_000u32 {
        let env = daz_bus::Envelope::builder("bench.sse", payload.clone())
            .source("bench")
            .build()?;
        app.bus.publish(env)?;
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();

    // What each connection got: the first bytes (200 or 503) or nothing (closed).
    let (mut served, mut refused, mut closed) = (0, 0, 0);
    for s in &mut conns {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            Ok(Ok(n)) if n >= 12 && buf.starts_with(b"HTTP/1.1 200") => served += 1,
            Ok(Ok(n)) if n >= 12 && buf.starts_with(b"HTTP/1.1 503") => refused += 1,
            _ => closed += 1,
        }
    }
    println!(
        "{streams} unread event streams asked for in {:?}: {served} served, {refused} refused (503), {closed} closed or silent; VmRSS {:.1} MiB before, {:.1} MiB after 20000 events of 1 KiB",
        started.elapsed(),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(conns);
    app.shutdown().await;
    Ok(())
}
