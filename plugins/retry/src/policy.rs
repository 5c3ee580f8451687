//! Retry policies: how many times, and how long to wait before each attempt.
//!
//! The wait before attempt `n` (1-based) is `initial_delay_ms × multiplier^(n-1)`,
//! capped at `max_delay_ms`, then spread by `jitter` (0.2: ±20 %). The spread is derived
//! from the operation's idempotency key and the attempt number rather than a random
//! generator, so that operations failing together do not retry together, while one
//! operation's schedule is reproducible (and testable).

use serde::{Deserialize, Serialize};

/// One policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Attempts after the original one; then the operation becomes a dead letter.
    pub max_attempts: u32,
    /// Wait before the first attempt, ms.
    pub initial_delay_ms: u64,
    /// Longest wait, ms.
    pub max_delay_ms: u64,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
    /// Spread of the wait, 0 to 1 (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay_ms: 1_000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// FNV-1a, for a spread that is stable per key and attempt.
fn hash(key: &str, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Policy {
    /// Checks the values.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "{what}: multiplier must be at least 1, got {}",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "{what}: jitter must be between 0 and 1, got {}",
                self.jitter
            ));
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return Err(format!(
                "{what}: max_delay_ms ({}) is below initial_delay_ms ({})",
                self.max_delay_ms, self.initial_delay_ms
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt` (1-based) of the operation `key`, ms.
    pub fn delay_ms(&self, key: &str, attempt: u32) -> u64 {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (self.initial_delay_ms as f64 * self.multiplier.powi(exp))
            .min(self.max_delay_ms as f64);
        // A point in [-1, 1) from the key and the attempt.
        let unit = (hash(key, attempt) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let spread = base * self.jitter * unit;
        (base + spread).max(0.0).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_then_stop_at_the_cap() {
        let p = Policy {
            jitter: 0.0,
            ..Policy::default()
        };
        let waits: Vec<u64> = (1..=8).map(|n| p.delay_ms("k", n)).collect();
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
    }

    #[test]
    fn jitter_spreads_keys_within_bounds_and_is_stable() {
        let p = Policy::default();
        let waits: Vec<u64> = (0..200).map(|i| p.delay_ms(&format!("op{i}"), 1)).collect();
        assert!(waits.iter().all(|w| (800..=1_200).contains(w)), "{waits:?}");
        let distinct: std::collections::BTreeSet<u64> = waits.iter().copied().collect();
        assert!(distinct.len() > 50, "spread: {}", distinct.len());
        assert_eq!(p.delay_ms("op1", 3), p.delay_ms("op1", 3));
    }

    #[test]
    fn absurd_values_are_refused() {
        let bad = Policy {
            multiplier: 0.5,
            ..Policy::default()
        };
        assert!(bad.validate("default").unwrap_err().contains("multiplier"));
        let bad = Policy {
            jitter: 2.0,
            ..Policy::default()
        };
        assert!(bad.validate("x").unwrap_err().contains("jitter"));
        let bad = Policy {
            initial_delay_ms: 10,
            max_delay_ms: 1,
            ..Policy::default()
        };
        assert!(bad.validate("x").unwrap_err().contains("max_delay_ms"));
    }
}
