//! Multichannel time series read from files: one [`Series`] per entity, ordered by time.

pub mod read;
pub mod timestamp;

pub use read::{read_series, ReadOptions, SeriesError};

/// The samples of one entity: `values[row * channels.len() + c]`, rows in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The entity (machine, pump, server) the rows belong to.
    pub entity: String,
    /// Channel names, in column order.
    pub channels: Vec<String>,
    /// Event time of each row, epoch milliseconds, non-decreasing.
    pub timestamps: Vec<i64>,
    /// Row-major values.
    pub values: Vec<f32>,
    /// Optional per-row label (e.g. an anomaly kind; empty = normal), if the file had one.
    pub labels: Option<Vec<String>>,
}

impl Series {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The values of one row.
    pub fn row(&self, row: usize) -> &[f32] {
        let c = self.channels.len();
        &self.values[row * c..(row + 1) * c]
    }

    /// All values of one channel, in time order.
    pub fn channel_values(&self, channel: usize) -> Vec<f32> {
        let c = self.channels.len();
        self.values
            .iter()
            .skip(channel)
            .step_by(c)
            .copied()
            .collect()
    }

    /// Rows `[start, end)` as a new series.
    pub fn slice(&self, start: usize, end: usize) -> Series {
        let c = self.channels.len();
        Series {
            entity: self.entity.clone(),
            channels: self.channels.clone(),
            timestamps: self.timestamps[start..end].to_vec(),
            values: self.values[start * c..end * c].to_vec(),
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
        }
    }
}
