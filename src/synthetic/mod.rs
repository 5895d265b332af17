//! A small, seeded generator of multichannel sensor data with labelled anomalies.
//!
//! Entities are units of one machine type (small unit-to-unit differences).
//! Each has a few correlated channels driven by shared latent factors:
//! a daily cycle (with a second harmonic), a slowly wandering load (AR(1))
//! and per-channel noise. Each channel mixes the factors with its own
//! loadings, so channels move together and a broken relationship is visible.
//! The first `clean_fraction` of every entity's rows is anomaly-free (the
//! training part); the rest carries one anomaly of each [`AnomalyKind`] in a
//! random order, at random, well-separated places.
//!
//! The data are synthetic and made by this file alone; nothing is downloaded.

mod anomalies;

pub use anomalies::AnomalyKind;

use crate::series::Series;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Channel names used by the generator, in order.
pub const CHANNEL_NAMES: [&str; 8] = [
    "temperature",
    "pressure",
    "flow",
    "vibration",
    "power",
    "current",
    "speed",
    "humidity",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    /// Number of entities.
    pub entities: usize,
    /// Channels per entity (3 to 8).
    pub channels: usize,
    /// Days of data per entity.
    pub days: usize,
    /// Samples per day (96 = every 15 minutes).
    pub samples_per_day: usize,
    /// Fraction of each entity's rows, from the start, without anomalies.
    pub clean_fraction: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Epoch milliseconds of the first row.
    pub start_ms: i64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            entities: 6,
            channels: 5,
            days: 28,
            samples_per_day: 96,
            clean_fraction: 0.5,
            seed: 7,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
        }
    }
}

/// Generated series: one per entity, with a per-row label (anomaly kind or empty).
pub struct SyntheticData {
    /// One series per entity, each with labels.
    pub series: Vec<Series>,
    /// Row index (per entity) where the anomalous part starts.
    pub clean_rows: usize,
}

impl SyntheticData {
    /// The anomaly-free first part of each entity (for training).
    pub fn clean_part(&self) -> Vec<Series> {
        self.series
            .iter()
            .map(|s| s.slice(0, self.clean_rows))
            .collect()
    }

    /// The part with anomalies (for evaluation).
    pub fn test_part(&self) -> Vec<Series> {
        self.series
            .iter()
            .map(|s| s.slice(self.clean_rows, s.len()))
            .collect()
    }
}

/// Per-channel loadings on the shared factors.
struct ChannelShape {
    offset: f32,
    amplitude: f32,
    daily_loading: f32,
    load_loading: f32,
    noise_std: f32,
}

/// Generates the data set described by `config`.
pub fn generate(config: &SyntheticConfig) -> SyntheticData {
    assert!((3..=CHANNEL_NAMES.len()).contains(&config.channels));
    let rows = config.days * config.samples_per_day;
    let clean_rows = (rows as f64 * config.clean_fraction) as usize;
    let step_ms = 86_400_000 / config.samples_per_day as i64;
    let channels: Vec<String> = CHANNEL_NAMES[..config.channels]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let fleet = fleet_shapes(&mut rng, config.channels);
    let fleet_phase: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let mut series = Vec::with_capacity(config.entities);
    for entity in 0..config.entities {
        let shapes = unit_shapes(&fleet, &mut rng);
        // Units start their day within about an hour of each other.
        let phase: f64 = fleet_phase + rng.random_range(-0.25..0.25);
        let period = config.samples_per_day as f64;
        let (daily, loads) = shared_factors(&mut rng, rows, period, phase);
        let mut plan = anomalies::plan(&mut rng, clean_rows, rows, config.channels);
        let mut values = vec![0.0f32; rows * config.channels];
        for t in 0..rows {
            for (c, shape) in shapes.iter().enumerate() {
                let noise: f32 = Normal::new(0.0, shape.noise_std).unwrap().sample(&mut rng);
                values[t * config.channels + c] = shape.offset
                    + shape.amplitude
                        * (shape.daily_loading * daily[t] + shape.load_loading * loads[t] + noise);
            }
        }
        let mut labels = vec![String::new(); rows];
        for anomaly in plan.iter_mut() {
            anomaly.apply(
                &mut values,
                config.channels,
                &daily,
                period,
                &shapes
                    .iter()
                    .map(|s| (s.amplitude, s.daily_loading, s.noise_std))
                    .collect::<Vec<_>>(),
                &mut rng,
            );
            for label in &mut labels[anomaly.start..anomaly.end] {
                *label = anomaly.kind.to_string();
            }
        }
        series.push(Series {
            entity: format!("machine-{}", entity + 1),
            channels: channels.clone(),
            timestamps: (0..rows as i64)
                .map(|t| config.start_ms + t * step_ms)
                .collect(),
            values,
            labels: Some(labels),
        });
    }
    SyntheticData { series, clean_rows }
}

/// The channels of one machine type: every entity is a unit of that type,
/// with small unit-to-unit differences (as in a fleet of pumps), so one
/// model with one normalisation serves them all.
fn fleet_shapes(rng: &mut ChaCha8Rng, channels: usize) -> Vec<ChannelShape> {
    (0..channels)
        .map(|_| {
            // Some channels move against the others (e.g. pressure vs flow).
            let sign = if rng.random_bool(0.3) { -1.0 } else { 1.0 };
            ChannelShape {
                offset: rng.random_range(10.0..100.0),
                amplitude: rng.random_range(2.0..10.0),
                daily_loading: sign * rng.random_range(0.6..1.0),
                load_loading: sign * rng.random_range(0.2..0.6),
                noise_std: rng.random_range(0.05..0.15),
            }
        })
        .collect()
}

/// One unit's channels: the fleet's, each a little off.
fn unit_shapes(fleet: &[ChannelShape], rng: &mut ChaCha8Rng) -> Vec<ChannelShape> {
    fleet
        .iter()
        .map(|f| ChannelShape {
            offset: f.offset + f.amplitude * rng.random_range(-0.2..0.2),
            amplitude: f.amplitude * rng.random_range(0.9..1.1),
            daily_loading: f.daily_loading * rng.random_range(0.9..1.1),
            load_loading: f.load_loading * rng.random_range(0.9..1.1),
            noise_std: f.noise_std * rng.random_range(0.8..1.2),
        })
        .collect()
}

/// The factors a unit's channels share: a daily cycle and a slowly
/// wandering load, one value per row.
fn shared_factors(
    rng: &mut ChaCha8Rng,
    rows: usize,
    period: f64,
    phase: f64,
) -> (Vec<f32>, Vec<f32>) {
    let mut load = 0.0f64;
    let load_noise = Normal::new(0.0, 0.15).unwrap();
    let mut daily = Vec::with_capacity(rows);
    let mut loads = Vec::with_capacity(rows);
    for t in 0..rows {
        let angle = std::f64::consts::TAU * t as f64 / period + phase;
        daily.push((angle.sin() + 0.3 * (2.0 * angle).sin()) as f32);
        load = 0.98 * load + load_noise.sample(rng);
        loads.push(load as f32);
    }
    (daily, loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed() {
        let config = SyntheticConfig {
            entities: 2,
            days: 14,
            ..Default::default()
        };
        let a = generate(&config);
        let b = generate(&config);
        assert_eq!(a.series, b.series);
        let c = generate(&SyntheticConfig { seed: 8, ..config });
        assert_ne!(a.series[0].values, c.series[0].values);
    }

    #[test]
    fn clean_part_is_clean_and_every_kind_appears_after_it() {
        let data = generate(&SyntheticConfig::default());
        for series in &data.series {
            let labels = series.labels.as_ref().unwrap();
            assert!(labels[..data.clean_rows].iter().all(|l| l.is_empty()));
            for kind in AnomalyKind::ALL {
                assert!(
                    labels[data.clean_rows..]
                        .iter()
                        .any(|l| l == &kind.to_string()),
                    "{kind} missing in {}",
                    series.entity
                );
            }
        }
    }

    #[test]
    fn channels_are_correlated() {
        let data = generate(&SyntheticConfig::default());
        let clean = &data.clean_part()[0];
        let correlation = |a: &[f32], b: &[f32]| -> f64 {
            let n = a.len() as f64;
            let (ma, mb) = (
                a.iter().map(|&x| x as f64).sum::<f64>() / n,
                b.iter().map(|&x| x as f64).sum::<f64>() / n,
            );
            let cov: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - ma) * (y as f64 - mb))
                .sum();
            let va: f64 = a.iter().map(|&x| (x as f64 - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|&y| (y as f64 - mb).powi(2)).sum();
            cov / (va * vb).sqrt()
        };
        let c0 = clean.channel_values(0);
        let strongest = (1..clean.channels.len())
            .map(|c| correlation(&c0, &clean.channel_values(c)).abs())
            .fold(0.0, f64::max);
        assert!(strongest > 0.5, "strongest |correlation| {strongest}");
    }
}
