//! The scorer thread's outputs: a window's score and alert event, a gap
//! event, and the dead letter of a sample out of order. Each holds the
//! offset of the record it derives from.

use super::samples::OriginalRecord;
use super::{Queued, ScoringWorker};
use crate::alert::AlertEvent;
use crate::calibrate::{Calibrated, CalibrationState};
use crate::daemon::ledger::Hold;
use crate::daemon::sinks::events::{AlertMessage, GapMessage, ScoreMessage, SCHEMA_VERSION};
use crate::daemon::sinks::{dead_letter, Output, OutputKind};
use crate::daemon::source::decode::{RejectReason, Sample};
use crate::detect::RowOutcome;
use crate::series::timestamp::format_timestamp;
use crate::serve::WindowScore;

impl ScoringWorker {
    /// The scores-topic message of a decided window, if a scores topic is set.
    pub(super) fn score_output(
        &mut self,
        queued: &Queued,
        scored: &WindowScore,
        outcome: &RowOutcome,
        calibrated: &Calibrated,
    ) -> Option<Output> {
        let topic = self.scores_topic.clone()?;
        let window = &queued.pending.window;
        let message = ScoreMessage {
            schema_version: SCHEMA_VERSION,
            entity: &queued.entity,
            window_start: format_timestamp(window.start_ms),
            window_end: format_timestamp(window.end_ms),
            window_end_ms: window.end_ms,
            raw_score: scored.score as f64,
            calibrated_score: calibrated.score,
            calibration: match calibrated.state {
                CalibrationState::Ready => "ready",
                CalibrationState::WarmingUp { .. } => "warming_up",
            },
            decision_score: outcome.score,
            model_version: self.scorer.model_version(),
            source: queued.source.source().into(),
        };
        let hold = self.ledger_ops.hold(queued.source.source());
        let mut output = self.output(
            OutputKind::Scores,
            &queued.entity,
            &message,
            hold,
            queued.record_time_ms,
            false,
        );
        output.topic = topic;
        Some(output)
    }

    /// The alerts-topic message of an alert event, counted and (when one
    /// opens) logged.
    pub(super) fn alert_output(
        &mut self,
        queued: &Queued,
        scored: &WindowScore,
        outcome: &RowOutcome,
        event: &AlertEvent,
    ) -> Output {
        let name = crate::daemon::sinks::events::event_name(event);
        let severity = event.alert().severity.as_str();
        self.metrics
            .alert_events
            .with_label_values(&[name, severity])
            .inc();
        if let AlertEvent::Opened(alert) = event {
            tracing::info!(entity = %alert.entity, alert_id = %alert.id, score = outcome.score, "alert opened");
        }
        let window = &queued.pending.window;
        let message = AlertMessage::new(
            event,
            (window.start_ms, window.end_ms),
            scored.score as f64,
            outcome.score,
            self.threshold,
            queued.source.source(),
        );
        let hold = self.ledger_ops.hold(queued.source.source());
        self.output(
            OutputKind::Alerts,
            &queued.entity,
            &message,
            hold,
            queued.record_time_ms,
            true,
        )
    }

    /// Sends the gap event of a sample that followed a gap (it restarted
    /// the entity's window).
    pub(super) fn send_gap(
        &mut self,
        sample: &Sample,
        source: &Hold,
        record_time_ms: Option<i64>,
        previous_ms: i64,
        gap_ms: i64,
    ) {
        self.metrics.gaps.inc();
        let message = GapMessage {
            schema_version: SCHEMA_VERSION,
            event: "gap",
            entity: &sample.entity,
            previous_ts: format_timestamp(previous_ms),
            ts: format_timestamp(sample.timestamp_ms),
            gap_ms,
            max_gap_ms: self.max_gap_ms,
            source: source.source().into(),
        };
        let hold = self.ledger_ops.hold(source.source());
        let output = self.output(
            OutputKind::Alerts,
            &sample.entity,
            &message,
            hold,
            record_time_ms,
            false,
        );
        // Holds must be in the ledger before the producer can release them.
        self.apply_ledger();
        self.sink.send(Box::new(output));
    }

    /// Sets a sample at or before its entity's latest event time aside on
    /// the dead-letter topic, with its original record (or, for one of a
    /// record's several samples, the sample alone as a record in the single
    /// form, so that the others are not set aside again); the dead letter
    /// takes over its hold.
    pub(super) fn set_aside_out_of_order(
        &mut self,
        sample: &Sample,
        source: Hold,
        latest_ms: i64,
        original: OriginalRecord<'_>,
    ) {
        let mut detail = format!(
            "event time {} is not after the entity's latest, {}",
            format_timestamp(sample.timestamp_ms),
            format_timestamp(latest_ms)
        );
        let payload = if original.of_many {
            detail.push_str(
                " (one sample of a record in the batch form, written as a record of its own)",
            );
            self.decoder.single_record(sample)
        } else {
            original.payload.to_vec()
        };
        self.metrics
            .records_rejected
            .with_label_values(&[RejectReason::OutOfOrder.as_str()])
            .inc();
        let output = dead_letter(
            &self.dead_letter_topic,
            source,
            original.key.map(<[u8]>::to_vec),
            payload,
            RejectReason::OutOfOrder,
            &detail,
        );
        self.sink.send(Box::new(output));
    }

    /// An output of `kind` keyed by `entity`, with `hold`.
    fn output<T: serde::Serialize>(
        &self,
        kind: OutputKind,
        entity: &str,
        message: &T,
        hold: Hold,
        record_time_ms: Option<i64>,
        is_alert: bool,
    ) -> Output {
        Output {
            key: Some(entity.as_bytes().to_vec()),
            payload: Some(serde_json::to_vec(message).expect("messages serialise")),
            holds: vec![hold],
            source_time_ms: record_time_ms,
            is_alert,
            ..Output::new(kind, &self.alerts_topic)
        }
    }
}
