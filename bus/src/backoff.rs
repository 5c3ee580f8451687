//! Spin-then-yield waiting used before a consumer or requester parks on a condition
//! variable.
//!
//! Why: parking costs a futex wake on the producer side and a context switch on the consumer
//! side (several µs each on the project's 2-core machines), which dwarfs a mailbox push
//! (tens of ns). Under load the next event usually arrives within microseconds, so a
//! consumer that has just drained its mailbox first spins briefly, then yields its core
//! (to the producer, if it is waiting for one), and parks only if still nothing came. When
//! idle this costs a few tens of µs of CPU per wait, then nothing.

use std::hint::spin_loop;
use std::thread;
use std::time::Instant;

/// Busy-spin rounds (2^0 … 2^SPIN_ROUNDS-1 pause instructions, < 1 µs in total).
const SPIN_ROUNDS: u32 = 7;
/// `yield_now` rounds after spinning.
const YIELD_ROUNDS: u32 = 40;

/// Polls `ready` with backoff until it returns true (→ true), the backoff is exhausted, or
/// `deadline` passes (→ false; the caller then parks or gives up).
pub(crate) fn spin_until(deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
    for round in 0..SPIN_ROUNDS {
        if ready() {
            return true;
        }
        for _ in 0..(1u32 << round) {
            spin_loop();
        }
    }
    for _ in 0..YIELD_ROUNDS {
        if ready() {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        thread::yield_now();
    }
    ready()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stops_when_ready_or_exhausted() {
        let mut n = 0;
        assert!(spin_until(None, || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        assert!(!spin_until(None, || false));
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        let mut calls = 0;
        assert!(!spin_until(past, || {
            calls += 1;
            false
        }));
        assert!(
            calls <= SPIN_ROUNDS as usize + 1,
            "deadline cuts the yield phase"
        );
    }
}
