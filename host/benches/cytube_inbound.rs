//! Inbound throughput of the Cytube client: server frames parsed, decoded, applied to
//! the room state and published on the bus (one subscriber, drained), beside the same
//! frames through a bare `serde_json` parse (the baseline row) and through the frame
//! parser alone.
//!
//! The frames are what the bot received in the captured registered-channel session
//! (chat, PMs, playlist operations, playback, users, options), replayed in a loop; when
//! the captures are absent a synthetic mix of the same kinds is used.
//!
//! `cargo bench -p daz-host --bench cytube_inbound`

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daz_bus::{Bus, Mailbox, MailboxConfig};
use daz_cytube_proto::frame;
use daz_cytube_sim::capture;
use daz_host::{
    cytube::{RoomShared, inbound::InboundPipeline, metrics::CytubeMetrics},
    http::events::{RecentEvents, RecordingObserver},
    metrics::{Metrics, MetricsObserver},
};

/// The bot's received frames from the capture, as `42[…]` text.
fn capture_frames() -> Vec<String> {
    let Some(text) = capture::read("registered-channel-session.log") else {
        return synthetic_frames();
    };
    capture::received(&text, "bot")
        .iter()
        .map(|f| {
            let (name, payload) = f.event();
            frame::encode_event_raw(name, payload)
        })
        .collect()
}

fn synthetic_frames() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..50u64 {
        out.push(format!(
            r#"42["chatMsg",{{"username":"user{i}","msg":"hello there number {i} &gt; ok","meta":{{}},"time":17953391{i:05}}}]"#
        ));
        out.push(format!(
            r#"42["mediaUpdate",{{"currentTime":{i}.5,"paused":false}}]"#
        ));
        out.push(format!(r#"42["usercount",{i}]"#));
        out.push(format!(r#"42["setAFK",{{"name":"user{i}","afk":true}}]"#));
    }
    out
}

fn bench(c: &mut Criterion) {
    let frames = capture_frames();
    let n = frames.len() as u64;
    let mut g = c.benchmark_group("cytube_inbound");
    g.throughput(Throughput::Elements(n));

    g.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            for f in &frames {
                let v: serde_json::Value = serde_json::from_str(&f[2..]).unwrap_or_default();
                black_box(v);
            }
        })
    });

    g.bench_function("frame_parse_only", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(frame::parse(f).is_ok());
            }
        })
    });

    // The whole client pipeline, with one plugin-like subscriber whose mailbox is
    // drained after every pass (so it never fills up and drops).
    // The bus as the host builds it: metrics and the admin API's recent-events ring
    // observe every publish.
    let metrics = Metrics::new();
    let bus = Bus::with_observer(Arc::new(RecordingObserver {
        inner: MetricsObserver(metrics.clone()),
        recent: RecentEvents::new(1000),
    }));
    let mailbox = Mailbox::new("sink", MailboxConfig::new(1 << 20));
    let id = bus
        .register("sink", mailbox.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    bus.subscribe(id, "cytube.in.>")
        .unwrap_or_else(|e| panic!("{e}"));
    let room = RoomShared::new("bench", "bench", "http://bench", Some("testbot".into()));
    let mut pipeline = InboundPipeline::new(bus, room, &CytubeMetrics::new(&metrics));
    pipeline.new_session(Some("testbot"));
    let mut drained = Vec::with_capacity(frames.len());
    g.bench_function("client_parse_apply_publish", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(pipeline.handle_frame(f).is_ok());
            }
            drained.clear();
            mailbox.drain_into(&mut drained, usize::MAX);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(4))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
