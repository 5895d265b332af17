//! Gaussian tail calibration: how unlikely is the recent average raw score
//! under a normal distribution fitted to the entity's past averages?
//!
//! This is the idea behind HTM's "anomaly likelihood" (Ahmad et al., 2017):
//! a short moving average of raw scores is compared with the mean and spread
//! of the same average over a long history, re-estimated periodically. Raw
//! reconstruction errors are skewed; the fit can be made on their logarithm
//! (`log_scores`), but by default it is made on the raw scores, whose heavy
//! tail then counts as unusual (measured better on NAB's tuning half).
//!
//! The history is not kept value by value: between two fits the values are
//! summed into one block (count, mean, sum of squared deviations), and a fit
//! merges the blocks (Chan et al.'s parallel variance). Per entity that is
//! 8 bytes per `refit_every` scores instead of 8 bytes per score: about
//! 0.7 KiB instead of 69 KB at the defaults (`calibrate::blocks`). The price is that the history
//! slides in whole blocks: a fit covers the newest blocks holding at most
//! `history` scores (8,600 of 8,640 at the defaults).

use super::blocks::{Block, BlockHistory};
use super::{fitted_value, Calibrated, MovingAverage};
use crate::settings::InvalidSetting;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings of [`Likelihood`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LikelihoodConfig {
    /// Raw scores seen before calibrated scores are reported.
    pub warm_up: usize,
    /// How many past averaged scores the distribution is fitted to (at
    /// most; the history slides in whole blocks of `refit_every` scores).
    pub history: usize,
    /// Raw scores in the short moving average that is judged.
    pub short_window: usize,
    /// Refit the distribution every this many scores.
    pub refit_every: usize,
    /// Fit on `ln(raw + 1e-6)` instead of the raw score.
    pub log_scores: bool,
    /// Floor of the fitted standard deviation (in fitted units), so a
    /// perfectly flat history does not make every wiggle an anomaly.
    pub min_std: f64,
}

impl Default for LikelihoodConfig {
    fn default() -> Self {
        Self {
            warm_up: 100,
            history: 8640,
            short_window: 10,
            refit_every: 100,
            log_scores: false,
            min_std: 0.05,
        }
    }
}

impl LikelihoodConfig {
    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = [
            ("warm_up", self.warm_up),
            ("history", self.history),
            ("short_window", self.short_window),
            ("refit_every", self.refit_every),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(InvalidSetting::new(
                    format!("calibration.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if self.warm_up < 2 {
            return Err(InvalidSetting::new(
                "calibration.warm_up",
                "must be at least 2 to fit a spread",
            ));
        }
        if !(self.min_std.is_finite() && self.min_std > 0.0) {
            return Err(InvalidSetting::new(
                "calibration.min_std",
                format!("must be a positive number, not {}", self.min_std),
            ));
        }
        Ok(())
    }
}

/// A running count, mean and M2 (Welford), in f64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, value: f64) {
        self.count += 1.0;
        let delta = value - self.mean;
        self.mean += delta / self.count;
        self.m2 += delta * (value - self.mean);
    }

    /// Chan et al.'s merge of two disjoint sets' moments.
    fn merge(self, other: Moments) -> Moments {
        if other.count == 0.0 {
            return self;
        }
        if self.count == 0.0 {
            return other;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * other.count / count,
            m2: self.m2 + other.m2 + delta * delta * self.count * other.count / count,
        }
    }

    fn block(self) -> Block {
        Block(self.count as u32, self.mean as f32, self.m2 as f32)
    }
}

impl From<Block> for Moments {
    fn from(block: Block) -> Self {
        let Block(count, mean, m2) = block;
        Moments {
            count: count as f64,
            mean: mean as f64,
            m2: m2 as f64,
        }
    }
}

/// One entity's Gaussian-tail calibrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Likelihood {
    /// Shared by the entities of a daemon (see [`share_config`](Self::share_config)).
    config: Arc<LikelihoodConfig>,
    average: MovingAverage,
    /// Closed blocks of history, oldest first; one is closed at each fit.
    blocks: BlockHistory,
    /// History values since the last fit.
    open: Moments,
    /// Values judged but not yet learned (see [`score_only`](Self::score_only)).
    #[serde(default)]
    deferred: Moments,
    seen: usize,
    since_fit: usize,
    mean: f64,
    std: f64,
}

impl Likelihood {
    /// Its settings.
    pub fn config(&self) -> &LikelihoodConfig {
        &self.config
    }

    /// A calibrator with no history.
    pub fn new(config: LikelihoodConfig) -> Self {
        Self {
            average: MovingAverage::new(config.short_window),
            // Blocks hold `refit_every` values (the first `warm_up`), so this
            // is the most there can be, plus one closed before the oldest goes.
            blocks: BlockHistory::with_capacity(
                (config.history / config.refit_every.min(config.warm_up).max(1) + 1).min(1 << 12),
            ),
            open: Moments::default(),
            deferred: Moments::default(),
            seen: 0,
            since_fit: 0,
            mean: 0.0,
            std: 1.0,
            config: Arc::new(config),
        }
    }

    /// Takes `other`'s settings if equal to its own, so that the entities of
    /// a daemon hold one copy.
    pub fn share_config(&mut self, other: &Likelihood) {
        if self.config == other.config {
            self.config = Arc::clone(&other.config);
        }
    }

    /// Takes the next raw score.
    pub fn update(&mut self, raw: f64) -> Calibrated {
        self.step(raw, true)
    }

    /// Takes the next raw score without adding it to the history yet (a
    /// window inside an open alert): it is judged against the history as it
    /// was, and it moves the short average; it is learned at
    /// [`release`](Self::release).
    pub fn score_only(&mut self, raw: f64) -> Calibrated {
        self.step(raw, false)
    }

    /// Adds the values taken by [`score_only`](Self::score_only) to the
    /// history (the alert they were in has resolved).
    pub fn release(&mut self) {
        if self.deferred.count > 0.0 {
            self.since_fit += self.deferred.count as usize;
            self.open = self.open.merge(std::mem::take(&mut self.deferred));
        }
    }

    fn step(&mut self, raw: f64, learn: bool) -> Calibrated {
        // A non-finite raw score is as unusual as it gets (once warmed up);
        // it stays out of the history so it cannot poison the fit.
        let Some(value) = fitted_value(raw, self.config.log_scores) else {
            return if self.seen < self.config.warm_up {
                Calibrated::warming(self.seen, self.config.warm_up)
            } else {
                Calibrated::ready(0.0)
            };
        };
        let averaged = self.average.push(value);
        self.seen += 1;
        let result = if self.seen <= self.config.warm_up {
            Calibrated::warming(self.seen, self.config.warm_up)
        } else {
            if self.seen == self.config.warm_up + 1 || self.since_fit >= self.config.refit_every {
                self.fit();
            }
            Calibrated::ready(upper_tail((averaged - self.mean) / self.std))
        };
        if learn || self.seen <= self.config.warm_up {
            self.open.push(averaged);
            self.since_fit += 1;
        } else {
            self.deferred.push(averaged);
        }
        result
    }

    /// Closes the open block, drops the oldest blocks beyond `history`
    /// values (always keeping the newest), and fits the Gaussian to the rest.
    fn fit(&mut self) {
        if self.open.count > 0.0 {
            self.blocks.push(self.open.block());
            self.open = Moments::default();
        }
        let mut held = self.blocks.values();
        while self.blocks.len() > 1 && held > self.config.history {
            let oldest = self.blocks.pop_front().expect("more than one block");
            held -= oldest.0 as usize;
        }
        let all = self
            .blocks
            .iter()
            .fold(Moments::default(), |all, block| all.merge(block.into()));
        let variance = if all.count > 0.0 {
            all.m2.max(0.0) / all.count
        } else {
            0.0
        };
        self.mean = all.mean;
        self.std = variance.sqrt().max(self.config.min_std);
        self.since_fit = 0;
    }

    /// The fitted mean and standard deviation (in fitted units).
    pub fn fitted(&self) -> (f64, f64) {
        (self.mean, self.std)
    }
}

/// `P(Z > z)` for a standard normal `Z`.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::CalibrationState;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn the_normal_tail_matches_the_table() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-12);
        assert!((upper_tail(1.0) - 0.158_655_253_9).abs() < 1e-9);
        assert!((upper_tail(3.0) - 0.001_349_898_0).abs() < 1e-9);
        assert!((upper_tail(-2.0) - 0.977_249_868_1).abs() < 1e-9);
    }

    #[test]
    fn it_warms_up_then_reports() {
        let mut c = Likelihood::new(LikelihoodConfig {
            warm_up: 5,
            ..Default::default()
        });
        for seen in 1..=5 {
            let out = c.update(1.0 + seen as f64 * 0.01);
            assert_eq!(out.state, CalibrationState::WarmingUp { seen, needed: 5 });
            assert_eq!(out.score, 0.0);
        }
        assert_eq!(c.update(1.0).state, CalibrationState::Ready);
    }

    #[test]
    fn known_gaussian_scores_give_the_expected_tail_probabilities() {
        // Raw scores from N(10, 2): with no smoothing and no log, a score of
        // mean + k·std must get the normal tail of k.
        let mut c = Likelihood::new(LikelihoodConfig {
            warm_up: 20_000,
            history: 20_000,
            short_window: 1,
            refit_every: 1_000_000,
            log_scores: false,
            min_std: 1e-6,
        });
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let normal = Normal::new(10.0, 2.0).unwrap();
        for _ in 0..20_000 {
            c.update(normal.sample(&mut rng));
        }
        let (mean, std) = c.fitted();
        assert_eq!(
            (mean, std),
            (0.0, 1.0),
            "not fitted until the first ready score"
        );
        for (k, expected) in [(0.0, 0.5), (1.0, 0.1587), (2.0, 0.02275), (3.0, 0.00135)] {
            let mut probe = c.clone();
            let out = probe.update(10.0 + 2.0 * k);
            assert!(
                (out.tail_probability - expected).abs() < expected * 0.06,
                "k = {k}: {} vs {expected}",
                out.tail_probability
            );
        }
    }

    #[test]
    fn a_non_finite_score_is_unusual_but_never_ends_the_warm_up() {
        let mut c = Likelihood::new(LikelihoodConfig {
            warm_up: 3,
            ..Default::default()
        });
        let out = c.update(f64::NAN);
        assert_eq!(
            out.state,
            CalibrationState::WarmingUp { seen: 0, needed: 3 }
        );
        for _ in 0..4 {
            c.update(1.0);
        }
        let out = c.update(f64::INFINITY);
        assert_eq!(out.state, CalibrationState::Ready);
        assert_eq!(out.score, 1.0);
    }

    /// Mean and population standard deviation, computed directly.
    fn exact(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, variance.sqrt())
    }

    #[test]
    fn the_block_fit_equals_a_direct_fit_over_the_newest_whole_blocks() {
        // history 250 with blocks of 100: each fit must cover exactly the
        // newest 200 values (two whole blocks), as a direct fit would.
        let config = LikelihoodConfig {
            warm_up: 100,
            history: 250,
            short_window: 1,
            refit_every: 100,
            log_scores: false,
            min_std: 1e-9,
        };
        let mut c = Likelihood::new(config);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let normal = Normal::new(-4.0, 1.5).unwrap();
        let mut values = Vec::new();
        let mut fits = 0;
        for i in 0..2_000 {
            // A drifting level, so a fit over the wrong values would show.
            let value = normal.sample(&mut rng) + i as f64 * 0.01;
            let before = c.fitted();
            c.update(value);
            if c.fitted() != before {
                fits += 1;
                let covered = &values[values.len().saturating_sub(200)..];
                let (mean, std) = exact(covered);
                let (fitted_mean, fitted_std) = c.fitted();
                assert!((fitted_mean - mean).abs() < 1e-5, "{fitted_mean} vs {mean}");
                assert!(
                    (fitted_std - std).abs() < 1e-5 * std,
                    "{fitted_std} vs {std}"
                );
            }
            values.push(value);
        }
        assert_eq!(fits, 19, "a fit after the warm-up, then every 100 values");
    }

    #[test]
    fn the_history_costs_a_bounded_number_of_blocks() {
        let mut c = Likelihood::new(LikelihoodConfig::default());
        let capacity = c.blocks.capacity();
        assert_eq!(capacity, 87, "8640 / 100 + 1 blocks");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let normal = Normal::new(0.0, 1.0).unwrap();
        for _ in 0..50_000 {
            let value: f64 = normal.sample(&mut rng);
            c.update(value.exp());
        }
        assert_eq!(c.blocks.len(), 86, "8,600 values in whole blocks of 100");
        assert_eq!(c.blocks.values(), 8_600);
        assert_eq!(c.blocks.capacity(), capacity, "never grown");
        // Restored from a checkpoint (no spare room), it grows one block at a time.
        let mut restored: Likelihood =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&c).unwrap()).unwrap();
        for _ in 0..10_000 {
            let value: f64 = normal.sample(&mut rng);
            restored.update(value.exp());
        }
        assert!(
            restored.blocks.capacity() <= capacity,
            "{}",
            restored.blocks.capacity()
        );
    }

    #[test]
    fn a_flat_history_does_not_make_every_wiggle_an_anomaly() {
        let mut c = Likelihood::new(LikelihoodConfig {
            warm_up: 50,
            short_window: 1,
            log_scores: true,
            ..Default::default()
        });
        for _ in 0..60 {
            c.update(0.01);
        }
        // 1 % above a perfectly flat history: ln(1.01) = 0.01 < min_std 0.05.
        assert!(c.update(0.0101).score < 0.1);
        // Ten times the usual error is unusual.
        let spike = c.update(0.1).score;
        assert!(spike > 0.9, "{spike}");
    }
}
