//! [`Mailbox`]: the bounded, priority-ordered queue in front of every bus subscriber (a
//! plugin slot's worker thread, or an async host component).
//!
//! Invariants, all guarded by one mutex:
//! - four FIFO queues, one per [`Priority`]; consumers always get the oldest event of the
//!   highest non-empty priority;
//! - `len` equals the sum of the queue lengths, and every prefix bucket's counters equal the
//!   number of queued events whose subject it covers;
//! - a `Critical` event, once queued, leaves only through a consumer (never evicted).
//!
//! Overflow rule (mailbox full, or the event's prefix bucket full): if some queued event that
//! would free the needed room has a LOWER priority than the incoming one, the newest event of
//! the lowest such priority is evicted and the incoming event is queued; otherwise the
//! incoming event is dropped (`Critical`: rejected, which the publisher sees as an error).
//!
//! Wake-ups: a push only signals the condition variable when a consumer thread is parked
//! (counted under the lock), and only wakes async receivers that registered a waker; the hot
//! path is one uncontended lock per push. A consumer that finds the mailbox empty first
//! watches an atomic length hint with a short spin-then-yield backoff before it parks (see
//! the private `backoff` module), so under load most events are picked up without a wake-up.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use smallvec::SmallVec;

use crate::backoff::spin_until;
use crate::envelope::{Envelope, Priority};
use crate::error::MailboxConfigError;
use crate::subject::{has_token_prefix, validate_subject};

/// Capacities of one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Most events queued at once (all priorities together).
    pub capacity: usize,
    /// Per subject prefix (token-aligned: `a.b` covers `a.b` and `a.b.c`, not `a.bc`): at most
    /// that many queued events whose subject the prefix covers. An event covered by several
    /// prefixes counts in each of them.
    pub prefix_capacity: Vec<(String, usize)>,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig {
            capacity: 1024,
            prefix_capacity: Vec::new(),
        }
    }
}

impl MailboxConfig {
    pub fn new(capacity: usize) -> Self {
        MailboxConfig {
            capacity,
            prefix_capacity: Vec::new(),
        }
    }

    /// Adds a prefix cap.
    pub fn with_prefix(mut self, prefix: impl Into<String>, capacity: usize) -> Self {
        self.prefix_capacity.push((prefix.into(), capacity));
        self
    }

    /// Checks the prefixes. The mailbox itself accepts any config (an invalid prefix simply
    /// covers nothing), so configuration loaders call this to report mistakes.
    pub fn validate(&self) -> Result<(), MailboxConfigError> {
        for (i, (prefix, _)) in self.prefix_capacity.iter().enumerate() {
            validate_subject(prefix).map_err(|source| MailboxConfigError::InvalidPrefix {
                prefix: prefix.clone(),
                source,
            })?;
            if self.prefix_capacity[..i].iter().any(|(p, _)| p == prefix) {
                return Err(MailboxConfigError::DuplicatePrefix {
                    prefix: prefix.clone(),
                });
            }
        }
        Ok(())
    }
}

/// An event that did not make it into (or was pushed out of) a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub subject: Arc<str>,
    pub priority: Priority,
    /// Name of the mailbox that dropped it.
    pub mailbox: Arc<str>,
}

/// What [`Mailbox::push`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Queued, but a lower-priority queued event was dropped to make room.
    QueuedEvicted(Dropped),
    /// The incoming event was dropped: nothing queued had a lower priority.
    DroppedIncoming(Dropped),
    /// A `Critical` event found no room (everything evictable is critical too). Never silent:
    /// the bus turns it into an error for the publisher.
    Rejected(Dropped),
    /// The mailbox is closed; nothing was queued.
    Closed,
}

impl PushOutcome {
    /// Was the pushed event queued?
    pub fn is_queued(&self) -> bool {
        matches!(self, PushOutcome::Queued | PushOutcome::QueuedEvicted(_))
    }
}

struct Bucket {
    prefix: Box<str>,
    cap: usize,
    total: usize,
    /// Queued covered events per priority; lets eviction skip levels with no candidate.
    by_priority: [usize; 4],
}

struct State {
    queues: [VecDeque<Arc<Envelope>>; 4],
    len: usize,
    capacity: usize,
    buckets: Vec<Bucket>,
    closed: bool,
    /// Consumer threads blocked on `Mailbox::ready`.
    parked: usize,
    /// Async receivers waiting for an event.
    wakers: Vec<Waker>,
}

type BucketSet = SmallVec<[usize; 4]>;

impl State {
    fn covering(&self, subject: &str) -> BucketSet {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| has_token_prefix(subject, &b.prefix))
            .map(|(i, _)| i)
            .collect()
    }

    fn count(&mut self, subject: &str, priority: Priority, add: bool) {
        if self.buckets.is_empty() {
            return;
        }
        let p = priority.index();
        for b in &mut self.buckets {
            if has_token_prefix(subject, &b.prefix) {
                if add {
                    b.total += 1;
                    b.by_priority[p] += 1;
                } else {
                    b.total -= 1;
                    b.by_priority[p] -= 1;
                }
            }
        }
    }

    /// Finds the event to evict for an incoming event of priority `incoming`: the newest
    /// event of the lowest priority below `incoming` that lies in every bucket of `full`
    /// (with no full bucket, any event frees room). Returns `(level, position)`.
    fn victim(&self, incoming: Priority, full: &BucketSet) -> Option<(usize, usize)> {
        for level in 0..incoming.index() {
            let queue = &self.queues[level];
            if queue.is_empty() {
                continue;
            }
            if full.is_empty() {
                return Some((level, queue.len() - 1));
            }
            if full
                .iter()
                .any(|&b| self.buckets[b].by_priority[level] == 0)
            {
                continue;
            }
            let found = queue.iter().rposition(|e| {
                full.iter()
                    .all(|&b| has_token_prefix(&e.subject, &self.buckets[b].prefix))
            });
            if let Some(pos) = found {
                return Some((level, pos));
            }
        }
        None
    }

    fn pop(&mut self) -> Option<Arc<Envelope>> {
        if self.len == 0 {
            return None;
        }
        for level in (0..4).rev() {
            if let Some(env) = self.queues[level].pop_front() {
                self.len -= 1;
                self.count(&env.subject, Priority::ALL[level], false);
                return Some(env);
            }
        }
        None
    }

    fn apply_config(&mut self, cfg: MailboxConfig) {
        self.capacity = cfg.capacity;
        self.buckets = cfg
            .prefix_capacity
            .into_iter()
            .map(|(prefix, cap)| Bucket {
                prefix: prefix.into_boxed_str(),
                cap,
                total: 0,
                by_priority: [0; 4],
            })
            .collect();
        if self.buckets.is_empty() {
            return;
        }
        for level in 0..4 {
            for env in &self.queues[level] {
                for b in &mut self.buckets {
                    if has_token_prefix(&env.subject, &b.prefix) {
                        b.total += 1;
                        b.by_priority[level] += 1;
                    }
                }
            }
        }
    }
}

/// A bounded priority mailbox. Shared as `Arc<Mailbox>` between the bus (producers) and one
/// or more consumers.
pub struct Mailbox {
    name: Arc<str>,
    state: Mutex<State>,
    ready: Condvar,
    /// Copy of `State::len`, written under the lock after every change. Read without the
    /// lock only as a hint for spinning; decisions are always re-checked under the lock.
    len_hint: AtomicUsize,
    /// Set (under the lock) by `close`; a hint like `len_hint`.
    closed_hint: AtomicBool,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Mailbox")
            .field("name", &self.name)
            .field("len", &st.len)
            .field("capacity", &st.capacity)
            .field("closed", &st.closed)
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    pub fn new(name: impl Into<Arc<str>>, cfg: MailboxConfig) -> Arc<Mailbox> {
        let mut state = State {
            queues: Default::default(),
            len: 0,
            capacity: 0,
            buckets: Vec::new(),
            closed: false,
            parked: 0,
            wakers: Vec::new(),
        };
        state.apply_config(cfg);
        Arc::new(Mailbox {
            name: name.into(),
            state: Mutex::new(state),
            ready: Condvar::new(),
            len_hint: AtomicUsize::new(0),
            closed_hint: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shared string (used in [`Dropped`] reports).
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    fn dropped(&self, env: &Envelope) -> Dropped {
        Dropped {
            subject: env.subject.clone(),
            priority: env.priority,
            mailbox: self.name.clone(),
        }
    }

    /// Queues `env` following the overflow rule (see the module docs).
    pub fn push(&self, env: Arc<Envelope>) -> PushOutcome {
        let mut st = self.state.lock();
        if st.closed {
            return PushOutcome::Closed;
        }
        let mut full = BucketSet::new();
        if !st.buckets.is_empty() {
            for b in st.covering(&env.subject) {
                if st.buckets[b].total >= st.buckets[b].cap {
                    full.push(b);
                }
            }
        }
        let mut outcome = PushOutcome::Queued;
        if st.len >= st.capacity || !full.is_empty() {
            match st.victim(env.priority, &full) {
                Some((level, pos)) => {
                    // `pos` came from `victim` on this very queue under this lock.
                    // The length is unchanged overall (one out, one in), so `len_hint` is
                    // updated once below.
                    if let Some(victim) = st.queues[level].remove(pos) {
                        st.len -= 1;
                        st.count(&victim.subject, victim.priority, false);
                        outcome = PushOutcome::QueuedEvicted(self.dropped(&victim));
                    }
                }
                None => {
                    let d = self.dropped(&env);
                    return if env.priority == Priority::Critical {
                        PushOutcome::Rejected(d)
                    } else {
                        PushOutcome::DroppedIncoming(d)
                    };
                }
            }
        }
        st.count(&env.subject, env.priority, true);
        st.queues[env.priority.index()].push_back(env);
        st.len += 1;
        self.len_hint.store(st.len, Ordering::Relaxed);
        let wake_thread = st.parked > 0;
        let wakers = if st.wakers.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut st.wakers)
        };
        drop(st);
        if wake_thread {
            self.ready.notify_one();
        }
        for w in wakers {
            w.wake();
        }
        outcome
    }

    /// Parks on the condition variable until `deadline`; returns false on timeout. Keeps the
    /// `parked` count that lets `push` skip the wake-up when nobody waits.
    fn park(&self, st: &mut MutexGuard<'_, State>, deadline: Option<Instant>) -> bool {
        let arrived = MutexGuard::unlocked(st, || {
            spin_until(deadline, || {
                self.len_hint.load(Ordering::Relaxed) > 0
                    || self.closed_hint.load(Ordering::Relaxed)
            })
        });
        if arrived || st.len > 0 || st.closed {
            // Caller re-checks under the lock.
            return true;
        }
        st.parked += 1;
        let timed_out = match deadline {
            Some(d) => self.ready.wait_until(st, d).timed_out(),
            None => {
                self.ready.wait(st);
                false
            }
        };
        st.parked -= 1;
        !timed_out
    }

    /// Pops the next event (highest priority, oldest first), waiting up to `timeout`. `None`
    /// on timeout, or when the mailbox is closed and empty.
    pub fn pop_blocking(&self, timeout: Duration) -> Option<Arc<Envelope>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.state.lock();
        loop {
            if let Some(env) = self.pop_locked(&mut st) {
                return Some(env);
            }
            if st.closed || !self.park(&mut st, deadline) {
                return self.pop_locked(&mut st);
            }
        }
    }

    fn pop_locked(&self, st: &mut State) -> Option<Arc<Envelope>> {
        let env = st.pop();
        if env.is_some() {
            self.len_hint.store(st.len, Ordering::Relaxed);
        }
        env
    }

    /// Non-blocking pop.
    pub fn try_pop(&self) -> Option<Arc<Envelope>> {
        self.pop_locked(&mut self.state.lock())
    }

    /// Moves up to `max` events into `out` in priority order under ONE lock; returns how
    /// many. Never blocks (pair it with [`wait_nonempty`](Self::wait_nonempty)).
    pub fn drain_into(&self, out: &mut Vec<Arc<Envelope>>, max: usize) -> usize {
        let mut st = self.state.lock();
        let n = max.min(st.len);
        out.reserve(n);
        for _ in 0..n {
            match st.pop() {
                Some(env) => out.push(env),
                None => break,
            }
        }
        self.len_hint.store(st.len, Ordering::Relaxed);
        n
    }

    /// Waits until an event is queued. Returns false on timeout, or when the mailbox is closed
    /// and empty.
    /// With several consumers on one mailbox, another one may take the event first:
    /// treat `true` as "worth draining", and let `drain_into` find what is really there.
    pub fn wait_nonempty(&self, timeout: Duration) -> bool {
        // Lock-free fast path: a consumer draining in batches calls this once per batch,
        // and under load the next batch is usually already there.
        if self.len_hint.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.state.lock();
        loop {
            if st.len > 0 {
                return true;
            }
            if st.closed || !self.park(&mut st, deadline) {
                return st.len > 0;
            }
        }
    }

    /// Async pop for tokio host components. `None` once the mailbox is closed and empty.
    /// Cancel-safe: dropping the future loses no event.
    pub async fn recv(&self) -> Option<Arc<Envelope>> {
        poll_fn(|cx| {
            let mut st = self.state.lock();
            if let Some(env) = self.pop_locked(&mut st) {
                return Poll::Ready(Some(env));
            }
            if st.closed {
                return Poll::Ready(None);
            }
            if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Refuses further pushes and wakes every waiting consumer. Queued events stay poppable.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        self.closed_hint.store(true, Ordering::Relaxed);
        let wakers = std::mem::take(&mut st.wakers);
        drop(st);
        self.ready.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub fn len(&self) -> usize {
        self.state.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued events per priority, indexed by [`Priority::index`].
    pub fn len_by_priority(&self) -> [usize; 4] {
        let st = self.state.lock();
        std::array::from_fn(|i| st.queues[i].len())
    }

    /// The capacities in force.
    pub fn config(&self) -> MailboxConfig {
        let st = self.state.lock();
        MailboxConfig {
            capacity: st.capacity,
            prefix_capacity: st
                .buckets
                .iter()
                .map(|b| (b.prefix.to_string(), b.cap))
                .collect(),
        }
    }

    /// Changes capacities at runtime (configuration reload). Nothing already queued is
    /// dropped: if the new limits are below the current contents, the mailbox stays over its
    /// limit until consumers drain it, and meanwhile an incoming event can at best replace a
    /// lower-priority one.
    pub fn set_config(&self, cfg: MailboxConfig) {
        self.state.lock().apply_config(cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(subject: &str, p: Priority) -> Arc<Envelope> {
        Arc::new(
            Envelope::builder(subject, Vec::new())
                .priority(p)
                .build()
                .unwrap(),
        )
    }

    fn subjects(mb: &Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        mb.drain_into(&mut out, usize::MAX);
        out.iter().map(|e| e.subject.to_string()).collect()
    }

    use Priority::*;

    #[test]
    fn priority_order_and_fifo_within_level() {
        let mb = Mailbox::new("m", MailboxConfig::new(16));
        for (s, p) in [
            ("n1", Normal),
            ("h1", High),
            ("n2", Normal),
            ("c1", Critical),
            ("u1", Urgent),
            ("h2", High),
            ("c2", Critical),
        ] {
            assert_eq!(mb.push(env(s, p)), PushOutcome::Queued);
        }
        assert_eq!(mb.len(), 7);
        assert_eq!(mb.len_by_priority(), [2, 2, 1, 2]);
        assert_eq!(
            subjects(&mb),
            ["c1", "c2", "u1", "h1", "h2", "n1", "n2"].map(String::from)
        );
        assert!(mb.is_empty());
    }

    #[test]
    fn full_evicts_newest_of_lowest_priority() {
        let mb = Mailbox::new("m", MailboxConfig::new(3));
        mb.push(env("n1", Normal));
        mb.push(env("n2", Normal));
        mb.push(env("h1", High));
        match mb.push(env("u1", Urgent)) {
            PushOutcome::QueuedEvicted(d) => {
                assert_eq!(&*d.subject, "n2", "newest of the lowest level goes");
                assert_eq!(d.priority, Normal);
                assert_eq!(&*d.mailbox, "m");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(subjects(&mb), ["u1", "h1", "n1"].map(String::from));
    }

    #[test]
    fn full_drops_incoming_when_it_is_the_lowest() {
        let mb = Mailbox::new("m", MailboxConfig::new(2));
        mb.push(env("h1", High));
        mb.push(env("h2", High));
        // Equal priority does not evict: the incoming one is dropped.
        match mb.push(env("h3", High)) {
            PushOutcome::DroppedIncoming(d) => assert_eq!(&*d.subject, "h3"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            mb.push(env("n1", Normal)),
            PushOutcome::DroppedIncoming(_)
        ));
        assert_eq!(subjects(&mb), ["h1", "h2"].map(String::from));
    }

    #[test]
    fn critical_is_never_evicted_and_rejected_when_no_room() {
        let mb = Mailbox::new("m", MailboxConfig::new(2));
        mb.push(env("c1", Critical));
        mb.push(env("u1", Urgent));
        // Critical evicts the urgent one.
        assert!(matches!(
            mb.push(env("c2", Critical)),
            PushOutcome::QueuedEvicted(Dropped {
                priority: Urgent,
                ..
            })
        ));
        // All room taken by critical: another critical is rejected, others dropped.
        match mb.push(env("c3", Critical)) {
            PushOutcome::Rejected(d) => {
                assert_eq!(&*d.subject, "c3");
                assert_eq!(d.priority, Critical);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            mb.push(env("u2", Urgent)),
            PushOutcome::DroppedIncoming(_)
        ));
        assert_eq!(subjects(&mb), ["c1", "c2"].map(String::from));
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let mb = Mailbox::new("m", MailboxConfig::new(0));
        assert!(matches!(
            mb.push(env("a", Urgent)),
            PushOutcome::DroppedIncoming(_)
        ));
        assert!(matches!(
            mb.push(env("a", Critical)),
            PushOutcome::Rejected(_)
        ));
    }

    #[test]
    fn prefix_cap_is_token_aligned_and_independent_of_total() {
        let cfg = MailboxConfig::new(100).with_prefix("cytube.in.r.mediaUpdate", 2);
        let mb = Mailbox::new("m", cfg);
        assert_eq!(
            mb.push(env("cytube.in.r.mediaUpdate", Normal)),
            PushOutcome::Queued
        );
        assert_eq!(
            mb.push(env("cytube.in.r.mediaUpdate.x", Normal)),
            PushOutcome::Queued
        );
        // Bucket full: same priority incoming is dropped even though the mailbox has room.
        assert!(matches!(
            mb.push(env("cytube.in.r.mediaUpdate", Normal)),
            PushOutcome::DroppedIncoming(_)
        ));
        // Not token-aligned with the prefix, so not capped.
        assert_eq!(
            mb.push(env("cytube.in.r.mediaUpdateX", Normal)),
            PushOutcome::Queued
        );
        assert_eq!(
            mb.push(env("cytube.in.r.chatMsg", Normal)),
            PushOutcome::Queued
        );
        assert_eq!(mb.len(), 4);
    }

    #[test]
    fn prefix_cap_evicts_only_inside_the_bucket() {
        let cfg = MailboxConfig::new(100).with_prefix("a.b", 2);
        let mb = Mailbox::new("m", cfg);
        mb.push(env("a.b.1", Normal));
        mb.push(env("other", Normal)); // lower priority but outside the bucket
        mb.push(env("a.b.2", High));
        match mb.push(env("a.b.3", Urgent)) {
            PushOutcome::QueuedEvicted(d) => assert_eq!(&*d.subject, "a.b.1"),
            other => panic!("{other:?}"),
        }
        // Now the bucket holds high + urgent; another high cannot evict.
        assert!(matches!(
            mb.push(env("a.b.4", High)),
            PushOutcome::DroppedIncoming(_)
        ));
        assert_eq!(subjects(&mb), ["a.b.3", "a.b.2", "other"].map(String::from));
        // Draining released the bucket.
        assert_eq!(mb.push(env("a.b.5", Normal)), PushOutcome::Queued);
        assert_eq!(mb.push(env("a.b.6", Normal)), PushOutcome::Queued);
    }

    #[test]
    fn nested_prefixes_count_in_each_bucket() {
        let cfg = MailboxConfig::new(100)
            .with_prefix("a", 3)
            .with_prefix("a.b", 1);
        let mb = Mailbox::new("m", cfg);
        assert_eq!(mb.push(env("a.b", Normal)), PushOutcome::Queued);
        assert!(matches!(
            mb.push(env("a.b.c", Normal)),
            PushOutcome::DroppedIncoming(_)
        ));
        assert_eq!(mb.push(env("a.x", Normal)), PushOutcome::Queued);
        assert_eq!(mb.push(env("a.y", Normal)), PushOutcome::Queued);
        // Both buckets are full; the victim must lie in both: only "a.b" qualifies.
        match mb.push(env("a.b.z", High)) {
            PushOutcome::QueuedEvicted(d) => assert_eq!(&*d.subject, "a.b"),
            other => panic!("{other:?}"),
        }
        // "a" is full; an urgent "a.q" evicts the newest normal in "a", which is "a.y".
        match mb.push(env("a.q", Urgent)) {
            PushOutcome::QueuedEvicted(d) => assert_eq!(&*d.subject, "a.y"),
            other => panic!("{other:?}"),
        }
        assert_eq!(subjects(&mb), ["a.q", "a.b.z", "a.x"].map(String::from));
    }

    #[test]
    fn global_full_with_bucket_room_evicts_anywhere() {
        let cfg = MailboxConfig::new(2).with_prefix("p", 5);
        let mb = Mailbox::new("m", cfg);
        mb.push(env("x", Normal));
        mb.push(env("p.1", High));
        match mb.push(env("p.2", Urgent)) {
            PushOutcome::QueuedEvicted(d) => assert_eq!(&*d.subject, "x"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_config_shrinks_without_losing_events() {
        let mb = Mailbox::new("m", MailboxConfig::new(10));
        for i in 0..5 {
            mb.push(env(&format!("a.{i}"), Normal));
        }
        mb.set_config(MailboxConfig::new(2).with_prefix("a", 3));
        assert_eq!(mb.len(), 5, "nothing queued is dropped");
        assert_eq!(mb.config().capacity, 2);
        // Over the limit: a higher priority replaces one normal event, net length unchanged.
        assert!(matches!(
            mb.push(env("a.h", High)),
            PushOutcome::QueuedEvicted(_)
        ));
        assert_eq!(mb.len(), 5);
        assert!(matches!(
            mb.push(env("b", Normal)),
            PushOutcome::DroppedIncoming(_)
        ));
        mb.set_config(MailboxConfig::new(10));
        assert_eq!(mb.push(env("b", Normal)), PushOutcome::Queued);
    }

    #[test]
    fn config_validation() {
        assert!(
            MailboxConfig::new(1)
                .with_prefix("a.b", 1)
                .validate()
                .is_ok()
        );
        assert!(matches!(
            MailboxConfig::new(1).with_prefix("a.*", 1).validate(),
            Err(MailboxConfigError::InvalidPrefix { .. })
        ));
        assert!(matches!(
            MailboxConfig::new(1)
                .with_prefix("a", 1)
                .with_prefix("a", 2)
                .validate(),
            Err(MailboxConfigError::DuplicatePrefix { .. })
        ));
    }

    #[test]
    fn close_semantics() {
        let mb = Mailbox::new("m", MailboxConfig::new(4));
        mb.push(env("a", Normal));
        mb.close();
        assert!(mb.is_closed());
        assert_eq!(mb.push(env("b", Critical)), PushOutcome::Closed);
        // Queued events remain poppable after close, then None without waiting.
        assert_eq!(
            mb.pop_blocking(Duration::from_secs(10))
                .map(|e| e.subject.to_string()),
            Some("a".into())
        );
        let start = Instant::now();
        assert!(mb.pop_blocking(Duration::from_secs(10)).is_none());
        assert!(!mb.wait_nonempty(Duration::from_secs(10)));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "closed: no waiting"
        );
    }

    #[test]
    fn close_wakes_parked_consumer() {
        let mb = Mailbox::new("m", MailboxConfig::new(4));
        let consumer = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.pop_blocking(Duration::from_secs(30)))
        };
        // Wait until the consumer is actually parked, then close.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mb.state.lock().parked == 0 {
            assert!(Instant::now() < deadline, "consumer never parked");
            std::thread::yield_now();
        }
        mb.close();
        assert!(consumer.join().unwrap().is_none());
    }

    #[test]
    fn pop_blocking_times_out_and_wakes_on_push() {
        let mb = Mailbox::new("m", MailboxConfig::new(4));
        let start = Instant::now();
        assert!(mb.pop_blocking(Duration::from_millis(20)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(!mb.wait_nonempty(Duration::from_millis(1)));

        let consumer = {
            let mb = mb.clone();
            std::thread::spawn(move || mb.pop_blocking(Duration::from_secs(30)))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while mb.state.lock().parked == 0 {
            assert!(Instant::now() < deadline, "consumer never parked");
            std::thread::yield_now();
        }
        mb.push(env("x", Normal));
        let got = consumer.join().unwrap();
        assert_eq!(got.map(|e| e.subject.to_string()), Some("x".into()));
        assert_eq!(mb.state.lock().parked, 0);
    }

    #[test]
    fn drain_into_respects_max() {
        let mb = Mailbox::new("m", MailboxConfig::new(10));
        for i in 0..5 {
            mb.push(env(&format!("s{i}"), Normal));
        }
        let mut out = Vec::new();
        assert_eq!(mb.drain_into(&mut out, 3), 3);
        assert_eq!(mb.drain_into(&mut out, 3), 2);
        assert_eq!(mb.drain_into(&mut out, 3), 0);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn async_recv() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mb = Mailbox::new("m", MailboxConfig::new(4));
        rt.block_on(async {
            let producer = {
                let mb = mb.clone();
                std::thread::spawn(move || {
                    mb.push(env("one", Normal));
                    mb.push(env("two", Urgent));
                    mb.close();
                })
            };
            let mut got = Vec::new();
            while let Some(e) = tokio::time::timeout(Duration::from_secs(10), mb.recv())
                .await
                .expect("recv timed out")
            {
                got.push(e.subject.to_string());
            }
            producer.join().unwrap();
            // Order depends on interleaving with the producer, but both arrive and then None.
            got.sort();
            assert_eq!(got, ["one", "two"]);
        });
    }
}
