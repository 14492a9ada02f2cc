//! Exponential backoff with jitter, and the bounded [`RetryPolicy`] every retry loop of the
//! library uses (lease renewals, checkpoint writes, lease table creation, the first shard sync).

#[cfg(any(test, feature = "testing"))]
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Duration;

#[cfg(any(test, feature = "testing"))]
thread_local! {
    static JITTER: std::cell::RefCell<Option<StdRng>> = const { std::cell::RefCell::new(None) };
}

/// Make the jitter of every backoff on this thread come from a generator seeded with `seed`
/// (deterministic simulation on a current-thread runtime). `None` goes back to OS entropy.
/// Only in builds with the `testing` feature: see `kinesis_client::testing::seed_thread_jitter`.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn seed_thread_jitter(seed: Option<u64>) {
    JITTER.with(|j| *j.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

/// A random number in `[0, 1)` from the seeded thread generator, if any, else from entropy.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn jitter_unit() -> f64 {
    JITTER.with(|j| match j.borrow_mut().as_mut() {
        Some(rng) => rng.random::<f64>(),
        None => rand::random::<f64>(),
    })
}

/// A random number in `[0, 1)` from OS entropy.
#[cfg(not(any(test, feature = "testing")))]
pub(crate) fn jitter_unit() -> f64 {
    rand::random::<f64>()
}

/// An endless iterator of delays: `base * 2^n`, capped at `max`, each multiplied by a random
/// factor in `[1 - jitter, 1]` ("equal jitter" keeps retries from synchronising across workers).
/// (E.g. 100 ms, 200 ms, 400 ms, … without jitter: see the tests.)
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter: f64,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `max`, with 50% jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            jitter: 0.5,
        }
    }

    /// The same schedule without randomness (for tests and deterministic simulation).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// Start over from `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.attempt = self.attempt.saturating_add(1);
        let raw = self.base.saturating_mul(factor).min(self.max);
        if self.jitter == 0.0 {
            return Some(raw);
        }
        let scale = 1.0 - self.jitter * jitter_unit();
        Some(raw.mul_f64(scale))
    }
}

/// How a failed operation is retried: at most `attempts` attempts in all, with a [`Backoff`]
/// from `base` to `max` between them (see the test `a_policy_allows_its_attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The most attempts, the first one included (at least 1).
    pub attempts: u32,
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// At most `attempts` attempts, waiting from `base` doubling up to `max` between them.
    pub const fn new(attempts: u32, base: Duration, max: Duration) -> Self {
        RetryPolicy {
            attempts,
            base,
            max,
        }
    }

    /// The retries of one operation whose first attempt is about to start.
    pub fn start(&self) -> Retry {
        Retry {
            attempts: self.attempts.max(1),
            attempt: 1,
            backoff: Backoff::new(self.base, self.max),
        }
    }
}

/// The state of one operation retried under a [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Retry {
    attempts: u32,
    attempt: u32,
    backoff: Backoff,
}

impl Retry {
    /// The same retries without randomness in the delays.
    pub fn without_jitter(mut self) -> Self {
        self.backoff = self.backoff.without_jitter();
        self
    }

    /// The attempt under way (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// True while the attempt under way is not the last one allowed.
    pub fn may_retry(&self) -> bool {
        self.attempt < self.attempts
    }

    /// The attempt under way failed: how long to wait before the next one, or `None` when it
    /// was the last one allowed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if !self.may_retry() {
            return None;
        }
        self.attempt += 1;
        self.backoff.next()
    }

    /// Start the next attempt at once, without waiting (e.g. after a conflict explained by
    /// our own write); `false` when the attempt under way was the last one allowed.
    pub fn retry_now(&mut self) -> bool {
        if !self.may_retry() {
            return false;
        }
        self.attempt += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_allows_its_attempts() {
        let policy = RetryPolicy::new(3, Duration::from_millis(50), Duration::from_millis(200));
        let mut retry = policy.start().without_jitter();
        assert_eq!(retry.next_delay(), Some(Duration::from_millis(50))); // before the 2nd attempt
        assert_eq!(retry.next_delay(), Some(Duration::from_millis(100))); // before the 3rd
        assert_eq!(retry.next_delay(), None); // the 3rd was the last
    }

    #[test]
    fn doubles_until_capped_and_resets() {
        let mut b =
            Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).without_jitter();
        let got: Vec<u64> = b.by_ref().take(5).map(|d| d.as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn retry_policy_bounds_attempts_and_backs_off() {
        let policy = RetryPolicy::new(4, Duration::from_millis(100), Duration::from_millis(250));
        let mut retry = policy.start().without_jitter();
        assert_eq!(retry.attempt(), 1);
        assert!(retry.retry_now());
        assert_eq!(retry.next_delay(), Some(Duration::from_millis(100)));
        assert_eq!(retry.next_delay(), Some(Duration::from_millis(200)));
        assert_eq!(retry.attempt(), 4);
        assert!(!retry.may_retry());
        assert_eq!(retry.next_delay(), None);
        assert!(!retry.retry_now());
    }

    #[test]
    fn seeded_jitter_repeats() {
        let run = || {
            seed_thread_jitter(Some(42));
            let v: Vec<Duration> = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
                .take(8)
                .collect();
            seed_thread_jitter(None);
            v
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        for d in b.take(200) {
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_millis(1000),
                "{d:?}"
            );
        }
    }
}
