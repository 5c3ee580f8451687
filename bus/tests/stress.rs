//! Multi-thread stress: N publishers, M consumers with overlapping subscriptions. Every
//! event reaches every matching subscriber exactly once, each drained batch is in priority
//! order, and events of one publisher at one priority stay FIFO.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority, matches};

const PUBLISHERS: u32 = 4;
const PER_PUBLISHER: u32 = 5_000;
const KINDS: [&str; 3] = ["a", "b", "c"];

/// Consumers and their (deliberately overlapping) patterns.
const CONSUMERS: [(&str, &[&str]); 4] = [
    ("all", &["s.>"]),
    ("kind-a", &["s.*.a"]),
    ("pub1-or-b", &["s.1.>", "s.*.b"]),
    ("pub0", &["s.0.a", "s.0.*", "s.0.>"]),
];

fn subject(publisher: u32, seq: u32) -> String {
    format!("s.{publisher}.{}", KINDS[(seq % 3) as usize])
}

fn priority(seq: u32) -> Priority {
    Priority::ALL[(seq * 7 % 4) as usize]
}

#[test]
fn every_event_delivered_exactly_once_in_priority_order() {
    let bus = Bus::new();
    let total = (PUBLISHERS * PER_PUBLISHER) as usize;

    // Expected deliveries per consumer, from the reference matcher.
    let mut expected: HashMap<&str, usize> = HashMap::new();
    for (name, patterns) in CONSUMERS {
        let n = (0..PUBLISHERS)
            .flat_map(|p| (0..PER_PUBLISHER).map(move |s| subject(p, s)))
            .filter(|s| patterns.iter().any(|p| matches(p, s)))
            .count();
        expected.insert(name, n);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let consumers: Vec<_> = CONSUMERS
        .iter()
        .map(|&(name, patterns)| {
            // Room for everything: this test is about exactly-once, not overflow.
            let mb = Mailbox::new(name, MailboxConfig::new(total));
            let id = bus.register(name, mb.clone()).unwrap();
            for p in patterns {
                bus.subscribe(id, p).unwrap();
            }
            let want = expected[name];
            thread::spawn(move || consume(&mb, want, deadline))
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let bus = bus.clone();
            thread::spawn(move || {
                for seq in 0..PER_PUBLISHER {
                    let env = Envelope::builder(subject(p, seq), seq.to_le_bytes().to_vec())
                        .source(format!("pub{p}"))
                        .priority(priority(seq))
                        .build()
                        .unwrap();
                    let report = bus.publish(env).unwrap();
                    assert!(report.dropped.is_empty() && report.rejected.is_empty());
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }

    for ((name, patterns), c) in CONSUMERS.iter().zip(consumers) {
        let got = c.join().unwrap();
        assert_eq!(got.len(), expected[name], "{name}: delivery count");
        // Exactly once: every (publisher, seq) that matches appears once.
        let mut seen = std::collections::HashSet::new();
        for (publisher, seq) in &got {
            assert!(
                seen.insert((*publisher, *seq)),
                "{name}: duplicate {publisher}/{seq}"
            );
            let s = subject(*publisher, *seq);
            assert!(patterns.iter().any(|p| matches(p, &s)), "{name}: stray {s}");
        }
    }
}

/// Drains `mb` in batches until `want` events arrived; checks ordering on the way and
/// returns (publisher, seq) of every event.
fn consume(mb: &Mailbox, want: usize, deadline: Instant) -> Vec<(u32, u32)> {
    let mut got = Vec::with_capacity(want);
    // Last seq seen per (publisher, priority): FIFO within a level.
    let mut last: HashMap<(u32, Priority), u32> = HashMap::new();
    let mut batch = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: only {} of {want} events arrived",
            mb.name(),
            got.len()
        );
        if !mb.wait_nonempty(left) {
            continue;
        }
        batch.clear();
        mb.drain_into(&mut batch, 64);
        assert!(
            batch.windows(2).all(|w| w[0].priority >= w[1].priority),
            "{}: batch not in priority order",
            mb.name()
        );
        for env in &batch {
            let publisher: u32 = env.source.trim_start_matches("pub").parse().unwrap();
            let seq = u32::from_le_bytes(env.payload[..4].try_into().unwrap());
            if let Some(prev) = last.insert((publisher, env.priority), seq) {
                assert!(prev < seq, "{}: FIFO broken for pub{publisher}", mb.name());
            }
            got.push((publisher, seq));
        }
    }
    got
}
