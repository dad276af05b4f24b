//! The workspace's one exponential back-off: a pause that doubles after every failure up to
//! a cap and starts over after a success, and the jitter that keeps clients refused together
//! from retrying in lock-step.
//!
//! It only computes pauses; callers sleep (with `std::thread::sleep` or tokio) as their
//! runtime demands, so the daemon, the dqlite client, the agent and the synchronous
//! simulator share it.
#![forbid(unsafe_code)]

use std::time::Duration;

/// Exponential back-off between failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause, and the pause again after a [`reset`](Self::reset).
    initial: Duration,
    /// The longest pause.
    max: Duration,
    /// The pause the next failure gets.
    next: Duration,
}

impl Backoff {
    /// A back-off whose first pause is `initial`, doubling up to `max` (an `initial` above
    /// `max` is taken once, then `max`).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The pause before the next attempt; each call doubles the following one up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The pause [`next_delay`](Self::next_delay) would return, without taking it: for a
    /// caller that first checks the pause still fits before a deadline.
    pub fn upcoming(&self) -> Duration {
        self.next
    }

    /// The pause after `failures` failures in a row since the last reset, without state:
    /// `initial * 2^failures`, capped (for a caller that keeps only a failure count).
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.initial;
        }
        // Past 2^31 every pause has long reached any cap a caller would choose.
        let factor = 1u32 << failures.min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// After a success, start again from the shortest pause.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A pause between half and all of `pause`, so that clients refused together (several
/// writers finding a database locked) do not retry in lock-step.
pub fn jitter(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has fresh keys: its hash of nothing is a cheap random number.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    jitter_with(pause, random)
}

/// [`jitter`] with the random number given: `pause / 2` plus `random % 1024` 1024ths of the
/// other half.
fn jitter_with(pause: Duration, random: u64) -> Duration {
    let half = pause / 2;
    half + half.mul_f64((random % 1024) as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The first `n` pauses of a fresh back-off.
    fn sequence(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        (0..n).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn pauses_double_up_to_the_cap() {
        let check = |initial: u64, max: u64, expected: &[u64]| {
            let mut backoff = Backoff::new(ms(initial), ms(max));
            let expected: Vec<Duration> = expected.iter().map(|&n| ms(n)).collect();
            assert_eq!(
                sequence(&mut backoff, expected.len()),
                expected,
                "{initial} {max}"
            );
        };
        check(500, 3_000, &[500, 1_000, 2_000, 3_000, 3_000]);
        check(10, 250, &[10, 20, 40, 80, 160, 250, 250]);
        check(25, 1_000, &[25, 50, 100, 200, 400, 800, 1_000]);
        check(100, 100, &[100, 100, 100]);
        // An initial pause above the cap is taken once.
        check(5_000, 1_000, &[5_000, 1_000, 1_000]);
        check(0, 1_000, &[0, 0, 0]);
    }

    #[test]
    fn a_huge_cap_saturates_instead_of_overflowing() {
        let mut backoff = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        backoff.next_delay();
        assert_eq!(backoff.next_delay(), Duration::from_secs(u64::MAX / 2 * 2));
        assert_eq!(backoff.next_delay(), Duration::MAX);
        assert_eq!(backoff.next_delay(), Duration::MAX);
    }

    #[test]
    fn reset_starts_over_from_the_first_pause() {
        let mut backoff = Backoff::new(ms(500), ms(3_000));
        sequence(&mut backoff, 5);
        backoff.reset();
        assert_eq!(
            sequence(&mut backoff, 3),
            vec![ms(500), ms(1_000), ms(2_000)]
        );
    }

    #[test]
    fn upcoming_shows_the_next_pause_without_taking_it() {
        let mut backoff = Backoff::new(ms(20), ms(250));
        assert_eq!(backoff.upcoming(), ms(20));
        assert_eq!(backoff.upcoming(), ms(20));
        assert_eq!(backoff.next_delay(), ms(20));
        assert_eq!(backoff.upcoming(), ms(40));
    }

    #[test]
    fn delay_after_matches_the_sequence() {
        let check = |initial: u64, max: u64| {
            let backoff = Backoff::new(ms(initial), ms(max));
            let mut stepped = backoff.clone();
            for failures in 0..40 {
                assert_eq!(
                    backoff.delay_after(failures),
                    stepped.next_delay(),
                    "{initial} {max} after {failures}"
                );
            }
        };
        check(500, 3_000);
        check(1, 300_000);
        check(7, 7);
        check(900, 100);
        assert_eq!(
            Backoff::new(ms(1), Duration::MAX).delay_after(u32::MAX),
            ms(1 << 31)
        );
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        let check = |pause: u64, random: u64, expected: u64| {
            assert_eq!(
                jitter_with(ms(pause), random),
                ms(expected),
                "{pause} {random}"
            );
        };
        check(100, 0, 50);
        check(100, 512, 75);
        check(100, 1024, 50);
        check(2048, 1023, 2047);
        check(0, 77, 0);
        for _ in 0..200 {
            let pause = jitter(ms(80));
            assert!(pause >= ms(40) && pause <= ms(80), "{pause:?}");
        }
    }
}
