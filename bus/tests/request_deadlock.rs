//! Regression: the bus this one replaces queued replies in the requester's mailbox, behind
//! the events that piled up while the requester sat blocked in its handler; under load the
//! requester never saw its reply. Here many requesters, whose own mailboxes are flooded and
//! never drained while they wait, make requests to responders that publish heavily while
//! answering, and one responder itself makes a nested request from inside its handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use daz_bus::{Bus, Envelope, Mailbox, MailboxConfig, Priority, Reply, SubscriberId};

const REQUESTERS: usize = 8;
const REQUESTS_EACH: usize = 150;
const NOISE_PER_REQUEST: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(20);

fn noise(bus: &Bus, from: &str, n: usize) {
    for i in 0..n {
        let env = Envelope::builder(format!("noise.{from}"), format!("{i}").into_bytes())
            .source(from)
            .build()
            .unwrap();
        bus.publish(env).unwrap();
    }
}

/// A responder worker: drains its (noisy) mailbox, answers requests, ignores noise.
fn responder(
    bus: Bus,
    name: &'static str,
    id: SubscriberId,
    mb: Arc<Mailbox>,
    nested: Option<&'static str>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut answered = 0;
        while let Some(env) = mb.pop_blocking(TIMEOUT) {
            let Some(reply_to) = env.reply_to.clone() else {
                continue; // noise
            };
            noise(&bus, name, NOISE_PER_REQUEST);
            let mut payload = env.payload.to_vec();
            if let Some(next) = nested {
                // Blocked inside this handler while our own mailbox keeps filling.
                let inner = Envelope::builder(next, env.payload.clone())
                    .priority(Priority::High)
                    .build()
                    .unwrap();
                let r = bus
                    .request(inner, Some(id), TIMEOUT)
                    .expect("nested request failed");
                payload.extend_from_slice(b"+");
                payload.extend_from_slice(&r.payload);
            }
            bus.reply(&reply_to, Reply::ok(name, payload)).unwrap();
            answered += 1;
        }
        answered
    })
}

#[test]
fn request_reply_does_not_deadlock_when_responder_mailbox_is_busy() {
    let bus = Bus::new();
    let stop = Arc::new(AtomicBool::new(false));

    // Responders: busy mailboxes full of noise; requests come in at High and evict noise.
    let mut responders = Vec::new();
    for (name, subject, nested) in [
        ("svc0", "svc.zero", Some("svc.one")),
        ("svc1", "svc.one", None),
    ] {
        let mb = Mailbox::new(name, MailboxConfig::new(64));
        let id = bus.register(name, mb.clone()).unwrap();
        bus.subscribe(id, subject).unwrap();
        bus.subscribe(id, "noise.>").unwrap();
        responders.push((mb.clone(), responder(bus.clone(), name, id, mb, nested)));
    }

    // Background noise publishers, running until the requesters are done.
    let noisemakers: Vec<_> = (0..2)
        .map(|i| {
            let bus = bus.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let name = format!("noisemaker{i}");
                while !stop.load(Ordering::Relaxed) {
                    noise(&bus, &name, 50);
                    thread::yield_now();
                }
            })
        })
        .collect();

    // Requesters: small mailboxes that fill with noise and are never drained while waiting.
    let requesters: Vec<_> = (0..REQUESTERS)
        .map(|r| {
            let bus = bus.clone();
            thread::spawn(move || {
                let name = format!("req{r}");
                let mb = Mailbox::new(name.as_str(), MailboxConfig::new(16));
                let id = bus.register(&name, mb.clone()).unwrap();
                bus.subscribe(id, "noise.>").unwrap();
                for i in 0..REQUESTS_EACH {
                    let subject = if i % 2 == 0 { "svc.zero" } else { "svc.one" };
                    let body = format!("{r}:{i}");
                    let env = Envelope::builder(subject, body.clone().into_bytes())
                        .source(name.as_str())
                        .priority(Priority::High)
                        .build()
                        .unwrap();
                    let reply = bus
                        .request(env, Some(id), TIMEOUT)
                        .unwrap_or_else(|e| panic!("{name} request {i}: {e}"));
                    let want = if i % 2 == 0 {
                        format!("{body}+{body}")
                    } else {
                        body
                    };
                    assert_eq!(std::str::from_utf8(&reply.payload).unwrap(), want);
                    assert!(mb.len() <= 16);
                }
                // Our mailbox was full of noise the whole time, and the replies still came.
                assert!(!mb.is_empty());
            })
        })
        .collect();

    for r in requesters {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for n in noisemakers {
        n.join().unwrap();
    }
    let mut answered = 0;
    for (mb, h) in responders {
        mb.close();
        answered += h.join().unwrap();
    }
    // svc0 answers half the requests; svc1 the other half plus svc0's nested ones.
    assert_eq!(answered, REQUESTERS * REQUESTS_EACH * 3 / 2);
    assert_eq!(bus.stats().pending_requests, 0);
}
