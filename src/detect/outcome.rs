//! What deciding a row gives ([`RowOutcome`]) and a window waiting for
//! its score ([`PendingWindow`]).

use crate::alert::AlertEvent;
use crate::calibrate::Calibrated;
use crate::window::Window;

/// What one row produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    /// The raw score of the window ending at this row (`None` until the first window is full).
    pub raw: Option<f64>,
    /// Its calibrated score (`None` with `raw`).
    pub calibrated: Option<Calibrated>,
    /// A value left the range the entity has shown so far (see `range_tolerance`).
    pub out_of_range: bool,
    /// The score decisions use: the calibrated score, or 1 on a range breach
    /// once calibration is ready; 0 while there is none.
    pub score: f64,
    /// The calibrated score where it is a new high over the previous
    /// `novelty_rows` scores, else 0 (the calibrated score if the gate is off).
    pub novel_score: f64,
    /// An alert opened, updated or resolved at this row.
    pub event: Option<AlertEvent>,
}

impl RowOutcome {
    /// Whether an alert opened at this row.
    pub fn opened(&self) -> bool {
        matches!(self.event, Some(AlertEvent::Opened(_)))
    }
}

/// A window assembled by [`EntityDetector::push`](super::EntityDetector::push), waiting for its score.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWindow {
    /// The window, channel-major, its values **normalised** as the model
    /// takes them: score it with [`Scorer::score_normalised_windows`](crate::serve::Scorer::score_normalised_windows).
    pub window: Window,
    /// The raw rows (in the channels' units, row-major) pushed since the
    /// previous window, the one that completed this window last. Their
    /// range and roughness checks run when the window is decided, so that
    /// they see the decisions of every earlier window, however many rows
    /// were pushed before those were decided.
    pub(super) rows: Vec<f32>,
    pub(super) channels: usize,
}

impl PendingWindow {
    /// The row that completed the window, raw, for an alert's evidence.
    pub fn newest_row(&self) -> &[f32] {
        &self.rows[self.rows.len() - self.channels..]
    }
}
