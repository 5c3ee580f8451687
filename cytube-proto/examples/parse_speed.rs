//! Measures frame parsing (and typed decoding) throughput on one core, over a
//! mix of frames as the captures show them. Run with
//! `cargo run --release -p daz-cytube-proto --example parse_speed`.

use std::hint::black_box;
use std::time::Instant;

use daz_cytube_proto::events::ServerEvent;
use daz_cytube_proto::frame::{self, EioPacket, SioPacket};

const FRAMES: &[&str] = &[
    r#"42["chatMsg",{"username":"chanboss","msg":"hi bot, see <a href=\"https://example.org/x\" target=\"_blank\" rel=\"noopener noreferrer\">https://example.org/x</a>","meta":{},"time":1795339106943}]"#,
    r#"42["chatMsg",{"username":"testbot","msg":"flood 13","meta":{},"time":1795339131438}]"#,
    r#"42["mediaUpdate",{"currentTime":5.002,"paused":false}]"#,
    r#"42["usercount",2]"#,
    r#"42["setUserMeta",{"name":"testbot","meta":{"afk":true,"muted":false}}]"#,
    r#"42["queue",{"item":{"media":{"id":"cytube_test_stream_b","title":"Twitch.tv - cytube_test_stream_b","seconds":30,"duration":"00:30","type":"tw","meta":{}},"uid":1,"temp":false,"queueby":"chanboss"},"after":0}]"#,
    "2",
];

fn main() {
    let n = 2_000_000usize;
    let t = Instant::now();
    let mut events = 0usize;
    for i in 0..n {
        let f = FRAMES[i % FRAMES.len()];
        if let Ok(EioPacket::Message(SioPacket::Event { name, payload, .. })) = frame::parse(f) {
            events += black_box((name.len(), payload.map(|p| p.get().len())))
                .0
                .min(1);
        }
    }
    let parse = t.elapsed();
    println!(
        "frame::parse: {n} frames in {parse:?} = {:.0} frames/s ({events} events)",
        n as f64 / parse.as_secs_f64()
    );

    let t = Instant::now();
    for i in 0..n {
        let f = FRAMES[i % FRAMES.len()];
        if let Ok(EioPacket::Message(SioPacket::Event { name, payload, .. })) = frame::parse(f) {
            let _ = black_box(ServerEvent::decode(&name, payload));
        }
    }
    let full = t.elapsed();
    println!(
        "parse + ServerEvent::decode: {n} frames in {full:?} = {:.0} frames/s",
        n as f64 / full.as_secs_f64()
    );
}
