//! Calibration: turns an entity's raw reconstruction scores into a score in
//! [0, 1] that means the same on every series, online and per entity.
//!
//! Both methods estimate the *tail probability* `p` of the current (smoothed)
//! raw score under the distribution of the entity's past scores, and report
//! `score = -log10(p) / 10`, clamped to [0, 1]: a score of 0.4 means "as
//! unusual as a 1-in-10,000 event", whatever the series. A threshold is thus a
//! target false-alarm rate per row: `threshold = -log10(rate) / 10`.
//!
//! - [`likelihood`]: a Gaussian fitted to the recent history of smoothed
//!   scores (the idea of HTM's anomaly likelihood).
//! - [`spot`]: peaks over threshold, a generalised Pareto tail fitted to the
//!   largest past scores (SPOT, Siffer et al., KDD 2017).
//!
//! Until a calibrator has seen enough scores it is warming up: it reports
//! score 0 and says so ([`CalibrationState::WarmingUp`]).

mod blocks;
pub mod likelihood;
pub mod novelty;
pub mod spot;

pub use likelihood::{Likelihood, LikelihoodConfig};
pub use novelty::NoveltyGate;
pub use spot::{Spot, SpotConfig};

use crate::settings::InvalidSetting;
use serde::{Deserialize, Serialize};

/// Whether a calibrator has enough history to mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CalibrationState {
    /// Too little history: scores are reported as 0; `seen` of `needed` raw scores so far.
    WarmingUp {
        /// Raw scores seen.
        seen: usize,
        /// Raw scores needed before calibrated scores are reported.
        needed: usize,
    },
    /// Calibrated.
    Ready,
}

/// One calibrated score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    /// Score in [0, 1]: `-log10(tail probability) / 10`.
    pub score: f64,
    /// Tail probability of the (smoothed) raw score under past scores.
    pub tail_probability: f64,
    /// Warm-up or ready.
    pub state: CalibrationState,
}

impl Calibrated {
    fn warming(seen: usize, needed: usize) -> Self {
        Self {
            score: 0.0,
            tail_probability: 1.0,
            state: CalibrationState::WarmingUp { seen, needed },
        }
    }

    fn ready(tail_probability: f64) -> Self {
        Self {
            score: score_of_tail(tail_probability),
            tail_probability,
            state: CalibrationState::Ready,
        }
    }
}

/// The calibrated score of a tail probability: `-log10(p) / 10` in [0, 1].
pub fn score_of_tail(tail_probability: f64) -> f64 {
    let p = tail_probability.clamp(1e-10, 1.0);
    (-p.log10() / 10.0).clamp(0.0, 1.0)
}

/// The score threshold that corresponds to a per-row false-alarm rate.
pub fn threshold_for_rate(rate: f64) -> f64 {
    score_of_tail(rate)
}

/// The fewest scored windows a calibration may start from
/// (`calibration.warm_up`): a Gaussian or a tail fitted to fewer is noise,
/// and a threshold on it flags normal rows by the dozen.
pub const MIN_WARM_UP: usize = 30;

/// Which calibration method, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum CalibrationConfig {
    /// Gaussian tail of the recent smoothed scores.
    Likelihood(LikelihoodConfig),
    /// Generalised Pareto tail over a high quantile.
    Spot(SpotConfig),
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self::Likelihood(LikelihoodConfig::default())
    }
}

impl CalibrationConfig {
    /// A fresh calibrator for one entity.
    pub fn build(&self) -> Calibrator {
        match self {
            Self::Likelihood(config) => Calibrator::Likelihood(Likelihood::new(config.clone())),
            Self::Spot(config) => Calibrator::Spot(Box::new(Spot::new(config.clone()))),
        }
    }

    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.warm_up() < MIN_WARM_UP {
            return Err(InvalidSetting::new("calibration.warm_up", format!("must be at least {MIN_WARM_UP}, not {}: a tail fitted to fewer scored windows is noise (until an entity has warm_up windows it is warming up and raises no alert)",
                self.warm_up()
            )));
        }
        match self {
            Self::Likelihood(config) => config.validate(),
            Self::Spot(config) => config.validate(),
        }
    }

    /// Scored windows an entity needs before its scores are calibrated.
    pub fn warm_up(&self) -> usize {
        match self {
            Self::Likelihood(config) => config.warm_up,
            Self::Spot(config) => config.warm_up,
        }
    }
}

/// One entity's calibrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Calibrator {
    /// See [`Likelihood`].
    Likelihood(Likelihood),
    /// See [`Spot`] (boxed: it is larger, and every entity holds a calibrator).
    Spot(Box<Spot>),
}

impl Calibrator {
    /// Takes `other`'s settings where equal to its own, so that the entities
    /// of a daemon hold one copy (the likelihood calibrator's; SPOT is rare
    /// and boxed).
    pub fn share_settings(&mut self, other: &Calibrator) {
        if let (Calibrator::Likelihood(own), Calibrator::Likelihood(other)) = (self, other) {
            own.share_config(other);
        }
    }

    /// Takes the next raw score (in time order) and returns its calibrated score.
    pub fn update(&mut self, raw: f64) -> Calibrated {
        match self {
            Self::Likelihood(c) => c.update(raw),
            Self::Spot(c) => c.update(raw),
        }
    }

    /// Takes the next raw score and judges it without learning from it yet
    /// (a window inside an open alert, so a long anomaly is not absorbed as
    /// the new normal while it lasts).
    pub fn score_only(&mut self, raw: f64) -> Calibrated {
        match self {
            Self::Likelihood(c) => c.score_only(raw),
            Self::Spot(c) => c.score_only(raw),
        }
    }

    /// Learns the scores taken by [`score_only`](Self::score_only) since the
    /// last release (the alert resolved): the episode becomes part of what
    /// the entity has shown, as it would have without the hold. SPOT keeps
    /// its rule instead: it never learns a score beyond its risk level.
    pub fn release(&mut self) {
        if let Self::Likelihood(c) = self {
            c.release();
        }
    }
}

/// The value a calibrator fits: `ln(raw + 1e-6)` or the raw score; `None`
/// for a non-finite score (which calibrators report as maximally unusual).
pub(crate) fn fitted_value(raw: f64, log_scores: bool) -> Option<f64> {
    if !raw.is_finite() {
        return None;
    }
    let value = if log_scores {
        (raw.max(0.0) + 1e-6).ln()
    } else {
        raw
    };
    value.is_finite().then_some(value)
}

/// A fixed-size moving average of the last `len` values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MovingAverage {
    values: std::collections::VecDeque<f64>,
    len: usize,
    sum: f64,
    pushes: u64,
}

impl MovingAverage {
    pub(crate) fn new(len: usize) -> Self {
        let len = len.max(1);
        Self {
            values: std::collections::VecDeque::with_capacity(len),
            len,
            sum: 0.0,
            pushes: 0,
        }
    }

    /// Adds a value and returns the mean of the last `len` values.
    pub(crate) fn push(&mut self, value: f64) -> f64 {
        if self.values.len() == self.len {
            self.sum -= self.values.pop_front().unwrap_or(0.0);
        }
        self.values.push_back(value);
        self.sum += value;
        self.pushes += 1;
        // Re-sum now and then so rounding never accumulates.
        if self.pushes.is_multiple_of(4096) {
            self.sum = self.values.iter().sum();
        }
        self.sum / self.values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_map_tail_probabilities_to_a_log_scale() {
        assert_eq!(score_of_tail(1.0), 0.0);
        assert!((score_of_tail(1e-4) - 0.4).abs() < 1e-12);
        assert_eq!(score_of_tail(0.0), 1.0);
        assert!((threshold_for_rate(1e-5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_moving_average_covers_the_last_values() {
        let mut m = MovingAverage::new(3);
        assert_eq!(m.push(3.0), 3.0);
        assert_eq!(m.push(6.0), 4.5);
        assert_eq!(m.push(9.0), 6.0);
        assert_eq!(m.push(0.0), 5.0);
    }

    #[test]
    fn the_config_names_unknown_keys() {
        let error = serde_json::from_str::<CalibrationConfig>(
            r#"{"method": "likelihood", "histroy": 100}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("histroy"), "{error}");
    }
}
