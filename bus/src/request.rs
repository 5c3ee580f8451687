//! Pending replies of request/response: the one-shot `Slot` a requester waits on, the
//! table of outstanding inboxes, the [`PendingReply`] handle (blocking `wait` or `.await`),
//! and the timer thread that expires async requests.
//!
//! Why replies never touch a mailbox: a requester usually waits inside its own event
//! handler, so its mailbox is not being drained. A reply queued there would sit behind the
//! events that pile up meanwhile (or be dropped when the mailbox is full), and the requester
//! would wait for it forever. [`crate::Bus::reply`] therefore completes the slot directly.
//!
//! Who completes a slot: exactly one of the reply, the responder going away, or the timeout
//! (first wins; the others see "already completed"). A reply that loses to the timeout is
//! counted as late.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::backoff::spin_until;
use crate::bus::SubscriberId;
use crate::error::RequestError;

/// Prefix of the inbox subjects the bus puts in `reply_to`.
pub const INBOX_PREFIX: &str = "_INBOX.";

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Raw JSON bytes, like an envelope payload.
    pub payload: Arc<[u8]>,
    /// The responder reports a failure; the payload describes it.
    pub is_error: bool,
    /// Who answered.
    pub source: Arc<str>,
}

impl Reply {
    pub fn ok(source: impl Into<Arc<str>>, payload: impl Into<Arc<[u8]>>) -> Reply {
        Reply {
            payload: payload.into(),
            is_error: false,
            source: source.into(),
        }
    }

    pub fn error(source: impl Into<Arc<str>>, payload: impl Into<Arc<[u8]>>) -> Reply {
        Reply {
            payload: payload.into(),
            is_error: true,
            source: source.into(),
        }
    }
}

enum SlotState {
    Waiting(Option<Waker>),
    Done(Result<Reply, RequestError>),
    /// The requester took the result; later completions are late.
    Taken,
}

/// One-shot rendezvous between a requester and whoever completes the request.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
    /// Set once the state leaves `Waiting`; lets a blocked requester spin briefly on it
    /// before parking (replies usually come within microseconds).
    completed: AtomicBool,
    subject: Arc<str>,
    timeout: Duration,
}

impl Slot {
    pub(crate) fn new(subject: Arc<str>, timeout: Duration) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Waiting(None)),
            done: Condvar::new(),
            completed: AtomicBool::new(false),
            subject,
            timeout,
        })
    }

    fn timeout_error(&self) -> RequestError {
        RequestError::Timeout {
            subject: self.subject.clone(),
            after: self.timeout,
        }
    }

    /// Stores the result unless one is already there; returns whether this call won.
    pub(crate) fn complete(&self, result: Result<Reply, RequestError>) -> bool {
        let mut st = self.state.lock();
        let SlotState::Waiting(waker) = &mut *st else {
            return false;
        };
        let waker = waker.take();
        *st = SlotState::Done(result);
        self.completed.store(true, Ordering::Release);
        drop(st);
        self.done.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn expire(&self) -> bool {
        self.complete(Err(self.timeout_error()))
    }

    /// Takes the result if there is one.
    fn take(st: &mut SlotState) -> Option<Result<Reply, RequestError>> {
        match std::mem::replace(st, SlotState::Taken) {
            SlotState::Done(r) => Some(r),
            other => {
                *st = other;
                None
            }
        }
    }

    /// Blocks until completed or `deadline`; on timeout completes the slot with the timeout
    /// error itself, so a racing reply is either returned or counted late, never lost.
    fn wait_until(&self, deadline: Option<Instant>) -> Result<Reply, RequestError> {
        spin_until(deadline, || self.completed.load(Ordering::Acquire));
        let mut st = self.state.lock();
        loop {
            if let Some(r) = Self::take(&mut st) {
                return r;
            }
            if matches!(*st, SlotState::Taken) {
                // Only reachable if someone took the result twice; answer like a timeout.
                return Err(self.timeout_error());
            }
            let timed_out = match deadline {
                Some(d) => self.done.wait_until(&mut st, d).timed_out(),
                None => {
                    self.done.wait(&mut st);
                    false
                }
            };
            if timed_out {
                if let Some(r) = Self::take(&mut st) {
                    return r;
                }
                *st = SlotState::Taken;
                return Err(self.timeout_error());
            }
        }
    }
}

pub(crate) struct PendingEntry {
    pub(crate) slot: Arc<Slot>,
    pub(crate) responder: SubscriberId,
    pub(crate) responder_name: Arc<str>,
}

/// Outstanding requests by inbox number.
#[derive(Default)]
pub(crate) struct PendingTable {
    map: Mutex<HashMap<u64, PendingEntry>>,
    /// Next inbox number; every number below it has been handed out.
    next: AtomicU64,
}

impl PendingTable {
    pub(crate) fn allocate(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn was_issued(&self, inbox: u64) -> bool {
        inbox < self.next.load(Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, inbox: u64, entry: PendingEntry) {
        self.map.lock().insert(inbox, entry);
    }

    pub(crate) fn take(&self, inbox: u64) -> Option<PendingEntry> {
        self.map.lock().remove(&inbox)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Fails every request waiting on `responder` (it was unregistered).
    pub(crate) fn fail_responder(&self, responder: SubscriberId) {
        let failed: Vec<PendingEntry> = {
            let mut map = self.map.lock();
            let keys: Vec<u64> = map
                .iter()
                .filter(|(_, e)| e.responder == responder)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for e in failed {
            e.slot.complete(Err(RequestError::ResponderGone {
                responder: e.responder_name,
            }));
        }
    }
}

pub(crate) fn inbox_subject(inbox: u64) -> String {
    format!("{INBOX_PREFIX}{inbox}")
}

pub(crate) fn parse_inbox(reply_to: &str) -> Option<u64> {
    let digits = reply_to.strip_prefix(INBOX_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A request in flight. Either block on [`wait`](Self::wait) or `.await` it; both honour the
/// request's timeout. Dropping it abandons the request: a later reply is counted as late.
pub struct PendingReply {
    table: Arc<PendingTable>,
    inbox: u64,
    slot: Arc<Slot>,
    deadline: Option<Instant>,
    responder: Arc<str>,
    timer_armed: bool,
    finished: bool,
}

impl fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReply")
            .field("inbox", &self.inbox)
            .field("subject", &self.slot.subject)
            .field("responder", &self.responder)
            .finish_non_exhaustive()
    }
}

impl PendingReply {
    pub(crate) fn new(
        table: Arc<PendingTable>,
        inbox: u64,
        slot: Arc<Slot>,
        responder: Arc<str>,
    ) -> PendingReply {
        let deadline = Instant::now().checked_add(slot.timeout);
        PendingReply {
            table,
            inbox,
            slot,
            deadline,
            responder,
            timer_armed: false,
            finished: false,
        }
    }

    /// The subscriber that was asked.
    pub fn responder(&self) -> &str {
        &self.responder
    }

    /// The inbox subject the responder replies to.
    pub fn inbox(&self) -> String {
        inbox_subject(self.inbox)
    }

    /// Blocks the calling thread until the reply arrives, the responder goes away, or the
    /// timeout passes.
    pub fn wait(mut self) -> Result<Reply, RequestError> {
        let result = self.slot.wait_until(self.deadline);
        self.finish();
        result
    }

    /// Forgets the inbox so a reply that comes later is reported as late.
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.table.take(self.inbox);
        }
    }
}

impl Future for PendingReply {
    type Output = Result<Reply, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.finished {
            // Polled after completion: behave like a fused future that already answered.
            return Poll::Ready(Err(this.slot.timeout_error()));
        }
        let mut st = this.slot.state.lock();
        if let Some(r) = Slot::take(&mut st) {
            drop(st);
            this.finish();
            return Poll::Ready(r);
        }
        if this.deadline.is_some_and(|d| Instant::now() >= d) {
            *st = SlotState::Taken;
            drop(st);
            this.finish();
            return Poll::Ready(Err(this.slot.timeout_error()));
        }
        if let SlotState::Waiting(w) = &mut *st {
            match w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        drop(st);
        if !this.timer_armed {
            if let Some(deadline) = this.deadline {
                if let Err(reason) = timer_arm(deadline, &this.slot) {
                    this.finish();
                    return Poll::Ready(Err(RequestError::TimerUnavailable { reason }));
                }
            }
            this.timer_armed = true;
        }
        Poll::Pending
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Expires async requests at their deadline, so `.await` honours the timeout without needing
/// a particular async runtime. One thread per process, started on first use; it holds only
/// weak references, so finished requests cost nothing but a heap entry until their deadline.
struct Timer {
    heap: Mutex<BinaryHeap<TimerEntry>>,
    changed: Condvar,
}

struct TimerEntry {
    deadline: Instant,
    slot: Weak<Slot>,
}

// Min-heap on the deadline.
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.deadline.cmp(&self.deadline)
    }
}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for TimerEntry {}

static TIMER: Timer = Timer {
    heap: Mutex::new(BinaryHeap::new()),
    changed: Condvar::new(),
};
static TIMER_THREAD: OnceLock<Result<(), String>> = OnceLock::new();

fn timer_arm(deadline: Instant, slot: &Arc<Slot>) -> Result<(), String> {
    TIMER_THREAD
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("daz-bus-timer".into())
                .spawn(timer_run)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()?;
    let mut heap = TIMER.heap.lock();
    let earliest = heap.peek().is_none_or(|e| deadline < e.deadline);
    heap.push(TimerEntry {
        deadline,
        slot: Arc::downgrade(slot),
    });
    drop(heap);
    if earliest {
        TIMER.changed.notify_one();
    }
    Ok(())
}

fn timer_run() {
    let mut heap = TIMER.heap.lock();
    loop {
        let Some(next) = heap.peek().map(|e| e.deadline) else {
            TIMER.changed.wait(&mut heap);
            continue;
        };
        if Instant::now() < next {
            TIMER.changed.wait_until(&mut heap, next);
            continue;
        }
        if let Some(entry) = heap.pop() {
            // Complete outside the heap lock: waking a task may run arbitrary code.
            drop(heap);
            if let Some(slot) = entry.slot.upgrade() {
                slot.expire();
            }
            heap = TIMER.heap.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_round_trip() {
        assert_eq!(parse_inbox(&inbox_subject(42)), Some(42));
        assert_eq!(parse_inbox("_INBOX."), None);
        assert_eq!(parse_inbox("_INBOX.4x"), None);
        assert_eq!(parse_inbox("_INBOX.+4"), None);
        assert_eq!(parse_inbox("INBOX.4"), None);
        assert_eq!(parse_inbox("_INBOX.99999999999999999999999"), None);
    }

    #[test]
    fn slot_first_completion_wins() {
        let slot = Slot::new("s".into(), Duration::from_secs(1));
        assert!(slot.complete(Ok(Reply::ok("r", Vec::new()))));
        assert!(!slot.expire());
        let r = slot.wait_until(None).unwrap();
        assert_eq!(&*r.source, "r");
        assert!(!slot.complete(Ok(Reply::ok("late", Vec::new()))));
    }

    #[test]
    fn slot_wait_times_out_then_rejects_completion() {
        let slot = Slot::new("s".into(), Duration::from_millis(5));
        let err = slot
            .wait_until(Instant::now().checked_add(Duration::from_millis(5)))
            .unwrap_err();
        assert!(matches!(err, RequestError::Timeout { .. }));
        assert!(!slot.complete(Ok(Reply::ok("late", Vec::new()))));
    }

    #[test]
    fn timer_expires_slot() {
        let slot = Slot::new("s".into(), Duration::from_millis(5));
        let before = Instant::now();
        timer_arm(before + Duration::from_millis(5), &slot).unwrap();
        let err = slot.wait_until(None).unwrap_err();
        assert!(matches!(err, RequestError::Timeout { .. }));
        assert!(before.elapsed() >= Duration::from_millis(5));
    }
}
