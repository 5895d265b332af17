//! Rate-limited logging: a condition that repeats (a retried delivery, a
//! skipped replay) is logged at most once per period, with how many times
//! it happened since the last line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts occurrences and says when one may be logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(ThrottleState::default()),
        }
    }

    /// Counts `count` occurrences at `now`. Returns how many to report
    /// (those since the last line, these included) when a line is due, else
    /// `None`.
    pub fn count(&self, count: u64, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unlogged += count;
        let due = state
            .last
            .is_none_or(|last| now.duration_since(last) >= self.every);
        if due && state.unlogged > 0 {
            state.last = Some(now);
            Some(std::mem::take(&mut state.unlogged))
        } else {
            None
        }
    }

    /// What was counted and not yet reported (to log at the end).
    pub fn take_unlogged(&self) -> u64 {
        std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unlogged,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_carries_the_count_since_the_last() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.count(1, t0), Some(1), "the first is logged");
        for i in 1..=99 {
            assert_eq!(throttle.count(1, t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(throttle.count(1, t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(throttle.count(0, t0 + Duration::from_secs(30)), None);
        assert_eq!(throttle.count(2, t0 + Duration::from_secs(31)), Some(2));
        assert_eq!(throttle.count(3, t0 + Duration::from_secs(32)), None);
        assert_eq!(throttle.take_unlogged(), 3);
    }
}
