//! [`Bus`]: the registry of subscribers (name → mailbox), their subscriptions, fan-out of
//! published events, direct sends, and request/response.
//!
//! Concurrency: the registry sits behind a `parking_lot::RwLock`. Publishing takes the read
//! lock for the whole fan-out (many publishers run in parallel; subscription changes are
//! rare and take the write lock). Each delivery is one push into a mailbox, which never
//! blocks, so a slow subscriber cannot stall a publisher.
//!
//! Lock order: registry → pending table → mailbox / slot. Observer callbacks run while the
//! registry read lock is held, so an observer must not call back into the bus.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::envelope::Envelope;
use crate::error::{BusError, RequestError};
use crate::mailbox::{Dropped, Mailbox, PushOutcome};
use crate::request::{
    PendingEntry, PendingReply, PendingTable, Reply, Slot, inbox_subject, parse_inbox,
};
use crate::subject::{SubscriptionIndex, validate_pattern, validate_subject};

/// Identifies a registered subscriber. Ids are never reused within a bus, and lower ids were
/// registered earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

impl SubscriberId {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Metrics hook; the host implements it with Prometheus. Every method has a no-op default.
/// Called on the publishing thread while the bus registry is read-locked: keep it cheap and
/// never call back into the [`Bus`] from it.
pub trait BusObserver: Send + Sync {
    /// An event was published (or a request sent) on `subject`.
    fn published(&self, _subject: &str) {}
    /// The whole envelope of an event being published, sent or requested, before it is
    /// delivered (a recorder keeps the `Arc`; nothing is copied). The default reports
    /// [`published`](Self::published) with its subject; an observer that overrides it
    /// calls `published` itself if it counts subjects too.
    fn envelope(&self, env: &Arc<Envelope>) {
        self.published(&env.subject);
    }
    /// An event was queued in `subscriber`'s mailbox.
    fn delivered(&self, _subscriber: &str, _subject: &str) {}
    /// An event was dropped, evicted or rejected by a mailbox.
    fn dropped(&self, _d: &Dropped) {}
    /// A reply came after its requester stopped waiting (timeout, duplicate reply, or a
    /// responder that was already unregistered).
    fn late_reply(&self, _reply_to: &str) {}
}

struct NoopObserver;
impl BusObserver for NoopObserver {}

/// What happened to one published (or sent) event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Mailboxes the event was queued in.
    pub delivered: u32,
    /// Events dropped because of this publish: the incoming event in full mailboxes, or
    /// lower-priority events evicted to make room for it.
    pub dropped: SmallVec<[Dropped; 1]>,
    /// Critical deliveries that found no room.
    pub rejected: SmallVec<[Dropped; 1]>,
    /// Matching subscribers whose mailbox was closed (shutting down).
    pub closed: u32,
}

/// Counters for the admin API and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub subscribers: usize,
    pub subscriptions: usize,
    pub pending_requests: usize,
}

/// A registered subscriber as the index stores it. Ordered and compared by id only, so
/// index lookups come back sorted by registration order.
struct Subscriber {
    id: SubscriberId,
    name: Arc<str>,
    mailbox: Arc<Mailbox>,
}

impl PartialEq for Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Subscriber {}
impl PartialOrd for Subscriber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Subscriber {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

struct Entry {
    sub: Arc<Subscriber>,
    patterns: Vec<String>,
}

#[derive(Default)]
struct Registry {
    index: SubscriptionIndex<Arc<Subscriber>>,
    by_id: HashMap<SubscriberId, Entry>,
    by_name: HashMap<Arc<str>, SubscriberId>,
}

type Targets<'a> = SmallVec<[&'a Arc<Subscriber>; 16]>;

struct Inner {
    registry: RwLock<Registry>,
    pending: Arc<PendingTable>,
    observer: Arc<dyn BusObserver>,
    next_id: AtomicU64,
}

/// The in-process event bus. Cheap to clone; all clones share one bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus::with_observer(Arc::new(NoopObserver))
    }

    pub fn with_observer(observer: Arc<dyn BusObserver>) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                registry: RwLock::new(Registry::default()),
                pending: Arc::new(PendingTable::default()),
                observer,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Registers a subscriber under a unique `name` with the mailbox its events go to.
    pub fn register(&self, name: &str, mailbox: Arc<Mailbox>) -> Result<SubscriberId, BusError> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BusError::InvalidName {
                name: name.to_owned(),
            });
        }
        let mut reg = self.inner.registry.write();
        if reg.by_name.contains_key(name) {
            return Err(BusError::NameTaken {
                name: name.to_owned(),
            });
        }
        let id = SubscriberId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let name: Arc<str> = Arc::from(name);
        reg.by_name.insert(name.clone(), id);
        reg.by_id.insert(
            id,
            Entry {
                sub: Arc::new(Subscriber { id, name, mailbox }),
                patterns: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Removes a subscriber and all its subscriptions; requests waiting on it fail with
    /// [`RequestError::ResponderGone`]. Its mailbox is left as it is (the owner closes it).
    /// Unknown ids are ignored.
    pub fn unregister(&self, id: SubscriberId) {
        let removed = {
            let mut reg = self.inner.registry.write();
            let Some(entry) = reg.by_id.remove(&id) else {
                return;
            };
            for p in &entry.patterns {
                reg.index.remove(p, &entry.sub);
            }
            reg.by_name.remove(&entry.sub.name);
            entry
        };
        // After the write lock: no new request can pick this responder any more.
        self.inner.pending.fail_responder(removed.sub.id);
    }

    /// Subscribes `id` to `pattern`. Subscribing twice to the same pattern is a no-op.
    pub fn subscribe(&self, id: SubscriberId, pattern: &str) -> Result<(), BusError> {
        validate_pattern(pattern)?;
        let mut reg = self.inner.registry.write();
        let reg = &mut *reg;
        let entry = reg
            .by_id
            .get_mut(&id)
            .ok_or(BusError::UnknownSubscriber { id })?;
        if reg.index.insert(pattern, entry.sub.clone())? {
            entry.patterns.push(pattern.to_owned());
        }
        Ok(())
    }

    /// Removes one subscription; `Ok(false)` if `id` had no such subscription.
    pub fn unsubscribe(&self, id: SubscriberId, pattern: &str) -> Result<bool, BusError> {
        let mut reg = self.inner.registry.write();
        let reg = &mut *reg;
        let entry = reg
            .by_id
            .get_mut(&id)
            .ok_or(BusError::UnknownSubscriber { id })?;
        let Some(pos) = entry.patterns.iter().position(|p| p == pattern) else {
            return Ok(false);
        };
        entry.patterns.swap_remove(pos);
        Ok(reg.index.remove(pattern, &entry.sub))
    }

    /// The patterns `id` is subscribed to (empty for an unknown id).
    pub fn subscriptions(&self, id: SubscriberId) -> Vec<String> {
        let reg = self.inner.registry.read();
        reg.by_id
            .get(&id)
            .map(|e| e.patterns.clone())
            .unwrap_or_default()
    }

    pub fn lookup(&self, name: &str) -> Option<SubscriberId> {
        self.inner.registry.read().by_name.get(name).copied()
    }

    /// The name `id` was registered under.
    pub fn name_of(&self, id: SubscriberId) -> Option<Arc<str>> {
        let reg = self.inner.registry.read();
        reg.by_id.get(&id).map(|e| e.sub.name.clone())
    }

    /// The mailbox of a registered subscriber.
    pub fn mailbox(&self, id: SubscriberId) -> Option<Arc<Mailbox>> {
        let reg = self.inner.registry.read();
        reg.by_id.get(&id).map(|e| e.sub.mailbox.clone())
    }

    fn deliver(&self, sub: &Subscriber, env: &Arc<Envelope>, report: &mut PublishReport) {
        let obs = &*self.inner.observer;
        match sub.mailbox.push(env.clone()) {
            PushOutcome::Queued => {
                report.delivered += 1;
                obs.delivered(&sub.name, &env.subject);
            }
            PushOutcome::QueuedEvicted(d) => {
                report.delivered += 1;
                obs.delivered(&sub.name, &env.subject);
                obs.dropped(&d);
                report.dropped.push(d);
            }
            PushOutcome::DroppedIncoming(d) => {
                obs.dropped(&d);
                report.dropped.push(d);
            }
            PushOutcome::Rejected(d) => {
                obs.dropped(&d);
                report.rejected.push(d);
            }
            PushOutcome::Closed => report.closed += 1,
        }
    }

    fn finish(report: PublishReport) -> Result<PublishReport, BusError> {
        if report.rejected.is_empty() {
            Ok(report)
        } else {
            Err(BusError::Rejected { report })
        }
    }

    /// Delivers one shared copy of `env` to every subscriber with a matching pattern (once
    /// per subscriber, however many of its patterns match). Fails with
    /// [`BusError::Rejected`] if any critical delivery found no room; the other deliveries
    /// still happened and the report inside the error says which.
    pub fn publish(&self, env: Envelope) -> Result<PublishReport, BusError> {
        validate_subject(&env.subject)?;
        let env = Arc::new(env);
        self.inner.observer.envelope(&env);
        let mut report = PublishReport::default();
        let reg = self.inner.registry.read();
        let mut targets = Targets::new();
        reg.index.collect_into(&env.subject, &mut targets);
        for sub in targets {
            self.deliver(sub, &env, &mut report);
        }
        drop(reg);
        Self::finish(report)
    }

    /// Publishes `env` like [`Bus::publish`] and also delivers it to the subscriber named
    /// `also` when none of that subscriber's patterns matches: every matching subscriber
    /// and `also` get exactly one copy each. For reports about one subscriber's request
    /// that others may watch (the host's `cytube.out.<room>.failed`: the plugin that asked
    /// always hears of it, a plugin subscribed to failure subjects hears of every one).
    /// An `also` that is not registered (a publisher that is not a subscriber) is not an
    /// error; the matching subscribers still get the event.
    pub fn publish_also_to(&self, env: Envelope, also: &str) -> Result<PublishReport, BusError> {
        validate_subject(&env.subject)?;
        let env = Arc::new(env);
        self.inner.observer.envelope(&env);
        let mut report = PublishReport::default();
        let reg = self.inner.registry.read();
        let mut targets = Targets::new();
        reg.index.collect_into(&env.subject, &mut targets);
        let extra = reg
            .by_name
            .get(also)
            .and_then(|id| reg.by_id.get(id))
            .map(|e| &e.sub)
            .filter(|s| !targets.iter().any(|t| t.id == s.id));
        for sub in targets.into_iter().chain(extra) {
            self.deliver(sub, &env, &mut report);
        }
        drop(reg);
        Self::finish(report)
    }

    /// Delivers `env` to exactly the subscriber named `to`, whatever its subscriptions.
    pub fn send(&self, to: &str, env: Envelope) -> Result<PublishReport, BusError> {
        validate_subject(&env.subject)?;
        let env = Arc::new(env);
        self.inner.observer.envelope(&env);
        let mut report = PublishReport::default();
        let reg = self.inner.registry.read();
        let sub = reg
            .by_name
            .get(to)
            .and_then(|id| reg.by_id.get(id))
            .ok_or_else(|| BusError::UnknownRecipient {
                name: to.to_owned(),
                subject: env.subject.to_string(),
            })?;
        self.deliver(&sub.sub, &env, &mut report);
        drop(reg);
        if report.closed > 0 {
            return Err(BusError::RecipientClosed {
                name: to.to_owned(),
                subject: env.subject.to_string(),
            });
        }
        Self::finish(report)
    }

    /// Sends a request and blocks until the reply, an error, or `timeout`. See
    /// [`request_async`](Self::request_async) for the rules.
    pub fn request(
        &self,
        env: Envelope,
        requester: Option<SubscriberId>,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        self.request_async(env, requester, timeout)?.wait()
    }

    /// Sends a request to ONE responder: the matching subscriber with the lowest id that is
    /// not `requester`. Sets `reply_to` to a fresh inbox and, if absent, the correlation id
    /// to the envelope id. Fails at once with [`RequestError::NoResponder`] when nothing
    /// matches, [`RequestError::SelfRequest`] when only the requester matches, and
    /// [`RequestError::MailboxFull`] when the responder's mailbox drops the request.
    /// The returned handle is awaited or waited on; the reply reaches it directly, never
    /// through a mailbox.
    pub fn request_async(
        &self,
        mut env: Envelope,
        requester: Option<SubscriberId>,
        timeout: Duration,
    ) -> Result<PendingReply, RequestError> {
        validate_subject(&env.subject)?;
        let subject = env.subject.clone();
        let obs = &*self.inner.observer;
        let reg = self.inner.registry.read();
        let mut targets = Targets::new();
        reg.index.collect_into(&subject, &mut targets);
        let Some(responder) = targets.iter().find(|s| Some(s.id) != requester) else {
            return Err(if targets.is_empty() {
                RequestError::NoResponder { subject }
            } else {
                RequestError::SelfRequest { subject }
            });
        };
        let pending = &self.inner.pending;
        let inbox = pending.allocate();
        env.reply_to = Some(Arc::from(inbox_subject(inbox)));
        if env.correlation_id.is_none() {
            env.correlation_id = Some(Arc::from(env.id.to_string()));
        }
        let slot = Slot::new(subject.clone(), timeout);
        // Registered before the push, and under the registry read lock: a reply can never
        // arrive for an unknown inbox, and an unregister of the responder either happens
        // before we picked it or finds this entry and fails it.
        pending.insert(
            inbox,
            PendingEntry {
                slot: slot.clone(),
                responder: responder.id,
                responder_name: responder.name.clone(),
            },
        );
        let env = Arc::new(env);
        obs.envelope(&env);
        let failure = match responder.mailbox.push(env) {
            PushOutcome::Queued => None,
            PushOutcome::QueuedEvicted(d) => {
                obs.dropped(&d);
                None
            }
            PushOutcome::DroppedIncoming(d) | PushOutcome::Rejected(d) => {
                obs.dropped(&d);
                Some(RequestError::MailboxFull {
                    responder: responder.name.clone(),
                    subject: subject.clone(),
                })
            }
            PushOutcome::Closed => Some(RequestError::ResponderGone {
                responder: responder.name.clone(),
            }),
        };
        if let Some(err) = failure {
            pending.take(inbox);
            return Err(err);
        }
        obs.delivered(&responder.name, &subject);
        let responder_name = responder.name.clone();
        drop(targets);
        drop(reg);
        Ok(PendingReply::new(
            pending.clone(),
            inbox,
            slot,
            responder_name,
        ))
    }

    /// Completes the request waiting on `reply_to` directly (never through a mailbox).
    /// Errors: [`BusError::UnknownInbox`] if `reply_to` is not an inbox this bus issued,
    /// [`BusError::ReplyExpired`] (and `observer.late_reply`) if the requester stopped
    /// waiting.
    pub fn reply(&self, reply_to: &str, reply: Reply) -> Result<(), BusError> {
        let pending = &self.inner.pending;
        let Some(inbox) = parse_inbox(reply_to).filter(|&n| pending.was_issued(n)) else {
            return Err(BusError::UnknownInbox {
                reply_to: reply_to.to_owned(),
            });
        };
        let won = pending
            .take(inbox)
            .is_some_and(|entry| entry.slot.complete(Ok(reply)));
        if won {
            return Ok(());
        }
        self.inner.observer.late_reply(reply_to);
        Err(BusError::ReplyExpired {
            reply_to: reply_to.to_owned(),
        })
    }

    pub fn stats(&self) -> BusStats {
        let (subscribers, subscriptions) = {
            let reg = self.inner.registry.read();
            (reg.by_id.len(), reg.index.len())
        };
        BusStats {
            subscribers,
            subscriptions,
            pending_requests: self.inner.pending.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::thread;
    use std::time::Instant;

    use super::*;
    use crate::envelope::Priority;
    use crate::error::SubjectError;
    use crate::mailbox::MailboxConfig;

    const LONG: Duration = Duration::from_secs(10);

    fn ev(subject: &str) -> Envelope {
        Envelope::builder(subject, &b"{}"[..]).build().unwrap()
    }

    fn ev_p(subject: &str, p: Priority) -> Envelope {
        Envelope::builder(subject, &b"{}"[..])
            .priority(p)
            .build()
            .unwrap()
    }

    fn member(bus: &Bus, name: &str, cap: usize) -> (SubscriberId, Arc<Mailbox>) {
        let mb = Mailbox::new(name, MailboxConfig::new(cap));
        (bus.register(name, mb.clone()).unwrap(), mb)
    }

    fn drain(mb: &Mailbox) -> Vec<Arc<Envelope>> {
        let mut out = Vec::new();
        mb.drain_into(&mut out, usize::MAX);
        out
    }

    #[derive(Default)]
    struct Counting {
        published: AtomicUsize,
        delivered: AtomicUsize,
        dropped: AtomicUsize,
        late: AtomicUsize,
    }

    impl BusObserver for Counting {
        fn published(&self, _: &str) {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
        fn delivered(&self, _: &str, _: &str) {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        fn dropped(&self, _: &Dropped) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        fn late_reply(&self, _: &str) {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Answers every request arriving in `mb` with its own name, until `count` were answered.
    fn responder(
        bus: &Bus,
        mb: Arc<Mailbox>,
        name: &'static str,
        count: usize,
    ) -> thread::JoinHandle<()> {
        let bus = bus.clone();
        thread::spawn(move || {
            for _ in 0..count {
                let env = mb.pop_blocking(LONG).expect("request never arrived");
                let to = env.reply_to.clone().expect("request without reply_to");
                bus.reply(&to, Reply::ok(name, env.payload.clone()))
                    .unwrap();
            }
        })
    }

    #[test]
    fn register_names_are_unique_and_valid() {
        let bus = Bus::new();
        let (a, _) = member(&bus, "a", 4);
        assert!(matches!(
            bus.register("a", Mailbox::new("a2", MailboxConfig::new(1))),
            Err(BusError::NameTaken { .. })
        ));
        for bad in ["", "a b", "x\n"] {
            assert!(matches!(
                bus.register(bad, Mailbox::new("x", MailboxConfig::new(1))),
                Err(BusError::InvalidName { .. })
            ));
        }
        assert_eq!(bus.lookup("a"), Some(a));
        assert_eq!(bus.name_of(a).as_deref(), Some("a"));
        assert_eq!(bus.lookup("b"), None);
        bus.unregister(a);
        assert_eq!(bus.lookup("a"), None);
        // The name is free again, with a new id.
        let (a2, _) = member(&bus, "a", 4);
        assert_ne!(a, a2);
        assert!(a2 > a);
    }

    #[test]
    fn subscribe_unsubscribe_and_listing() {
        let bus = Bus::new();
        let (a, _) = member(&bus, "a", 4);
        bus.subscribe(a, "x.>").unwrap();
        bus.subscribe(a, "x.>").unwrap(); // idempotent
        bus.subscribe(a, "y.*").unwrap();
        assert!(matches!(
            bus.subscribe(a, "y.*x"),
            Err(BusError::InvalidSubject(
                SubjectError::PartialWildcard { .. }
            ))
        ));
        let mut subs = bus.subscriptions(a);
        subs.sort();
        assert_eq!(subs, ["x.>", "y.*"]);
        assert_eq!(bus.stats().subscriptions, 2);
        assert!(bus.unsubscribe(a, "x.>").unwrap());
        assert!(!bus.unsubscribe(a, "x.>").unwrap());
        assert_eq!(bus.subscriptions(a), ["y.*"]);
        let ghost = SubscriberId(999);
        assert!(matches!(
            bus.subscribe(ghost, "a"),
            Err(BusError::UnknownSubscriber { .. })
        ));
        assert!(bus.unsubscribe(ghost, "a").is_err());
        assert!(bus.subscriptions(ghost).is_empty());
    }

    #[test]
    fn publish_fans_out_once_per_subscriber_sharing_one_envelope() {
        let obs = Arc::new(Counting::default());
        let bus = Bus::with_observer(obs.clone());
        let (a, ma) = member(&bus, "a", 8);
        let (b, mb) = member(&bus, "b", 8);
        let (c, mc) = member(&bus, "c", 8);
        bus.subscribe(a, "cytube.in.*.chatMsg").unwrap();
        bus.subscribe(a, "cytube.in.r1.>").unwrap(); // overlaps: still one delivery
        bus.subscribe(b, "cytube.>").unwrap();
        bus.subscribe(c, "sql.>").unwrap();
        let report = bus.publish(ev("cytube.in.r1.chatMsg")).unwrap();
        assert_eq!(report.delivered, 2);
        assert!(report.dropped.is_empty() && report.rejected.is_empty());
        let (ga, gb) = (drain(&ma), drain(&mb));
        assert_eq!((ga.len(), gb.len()), (1, 1));
        assert!(Arc::ptr_eq(&ga[0], &gb[0]), "one shared envelope");
        assert!(drain(&mc).is_empty());
        assert_eq!(bus.publish(ev("nobody.listens")).unwrap().delivered, 0);
        assert!(matches!(
            bus.publish(Envelope {
                subject: "bad.*".into(),
                ..ev("x")
            }),
            Err(BusError::InvalidSubject(_))
        ));
        assert_eq!(obs.published.load(Ordering::Relaxed), 2);
        assert_eq!(obs.delivered.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn publish_reports_drops_and_rejections() {
        let obs = Arc::new(Counting::default());
        let bus = Bus::with_observer(obs.clone());
        let (a, ma) = member(&bus, "a", 1);
        let (b, _mb) = member(&bus, "b", 8);
        bus.subscribe(a, "t").unwrap();
        bus.subscribe(b, "t").unwrap();
        assert_eq!(bus.publish(ev("t")).unwrap().delivered, 2);
        // a is full of a normal event: a second normal is dropped there.
        let r = bus.publish(ev("t")).unwrap();
        assert_eq!(r.delivered, 1);
        assert_eq!(r.dropped.len(), 1);
        assert_eq!(&*r.dropped[0].mailbox, "a");
        // A critical evicts the normal one in a.
        let r = bus.publish(ev_p("t", Priority::Critical)).unwrap();
        assert_eq!(r.delivered, 2);
        assert_eq!(r.dropped[0].priority, Priority::Normal);
        // Another critical finds a full of critical: rejected, b still gets it.
        match bus.publish(ev_p("t", Priority::Critical)) {
            Err(BusError::Rejected { report }) => {
                assert_eq!(report.delivered, 1);
                assert_eq!(report.rejected.len(), 1);
                assert_eq!(&*report.rejected[0].mailbox, "a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ma.len(), 1);
        assert_eq!(obs.dropped.load(Ordering::Relaxed), 3);
        // Closed mailboxes are counted, not errors, for publish.
        ma.close();
        let r = bus.publish(ev("t")).unwrap();
        assert_eq!((r.delivered, r.closed), (1, 1));
    }

    #[test]
    fn unregister_removes_subscriptions() {
        let bus = Bus::new();
        let (a, ma) = member(&bus, "a", 8);
        bus.subscribe(a, "t.>").unwrap();
        bus.subscribe(a, "t.x").unwrap();
        bus.unregister(a);
        bus.unregister(a); // twice is harmless
        assert_eq!(bus.publish(ev("t.x")).unwrap().delivered, 0);
        assert!(ma.is_empty());
        assert_eq!(bus.stats(), BusStats::default());
    }

    #[test]
    fn send_reaches_exactly_the_named_subscriber() {
        let bus = Bus::new();
        let (a, ma) = member(&bus, "a", 8);
        let (_b, mb) = member(&bus, "b", 8);
        bus.subscribe(a, ">").unwrap();
        // b has no subscriptions at all, yet a direct send reaches it, and only it.
        let r = bus.send("b", ev("plugin.b.cmd")).unwrap();
        assert_eq!(r.delivered, 1);
        assert_eq!(drain(&mb).len(), 1);
        assert!(ma.is_empty());
        assert!(matches!(
            bus.send("nobody", ev("x")),
            Err(BusError::UnknownRecipient { .. })
        ));
        mb.close();
        assert!(matches!(
            bus.send("b", ev("x")),
            Err(BusError::RecipientClosed { .. })
        ));
    }

    #[test]
    fn publish_also_to_reaches_the_named_subscriber_exactly_once() {
        let bus = Bus::new();
        let (watcher, mw) = member(&bus, "watcher", 8);
        let (asker, ma) = member(&bus, "asker", 8);
        let (_quiet, mq) = member(&bus, "quiet", 8);
        bus.subscribe(watcher, "cytube.out.*.failed").unwrap();
        // Not subscribed: the direct copy reaches it.
        let r = bus
            .publish_also_to(ev("cytube.out.r.failed"), "asker")
            .unwrap();
        assert_eq!(r.delivered, 2);
        assert_eq!((drain(&mw).len(), drain(&ma).len()), (1, 1));
        // Subscribed (twice over): still one copy.
        bus.subscribe(asker, "cytube.out.r.failed").unwrap();
        bus.subscribe(asker, "cytube.out.>").unwrap();
        let r = bus
            .publish_also_to(ev("cytube.out.r.failed"), "asker")
            .unwrap();
        assert_eq!(r.delivered, 2);
        assert_eq!((drain(&mw).len(), drain(&ma).len()), (1, 1));
        // An unknown name: the subscribers still get it.
        let r = bus
            .publish_also_to(ev("cytube.out.r.failed"), "nobody")
            .unwrap();
        assert_eq!(r.delivered, 2);
        assert!(mq.is_empty());
    }

    #[test]
    fn request_reply_round_trip_picks_lowest_other_subscriber() {
        let bus = Bus::new();
        let (req, mreq) = member(&bus, "requester", 8);
        let (r1, m1) = member(&bus, "r1", 8);
        let (r2, m2) = member(&bus, "r2", 8);
        for id in [req, r1, r2] {
            bus.subscribe(id, "sql.query").unwrap();
        }
        let h = responder(&bus, m1.clone(), "r1", 1);
        let env = Envelope::builder("sql.query", &b"{\"q\":1}"[..])
            .build()
            .unwrap();
        let reply = bus.request(env, Some(req), LONG).unwrap();
        h.join().unwrap();
        assert_eq!(&*reply.source, "r1");
        assert!(!reply.is_error);
        assert_eq!(&*reply.payload, b"{\"q\":1}");
        assert!(mreq.is_empty() && m2.is_empty(), "exactly one responder");
        assert_eq!(bus.stats().pending_requests, 0);

        // Without a requester id, the lowest subscriber (the requester itself) answers.
        let h = responder(&bus, mreq.clone(), "requester", 1);
        let reply = bus.request(ev("sql.query"), None, LONG).unwrap();
        h.join().unwrap();
        assert_eq!(&*reply.source, "requester");
    }

    #[test]
    fn request_sets_reply_to_and_correlation_id() {
        let bus = Bus::new();
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        let env = ev("q");
        let id = env.id;
        let pending = bus.request_async(env, None, LONG).unwrap();
        assert_eq!(pending.responder(), "r");
        let got = m.try_pop().unwrap();
        assert_eq!(got.reply_to.as_deref(), Some(pending.inbox().as_str()));
        assert!(got.reply_to.as_deref().unwrap().starts_with("_INBOX."));
        assert_eq!(got.correlation_id.as_deref(), Some(id.to_string().as_str()));
        // A caller-chosen correlation id is kept.
        let env = Envelope::builder("q", Vec::new())
            .correlation_id("mine")
            .build()
            .unwrap();
        let _p2 = bus.request_async(env, None, LONG).unwrap();
        assert_eq!(m.try_pop().unwrap().correlation_id.as_deref(), Some("mine"));
        bus.reply(&pending.inbox(), Reply::error("r", &b"\"boom\""[..]))
            .unwrap();
        let reply = pending.wait().unwrap();
        assert!(reply.is_error);
    }

    #[test]
    fn request_without_responder_fails_at_once() {
        let bus = Bus::new();
        let (a, _) = member(&bus, "a", 8);
        bus.subscribe(a, "other").unwrap();
        let start = Instant::now();
        assert!(matches!(
            bus.request(ev("sql.query"), None, LONG),
            Err(RequestError::NoResponder { .. })
        ));
        assert!(start.elapsed() < LONG / 2);
        assert_eq!(bus.stats().pending_requests, 0);
    }

    #[test]
    fn request_to_only_self_is_refused() {
        let bus = Bus::new();
        let (a, ma) = member(&bus, "a", 8);
        bus.subscribe(a, "q.>").unwrap();
        assert!(matches!(
            bus.request(ev("q.x"), Some(a), LONG),
            Err(RequestError::SelfRequest { .. })
        ));
        assert!(ma.is_empty(), "nothing queued");
    }

    #[test]
    fn request_times_out_and_late_reply_is_counted() {
        let obs = Arc::new(Counting::default());
        let bus = Bus::with_observer(obs.clone());
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        let start = Instant::now();
        match bus.request(ev("q"), None, Duration::from_millis(30)) {
            Err(RequestError::Timeout { subject, after }) => {
                assert_eq!(&*subject, "q");
                assert_eq!(after, Duration::from_millis(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(bus.stats().pending_requests, 0);
        let env = m.try_pop().unwrap();
        let to = env.reply_to.as_deref().unwrap();
        assert!(matches!(
            bus.reply(to, Reply::ok("r", Vec::new())),
            Err(BusError::ReplyExpired { .. })
        ));
        assert_eq!(obs.late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn duplicate_and_unknown_replies_are_errors() {
        let obs = Arc::new(Counting::default());
        let bus = Bus::with_observer(obs.clone());
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        let p = bus.request_async(ev("q"), None, LONG).unwrap();
        let to = m.try_pop().unwrap().reply_to.clone().unwrap();
        bus.reply(&to, Reply::ok("r", Vec::new())).unwrap();
        assert!(matches!(
            bus.reply(&to, Reply::ok("r", Vec::new())),
            Err(BusError::ReplyExpired { .. })
        ));
        assert!(p.wait().is_ok());
        for bogus in ["_INBOX.999999", "nope", "_INBOX.x"] {
            assert!(matches!(
                bus.reply(bogus, Reply::ok("r", Vec::new())),
                Err(BusError::UnknownInbox { .. })
            ));
        }
        assert_eq!(obs.late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn unregistered_responder_fails_waiting_request() {
        let bus = Bus::new();
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        let waiter = {
            let bus = bus.clone();
            thread::spawn(move || bus.request(ev("q"), None, LONG))
        };
        // The request is queued once the waiter is blocked on it.
        assert!(m.wait_nonempty(LONG));
        let env = m.try_pop().unwrap();
        bus.unregister(r);
        match waiter.join().unwrap() {
            Err(RequestError::ResponderGone { responder }) => assert_eq!(&*responder, "r"),
            other => panic!("{other:?}"),
        }
        // The responder answering afterwards is a late reply.
        assert!(matches!(
            bus.reply(env.reply_to.as_deref().unwrap(), Reply::ok("r", Vec::new())),
            Err(BusError::ReplyExpired { .. })
        ));
    }

    #[test]
    fn full_or_closed_responder_mailbox_fails_the_request() {
        let bus = Bus::new();
        let (r, m) = member(&bus, "r", 1);
        bus.subscribe(r, "q").unwrap();
        bus.publish(ev_p("q", Priority::High)).unwrap();
        match bus.request(ev("q"), None, LONG) {
            Err(RequestError::MailboxFull { responder, subject }) => {
                assert_eq!((&*responder, &*subject), ("r", "q"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bus.stats().pending_requests, 0);
        m.close();
        assert!(matches!(
            bus.request(ev_p("q", Priority::Critical), None, LONG),
            Err(RequestError::ResponderGone { .. })
        ));
    }

    #[test]
    fn dropping_a_pending_reply_abandons_the_request() {
        let obs = Arc::new(Counting::default());
        let bus = Bus::with_observer(obs.clone());
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        drop(bus.request_async(ev("q"), None, LONG).unwrap());
        assert_eq!(bus.stats().pending_requests, 0);
        let to = m.try_pop().unwrap().reply_to.clone().unwrap();
        assert!(bus.reply(&to, Reply::ok("r", Vec::new())).is_err());
        assert_eq!(obs.late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn async_request_replies_and_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bus = Bus::new();
        let (r, m) = member(&bus, "r", 8);
        bus.subscribe(r, "q").unwrap();
        let h = responder(&bus, m.clone(), "r", 1);
        // No tokio timer is enabled on this runtime: the bus's own timer must do the work.
        let reply = rt
            .block_on(bus.request_async(ev("q"), None, LONG).unwrap())
            .unwrap();
        h.join().unwrap();
        assert_eq!(&*reply.source, "r");

        let start = Instant::now();
        let res = rt.block_on(
            bus.request_async(ev("q"), None, Duration::from_millis(30))
                .unwrap(),
        );
        assert!(matches!(res, Err(RequestError::Timeout { .. })), "{res:?}");
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(bus.stats().pending_requests, 0);
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Bus>();
        assert_send_sync::<Arc<Mailbox>>();
        assert_send_sync::<PendingReply>();
        assert_send_sync::<Envelope>();
        assert_send_sync::<BusError>();
        assert_send_sync::<RequestError>();
    }

    #[test]
    fn ids_display() {
        assert_eq!(SubscriberId(7).to_string(), "#7");
        assert_eq!(SubscriberId(7).get(), 7);
    }
}
