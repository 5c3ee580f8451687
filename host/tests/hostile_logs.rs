//! Log floods and forged log lines. A test binary of its own: it installs the host's
//! global subscriber to read every log line.
//!
//! - a server sending a wrong-type event in a loop: one WARN per 10 s with the count held
//!   back, not one per event (it once made a 442 MB log in 20 s);
//! - a plugin name with `%0a` in an admin API path: the name is logged escaped, so it
//!   cannot start a forged line.

use std::sync::OnceLock;

use daz_host::{
    cytube::{RoomShared, inbound::InboundPipeline, metrics::CytubeMetrics},
    metrics::Metrics,
};
use daz_testkit::{TestHost, fixture, host_table, logs::LogCapture};

fn capture() -> &'static LogCapture {
    static CAP: OnceLock<LogCapture> = OnceLock::new();
    CAP.get_or_init(|| {
        let cap = LogCapture::default();
        let writer = cap.clone();
        daz_host::telemetry::init_with_writer(false, "debug", move || writer.clone());
        cap
    })
}

#[test]
fn a_wrong_type_event_in_a_loop_does_not_flood_the_log() {
    let cap = capture();
    let metrics = Metrics::new();
    let cytube = CytubeMetrics::new(&metrics);
    let room = RoomShared::new("flood", "Flood", "http://127.0.0.1:1", Some("bot".into()));
    let mut inbound = InboundPipeline::new(daz_bus::Bus::new(), room, &cytube);
    let before = cap.text().lines().count();
    const N: usize = 20_000;
    let started = std::time::Instant::now();
    for i in 0..N {
        // changeMedia wants an object; the server sends a number (and once a string
        // holding a newline and a forged line).
        let frame = if i == N / 2 {
            "42[\"changeMedia\",\"x\\n2026-01-01T00:00:00Z ERROR forged\"]".to_owned()
        } else {
            format!("42[\"changeMedia\",{i}]")
        };
        inbound.handle_frame(&frame).expect("a frame");
    }
    let elapsed = started.elapsed();
    let text = cap.text();
    let lines: Vec<&str> = text
        .lines()
        .skip(before)
        .filter(|l| l.contains("flood"))
        .collect();
    eprintln!(
        "{N} wrong-type events in {elapsed:?}: {} log lines ({:.1} lines/s)",
        lines.len(),
        lines.len() as f64 / elapsed.as_secs_f64().max(0.001)
    );
    // One line per call site per 10 s; a slow machine may cross one boundary.
    assert!(
        (1..=3).contains(&lines.len()),
        "{} lines: {lines:#?}",
        lines.len()
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("ERROR forged") && !l.contains("flood")),
        "a forged line: {text}"
    );
    assert_eq!(
        cytube.bad_frames.with_label_values(&["flood"]).get(),
        N as u64,
        "every bad event is still counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_plugin_name_in_an_api_path_cannot_forge_a_log_line() {
    let cap = capture();
    let h = TestHost::start(
        &format!(
            "{}\n[plugins.example]\nfile = \"example.so\"\n",
            host_table("")
        ),
        &[(fixture("daz_plugin_example"), "example.so")],
    )
    .await;
    let addr = h.app.http_addr.unwrap();
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{addr}/api/plugins/evil%0a2026-01-01T00:00:00Z%20ERROR%20FORGED/reload"
        ))
        .bearer_auth(h.generated_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let text = cap.text();
    assert!(
        text.contains(r"evil\n2026-01-01T00:00:00Z ERROR FORGED"),
        "the name is logged escaped: {text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z ERROR FORGED")),
        "a forged line: {text}"
    );
    h.app.shutdown().await;
}
