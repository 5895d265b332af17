//! The JSON messages the daemon produces: alert events, gap events and
//! window scores (schema in docs/daemon.md, "Output messages"). Every message
//! names the input record that completed its window (`source`), so a
//! consumer can audit or deduplicate.

use crate::alert::{AlertEvent, ChannelEvidence, Severity};
use crate::daemon::ledger::SourceOffset;
use crate::series::timestamp::format_timestamp;
use serde::Serialize;

/// Version of the message schemas; bumped on incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a message came from in the input.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// Offset of the record that completed the window (or caused the event).
    pub offset: i64,
}

impl From<&SourceOffset> for Source {
    fn from(source: &SourceOffset) -> Self {
        Self {
            topic: source.partition.topic.to_string(),
            partition: source.partition.partition,
            offset: source.offset,
        }
    }
}

/// An alert event on the alerts topic.
#[derive(Debug, Clone, Serialize)]
pub struct AlertMessage<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `opened`, `updated` or `resolved`.
    pub event: &'static str,
    /// Deterministic: sha256(entity, start, model version); the same after a replay.
    pub alert_id: &'a str,
    /// The entity.
    pub entity: &'a str,
    /// First and last event time of the window that caused the event (RFC 3339,
    /// whole seconds).
    pub window_start: String,
    /// See `window_start`.
    pub window_end: String,
    /// `window_end` in epoch milliseconds: the exact event time of the
    /// sample that completed the window, as on the scores topic.
    pub window_end_ms: i64,
    /// The model's raw score of that window (as `anomalyd score` reports it).
    pub raw_score: f64,
    /// The calibrated score in [0, 1] the decision used.
    pub calibrated_score: f64,
    /// The alert threshold in force.
    pub threshold: f64,
    /// `warning` or `critical`.
    pub severity: Severity,
    /// Event time the alert opened.
    pub started_at: String,
    /// Event time it resolved (on `resolved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Highest calibrated score so far.
    pub peak_score: f64,
    /// Channels contributing most, with actual and expected values.
    pub top_channels: &'a [ChannelEvidence],
    /// The model that scored it.
    pub model_version: &'a str,
    /// The input record.
    pub source: Source,
}

impl<'a> AlertMessage<'a> {
    /// The message for `event`, raised by the window `[start_ms, end_ms]`.
    pub fn new(
        event: &'a AlertEvent,
        window: (i64, i64),
        raw_score: f64,
        calibrated_score: f64,
        threshold: f64,
        source: &SourceOffset,
    ) -> Self {
        let alert = event.alert();
        Self {
            schema_version: SCHEMA_VERSION,
            event: event_name(event),
            alert_id: &alert.id,
            entity: &alert.entity,
            window_start: format_timestamp(window.0),
            window_end: format_timestamp(window.1),
            window_end_ms: window.1,
            raw_score,
            calibrated_score,
            threshold,
            severity: alert.severity,
            started_at: format_timestamp(alert.started_ms),
            resolved_at: alert.resolved_ms.map(format_timestamp),
            peak_score: alert.peak_score,
            top_channels: &alert.top_channels,
            model_version: &alert.model_version,
            source: source.into(),
        }
    }
}

/// The name of an alert event in messages and metrics.
pub fn event_name(event: &AlertEvent) -> &'static str {
    match event {
        AlertEvent::Opened(_) => "opened",
        AlertEvent::Updated(_) => "updated",
        AlertEvent::Resolved(_) => "resolved",
    }
}

/// A gap event on the alerts topic: the entity's window restarted.
#[derive(Debug, Clone, Serialize)]
pub struct GapMessage<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `gap`.
    pub event: &'static str,
    /// The entity.
    pub entity: &'a str,
    /// Event time of the entity's previous sample.
    pub previous_ts: String,
    /// Event time of the sample after the gap.
    pub ts: String,
    /// The gap (ms).
    pub gap_ms: i64,
    /// The configured tolerance (`windows.max_gap_ms`).
    pub max_gap_ms: u64,
    /// The input record after the gap.
    pub source: Source,
}

/// One window's score on the scores topic.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreMessage<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The entity.
    pub entity: &'a str,
    /// First event time of the window (RFC 3339).
    pub window_start: String,
    /// Last event time of the window (RFC 3339).
    pub window_end: String,
    /// Last event time of the window, epoch ms.
    pub window_end_ms: i64,
    /// The model's raw score (as `anomalyd score` reports it).
    pub raw_score: f64,
    /// The calibrated score in [0, 1] (0 while warming up).
    pub calibrated_score: f64,
    /// `warming_up` or `ready`.
    pub calibration: &'static str,
    /// The score alert decisions use (the calibrated score, or 1 on a range breach).
    pub decision_score: f64,
    /// The model that scored it.
    pub model_version: &'a str,
    /// The input record that completed the window.
    pub source: Source,
}
