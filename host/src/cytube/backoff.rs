//! Reconnect pacing: the capped, jittered exponential [`Backoff`] of one room, and the
//! [`ConnectBudget`] shared by every room on the same site.
//!
//! The server allows each client IP a burst of 5 Socket.IO connects, then one per 10 s,
//! and refuses the rest ("Rate limit exceeded") — a bot that reconnects in a tight loop
//! locks itself out. All rooms of one host share that IP, so the budget is per site and
//! shared: every connect takes a slot from it first, and a room whose slot lies in the
//! future waits for it. The budget reserves slots (the token count may go negative), so
//! however many rooms wait, their connects never exceed burst + elapsed / refill.
//!
//! Pure: every method takes the time as an argument.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// A token bucket with reservations: `burst` connects at once, one more per `refill`.
#[derive(Debug)]
pub struct ConnectBudget {
    inner: Mutex<BudgetState>,
    burst: u32,
    refill: Duration,
}

#[derive(Debug)]
struct BudgetState {
    /// Tokens at `at`; negative when slots in the future are reserved.
    tokens: f64,
    at: Instant,
}

/// Slack added to the refill interval. The server counts a connect when the Socket.IO
/// connect arrives, some milliseconds after the slot was reserved (discovery, websocket
/// and Engine.IO handshakes); that delay varies, and a connect that arrives sooner after
/// its predecessor than the refill interval finds no token. The slack absorbs it.
pub fn refill_slack(refill: Duration) -> Duration {
    (refill / 50).max(Duration::from_millis(100))
}

impl ConnectBudget {
    /// A full bucket. `refill` is the server's interval; the budget refills
    /// [`refill_slack`] slower.
    pub fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        let refill = refill.max(Duration::from_millis(1));
        ConnectBudget {
            inner: Mutex::new(BudgetState {
                tokens: f64::from(burst),
                at: now,
            }),
            burst: burst.max(1),
            refill: refill + refill_slack(refill),
        }
    }

    fn refill_to(&self, st: &mut BudgetState, now: Instant) {
        let elapsed = now.saturating_duration_since(st.at);
        let gained = elapsed.as_secs_f64() / self.refill.as_secs_f64();
        st.tokens = (st.tokens + gained).min(f64::from(self.burst));
        st.at = now.max(st.at);
    }

    /// Reserves the next connect slot and returns when it starts (`now` if a token is
    /// free). The caller must not connect before that instant.
    pub fn reserve(&self, now: Instant) -> Instant {
        let mut st = self.inner.lock();
        self.refill_to(&mut st, now);
        st.tokens -= 1.0;
        if st.tokens >= 0.0 {
            now
        } else {
            now + self.refill.mul_f64(-st.tokens)
        }
    }

    /// The server said the budget is spent (`connect_error` "Rate limit exceeded"):
    /// forget the tokens we thought were left (another client on the same IP, or a
    /// restart of ours, used them).
    pub fn exhausted(&self, now: Instant) {
        let mut st = self.inner.lock();
        self.refill_to(&mut st, now);
        st.tokens = st.tokens.min(0.0);
    }
}

/// Budgets by site, so rooms on the same server share one.
#[derive(Debug, Default)]
pub struct Budgets {
    by_site: Mutex<HashMap<String, Arc<ConnectBudget>>>,
}

impl Budgets {
    /// The budget of `site` (created with these parameters by the first room asking).
    pub fn for_site(&self, site: &str, burst: u32, refill: Duration) -> Arc<ConnectBudget> {
        let key = site_key(site);
        self.by_site
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(ConnectBudget::new(burst, refill, Instant::now())))
            .clone()
    }
}

/// `scheme://host:port` of a site URL (paths and a trailing slash do not matter).
fn site_key(site: &str) -> String {
    match url::Url::parse(site) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => site.to_owned(),
    }
}

/// Capped exponential backoff with jitter: attempt n waits
/// `min(max, initial * 2^n) * (1 - jitter * r)` for a random r in [0, 1).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// A backoff at its first attempt.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// The delay before the next attempt, given a random number in [0, 1); advances.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let exp = 2f64.powi(i32::try_from(self.attempt.min(30)).unwrap_or(30));
        let base = self.initial.mul_f64(exp).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        base.mul_f64(1.0 - self.jitter * random.clamp(0.0, 1.0))
    }

    /// Attempts so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first attempt (after a stable session).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn budget_allows_the_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let b = ConnectBudget::new(5, Duration::from_secs(10), t0);
        let every = Duration::from_millis(10_200);
        for _ in 0..5 {
            assert_eq!(b.reserve(t0), t0);
        }
        assert_eq!(b.reserve(t0), t0 + every);
        assert_eq!(b.reserve(t0), t0 + every * 2);
        // 36 s later two reservations are already covered; the bucket refills from -2.
        let t1 = t0 + Duration::from_secs(36);
        let slot = b.reserve(t1);
        assert_eq!(slot, t1, "-2 + 3.5 tokens leaves 1.5");
    }

    #[test]
    fn rate_limit_reply_drains_the_budget() {
        let t0 = Instant::now();
        let b = ConnectBudget::new(5, Duration::from_secs(10), t0);
        b.exhausted(t0);
        assert_eq!(b.reserve(t0), t0 + Duration::from_millis(10_200));
    }

    #[test]
    fn sites_share_a_budget_by_origin() {
        let budgets = Budgets::default();
        let a = budgets.for_site("https://cytu.be", 5, Duration::from_secs(10));
        let b = budgets.for_site("https://cytu.be/", 5, Duration::from_secs(10));
        let c = budgets.for_site("https://cytu.be:443", 5, Duration::from_secs(10));
        let d = budgets.for_site("http://127.0.0.1:8080", 5, Duration::from_secs(10));
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 0.0);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay(0.9), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn connects_never_exceed_the_server_budget(
            gaps in proptest::collection::vec(0u64..30_000, 1..200),
        ) {
            // Rooms ask at arbitrary times and connect exactly at their slot. Over any
            // window, connects <= burst + window / refill (the server's rule).
            let t0 = Instant::now();
            let refill = Duration::from_secs(10);
            let b = ConnectBudget::new(5, refill, t0);
            let mut now = t0;
            let mut slots = Vec::new();
            for g in gaps {
                now += Duration::from_millis(g);
                slots.push(b.reserve(now));
            }
            slots.sort();
            for i in 0..slots.len() {
                for j in i..slots.len() {
                    let window = slots[j] - slots[i];
                    let allowed = 5.0 + window.as_secs_f64() / refill.as_secs_f64() + 1e-6;
                    prop_assert!((j - i + 1) as f64 <= allowed, "{} connects in {:?}", j - i + 1, window);
                }
            }
        }

        #[test]
        fn backoff_stays_within_bounds(initial in 1u64..5_000, max in 1u64..200_000, jitter in 0.0f64..1.0, r in 0.0f64..1.0) {
            let mut b = Backoff::new(Duration::from_millis(initial), Duration::from_millis(max), jitter);
            for _ in 0..40 {
                let d = b.next_delay(r);
                prop_assert!(d <= Duration::from_millis(initial.max(max)));
            }
        }
    }
}
