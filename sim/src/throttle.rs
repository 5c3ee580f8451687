//! The real server's rate limiters, with time passed in so tests can drive them.
//!
//! [`Limiter`] is Cytube's per-user `throttle(burst, sustained, cooldown)`:
//! after `cooldown` seconds without an allowed action the counter resets; up to
//! `burst` actions pass; after that one action per `1000 / sustained` ms passes.
//! Refused actions do not move the clock, so a client that keeps flooding stays
//! refused except for one action per interval.
//!
//! [`TokenBucket`] is the per-IP connect budget (5 tokens, one back every 10 s).

use std::time::{Duration, Instant};

/// Parameters of one `throttle` call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Actions allowed back to back.
    pub burst: f64,
    /// Actions per second once the burst is spent.
    pub sustained: f64,
    /// Idle seconds after which the burst is available again.
    pub cooldown: f64,
}

impl Params {
    /// `cooldown` defaults to `burst / sustained`, as on the real server.
    pub fn new(burst: f64, sustained: f64) -> Self {
        Params {
            burst,
            sustained,
            cooldown: burst / sustained,
        }
    }

    /// The hard floor for chat and PMs: burst 20, 10/s, reset after 2 s.
    pub fn chat_floor() -> Self {
        Params::new(20.0, 10.0)
    }

    /// Queue limits: rank < 2 burst 3 then 1/s; moderators burst 10 then 2/s.
    pub fn queue_for_rank(rank: f64) -> Self {
        if rank >= 2.0 {
            Params::new(10.0, 2.0)
        } else {
            Params::new(3.0, 1.0)
        }
    }

    /// The `cooldown` value (ms) sent to a client whose message was dropped.
    pub fn cooldown_ms(&self) -> f64 {
        1000.0 / self.sustained
    }
}

/// Cytube's rate limiter (one per user for chat+PM, one for queueing).
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    count: f64,
    last: Option<Instant>,
}

impl Limiter {
    /// A fresh limiter.
    pub fn new() -> Self {
        Limiter::default()
    }

    /// Returns true when the action must be REFUSED (the real server's
    /// `throttle()` contract), false when it may go ahead.
    pub fn throttle(&mut self, p: Params, now: Instant) -> bool {
        let cooled = match self.last {
            None => true,
            Some(last) => now.saturating_duration_since(last).as_secs_f64() > p.cooldown,
        };
        if cooled {
            self.count = 1.0;
            self.last = Some(now);
            return false;
        }
        if self.count < p.burst {
            self.count += 1.0;
            self.last = Some(now);
            return false;
        }
        let since = self
            .last
            .map_or(Duration::MAX, |last| now.saturating_duration_since(last));
        if since.as_secs_f64() * 1000.0 < 1000.0 / p.sustained {
            return true;
        }
        self.last = Some(now);
        false
    }
}

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

    fn run(p: Params, n: usize, spacing: Duration) -> (usize, usize) {
        let mut l = Limiter::new();
        let start = Instant::now();
        let mut ok = 0;
        let mut refused = 0;
        for i in 0..n {
            if l.throttle(p, start + spacing * i as u32) {
                refused += 1;
            } else {
                ok += 1;
            }
        }
        (ok, refused)
    }

    #[test]
    fn chat_floor_lets_twenty_of_twenty_five_through() {
        assert_eq!(
            run(Params::chat_floor(), 25, Duration::from_micros(200)),
            (20, 5)
        );
    }

    #[test]
    fn channel_antiflood_lets_four_of_eight_through() {
        let p = Params {
            burst: 4.0,
            sustained: 1.0,
            cooldown: 4.0,
        };
        assert_eq!(run(p, 8, Duration::from_micros(200)), (4, 4));
        assert_eq!(p.cooldown_ms(), 1000.0);
        assert_eq!(Params::chat_floor().cooldown_ms(), 100.0);
    }

    #[test]
    fn sustained_rate_passes_after_the_burst() {
        // 40 messages 100 ms apart: burst 20 then one per 100 ms all pass.
        assert_eq!(
            run(Params::chat_floor(), 40, Duration::from_millis(100)),
            (40, 0)
        );
    }

    #[test]
    fn idle_resets_the_burst() {
        let p = Params::chat_floor();
        let mut l = Limiter::new();
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(!l.throttle(p, t0 + Duration::from_micros(i)));
        }
        assert!(l.throttle(p, t0 + Duration::from_micros(50)));
        let later = t0 + Duration::from_millis(2100);
        for i in 0..20 {
            assert!(!l.throttle(p, later + Duration::from_micros(i)));
        }
    }

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
