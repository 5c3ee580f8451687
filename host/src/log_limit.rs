//! Rate-limited logging for per-event warnings: a server, a plugin or a client that
//! repeats a fault thousands of times a second must not fill the disk (a wrong-type
//! event in a loop once made a 442 MB log in 20 s). Each call site logs at most one line
//! per interval and says how many it held back since the last one (`suppressed`); the
//! counters and metrics still count every occurrence.
//!
//! ```ignore
//! daz_host::warn_limited!(room = %room, event = ?name, "server event does not decode");
//! ```
//!
//! Text that comes from the network or a request is logged with `?` (Debug): quoted and
//! escaped, so a `\n` in it cannot forge a log line.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Least time between two lines of one call site.
pub const EVERY: Duration = Duration::from_secs(10);

/// One call site's state: when it last logged and how many it held back since.
#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    /// A limiter that has not logged yet.
    pub const fn new() -> LogLimiter {
        LogLimiter {
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; returns `Some(held back since the last line)` when a line
    /// is due now (at most one per `every`).
    pub fn allow(&self, every: Duration) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0.is_some_and(|t| t.elapsed() < every) {
            st.1 += 1;
            return None;
        }
        let held = st.1;
        *st = (Some(Instant::now()), 0);
        Some(held)
    }
}

/// `tracing::warn!` at most once per [`EVERY`] for this call site, with the field
/// `suppressed` = lines held back since the previous one.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow($crate::log_limit::EVERY) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

/// `tracing::error!` at most once per [`EVERY`] for this call site, with `suppressed`.
#[macro_export]
macro_rules! error_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimiter = $crate::log_limit::LogLimiter::new();
        if let Some(suppressed) = LIMIT.allow($crate::log_limit::EVERY) {
            ::tracing::error!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let l = LogLimiter::new();
        assert_eq!(l.allow(EVERY), Some(0), "the first is logged");
        for _ in 0..999 {
            assert_eq!(l.allow(EVERY), None);
        }
        assert_eq!(l.allow(Duration::ZERO), Some(999), "then the count");
        assert_eq!(l.allow(EVERY), None);
    }
}
