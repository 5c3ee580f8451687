//! The per-IP connect budget: a token bucket (5 tokens, one back every 10 s),
//! with time passed in so tests can drive it.
//!
//! The per-user chat/PM and queue limiters are the server's `throttle`,
//! mirrored by `daz_cytube_proto::flood::RateLimiter`; the world uses that.

use std::time::{Duration, Instant};

/// A token bucket refilled continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    refill_every: Duration,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, one token back per `refill_every`.
    pub fn new(capacity: u32, refill_every: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            tokens: f64::from(capacity),
            refill_every,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if !self.refill_every.is_zero() {
            self.tokens = (self.tokens + elapsed.as_secs_f64() / self.refill_every.as_secs_f64())
                .min(self.capacity);
        } else {
            self.tokens = self.capacity;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_one_token_per_interval() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, Duration::from_secs(10), t0);
        for _ in 0..5 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_secs(9)));
        assert!(b.try_take(t0 + Duration::from_secs(10)));
        assert!(!b.try_take(t0 + Duration::from_secs(11)));
    }
}
