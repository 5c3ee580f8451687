//! Recent bus events for the admin API: a bounded ring buffer fed by the bus observer
//! (every publish, direct send and request, as the shared `Arc<Envelope>`, never a
//! copy), a live feed for the SSE stream, and the event rate for `/api/stats`.
//!
//! * `GET /api/events?subject=<pattern>&limit=N` — the newest `N` (default 100)
//!   matching events, oldest first.
//! * `GET /api/events/stream?subject=<pattern>` — Server-Sent Events: a `: ready`
//!   comment once subscribed, then one `data: <event json>` per event; `event: lagged`
//!   with `{"missed": n}` when the client read too slowly and events were skipped.
//! * `GET /api/stats` — `{events_per_second, events_total, uptime_ms, …}`.
//!
//! The observer runs on the publishing thread with the bus registry read-locked, so it
//! only takes a short mutex and a non-blocking broadcast send.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Query, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use daz_bus::{BusObserver, Envelope, mailbox::Dropped};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{HttpState, error};

/// Default `limit` of `GET /api/events`.
pub const DEFAULT_LIMIT: usize = 100;
/// Events a live-stream client may fall behind before it skips.
const LIVE_CAPACITY: usize = 4096;
/// Payload bytes the buffer holds at most (besides the event count): a burst of large
/// events (a 4000-item playlist is megabytes) must not pin unbounded memory.
const MAX_BUFFER_BYTES: usize = 64 << 20;
/// Window of the event rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The ring buffer, the live feed and the counters.
pub struct RecentEvents {
    capacity: usize,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Envelope>>,
    total: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Arc<Envelope>>,
    bytes: usize,
}

impl RecentEvents {
    /// A buffer keeping the last `capacity` events.
    pub fn new(capacity: usize) -> Arc<RecentEvents> {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Arc::new(RecentEvents {
            capacity: capacity.max(1),
            ring: Mutex::new(Ring::default()),
            live,
            total: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::from([(Instant::now(), 0)])),
        })
    }

    /// Records one event.
    pub fn record(&self, env: &Arc<Envelope>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        {
            let mut ring = self.ring.lock();
            ring.bytes += env.payload.len();
            ring.events.push_back(env.clone());
            while ring.events.len() > self.capacity
                || (ring.bytes > MAX_BUFFER_BYTES && ring.events.len() > 1)
            {
                if let Some(old) = ring.events.pop_front() {
                    ring.bytes -= old.payload.len();
                }
            }
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(env.clone());
        }
    }

    /// The newest `limit` events whose subject matches `pattern` (all without one),
    /// oldest first.
    pub fn recent(&self, pattern: Option<&str>, limit: usize) -> Vec<Arc<Envelope>> {
        let ring = self.ring.lock();
        let mut out: Vec<Arc<Envelope>> = ring
            .events
            .iter()
            .rev()
            .filter(|e| pattern.is_none_or(|p| daz_bus::matches(p, &e.subject)))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.ring.lock().events.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events recorded since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Subscribes to events recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.live.subscribe()
    }

    /// Takes a sample for the rate (called every second) and drops those older than the
    /// window.
    pub fn sample(&self) {
        let now = Instant::now();
        let mut s = self.samples.lock();
        s.push_back((now, self.total()));
        while s.len() > 2 && s.front().is_some_and(|(t, _)| now - *t > RATE_WINDOW) {
            s.pop_front();
        }
    }

    /// Events per second over the last few seconds.
    pub fn rate(&self) -> f64 {
        let (t0, n0) = self
            .samples
            .lock()
            .front()
            .copied()
            .unwrap_or((Instant::now(), 0));
        let secs = t0.elapsed().as_secs_f64();
        if secs < 0.001 {
            return 0.0;
        }
        self.total().saturating_sub(n0) as f64 / secs
    }

    /// Samples the rate every second until `stop`.
    pub fn spawn_sampler(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => me.sample(),
                }
            }
        })
    }
}

/// A bus observer that records every envelope in [`RecentEvents`] and passes every call
/// on to `inner` (the metrics).
pub struct RecordingObserver<O> {
    /// The observer wrapped.
    pub inner: O,
    /// Where envelopes go.
    pub recent: Arc<RecentEvents>,
}

impl<O: BusObserver> BusObserver for RecordingObserver<O> {
    fn published(&self, subject: &str) {
        self.inner.published(subject);
    }
    fn envelope(&self, env: &Arc<Envelope>) {
        self.inner.envelope(env);
        self.recent.record(env);
    }
    fn delivered(&self, subscriber: &str, subject: &str) {
        self.inner.delivered(subscriber, subject);
    }
    fn dropped(&self, d: &Dropped) {
        self.inner.dropped(d);
    }
    fn late_reply(&self, reply_to: &str) {
        self.inner.late_reply(reply_to);
    }
}

/// One event as the API shows it.
#[derive(Serialize)]
pub struct EventJson<'a> {
    id: String,
    subject: &'a str,
    room: Option<&'a str>,
    source: &'a str,
    priority: &'static str,
    tags: Vec<&'a str>,
    ts_ms: i64,
    correlation_id: Option<&'a str>,
    /// The payload as JSON; a payload that is not JSON is shown as a string.
    payload: Payload<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(String),
}

impl<'a> EventJson<'a> {
    /// The API form of `env`.
    pub fn new(env: &'a Envelope) -> EventJson<'a> {
        let payload = match std::str::from_utf8(&env.payload)
            .ok()
            .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        {
            Some(raw) => Payload::Json(raw),
            None => Payload::Text(String::from_utf8_lossy(&env.payload).into_owned()),
        };
        EventJson {
            id: env.id.to_string(),
            subject: &env.subject,
            room: env.room.as_deref(),
            source: &env.source,
            priority: env.priority.as_str(),
            tags: env.tags.iter().map(|t| &**t).collect(),
            ts_ms: env.timestamp_ms,
            correlation_id: env.correlation_id.as_deref(),
            payload,
        }
    }
}

/// Query of the event routes.
#[derive(Deserialize)]
pub struct EventsQuery {
    subject: Option<String>,
    limit: Option<usize>,
}

fn pattern(q: &EventsQuery) -> Result<Option<String>, String> {
    match q.subject.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(p) => daz_bus::validate_pattern(p).map(|()| Some(p.to_owned())).map_err(|e| {
            format!("subject: {p:?} is not a subject pattern ({e}); use tokens separated by '.', '*' for one token, '>' at the end for the rest, like cytube.in.*.chatMsg")
        }),
    }
}

/// `GET /api/events`.
pub async fn list(State(state): State<HttpState>, Query(q): Query<EventsQuery>) -> Response {
    let pattern = match pattern(&q) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let events = state.events.recent(pattern.as_deref(), limit);
    let json: Vec<EventJson<'_>> = events.iter().map(|e| EventJson::new(e)).collect();
    Json(serde_json::json!({ "events": json })).into_response()
}

/// `GET /api/events/stream`. At most `[http] max_streams` at once (503 beyond); each
/// keeps its connection counted as busy while it lasts.
pub async fn stream(
    State(state): State<HttpState>,
    conn: Option<axum::Extension<super::limits::ConnHandle>>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let pattern = match pattern(&q) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Ok(slot) = state.streams.clone().try_acquire_owned() else {
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live event streams are open, the most [http] max_streams allows; close one or retry later",
                state.limits.max_streams
            ),
        );
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return resp;
    };
    struct Feed {
        rx: broadcast::Receiver<Arc<Envelope>>,
        pattern: Option<String>,
        stop: CancellationToken,
        greeted: bool,
        /// The stream's place under `max_streams`, given back when the stream ends.
        _slot: tokio::sync::OwnedSemaphorePermit,
        /// Keeps the connection from counting as idle (and being closed for a newer one).
        _busy: Option<super::limits::BusyGuard>,
    }
    let feed = Feed {
        rx: state.events.subscribe(),
        pattern,
        stop: state.stop.clone(),
        greeted: false,
        _slot: slot,
        _busy: conn.map(|c| c.0.hold()),
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        if !f.greeted {
            f.greeted = true;
            return Some((Ok::<_, Infallible>(SseEvent::default().comment("ready")), f));
        }
        loop {
            let next = tokio::select! {
                // Host shutdown ends the stream, so the server can stop.
                _ = f.stop.cancelled() => return None,
                r = f.rx.recv() => r,
            };
            match next {
                Ok(env) => {
                    if f.pattern
                        .as_deref()
                        .is_some_and(|p| !daz_bus::matches(p, &env.subject))
                    {
                        continue;
                    }
                    let data = serde_json::to_string(&EventJson::new(&env))
                        .unwrap_or_else(|_| "{}".to_owned());
                    return Some((Ok(SseEvent::default().data(data)), f));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let ev = SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{n}}}"));
                    return Some((Ok(ev), f));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `GET /api/stats`.
pub async fn stats(State(state): State<HttpState>) -> Response {
    let bus = state.bus.stats();
    Json(serde_json::json!({
        "events_per_second": state.events.rate(),
        "events_total": state.events.total(),
        "events_buffered": state.events.len(),
        "uptime_ms": crate::now_ms() - state.started_ms,
        "bus_subscribers": bus.subscribers,
        "bus_pending_requests": bus.pending_requests,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(subject: &str, payload: &[u8]) -> Arc<Envelope> {
        Arc::new(Envelope::builder(subject, payload).build().unwrap())
    }

    #[test]
    fn the_ring_keeps_the_newest_and_filters_by_pattern() {
        let r = RecentEvents::new(3);
        for i in 0..5 {
            r.record(&env(&format!("a.{i}"), b"{}"));
        }
        r.record(&env("b.x", b"{}"));
        assert_eq!(r.total(), 6);
        let all: Vec<String> = r
            .recent(None, 10)
            .iter()
            .map(|e| e.subject.to_string())
            .collect();
        assert_eq!(all, ["a.3", "a.4", "b.x"]);
        let a: Vec<String> = r
            .recent(Some("a.*"), 1)
            .iter()
            .map(|e| e.subject.to_string())
            .collect();
        assert_eq!(a, ["a.4"]);
    }

    #[test]
    fn payloads_that_are_not_json_are_shown_as_text() {
        let e = env("a.b", b"not json");
        let v = serde_json::to_value(EventJson::new(&e)).unwrap();
        assert_eq!(v["payload"], "not json");
        let e = env("a.b", br#"{"n":1}"#);
        let v = serde_json::to_value(EventJson::new(&e)).unwrap();
        assert_eq!(v["payload"]["n"], 1);
        assert_eq!(v["priority"], "normal");
    }
}
