//! The anomaly kinds the generator injects, and where it puts them.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A kind of injected anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// One to three samples of one channel far off.
    Spike,
    /// One channel jumps to a new level for a while.
    LevelShift,
    /// One channel drifts away slowly, then snaps back.
    Drift,
    /// The daily cycle of every channel runs four times faster.
    FrequencyChange,
    /// One channel repeats one value.
    StuckSensor,
    /// One channel's noise grows six-fold.
    NoiseBurst,
    /// One channel follows the daily cycle the other way round.
    BrokenCorrelation,
}

impl AnomalyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AnomalyKind; 7] = [
        AnomalyKind::Spike,
        AnomalyKind::LevelShift,
        AnomalyKind::Drift,
        AnomalyKind::FrequencyChange,
        AnomalyKind::StuckSensor,
        AnomalyKind::NoiseBurst,
        AnomalyKind::BrokenCorrelation,
    ];

    /// The label written for this kind.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::Drift => "drift",
            AnomalyKind::FrequencyChange => "frequency_change",
            AnomalyKind::StuckSensor => "stuck_sensor",
            AnomalyKind::NoiseBurst => "noise_burst",
            AnomalyKind::BrokenCorrelation => "broken_correlation",
        }
    }

    /// The kind named by a label, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    fn duration(self, rng: &mut ChaCha8Rng) -> usize {
        match self {
            AnomalyKind::Spike => rng.random_range(1..=3),
            AnomalyKind::LevelShift => rng.random_range(30..=50),
            AnomalyKind::Drift => rng.random_range(50..=70),
            AnomalyKind::FrequencyChange => rng.random_range(40..=60),
            AnomalyKind::StuckSensor => rng.random_range(30..=50),
            AnomalyKind::NoiseBurst => rng.random_range(20..=40),
            AnomalyKind::BrokenCorrelation => rng.random_range(40..=60),
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned anomaly: rows `[start, end)` of one entity.
pub(super) struct Anomaly {
    pub kind: AnomalyKind,
    pub start: usize,
    pub end: usize,
    pub channel: usize,
}

/// Places one anomaly of each kind, in random order, in rows `[from, to)`,
/// each in its own slot so that no two overlap or touch.
pub(super) fn plan(rng: &mut ChaCha8Rng, from: usize, to: usize, channels: usize) -> Vec<Anomaly> {
    let mut kinds = AnomalyKind::ALL.to_vec();
    kinds.shuffle(rng);
    let slot = (to - from) / kinds.len();
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let duration = kind.duration(rng).min(slot / 2);
            // Keep a margin of a quarter slot on each side.
            let earliest = from + i * slot + slot / 4;
            let latest = from + (i + 1) * slot - slot / 4 - duration;
            let start = rng.random_range(earliest..=latest.max(earliest));
            Anomaly {
                kind,
                start,
                end: start + duration,
                channel: rng.random_range(0..channels),
            }
        })
        .collect()
}

impl Anomaly {
    /// Changes `values` (row-major) in place. `shapes` holds each channel's
    /// (amplitude, daily loading, noise std) so effects scale with the channel.
    pub(super) fn apply(
        &self,
        values: &mut [f32],
        channels: usize,
        daily: &[f32],
        period: f64,
        shapes: &[(f32, f32, f32)],
        rng: &mut ChaCha8Rng,
    ) {
        let c = self.channel;
        let (amplitude, daily_loading, noise_std) = shapes[c];
        let at = |t: usize, channel: usize| t * channels + channel;
        let duration = self.end - self.start;
        match self.kind {
            AnomalyKind::Spike => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                for t in self.start..self.end {
                    values[at(t, c)] += sign * 4.0 * amplitude;
                }
            }
            AnomalyKind::LevelShift => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                for t in self.start..self.end {
                    values[at(t, c)] += sign * 1.5 * amplitude;
                }
            }
            AnomalyKind::Drift => {
                for (i, t) in (self.start..self.end).enumerate() {
                    values[at(t, c)] += 2.0 * amplitude * (i + 1) as f32 / duration as f32;
                }
            }
            AnomalyKind::FrequencyChange => {
                for t in self.start..self.end {
                    let fast_angle = std::f64::consts::TAU * 4.0 * t as f64 / period;
                    let fast = (fast_angle.sin() + 0.3 * (2.0 * fast_angle).sin()) as f32;
                    for (channel, &(amplitude, loading, _)) in shapes.iter().enumerate() {
                        values[at(t, channel)] += amplitude * loading * (fast - daily[t]);
                    }
                }
            }
            AnomalyKind::StuckSensor => {
                let stuck = values[at(self.start, c)];
                for t in self.start..self.end {
                    values[at(t, c)] = stuck;
                }
            }
            AnomalyKind::NoiseBurst => {
                let burst = Normal::new(0.0, 5.0 * noise_std * amplitude).unwrap();
                for t in self.start..self.end {
                    values[at(t, c)] += burst.sample(rng);
                }
            }
            AnomalyKind::BrokenCorrelation => {
                for t in self.start..self.end {
                    values[at(t, c)] -= 2.0 * amplitude * daily_loading * daily[t];
                }
            }
        }
    }
}
