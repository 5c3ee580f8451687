//! Criterion benches for the bus. Every group has a baseline row measured in the same run so
//! the results read as ratios:
//! - `fanout/{1,10,100}`: publish → mailboxes → consumer threads draining in batches,
//!   throughput in deliveries; baseline: one crossbeam channel hop of the same
//!   `Arc<Envelope>`.
//! - `request_reply`: blocking request to a responder thread that answers with `Bus::reply`,
//!   one in flight; baseline: a two-thread ping-pong over two crossbeam channels. Also prints
//!   p50/p99 latencies measured request by request.
//! - `match`: index lookup vs the reference matcher scanning all subscriptions, plus the
//!   bound a per-subject match cache could reach (one hash lookup of the subject).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Reply, SubscriptionIndex, matches};
use smallvec::SmallVec;

const SUBJECT: &str = "cytube.in.room1.chatMsg";
const PAYLOAD: &[u8] =
    br#"{"username":"someone","msg":"hello there","meta":{},"time":1700000000000}"#;

/// Strings the host keeps interned per room (subject, room, source), so building an event
/// costs only its payload, its envelope and its id, as it does in the host.
struct Interned {
    subject: Arc<str>,
    room: Arc<str>,
    source: Arc<str>,
}

fn interned() -> Interned {
    Interned {
        subject: Arc::from(SUBJECT),
        room: Arc::from("room1"),
        source: Arc::from("cytube:room1"),
    }
}

fn envelope() -> Envelope {
    envelope_with(&interned())
}

fn envelope_with(i: &Interned) -> Envelope {
    Envelope::builder(i.subject.clone(), PAYLOAD)
        .room(i.room.clone())
        .source(i.source.clone())
        .build()
        .unwrap()
}

/// Spins (yielding) until `counter` reaches `target`.
fn wait_for(counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::Acquire) < target {
        assert!(Instant::now() < deadline, "consumers stalled");
        thread::yield_now();
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");

    // Baseline: one crossbeam hop of the same Arc<Envelope>.
    {
        let env = Arc::new(envelope());
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<Envelope>>();
        let received = Arc::new(AtomicU64::new(0));
        let consumer = {
            let received = received.clone();
            thread::spawn(move || {
                while let Ok(e) = rx.recv() {
                    black_box(&e);
                    drop(e);
                    received.fetch_add(1, Ordering::Release);
                }
            })
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function("crossbeam_hop_baseline", |b| {
            b.iter_custom(|iters| {
                let start = received.load(Ordering::Acquire);
                let t0 = Instant::now();
                for _ in 0..iters {
                    tx.send(env.clone()).unwrap();
                }
                wait_for(&received, start + iters);
                t0.elapsed()
            })
        });
        drop(tx);
        consumer.join().unwrap();
    }

    for n in [1usize, 10, 100] {
        let bus = Bus::new();
        let delivered = Arc::new(AtomicU64::new(0));
        let mut mailboxes = Vec::new();
        let consumers: Vec<_> = (0..n)
            .map(|i| {
                let name = format!("plugin{i}");
                // Unbounded in practice: this measures deliveries, so nothing may be dropped.
                let mb = Mailbox::new(name.as_str(), MailboxConfig::new(usize::MAX));
                let id = bus.register(&name, mb.clone()).unwrap();
                bus.subscribe(
                    id,
                    if i % 2 == 0 {
                        "cytube.in.*.chatMsg"
                    } else {
                        "cytube.in.room1.>"
                    },
                )
                .unwrap();
                mailboxes.push(mb.clone());
                let delivered = delivered.clone();
                thread::spawn(move || {
                    let mut batch = Vec::with_capacity(256);
                    loop {
                        if !mb.wait_nonempty(Duration::from_millis(100)) {
                            if mb.is_closed() {
                                break;
                            }
                            continue;
                        }
                        let got = mb.drain_into(&mut batch, 256);
                        black_box(&batch);
                        batch.clear();
                        delivered.fetch_add(got as u64, Ordering::Release);
                    }
                })
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        let strings = interned();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let start = delivered.load(Ordering::Acquire);
                let t0 = Instant::now();
                for _ in 0..iters {
                    let report = bus.publish(envelope_with(&strings)).unwrap();
                    debug_assert_eq!(report.delivered as usize, n);
                }
                wait_for(&delivered, start + iters * n as u64);
                t0.elapsed()
            })
        });
        for mb in &mailboxes {
            mb.close();
        }
        for c in consumers {
            c.join().unwrap();
        }
    }
    g.finish();
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{label}: p50 {:?}  p90 {:?}  p99 {:?}  ({} samples)",
        at(0.50),
        at(0.90),
        at(0.99),
        samples.len()
    );
}

fn request_reply(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_reply");
    g.throughput(Throughput::Elements(1));

    // Baseline: ping-pong over two crossbeam channels.
    {
        let env = Arc::new(envelope());
        let (to_tx, to_rx) = crossbeam_channel::bounded::<Arc<Envelope>>(1);
        let (back_tx, back_rx) = crossbeam_channel::bounded::<Arc<Envelope>>(1);
        let echo = thread::spawn(move || {
            while let Ok(e) = to_rx.recv() {
                if back_tx.send(e).is_err() {
                    break;
                }
            }
        });
        let round = || {
            to_tx.send(env.clone()).unwrap();
            back_rx.recv().unwrap()
        };
        percentiles(
            "request_reply/crossbeam_ping_pong_baseline",
            (0..10_000)
                .map(|_| {
                    let t = Instant::now();
                    black_box(round());
                    t.elapsed()
                })
                .collect(),
        );
        g.bench_function("crossbeam_ping_pong_baseline", |b| {
            b.iter(|| black_box(round()))
        });
        drop(to_tx);
        echo.join().unwrap();
    }

    {
        let bus = Bus::new();
        let mb = Mailbox::new("sql", MailboxConfig::new(1024));
        let id = bus.register("sql", mb.clone()).unwrap();
        bus.subscribe(id, "sql.query").unwrap();
        let responder = {
            let bus = bus.clone();
            let mb = mb.clone();
            thread::spawn(move || {
                let source: Arc<str> = Arc::from("sql");
                while let Some(env) = mb.pop_blocking(Duration::from_secs(60)) {
                    if let Some(to) = env.reply_to.as_deref() {
                        let _ = bus.reply(
                            to,
                            Reply {
                                payload: env.payload.clone(),
                                is_error: false,
                                source: source.clone(),
                            },
                        );
                    }
                }
            })
        };
        let req = Envelope::builder("sql.query", &br#"{"sql":"select 1"}"#[..])
            .source("bench")
            .build()
            .unwrap();
        let timeout = Duration::from_secs(10);
        percentiles(
            "request_reply/bus_request",
            (0..10_000)
                .map(|_| {
                    let t = Instant::now();
                    black_box(bus.request(req.clone(), None, timeout).unwrap());
                    t.elapsed()
                })
                .collect(),
        );
        g.bench_function("bus_request", |b| {
            b.iter(|| black_box(bus.request(req.clone(), None, timeout).unwrap()))
        });
        mb.close();
        responder.join().unwrap();
    }
    g.finish();
}

/// A plausible subscription set of `n` patterns over a few rooms and event names.
fn patterns(n: usize) -> Vec<String> {
    const EVENTS: [&str; 8] = [
        "chatMsg",
        "pm",
        "addUser",
        "userLeave",
        "changeMedia",
        "mediaUpdate",
        "queue",
        "delete",
    ];
    (0..n)
        .map(|i| {
            let room = format!("room{}", i % 50);
            let ev = EVENTS[i % EVENTS.len()];
            match i % 5 {
                0 => format!("cytube.in.{room}.{ev}"),
                1 => format!("cytube.in.*.{ev}"),
                2 => format!("cytube.out.{room}.>"),
                3 => format!("command.cmd{i}"),
                _ => format!("sql.table{i}.>"),
            }
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    for n in [10usize, 100, 1000] {
        let pats = patterns(n);
        let mut idx = SubscriptionIndex::new();
        for (i, p) in pats.iter().enumerate() {
            idx.insert(p, i as u32).unwrap();
        }
        g.bench_with_input(
            BenchmarkId::new("reference_scan_baseline", n),
            &n,
            |b, _| {
                b.iter(|| {
                    black_box(
                        pats.iter()
                            .filter(|p| matches(p, black_box(SUBJECT)))
                            .count(),
                    )
                })
            },
        );
        // What a per-subject match cache could at best achieve: one hash lookup of the
        // whole subject, with no locking or invalidation. Compared with the index row it
        // tells whether such a cache would pay.
        let cache: std::collections::HashMap<Box<str>, Vec<u32>> = std::iter::once((
            SUBJECT.into(),
            idx.matching(SUBJECT).into_iter().copied().collect(),
        ))
        .collect();
        g.bench_with_input(BenchmarkId::new("cache_hit_bound", n), &n, |b, _| {
            b.iter(|| black_box(cache.get(black_box(SUBJECT)).map_or(0, Vec::len)))
        });
        g.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            let mut out: SmallVec<[&u32; 16]> = SmallVec::new();
            b.iter(|| {
                idx.collect_into(black_box(SUBJECT), &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Plots take longer to draw than the measurements; the numbers are what we read.
    config = Criterion::default().without_plots();
    targets = fanout, request_reply, matching
}
criterion_main!(benches);
