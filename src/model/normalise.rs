//! Per-channel robust normalisation: learnt from training data, stored with the model.
//!
//! Each channel is centred on its median and divided by a robust spread, so one
//! outlier in the training data cannot stretch the scale of a whole channel.
//! The spread is the IQR scaled to a normal sigma (IQR / 1.349); if that is
//! zero (a channel that sits on one value more than half the time) we fall
//! back to the MAD scaled to sigma, then to the standard deviation, and finally
//! to 1.0 for a truly constant channel, so the scale is always finite and > 0.
//!
//! Models trained since metadata carried `soft_clip` also squash the
//! normalised value with `k·asinh(z / k)` (k = [`SOFT_CLIP`]): linear within a
//! few sigma, logarithmic beyond. Real series (NAB's CPU and network counters)
//! can sit on one value for most of their history and then spike by 10^5
//! robust sigmas; without the squash such a spike dominates training and
//! every score. The squash is monotone, so a larger deviation still scores
//! higher, and it is inverted exactly when reconstructions are reported.

use serde::{Deserialize, Serialize};

/// How one channel is normalised: `(value - center) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelNormalisation {
    /// The channel's name, as in the model's channel list.
    pub channel: String,
    /// Median of the training values.
    pub center: f32,
    /// Robust spread (> 0); see the module docs for the fallbacks.
    pub scale: f32,
    /// Which estimator gave `scale`: "iqr", "mad", "std" or "constant".
    pub scale_source: String,
    /// `k` of the `k·asinh(z / k)` squash; absent in models that predate it (no squash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_clip: Option<f32>,
    /// Smallest and largest value the model was built from (its training
    /// and validation rows): the detector's range check starts from it.
    /// Absent in models that predate it (the range then starts at each
    /// entity's first row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f32; 2]>,
}

/// The squash of newly fitted channels: values within ~3 sigma are barely changed.
pub const SOFT_CLIP: f32 = 8.0;

impl ChannelNormalisation {
    /// Normalises one raw value.
    #[inline]
    pub fn apply(&self, value: f32) -> f32 {
        let z = (value - self.center) / self.scale;
        match self.soft_clip {
            Some(k) => k * (z / k).asinh(),
            None => z,
        }
    }

    /// Maps a normalised value back to the channel's units.
    #[inline]
    pub fn invert(&self, normalised: f32) -> f32 {
        let z = match self.soft_clip {
            Some(k) => k * (normalised / k).sinh(),
            None => normalised,
        };
        z * self.scale + self.center
    }
}

/// The smallest spread treated as non-zero, relative to the channel's magnitude.
const RELATIVE_EPSILON: f64 = 1e-9;

/// Learns robust normalisation for one channel from its training values.
///
/// Non-finite values must have been rejected by the caller.
pub fn fit_channel(channel: &str, values: &[f32]) -> ChannelNormalisation {
    assert!(
        !values.is_empty(),
        "cannot normalise channel {channel}: no values"
    );
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = quantile_sorted(&sorted, 0.5);
    let magnitude = median.abs().max(1.0);
    let tiny = RELATIVE_EPSILON * magnitude;

    let iqr = quantile_sorted(&sorted, 0.75) - quantile_sorted(&sorted, 0.25);
    let (scale, source) = if iqr > tiny {
        (iqr / 1.349, "iqr")
    } else {
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
        deviations.sort_by(|a, b| a.total_cmp(b));
        let mad = quantile_sorted(&deviations, 0.5);
        if mad > tiny {
            (mad * 1.4826, "mad")
        } else {
            let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
            let variance =
                sorted.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / sorted.len() as f64;
            let std = variance.sqrt();
            if std > tiny {
                (std, "std")
            } else {
                (1.0, "constant")
            }
        }
    };
    ChannelNormalisation {
        channel: channel.to_string(),
        center: median as f32,
        scale: scale as f32,
        scale_source: source.to_string(),
        soft_clip: Some(SOFT_CLIP),
        range: value_range(values.iter().copied()),
    }
}

/// The smallest and largest finite value, if any.
pub fn value_range(values: impl IntoIterator<Item = f32>) -> Option<[f32; 2]> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |range, v| match range {
            None => Some([v, v]),
            Some([low, high]) => Some([low.min(v), high.max(v)]),
        })
}

/// Linear-interpolated quantile of already sorted values (`q` in [0, 1]).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty());
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    let fraction = position - lower as f64;
    sorted[lower] * (1.0 - fraction) + sorted[upper] * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_iqr_of_a_simple_channel() {
        let values: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let n = fit_channel("x", &values);
        assert_eq!(n.center, 5.0);
        assert_eq!(n.scale_source, "iqr");
        // Q1 = 3, Q3 = 7: IQR 4 -> sigma 4 / 1.349.
        assert!((n.scale - 4.0 / 1.349).abs() < 1e-5);
        assert!((n.apply(5.0)).abs() < 1e-6);
        assert!((n.invert(n.apply(8.5)) - 8.5).abs() < 1e-5);
    }

    #[test]
    fn one_outlier_does_not_stretch_the_scale() {
        let mut values: Vec<f32> = (0..100).map(|v| (v % 10) as f32).collect();
        let clean = fit_channel("x", &values);
        values[0] = 1e9;
        let dirty = fit_channel("x", &values);
        assert!((dirty.scale - clean.scale).abs() / clean.scale < 0.1);
    }

    #[test]
    fn constant_channel_gets_unit_scale() {
        let n = fit_channel("stuck", &[42.0; 50]);
        assert_eq!(n.center, 42.0);
        assert_eq!(n.scale, 1.0);
        assert_eq!(n.scale_source, "constant");
        assert_eq!(n.apply(42.0), 0.0);
    }

    #[test]
    fn mostly_constant_channel_falls_back_to_a_positive_spread() {
        // 90 % of the values are 0: IQR and MAD are both zero.
        let mut values = vec![0.0f32; 90];
        values.extend((1..=10).map(|v| v as f32));
        let n = fit_channel("mostly_zero", &values);
        assert_eq!(n.scale_source, "std");
        assert!(n.scale > 0.0 && n.scale.is_finite());
    }

    #[test]
    fn the_squash_is_monotone_bounded_and_inverted() {
        let n = fit_channel("x", &(1..=9).map(|v| v as f32).collect::<Vec<_>>());
        let z = |v: f32| (v - n.center) / n.scale;
        // Within three sigma the squash changes little.
        let near = n.center + 3.0 * n.scale;
        assert!((n.apply(near) - z(near)).abs() < 0.15);
        // A spike of 10^6 sigma lands near 8·ln(2·10^6/8) = 99, not 10^6.
        let spike = n.center + 1e6 * n.scale;
        assert!(n.apply(spike) < 110.0 && n.apply(spike) > n.apply(near));
        for v in [-40.0, 0.0, 5.0, 12.5, 300.0] {
            assert!((n.invert(n.apply(v)) - v).abs() < 1e-3 * v.abs().max(1.0));
        }
        // Models without the field are read as before.
        let old: ChannelNormalisation = serde_json::from_str(
            r#"{"channel":"x","center":1.0,"scale":2.0,"scale_source":"iqr"}"#,
        )
        .unwrap();
        assert_eq!(old.soft_clip, None);
        assert_eq!(old.apply(5.0), 2.0);
    }

    #[test]
    fn quantiles_interpolate() {
        let sorted = [0.0, 10.0];
        assert_eq!(quantile_sorted(&sorted, 0.25), 2.5);
        assert_eq!(quantile_sorted(&[3.0], 0.9), 3.0);
    }
}
