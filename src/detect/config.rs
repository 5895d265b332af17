//! The detector's settings (`[detector]` in the daemon's config,
//! `config/detector.json`), their defaults and their checks.

use crate::alert::AlertPolicy;
use crate::calibrate::CalibrationConfig;
use crate::settings::InvalidSetting;
use serde::{Deserialize, Serialize};

/// How raw scores become decisions: calibration and alert settings.
///
/// The defaults were chosen on NAB's tuning half (the files at even
/// positions) and the demo's synthetic set (docs/nab.md):
/// judge the newest 4 rows of each window, Gaussian-tail calibration of a
/// 10-row average of raw scores, a range check (10 % tolerance, seeded from
/// the model's training range, taught slowly by breaches), a roughness
/// check (30 % above the roughest seen, which a rise within that widens
/// only part of the way; below a twentieth of the quietest), windows of
/// an open alert held out of the calibration, alerts at a tail of about
/// 3 × 10^-7 (0.65) with a 30-window cooldown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Judge only the newest `k` rows of each window (their mean squared
    /// reconstruction error, normalised units) instead of the whole-window
    /// training distance. `None` = the whole window.
    pub newest_rows: Option<usize>,
    /// Also report the calibrated score gated to its rising edges: kept where
    /// it beats the previous `novelty_rows` scores, 0 elsewhere (0 = no gate).
    pub novelty_rows: usize,
    /// Range check: a value outside everything the entity has shown so far,
    /// widened by this fraction of the seen range on each side, raises the
    /// row's score to 1 (HTM's "spatial anomaly"). `null` = off.
    pub range_tolerance: Option<f64>,
    /// Start each entity's range from the model's training range (min and
    /// max per channel in its metadata) rather than from its first row, so
    /// a fresh entity's ordinary values are not breaches.
    pub range_from_model: bool,
    /// How a breach teaches the range: a value within the tolerance
    /// widens the range to itself, a value beyond it moves the bound only
    /// this fraction of the way (so a level outside the range goes on
    /// breaching rather than being absorbed in one row). During probation
    /// and the calibration's warm-up breaches widen it fully; while an open
    /// alert holds the calibration (`alert_hold`), they do not move it.
    /// 1 = every value widens it fully. A ramp slower than the tolerance
    /// per row widens it as it goes, at any setting.
    pub range_follow: f64,
    /// Roughness check: per channel, a moving average (over about this many
    /// rows) of the absolute change from row to row, checked like the range
    /// (`range_follow`) against everything the entity has shown: it
    /// collapses on a stuck sensor and jumps on a noise burst or a faster
    /// oscillation, where the values stay in range. 0 = off.
    pub roughness_rows: usize,
    /// The roughness check's tolerance above: a breach is a roughness more
    /// than `1 + roughness_tolerance` times the largest the entity has
    /// shown (a noise burst, a faster oscillation, a jump).
    pub roughness_tolerance: f64,
    /// The roughness check's tolerance below: a breach is a roughness less
    /// than the smallest the entity has shown divided by
    /// `1 + roughness_tolerance_below` (a stuck sensor, whose roughness
    /// falls toward 0). Wide, because quiet stretches of a healthy signal
    /// are common; once learned, the lower bound moves only by breaches
    /// (`range_follow`), so a roughness decaying row by row cannot walk it
    /// down.
    pub roughness_tolerance_below: f64,
    /// How a roughness above the upper bound but within
    /// `roughness_tolerance` teaches it once the calibration is ready: it
    /// moves the bound this fraction of the way to itself (during probation
    /// and warm-up, all of it). At 1 a noise burst whose roughness builds up
    /// over a few rows, each row within the tolerance of the one before,
    /// widens the bound as it goes and never breaches; below 1 the bound
    /// lags it, and it breaches. (The value range widens fully: `range_follow`.)
    pub roughness_widen: f64,
    /// When an alert resolves, the part of its breaches' values and
    /// roughness that an earlier resolved excursion reached too joins the
    /// ranges: the first return to a level still alerts, later ones do not
    /// (a spike as high as two before it is normal). false = breaches teach
    /// only by `range_follow`. Off by default (docs/nab.md).
    pub learn_excursions: bool,
    /// Rows of each entity during which no alert opens: ranges and
    /// calibration learn, nothing is reported. 0 = only the calibration's
    /// warm-up. (`eval nab` sets each file's probationary period.)
    pub probation_rows: usize,
    /// While an alert is open, its windows do not teach the calibration, so
    /// a long anomaly is not learned as normal while it lasts; after this
    /// many windows of one alert they teach again, so a lasting change
    /// becomes the new normal and the alert can resolve. 0 = windows
    /// always teach.
    pub alert_hold: usize,
    /// How raw scores are calibrated.
    pub calibration: CalibrationConfig,
    /// When alerts open and resolve.
    pub alerts: AlertPolicy,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            newest_rows: Some(4),
            novelty_rows: 100,
            range_tolerance: Some(0.1),
            range_from_model: true,
            range_follow: 0.03,
            roughness_rows: 3,
            roughness_tolerance: 0.3,
            roughness_tolerance_below: 19.0,
            roughness_widen: 0.65,
            learn_excursions: false,
            probation_rows: 0,
            alert_hold: 2000,
            calibration: CalibrationConfig::default(),
            alerts: AlertPolicy::default(),
        }
    }
}

impl DetectorConfig {
    /// Checks the settings; the error names the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self
            .range_tolerance
            .is_some_and(|t| !(t.is_finite() && t >= 0.0))
        {
            return Err(InvalidSetting::new(
                "range_tolerance",
                "must be a number ≥ 0 (or null for no range check)",
            ));
        }
        for (key, value) in [
            ("roughness_tolerance", self.roughness_tolerance),
            ("roughness_tolerance_below", self.roughness_tolerance_below),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(InvalidSetting::new(
                    key,
                    format!("must be a number ≥ 0, not {value}"),
                ));
            }
        }
        for (key, value) in [
            ("range_follow", self.range_follow),
            ("roughness_widen", self.roughness_widen),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(InvalidSetting::new(
                    key,
                    format!("must be in [0, 1], not {value}"),
                ));
            }
        }
        for (key, value) in [
            ("probation_rows", self.probation_rows),
            ("alert_hold", self.alert_hold),
        ] {
            if value > u32::MAX as usize {
                return Err(InvalidSetting::new(
                    key,
                    format!("must be at most {}, not {value}", u32::MAX),
                ));
            }
        }
        if self.newest_rows == Some(0) {
            return Err(InvalidSetting::new(
                "newest_rows",
                "must be at least 1 (or absent for the whole window)",
            ));
        }
        self.calibration.validate()?;
        self.alerts.validate()
    }
}
