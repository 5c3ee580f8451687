//! What the HTTP server may take from the process, so that it can never starve the rooms
//! or plugin loading: connections, streams, time and memory are all capped.
//!
//! * Connections are served here (hyper directly, not `axum::serve`, which exposes no
//!   timeouts): a client must send a request's headers within `header_timeout_ms`, and
//!   the same timer closes a connection idle between requests (hyper restarts it each
//!   time it waits for a request head), so slowloris and idle connections cost at most
//!   that long. Headers are capped at [`MAX_HEADER_BYTES`], buffers at [`MAX_BUF_BYTES`]
//!   per connection (an unread event stream stops being polled once they are full).
//! * At most `max_connections` at once ([`ConnTable`]). A new connection beyond the cap
//!   closes the oldest *idle* one (no request in flight): a flood of idle connections
//!   cannot lock out `/health` or the operator. With none idle, the new one is closed.
//! * At most `max_streams` live event streams ([`StreamSlots`]); more are answered 503.
//! * Request bodies: [`MAX_BODY_BYTES`].
//! * File descriptors: [`raise_fd_limit`] raises the soft `RLIMIT_NOFILE` to the hard
//!   limit at start, so the capped connections leave room for sockets and plugin files.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::Request, response::Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 << 10;
/// Largest read or write buffer of a connection.
pub const MAX_BUF_BYTES: usize = 16 << 10;
/// Largest request body any route reads.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The configured limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Live event streams at once.
    pub max_streams: usize,
    /// Time to send a request head, and the longest idle time between requests.
    pub header_timeout: Duration,
}

impl Limits {
    /// The limits `[http]` sets.
    pub fn from_config(http: &crate::config::HttpConfig) -> Limits {
        Limits {
            max_connections: http.max_connections,
            max_streams: http.max_streams,
            header_timeout: Duration::from_millis(http.header_timeout_ms),
        }
    }
}

/// Raises the soft limit on open files to the hard limit (once, at start): the default
/// soft limit of 1024 is small for a host holding rooms, plugin copies and HTTP
/// clients; the hard limit is what the administrator allows. Returns (old, new).
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// One connection's activity: requests (and event streams) in flight.
#[derive(Debug, Default)]
pub struct Activity {
    busy: AtomicUsize,
}

/// Marks a connection busy while alive (a request being handled, an event stream being
/// served). Idle connections are the ones the cap may close.
#[derive(Debug)]
pub struct BusyGuard(Arc<Activity>);

impl BusyGuard {
    fn new(a: &Arc<Activity>) -> BusyGuard {
        a.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(a.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection a request came on, in the request's extensions: a handler whose
/// response outlives it (the event stream) keeps the connection busy with [`hold`].
///
/// [`hold`]: ConnHandle::hold
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<Activity>);

impl ConnHandle {
    /// Keeps the connection counted as busy until the guard is dropped.
    pub fn hold(&self) -> BusyGuard {
        BusyGuard::new(&self.0)
    }
}

struct Entry {
    id: u64,
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// The connections being served, oldest first.
pub struct ConnTable {
    max: usize,
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    /// Connections closed because the table was full.
    pub evicted: AtomicU64,
    /// New connections refused because the table was full of busy ones.
    pub refused: AtomicU64,
}

/// A connection's place in the table; dropping it frees the place.
pub struct Admitted {
    table: Arc<ConnTable>,
    id: u64,
    /// The connection's activity.
    pub activity: Arc<Activity>,
    /// Cancelled when the connection should close (evicted, or the host stops).
    pub close: CancellationToken,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.entries.lock().retain(|e| e.id != self.id);
    }
}

impl ConnTable {
    /// A table of at most `max` connections.
    pub fn new(max: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            max: max.max(1),
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a new connection, closing the oldest idle one when full; `None` when full
    /// of busy ones. `stop` ends every connection.
    pub fn admit(self: &Arc<Self>, stop: &CancellationToken) -> Option<Admitted> {
        let mut entries = self.entries.lock();
        if entries.len() >= self.max {
            let idle = entries
                .iter()
                .position(|e| e.activity.busy.load(Ordering::Acquire) == 0)?;
            // It leaves the table now (its task closes it at once: it is idle), so the
            // table never holds more than `max`.
            if let Some(e) = entries.remove(idle) {
                e.close.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        let close = stop.child_token();
        entries.push_back(Entry {
            id,
            activity: activity.clone(),
            close: close.clone(),
        });
        Some(Admitted {
            table: self.clone(),
            id,
            activity,
            close,
        })
    }
}

/// The live event streams allowed at once.
pub type StreamSlots = Arc<tokio::sync::Semaphore>;

/// Rate-limits the accept loop's warnings (accept errors, refusals) to one line per
/// interval with a count.
struct Throttled {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttled {
    const EVERY: Duration = Duration::from_secs(10);

    fn hit(&mut self) -> Option<u64> {
        self.held += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.held))
    }
}

/// Accepts and serves connections on `listener` until `stop`; each connection ends
/// when its client closes it, on a timeout, when evicted, or at `stop` (gracefully: a
/// request in flight is answered first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    table: Arc<ConnTable>,
    stop: CancellationToken,
) {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut refusals = Throttled {
        last: None,
        held: 0,
    };
    let mut failures = Throttled {
        last: None,
        held: 0,
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if let Some(n) = failures.hit() {
                    tracing::warn!(error = %e, failures = n, "HTTP server cannot accept a connection ({n} failures since the last such line)");
                }
                // Out of descriptors (EMFILE) or buffers: accepting again at once would
                // spin; give the process a moment to free some.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let Some(admitted) = table.admit(&stop) else {
            table.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = refusals.hit() {
                tracing::warn!(
                    max = limits.max_connections,
                    refused = n,
                    "HTTP connection refused: every connection is busy ({n} refused since the last such line; [http] max_connections)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tasks.spawn(serve_connection(stream, app, limits, admitted));
    }
    tasks.close();
    tasks.wait().await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    admitted: Admitted,
) {
    let activity = admitted.activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = BusyGuard::new(&activity);
        let mut req: Request = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnHandle(activity.clone()));
        let app = app.clone();
        async move {
            let resp: Response = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES.max(8192))
        .max_headers(64)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = admitted.close.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(admitted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_closes_the_oldest_idle_connection_or_refuses() {
        let stop = CancellationToken::new();
        let t = ConnTable::new(2);
        let a = t.admit(&stop).unwrap();
        let b = t.admit(&stop).unwrap();
        let _busy_a = BusyGuard::new(&a.activity);
        // a is busy, b idle: the third closes b.
        let c = t.admit(&stop).unwrap();
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        assert_eq!(t.len(), 2);
        let _busy_c = BusyGuard::new(&c.activity);
        assert!(t.admit(&stop).is_none(), "every connection is busy");
        drop(b);
        assert_eq!(t.len(), 2, "b had already left the table");
        drop(c);
        assert_eq!(t.len(), 1);
        stop.cancel();
        assert!(a.close.is_cancelled());
    }

    #[test]
    fn the_soft_fd_limit_is_raised_to_the_hard_one() {
        let (_, now) = raise_fd_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(now, lim.rlim_cur);
    }
}
