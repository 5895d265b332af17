//! A novelty gate: keeps a calibrated score only where it sets a new high
//! over the previous `rows` scores, and reports 0 elsewhere.
//!
//! One event keeps the calibrated score high for many rows; a consumer that
//! counts every high row (NAB charges each one outside a labelled window as a
//! false positive) wants the rising edges only. The gate looks only at past
//! scores, so it is streaming.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Sliding-maximum gate over the previous `rows` scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoveltyGate {
    rows: usize,
    /// (row index, score), scores decreasing: the sliding maximum's candidates.
    candidates: VecDeque<(u64, f64)>,
    index: u64,
}

impl NoveltyGate {
    /// A gate over the previous `rows` scores (`rows = 0` passes every score through).
    pub fn new(rows: usize) -> Self {
        Self {
            rows,
            candidates: VecDeque::new(),
            index: 0,
        }
    }

    /// The number of previous scores it compares with.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Takes the next score; returns it if it beats every one of the previous `rows`, else 0.
    pub fn apply(&mut self, score: f64) -> f64 {
        if self.rows == 0 {
            return score;
        }
        let index = self.index;
        self.index += 1;
        while self
            .candidates
            .front()
            .is_some_and(|&(i, _)| i + (self.rows as u64) < index)
        {
            self.candidates.pop_front();
        }
        let previous_max = self.candidates.front().map_or(f64::NEG_INFINITY, |c| c.1);
        while self.candidates.back().is_some_and(|&(_, s)| s <= score) {
            self.candidates.pop_back();
        }
        // Grow one at a time, and give back room a burst left: spare room
        // would stay, in every entity.
        let len = self.candidates.len();
        if self.candidates.capacity() > 2 * len + 8 {
            self.candidates.shrink_to(len + 4);
        }
        self.candidates.reserve_exact(1);
        self.candidates.push_back((index, score));
        if score > previous_max {
            score
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_highs_over_the_lookback_pass() {
        let mut gate = NoveltyGate::new(3);
        let out: Vec<f64> = [0.2, 0.5, 0.4, 0.5, 0.6, 0.1, 0.1, 0.1, 0.1, 0.3]
            .iter()
            .map(|&s| gate.apply(s))
            .collect();
        // 0.4 and the second 0.5 do not beat the 0.5 before them; 0.1s do not
        // beat 0.6 until it is more than 3 rows old; 0.3 beats the last three 0.1s.
        assert_eq!(out, [0.2, 0.5, 0.0, 0.0, 0.6, 0.0, 0.0, 0.0, 0.0, 0.3]);
    }

    #[test]
    fn room_left_by_a_burst_is_given_back() {
        let mut gate = NoveltyGate::new(1_000);
        // A falling run keeps every score as a candidate...
        for i in 0..200 {
            gate.apply(1.0 - i as f64 / 1_000.0);
        }
        assert_eq!(gate.candidates.len(), 200);
        // ...and one new high replaces them all.
        gate.apply(2.0);
        gate.apply(1.5);
        assert_eq!(gate.candidates.len(), 2);
        assert!(
            gate.candidates.capacity() <= 16,
            "{}",
            gate.candidates.capacity()
        );
    }

    #[test]
    fn a_zero_lookback_passes_everything() {
        let mut gate = NoveltyGate::new(0);
        assert_eq!(gate.apply(0.3), 0.3);
        assert_eq!(gate.apply(0.3), 0.3);
    }

    #[test]
    fn the_gate_matches_a_brute_force_sliding_maximum() {
        let scores: Vec<f64> = (0..500)
            .map(|i| ((i * 7919) % 101) as f64 / 100.0)
            .collect();
        for rows in [1, 5, 50] {
            let mut gate = NoveltyGate::new(rows);
            for (i, &s) in scores.iter().enumerate() {
                let previous = scores[i.saturating_sub(rows)..i]
                    .iter()
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let expected = if s > previous { s } else { 0.0 };
                assert_eq!(gate.apply(s), expected, "rows {rows}, index {i}");
            }
        }
    }
}
