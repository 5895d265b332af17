//! The per-entity detection path shared by the benchmark and the daemon:
//! row → window assembly → tract scorer → calibration → alert decision.
//!
//! An [`EntityDetector`] holds only that entity's state (its window buffer,
//! calibrator and alert machine); the scorer is shared and passed in, so one
//! model serves every entity. Nothing here reads the clock or does I/O.

use crate::alert::{AlertEvent, AlertMachine, ChannelEvidence};
use crate::calibrate::{CalibrationState, Calibrator, NoveltyGate};
use crate::serve::{ModelError, Scorer, WindowScore};
use crate::window::WindowAssembler;
use bounds::{Bounds, Excursion, Roughness, Sides, Teach};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod bounds;
mod config;
mod outcome;

pub use config::DetectorConfig;
pub use outcome::{PendingWindow, RowOutcome};

/// One entity's detection state.
///
/// Its window buffer holds the rows normalised by the serving model: each
/// value is normalised once, when its row arrives, not once for every window
/// it is part of (8 times at stride 8; 64 at stride 1). A model with another
/// normalisation maps the buffer over ([`use_model`](Self::use_model)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityDetector {
    /// (min, max) of each channel so far.
    range: Bounds,
    #[serde(default)]
    roughness: Roughness,
    /// Extremes of the open alert's breaches and of earlier excursions.
    #[serde(default)]
    excursion: Excursion,
    /// Not checkpointed: a restored detector takes the daemon's settings
    /// ([`adopt_settings`](Self::adopt_settings)).
    #[serde(skip)]
    settings: Arc<RowSettings>,
    /// Rows pushed so far (a checkpoint without it is past probation).
    #[serde(default = "past_probation")]
    rows_seen: u32,
    /// Windows of the open alert that did not teach the calibration.
    #[serde(default)]
    held: u32,
    assembler: WindowAssembler,
    calibrator: Calibrator,
    gate: NoveltyGate,
    alerts: AlertMachine,
    state: CalibrationState,
    /// Raw rows pushed but not yet range-checked (row-major): those since
    /// the last window, checked when the next window is decided (or at
    /// once by [`observe`](Self::observe)).
    #[serde(default)]
    unchecked: Vec<f32>,
    /// Whether the latest checked row was out of range.
    last_out_of_range: bool,
}

impl EntityDetector {
    /// A fresh detector for `entity`, scoring every row with `scorer`'s model.
    pub fn new(entity: &str, scorer: &Scorer, config: &DetectorConfig) -> Self {
        Self::with_stride(entity, scorer, config, 1, 0)
    }

    /// A fresh detector that completes a window every `stride` rows, the
    /// first `phase` rows (`0..stride`) after its first full window.
    pub fn with_stride(
        entity: &str,
        scorer: &Scorer,
        config: &DetectorConfig,
        stride: usize,
        phase: usize,
    ) -> Self {
        let metadata = scorer.metadata();
        let mut assembler =
            WindowAssembler::new(metadata.channels.len(), metadata.window_len, stride);
        assembler.set_cadence(stride, phase);
        Self {
            range: Bounds::seeded(if config.range_from_model {
                model_range(metadata)
            } else {
                Vec::new()
            }),
            roughness: Roughness::default(),
            excursion: Excursion::default(),
            settings: Arc::new(RowSettings::from(config)),
            rows_seen: 0,
            held: 0,
            assembler,
            calibrator: config.calibration.build(),
            gate: NoveltyGate::new(config.novelty_rows),
            alerts: AlertMachine::new(entity, scorer.model_version(), config.alerts.clone()),
            state: CalibrationState::WarmingUp { seen: 0, needed: 1 },
            unchecked: Vec::new(),
            last_out_of_range: false,
        }
    }

    /// The calibration state after the latest row (the daemon exports it).
    pub fn calibration_state(&self) -> CalibrationState {
        self.state
    }

    /// Takes `prototype`'s settings where they are equal to its own, so that
    /// the entities of a daemon hold one copy of each (alert policy, model
    /// version, calibration and row-check settings) instead of one per entity.
    pub fn share_settings(&mut self, prototype: &EntityDetector) {
        self.calibrator.share_settings(&prototype.calibrator);
        self.alerts.share_settings(&prototype.alerts);
        if self.settings == prototype.settings {
            self.settings = prototype.settings.clone();
        }
    }

    /// Switches from `previous` to another model of the same shape (a
    /// retrained one): the window buffer (normalised again if the models
    /// normalise differently), calibration history and alerts carry on; new
    /// alerts name the new model version.
    pub fn use_model(&mut self, previous: &Scorer, scorer: &Scorer) {
        let (old, new) = (
            &previous.metadata().normalisation,
            &scorer.metadata().normalisation,
        );
        if old != new {
            self.assembler
                .map_rows(|c, value| new[c].apply(old[c].invert(value)));
        }
        self.alerts.set_model_version(scorer.model_version());
    }

    /// [`use_model`](Self::use_model) for a caller that still has the raw
    /// rows (the evaluation, which retrains as the series goes on): the
    /// window buffer is normalised again from `recent_rows`, the rows pushed
    /// last (row-major, oldest first, at least a window's length of them, or
    /// all rows pushed if fewer), exactly as if the new model had served them.
    pub fn use_model_with_rows(&mut self, scorer: &Scorer, recent_rows: &[f32]) {
        self.assembler
            .rewrite_rows(recent_rows, |c, value| scorer.normalise_value(c, value));
        self.alerts.set_model_version(scorer.model_version());
    }

    /// Normalises a window buffer that holds raw rows (restored from a
    /// checkpoint of format 2, which kept them raw) with `scorer`'s model.
    pub fn normalise_raw_window(&mut self, scorer: &Scorer) {
        self.assembler
            .map_rows(|c, value| scorer.normalise_value(c, value));
    }

    /// The alert machine (for its open alert).
    pub fn alerts(&self) -> &AlertMachine {
        &self.alerts
    }

    /// Takes the next row of the entity (values in the model's channel order)
    /// and scores the window it completes at once (batch of one).
    pub fn observe(
        &mut self,
        scorer: &Scorer,
        timestamp_ms: i64,
        row: &[f32],
    ) -> Result<RowOutcome, ModelError> {
        let Some(pending) = self.push(scorer, timestamp_ms, row) else {
            let unchecked = std::mem::take(&mut self.unchecked);
            self.check_rows(&unchecked);
            self.unchecked = unchecked;
            self.unchecked.clear();
            return Ok(RowOutcome {
                raw: None,
                calibrated: None,
                out_of_range: self.last_out_of_range,
                score: 0.0,
                novel_score: self.gate.apply(0.0),
                event: None,
            });
        };
        let scored = scorer
            .score_normalised_windows(std::slice::from_ref(&pending.window))?
            .pop()
            .ok_or_else(|| ModelError::Run("the model returned no score".into()))?;
        Ok(self.decide(scorer, &pending, &scored))
    }

    /// The first half of [`observe`](Self::observe), for callers that score
    /// many entities' windows in one batch: window assembly (the row is
    /// stored normalised by `scorer`'s model). Returns the window this row
    /// completes, if any; pass it, once scored, to [`decide`](Self::decide),
    /// in the order the windows were returned. The rows' range checks wait
    /// for that decision, so the outcome does not depend on how many rows
    /// are pushed before their windows are decided.
    pub fn push(
        &mut self,
        scorer: &Scorer,
        timestamp_ms: i64,
        row: &[f32],
    ) -> Option<PendingWindow> {
        self.unchecked.extend_from_slice(row);
        let window = self.assembler.push_mapped(timestamp_ms, row, |c, value| {
            scorer.normalise_value(c, value)
        })?;
        // The next window's rows need as much room as this one's: one
        // allocation, not a doubling for every few rows.
        let room = self.unchecked.len();
        Some(PendingWindow {
            window,
            rows: std::mem::replace(&mut self.unchecked, Vec::with_capacity(room)),
            channels: row.len(),
        })
    }

    /// Range-checks `rows` (raw, row-major) in order, counting them against
    /// the probation. Returns whether the last one is out of range and in
    /// probation.
    fn check_rows(&mut self, rows: &[f32]) -> (bool, bool) {
        let channels = self.assembler.shape().0;
        let mut last = (self.last_out_of_range, false);
        for row in rows.chunks_exact(channels) {
            self.rows_seen = self.rows_seen.saturating_add(1);
            let in_probation = self.rows_seen as usize <= self.settings.probation_rows;
            let out_of_range = self.check_range(row, in_probation);
            self.last_out_of_range = out_of_range;
            last = (out_of_range, in_probation);
        }
        last
    }

    /// Makes a detector restored from a checkpoint follow the current
    /// settings, given `fresh`, a new detector built from them: the window
    /// buffer, value ranges, calibration history and alert state carry over
    /// where they still apply; calibration or the novelty gate start afresh
    /// if their settings changed. Returns what started afresh, or an error if
    /// the window shape (channels, window length) differs: such a buffer
    /// cannot feed the model.
    pub fn adopt_settings(&mut self, fresh: EntityDetector) -> Result<Vec<&'static str>, String> {
        if self.assembler.shape() != fresh.assembler.shape() {
            return Err(format!(
                "the checkpoint's windows are {:?} (channels, length), the model's {:?}",
                self.assembler.shape(),
                fresh.assembler.shape()
            ));
        }
        let mut reset = Vec::new();
        self.assembler
            .set_cadence(fresh.assembler.stride(), fresh.assembler.phase());
        self.settings = fresh.settings.clone();
        let calibration_changed = match (&self.calibrator, &fresh.calibrator) {
            (Calibrator::Likelihood(c), Calibrator::Likelihood(f)) => c.config() != f.config(),
            (Calibrator::Spot(c), Calibrator::Spot(f)) => c.config() != f.config(),
            _ => true,
        };
        if calibration_changed {
            self.calibrator = fresh.calibrator;
            self.state = fresh.state;
            reset.push("calibration");
        } else {
            self.calibrator.share_settings(&fresh.calibrator);
        }
        if self.gate.rows() != fresh.gate.rows() {
            self.gate = fresh.gate;
            reset.push("novelty gate");
        }
        self.alerts.adopt_settings(&fresh.alerts);
        Ok(reset)
    }

    /// Forgets the rows of the window being assembled (after a gap in the
    /// data); calibration history, ranges and alerts carry on.
    pub fn reset_window(&mut self) {
        self.assembler.reset();
    }

    /// The second half of [`observe`](Self::observe): calibration and the
    /// alert decision for a window returned by [`push`](Self::push) and scored.
    pub fn decide(
        &mut self,
        scorer: &Scorer,
        pending: &PendingWindow,
        scored: &WindowScore,
    ) -> RowOutcome {
        let window = &pending.window;
        let (out_of_range, in_probation) = self.check_rows(&pending.rows);
        let raw = match self.settings.newest_rows {
            None => scored.score as f64,
            Some(k) => newest_error(scorer, &window.values, &scored.normalised_reconstruction, k),
        };
        let calibrated = if self.holds_calibration() {
            self.calibrator.score_only(raw)
        } else {
            self.calibrator.update(raw)
        };
        self.state = calibrated.state;
        let ready = calibrated.state == CalibrationState::Ready;
        let score = if ready && out_of_range {
            1.0
        } else {
            calibrated.score
        };
        let evidence = || {
            let metadata = scorer.metadata();
            let len = metadata.window_len;
            metadata
                .channels
                .iter()
                .enumerate()
                .map(|(c, name)| ChannelEvidence {
                    channel: name.clone(),
                    contribution: scored.channel_contributions[c] as f64,
                    actual: pending.newest_row()[c] as f64,
                    expected: scorer
                        .denormalise(c, scored.normalised_reconstruction[c * len + len - 1])
                        as f64,
                })
                .collect()
        };
        let may_alert = ready && !in_probation;
        let event = self
            .alerts
            .observe(window.end_ms, score, may_alert, evidence);
        self.follow_excursion(pending.newest_row(), out_of_range, event.as_ref());
        RowOutcome {
            raw: Some(raw),
            calibrated: Some(calibrated),
            out_of_range,
            score,
            novel_score: self.gate.apply(score),
            event,
        }
    }

    /// Keeps the extremes of the breaches while an alert is open, and
    /// learns from them when it resolves (`learn_excursions`). It runs on
    /// decided windows, in their order, so a caller that pushes several rows
    /// before deciding them (the daemon's batches) learns the same as one
    /// that decides each row at once.
    fn follow_excursion(&mut self, row: &[f32], out_of_range: bool, event: Option<&AlertEvent>) {
        if !self.settings.learn_excursions {
            return;
        }
        match event {
            Some(AlertEvent::Resolved(_)) => {
                self.excursion.resolve(&mut self.range, &mut self.roughness)
            }
            _ if self.alerts.current().is_none() => self.excursion.clear(),
            _ if out_of_range => self.excursion.record(row, &self.roughness),
            _ => {}
        }
    }

    /// Whether the next window's score stays out of the calibration's
    /// history for now: an alert is open and has held it for fewer than
    /// `alert_hold` windows. When the alert resolves, or the hold runs out,
    /// the held scores are learned.
    fn holds_calibration(&mut self) -> bool {
        match (self.settings.alert_hold, self.alerts.current()) {
            (limit, Some(_)) if (self.held as usize) < limit => {
                self.held += 1;
                true
            }
            _ => {
                if self.held > 0 {
                    self.calibrator.release();
                }
                if self.alerts.current().is_none() {
                    self.held = 0;
                }
                false
            }
        }
    }

    /// Whether `row` leaves the widened range seen so far, or its channels'
    /// roughness leaves theirs; then teaches both: fully during probation
    /// and calibration warm-up, not at all while an open alert holds the
    /// calibration, by `range_follow` otherwise. Once learned, a quieter
    /// roughness lowers its bound only by breaching it: a stuck channel's
    /// roughness decays row by row, and bounds that widened toward each
    /// step would decay with it.
    fn check_range(&mut self, row: &[f32], in_probation: bool) -> bool {
        let Some(tolerance) = self.settings.range_tolerance else {
            return false;
        };
        let learning = in_probation || self.state != CalibrationState::Ready;
        let holding =
            self.alerts.current().is_some() && (self.held as usize) < self.settings.alert_hold;
        let (value_teach, roughness_teach) = if learning {
            (Teach::FULLY, Sides::both(Teach::FULLY))
        } else {
            let follow = if holding {
                0.0
            } else {
                self.settings.range_follow as f32
            };
            (
                Teach { widen: 1.0, follow },
                Sides {
                    below: Teach { widen: 0.0, follow },
                    above: Teach {
                        widen: self.settings.roughness_widen as f32,
                        follow,
                    },
                },
            )
        };
        let value = self.range.check(row, tolerance, value_teach);
        let settings = &*self.settings;
        let rough = settings.roughness_rows > 0
            && self.roughness.check(
                row,
                settings.roughness_rows,
                Sides {
                    below: settings.roughness_tolerance_below,
                    above: settings.roughness_tolerance,
                },
                roughness_teach,
            );
        value || rough
    }
}

/// The model's training range per channel, if its metadata has one for
/// every channel (else empty: the range starts at the first row).
fn model_range(metadata: &crate::model::ModelMetadata) -> Vec<(f32, f32)> {
    metadata
        .normalisation
        .iter()
        .map(|n| n.range.map(|[low, high]| (low, high)))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// The settings of scoring, the range and roughness checks, probation and
/// hold, shared by the entities of a daemon.
#[derive(Debug, Clone, PartialEq)]
struct RowSettings {
    newest_rows: Option<usize>,
    range_tolerance: Option<f64>,
    range_follow: f64,
    roughness_rows: usize,
    roughness_tolerance: f64,
    roughness_tolerance_below: f64,
    roughness_widen: f64,
    learn_excursions: bool,
    probation_rows: usize,
    alert_hold: usize,
}

impl From<&DetectorConfig> for RowSettings {
    fn from(config: &DetectorConfig) -> Self {
        Self {
            newest_rows: config.newest_rows,
            range_tolerance: config.range_tolerance,
            range_follow: config.range_follow,
            roughness_rows: config.roughness_rows,
            roughness_tolerance: config.roughness_tolerance,
            roughness_tolerance_below: config.roughness_tolerance_below,
            roughness_widen: config.roughness_widen,
            learn_excursions: config.learn_excursions,
            probation_rows: config.probation_rows,
            alert_hold: config.alert_hold,
        }
    }
}

impl Default for RowSettings {
    fn default() -> Self {
        Self::from(&DetectorConfig::default())
    }
}

fn past_probation() -> u32 {
    u32::MAX
}

/// Mean squared error of the newest `k` rows of a window, in normalised units,
/// averaged over channels.
fn newest_error(scorer: &Scorer, normalised: &[f32], expected_normalised: &[f32], k: usize) -> f64 {
    let metadata = scorer.metadata();
    let len = metadata.window_len;
    let k = k.min(len);
    let mut total = 0.0f64;
    for c in 0..metadata.channels.len() {
        for t in len - k..len {
            let d = normalised[c * len + t] - expected_normalised[c * len + t];
            total += (d * d) as f64;
        }
    }
    total / (k * metadata.channels.len()) as f64
}

#[cfg(test)]
mod mechanisms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::embedded::default_scorer;

    /// Rows of the default model's 5 channels, some far out (the squash's
    /// logarithmic part) and some exactly on a channel's center.
    fn rows(scorer: &Scorer, count: usize) -> Vec<Vec<f32>> {
        let normalisation = &scorer.metadata().normalisation;
        (0..count)
            .map(|t| {
                normalisation
                    .iter()
                    .enumerate()
                    .map(|(c, n)| match (t + c) % 11 {
                        0 => n.center,
                        5 => n.center + 1e4 * n.scale,
                        k => n.center + n.scale * ((t as f32 * 0.37).sin() * k as f32),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn rows_normalised_on_arrival_score_as_windows_normalised_whole() {
        let scorer = default_scorer().expect("the embedded model loads");
        let (channels, len) = (
            scorer.metadata().channels.len(),
            scorer.metadata().window_len,
        );
        let mut detector =
            EntityDetector::with_stride("pump", &scorer, &DetectorConfig::default(), 3, 0);
        let mut raw = WindowAssembler::new(channels, len, 3);
        let mut windows = 0;
        for (t, row) in rows(&scorer, 200).iter().enumerate() {
            let pending = detector.push(&scorer, t as i64 * 1000, row);
            let whole = raw.push(t as i64 * 1000, row);
            assert_eq!(pending.is_some(), whole.is_some(), "row {t}");
            let (Some(pending), Some(whole)) = (pending, whole) else {
                continue;
            };
            assert_eq!(pending.newest_row(), &row[..]);
            let mut normalised = whole.values.clone();
            scorer.normalise(&mut normalised);
            // To the bit: the same function of the same values.
            assert_eq!(pending.window.values, normalised, "row {t}");
            let by_rows = scorer
                .score_normalised_windows([&pending.window])
                .expect("scores");
            let by_windows = scorer.score_windows([&whole]).expect("scores");
            assert_eq!(by_rows, by_windows, "row {t}");
            windows += 1;
        }
        assert_eq!(windows, (200 - len) / 3 + 1);
    }

    #[test]
    fn another_model_normalises_the_window_buffer_again() {
        let scorer = default_scorer().expect("the embedded model loads");
        let mut metadata = scorer.metadata().clone();
        for n in &mut metadata.normalisation {
            n.center += 2.0 * n.scale;
            n.scale *= 1.5;
        }
        // The same network with other normalisation; no file, so no hash check.
        let onnx = crate::serve::embedded::DEFAULT_ONNX;
        let other = Scorer::from_parts(onnx, metadata, "test").expect("loads");
        let rows = rows(&scorer, 100);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let config = DetectorConfig::default();
        let mut switched = EntityDetector::new("pump", &scorer, &config);
        let mut served = EntityDetector::new("pump", &other, &config);
        let mut rewritten = EntityDetector::new("pump", &scorer, &config);
        for (t, row) in rows[..90].iter().enumerate() {
            switched.push(&scorer, t as i64, row);
            served.push(&other, t as i64, row);
            rewritten.push(&scorer, t as i64, row);
        }
        switched.use_model(&scorer, &other);
        rewritten.use_model_with_rows(&other, &flat[..90 * rows[0].len()]);
        let window = |d: &mut EntityDetector, t: usize| {
            d.push(&other, t as i64, &rows[t])
                .expect("stride 1")
                .window
                .values
        };
        let expected = window(&mut served, 90);
        // From the raw rows: exact.
        assert_eq!(window(&mut rewritten, 90), expected);
        // Mapped over from the old normalisation: within float rounding.
        for (a, b) in window(&mut switched, 90).iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} against {b}");
        }
    }

    #[test]
    fn config_detector_json_is_the_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/detector.json");
        let text = std::fs::read_to_string(path).unwrap();
        let parsed: DetectorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, DetectorConfig::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = serde_json::from_str::<DetectorConfig>(r#"{"alerts": {"treshold": 0.3}}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("treshold"), "{error}");
        let error = serde_json::from_str::<DetectorConfig>(r#"{"novelty": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("novelty"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let config = DetectorConfig {
            newest_rows: Some(0),
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "newest_rows");
    }
}
