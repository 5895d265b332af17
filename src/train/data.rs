//! Turns series into normalised training and validation windows (time-ordered split, per entity).

use crate::model::normalise::{fit_channel, value_range};
use crate::model::ChannelNormalisation;
use crate::series::Series;
use crate::window::windows_of_rows;

/// Normalised windows ready for training, `[n, channels, window_len]` each.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Channel names, in model order.
    pub channels: Vec<String>,
    /// Normalisation learnt from the training rows only.
    pub normalisation: Vec<ChannelNormalisation>,
    /// Samples per window.
    pub window_len: usize,
    /// Training windows.
    pub train_windows: Vec<f32>,
    /// Validation windows (the latest rows of each entity).
    pub validation_windows: Vec<f32>,
    /// Rows in the training split, over all entities.
    pub train_rows: usize,
    /// Rows in the validation split, over all entities.
    pub validation_rows: usize,
    /// First and last timestamp seen.
    pub time_range_ms: [i64; 2],
    /// Number of entities.
    pub entities: usize,
}

impl PreparedData {
    /// Values per window.
    pub fn window_size(&self) -> usize {
        self.channels.len() * self.window_len
    }

    /// Number of training windows.
    pub fn train_count(&self) -> usize {
        self.train_windows.len() / self.window_size()
    }

    /// Number of validation windows.
    pub fn validation_count(&self) -> usize {
        self.validation_windows.len() / self.window_size()
    }
}

/// Splits each entity's rows in time order (the last `validation_fraction`
/// for validation), learns normalisation on the training rows, and cuts
/// windows every `stride` rows within each split (a window never spans two
/// entities or the split).
pub fn prepare(
    series: &[Series],
    window_len: usize,
    stride: usize,
    validation_fraction: f64,
) -> Result<PreparedData, String> {
    let first = series.first().ok_or("no data: the input has no rows")?;
    let channels = first.channels.clone();
    let c = channels.len();
    let mut splits = Vec::new();
    for s in series {
        if s.channels != channels {
            return Err(format!(
                "entity {:?} has channels {:?}, expected {:?}",
                s.entity, s.channels, channels
            ));
        }
        let validation_rows = ((s.len() as f64) * validation_fraction).round() as usize;
        let train_rows = s.len() - validation_rows;
        splits.push((s, train_rows));
    }
    let mut normalisation = Vec::with_capacity(c);
    for (index, name) in channels.iter().enumerate() {
        let values: Vec<f32> = splits
            .iter()
            .flat_map(|(s, train_rows)| s.slice(0, *train_rows).channel_values(index))
            .collect();
        if values.is_empty() {
            return Err("no training rows after the validation split".into());
        }
        let mut fitted = fit_channel(name, &values);
        // The range covers the validation rows too: all the model was made from.
        fitted.range = value_range(splits.iter().flat_map(|(s, _)| s.channel_values(index)));
        normalisation.push(fitted);
    }
    let normalise = |rows: &[f32]| -> Vec<f32> {
        rows.chunks(c)
            .flat_map(|row| row.iter().zip(&normalisation).map(|(&v, n)| n.apply(v)))
            .collect()
    };
    let mut prepared = PreparedData {
        channels,
        normalisation: normalisation.clone(),
        window_len,
        train_windows: Vec::new(),
        validation_windows: Vec::new(),
        train_rows: 0,
        validation_rows: 0,
        time_range_ms: [i64::MAX, i64::MIN],
        entities: series.len(),
    };
    for (s, train_rows) in splits {
        let rows = normalise(&s.values);
        let (train, _) = windows_of_rows(&rows[..train_rows * c], c, window_len, stride);
        let (validation, _) = windows_of_rows(&rows[train_rows * c..], c, window_len, stride);
        prepared.train_windows.extend(train);
        prepared.validation_windows.extend(validation);
        prepared.train_rows += train_rows;
        prepared.validation_rows += s.len() - train_rows;
        if let (Some(&start), Some(&end)) = (s.timestamps.first(), s.timestamps.last()) {
            prepared.time_range_ms[0] = prepared.time_range_ms[0].min(start);
            prepared.time_range_ms[1] = prepared.time_range_ms[1].max(end);
        }
    }
    if prepared.train_count() == 0 {
        return Err(format!(
            "no training windows: each entity needs more than {window_len} rows before the validation split"
        ));
    }
    if prepared.validation_count() == 0 && validation_fraction > 0.0 {
        return Err(format!(
            "no validation windows: raise --validation-fraction so the latest part of an entity holds at least {window_len} rows, or set it to 0 to train without validation (no early stopping)"
        ));
    }
    Ok(prepared)
}
