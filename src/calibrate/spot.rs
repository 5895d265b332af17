//! Peaks-over-threshold calibration (SPOT; Siffer et al., "Anomaly Detection
//! in Streams with Extreme Value Theory", KDD 2017).
//!
//! The warm-up scores give an initial threshold `t` (a high quantile); the
//! excesses over `t` are fitted with a generalised Pareto distribution, which
//! extrapolates the tail: `P(X > x) = (N_t / n) (1 + γ (x - t) / σ)^(-1/γ)`.
//! Scores whose tail probability is below `risk` are anomalies and are kept
//! out of the fit; every other score updates it. With `drift_window > 0` the
//! calibrator judges the score minus the mean of the recent normal scores
//! (DSPOT), which follows slow drifts.

use super::{fitted_value, Calibrated, MovingAverage};
use crate::settings::InvalidSetting;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Settings of [`Spot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpotConfig {
    /// Raw scores used for the initial fit before calibrated scores are reported.
    pub warm_up: usize,
    /// Quantile of the warm-up scores that becomes the initial threshold `t`.
    pub initial_quantile: f64,
    /// Scores with a tail probability below this are anomalies: kept out of the fit.
    pub risk: f64,
    /// Raw scores in the moving average that is judged (1 = none).
    pub short_window: usize,
    /// Recent normal scores whose mean is subtracted (0 = no drift correction).
    pub drift_window: usize,
    /// Fit on `ln(raw + 1e-6)` instead of the raw score.
    pub log_scores: bool,
    /// The fit uses at most this many of the latest peaks.
    pub max_peaks: usize,
}

impl Default for SpotConfig {
    fn default() -> Self {
        Self {
            warm_up: 100,
            initial_quantile: 0.9,
            risk: 1e-4,
            short_window: 1,
            drift_window: 0,
            log_scores: true,
            max_peaks: 2000,
        }
    }
}

impl SpotConfig {
    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.warm_up < 10 {
            return Err(InvalidSetting::new(
                "calibration.warm_up",
                "must be at least 10 for a tail fit",
            ));
        }
        if !(self.initial_quantile > 0.5 && self.initial_quantile < 1.0) {
            return Err(InvalidSetting::new(
                "calibration.initial_quantile",
                format!("must be in (0.5, 1), not {}", self.initial_quantile),
            ));
        }
        if !(self.risk > 0.0 && self.risk < 1.0) {
            return Err(InvalidSetting::new(
                "calibration.risk",
                format!("must be in (0, 1), not {}", self.risk),
            ));
        }
        if self.short_window == 0 {
            return Err(InvalidSetting::new(
                "calibration.short_window",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One entity's peaks-over-threshold calibrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spot {
    config: SpotConfig,
    average: MovingAverage,
    drift: VecDeque<f64>,
    drift_sum: f64,
    warm_up: Vec<f64>,
    /// The sorted warm-up sample: the empirical tail below `t`.
    sample: Vec<f64>,
    threshold: f64,
    /// Normal scores judged so far (n).
    normal: usize,
    /// Excesses over the threshold seen (N_t).
    peaks: usize,
    /// The latest `max_peaks` excesses, which the tail is fitted to.
    recent_peaks: VecDeque<f64>,
    /// Peaks added since the last fit.
    unfitted: usize,
    gamma: f64,
    sigma: f64,
}

impl Spot {
    /// Its settings.
    pub fn config(&self) -> &SpotConfig {
        &self.config
    }

    /// A calibrator with no history.
    pub fn new(config: SpotConfig) -> Self {
        Self {
            average: MovingAverage::new(config.short_window),
            drift: VecDeque::new(),
            drift_sum: 0.0,
            warm_up: Vec::with_capacity(config.warm_up),
            sample: Vec::new(),
            threshold: 0.0,
            normal: 0,
            peaks: 0,
            recent_peaks: VecDeque::new(),
            unfitted: 0,
            gamma: 0.0,
            sigma: 1.0,
            config,
        }
    }

    /// Takes the next raw score.
    pub fn update(&mut self, raw: f64) -> Calibrated {
        self.step(raw, true)
    }

    /// Takes the next raw score without learning from it (a window inside
    /// an open alert): it is judged, and it moves the short average, but
    /// it adds no peak and does not move the drift baseline.
    pub fn score_only(&mut self, raw: f64) -> Calibrated {
        self.step(raw, false)
    }

    fn step(&mut self, raw: f64, learn: bool) -> Calibrated {
        let Some(value) = fitted_value(raw, self.config.log_scores) else {
            return if self.sample.is_empty() {
                Calibrated::warming(self.warm_up.len(), self.config.warm_up)
            } else {
                Calibrated::ready(0.0)
            };
        };
        let smoothed = self.average.push(value);
        let judged = smoothed - self.drift_mean();
        if self.sample.is_empty() {
            self.warm_up.push(judged);
            self.remember_normal(smoothed);
            let seen = self.warm_up.len();
            if seen == self.config.warm_up {
                self.initialise();
            }
            return Calibrated::warming(seen, self.config.warm_up);
        }
        let tail = self.tail_probability(judged);
        if learn && tail >= self.config.risk {
            self.normal += 1;
            if judged > self.threshold {
                self.add_peak(judged - self.threshold);
            }
            self.remember_normal(smoothed);
        }
        Calibrated::ready(tail)
    }

    fn drift_mean(&self) -> f64 {
        if self.config.drift_window == 0 || self.drift.is_empty() {
            0.0
        } else {
            self.drift_sum / self.drift.len() as f64
        }
    }

    fn remember_normal(&mut self, value: f64) {
        if self.config.drift_window == 0 {
            return;
        }
        if self.drift.len() == self.config.drift_window {
            self.drift_sum -= self.drift.pop_front().unwrap_or(0.0);
        }
        self.drift.push_back(value);
        self.drift_sum += value;
    }

    fn initialise(&mut self) {
        // The first fit happens once all warm-up peaks are in.
        let mut sample = std::mem::take(&mut self.warm_up);
        sample.sort_by(f64::total_cmp);
        let index =
            ((sample.len() as f64 * self.config.initial_quantile) as usize).min(sample.len() - 1);
        self.threshold = sample[index];
        self.normal = sample.len();
        for &v in &sample {
            if v > self.threshold {
                self.peaks += 1;
                self.recent_peaks.push_back(v - self.threshold);
            }
        }
        while self.recent_peaks.len() > self.config.max_peaks {
            self.recent_peaks.pop_front();
        }
        self.fit();
        self.sample = sample;
    }

    fn add_peak(&mut self, excess: f64) {
        self.peaks += 1;
        if self.recent_peaks.len() == self.config.max_peaks {
            self.recent_peaks.pop_front();
        }
        self.recent_peaks.push_back(excess);
        self.unfitted += 1;
        // Refit when the peaks have grown by 5 % (every peak while they are few).
        if self.unfitted * 20 >= self.recent_peaks.len() {
            self.fit();
        }
    }

    /// Maximum-likelihood fit of the generalised Pareto distribution
    /// (Grimshaw's reduction to one parameter `θ = γ / σ`, searched on a grid
    /// and refined by golden section).
    fn fit(&mut self) {
        self.unfitted = 0;
        let (gamma, sigma) = fit_generalised_pareto(self.recent_peaks.make_contiguous());
        self.gamma = gamma;
        self.sigma = sigma;
    }

    /// `P(X > x)` under the fitted tail (the empirical warm-up sample below `t`).
    pub fn tail_probability(&self, x: f64) -> f64 {
        if x <= self.threshold {
            let above = self.sample.len() - self.sample.partition_point(|&v| v < x);
            return (above as f64 / self.sample.len() as f64).max(self.exceedance());
        }
        let excess = x - self.threshold;
        let tail = if self.gamma.abs() < 1e-9 {
            (-excess / self.sigma).exp()
        } else {
            let base = 1.0 + self.gamma * excess / self.sigma;
            if base <= 0.0 {
                0.0
            } else {
                base.powf(-1.0 / self.gamma)
            }
        };
        self.exceedance() * tail
    }

    /// `N_t / n`: the share of normal scores above the threshold.
    fn exceedance(&self) -> f64 {
        (self.peaks as f64 / self.normal.max(1) as f64).max(1.0 / self.normal.max(1) as f64)
    }

    /// The score above which the tail probability falls below `rate`.
    pub fn quantile(&self, rate: f64) -> f64 {
        let ratio = rate / self.exceedance();
        if self.gamma.abs() < 1e-9 {
            self.threshold - self.sigma * ratio.ln()
        } else {
            self.threshold + self.sigma / self.gamma * (ratio.powf(-self.gamma) - 1.0)
        }
    }
}

/// Fits a generalised Pareto distribution to positive excesses; returns `(γ, σ)`.
///
/// For `θ = γ/σ`, the likelihood is maximised by `γ(θ) = mean(ln(1 + θ y))`,
/// so the search is over `θ` alone; `θ = 0` is the exponential tail.
pub fn fit_generalised_pareto(excesses: &[f64]) -> (f64, f64) {
    let n = excesses.len();
    let mean = excesses.iter().sum::<f64>() / n.max(1) as f64;
    if n < 5 || mean <= 0.0 {
        // Too few peaks for a shape: an exponential tail with their mean.
        return (0.0, mean.max(1e-9));
    }
    let largest = excesses.iter().cloned().fold(0.0, f64::max);
    let log_likelihood = |theta: f64| -> f64 {
        if theta.abs() < 1e-12 {
            return -(n as f64) * mean.ln() - n as f64;
        }
        let mut sum_log = 0.0;
        for &y in excesses {
            let base = 1.0 + theta * y;
            if base <= 0.0 {
                return f64::NEG_INFINITY;
            }
            sum_log += base.ln();
        }
        let gamma = sum_log / n as f64;
        let sigma = gamma / theta;
        if sigma <= 0.0 {
            return f64::NEG_INFINITY;
        }
        -(n as f64) * sigma.ln() - (1.0 + 1.0 / gamma) * sum_log
    };
    // θ between -1/largest (bounded support) and a generous positive bound.
    let low = -0.999 / largest;
    let high = 10.0 / mean;
    let mut best = (0.0, log_likelihood(0.0));
    let steps = 80;
    for k in 0..=steps {
        let f = k as f64 / steps as f64;
        // Dense near zero on both sides.
        for theta in [low * f * f, high * f * f] {
            let l = log_likelihood(theta);
            if l > best.1 {
                best = (theta, l);
            }
        }
    }
    // Golden-section refinement around the best grid point.
    let span = (high - low) / steps as f64;
    let (mut a, mut b) = ((best.0 - span).max(low), (best.0 + span).min(high));
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..40 {
        let c = b - ratio * (b - a);
        let d = a + ratio * (b - a);
        if log_likelihood(c) > log_likelihood(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let refined = (a + b) / 2.0;
    let theta = if log_likelihood(refined) > best.1 {
        refined
    } else {
        best.0
    };
    if theta.abs() < 1e-12 {
        return (0.0, mean);
    }
    let gamma = excesses
        .iter()
        .map(|&y| (1.0 + theta * y).ln())
        .sum::<f64>()
        / n as f64;
    (gamma, (gamma / theta).max(1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::CalibrationState;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Exp};

    fn exponential_spot(warm_up: usize) -> Spot {
        let mut spot = Spot::new(SpotConfig {
            warm_up,
            initial_quantile: 0.9,
            risk: 1e-6,
            short_window: 1,
            drift_window: 0,
            log_scores: false,
            max_peaks: 5000,
        });
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let exp = Exp::new(1.0).unwrap();
        for _ in 0..warm_up {
            spot.update(exp.sample(&mut rng));
        }
        spot
    }

    #[test]
    fn an_exponential_tail_is_extrapolated() {
        // Exp(1): P(X > x) = e^-x, far beyond the largest warm-up value.
        let spot = exponential_spot(20_000);
        // The shape is estimated from ~2,000 peaks (standard error ~0.02), so
        // the allowed ratio widens with the distance beyond the sample.
        for (x, tolerance) in [(3.0, 1.15), (6.0, 1.5), (10.0, 2.5)] {
            let p = spot.tail_probability(x);
            let expected = (-x).exp();
            let ratio = p / expected;
            assert!(
                (1.0 / tolerance..tolerance).contains(&ratio),
                "x = {x}: {p} vs {expected} (gamma {}, sigma {})",
                spot.gamma,
                spot.sigma
            );
        }
        // And the quantile for a rate inverts it.
        let q = spot.quantile(1e-4);
        assert!((q - 1e4f64.ln()).abs() < 0.8, "{q}");
    }

    #[test]
    fn the_pareto_fit_recovers_known_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let uniform = rand_distr::Uniform::new(0.0f64, 1.0).unwrap();
        for (gamma, sigma) in [(0.0, 1.0), (0.3, 2.0), (-0.2, 0.5)] {
            // Inverse CDF of the generalised Pareto distribution.
            let sample: Vec<f64> = (0..5000)
                .map(|_| {
                    let u: f64 = uniform.sample(&mut rng);
                    if gamma == 0.0 {
                        -sigma * (1.0 - u).ln()
                    } else {
                        sigma / gamma * ((1.0 - u).powf(-gamma) - 1.0)
                    }
                })
                .collect();
            let (g, s) = fit_generalised_pareto(&sample);
            assert!((g - gamma).abs() < 0.06, "gamma {g} vs {gamma}");
            assert!((s / sigma - 1.0).abs() < 0.08, "sigma {s} vs {sigma}");
        }
    }

    #[test]
    fn it_warms_up_then_reports() {
        let mut spot = Spot::new(SpotConfig {
            warm_up: 10,
            ..Default::default()
        });
        for seen in 1..=10 {
            let out = spot.update(seen as f64);
            assert_eq!(out.state, CalibrationState::WarmingUp { seen, needed: 10 });
        }
        let ordinary = spot.clone().update(5.0);
        let out = spot.update(100.0);
        assert_eq!(out.state, CalibrationState::Ready);
        assert!(out.score > ordinary.score, "{out:?} vs {ordinary:?}");
    }

    #[test]
    fn a_non_finite_score_never_ends_the_warm_up() {
        let mut spot = Spot::new(SpotConfig::default());
        let out = spot.update(f64::NAN);
        assert_eq!(
            out.state,
            CalibrationState::WarmingUp {
                seen: 0,
                needed: 100
            }
        );
    }

    #[test]
    fn anomalies_stay_out_of_the_fit() {
        let mut spot = exponential_spot(2_000);
        let before = spot.quantile(1e-4);
        for _ in 0..50 {
            let out = spot.update(1_000.0);
            assert!(out.tail_probability < 1e-6);
        }
        assert_eq!(spot.quantile(1e-4), before);
    }
}
